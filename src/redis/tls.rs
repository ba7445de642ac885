//! Turning a builder's URL and TLS settings into bb8-redis's connection manager.
//!
//! `rediss://` URLs (feature `tls`) go through redis-rs's rustls support. Two things are done
//! here so that they work out of the box:
//!
//! - rustls needs a process-wide crypto provider. With only `ring` compiled in it picks that
//!   one itself, but an application whose dependency graph also enables aws-lc-rs would make
//!   redis-rs's `ClientConfig::builder()` panic on the first connect. So before the first TLS
//!   connection the ring provider is installed, unless the application installed one already
//!   (then that one is used).
//! - a private CA: redis-rs builds a client from PEM certificates, and the `ConnectionInfo` it
//!   produces carries them, so the pool's connections trust that CA instead of the system's
//!   roots.

use std::fmt;

use bb8_redis::RedisConnectionManager;
use redis::{ConnectionInfo, IntoConnectionInfo, RedisError};

#[cfg(feature = "tls")]
use super::RedisStoreBuilder;
use crate::redact::{redact_url, scrub};
use crate::{Error, Result};

/// The TLS settings of a [`RedisStoreBuilder`](super::RedisStoreBuilder).
#[derive(Clone, Default)]
pub(super) struct TlsSettings {
    /// PEM certificates of the CAs to trust instead of the system's roots.
    root_certificate: Option<Vec<u8>>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.root_certificate {
            Some(pem) => write!(f, "private CA ({} bytes of PEM)", pem.len()),
            None => f.write_str("system roots"),
        }
    }
}

#[cfg(feature = "tls")]
impl RedisStoreBuilder {
    /// Trusts the CA certificates in `pem` (one or more PEM `CERTIFICATE` blocks) instead of
    /// the system's root certificates, for a Redis whose certificate a private CA signed.
    /// Needs a `rediss://` URL.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ca = std::fs::read("/etc/redis/tls/ca.crt")?;
    /// let store = liveness_store::RedisStore::builder("rediss://redis.internal:6380/")
    ///     .tls_root_certificate(ca)
    ///     .build()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Defaults to the system's root certificates.
    ///
    /// `build` reports a `pem` without any certificate, or a `redis://` URL, as an
    /// [`Error::Config`]; a server whose certificate this CA did not sign fails the
    /// connection at once.
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.root_certificate = Some(pem.into());
        self
    }
}

/// bb8-redis's connection manager for `url`, with the TLS settings applied.
///
/// # Errors
///
/// [`Error::Config`] for a malformed URL (password redacted), a `rediss://` URL without the
/// `tls` feature, or unusable TLS settings.
pub(super) fn connection_manager(url: &str, tls: &TlsSettings) -> Result<RedisConnectionManager> {
    let info = url.into_connection_info().map_err(|e| url_error(url, &e))?;
    let info = apply(info, url, tls)?;
    RedisConnectionManager::new(info).map_err(|e| url_error(url, &e))
}

fn url_error(url: &str, error: &RedisError) -> Error {
    let hint = if !cfg!(feature = "tls") && is_tls_scheme(url) {
        " (TLS URLs need the Cargo feature `tls` of liveness-store)"
    } else {
        ""
    };
    Error::Config(format!(
        "`{}` is not a usable Redis URL: {}{hint}",
        redact_url(url),
        scrub(&error.to_string(), url)
    ))
}

fn is_tls_scheme(url: &str) -> bool {
    let scheme = url.split("://").next().unwrap_or_default();
    ["rediss", "valkeys"].contains(&scheme.trim().to_ascii_lowercase().as_str())
}

#[cfg(not(feature = "tls"))]
fn apply(info: ConnectionInfo, _url: &str, _tls: &TlsSettings) -> Result<ConnectionInfo> {
    Ok(info)
}

#[cfg(feature = "tls")]
fn apply(info: ConnectionInfo, url: &str, tls: &TlsSettings) -> Result<ConnectionInfo> {
    use redis::{ConnectionAddr, TlsCertificates};

    let uses_tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
    if !uses_tls {
        return match tls.root_certificate {
            Some(_) => Err(Error::Config(format!(
                "tls_root_certificate needs a `rediss://` URL, not `{}`",
                redact_url(url)
            ))),
            None => Ok(info),
        };
    }
    install_crypto_provider();
    let Some(pem) = &tls.root_certificate else {
        return Ok(info);
    };
    // redis-rs accepts a PEM without any certificate and then trusts nothing, which would
    // only show as failed connections; say so here instead.
    check_pem(pem)?;
    let certificates = TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.clone()),
    };
    let client = redis::Client::build_with_tls(info, certificates).map_err(|e| {
        // The client library's text could quote the URL it was given.
        let reason = crate::redact::scrub(&e.to_string(), url);
        Error::Config(format!("tls_root_certificate is not usable: {reason}"))
    })?;
    Ok(client.get_connection_info().clone())
}

#[cfg(feature = "tls")]
fn check_pem(pem: &[u8]) -> Result<()> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut certificates = 0;
    for certificate in CertificateDer::pem_slice_iter(pem) {
        certificate
            .map_err(|e| Error::Config(format!("tls_root_certificate is not valid PEM: {e}")))?;
        certificates += 1;
    }
    if certificates == 0 {
        return Err(Error::Config(
            "tls_root_certificate holds no PEM `CERTIFICATE` block".to_owned(),
        ));
    }
    Ok(())
}

/// Installs rustls's ring provider as the process default, unless one is installed already.
#[cfg(feature = "tls")]
fn install_crypto_provider() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // An `Err` means another thread installed one in between: that one is used.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
    });
}
