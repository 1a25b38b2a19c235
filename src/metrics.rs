//! Envoy counters: one per [`Outcome`], the token cache's hits and misses, and the
//! background work's events; and per provider, its tokens allowed and refused and
//! its own background events (`gatehouse.provider.<name>.…`).
//!
//! Outcomes are added up inside the VM and flushed on the root context's tick: every
//! host call costs about a microsecond, as much as a verification from the cache, so a
//! per-request `increment_metric` is not free. Background events are rare and are
//! counted as they happen.

use crate::cache::TokenCache;
use crate::decision::Outcome;
use crate::host::Host;

/// A background event's counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    JwksFetchOk,
    JwksFetchFailed,
    /// A JWKS answered, but none of its keys can be used (each is logged).
    JwksNoUsableKey,
    JwksRefetchUnknownKid,
    /// A discovery document was not JSON, named another issuer, or pointed its
    /// `jwks_uri` elsewhere.
    DiscoveryRefused,
    RevocationPollOk,
    RevocationPollFailed,
    /// A poll changed the set.
    RevocationUpdates,
    /// Token entries dropped to keep the set within `revocation.max_entries`.
    RevocationDropped,
}

impl Event {
    const ALL: [Event; 9] = [
        Event::JwksFetchOk,
        Event::JwksFetchFailed,
        Event::JwksNoUsableKey,
        Event::JwksRefetchUnknownKid,
        Event::DiscoveryRefused,
        Event::RevocationPollOk,
        Event::RevocationPollFailed,
        Event::RevocationUpdates,
        Event::RevocationDropped,
    ];

    pub fn metric_name(self) -> &'static str {
        match self {
            Event::JwksFetchOk => "gatehouse.jwks.fetch_ok",
            Event::JwksFetchFailed => "gatehouse.jwks.fetch_failed",
            Event::JwksNoUsableKey => "gatehouse.jwks.no_usable_key",
            Event::DiscoveryRefused => "gatehouse.jwks.discovery_refused",
            Event::JwksRefetchUnknownKid => "gatehouse.jwks.refetch_unknown_kid",
            Event::RevocationPollOk => "gatehouse.revocation.poll_ok",
            Event::RevocationPollFailed => "gatehouse.revocation.poll_failed",
            Event::RevocationUpdates => "gatehouse.revocation.updates",
            Event::RevocationDropped => "gatehouse.revocation.dropped",
        }
    }

    fn index(self) -> usize {
        Event::ALL.iter().position(|e| *e == self).unwrap_or(0)
    }
}

pub struct Metrics {
    outcome_ids: Vec<u32>,
    event_ids: Vec<u32>,
    /// Per provider: its event counters (like `event_ids`), and its allowed and
    /// refused counters with what is not yet sent of them.
    providers: Vec<ProviderCounters>,
    cache_hits: u32,
    cache_misses: u32,
    /// Per-outcome counts not yet sent.
    pending: Vec<u64>,
    /// Cache hits and misses already sent.
    sent_cache: (u64, u64),
}

struct ProviderCounters {
    event_ids: Vec<u32>,
    allowed: u32,
    denied: u32,
    pending: (u64, u64),
}

impl Metrics {
    /// Defines every counter, for providers named `providers`; `None` if the host
    /// refuses one.
    pub fn define<'n>(host: &impl Host, providers: impl IntoIterator<Item = &'n str>) -> Option<Metrics> {
        let define = |name: &str| host.define_counter(name);
        let providers = providers
            .into_iter()
            .map(|name| {
                let base = format!("gatehouse.provider.{name}");
                Some(ProviderCounters {
                    event_ids: Event::ALL
                        .iter()
                        .map(|e| {
                            let suffix = e
                                .metric_name()
                                .strip_prefix("gatehouse.")
                                .unwrap_or(e.metric_name());
                            define(&format!("{base}.{suffix}"))
                        })
                        .collect::<Option<Vec<u32>>>()?,
                    allowed: define(&format!("{base}.allowed"))?,
                    denied: define(&format!("{base}.denied"))?,
                    pending: (0, 0),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let outcome_ids = Outcome::ALL
            .iter()
            .map(|o| define(&o.metric_name()))
            .collect::<Option<Vec<u32>>>()?;
        let event_ids = Event::ALL
            .iter()
            .map(|e| define(e.metric_name()))
            .collect::<Option<Vec<u32>>>()?;
        Some(Metrics {
            pending: vec![0; outcome_ids.len()],
            outcome_ids,
            event_ids,
            providers,
            cache_hits: define("gatehouse.token_cache.hits")?,
            cache_misses: define("gatehouse.token_cache.misses")?,
            sent_cache: (0, 0),
        })
    }

    /// Counts a request's outcome, and for its token's provider whether it passed;
    /// it reaches Envoy with the next flush.
    pub fn count(&mut self, outcome: Outcome, provider: Option<usize>) {
        if let Some(n) = outcome.index().and_then(|i| self.pending.get_mut(i)) {
            *n += 1;
        }
        if let Some(p) = provider.and_then(|p| self.providers.get_mut(p)) {
            match outcome {
                Outcome::Denied(_) => p.pending.1 += 1,
                _ => p.pending.0 += 1,
            }
        }
    }

    /// Counts `n` background events of provider `provider` now (in its own counter
    /// and in the total).
    pub fn event(&self, host: &impl Host, provider: usize, event: Event, n: usize) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        if let Some(&id) = self.event_ids.get(event.index()) {
            host.add_to_counter(id, n);
        }
        if let Some(&id) = self
            .providers
            .get(provider)
            .and_then(|p| p.event_ids.get(event.index()))
        {
            host.add_to_counter(id, n);
        }
    }

    /// Sends what was counted since the last flush. A failed send is kept for the next.
    pub fn flush(&mut self, host: &impl Host, cache: &TokenCache) {
        for (n, &id) in self.pending.iter_mut().zip(&self.outcome_ids) {
            if *n > 0 && host.add_to_counter(id, *n) {
                *n = 0;
            }
        }
        for p in &mut self.providers {
            if p.pending.0 > 0 && host.add_to_counter(p.allowed, p.pending.0) {
                p.pending.0 = 0;
            }
            if p.pending.1 > 0 && host.add_to_counter(p.denied, p.pending.1) {
                p.pending.1 = 0;
            }
        }
        let (hits, misses) = &mut self.sent_cache;
        for (id, now, before) in [
            (self.cache_hits, cache.hits, hits),
            (self.cache_misses, cache.misses, misses),
        ] {
            let delta = now.saturating_sub(*before);
            if delta > 0 && host.add_to_counter(id, delta) {
                *before = now;
            }
        }
    }
}
