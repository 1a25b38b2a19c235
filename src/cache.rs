//! A bounded cache of verified tokens, so a token's signature and claims are checked
//! once per worker rather than once per request.
//!
//! Keyed by a 128-bit keyed hash of the whole token (SipHash-1-3 with 128 bits of
//! output, under a 128-bit key drawn from the system's randomness for each cache):
//! the token itself is not kept, and an attacker who cannot learn the key cannot aim a
//! forged token at a cached one. (Two of std's `RandomState`s would not do: the
//! second's key is the first's plus one.) Without randomness there is no cache. An entry is used only while the token's
//! own `exp` (and `nbf`) allow, with the same clock skew; route rules, roles and
//! forwarded headers are still applied on every request. When full, expired entries
//! go first, then everything (simple, bounded, and refilled by the next requests).

use std::collections::HashMap;
use std::hash::Hasher;
use std::rc::Rc;

use siphasher::sip128::{Hasher128, SipHasher13};

use crate::token::VerifiedToken;

pub struct TokenCache {
    max_entries: usize,
    key: (u64, u64),
    entries: HashMap<u128, Rc<VerifiedToken>>,
    pub hits: u64,
    pub misses: u64,
}

impl TokenCache {
    /// `max_entries == 0` disables the cache (as does a system without randomness).
    pub fn new(max_entries: usize) -> Self {
        let mut seed = [0u8; 16];
        let random = getrandom::getrandom(&mut seed).is_ok();
        let (k0, k1) = seed.split_at(8);
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
        TokenCache {
            max_entries: if random { max_entries } else { 0 },
            key: (word(k0), word(k1)),
            entries: HashMap::new(),
            hits: 0,
            misses: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        self.max_entries > 0
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn key(&self, token: &str) -> u128 {
        let mut h = SipHasher13::new_with_keys(self.key.0, self.key.1);
        h.write(token.as_bytes());
        h.finish128().as_u128()
    }

    /// The verified token, if cached and still within its validity at `now` (with
    /// the clock skew its provider allows).
    pub fn get(&mut self, token: &str, now: i64, skew: impl Fn(usize) -> i64) -> Option<Rc<VerifiedToken>> {
        if !self.enabled() {
            return None;
        }
        let key = self.key(token);
        match self.entries.get(&key) {
            Some(v) if v.valid_at(now, skew(v.provider)) => {
                self.hits += 1;
                Some(v.clone())
            }
            Some(_) => {
                self.entries.remove(&key);
                self.misses += 1;
                None
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn insert(
        &mut self,
        token: &str,
        verified: Rc<VerifiedToken>,
        now: i64,
        skew: impl Fn(usize) -> i64,
    ) {
        if !self.enabled() {
            return;
        }
        if self.entries.len() >= self.max_entries {
            self.entries.retain(|_, v| v.valid_at(now, skew(v.provider)));
            if self.entries.len() >= self.max_entries {
                self.entries.clear();
            }
        }
        let key = self.key(token);
        self.entries.insert(key, verified);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::StrictObject;

    fn verified(exp: i64, nbf: Option<i64>) -> Rc<VerifiedToken> {
        Rc::new(VerifiedToken {
            provider: 0,
            subject: "alice".into(),
            roles: vec![],
            claims: StrictObject::default(),
            expires_at: exp,
            not_before: nbf,
            issued_at: None,
        })
    }

    #[test]
    fn every_cache_has_a_key_of_its_own_from_the_system() {
        let (a, b) = (TokenCache::new(1), TokenCache::new(1));
        assert!(a.enabled() && b.enabled());
        assert_ne!(a.key, b.key);
        // Independent words, not a counter's neighbours (std's RandomState keys are k0, k0 + 1).
        for c in [&a, &b] {
            assert!(c.key.0.abs_diff(c.key.1) > 1, "{:?}", c.key);
        }
        assert!(a.key.0.abs_diff(b.key.0) > 1 && a.key.1 != b.key.1);
        assert_ne!(a.key("t"), b.key("t"));
    }

    #[test]
    fn entries_live_only_as_long_as_their_token() {
        let mut c = TokenCache::new(10);
        c.insert("t1", verified(1000, Some(500)), 600, |_| 60);
        assert!(c.get("t1", 600, |_| 60).is_some());
        assert!(c.get("t1", 1060, |_| 60).is_some(), "within skew after exp");
        assert!(c.get("t1", 1061, |_| 60).is_none(), "never past exp + skew");
        assert!(
            c.get("t1", 600, |_| 60).is_none(),
            "the expired entry was dropped"
        );
        c.insert("t2", verified(1000, Some(500)), 600, |_| 60);
        assert!(c.get("t2", 439, |_| 60).is_none(), "never before nbf - skew");
        assert!(c.get("t3", 600, |_| 60).is_none());
        assert_eq!((c.hits, c.misses), (2, 4));
    }

    #[test]
    fn bounded_and_switchable() {
        let mut c = TokenCache::new(3);
        for i in 0..10 {
            c.insert(&format!("t{i}"), verified(1000, None), 0, |_| 0);
            assert!(c.len() <= 3);
        }
        assert!(c.get("t9", 0, |_| 0).is_some());
        let mut off = TokenCache::new(0);
        off.insert("t", verified(1000, None), 0, |_| 0);
        assert!(off.get("t", 0, |_| 0).is_none());
        assert_eq!((off.hits, off.misses), (0, 0));
    }

    #[test]
    fn similar_tokens_do_not_collide() {
        let mut c = TokenCache::new(100);
        c.insert("abc.def.ghi", verified(1000, None), 0, |_| 0);
        for other in ["abc.def.ghj", "abc.def.gh", "abc.def.ghi ", "ABC.def.ghi"] {
            assert!(c.get(other, 0, |_| 0).is_none(), "{other}");
        }
    }
}
