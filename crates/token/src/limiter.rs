//! Limits on failed logins, per key (a username, a client address).
//!
//! Only failures count, so a user who types their password right is never slowed
//! down: each key has a bucket of `burst` failures that refills evenly over `window`.
//! A key whose bucket is empty is refused before any hashing, with the time until one
//! failure's worth has refilled.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys kept at most; past this, keys whose bucket is full again are forgotten first.
const MAX_KEYS: usize = 100_000;

pub struct FailureLimiter {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl FailureLimiter {
    /// At most `burst` failures, refilling `burst` per `window`.
    pub fn new(burst: u32, window: Duration) -> Self {
        let burst = f64::from(burst.max(1));
        FailureLimiter {
            burst,
            per_second: burst / window.as_secs_f64().max(0.001),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(retry_after)` if `key` has no failures left.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        match buckets.get(key).map(|b| self.refilled(*b, now)) {
            Some(tokens) if tokens < 1.0 => Err(Duration::from_secs_f64((1.0 - tokens) / self.per_second)),
            _ => Ok(()),
        }
    }

    /// Counts one failure for `key`.
    pub fn fail(&self, key: &str, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            buckets.retain(|_, b| self.refilled(*b, now) < self.burst);
            if buckets.len() >= MAX_KEYS {
                // Still full: forget the oldest half rather than grow without bound.
                let mut ages: Vec<Instant> = buckets.values().map(|b| b.at).collect();
                ages.sort_unstable();
                let cutoff = ages[ages.len() / 2];
                buckets.retain(|_, b| b.at > cutoff);
            }
        }
        let tokens = buckets.get(key).map_or(self.burst, |b| self.refilled(*b, now));
        buckets.insert(
            key.to_string(),
            Bucket {
                tokens: tokens - 1.0,
                at: now,
            },
        );
    }

    /// Forgets the failures of `key` (after a successful login as that user).
    pub fn reset(&self, key: &str) {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    fn refilled(&self, b: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + elapsed * self.per_second).min(self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_count_and_they_refill() {
        let l = FailureLimiter::new(3, Duration::from_secs(30));
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(l.check("u:alice", t0).is_ok(), "checks alone never limit");
        }
        for _ in 0..3 {
            assert!(l.check("u:alice", t0).is_ok());
            l.fail("u:alice", t0);
        }
        let retry = l.check("u:alice", t0).unwrap_err();
        assert!(
            retry > Duration::from_secs(9) && retry <= Duration::from_secs(10),
            "{retry:?}"
        );
        assert!(l.check("u:bob", t0).is_ok(), "other keys are not affected");
        assert!(
            l.check("u:alice", t0 + Duration::from_secs(10)).is_ok(),
            "one failure refilled"
        );
        l.reset("u:alice");
        assert!(l.check("u:alice", t0).is_ok());
    }

    #[test]
    fn memory_stays_bounded() {
        let l = FailureLimiter::new(1, Duration::from_secs(3600));
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS + 10) {
            l.fail(&format!("a:{i}"), t0 + Duration::from_micros(i as u64));
        }
        assert!(l.buckets.lock().unwrap().len() <= MAX_KEYS);
    }
}
