//! Which of Redis Cluster's 16,384 hash slots a key lives in.
//!
//! The store groups keys by the master that owns their slot, so it computes slots itself, the
//! way every Redis Cluster node does: CRC16 (XMODEM) of the key, modulo 16,384, where a key
//! holding a non-empty `{...}` hashes only what is between its first `{` and the next `}`.

/// Hash slots in a Redis Cluster.
pub(crate) const SLOTS: usize = 16_384;

/// The slot of `key`.
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    let hashed = hash_tag(key).unwrap_or(key);
    // 16,384 is a power of two: the remainder is the low 14 bits.
    crc16(hashed) & (SLOTS - 1) as u16
}

/// The hash tag of `key`: what lies between its first `{` and the `}` after it, when that is
/// not empty. `a{b}c` → `b`; `a{}{b}` has none (the first pair is empty).
fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&byte| byte == b'{')?;
    let rest = &key[open + 1..];
    let close = rest.iter().position(|&byte| byte == b'}')?;
    (close > 0).then(|| &rest[..close])
}

/// CRC16-CCITT as Redis Cluster uses it (XMODEM: polynomial 0x1021, initial value 0).
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_specification() {
        // The check value of CRC16/XMODEM, and slots Redis documents or reports.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12_182);
        assert_eq!(key_slot(b"bar"), 5_061);
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn honours_hash_tags() {
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        // An empty first tag means no tag: the whole key is hashed.
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        // No closing brace: no tag.
        assert_eq!(hash_tag(b"foo{bar"), None);
    }
}
