//! Root context: compiles the configuration once and hands it to every request; keeps
//! a remote JWKS and the revocation set fresh; flushes the counters on its tick.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use log::{error, info};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use crate::config::{compile, Policy};
use crate::decision::Runtime;
use crate::fetch;
use crate::http::GatehouseHttp;
use crate::jwks_sync::{due, SharedKeys};
use crate::metrics::Metrics;
use crate::revocation::Revocations;
use crate::revocation_poll::{sync_keys, Poller};
use crate::revocation_sync::SyncKeys;

/// What every HTTP context of this worker shares.
pub struct Shared {
    pub policy: Policy,
    pub metrics: Metrics,
    pub runtime: RefCell<Runtime>,
    /// Shared-data keys of the remote JWKS, if there is one.
    pub jwks_keys: Option<SharedKeys>,
    /// The CAS of the shared JWKS document this worker last installed.
    pub jwks_seen: RefCell<Option<u32>>,
    /// Shared-data keys of the revocation feed, if revocation is on.
    pub revocation_keys: Option<SyncKeys>,
}

#[derive(Default)]
pub struct GatehouseRoot {
    shared: Option<Rc<Shared>>,
    /// The callout of a scheduled JWKS fetch, while it runs.
    pending_fetch: Option<u32>,
    /// This worker's side of polling the revocation feed.
    poller: Poller,
}

impl GatehouseRoot {
    fn flush(&self) {
        if let Some(shared) = &self.shared {
            if let Ok(runtime) = shared.runtime.try_borrow() {
                shared.metrics.flush(&runtime.cache);
            }
        }
    }

    /// Adopts a newer shared JWKS; fetches one if it is due and this worker wins the lease.
    fn sync_jwks(&mut self) {
        let Some(shared) = self.shared.clone() else { return };
        let (Some(remote), Some(keys)) = (&shared.policy.jwks_remote, &shared.jwks_keys) else {
            return;
        };
        let now = fetch::now();
        let fetched_at = {
            let mut seen = shared.jwks_seen.borrow_mut();
            fetch::adopt_shared(&shared, keys, &mut seen)
        };
        if self.pending_fetch.is_some() || !due(fetched_at, now, remote.refresh_seconds) {
            return;
        }
        // Held a little longer than the callout may take; a failure is retried when it runs out.
        let hold = i64::try_from(remote.timeout_ms / 1000)
            .unwrap_or(60)
            .saturating_add(2);
        if fetch::try_lease(&keys.lease, now, hold) {
            self.pending_fetch = fetch::dispatch(remote);
            if self.pending_fetch.is_none() {
                shared.metrics.bump(shared.metrics.jwks_fetch_failed);
            }
        }
    }

    /// Adopts a newer shared revocation set; polls the feed if due and no one else is.
    fn sync_revocations(&mut self) {
        let Some(shared) = self.shared.clone() else { return };
        let (Some(feed), Some(keys)) = (&shared.policy.revocation, &shared.revocation_keys) else {
            return;
        };
        self.poller.tick(&shared, feed, keys);
    }
}

impl Context for GatehouseRoot {
    fn on_http_call_response(&mut self, token_id: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let Some(shared) = &self.shared else { return };
        if self.pending_fetch == Some(token_id) {
            self.pending_fetch = None;
            fetch::handle_response(shared, body_size);
        } else if self.poller.owns(token_id) {
            if let (Some(feed), Some(keys)) = (&shared.policy.revocation, &shared.revocation_keys) {
                self.poller.on_response(shared, feed, keys, body_size);
            }
        }
    }

    fn on_done(&mut self) -> bool {
        self.flush();
        true
    }
}

impl RootContext for GatehouseRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let policy = match compile(&config, |name| std::env::var(name).ok()) {
            Ok(policy) => policy,
            Err(e) => {
                // Returning false makes Envoy refuse the filter: fail closed.
                error!("gatehouse: invalid configuration: {e}");
                return false;
            }
        };
        let Some(metrics) = Metrics::define() else {
            error!("gatehouse: the host refused to define the stats counters");
            return false;
        };
        info!(
            "gatehouse: configured: issuer {}, {} rule(s), token cache {}{}{}",
            policy.token.issuer,
            policy.routes.rules.len(),
            policy.token_cache_entries,
            policy.jwks_remote.as_ref().map_or(String::new(), |r| format!(
                ", JWKS from cluster {} {}",
                r.cluster, r.path
            )),
            policy.revocation.as_ref().map_or(String::new(), |r| format!(
                ", revocation feed from cluster {} {} every {} s",
                r.cluster, r.path, r.poll_seconds
            ))
        );
        let mut runtime = Runtime::new(policy.inline_keys.clone(), policy.token_cache_entries);
        runtime.revocations = policy
            .revocation
            .as_ref()
            .map(|feed| Revocations::new(fetch::now(), feed.max_stale_seconds, feed.before_first_poll));
        let runtime = RefCell::new(runtime);
        // Counters reach Envoy on this tick (metrics.rs) and a remote JWKS is checked as
        // often. With a revocation feed the tick is 100 ms: the worker that polled
        // publishes the set at once, and every other worker adopts it on its next tick,
        // so a revoked token is refused by all workers within 100 ms of the first (a
        // client whose requests land on different workers sees no longer flip-flop).
        // Each tick is a few host calls; requests pay nothing for it.
        let tick = if policy.revocation.is_some() {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        };
        self.set_tick_period(tick);
        self.flush();
        let jwks_keys = policy.jwks_remote.as_ref().map(SharedKeys::new);
        let revocation_keys = policy.revocation.as_ref().map(sync_keys);
        self.shared = Some(Rc::new(Shared {
            policy,
            metrics,
            runtime,
            jwks_keys,
            jwks_seen: RefCell::new(None),
            revocation_keys,
        }));
        self.pending_fetch = None;
        self.poller = Poller::default();
        true
    }

    fn on_tick(&mut self) {
        self.flush();
        self.sync_jwks();
        self.sync_revocations();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never None: the SDK would panic. Without a policy the context refuses all.
        Some(Box::new(GatehouseHttp::new(self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
