//! Lists of Redis URLs: cluster seeds in one setting, cut where a new URL begins, so that a
//! comma inside a password never cuts one in two (for the seeds, and for their redaction).

/// The URLs in a comma-separated list of seeds, trimmed, empty ones dropped; see
/// [`split_urls`].
#[cfg(any(test, feature = "cluster"))]
pub(crate) fn split_seeds(urls: &str) -> Vec<&str> {
    split_urls(urls)
        // A comma left at a seed's end separates nothing (a URL cannot end in one after its
        // password): "a,b," and "a,,b" read as "a,b", as when every comma split.
        .map(|seed| {
            seed.trim_start()
                .trim_end_matches(|c: char| c == ',' || c.is_whitespace())
        })
        .filter(|seed| !seed.is_empty())
        .collect()
}

/// `urls` cut, verbatim, at each comma that a URL scheme follows (spaces allowed), and only
/// there: a raw `,` is legal in a password, and cutting there would break the URL and the
/// redaction of its password, which cuts the same way. A password holding a
/// comma then a scheme still splits; percent-encode it (`%2C`).
pub(crate) fn split_urls(urls: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(urls);
    std::iter::from_fn(move || {
        let text = rest?;
        let cut = text
            .match_indices(',')
            .map(|(comma, _)| comma)
            .find(|&comma| starts_with_scheme(text[comma + 1..].trim_start()));
        match cut {
            Some(comma) => {
                rest = Some(&text[comma + 1..]);
                Some(&text[..comma])
            }
            None => rest.take(),
        }
    })
}

/// Whether `text` starts with one of the TCP schemes redis-rs takes, in any case.
fn starts_with_scheme(text: &str) -> bool {
    ["redis://", "rediss://", "valkey://", "valkeys://"]
        .iter()
        .any(|scheme| {
            text.get(..scheme.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(scheme))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_split_only_before_a_scheme() {
        assert_eq!(
            split_seeds("redis://h1:1/,redis://h2:2/"),
            ["redis://h1:1/", "redis://h2:2/"]
        );
        assert_eq!(
            split_seeds(" redis://h1:1/ ,  REDISS://h2:2/ "),
            ["redis://h1:1/", "REDISS://h2:2/"]
        );
        assert_eq!(
            split_seeds("redis://h1:1/,redis://h2:2/,"),
            ["redis://h1:1/", "redis://h2:2/"]
        );
        assert_eq!(
            split_seeds("redis://h1:1/, ,redis://h2:2/ , "),
            ["redis://h1:1/", "redis://h2:2/"]
        );
        // A raw comma in a password stays in it, wherever the URL stands.
        assert_eq!(
            split_seeds("redis://:pa,ss@h:1/,redis://h2:2/"),
            ["redis://:pa,ss@h:1/", "redis://h2:2/"]
        );
        assert_eq!(
            split_seeds("valkey://h2:2/, rediss://u:,p,@h:1/"),
            ["valkey://h2:2/", "rediss://u:,p,@h:1/"]
        );
        assert_eq!(split_seeds("redis://:a%2Cb@h:1/"), ["redis://:a%2Cb@h:1/"]);
        assert_eq!(split_seeds("redis://h:1/"), ["redis://h:1/"]);
        assert_eq!(
            split_seeds(" redis://:pa,ss@h:1/ "),
            ["redis://:pa,ss@h:1/"]
        );
        assert!(split_seeds(" , ").is_empty());
    }
}
