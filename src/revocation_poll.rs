//! Host side of revocation (see `revocation` for the set, `revocation_sync` for how
//! workers share it): one worker at a time polls the token service's feed, under a
//! lease in shared data, applies the page and publishes what changed; every worker
//! adopts it on its tick. A failed poll changes nothing but a counter: the last set
//! stays in use, and is retried one poll interval later. A full page (`more`) is
//! followed at once by the next; a reset that spans pages is built aside and replaces
//! the set only once its last page has come.

use log::{info, warn};
use proxy_wasm::hostcalls;

use crate::config::RevocationFeed;
use crate::fetch::{callout_body, now, try_lease, Callout};
use crate::jwks_sync::due;
use crate::revocation::{Page, RevocationSet, MAX_FEED_BYTES};
use crate::revocation_sync::{Change, Limits, SharedData, SyncKeys};
use crate::root::Shared;

/// Shared data through the host.
pub struct HostShared;

impl SharedData for HostShared {
    fn get(&self, key: &str) -> Option<(Vec<u8>, Option<u32>)> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(value), cas)) => Some((value, cas)),
            _ => None,
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        hostcalls::set_shared_data(key, Some(value), cas).is_ok()
    }
}

/// The shared-data keys of one feed.
pub fn sync_keys(feed: &RevocationFeed) -> SyncKeys {
    SyncKeys::new(&format!("gatehouse.revocations.{}.{}", feed.cluster, feed.path))
}

/// What the polling side of a worker keeps between callbacks.
#[derive(Default)]
pub struct Poller {
    /// The poll in flight: its callout, and the feed and cursor it asked from.
    in_flight: Option<(u32, String, u64)>,
    /// A set being rebuilt by a reset that spans pages.
    rebuilding: Option<RevocationSet>,
}

fn limits(shared: &Shared, feed: &RevocationFeed) -> Limits {
    Limits {
        // Entries are kept for their `until` plus the clock skew tokens are allowed: a
        // token may be accepted that long past its `exp`, so its entry must outlive it.
        horizon: now().saturating_sub(shared.policy.token.clock_skew_seconds),
        max_entries: feed.max_entries,
    }
}

/// Adopts what the shared copy has that this worker lacks. Returns when the last good
/// poll ended, if there was one.
pub fn adopt_shared(shared: &Shared, feed: &RevocationFeed, keys: &SyncKeys) -> Option<i64> {
    let limits = limits(shared, feed);
    let mut runtime = shared.runtime.try_borrow_mut().ok()?;
    let revocations = runtime.revocations.as_mut()?;
    let head = revocations.replica.adopt(&HostShared, keys, limits)?;
    revocations.refreshed(head.fresh_at);
    Some(head.fresh_at)
}

impl Poller {
    pub fn owns(&self, token_id: u32) -> bool {
        self.in_flight.as_ref().is_some_and(|(t, _, _)| *t == token_id)
    }

    /// On the tick: adopts the shared copy, and polls if one is due and no worker is.
    pub fn tick(&mut self, shared: &Shared, feed: &RevocationFeed, keys: &SyncKeys) {
        let fresh_at = adopt_shared(shared, feed, keys);
        let now = now();
        if self.in_flight.is_some() || !due(fresh_at, now, feed.poll_seconds) {
            return;
        }
        if try_lease(&keys.lease, now, lease_hold(feed)) {
            self.start(shared, feed, keys);
        }
    }

    /// Sends the next poll (the lease is held).
    fn start(&mut self, shared: &Shared, feed: &RevocationFeed, keys: &SyncKeys) {
        let asked = {
            let Ok(runtime) = shared.runtime.try_borrow() else {
                return;
            };
            let Some(revocations) = runtime.revocations.as_ref() else {
                return;
            };
            let from = self.rebuilding.as_ref().unwrap_or(revocations.set());
            let skew = shared.policy.token.clock_skew_seconds;
            (
                from.poll_path(&feed.path, skew),
                from.feed().to_string(),
                from.cursor(),
            )
        };
        let call = Callout {
            what: "the revocation feed",
            cluster: &feed.cluster,
            path: &asked.0,
            authority: &feed.authority,
            timeout_ms: feed.timeout_ms,
        };
        match call.start() {
            Some(token) => self.in_flight = Some((token, asked.1, asked.2)),
            None => failed(shared, keys, feed),
        }
    }

    /// Handles the feed's answer: applies it here, publishes what changed to the other
    /// workers, counts the poll either way.
    pub fn on_response(&mut self, shared: &Shared, feed: &RevocationFeed, keys: &SyncKeys, body_size: usize) {
        let Some((_, asked_feed, asked_cursor)) = self.in_flight.take() else {
            return;
        };
        let page = callout_body("the revocation feed", body_size, MAX_FEED_BYTES).and_then(|body| {
            Page::parse(&body)
                .map_err(|e| warn!("gatehouse: {e}; keeping the last revocation set"))
                .ok()
        });
        let Some(page) = page else {
            self.rebuilding = None;
            failed(shared, keys, feed);
            return;
        };
        // Whatever another worker published meanwhile comes first.
        adopt_shared(shared, feed, keys);
        let limits = limits(shared, feed);
        let now = now();
        let (applied, replaced) = {
            let Ok(mut runtime) = shared.runtime.try_borrow_mut() else {
                return;
            };
            let Some(revocations) = runtime.revocations.as_mut() else {
                return;
            };
            let set = revocations.set();
            if self.rebuilding.is_none() && (set.feed() != asked_feed || set.cursor() != asked_cursor) {
                // The set moved on without this answer: it would apply changes twice
                // or from the wrong place. The next poll asks afresh.
                release(keys, now);
                return;
            }
            if page.reset || self.rebuilding.is_some() {
                let mut next = if page.reset {
                    RevocationSet::default()
                } else {
                    self.rebuilding.take().unwrap_or_default()
                };
                let applied = next.apply_page(&page, limits.horizon, limits.max_entries);
                if page.more {
                    self.rebuilding = Some(next);
                    drop(runtime);
                    self.start(shared, feed, keys);
                    return;
                }
                revocations.replica.set = next;
                revocations
                    .replica
                    .publish(&HostShared, keys, Change::Replaced, now);
                (applied, true)
            } else {
                let cursor = revocations.set().cursor();
                let applied = revocations
                    .replica
                    .set
                    .apply_page(&page, limits.horizon, limits.max_entries);
                let change = if applied.changed || revocations.set().cursor() != cursor {
                    Change::Delta(&page)
                } else {
                    Change::Nothing
                };
                // A full page is not yet a complete answer: the time of the poll is
                // published with the last one.
                let fresh_at = if page.more { revocations.fresh_at } else { now };
                revocations.replica.publish(&HostShared, keys, change, fresh_at);
                (applied, false)
            }
        };
        let m = &shared.metrics;
        if applied.dropped > 0 {
            warn!(
                "gatehouse: more than revocation.max_entries ({}) revocation entries: dropped the {} token entries that expire soonest",
                feed.max_entries, applied.dropped
            );
            m.add(m.revocation_dropped, applied.dropped);
        }
        if applied.changed || replaced {
            if let Ok(runtime) = shared.runtime.try_borrow() {
                if let Some(r) = runtime.revocations.as_ref() {
                    info!("gatehouse: revocation set updated: {} entries", r.set().len());
                }
            }
            m.bump(m.revocation_updates);
        }
        if page.more {
            self.start(shared, feed, keys);
            return;
        }
        if let Ok(mut runtime) = shared.runtime.try_borrow_mut() {
            if let Some(r) = runtime.revocations.as_mut() {
                r.refreshed(now);
            }
        }
        m.bump(m.revocation_poll_ok);
        // The next poll is due by the schedule; free the lease for whichever worker ticks first.
        release(keys, now);
    }
}

/// Held a little longer than the callout may take; released when it answers.
fn lease_hold(feed: &RevocationFeed) -> i64 {
    i64::try_from(feed.timeout_ms / 1000)
        .unwrap_or(60)
        .saturating_add(2)
}

fn release(keys: &SyncKeys, now: i64) {
    let _ = hostcalls::set_shared_data(&keys.lease, Some(&now.to_be_bytes()), None);
}

/// A poll that did not work: counted; the lease is kept one interval so the next try
/// waits that long.
fn failed(shared: &Shared, keys: &SyncKeys, feed: &RevocationFeed) {
    let until = now().saturating_add(feed.poll_seconds);
    let _ = hostcalls::set_shared_data(&keys.lease, Some(&until.to_be_bytes()), None);
    let m = &shared.metrics;
    m.bump(m.revocation_poll_failed);
}
