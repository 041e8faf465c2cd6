//! The edge's token check with a bounded cache of verified tokens per
//! worker, keyed by the token's bytes (as Envoy's `jwt_authn` caches them):
//! a client sends the same token on every request for its whole life, and
//! verifying it (base64, HMAC-SHA256, JSON) cost more than proxying the
//! request (docs/PERFORMANCE.md, issue 30).
//!
//! What a cached token still gets on every request:
//! - its `exp`, against the clock, with the verifier's leeway: an expired
//!   token is refused (and forgotten) exactly as the full check would;
//! - the key in force: entries belong to the [`Verifier`] that checked
//!   them ([`Verifier::id`]); a cache asked by another verifier (another
//!   key) forgets everything first, so a token the new key does not sign
//!   is refused at once.
//!
//! Only tokens that verified are kept, compared by their whole text (never
//! by a hash alone). Everything else a token was checked for (signature,
//! algorithm, `iat`, lifetime, `nbf`, clean `sub`) cannot change while
//! its bytes do not. The bound is two generations of at most half of
//! `GATEWAY_TOKEN_CACHE_SIZE` entries each: when the young one fills, the
//! old one is dropped and the young one takes its place; a hit in the old
//! one moves the token to the young one. Each worker has its own cache, so
//! a lookup never waits on another thread.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Arc, Mutex};

use dwp_core::token::{Claims, TokenError, Verifier};

use crate::ids::Prehashed;

/// A verified token's claims and its user: (tenant, user), as
/// [`dwp_core::hitl::owner_field`] writes it, and the key the user's caps
/// are counted under.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    /// The token's claims.
    pub claims: Claims,
    /// Its user, (tenant, user).
    pub owner: Arc<str>,
    /// The user's key in the caps' counts ([`crate::limits::user_key`]).
    pub owner_key: u64,
}

impl Verified {
    fn new(claims: Claims) -> Self {
        let owner =
            dwp_core::hitl::owner_field(claims.tenant_id.as_deref().unwrap_or(""), &claims.sub);
        Self {
            owner_key: crate::limits::user_key(&owner),
            claims,
            owner: Arc::from(owner),
        }
    }
}

/// The verifier and each worker's cache of what it verified.
pub struct Tokens {
    verifier: Verifier,
    caches: Box<[Mutex<Cache>]>,
}

impl Tokens {
    /// Checks with `verifier`, caching up to `capacity` tokens per worker
    /// for `workers` workers (0: no cache).
    pub fn new(verifier: Verifier, workers: usize, capacity: usize) -> Self {
        Self {
            caches: (0..workers.max(1))
                .map(|_| Mutex::new(Cache::new(capacity)))
                .collect(),
            verifier,
        }
    }

    /// Verifies the value of an `Authorization` header for a request on
    /// `worker`. Its bytes are compared with the cache's tokens as they
    /// are; only a token checked in full needs to be text (a value that is
    /// not counts as no token, as it always did).
    pub fn verify_header(
        &self,
        worker: usize,
        authorization: Option<&[u8]>,
    ) -> Result<Arc<Verified>, TokenError> {
        let token = authorization.and_then(bearer).ok_or(TokenError::Missing)?;
        let cache = &self.caches[worker % self.caches.len()];
        let now = dwp_core::envelope::unix_now();
        let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.verify(&self.verifier, token, now)
    }
}

/// The token of a `Bearer` authorization value (the scheme in any case),
/// as [`dwp_core::token::bearer`] finds it, without its text check.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let space = value.iter().position(|b| *b == b' ')?;
    let token = value[space + 1..].trim_ascii();
    (value[..space].eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

/// A token's text, when it is what a header's text may be (visible ASCII,
/// spaces and tabs): what `HeaderValue::to_str` accepts.
fn text(token: &[u8]) -> Option<&str> {
    token
        .iter()
        .all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
        .then(|| std::str::from_utf8(token).ok())
        .flatten()
}

/// A token's cache key: its last 8 bytes (the end of its HMAC signature,
/// which nobody without the key can choose) mixed with a random number per
/// cache. Two tokens that differ anywhere differ there unless one is a
/// forgery; an entry is a hit only when the whole text matches, and a
/// token that fails the full check is never kept, so a crafted key can
/// cost its sender a full check and nothing more.
fn key(bytes: &[u8], seed: u64) -> u64 {
    let mut tail = [0u8; 8];
    let n = bytes.len().min(8);
    tail[..n].copy_from_slice(&bytes[bytes.len() - n..]);
    (u64::from_le_bytes(tail) ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// A generation: entries by their token's [`key`].
type Generation = HashMap<u64, Entry, BuildHasherDefault<Prehashed>>;

/// A verified token and what it verified to.
#[derive(Debug)]
struct Entry {
    token: Box<[u8]>,
    verified: Arc<Verified>,
}

/// One worker's verified tokens, in two generations.
#[derive(Debug)]
struct Cache {
    /// The verifier whose tokens these are.
    verifier: u64,
    /// Entries per generation; 0: nothing is kept.
    half: usize,
    /// The random part of the keys.
    seed: u64,
    young: Generation,
    old: Generation,
}

impl Cache {
    fn new(capacity: usize) -> Self {
        Self {
            verifier: 0,
            half: capacity / 2,
            seed: crate::ids::next_u64(),
            young: Generation::default(),
            old: Generation::default(),
        }
    }

    /// `token`'s verified claims at `now` (Unix seconds): from the cache
    /// when `verifier` verified it before and it has not expired since,
    /// else checked in full (and kept when it verifies).
    fn verify(
        &mut self,
        verifier: &Verifier,
        token: &[u8],
        now: u64,
    ) -> Result<Arc<Verified>, TokenError> {
        let full = |token: &[u8]| {
            let token = text(token).ok_or(TokenError::Missing)?;
            verifier.verify(token).map(|c| Arc::new(Verified::new(c)))
        };
        if self.half == 0 {
            return full(token);
        }
        if self.verifier != verifier.id() {
            // Another key: nothing the old one verified counts.
            self.young.clear();
            self.old.clear();
            self.verifier = verifier.id();
        }
        let key = key(token, self.seed);
        if let Some(hit) = self.young.get(&key).filter(|e| *e.token == *token) {
            if verifier.expired(hit.verified.claims.exp, now) {
                self.young.remove(&key);
                return Err(TokenError::Expired);
            }
            return Ok(hit.verified.clone());
        }
        if let Some(hit) = self.old.remove(&key) {
            if *hit.token == *token {
                if verifier.expired(hit.verified.claims.exp, now) {
                    return Err(TokenError::Expired);
                }
                let verified = hit.verified.clone();
                self.keep(key, hit);
                return Ok(verified);
            }
            self.old.insert(key, hit); // another token with the same key
        }
        let verified = full(token)?;
        let entry = Entry {
            token: Box::from(token),
            verified: verified.clone(),
        };
        self.keep(key, entry);
        Ok(verified)
    }

    /// Keeps `entry` in the young generation (in place of any entry with
    /// the same key), which first becomes the old one when it is full.
    fn keep(&mut self, key: u64, entry: Entry) {
        if self.young.len() >= self.half {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, entry);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dwp_core::token::issue;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OTHER_KEY: &[u8] = b"fedcba9876543210fedcba9876543210";

    fn now() -> u64 {
        dwp_core::envelope::unix_now()
    }

    fn token(sub: &str, exp: u64, key: &[u8]) -> String {
        let claims = Claims {
            sub: sub.into(),
            tenant_id: Some("t1".into()),
            iat: Some(now()),
            exp,
        };
        issue(&claims, key)
    }

    #[test]
    fn a_cached_token_is_the_same_answer_as_a_full_check() {
        let verifier = Verifier::new(KEY, None);
        let mut cache = Cache::new(100);
        let good = token("alice", now() + 600, KEY);
        let first = cache.verify(&verifier, good.as_bytes(), now()).unwrap();
        let again = cache.verify(&verifier, good.as_bytes(), now()).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the second check is a hit");
        assert_eq!(first.claims.sub, "alice");
        assert_eq!(&*first.owner, dwp_core::hitl::owner_field("t1", "alice"));
        // A token that differs in one byte of its signature is not a hit.
        let mut forged = good.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(
            cache.verify(&verifier, forged.as_bytes(), now()),
            Err(TokenError::Invalid)
        );
        assert_eq!(cache.len(), 1, "a refused token is not kept");
    }

    #[test]
    fn a_cached_token_expires_with_the_leeway_of_the_full_check() {
        let verifier = Verifier::new(KEY, None);
        let mut cache = Cache::new(100);
        let exp = now() + 60;
        let t = token("bob", exp, KEY);
        cache.verify(&verifier, t.as_bytes(), now()).unwrap();
        let leeway = dwp_core::token::DEFAULT_LEEWAY_SECS;
        assert!(cache.verify(&verifier, t.as_bytes(), exp + leeway).is_ok());
        assert_eq!(
            cache.verify(&verifier, t.as_bytes(), exp + leeway + 1),
            Err(TokenError::Expired)
        );
        assert_eq!(cache.len(), 0, "an expired token is forgotten");
    }

    #[test]
    fn another_key_refuses_what_the_old_one_verified_at_once() {
        let old = Verifier::new(KEY, None);
        let mut cache = Cache::new(100);
        let t = token("carol", now() + 600, KEY);
        cache.verify(&old, t.as_bytes(), now()).unwrap();
        let new = Verifier::new(OTHER_KEY, None);
        assert_eq!(
            cache.verify(&new, t.as_bytes(), now()),
            Err(TokenError::Invalid)
        );
        let fresh = token("carol", now() + 600, OTHER_KEY);
        assert!(cache.verify(&new, fresh.as_bytes(), now()).is_ok());
        assert_eq!(
            cache.verify(&old, fresh.as_bytes(), now()),
            Err(TokenError::Invalid),
            "and back: the cache is the verifier's own"
        );
    }

    #[test]
    fn the_bearer_value_is_read_as_the_full_check_reads_it() {
        for value in [
            "Bearer abc",
            "bearer abc",
            "  BEARER   abc  ",
            "Bearer\tx abc",
        ] {
            assert_eq!(
                bearer(value.as_bytes()).map(|t| std::str::from_utf8(t).unwrap()),
                dwp_core::token::bearer(value),
                "{value:?}"
            );
        }
        for value in ["Bearer", "Bearer ", "Basic abc", "abc", ""] {
            assert_eq!(bearer(value.as_bytes()), None, "{value:?}");
            assert_eq!(dwp_core::token::bearer(value), None, "{value:?}");
        }
        let verifier = Verifier::new(KEY, None);
        assert_eq!(
            Cache::new(10).verify(&verifier, "tok\u{e9}n".as_bytes(), now()),
            Err(TokenError::Missing),
            "a value that is not header text is no token"
        );
    }

    #[test]
    fn the_cache_stays_within_its_bound_and_keeps_what_is_used() {
        let verifier = Verifier::new(KEY, None);
        let mut cache = Cache::new(10);
        let hot = token("hot", now() + 600, KEY);
        let first = cache.verify(&verifier, hot.as_bytes(), now()).unwrap();
        for i in 0..100 {
            let t = token(&format!("user{i}"), now() + 600, KEY);
            cache.verify(&verifier, t.as_bytes(), now()).unwrap();
            assert!(cache.len() <= 10, "{} entries", cache.len());
            // The hot token stays, moved to the young generation when used.
            let again = cache.verify(&verifier, hot.as_bytes(), now()).unwrap();
            assert!(Arc::ptr_eq(&first, &again), "evicted at {i}");
        }
        let mut off = Cache::new(0);
        off.verify(&verifier, hot.as_bytes(), now()).unwrap();
        assert_eq!(off.len(), 0, "a size of 0 keeps nothing");
    }
}
