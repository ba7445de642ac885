//! Property tests of the shared input check, `liveness_store::validate`: over random ids
//! (any unicode, NUL bytes, 0 to 599 bytes) and ttls (0 to two years, in seconds down to
//! nanoseconds), it accepts exactly the ids that are non-empty, at most 256 bytes and free of
//! NUL, and exactly the ttls from 1 ms to 365 days; it never panics; and the memory backend
//! accepts exactly what it accepts.

use std::time::Duration;

use liveness_store::Error;
use liveness_store::validate::{self, MAX_RUNTIME_ID_LEN, MAX_TTL, MIN_TTL};
use proptest::prelude::*;

const TWO_YEARS_SECS: u64 = 2 * 365 * 24 * 60 * 60;

/// The specification, written independently of the code under test.
fn id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= 256 && !id.bytes().any(|b| b == 0)
}

fn ttl_ok(ttl: Duration) -> bool {
    ttl >= Duration::from_millis(1) && ttl <= Duration::from_secs(365 * 24 * 60 * 60)
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn clip(mut s: String, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

/// Ids from 0 to 599 bytes, weighted towards the boundaries that matter.
fn ids() -> impl Strategy<Value = String> {
    let character = prop_oneof![
        4 => any::<char>(),
        2 => proptest::char::range('a', 'z'),
        1 => Just('\0'),
        1 => Just('é'),
        1 => Just('€'),
        1 => Just('😀'),
        1 => prop_oneof![Just(' '), Just('\r'), Just('\n'), Just('{'), Just('}'), Just('*')],
    ];
    let one_byte_chars = || prop_oneof![proptest::char::range('!', '~'), Just(' ')];
    prop_oneof![
        // Anything, up to 599 bytes.
        3 => proptest::collection::vec(character, 0..600)
            .prop_map(|chars| clip(chars.into_iter().collect(), 599)),
        // ASCII right around the 256-byte bound.
        2 => proptest::collection::vec(one_byte_chars(), 250..263)
            .prop_map(|chars| chars.into_iter().collect()),
        // Multi-byte characters around the bound (2, 3 and 4 bytes each: 128, 86, 64 fit).
        2 => (prop_oneof![Just('é'), Just('€'), Just('😀')], 60usize..132)
            .prop_map(|(c, n)| c.to_string().repeat(n)),
        // A NUL somewhere in an otherwise fine id.
        1 => (proptest::collection::vec(one_byte_chars(), 0..256), any::<prop::sample::Index>())
            .prop_map(|(chars, at)| {
                let mut id: String = chars.into_iter().collect();
                let at = at.index(id.len() + 1);
                id.insert(at, '\0');
                id
            }),
        1 => Just(String::new()),
    ]
}

/// Ttls from 0 to two years, in every unit, weighted towards both bounds.
fn ttls() -> impl Strategy<Value = Duration> {
    let around_max = (-2_000_000i64..=2_000_000).prop_map(|ns| {
        if ns < 0 {
            MAX_TTL - Duration::from_nanos(ns.unsigned_abs())
        } else {
            MAX_TTL + Duration::from_nanos(ns.unsigned_abs())
        }
    });
    prop_oneof![
        (0..=TWO_YEARS_SECS).prop_map(Duration::from_secs),
        (0..=TWO_YEARS_SECS * 1_000).prop_map(Duration::from_millis),
        (0..=TWO_YEARS_SECS * 1_000_000).prop_map(Duration::from_micros),
        (0..=TWO_YEARS_SECS * 1_000_000_000).prop_map(Duration::from_nanos),
        // Around 1 ms.
        (0u64..3_000_000).prop_map(Duration::from_nanos),
        (0u64..3_000).prop_map(Duration::from_micros),
        around_max,
        Just(Duration::ZERO),
        Just(MIN_TTL),
        Just(MAX_TTL),
    ]
}

#[test]
fn the_bounds_are_the_documented_ones() {
    assert_eq!(MAX_RUNTIME_ID_LEN, 256);
    assert_eq!(MIN_TTL, Duration::from_millis(1));
    assert_eq!(MAX_TTL, Duration::from_secs(365 * 24 * 60 * 60));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn runtime_id_accepts_exactly_the_valid_ids(id in ids()) {
        match validate::runtime_id(&id) {
            Ok(()) => prop_assert!(id_ok(&id), "accepted {} bytes: {id:?}", id.len()),
            Err(Error::InvalidRuntimeId { reason }) => {
                prop_assert!(!id_ok(&id), "refused {} bytes ({reason}): {id:?}", id.len());
                // The reason never quotes the id, which may be huge.
                prop_assert!(reason.len() < 64, "{reason}");
            }
            Err(other) => prop_assert!(false, "wrong variant: {other:?}"),
        }
    }

    #[test]
    fn ttl_accepts_exactly_1ms_to_365_days(ttl in ttls()) {
        match validate::ttl(ttl) {
            Ok(()) => prop_assert!(ttl_ok(ttl), "accepted {ttl:?}"),
            Err(Error::InvalidTtl { ttl: refused, .. }) => {
                prop_assert!(!ttl_ok(ttl), "refused {ttl:?}");
                prop_assert_eq!(refused, ttl);
            }
            Err(other) => prop_assert!(false, "wrong variant: {other:?}"),
        }
    }

    #[test]
    fn beat_checks_the_id_first_then_the_ttl(id in ids(), ttl in ttls()) {
        let result = validate::beat(&id, ttl);
        match (id_ok(&id), ttl_ok(ttl)) {
            (true, true) => prop_assert!(result.is_ok(), "{result:?}"),
            (false, _) => prop_assert!(
                matches!(result, Err(Error::InvalidRuntimeId { .. })),
                "{result:?}"
            ),
            (true, false) => prop_assert!(
                matches!(result, Err(Error::InvalidTtl { .. })),
                "{result:?}"
            ),
        }
    }

    #[test]
    fn a_batch_is_refused_iff_one_id_is(ids in proptest::collection::vec(ids(), 0..8)) {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let result = validate::runtime_ids(&ids);
        prop_assert_eq!(result.is_ok(), ids.iter().all(|id| id_ok(id)), "{:?}", result);
    }
}

#[cfg(feature = "memory")]
mod memory {
    use liveness_store::{LivenessStore, MemoryStore};

    use super::*;

    /// A record shorter than this may expire before the read-back on a loaded machine, so the
    /// read-back is only asserted for longer ttls (acceptance is asserted for all).
    const READ_BACK_MIN_TTL: Duration = Duration::from_secs(10);

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn the_memory_store_accepts_exactly_what_validate_accepts(
            id in ids(),
            ttl in ttls(),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            let store = MemoryStore::new();
            runtime.block_on(async {
                let touched = store.touch(&id, ttl).await;
                prop_assert_eq!(
                    touched.is_ok(),
                    validate::beat(&id, ttl).is_ok(),
                    "touch: {:?}", touched
                );
                let read = store.is_alive_batch(&[id.as_str()]).await;
                if id_ok(&id) {
                    let answers = read.expect("a valid id is answered");
                    prop_assert_eq!(answers.len(), 1);
                    if touched.is_ok() && ttl >= READ_BACK_MIN_TTL {
                        prop_assert!(answers[0], "touched {:?} for {:?}, then dead", id, ttl);
                    }
                    if touched.is_err() {
                        prop_assert!(!answers[0], "a refused touch wrote {:?}", id);
                    }
                } else {
                    prop_assert!(
                        matches!(read, Err(Error::InvalidRuntimeId { .. })),
                        "{:?}", read
                    );
                }
                // Forgetting anything, valid or not, just returns.
                store.forget(&id).await;
                Ok(())
            })?;
        }
    }
}
