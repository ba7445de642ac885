//! Keeping Redis passwords out of `Debug` output, error messages and logs (invariant 7).

use crate::urls::split_urls;

/// The URL with its password, if any, replaced by `***`.
///
/// Works on anything shaped like `scheme://[user][:password]@host...`, and on comma-separated
/// seed lists; text that is not a URL comes back unchanged.
pub(crate) fn redact_url(url: &str) -> String {
    // Split as the cluster seeds are: a raw comma in a password must not cut it in two.
    split_urls(url)
        .map(redact_one)
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_one(url: &str) -> String {
    match password_span(url) {
        Some((start, end)) => format!("{}***{}", &url[..start], &url[end..]),
        None => url.to_owned(),
    }
}

/// Byte range of the password in `scheme://user:password@host`, if there is one.
///
/// The user info ends at the *last* `@`: a raw password may hold `/`, `?`, `#` or `@`, and
/// redacting a little too much is better than printing part of a secret.
fn password_span(url: &str) -> Option<(usize, usize)> {
    let authority_start = url.find("://")? + 3;
    let rest = &url[authority_start..];
    let userinfo_len = rest.rfind('@')?;
    let colon = rest[..userinfo_len].find(':')?;
    let (start, end) = (authority_start + colon + 1, authority_start + userinfo_len);
    (start < end).then_some((start, end))
}

/// `message` with every occurrence of a password found in `urls` replaced by `***`, for error
/// texts from a client library that might quote what it was given.
#[cfg_attr(not(any(feature = "redis", feature = "cluster")), allow(dead_code))]
pub(crate) fn scrub(message: &str, urls: &str) -> String {
    let mut clean = message.to_owned();
    for url in split_urls(urls) {
        if let Some((start, end)) = password_span(url) {
            clean = clean.replace(&url[start..end], "***");
        }
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_and_keeps_the_rest() {
        assert_eq!(
            redact_url("redis://user:s3cret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact_url("redis://:s3cret@host"), "redis://:***@host");
        assert_eq!(redact_url("rediss://user@host"), "rediss://user@host");
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(
            redact_url("redis://:a@h1,redis://:b@h2"),
            "redis://:***@h1,redis://:***@h2"
        );
        // A ',' inside the password: seeds split only where a scheme follows the comma.
        assert_eq!(
            redact_url("redis://:pa,ss@h:1/, redis://u:x,y@h2:2/"),
            "redis://:***@h:1/, redis://u:***@h2:2/"
        );
        assert!(!scrub("bad: redis://:pa,ss@h/", "redis://:pa,ss@h/").contains("pa,ss"));
        // An '@', '/', '?', '#' or '%' inside the password: the last '@' ends the user info.
        for password in ["p@ss", "ab/SECRET", "a?b", "a#b", "a%2Fb", "x/y@z#w"] {
            let url = format!("redis://u:{password}@host:6379/0");
            assert_eq!(redact_url(&url), "redis://u:***@host:6379/0", "{password}");
            assert!(!scrub(&format!("bad: {url}"), &url).contains(password));
        }
    }

    #[test]
    fn scrubs_messages() {
        assert_eq!(
            scrub("bad url redis://:hunter2@x", "redis://:hunter2@x"),
            "bad url redis://:***@x"
        );
    }
}
