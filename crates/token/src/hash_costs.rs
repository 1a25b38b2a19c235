//! What one Argon2 verification costs under each parameter set in use, so that a
//! failed login takes as long as the slowest of them, whatever the stored hash.
//!
//! A real user is verified with the parameters of their own hash; an unknown user with
//! a dummy of the current parameters. A hash imported from pwdlib (m=64 MiB, t=3, p=4)
//! costs five times the OWASP minimum: without padding, "wrong password" and "no such
//! user" could be told apart by time, in both directions once an operator raises the
//! parameters. So every failed login is answered no earlier than [`HashCosts::failure_time`]
//! after its hashing began: the largest estimate of any parameter set in the store (the
//! service learns them at start and every second), with a margin so that the slowest
//! set itself is padded too most of the time. Only the answer waits: the hashing slot
//! is free during the padding.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::passwords::{Argon2Params, Hasher};
use crate::store::{Store, StoreError};

/// The weight of a new measurement in the running estimate.
const NEW_WEIGHT: f64 = 0.2;
/// Failures wait this much longer than the slowest estimate: the slowest set's own
/// verifications vary around their mean, and a failure answered later than the others
/// only when it is slow would still tell it apart.
const MARGIN: f64 = 1.25;

#[derive(Default)]
pub struct HashCosts {
    seconds: Mutex<HashMap<Argon2Params, f64>>,
}

impl HashCosts {
    /// Adds one measured verification (or hash) with `params`.
    pub fn observe(&self, params: Argon2Params, took: Duration) {
        let took = took.as_secs_f64();
        if let Ok(mut seconds) = self.seconds.lock() {
            seconds
                .entry(params)
                .and_modify(|s| *s = *s * (1.0 - NEW_WEIGHT) + took * NEW_WEIGHT)
                .or_insert(took);
        }
    }

    pub fn knows(&self, params: Argon2Params) -> bool {
        self.seconds.lock().is_ok_and(|s| s.contains_key(&params))
    }

    /// How long after its hashing began a failed login is answered.
    pub fn failure_time(&self) -> Duration {
        let slowest = self
            .seconds
            .lock()
            .map_or(0.0, |s| s.values().copied().fold(0.0, f64::max));
        Duration::try_from_secs_f64(slowest * MARGIN).unwrap_or(Duration::ZERO)
    }
}

/// Times every parameter set of the stored hashes that `hasher` does not know yet. The
/// service does this before it listens and every second after, so a user imported by
/// the CLI (or another replica) is covered within a second.
pub async fn learn_from_store(hasher: &Hasher, store: &Store) -> Result<(), StoreError> {
    let labels = store.hash_param_labels().await?;
    if hasher.learn(&labels).await.is_err() {
        tracing::warn!("every hashing slot stayed busy: a new parameter set is timed at the next try");
    }
    Ok(())
}

/// The label stored beside a hash (`m=65536,t=3,p=4`), so the store can list the
/// parameter sets in use without parsing every hash.
pub fn label(params: Argon2Params) -> String {
    format!(
        "m={},t={},p={}",
        params.memory_kib, params.iterations, params.parallelism
    )
}

/// The parameters of a [`label`].
pub fn parse_label(label: &str) -> Option<Argon2Params> {
    let mut parts = label.split(',');
    let mut field = |name: &str| {
        parts
            .next()?
            .strip_prefix(name)?
            .strip_prefix('=')?
            .parse::<u32>()
            .ok()
    };
    let params = Argon2Params {
        memory_kib: field("m")?,
        iterations: field("t")?,
        parallelism: field("p")?,
    };
    parts.next().is_none().then_some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Argon2Params = Argon2Params {
        memory_kib: 19456,
        iterations: 2,
        parallelism: 1,
    };
    const B: Argon2Params = Argon2Params {
        memory_kib: 65536,
        iterations: 3,
        parallelism: 4,
    };

    #[test]
    fn failures_wait_for_the_slowest_set_with_a_margin() {
        let costs = HashCosts::default();
        let ms = |c: &HashCosts| (c.failure_time().as_secs_f64() * 1e3).round();
        assert_eq!(ms(&costs), 0.0);
        costs.observe(A, Duration::from_millis(40));
        assert_eq!(ms(&costs), 50.0);
        costs.observe(B, Duration::from_millis(200));
        assert_eq!(ms(&costs), 250.0);
        assert!(costs.knows(A) && costs.knows(B));
        // A running estimate: one outlier moves it a fifth of the way.
        costs.observe(B, Duration::from_millis(1200));
        assert_eq!(ms(&costs), 500.0);
    }

    #[test]
    fn labels_round_trip_and_nothing_else_parses() {
        assert_eq!(label(B), "m=65536,t=3,p=4");
        assert_eq!(parse_label(&label(B)), Some(B));
        for bad in [
            "",
            "m=1,t=2",
            "m=1,t=2,p=3,x=4",
            "t=2,m=1,p=3",
            "m=-1,t=2,p=3",
            "m=1,t=2,p=x",
        ] {
            assert_eq!(parse_label(bad), None, "{bad}");
        }
    }
}
