//! One worker's filter: the compiled policy, what it keeps between requests (keys,
//! token cache, revocation set), its counters, and the background work of a remote
//! JWKS and the revocation feed. The root context owns it and hands it to every
//! request of the worker; each callback borrows it once.

use std::time::Duration;

use log::info;

use crate::config::compile;
use crate::decision::Runtime;
use crate::host::Host;
use crate::jwks_sync::JwksSync;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::revocation::Revocations;
use crate::revocation_poll::Poller;

pub struct Worker {
    pub policy: Policy,
    pub runtime: Runtime,
    pub metrics: Metrics,
    /// One per provider whose keys come from a remote JWKS (or discovery).
    pub jwks: Vec<JwksSync>,
    /// One per provider with a revocation feed.
    pub pollers: Vec<Poller>,
}

impl Worker {
    /// Compiles the plugin configuration and defines the counters. `Err` says why the
    /// filter must refuse to start (never a secret).
    pub fn configure(
        host: &impl Host,
        config: &[u8],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Worker, String> {
        let policy = compile(config, env).map_err(|e| format!("invalid configuration: {e}"))?;
        let metrics = Metrics::define(host, policy.providers.iter().map(|p| p.name.as_str()))
            .ok_or("the host refused to define the stats counters")?;
        info!(
            "gatehouse: configured: {} provider(s), {} rule(s), token cache {}",
            policy.providers.len(),
            policy.routes.rules.len(),
            policy.token_cache_entries,
        );
        for p in &policy.providers {
            info!(
                "gatehouse: provider {}: issuer {}{}{}",
                p.name,
                p.token.issuer.as_deref().unwrap_or("(none: tokens without iss)"),
                p.jwks_remote.as_ref().map_or(String::new(), |r| format!(
                    ", {} from cluster {} {}",
                    if r.discovery.is_some() {
                        "OIDC discovery"
                    } else {
                        "JWKS"
                    },
                    r.cluster,
                    r.path
                )),
                p.revocation.as_ref().map_or(String::new(), |r| format!(
                    ", revocation feed from cluster {} {} every {} s",
                    r.cluster, r.path, r.poll_seconds
                ))
            );
        }
        let mut runtime = Runtime::new(&policy);
        runtime.revocations = policy
            .providers
            .iter()
            .map(|p| {
                p.revocation
                    .as_ref()
                    .map(|feed| Revocations::new(host.now(), feed.max_stale_seconds, feed.before_first_poll))
            })
            .collect();
        let jwks = policy
            .providers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                p.jwks_remote
                    .as_ref()
                    .map(|r| JwksSync::new(i, shared_name(&policy, i), r))
            })
            .collect();
        let pollers = policy
            .providers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                p.revocation
                    .as_ref()
                    .map(|f| Poller::new(i, shared_name(&policy, i), f))
            })
            .collect();
        Ok(Worker {
            jwks,
            pollers,
            policy,
            runtime,
            metrics,
        })
    }

    /// How often the root context ticks. Counters reach Envoy on the tick. With a
    /// remote JWKS or a revocation feed it is 100 ms: the worker that fetched or
    /// polled publishes at once and every other worker reads a small head on its next
    /// tick, so all workers use the same keys and refuse the same tokens within
    /// 100 ms of the first (a client whose requests land on different workers sees no
    /// flip-flop). Each tick is a few host calls; requests pay nothing for it.
    pub fn tick_period(&self) -> Duration {
        if !self.jwks.is_empty() || !self.pollers.is_empty() {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        }
    }

    pub fn tick(&mut self, host: &impl Host) {
        self.flush(host);
        for jwks in &mut self.jwks {
            jwks.tick(host, &self.policy, &mut self.runtime, &self.metrics);
        }
        for poller in &mut self.pollers {
            poller.tick(host, &self.policy, &mut self.runtime, &self.metrics);
        }
    }

    pub fn flush(&mut self, host: &impl Host) {
        self.metrics.flush(host, &self.runtime.cache);
    }

    /// The answer to a call the root context started; a stray token is ignored.
    pub fn on_answer(&mut self, host: &impl Host, token: u32, body_size: usize) {
        if let Some(jwks) = self.jwks.iter_mut().find(|j| j.owns(token)) {
            // A discovery answer's follow-up call is tracked by the sync itself.
            jwks.on_answer(
                host,
                &self.policy,
                &mut self.runtime,
                &self.metrics,
                token,
                body_size,
            );
        } else if let Some(poller) = self.pollers.iter_mut().find(|p| p.owns(token)) {
            poller.on_answer(host, &self.policy, &mut self.runtime, &self.metrics, body_size);
        }
    }

    /// Before a request is decided: what another worker published that this one
    /// still lacks entirely (the first keys, the first revocation set) is adopted at
    /// once rather than on the next tick. One host call each, and only until loaded.
    pub fn catch_up(&mut self, host: &impl Host) {
        for jwks in self.jwks.iter_mut().filter(|j| !j.loaded) {
            jwks.adopt(host, &self.policy, &mut self.runtime);
        }
        for poller in &self.pollers {
            if let Some(Some(revocations)) = self.runtime.revocations.get_mut(poller.provider) {
                if !revocations.loaded {
                    poller.adopt(host, &self.policy, revocations);
                }
            }
        }
    }
}

/// The name under which provider `i` keeps its shared data: none for the one
/// provider of a configuration without `providers` (the names of earlier releases).
fn shared_name(policy: &Policy, i: usize) -> Option<&str> {
    let p = policy.providers.get(i)?;
    (!(policy.providers.len() == 1 && p.name == crate::config::DEFAULT_PROVIDER)).then_some(p.name.as_str())
}

#[cfg(test)]
mod tests;
