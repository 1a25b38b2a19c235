//! Envoy counters: one per [`Outcome`], plus the token cache's hits and misses.
//!
//! Counts are added up inside the VM and flushed on the root context's tick (once a
//! second; every 100 ms with a revocation feed): every host call costs about a
//! microsecond, as much as a verification from the cache, so a per-request
//! `increment_metric` is not free.

use std::cell::RefCell;

use proxy_wasm::hostcalls::{define_metric, increment_metric};
use proxy_wasm::types::MetricType;

use crate::cache::TokenCache;
use crate::decision::Outcome;

pub struct Metrics {
    ids: Vec<u32>,
    cache_hits: u32,
    cache_misses: u32,
    /// Remote JWKS fetches: rare, counted as they happen.
    pub jwks_fetch_ok: u32,
    pub jwks_fetch_failed: u32,
    pub jwks_refetch_unknown_kid: u32,
    /// Revocation feed polls, and the polls that changed the set.
    pub revocation_poll_ok: u32,
    pub revocation_poll_failed: u32,
    pub revocation_updates: u32,
    /// Token entries dropped to keep the set within `revocation.max_entries`.
    pub revocation_dropped: u32,
    /// Per-outcome counts not yet sent, then cache hits and misses already sent.
    pending: RefCell<Vec<u64>>,
    sent_cache: RefCell<(u64, u64)>,
}

impl Metrics {
    /// Defines every counter; `None` if the host refuses one.
    pub fn define() -> Option<Metrics> {
        let ids = Outcome::ALL
            .iter()
            .map(|o| define_metric(MetricType::Counter, o.metric_name()).ok())
            .collect::<Option<Vec<u32>>>()?;
        Some(Metrics {
            pending: RefCell::new(vec![0; ids.len()]),
            ids,
            cache_hits: define_metric(MetricType::Counter, "gatehouse.token_cache.hits").ok()?,
            cache_misses: define_metric(MetricType::Counter, "gatehouse.token_cache.misses").ok()?,
            jwks_fetch_ok: define_metric(MetricType::Counter, "gatehouse.jwks.fetch_ok").ok()?,
            jwks_fetch_failed: define_metric(MetricType::Counter, "gatehouse.jwks.fetch_failed").ok()?,
            jwks_refetch_unknown_kid: define_metric(
                MetricType::Counter,
                "gatehouse.jwks.refetch_unknown_kid",
            )
            .ok()?,
            revocation_poll_ok: define_metric(MetricType::Counter, "gatehouse.revocation.poll_ok").ok()?,
            revocation_poll_failed: define_metric(MetricType::Counter, "gatehouse.revocation.poll_failed")
                .ok()?,
            revocation_updates: define_metric(MetricType::Counter, "gatehouse.revocation.updates").ok()?,
            revocation_dropped: define_metric(MetricType::Counter, "gatehouse.revocation.dropped").ok()?,
            sent_cache: RefCell::new((0, 0)),
        })
    }

    pub fn count(&self, outcome: Outcome) {
        if let Ok(mut pending) = self.pending.try_borrow_mut() {
            if let Some(n) = pending.get_mut(outcome.index()) {
                *n += 1;
            }
        }
    }

    /// Counts a rare event now.
    pub fn bump(&self, id: u32) {
        self.add(id, 1);
    }

    /// Counts `n` of a rare event now.
    pub fn add(&self, id: u32, n: usize) {
        let _ = increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sends what was counted since the last flush. A failed send is kept for the next.
    pub fn flush(&self, cache: &TokenCache) {
        if let Ok(mut pending) = self.pending.try_borrow_mut() {
            for (n, &id) in pending.iter_mut().zip(&self.ids) {
                if *n > 0 && increment_metric(id, i64::try_from(*n).unwrap_or(i64::MAX)).is_ok() {
                    *n = 0;
                }
            }
        }
        if let Ok(mut sent) = self.sent_cache.try_borrow_mut() {
            let (hits, misses) = &mut *sent;
            for (id, now, before) in [
                (self.cache_hits, cache.hits, hits),
                (self.cache_misses, cache.misses, misses),
            ] {
                let delta = now.saturating_sub(*before);
                if delta > 0 && increment_metric(id, i64::try_from(delta).unwrap_or(i64::MAX)).is_ok() {
                    *before = now;
                }
            }
        }
    }
}
