//! Security of the Redis backend: TLS (`rediss://`, feature `tls`) with a private CA, Redis
//! AUTH with a password and with an ACL user, and no password in any `Debug`, `Display` or
//! log line (invariant 7 of the design).
//!
//! Every failure case is a real `redis-server` refusing the client, and must come back as a
//! clear `Err` at once: well under a second, with the connect timeout set to 5 s, so a hang
//! cut short by the timeout would fail the test.
#![cfg(feature = "redis")]

use std::time::{Duration, Instant};

use crate::support::RedisServer;
use crate::support::logs::LogBuffer;
use liveness_store::{Backend, Error, LivenessStore, RedisStore, StoreConfig};

const TTL: Duration = Duration::from_secs(90);
/// Far above anything a refused connection needs: a failure that takes this long was a hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// "At once", for a connection the server refuses: a correctness bound, not a benchmark.
const PROMPT: Duration = Duration::from_secs(1);

/// The ACL user's password: `@ / ? #` all need percent-encoding in a URL, and a redaction
/// that stopped at the first of them would print the rest.
const ACL_PASSWORD: &str = "Sekr1t@p/a?ss#word";
/// The `--requirepass` password. The harness puts it in its own URL raw, where an `@` is
/// fine but `/ ? #` are not.
const REQUIREPASS: &str = "Rq@pa55-Zeta9";

/// `s` with every byte but ASCII letters and digits percent-encoded, as a URL's user info
/// needs it.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A server with the ACL user `alice`, allowed the store's keys only.
fn acl_server() -> RedisServer {
    let password = format!(">{ACL_PASSWORD}");
    RedisServer::start_with_args(&["--user", "alice", "on", &password, "~mul:*", "+@all"])
}

fn acl_url(server: &RedisServer, user: &str, password: &str) -> String {
    format!(
        "redis://{user}:{}@127.0.0.1:{}/",
        encode(password),
        server.port()
    )
}

fn requirepass_url(server: &RedisServer, password: &str) -> String {
    format!("redis://:{}@127.0.0.1:{}/", encode(password), server.port())
}

/// Builds a store on `url` and returns the result with how long it took.
async fn build(url: &str) -> (liveness_store::Result<RedisStore>, Duration) {
    let started = Instant::now();
    let result = crate::support::store_builder(url)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .await;
    (result, started.elapsed())
}

/// Asserts that building a store on `url` fails at once with [`Error::Backend`] whose text
/// contains one of `words` (case-insensitively); returns the error.
async fn refused(url: &str, words: &[&str]) -> Error {
    let (result, took) = build(url).await;
    let error = result.expect_err("the server must refuse this client");
    assert!(took < PROMPT, "refused only after {took:?}: {error}");
    assert!(
        matches!(error, Error::Backend { .. }),
        "a refused connection is a backend error: {error:?}"
    );
    let text = error.to_string().to_ascii_lowercase();
    assert!(
        words.iter().any(|w| text.contains(&w.to_ascii_lowercase())),
        "the error should say why ({words:?}): {error}"
    );
    error
}

/// Everything a caller can print of `error`: `Display`, `Debug` and every source's `Display`.
fn printed(error: &Error) -> String {
    let mut text = format!("{error}\n{error:?}");
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(&format!("\n{inner}\n{inner:?}"));
        source = inner.source();
    }
    text
}

/// Panics if `text` (what `what` printed) holds any of `secrets`.
fn assert_no_secret(what: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{what} leaks the password ({secret:?}):\n{text}"
        );
    }
}

/// The password, its URL-encoded form and its most telling fragment.
fn forms_of(password: &str) -> Vec<String> {
    let fragment = password
        .split(|c: char| !c.is_ascii_alphanumeric())
        .max_by_key(|part| part.len())
        .unwrap_or(password);
    vec![password.to_owned(), encode(password), fragment.to_owned()]
}

#[tokio::test]
async fn a_password_server_accepts_the_right_password() {
    let server = RedisServer::start_with_args(&["--requirepass", REQUIREPASS]);
    let (store, _) = build(&requirepass_url(&server, REQUIREPASS)).await;
    let store = store.expect("the right password is accepted");
    store.touch("rt-1", TTL).await.unwrap();
    assert_eq!(
        store.is_alive_batch(&["rt-1", "rt-2"]).await.unwrap(),
        [true, false]
    );
    store.forget("rt-1").await;
    assert_eq!(store.is_alive_batch(&["rt-1"]).await.unwrap(), [false]);
}

#[tokio::test]
async fn a_password_server_refuses_a_wrong_or_missing_password_at_once() {
    let server = RedisServer::start_with_args(&["--requirepass", REQUIREPASS]);
    let wrong = "Wr0ng@pass/wd?x#y";
    let error = refused(
        &requirepass_url(&server, wrong),
        &["wrongpass", "auth", "password"],
    )
    .await;
    let mut secrets = forms_of(REQUIREPASS);
    secrets.extend(forms_of(wrong));
    assert_no_secret("a wrong-password error", &printed(&error), &secrets);
    // No password at all: the connection opens, and the first command is refused.
    refused(
        &format!("redis://127.0.0.1:{}/", server.port()),
        &["noauth", "auth"],
    )
    .await;
}

/// Touch, touch_many, a batch and forget through `store`, each checked.
async fn every_operation_works(store: &RedisStore) {
    store.touch("rt-1", TTL).await.unwrap();
    store
        .touch_many(&[("rt-2", TTL), ("rt-3", TTL)])
        .await
        .unwrap();
    assert_eq!(
        store
            .is_alive_batch(&["rt-1", "rt-2", "rt-4"])
            .await
            .unwrap(),
        [true, true, false]
    );
    store.forget("rt-1").await;
    assert_eq!(
        store.is_alive_batch(&["rt-1", "rt-3"]).await.unwrap(),
        [false, true]
    );
}

#[tokio::test]
async fn an_acl_user_works_within_its_key_pattern() {
    let server = acl_server();
    let (store, _) = build(&acl_url(&server, "alice", ACL_PASSWORD)).await;
    let store = store.expect("alice's password is accepted");
    every_operation_works(&store).await;
    assert!(server.get(b"mul:runtime:hb:rt-2").is_some());

    // The ACL holds: a prefix outside `~mul:*` is refused by Redis, as a clear error, and at
    // once: connecting already writes the epoch record under the prefix.
    let error = RedisStore::builder(&acl_url(&server, "alice", ACL_PASSWORD))
        .key_prefix("other:hb:")
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Backend { .. })
            && error.to_string().to_ascii_lowercase().contains("noperm"),
        "{error:?}"
    );
    assert_no_secret("a NOPERM error", &printed(&error), &forms_of(ACL_PASSWORD));
}

#[tokio::test]
async fn a_wrong_acl_password_or_user_is_refused_at_once() {
    let server = acl_server();
    let wrong = "n0tH3rs@pw/?#";
    let mut secrets = forms_of(ACL_PASSWORD);
    secrets.extend(forms_of(wrong));
    for url in [
        acl_url(&server, "alice", wrong),
        acl_url(&server, "mallory", ACL_PASSWORD),
    ] {
        let error = refused(&url, &["wrongpass", "auth", "password"]).await;
        assert_no_secret("a wrong-credentials error", &printed(&error), &secrets);
    }
}

/// Collects everything the crate can print while it is given passwords, and greps the
/// passwords out of it: `Debug` of builders, stores and configs, `Display`/`Debug` of every
/// error (wrong password, unreachable host, bad URL, wrong scheme, timeout, dead server), and
/// every log line, including the warning of a `forget` against a killed server.
// A current-thread runtime: the subscriber below is this thread's default, and every task
// the store runs, runs here.
#[tokio::test(flavor = "current_thread")]
async fn no_password_leaks_into_debug_errors_or_logs() {
    let (logs, _capture) = LogBuffer::capture();

    let server = acl_server();
    let good_url = acl_url(&server, "alice", ACL_PASSWORD);
    let wrong = "Wr0ngPW@x/y?z#";
    let mut secrets = forms_of(ACL_PASSWORD);
    secrets.extend(forms_of(wrong));
    let mut shown: Vec<(String, String)> = Vec::new();

    // Configuration and builders, with the password encoded and raw.
    let raw_url = format!("redis://alice:{ACL_PASSWORD}@127.0.0.1:{}/", server.port());
    for url in [&good_url, &raw_url] {
        let config = StoreConfig::new(Backend::Redis).with_redis_url(url.as_str());
        shown.push(("StoreConfig Debug".into(), format!("{config:?}")));
        let builder = RedisStore::builder(url).op_timeout(Duration::from_millis(200));
        shown.push(("RedisStoreBuilder Debug".into(), format!("{builder:?}")));
    }

    // A working store, and its Debug. Three failures open its breaker: at the latest the
    // three calls made after its server is killed below (a background call that succeeds
    // before the kill resets the count, so the default five would leave the opening to chance).
    let store = crate::support::store_builder(&good_url)
        .op_timeout(Duration::from_millis(200))
        .failure_threshold(3)
        .build()
        .await
        .expect("alice connects");
    store.touch("rt-1", TTL).await.unwrap();
    shown.push(("RedisStore Debug".into(), format!("{store:?}")));
    #[cfg(feature = "layered")]
    {
        let remote = crate::support::store_builder(&good_url)
            .build()
            .await
            .unwrap();
        let layered = liveness_store::LayeredStore::new(remote);
        shown.push(("LayeredStore Debug".into(), format!("{layered:?}")));
    }

    // Every kind of error, each made with a URL that holds a password.
    let mut errors: Vec<(&str, Error)> = Vec::new();
    errors.push((
        "wrong password",
        build(&acl_url(&server, "alice", wrong))
            .await
            .0
            .unwrap_err(),
    ));
    let nobody = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let nobody_url = format!("redis://alice:{}@127.0.0.1:{nobody}/", encode(ACL_PASSWORD));
    errors.push((
        "unreachable host",
        crate::support::store_builder(&nobody_url)
            .connect_timeout(CONNECT_TIMEOUT)
            .require_connection(true)
            .build()
            .await
            .unwrap_err(),
    ));
    // Without `require_connection` it starts down, and says so in a log line (checked below).
    let down = build(&nobody_url).await.0.expect("starts down");
    shown.push(("a store started down, Debug".into(), format!("{down:?}")));
    drop(down);
    // A password pasted in raw: its `/` ends the authority early, so part of the password
    // reads as a (bad) port and the URL does not parse.
    let pasted = "Sekr1t/p?a#x";
    secrets.push(pasted.to_owned());
    let bad_url = format!("redis://alice:{pasted}@127.0.0.1:{}/", server.port());
    let bad = build(&bad_url).await.0.unwrap_err();
    assert!(matches!(bad, Error::Config(_)), "{bad:?}");
    errors.push(("bad URL", bad));
    errors.push((
        "wrong scheme",
        build(&format!(
            "http://alice:{}@127.0.0.1:{}/",
            encode(ACL_PASSWORD),
            server.port()
        ))
        .await
        .0
        .unwrap_err(),
    ));
    errors.push((
        "open() with a wrong password",
        liveness_store::open(
            &StoreConfig::new(Backend::Redis).with_redis_url(acl_url(&server, "alice", wrong)),
        )
        .await
        .unwrap_err(),
    ));
    {
        let paused = RedisServer::start();
        paused.pause();
        let url = format!(
            "redis://alice:{}@127.0.0.1:{}/",
            encode(ACL_PASSWORD),
            paused.port()
        );
        let connect = RedisStore::builder(&url)
            .connect_timeout(Duration::from_millis(200))
            .require_connection(true)
            .build()
            .await
            .unwrap_err();
        assert!(
            connect.to_string().contains("connect_timeout"),
            "names the setting: {connect}"
        );
        errors.push(("connect timeout", connect));
        server.pause();
        let touch = store.touch("rt-1", TTL).await.unwrap_err();
        server.resume();
        assert!(matches!(touch, Error::Timeout { .. }), "{touch:?}");
        errors.push(("touch timeout", touch));
    }
    let mut server = server;
    server.kill();
    // Best effort: the failure is a warning in the log. First, while the breaker is still
    // closed (at most one failure so far), so that it is tried and fails.
    store.forget("rt-1").await;
    errors.push((
        "touch on a killed server",
        store.touch("rt-1", TTL).await.unwrap_err(),
    ));
    errors.push((
        "batch on a killed server",
        store.is_alive_batch(&["rt-1"]).await.unwrap_err(),
    ));

    for (what, error) in &errors {
        shown.push((format!("error ({what})"), printed(error)));
    }
    let log = logs.text();
    assert!(
        log.contains("liveness forget failed") && log.contains("circuit breaker open"),
        "a forget against a killed server logs a warning, and the breaker its opening; the \
         store: {store:?}; the errors: {errors:?}; the log:\n{log}"
    );
    shown.push(("the log".into(), log));
    for (what, text) in &shown {
        assert_no_secret(what, text, &secrets);
    }
    // The redaction keeps what helps: the user and the host are still there.
    let debug = &shown
        .iter()
        .find(|(what, _)| what == "RedisStore Debug")
        .unwrap()
        .1;
    assert!(debug.contains("alice:***@127.0.0.1"), "{debug}");
}

#[cfg(not(feature = "tls"))]
#[tokio::test]
async fn a_tls_url_without_the_tls_feature_names_the_feature() {
    let (result, _) = build("rediss://127.0.0.1:6380/").await;
    match result {
        Err(Error::Config(message)) => assert!(message.contains("feature `tls`"), "{message}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[cfg(feature = "tls")]
mod tls {
    use std::path::Path;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    use super::*;

    /// A certificate authority made for one test.
    struct Ca {
        pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    impl Ca {
        fn new(name: &str) -> Ca {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let key = KeyPair::generate().unwrap();
            let certificate = params.self_signed(&key).unwrap();
            Ca {
                pem: certificate.pem(),
                issuer: Issuer::new(params, key),
            }
        }

        /// A server certificate for `names` (DNS names or IP addresses): `(cert, key)` PEM.
        fn server_certificate(&self, names: &[&str]) -> (String, String) {
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let mut params = CertificateParams::new(names).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, "liveness test redis");
            params.use_authority_key_identifier_extension = true;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let key = KeyPair::generate().unwrap();
            let certificate = params.signed_by(&key, &self.issuer).unwrap();
            (certificate.pem(), key.serialize_pem())
        }
    }

    /// A server serving TLS with a certificate `ca` signed for `names`.
    struct TlsServer {
        server: RedisServer,
        /// Holds the certificate files; removed after the server is gone.
        _files: tempfile::TempDir,
    }

    impl TlsServer {
        fn start(ca: &Ca, names: &[&str]) -> TlsServer {
            Self::start_with_args(ca, names, &[])
        }

        /// As [`TlsServer::start`], with `extra` arguments for `redis-server`.
        fn start_with_args(ca: &Ca, names: &[&str], extra: &[&str]) -> TlsServer {
            let files = tempfile::Builder::new()
                .prefix("liveness-tls-")
                .tempdir()
                .unwrap();
            let (cert, key) = ca.server_certificate(names);
            let write = |name: &str, contents: &str| {
                let path = files.path().join(name);
                std::fs::write(&path, contents).unwrap();
                path_str(&path)
            };
            let (cert, key, ca) = (
                write("server.crt", &cert),
                write("server.key", &key),
                write("ca.crt", &ca.pem),
            );
            let mut args = vec![
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                "no",
            ];
            args.extend_from_slice(extra);
            let server = RedisServer::start_tls(&args);
            TlsServer {
                server,
                _files: files,
            }
        }
    }

    fn path_str(path: &Path) -> String {
        path.to_str().expect("a UTF-8 temporary path").to_owned()
    }

    async fn build_tls(
        url: &str,
        ca: Option<&Ca>,
    ) -> (liveness_store::Result<RedisStore>, Duration) {
        let started = Instant::now();
        let mut builder = crate::support::store_builder(url).connect_timeout(CONNECT_TIMEOUT);
        if let Some(ca) = ca {
            builder = builder.tls_root_certificate(ca.pem.as_bytes());
        }
        let result = builder.build().await;
        (result, started.elapsed())
    }

    /// Asserts that a TLS store on `url` trusting `ca` fails at once over the server's
    /// certificate.
    async fn untrusted(url: &str, ca: Option<&Ca>) {
        let (result, took) = build_tls(url, ca).await;
        let error = result.expect_err("the server's certificate must not be trusted");
        assert!(took < PROMPT, "refused only after {took:?}: {error}");
        assert!(matches!(error, Error::Backend { .. }), "{error:?}");
        let text = error.to_string();
        assert!(
            text.contains("certificate"),
            "the error should say why: {text}"
        );
    }

    #[tokio::test]
    async fn touch_batch_and_forget_work_over_tls_with_a_private_ca() {
        let ca = Ca::new("liveness test CA");
        let tls = TlsServer::start(&ca, &["127.0.0.1", "localhost"]);
        let url = tls.server.tls_url();
        let (store, _) = build_tls(&url, Some(&ca)).await;
        let store = store.expect("the private CA signed the server's certificate");
        tls.server.reset_stats();

        every_operation_works(&store).await;
        // It was this server, reached through its TLS port, that did the work.
        assert_eq!(tls.server.calls("set"), 3);
        assert_eq!(tls.server.calls("mget"), 2);
        assert_eq!(tls.server.calls("del"), 1);
        assert!(tls.server.get(b"mul:runtime:hb:rt-3").is_some());
        assert!(format!("{store:?}").contains("rediss://127.0.0.1"));
    }

    #[cfg(feature = "layered")]
    #[tokio::test]
    async fn the_layered_store_works_over_tls() {
        let ca = Ca::new("liveness test CA");
        let tls = TlsServer::start(&ca, &["127.0.0.1"]);
        let (remote, _) = build_tls(&tls.server.tls_url(), Some(&ca)).await;
        let store = liveness_store::LayeredStore::new(remote.unwrap());
        store.touch("rt-1", TTL).await.unwrap();
        assert_eq!(store.is_alive_batch(&["rt-1"]).await.unwrap(), [true]);
        assert!(tls.server.get(b"mul:runtime:hb:rt-1").is_some());
    }

    #[tokio::test]
    async fn without_the_private_ca_the_connection_fails_at_once() {
        let ca = Ca::new("liveness test CA");
        let tls = TlsServer::start(&ca, &["127.0.0.1"]);
        // The system's roots: no public CA signed this certificate.
        untrusted(&tls.server.tls_url(), None).await;
        // Another private CA.
        untrusted(&tls.server.tls_url(), Some(&Ca::new("some other CA"))).await;
        assert_eq!(tls.server.total_calls(), 0);
    }

    #[tokio::test]
    async fn a_certificate_for_another_name_fails_at_once() {
        let ca = Ca::new("liveness test CA");
        let tls = TlsServer::start(&ca, &["redis.example"]);
        untrusted(&tls.server.tls_url(), Some(&ca)).await;
    }

    #[tokio::test]
    async fn plain_text_to_a_tls_port_fails_at_once() {
        let ca = Ca::new("liveness test CA");
        let tls = TlsServer::start(&ca, &["127.0.0.1"]);
        let url = format!("redis://127.0.0.1:{}/", tls.server.tls_port());
        let (result, took) = build(&url).await;
        let error = result.expect_err("a TLS port does not speak plain RESP");
        assert!(took < PROMPT, "refused only after {took:?}: {error}");
        assert!(error.is_transient(), "{error:?}");
    }

    #[tokio::test]
    async fn unusable_tls_settings_are_configuration_errors() {
        let ca = Ca::new("liveness test CA");
        let config_error = |result: liveness_store::Result<RedisStore>| match result {
            Err(Error::Config(message)) => message,
            other => panic!("expected a configuration error, got {other:?}"),
        };
        // Checked before any connection: nothing listens on port 1.
        let message = config_error(
            RedisStore::builder("rediss://127.0.0.1:1/")
                .tls_root_certificate("not a certificate")
                .build()
                .await,
        );
        assert!(message.contains("tls_root_certificate"), "{message}");
        let truncated = &ca.pem[..ca.pem.len() / 2];
        let message = config_error(
            RedisStore::builder("rediss://127.0.0.1:1/")
                .tls_root_certificate(truncated)
                .build()
                .await,
        );
        assert!(message.contains("tls_root_certificate"), "{message}");
        let message = config_error(
            RedisStore::builder("redis://127.0.0.1:1/")
                .tls_root_certificate(ca.pem.as_bytes())
                .build()
                .await,
        );
        assert!(message.contains("rediss://"), "{message}");
        let debug = format!(
            "{:?}",
            RedisStore::builder("rediss://127.0.0.1:1/").tls_root_certificate(ca.pem.clone())
        );
        assert!(debug.contains("private CA"), "{debug}");
    }

    #[tokio::test]
    async fn tls_with_an_acl_user() {
        let ca = Ca::new("liveness test CA");
        let password = format!(">{ACL_PASSWORD}");
        let tls = TlsServer::start_with_args(
            &ca,
            &["127.0.0.1"],
            &["--user", "alice", "on", &password, "~mul:*", "+@all"],
        );
        let server = &tls.server;
        let url = format!(
            "rediss://alice:{}@127.0.0.1:{}/",
            encode(ACL_PASSWORD),
            server.tls_port()
        );
        let (store, _) = build_tls(&url, Some(&ca)).await;
        let store = store.expect("alice connects over TLS");
        store.touch("rt-1", TTL).await.unwrap();
        assert_eq!(store.is_alive_batch(&["rt-1"]).await.unwrap(), [true]);
        assert_no_secret(
            "a TLS store's Debug",
            &format!("{store:?}"),
            &forms_of(ACL_PASSWORD),
        );

        let wrong = format!(
            "rediss://alice:{}@127.0.0.1:{}/",
            encode("nope@/?#"),
            server.tls_port()
        );
        let (result, took) = build_tls(&wrong, Some(&ca)).await;
        let error = result.expect_err("a wrong password over TLS");
        assert!(took < PROMPT, "refused only after {took:?}: {error}");
        assert_no_secret("a TLS auth error", &printed(&error), &forms_of("nope@/?#"));
    }
}
