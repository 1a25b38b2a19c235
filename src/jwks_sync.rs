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
//!
//! Each provider has its own (keys, leases, counters, 503 before its first keys), so
//! one issuer's outage never touches another's tokens. With OIDC discovery a fetch is
//! two calls: the issuer's `/.well-known/openid-configuration`, whose `issuer` must be
//! exactly the configured one and whose `jwks_uri` must name an allowed authority,
//! then that JWKS through the same cluster; a document that fails either check is
//! refused and counted, and the last good keys stay in use.

use std::collections::BTreeSet;
use std::rc::Rc;

use log::{info, warn};
use serde::Deserialize;

use crate::callout;
use crate::decision::Runtime;
use crate::host::{Call, Host};
use crate::keys::parse_jwks;
use crate::lease;
use crate::metrics::{Event, Metrics};
use crate::policy::{Discovery, Policy, Provider, RemoteJwks};

/// Largest JWKS (or discovery) document accepted.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Attempts at publishing a document while other workers publish too.
const PUBLISH_TRIES: usize = 4;

/// Calls of one sync remembered as in flight.
const MAX_IN_FLIGHT: usize = 16;

/// Distinct left-out-key lines remembered, so each is logged once.
const MAX_LOGGED: usize = 256;

/// The shared-data keys of one remote JWKS.
pub struct SharedKeys {
    pub head: String,
    pub document: String,
    pub lease: String,
    pub refetch: String,
}

impl SharedKeys {
    /// Named by the provider (`None`: the one provider of a configuration without
    /// `providers`, under the names of earlier releases), the cluster, the authority
    /// and the path: two providers behind one cluster never share keys.
    pub fn new(provider: Option<&str>, remote: &RemoteJwks) -> Self {
        let base = match provider {
            None => format!("gatehouse.jwks.{}.{}", remote.cluster, remote.path),
            Some(name) => format!(
                "gatehouse.jwks.provider.{name}.{}.{}.{}",
                remote.cluster, remote.authority, remote.path
            ),
        };
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

/// Where a discovery document says the JWKS is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksTarget {
    pub authority: String,
    pub path: String,
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    jwks_uri: String,
}

/// Checks a discovery document (OpenID Connect Discovery §4.3: its `issuer` is the
/// configured one, byte for byte) and finds the JWKS it names, which must be at an
/// allowed authority. `Err` says why (never the document itself).
pub fn jwks_target(discovery: &Discovery, body: &[u8]) -> Result<JwksTarget, String> {
    let doc: DiscoveryDocument =
        serde_json::from_slice(body).map_err(|e| format!("not an OpenID configuration: {e}"))?;
    if doc.issuer != discovery.issuer {
        return Err(format!(
            "it names another issuer ({} bytes, not the configured one)",
            doc.issuer.len()
        ));
    }
    let rest = doc
        .jwks_uri
        .strip_prefix("https://")
        .or_else(|| doc.jwks_uri.strip_prefix("http://"))
        .ok_or("its jwks_uri is not an http(s) URL")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => return Err("its jwks_uri has no path".into()),
    };
    if doc.jwks_uri.contains(['#', ' ']) || path.bytes().any(|b| b.is_ascii_control()) {
        return Err("its jwks_uri is not a plain URL".into());
    }
    if !discovery.jwks_authorities.iter().any(|a| a == authority) {
        return Err(format!(
            "its jwks_uri points at {authority:?}, which is neither the cluster's authority nor one the configuration names (jwks_authorities)"
        ));
    }
    Ok(JwksTarget {
        authority: authority.to_string(),
        path: path.to_string(),
    })
}

/// Which call an answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Discovery,
    Jwks,
}

/// What became of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// Nothing more to wait for (keys installed or not).
    Done,
    /// The discovery document answered: the JWKS is being fetched under this token.
    Next(u32),
}

/// One worker's side of one provider's remote JWKS.
pub struct JwksSync {
    /// The provider's index.
    pub provider: usize,
    keys: SharedKeys,
    /// The version of the shared document this worker looked at last.
    seen: u64,
    /// The scheduled fetch this worker's root context has in flight.
    scheduled: Option<u32>,
    /// Every call of this sync in flight (scheduled or early), and its step.
    in_flight: Vec<(u32, Step)>,
    /// Where discovery last said the JWKS is.
    target: Option<JwksTarget>,
    /// Left-out-key lines already logged.
    logged: BTreeSet<String>,
    /// Whether this worker holds keys from the remote JWKS yet.
    pub loaded: bool,
}

impl JwksSync {
    pub fn new(provider: usize, name: Option<&str>, remote: &RemoteJwks) -> Self {
        JwksSync {
            provider,
            keys: SharedKeys::new(name, remote),
            seen: 0,
            scheduled: None,
            in_flight: Vec::new(),
            target: None,
            logged: BTreeSet::new(),
            loaded: false,
        }
    }

    fn of<'p>(&self, policy: &'p Policy) -> Option<(&'p Provider, &'p RemoteJwks)> {
        let provider = policy.providers.get(self.provider)?;
        Some((provider, provider.jwks_remote.as_ref()?))
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

    /// The first call of a fetch: the discovery document, or the JWKS itself.
    fn start(&mut self, host: &impl Host, remote: &RemoteJwks, fresh_discovery: bool) -> Option<u32> {
        let (step, call) = match (&remote.discovery, &self.target) {
            (Some(_), Some(target)) if !fresh_discovery => (Step::Jwks, jwks_call(remote, target)),
            (Some(_), _) => (Step::Discovery, call(remote)),
            (None, _) => (Step::Jwks, call(remote)),
        };
        let what = what(step);
        let token = callout::start(host, what, &call)?;
        // A held request whose stream is reset never sees its answer: the oldest
        // entries go, so the list stays small (an answer for one is then ignored).
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.in_flight.remove(0);
        }
        self.in_flight.push((token, step));
        Some(token)
    }

    /// On the tick: adopts a newer shared copy; starts a fetch if one is due and this
    /// worker wins the lease. With discovery, a scheduled fetch discovers again.
    pub fn tick(&mut self, host: &impl Host, policy: &Policy, runtime: &mut Runtime, metrics: &Metrics) {
        let Some((_, remote)) = self.of(policy) else {
            return;
        };
        let now = host.now();
        let fetched_at = self.adopt(host, policy, runtime);
        if self.scheduled.is_some() || !due(fetched_at, now, remote.refresh_seconds) {
            return;
        }
        // Held a little longer than the callouts may take; a failure is retried when
        // it runs out.
        let calls = if remote.discovery.is_some() { 2 } else { 1 };
        let hold = i64::try_from(remote.timeout_ms.saturating_mul(calls) / 1000)
            .unwrap_or(60)
            .saturating_add(2);
        if lease::try_take(host, &self.keys.lease, now, hold) {
            self.scheduled = self.start(host, remote, true);
            if self.scheduled.is_none() {
                metrics.event(host, self.provider, Event::JwksFetchFailed, 1);
            }
        }
    }

    /// Whether `token` is one of this sync's calls.
    pub fn owns(&self, token: u32) -> bool {
        self.in_flight.iter().any(|(t, _)| *t == token)
    }

    /// A token named an unknown `kid`: starts an early fetch unless one was started
    /// (by any worker) less than `min_refetch_seconds` ago. The caller holds its
    /// request until the answer comes under the returned token.
    pub fn refetch(&mut self, host: &impl Host, policy: &Policy, metrics: &Metrics) -> Option<u32> {
        let (_, remote) = self.of(policy)?;
        if !lease::try_take(host, &self.keys.refetch, host.now(), remote.min_refetch_seconds) {
            return None;
        }
        let token = self.start(host, remote, false)?;
        metrics.event(host, self.provider, Event::JwksRefetchUnknownKid, 1);
        Some(token)
    }

    /// The answer to one of this sync's calls: a discovery document starts the JWKS
    /// fetch it names ([`Answered::Next`]); a JWKS is installed and published. Each
    /// outcome is counted.
    pub fn on_answer(
        &mut self,
        host: &impl Host,
        policy: &Policy,
        runtime: &mut Runtime,
        metrics: &Metrics,
        token: u32,
        body_size: usize,
    ) -> Answered {
        let step = self
            .in_flight
            .iter()
            .position(|(t, _)| *t == token)
            .map(|i| self.in_flight.swap_remove(i).1);
        let scheduled = self.scheduled == Some(token);
        if scheduled {
            self.scheduled = None;
        }
        let Some(((_, remote), step)) = self.of(policy).zip(step) else {
            return Answered::Done;
        };
        let body = callout::answer_body(host, what(step), body_size, MAX_JWKS_BYTES);
        if step == Step::Discovery {
            let target = body.ok_or_else(|| "no document".to_string()).and_then(|b| {
                remote
                    .discovery
                    .as_ref()
                    .ok_or_else(|| "no discovery configured".to_string())
                    .and_then(|d| jwks_target(d, &b))
            });
            match target {
                Ok(target) => {
                    self.target = Some(target.clone());
                    if let Some(next) = self.start(host, remote, false) {
                        if scheduled {
                            self.scheduled = Some(next);
                        }
                        return Answered::Next(next);
                    }
                    metrics.event(host, self.provider, Event::JwksFetchFailed, 1);
                }
                Err(why) => {
                    warn!(
                        "gatehouse: provider {}: the discovery document is refused: {why}; keeping the last good keys",
                        self.name(policy)
                    );
                    metrics.event(host, self.provider, Event::DiscoveryRefused, 1);
                }
            }
            return Answered::Done;
        }
        let event = match body {
            None => Event::JwksFetchFailed,
            Some(body) => match self.store(host, policy, runtime, &body) {
                Stored::Installed => Event::JwksFetchOk,
                Stored::NoUsableKey => Event::JwksNoUsableKey,
                Stored::NotJwks => Event::JwksFetchFailed,
            },
        };
        metrics.event(host, self.provider, event, 1);
        Answered::Done
    }

    fn name<'p>(&self, policy: &'p Policy) -> &'p str {
        policy
            .providers
            .get(self.provider)
            .map_or("?", |p| p.name.as_str())
    }

    /// Installs a fetched document here and publishes it to the other workers.
    fn store(&mut self, host: &impl Host, policy: &Policy, runtime: &mut Runtime, body: &[u8]) -> Stored {
        let stored = self.install(policy, runtime, body);
        if stored == Stored::Installed {
            self.publish(host, body);
        }
        stored
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

    /// Parses a JWKS and, if it has usable keys, makes them this worker's keys for
    /// the provider. Every key left out is logged once, with its `kid` and why.
    fn install(&mut self, policy: &Policy, runtime: &mut Runtime, body: &[u8]) -> Stored {
        let Some(provider) = policy.providers.get(self.provider) else {
            return Stored::NotJwks;
        };
        let name = &provider.name;
        match parse_jwks(body, &provider.token.asymmetric) {
            Ok(parsed) => {
                for why in parsed.left_out() {
                    if self.logged.len() < MAX_LOGGED && self.logged.insert(why.clone()) {
                        info!("gatehouse: provider {name}: JWKS key left out: {why}");
                    }
                }
                if parsed.keys.is_empty() {
                    warn!("gatehouse: provider {name}: the fetched JWKS has no usable key (each left out above); keeping the last good keys");
                    return Stored::NoUsableKey;
                }
                info!(
                    "gatehouse: provider {name}: JWKS keys in use: {}",
                    parsed.keys.kids().join(", ")
                );
                runtime.set_keys(self.provider, Rc::new(parsed.keys));
                self.loaded = true;
                Stored::Installed
            }
            Err(e) => {
                warn!("gatehouse: provider {name}: the fetched JWKS is not usable ({e}); keeping the last good keys");
                Stored::NotJwks
            }
        }
    }
}

/// What a fetched JWKS came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Installed,
    /// A JWKS, but none of its keys can be used: counted apart from a failed fetch.
    NoUsableKey,
    NotJwks,
}

fn what(step: Step) -> &'static str {
    match step {
        Step::Discovery => "the OpenID configuration",
        Step::Jwks => "the JWKS",
    }
}

fn jwks_call<'a>(remote: &'a RemoteJwks, target: &'a JwksTarget) -> Call<'a> {
    Call {
        cluster: &remote.cluster,
        path: &target.path,
        authority: &target.authority,
        timeout_ms: remote.timeout_ms,
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
    fn a_discovery_document_is_believed_only_for_its_issuer_and_allowed_jwks_authorities() {
        let discovery = Discovery {
            issuer: "https://sso.example.test/realms/acme".into(),
            jwks_authorities: vec!["sso.example.test".into(), "keys.example.test:8443".into()],
        };
        let doc = |issuer: &str, jwks: &str| format!(r#"{{"issuer":"{issuer}","jwks_uri":"{jwks}"}}"#);
        let good = "https://sso.example.test/realms/acme";
        let ok = |authority: &str, path: &str| {
            Ok(JwksTarget {
                authority: authority.into(),
                path: path.into(),
            })
        };
        let cases: Vec<(String, Result<JwksTarget, &str>)> = vec![
            (
                doc(
                    good,
                    "https://sso.example.test/realms/acme/protocol/openid-connect/certs",
                ),
                ok("sso.example.test", "/realms/acme/protocol/openid-connect/certs"),
            ),
            (
                doc(good, "https://keys.example.test:8443/jwks?v=2"),
                ok("keys.example.test:8443", "/jwks?v=2"),
            ),
            // Spoofing: another issuer's document, a look-alike, a trailing slash.
            (
                doc("https://evil.test/realms/acme", "https://sso.example.test/k"),
                Err("another issuer"),
            ),
            (
                doc(
                    "https://sso.example.test/realms/acme/",
                    "https://sso.example.test/k",
                ),
                Err("another issuer"),
            ),
            (
                doc(
                    "https://SSO.example.test/realms/acme",
                    "https://sso.example.test/k",
                ),
                Err("another issuer"),
            ),
            // The keys somewhere the configuration did not name.
            (doc(good, "https://evil.test/jwks"), Err("neither the cluster")),
            (
                doc(good, "https://sso.example.test.evil.test/jwks"),
                Err("neither the cluster"),
            ),
            (
                doc(good, "https://user@sso.example.test/jwks"),
                Err("neither the cluster"),
            ),
            (
                doc(good, "ftp://sso.example.test/jwks"),
                Err("not an http(s) URL"),
            ),
            (doc(good, "https://sso.example.test"), Err("no path")),
            ("not json".into(), Err("not an OpenID configuration")),
            (
                r#"{"issuer":"https://sso.example.test/realms/acme"}"#.into(),
                Err("not an OpenID configuration"),
            ),
            (
                r#"{"issuer":7,"jwks_uri":"https://sso.example.test/k"}"#.into(),
                Err("not an OpenID configuration"),
            ),
        ];
        for (body, want) in cases {
            let got = jwks_target(&discovery, body.as_bytes());
            match (want, got) {
                (Ok(w), Ok(g)) => assert_eq!(w, g, "{body}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{body}: {g}"),
                (w, g) => panic!("{body}: want {w:?}, got {g:?}"),
            }
        }
    }

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
