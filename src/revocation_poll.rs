//! Host side of revocation (see `revocation` for the set itself): one worker at a time
//! polls the token service's feed, under a lease in shared data, and publishes the
//! whole set there with the time of that good poll; every worker adopts the shared
//! copy on its tick. A failed poll changes nothing but a counter: the last set stays
//! in use, and is retried one poll interval later.

use log::{info, warn};
use proxy_wasm::hostcalls;

use crate::config::RevocationFeed;
use crate::fetch::{callout_body, now, try_lease, Callout};
use crate::jwks_sync::{decode, due, encode};
use crate::revocation::{RevocationSet, MAX_FEED_BYTES};
use crate::root::Shared;

/// The shared-data keys of one feed.
pub struct FeedKeys {
    pub set: String,
    pub lease: String,
}

impl FeedKeys {
    pub fn new(feed: &RevocationFeed) -> Self {
        let base = format!("gatehouse.revocations.{}.{}", feed.cluster, feed.path);
        FeedKeys {
            lease: format!("{base}.lease"),
            set: base,
        }
    }
}

/// Adopts the shared set if it changed since this worker last did, and its age.
/// Returns when the shared set was last refreshed, if there is one.
pub fn adopt_shared(shared: &Shared, feed: &RevocationFeed, keys: &FeedKeys) -> Option<i64> {
    let Ok((Some(record), cas)) = hostcalls::get_shared_data(&keys.set) else {
        return None;
    };
    let (fresh_at, page) = decode(&record)?;
    let mut seen = shared.revocation_seen.try_borrow_mut().ok()?;
    let mut runtime = shared.runtime.try_borrow_mut().ok()?;
    let revocations = runtime.revocations.as_mut()?;
    if cas.is_some() && cas != *seen {
        match RevocationSet::default().apply(page, horizon(shared), feed.max_entries) {
            Ok(set) => {
                revocations.set = set;
                *seen = cas;
            }
            Err(e) => warn!("gatehouse: the shared revocation set is not usable ({e})"),
        }
    }
    revocations.fresh_at = revocations.fresh_at.max(fresh_at);
    Some(fresh_at)
}

/// Starts a poll if one is due and no other worker is polling.
pub fn poll_if_due(
    shared: &Shared,
    feed: &RevocationFeed,
    keys: &FeedKeys,
    fresh_at: Option<i64>,
) -> Option<u32> {
    let now = now();
    if !due(fresh_at, now, feed.poll_seconds) {
        return None;
    }
    // Held a little longer than the callout may take; released when it answers.
    let hold = i64::try_from(feed.timeout_ms / 1000)
        .unwrap_or(60)
        .saturating_add(2);
    if !try_lease(&keys.lease, now, hold) {
        return None;
    }
    let path = {
        let runtime = shared.runtime.try_borrow().ok()?;
        runtime.revocations.as_ref()?.set.poll_path(&feed.path)
    };
    let call = Callout {
        what: "the revocation feed",
        cluster: &feed.cluster,
        path: &path,
        authority: &feed.authority,
        timeout_ms: feed.timeout_ms,
    };
    let started = call.start();
    if started.is_none() {
        failed(shared, keys, now, feed);
    }
    started
}

/// Handles the feed's answer: applies it here, publishes the new set to the other
/// workers, counts the poll either way.
pub fn handle_response(shared: &Shared, feed: &RevocationFeed, keys: &FeedKeys, body_size: usize) {
    let now = now();
    let applied = callout_body("the revocation feed", body_size, MAX_FEED_BYTES).and_then(|body| {
        let runtime = shared.runtime.try_borrow().ok()?;
        let current = &runtime.revocations.as_ref()?.set;
        current
            .apply(&body, horizon(shared), feed.max_entries)
            .map_err(|e| warn!("gatehouse: {e}; keeping the last revocation set"))
            .ok()
    });
    let Some(set) = applied else {
        failed(shared, keys, now, feed);
        return;
    };
    let changed = {
        let Ok(mut runtime) = shared.runtime.try_borrow_mut() else {
            return;
        };
        let Some(revocations) = runtime.revocations.as_mut() else {
            return;
        };
        let changed = revocations.set != set;
        if changed {
            info!("gatehouse: revocation set updated: {} entries", set.len());
        }
        revocations.set = set;
        revocations.fresh_at = now;
        changed
    };
    let page = shared
        .runtime
        .try_borrow()
        .ok()
        .and_then(|r| r.revocations.as_ref().map(|r| r.set.to_page()))
        .unwrap_or_default();
    if hostcalls::set_shared_data(&keys.set, Some(&encode(now, &page)), None).is_ok() {
        if let (Ok((_, cas)), Ok(mut seen)) = (
            hostcalls::get_shared_data(&keys.set),
            shared.revocation_seen.try_borrow_mut(),
        ) {
            *seen = cas;
        }
    }
    // The next poll is due by the schedule; free the lease for whichever worker ticks first.
    let _ = hostcalls::set_shared_data(&keys.lease, Some(&now.to_be_bytes()), None);
    let m = &shared.metrics;
    m.bump(m.revocation_poll_ok);
    if changed {
        m.bump(m.revocation_updates);
    }
}

/// A poll that did not work: counted; the lease is kept one interval so the next try
/// waits that long.
fn failed(shared: &Shared, keys: &FeedKeys, now: i64, feed: &RevocationFeed) {
    let until = now.saturating_add(feed.poll_seconds);
    let _ = hostcalls::set_shared_data(&keys.lease, Some(&until.to_be_bytes()), None);
    let m = &shared.metrics;
    m.bump(m.revocation_poll_failed);
}

/// Entries are dropped after their `until` plus the clock skew tokens are allowed:
/// a token may be accepted that long past its `exp`, so its entry must outlive it.
fn horizon(shared: &Shared) -> i64 {
    now().saturating_sub(shared.policy.token.clock_skew_seconds)
}
