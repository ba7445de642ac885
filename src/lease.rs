//! Leases: what one instance knows of a runtime's record, carried by the runtime to the next.
//!
//! A layered store coalesces a beat when the record it wrote earlier still covers the beat's
//! ttl. Behind a load balancer that spreads a runtime's beats over instances, the instance that
//! takes a beat has usually not written the record, and writes it again. A lease closes that
//! gap: with each beat's answer the heartbeat server hands the runtime a lease stating until
//! when the record lives, signed; the runtime sends it back with its next beat, to whichever
//! instance, and that instance can coalesce as if it had written the record itself.
//!
//! A lease holds when it was issued and until when the record lives, both in Unix
//! milliseconds, and a MAC over those and the runtime id (SipHash-2-4, 128 bits), keyed by a
//! key every instance sharing the backend derives from the backend's epoch record (so a lease
//! dies with the data it vouches for), or by a key the application configures. A lease that
//! fails to verify, names another runtime, predates a loss this instance detected, or does not
//! parse is ignored: the beat is written as if none was presented. Instances' clocks are
//! trusted to agree within a skew margin, which the verifier subtracts from every lease.
//!
//! A lease is no authentication: anyone holding one can present it, and it says nothing about
//! who the runtime is. It only lets an instance skip a write that another one already made.

use std::fmt;
use std::hash::Hasher;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use siphasher::sip128::{Hasher128, SipHasher24};

/// The key that signs and verifies leases: 128 bits.
#[derive(Clone, PartialEq, Eq)]
pub struct LeaseKey([u8; 16]);

impl LeaseKey {
    /// A key of these bytes; every instance that should honour each other's leases needs the
    /// same.
    #[must_use]
    pub fn new(bytes: [u8; 16]) -> LeaseKey {
        LeaseKey(bytes)
    }

    /// The key derived from `secret`, e.g. a backend's epoch value (random, shared by every
    /// instance, replaced when the backend loses its data).
    #[must_use]
    pub fn derive(secret: &[u8]) -> LeaseKey {
        // A fixed key: the secret's own randomness makes the result unpredictable.
        let mut hasher = SipHasher24::new_with_key(b"liveness-lease-k");
        hasher.write(secret);
        LeaseKey(hasher.finish128().as_bytes())
    }

    #[cfg_attr(not(feature = "layered"), allow(dead_code))]
    fn tag(&self, version: u8, issued_ms: u64, until_ms: u64, runtime_id: &str) -> [u8; 16] {
        let mut mac = SipHasher24::new_with_key(&self.0);
        mac.write_u8(version);
        mac.write_u64(issued_ms);
        mac.write_u64(until_ms);
        mac.write(runtime_id.as_bytes());
        mac.finish128().as_bytes()
    }
}

impl fmt::Debug for LeaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LeaseKey(***)")
    }
}

/// A runtime's lease; see [`LivenessStore::touch_lease`](crate::LivenessStore::touch_lease).
///
/// Its text (`Display`, `FromStr`) is short and safe in URLs and headers: 44 characters of
/// base64url for a lease, `-` for none. Parsing never fails the caller's beat: text that is not
/// a lease parses as none.
///
/// ```
/// use liveness_store::Lease;
///
/// let none: Lease = "-".parse().unwrap();
/// assert_eq!(none.to_string(), "-");
/// let garbled: Lease = "not a lease".parse().unwrap();
/// assert!(garbled.is_none());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Lease(Option<Signed>);

#[derive(Clone, Copy, PartialEq, Eq)]
struct Signed {
    issued_ms: u64,
    until_ms: u64,
    tag: [u8; 16],
}

const VERSION: u8 = 1;
const BYTES: usize = 1 + 8 + 8 + 16;

/// What a lease that verified says, in Unix milliseconds.
#[cfg_attr(not(feature = "layered"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Vouched {
    pub(crate) issued_ms: u64,
    pub(crate) until_ms: u64,
}

impl Lease {
    /// No lease: what backends that do not issue leases return, and what garbled text parses
    /// as.
    #[must_use]
    pub fn none() -> Lease {
        Lease(None)
    }

    /// Whether this is no lease.
    #[must_use]
    pub fn is_none(&self) -> bool {
        self.0.is_none()
    }

    /// A lease for `runtime_id` issued at `issued_ms`, saying its record lives until
    /// `until_ms` (Unix milliseconds).
    #[cfg_attr(not(feature = "layered"), allow(dead_code))]
    pub(crate) fn sign(key: &LeaseKey, runtime_id: &str, issued_ms: u64, until_ms: u64) -> Lease {
        let tag = key.tag(VERSION, issued_ms, until_ms, runtime_id);
        Lease(Some(Signed {
            issued_ms,
            until_ms,
            tag,
        }))
    }

    /// What the lease says, if `key` signed it for `runtime_id`.
    #[cfg_attr(not(feature = "layered"), allow(dead_code))]
    pub(crate) fn verify(&self, key: &LeaseKey, runtime_id: &str) -> Option<Vouched> {
        let signed = self.0?;
        let expected = key.tag(VERSION, signed.issued_ms, signed.until_ms, runtime_id);
        // Not in constant time: a tag is checked against one beat's lease, and a guess that
        // shares a prefix with the right tag buys nothing measurable over a network.
        (expected == signed.tag).then_some(Vouched {
            issued_ms: signed.issued_ms,
            until_ms: signed.until_ms,
        })
    }
}

impl Default for Lease {
    fn default() -> Self {
        Lease::none()
    }
}

impl fmt::Display for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(signed) = self.0 else {
            return f.write_str("-");
        };
        let mut bytes = [0_u8; BYTES];
        bytes[0] = VERSION;
        bytes[1..9].copy_from_slice(&signed.issued_ms.to_be_bytes());
        bytes[9..17].copy_from_slice(&signed.until_ms.to_be_bytes());
        bytes[17..].copy_from_slice(&signed.tag);
        f.write_str(&URL_SAFE_NO_PAD.encode(bytes))
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("Lease(none)"),
            Some(signed) => f
                .debug_struct("Lease")
                .field("issued_ms", &signed.issued_ms)
                .field("until_ms", &signed.until_ms)
                .finish_non_exhaustive(),
        }
    }
}

impl FromStr for Lease {
    type Err = std::convert::Infallible;

    /// Any text parses: what is not a lease of this version is none, so that a garbled lease
    /// costs its beat nothing but a write.
    fn from_str(text: &str) -> Result<Lease, Self::Err> {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(text.trim()) else {
            return Ok(Lease::none());
        };
        let Ok(bytes) = <[u8; BYTES]>::try_from(bytes.as_slice()) else {
            return Ok(Lease::none());
        };
        if bytes[0] != VERSION {
            return Ok(Lease::none());
        }
        let word = |at: usize| {
            let mut word = [0_u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(word)
        };
        let mut tag = [0_u8; 16];
        tag.copy_from_slice(&bytes[17..]);
        Ok(Lease(Some(Signed {
            issued_ms: word(1),
            until_ms: word(9),
            tag,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> LeaseKey {
        LeaseKey::derive(b"1764350000000-0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn a_lease_round_trips_as_short_url_safe_text() {
        let lease = Lease::sign(&key(), "rt-1", 1_000, 91_000);
        let text = lease.to_string();
        assert_eq!(text.len(), 44, "{text}");
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{text}"
        );
        let parsed: Lease = text.parse().unwrap();
        assert_eq!(parsed, lease);
        assert_eq!(
            parsed.verify(&key(), "rt-1"),
            Some(Vouched {
                issued_ms: 1_000,
                until_ms: 91_000
            })
        );
    }

    #[test]
    fn another_id_another_key_or_a_changed_byte_does_not_verify() {
        let lease = Lease::sign(&key(), "rt-1", 1_000, 91_000);
        assert_eq!(lease.verify(&key(), "rt-2"), None);
        assert_eq!(
            lease.verify(&LeaseKey::derive(b"another epoch"), "rt-1"),
            None
        );
        let text = lease.to_string();
        for at in 0..text.len() {
            let mut tampered = text.clone().into_bytes();
            tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
            let tampered: Lease = String::from_utf8(tampered).unwrap().parse().unwrap();
            assert_eq!(tampered.verify(&key(), "rt-1"), None, "byte {at}");
        }
    }

    #[test]
    fn garbled_text_is_no_lease() {
        for text in ["", "-", "garbled!", "AAAA", &"A".repeat(44), "🦀"] {
            let lease: Lease = text.parse().unwrap();
            if !lease.is_none() {
                assert_eq!(lease.verify(&key(), "rt-1"), None, "{text}");
            }
        }
        assert_eq!(Lease::none().to_string(), "-");
        assert!(!format!("{:?}", key()).contains(|c: char| c.is_ascii_digit()));
    }
}
