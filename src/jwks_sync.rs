//! Keeping a remote JWKS in step across workers, without a fetch per worker.
//!
//! The document lives in proxy-wasm shared data (one copy for every worker of the VM)
//! under a version, and a 16-byte head says which version is current and when it was
//! fetched: a worker reads the head on its tick (every 100 ms) and the document only
//! when the version moved. A worker fetches only when the copy is due for a refresh
//! (or missing) and it wins a short lease in shared data; the others adopt the new
//! copy on their next tick, or at once on a request while they have no keys yet.
//! A token naming an unknown `kid` may trigger an early fetch, under a second lease
//! that spaces such fetches out, so random `kid`s cannot make the filter hammer the
//! token service. A failed fetch changes nothing: the last good keys stay in use.

use std::rc::Rc;

use log::{info, warn};

use crate::callout;
use crate::decision::Runtime;
use crate::host::{Call, Host};
use crate::keys::parse_jwks;
use crate::lease;
use crate::metrics::{Event, Metrics};
use crate::policy::{Policy, RemoteJwks};

/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Attempts at publishing a document while other workers publish too.
const PUBLISH_TRIES: usize = 4;

const WHAT: &str = "the JWKS";

/// The shared-data keys of one remote JWKS.
pub struct SharedKeys {
    pub head: String,
    pub document: String,
    pub lease: String,
    pub refetch: String,
}

impl SharedKeys {
    pub fn new(remote: &RemoteJwks) -> Self {
        let base = format!("gatehouse.jwks.{}.{}", remote.cluster, remote.path);
        SharedKeys {
            head: format!("{base}.head"),
            // Not the bare base: that held the unversioned record of earlier releases,
            // which workers of one still draining in the same VM may read.
            document: format!("{base}.document"),
            lease: format!("{base}.lease"),
            refetch: format!("{base}.refetch"),
        }
    }
}

/// What the head says: the current document's version, and when it was fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub version: u64,
    pub fetched_at: i64,
}

impl Head {
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.version.to_be_bytes());
        out[8..].copy_from_slice(&self.fetched_at.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Head> {
        let (version, fetched_at) = bytes.split_at_checked(8)?;
        Some(Head {
            version: u64::from_be_bytes(version.try_into().ok()?),
            fetched_at: i64::from_be_bytes(fetched_at.try_into().ok()?),
        })
    }
}

/// A stored document: its version (8 bytes, big-endian) and its bytes.
pub fn encode(version: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn decode(record: &[u8]) -> Option<(u64, &[u8])> {
    let (version, body) = record.split_at_checked(8)?;
    Some((u64::from_be_bytes(version.try_into().ok()?), body))
}

/// Whether a scheduled fetch (or poll) is due.
pub fn due(fetched_at: Option<i64>, now: i64, refresh_seconds: i64) -> bool {
    fetched_at.is_none_or(|t| now.saturating_sub(t) >= refresh_seconds)
}

/// One worker's side of a remote JWKS.
pub struct JwksSync {
    keys: SharedKeys,
    /// The version of the shared document this worker looked at last.
    seen: u64,
    /// The scheduled fetch this worker's root context has in flight.
    scheduled: Option<u32>,
    /// Whether this worker holds keys from the remote JWKS yet.
    pub loaded: bool,
}

impl JwksSync {
    pub fn new(remote: &RemoteJwks) -> Self {
        JwksSync {
            keys: SharedKeys::new(remote),
            seen: 0,
            scheduled: None,
            loaded: false,
        }
    }

    /// Installs the shared document if its version moved since this worker last
    /// looked. Returns when the current one was fetched, if there is one.
    pub fn adopt(&mut self, host: &impl Host, policy: &Policy, runtime: &mut Runtime) -> Option<i64> {
        let (head, _) = host.get(&self.keys.head)?;
        let head = Head::decode(&head)?;
        if head.version != self.seen {
            if let Some((record, _)) = host.get(&self.keys.document) {
                if let Some((version, body)) = decode(&record) {
                    // A document that does not install (it cannot happen: only good
                    // ones are published) is not looked at again.
                    self.install(policy, runtime, body);
                    self.seen = version;
                }
            }
        }
        Some(head.fetched_at)
    }

    /// On the tick: adopts a newer shared copy; starts a fetch if one is due and this
    /// worker wins the lease.
    pub fn tick(&mut self, host: &impl Host, policy: &Policy, runtime: &mut Runtime, metrics: &Metrics) {
        let Some(remote) = &policy.jwks_remote else { return };
        let now = host.now();
        let fetched_at = self.adopt(host, policy, runtime);
        if self.scheduled.is_some() || !due(fetched_at, now, remote.refresh_seconds) {
            return;
        }
        // Held a little longer than the callout may take; a failure is retried when it runs out.
        let hold = i64::try_from(remote.timeout_ms / 1000)
            .unwrap_or(60)
            .saturating_add(2);
        if lease::try_take(host, &self.keys.lease, now, hold) {
            self.scheduled = callout::start(host, WHAT, &call(remote));
            if self.scheduled.is_none() {
                metrics.event(host, Event::JwksFetchFailed, 1);
            }
        }
    }

    /// Whether `token` is this worker's scheduled fetch.
    pub fn owns(&self, token: u32) -> bool {
        self.scheduled == Some(token)
    }

    /// A token named an unknown `kid`: starts an early fetch unless one was started
    /// (by any worker) less than `min_refetch_seconds` ago. The caller holds its
    /// request until the answer comes under the returned token.
    pub fn refetch(&mut self, host: &impl Host, policy: &Policy, metrics: &Metrics) -> Option<u32> {
        let remote = policy.jwks_remote.as_ref()?;
        if !lease::try_take(host, &self.keys.refetch, host.now(), remote.min_refetch_seconds) {
            return None;
        }
        let token = callout::start(host, WHAT, &call(remote))?;
        metrics.event(host, Event::JwksRefetchUnknownKid, 1);
        Some(token)
    }

    /// The answer to a fetch (scheduled or early): installs and publishes a good
    /// document, counts the fetch either way.
    pub fn on_answer(
        &mut self,
        host: &impl Host,
        policy: &Policy,
        runtime: &mut Runtime,
        metrics: &Metrics,
        token: u32,
        body_size: usize,
    ) {
        if self.scheduled == Some(token) {
            self.scheduled = None;
        }
        let stored = callout::answer_body(host, WHAT, body_size, MAX_JWKS_BYTES)
            .is_some_and(|body| self.store(host, policy, runtime, &body));
        metrics.event(
            host,
            if stored {
                Event::JwksFetchOk
            } else {
                Event::JwksFetchFailed
            },
            1,
        );
    }

    /// Installs a fetched document here and publishes it to the other workers.
    fn store(&mut self, host: &impl Host, policy: &Policy, runtime: &mut Runtime, body: &[u8]) -> bool {
        if !self.install(policy, runtime, body) {
            return false;
        }
        self.publish(host, body);
        true
    }

    /// Publishes `body` under the next version: the document first, the head last
    /// (a worker that sees a version finds it), the head compared-and-swapped, so two
    /// workers publishing at once (a scheduled fetch and an early one) never both
    /// claim one version: the later one publishes again above it, and every worker
    /// ends on the same document.
    fn publish(&mut self, host: &impl Host, body: &[u8]) {
        for _ in 0..PUBLISH_TRIES {
            let (version, cas) = match host.get(&self.keys.head) {
                Some((bytes, cas)) => (Head::decode(&bytes).map_or(0, |h| h.version), cas),
                None => (0, None),
            };
            let version = version.saturating_add(1);
            if !host.set(&self.keys.document, &encode(version, body), None) {
                return;
            }
            let head = Head {
                version,
                fetched_at: host.now(),
            };
            if host.set(&self.keys.head, &head.encode(), cas) {
                self.seen = version;
                return;
            }
        }
        warn!("gatehouse: could not publish the fetched JWKS to the other workers; they fetch their own when due");
    }

    /// Parses a JWKS and, if it has usable keys, makes them this worker's keys.
    fn install(&mut self, policy: &Policy, runtime: &mut Runtime, body: &[u8]) -> bool {
        match parse_jwks(body, &policy.token.asymmetric) {
            Ok(parsed) if !parsed.keys.is_empty() => {
                for why in parsed.invalid.iter().chain(&parsed.other_algorithms) {
                    info!("gatehouse: JWKS key left out: {why}");
                }
                info!("gatehouse: JWKS keys in use: {}", parsed.keys.kids().join(", "));
                runtime.set_keys(Rc::new(parsed.keys));
                self.loaded = true;
                true
            }
            Ok(_) => {
                warn!("gatehouse: the fetched JWKS has no key for the accepted algorithms; keeping the last good keys");
                false
            }
            Err(e) => {
                warn!("gatehouse: the fetched JWKS is not usable ({e}); keeping the last good keys");
                false
            }
        }
    }
}

fn call(remote: &RemoteJwks) -> Call<'_> {
    Call {
        cluster: &remote.cluster,
        path: &remote.path,
        authority: &remote.authority,
        timeout_ms: remote.timeout_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = encode(7, br#"{"keys":[]}"#);
        assert_eq!(decode(&r), Some((7, &br#"{"keys":[]}"#[..])));
        assert_eq!(decode(b"short"), None);
        assert_eq!(decode(&encode(u64::MAX, b"")), Some((u64::MAX, &b""[..])));
        let head = Head {
            version: 3,
            fetched_at: -5,
        };
        assert_eq!(Head::decode(&head.encode()), Some(head));
        assert_eq!(Head::decode(b"short"), None);
    }

    #[test]
    fn fetch_schedule() {
        assert!(due(None, 100, 300), "nothing fetched yet");
        assert!(!due(Some(100), 399, 300));
        assert!(due(Some(100), 400, 300));
    }
}
