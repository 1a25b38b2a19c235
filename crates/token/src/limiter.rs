//! Limits on failed logins, per key (a username, a client address), shared by every
//! replica of the service through the store.
//!
//! Only failures count, so a user who types their password right is never slowed
//! down: each key has a bucket of `burst` failures that refills evenly over `window`.
//! A key whose bucket is empty is refused before any hashing, with the time until one
//! failure's worth has refilled. The bucket is kept as one time (GCRA): when it is
//! full again. Each failure pushes that time one refill interval further.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::store::{Store, StoreError};

pub struct FailureLimiter {
    burst: i64,
    /// How long one failure takes to refill, in microseconds.
    interval_us: i64,
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on; `holds_failures` says whether the key has failures to forget later.
    Allowed { holds_failures: bool },
    /// No failures left: try again after this long.
    Limited(Duration),
}

impl FailureLimiter {
    /// At most `burst` failures, refilling `burst` per `window`.
    pub fn new(burst: u32, window: Duration) -> Self {
        let burst = i64::from(burst.max(1));
        let window_us = i64::try_from(window.as_micros()).unwrap_or(i64::MAX).max(1);
        FailureLimiter {
            burst,
            interval_us: (window_us / burst).max(1),
        }
    }

    pub async fn check(&self, store: &Store, key: &str) -> Result<Verdict, StoreError> {
        let full_at = store.failures_full_at(key).await?;
        Ok(self.verdict(full_at, now_us()))
    }

    /// Counts one failure for `key`.
    pub async fn fail(&self, store: &Store, key: &str) -> Result<(), StoreError> {
        store.record_failure(key, now_us(), self.interval_us).await
    }

    /// Forgets the failures of `key` (after a successful login as that user).
    pub async fn reset(&self, store: &Store, key: &str) -> Result<(), StoreError> {
        store.forget_failures(key).await
    }

    /// Limited once the failures still unrefilled leave less than one of `burst`: the
    /// bucket is full again at `full_at`, and each failure takes `interval_us` of it.
    fn verdict(&self, full_at: Option<i64>, now_us: i64) -> Verdict {
        let Some(full_at) = full_at else {
            return Verdict::Allowed {
                holds_failures: false,
            };
        };
        let owed = full_at.saturating_sub(now_us);
        let allowed_debt = (self.burst - 1).saturating_mul(self.interval_us);
        if owed > allowed_debt {
            let wait = u64::try_from(owed - allowed_debt).unwrap_or(0);
            Verdict::Limited(Duration::from_micros(wait))
        } else {
            Verdict::Allowed {
                holds_failures: owed > 0,
            }
        }
    }
}

/// Unix time in microseconds: replicas share it (an `Instant` is per process).
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the store does with a failure, for the pure verdict tests.
    fn fail(l: &FailureLimiter, full_at: Option<i64>, now: i64) -> Option<i64> {
        Some(full_at.unwrap_or(now).max(now) + l.interval_us)
    }

    #[test]
    fn only_failures_count_and_they_refill() {
        let l = FailureLimiter::new(3, Duration::from_secs(30));
        let t0 = 1_800_000_000_000_000;
        let s = 1_000_000;
        let mut at = None;
        for _ in 0..10 {
            assert_eq!(
                l.verdict(at, t0),
                Verdict::Allowed {
                    holds_failures: false
                }
            );
        }
        for _ in 0..3 {
            assert!(matches!(l.verdict(at, t0), Verdict::Allowed { .. }));
            at = fail(&l, at, t0);
        }
        assert_eq!(l.verdict(at, t0), Verdict::Limited(Duration::from_secs(10)));
        assert_eq!(
            l.verdict(at, t0 + 4 * s),
            Verdict::Limited(Duration::from_secs(6))
        );
        assert_eq!(
            l.verdict(at, t0 + 10 * s),
            Verdict::Allowed { holds_failures: true },
            "one failure refilled"
        );
        assert_eq!(
            l.verdict(at, t0 + 30 * s),
            Verdict::Allowed {
                holds_failures: false
            },
            "all refilled"
        );
        // Failures after a pause start from now, not from the old time.
        let later = fail(&l, at, t0 + 100 * s);
        assert_eq!(later, Some(t0 + 110 * s));
    }

    #[test]
    fn a_clock_behind_the_stored_time_counts_the_wait_from_it() {
        let l = FailureLimiter::new(1, Duration::from_secs(60));
        let t0 = 1_800_000_000_000_000;
        let at = fail(&l, None, t0);
        // A replica whose clock is 2 s behind sees 62 s to wait, never a negative one.
        assert_eq!(
            l.verdict(at, t0 - 2_000_000),
            Verdict::Limited(Duration::from_secs(62))
        );
    }
}
