//! Polling the revocation feed (see `revocation` for the set, `revocation_sync` for how
//! workers share it): one worker at a time polls the token service's feed, under a
//! lease in shared data, applies the page and publishes what changed; every worker
//! adopts it on its tick. A failed poll changes nothing but a counter: the last set
//! stays in use, and is retried one poll interval later. A full page (`more`) is
//! followed at once by the next; a reset that spans pages is built aside and replaces
//! the set only once its last page has come.

use log::{info, warn};

use crate::callout;
use crate::decision::Runtime;
use crate::host::{Call, Host};
use crate::jwks_sync::due;
use crate::lease;
use crate::metrics::{Event, Metrics};
use crate::policy::{Policy, RevocationFeed};
use crate::revocation::{Page, RevocationSet, Revocations, MAX_FEED_BYTES};
use crate::revocation_sync::{Change, Limits, SyncKeys};

const WHAT: &str = "the revocation feed";

/// One worker's side of one provider's revocation feed, between callbacks. Its
/// entries revoke that provider's tokens only: `alice` revoked at one issuer is not
/// `alice` at another.
pub struct Poller {
    /// The provider's index.
    pub provider: usize,
    keys: SyncKeys,
    /// The poll in flight: its callout, and the feed and cursor it asked from.
    in_flight: Option<(u32, String, u64)>,
    /// A set being rebuilt by a reset that spans pages.
    rebuilding: Option<RevocationSet>,
}

fn limits(host: &impl Host, skew: i64, feed: &RevocationFeed) -> Limits {
    Limits {
        // Entries are kept for their `until` plus the clock skew tokens are allowed: a
        // token may be accepted that long past its `exp`, so its entry must outlive it.
        horizon: host.now().saturating_sub(skew),
        max_entries: feed.max_entries,
    }
}

/// The provider's feed and clock skew.
fn feed_of(policy: &Policy, provider: usize) -> Option<(&RevocationFeed, i64)> {
    let p = policy.providers.get(provider)?;
    Some((p.revocation.as_ref()?, p.token.clock_skew_seconds))
}

impl Poller {
    /// `name`: the provider's (`None`: the one provider of a configuration without
    /// `providers`, under the names of earlier releases); two providers behind one
    /// cluster never share a set.
    pub fn new(provider: usize, name: Option<&str>, feed: &RevocationFeed) -> Self {
        let base = match name {
            None => format!("gatehouse.revocations.{}.{}", feed.cluster, feed.path),
            Some(name) => format!(
                "gatehouse.revocations.provider.{name}.{}.{}.{}",
                feed.cluster, feed.authority, feed.path
            ),
        };
        Poller {
            provider,
            keys: SyncKeys::new(&base),
            in_flight: None,
            rebuilding: None,
        }
    }

    pub fn owns(&self, token: u32) -> bool {
        self.in_flight.as_ref().is_some_and(|(t, _, _)| *t == token)
    }

    /// Adopts what the shared copy has that this worker lacks. Returns when the last
    /// good poll ended, if there was one.
    pub fn adopt(&self, host: &impl Host, policy: &Policy, revocations: &mut Revocations) -> Option<i64> {
        let (feed, skew) = feed_of(policy, self.provider)?;
        let head = revocations
            .replica
            .adopt(host, &self.keys, limits(host, skew, feed))?;
        revocations.refreshed(head.fresh_at);
        Some(head.fresh_at)
    }

    /// On the tick: adopts the shared copy, and polls if one is due and no worker is.
    pub fn tick(&mut self, host: &impl Host, policy: &Policy, runtime: &mut Runtime, metrics: &Metrics) {
        let (Some((feed, _)), Some(Some(revocations))) = (
            feed_of(policy, self.provider),
            runtime.revocations.get_mut(self.provider),
        ) else {
            return;
        };
        let fresh_at = self.adopt(host, policy, revocations);
        let now = host.now();
        if self.in_flight.is_some() || !due(fresh_at, now, feed.poll_seconds) {
            return;
        }
        if lease::try_take(host, &self.keys.lease, now, lease_hold(feed)) {
            self.start(host, policy, revocations, metrics);
        }
    }

    /// Sends the next poll (the lease is held).
    fn start(&mut self, host: &impl Host, policy: &Policy, revocations: &Revocations, metrics: &Metrics) {
        let Some((feed, skew)) = feed_of(policy, self.provider) else {
            return;
        };
        let from = self.rebuilding.as_ref().unwrap_or(revocations.set());
        let path = from.poll_path(&feed.path, skew);
        let call = Call {
            cluster: &feed.cluster,
            path: &path,
            authority: &feed.authority,
            timeout_ms: feed.timeout_ms,
        };
        match callout::start(host, WHAT, &call) {
            Some(token) => self.in_flight = Some((token, from.feed().to_string(), from.cursor())),
            None => self.failed(host, feed, metrics),
        }
    }

    /// Handles the feed's answer: applies it here, publishes what changed to the other
    /// workers, counts the poll either way.
    pub fn on_answer(
        &mut self,
        host: &impl Host,
        policy: &Policy,
        runtime: &mut Runtime,
        metrics: &Metrics,
        body_size: usize,
    ) {
        let (Some((feed, skew)), Some(Some(revocations))) = (
            feed_of(policy, self.provider),
            runtime.revocations.get_mut(self.provider),
        ) else {
            return;
        };
        let Some((_, asked_feed, asked_cursor)) = self.in_flight.take() else {
            return;
        };
        let page = callout::answer_body(host, WHAT, body_size, MAX_FEED_BYTES).and_then(|body| {
            Page::parse(&body)
                .map_err(|e| warn!("gatehouse: {e}; keeping the last revocation set"))
                .ok()
        });
        let Some(page) = page else {
            self.rebuilding = None;
            self.failed(host, feed, metrics);
            return;
        };
        // Whatever another worker published meanwhile comes first.
        self.adopt(host, policy, revocations);
        let limits = limits(host, skew, feed);
        let now = host.now();
        let set = revocations.set();
        if self.rebuilding.is_none() && (set.feed() != asked_feed || set.cursor() != asked_cursor) {
            // The set moved on without this answer: it would apply changes twice or
            // from the wrong place. The next poll asks afresh.
            lease::hold_until(host, &self.keys.lease, now);
            return;
        }
        let (applied, replaced) = if page.reset || self.rebuilding.is_some() {
            let mut next = if page.reset {
                RevocationSet::default()
            } else {
                self.rebuilding.take().unwrap_or_default()
            };
            let applied = next.apply_page(&page, limits.horizon, limits.max_entries);
            if page.more {
                self.rebuilding = Some(next);
                self.start(host, policy, revocations, metrics);
                return;
            }
            revocations.replica.set = next;
            revocations
                .replica
                .publish(host, &self.keys, Change::Replaced, now);
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
            revocations.replica.publish(host, &self.keys, change, fresh_at);
            (applied, false)
        };
        if applied.dropped > 0 {
            warn!(
                "gatehouse: more than revocation.max_entries ({}) revocation entries: dropped the {} token entries that expire soonest",
                feed.max_entries, applied.dropped
            );
            metrics.event(host, self.provider, Event::RevocationDropped, applied.dropped);
        }
        if applied.changed || replaced {
            info!(
                "gatehouse: revocation set updated: {} entries",
                revocations.set().len()
            );
            metrics.event(host, self.provider, Event::RevocationUpdates, 1);
        }
        if page.more {
            self.start(host, policy, revocations, metrics);
            return;
        }
        revocations.refreshed(now);
        metrics.event(host, self.provider, Event::RevocationPollOk, 1);
        // The next poll is due by the schedule; free the lease for whichever worker ticks first.
        lease::hold_until(host, &self.keys.lease, now);
    }

    /// A poll that did not work: counted; the lease is kept one interval so the next
    /// try waits that long.
    fn failed(&self, host: &impl Host, feed: &RevocationFeed, metrics: &Metrics) {
        lease::hold_until(
            host,
            &self.keys.lease,
            host.now().saturating_add(feed.poll_seconds),
        );
        metrics.event(host, self.provider, Event::RevocationPollFailed, 1);
    }
}

/// Held a little longer than the callout may take; released when it answers.
fn lease_hold(feed: &RevocationFeed) -> i64 {
    i64::try_from(feed.timeout_ms / 1000)
        .unwrap_or(60)
        .saturating_add(2)
}
