//! A background task deleting what can no longer matter: revocation entries whose
//! tokens have all expired, expired refresh tokens, and failed-login keys whose
//! failures have all refilled. Every replica runs it; the deletes are idempotent.

use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::clock::unix_now;
use crate::limiter::now_us;
use crate::store::Store;

/// How often `serve` purges.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Purges now, then every `every`, until the handle is aborted.
pub fn spawn_purger(store: Store, every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        // After a stall one purge catches up with everything; a burst would not help.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            ticks.tick().await;
            purge(&store, unix_now()).await;
        }
    })
}

async fn purge(store: &Store, now: i64) {
    match store.purge_revocations(now).await {
        Ok(n) => debug!(purged = n, "expired revocation entries purged"),
        Err(e) => warn!(error = %e, "could not purge revocation entries"),
    }
    match store.purge_expired(now).await {
        Ok(n) => debug!(purged = n, "expired refresh tokens purged"),
        Err(e) => warn!(error = %e, "could not purge refresh tokens"),
    }
    match store.purge_failures(now_us()).await {
        Ok(n) => debug!(purged = n, "refilled failed-login keys purged"),
        Err(e) => warn!(error = %e, "could not purge failed-login keys"),
    }
}
