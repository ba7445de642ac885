//! The input check every backend runs before any I/O (invariant 6 of the design).
//!
//! Keeping it in one place is what makes "bad input never reaches Redis" true for every
//! backend alike, and what lets the tests prove it once.

use std::time::Duration;

use crate::{Error, Result};

/// The longest runtime id accepted, in bytes.
pub const MAX_RUNTIME_ID_LEN: usize = 256;

/// The shortest ttl accepted: Redis's `PX` cannot express less.
pub const MIN_TTL: Duration = Duration::from_millis(1);

/// The longest ttl accepted. A heartbeat record that outlives a year is a bug, and moka
/// panics on expiries past a thousand years.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Checks a runtime id: not empty, at most [`MAX_RUNTIME_ID_LEN`] bytes, no NUL byte.
///
/// Anything else is an opaque id: spaces, CR/LF, `{}`, `*` and unicode are all fine, because
/// ids travel as binary-safe Redis arguments, never inside a command line or a pattern.
///
/// ```
/// use liveness_store::validate::runtime_id;
/// assert!(runtime_id("rt-42 {eu}\r\n*").is_ok());
/// assert!(runtime_id("").is_err());
/// ```
pub fn runtime_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        "empty".to_owned()
    } else if id.len() > MAX_RUNTIME_ID_LEN {
        format!(
            "{} bytes, over the maximum of {MAX_RUNTIME_ID_LEN}",
            id.len()
        )
    } else if id.as_bytes().contains(&0) {
        // A NUL byte is never part of a real id; it is truncation or corruption upstream.
        "contains a NUL byte".to_owned()
    } else {
        return Ok(());
    };
    Err(Error::InvalidRuntimeId { reason })
}

/// Checks a ttl: at least [`MIN_TTL`], at most [`MAX_TTL`].
///
/// ```
/// use std::time::Duration;
/// use liveness_store::validate::ttl;
/// assert!(ttl(Duration::from_secs(90)).is_ok());
/// assert!(ttl(Duration::ZERO).is_err());
/// ```
pub fn ttl(ttl: Duration) -> Result<()> {
    let reason = if ttl.is_zero() {
        "zero"
    } else if ttl < MIN_TTL {
        "under the minimum of 1 ms"
    } else if ttl > MAX_TTL {
        "over the maximum of 365 days"
    } else {
        return Ok(());
    };
    Err(Error::InvalidTtl { ttl, reason })
}

/// Checks one heartbeat: its id and its ttl.
pub fn beat(id: &str, ttl_: Duration) -> Result<()> {
    runtime_id(id)?;
    ttl(ttl_)
}

/// Checks every id of a batch.
pub fn runtime_ids(ids: &[&str]) -> Result<()> {
    ids.iter().try_for_each(|id| runtime_id(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_bounds() {
        assert!(runtime_id(&"x".repeat(MAX_RUNTIME_ID_LEN)).is_ok());
        assert!(matches!(
            runtime_id(&"x".repeat(MAX_RUNTIME_ID_LEN + 1)),
            Err(Error::InvalidRuntimeId { .. })
        ));
        assert!(matches!(
            runtime_id("a\0b"),
            Err(Error::InvalidRuntimeId { .. })
        ));
        // A multi-byte character counts by its bytes, not as one.
        assert!(runtime_id(&"é".repeat(129)).is_err());
        assert!(runtime_id(&"é".repeat(128)).is_ok());
    }

    #[test]
    fn ttl_bounds() {
        assert!(ttl(MIN_TTL).is_ok());
        assert!(ttl(MAX_TTL).is_ok());
        assert!(ttl(Duration::from_micros(999)).is_err());
        assert!(ttl(MAX_TTL + Duration::from_nanos(1)).is_err());
    }

    #[test]
    fn error_message_does_not_repeat_a_huge_id() {
        let huge = "y".repeat(1 << 20);
        let message = runtime_id(&huge).unwrap_err().to_string();
        assert!(message.len() < 100, "{message}");
    }
}
