//! Request, trace and span ids from a generator per worker thread (wyrand,
//! seeded once per thread from the operating system's randomness through
//! `uuid`'s generator): three ids per request cost a few multiplications
//! instead of three calls into a cryptographic generator. These ids name
//! and correlate requests; nothing trusts them to be unguessable (stream
//! task ids, which are looked up, stay `uuid` v4).

use std::cell::Cell;
use std::hash::Hasher;

thread_local! {
    static STATE: Cell<u64> = Cell::new(uuid::Uuid::new_v4().as_u64_pair().0);
}

/// The next 64 random bits of this thread's generator.
pub fn next_u64() -> u64 {
    STATE.with(|state| {
        let s = state.get().wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) ^ t) as u64
    })
}

/// 16 random bytes.
pub fn bytes16() -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&next_u64().to_le_bytes());
    out[8..].copy_from_slice(&next_u64().to_le_bytes());
    out
}

/// A new request id: a version 4 UUID, hyphenated, lower case.
pub fn request_id(buf: &mut [u8; uuid::fmt::Hyphenated::LENGTH]) -> &str {
    uuid::Builder::from_random_bytes(bytes16())
        .into_uuid()
        .hyphenated()
        .encode_lower(buf)
}

/// The hasher of keys that are already hashes: passes them through.
#[derive(Default)]
pub struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; anything else is folded in all the same.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_differ_and_look_like_uuids() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(bytes16()), "a repeated id");
        }
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = request_id(&mut buf).to_owned();
        let parsed = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(parsed.get_version_num(), 4, "{id}");
        let other = std::thread::spawn(bytes16).join().unwrap();
        assert!(!seen.contains(&other), "another thread has its own seed");
    }
}
