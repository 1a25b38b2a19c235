//! Host side of the remote JWKS (see `jwks_sync` for the plan): shared data, leases,
//! the HTTP callout to the cluster, and adopting a new document. The callout and lease
//! helpers serve the revocation feed too.

use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use log::{info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};

use crate::config::RemoteJwks;
use crate::jwks_sync::{decode, encode, lease_free, SharedKeys, MAX_JWKS_BYTES};
use crate::keys::parse_jwks;
use crate::root::Shared;

pub fn now() -> i64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Adopts the shared document if it changed since `seen` (its CAS).
pub fn adopt_shared(shared: &Shared, keys: &SharedKeys, seen: &mut Option<u32>) -> Option<i64> {
    let Ok((Some(record), cas)) = hostcalls::get_shared_data(&keys.document) else {
        return None;
    };
    let (fetched_at, body) = decode(&record)?;
    if cas.is_some() && cas != *seen && install(shared, body) {
        *seen = cas;
    }
    Some(fetched_at)
}

/// Parses a JWKS and, if it has usable keys, makes them this worker's keys.
fn install(shared: &Shared, body: &[u8]) -> bool {
    match parse_jwks(body, &shared.policy.token.asymmetric) {
        Ok(parsed) if !parsed.keys.is_empty() => {
            for why in parsed.invalid.iter().chain(&parsed.other_algorithms) {
                info!("gatehouse: JWKS key left out: {why}");
            }
            let kids = parsed.keys.kids().join(", ");
            if let Ok(mut runtime) = shared.runtime.try_borrow_mut() {
                runtime.set_keys(Rc::new(parsed.keys));
                info!("gatehouse: JWKS keys in use: {kids}");
                return true;
            }
            false
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

/// Takes the lease `key` until `now + seconds` if it is free (compare-and-swap).
pub fn try_lease(key: &str, now: i64, seconds: i64) -> bool {
    let Ok((value, cas)) = hostcalls::get_shared_data(key) else {
        return false;
    };
    if !lease_free(value.as_deref(), now) {
        return false;
    }
    let until = now.saturating_add(seconds).to_be_bytes();
    hostcalls::set_shared_data(key, Some(&until), cas).is_ok()
}

/// Starts the JWKS fetch; the answer arrives in `on_http_call_response`.
pub fn dispatch(remote: &RemoteJwks) -> Option<u32> {
    let call = Callout {
        what: "the JWKS",
        cluster: &remote.cluster,
        path: &remote.path,
        authority: &remote.authority,
        timeout_ms: remote.timeout_ms,
    };
    call.start()
}

/// One `GET` to a cluster, and what it is for (in log lines).
pub struct Callout<'a> {
    pub what: &'a str,
    pub cluster: &'a str,
    pub path: &'a str,
    pub authority: &'a str,
    pub timeout_ms: u64,
}

impl Callout<'_> {
    /// Starts the request; the answer arrives in `on_http_call_response`.
    pub fn start(&self) -> Option<u32> {
        let headers = vec![
            (":method", "GET"),
            (":path", self.path),
            (":authority", self.authority),
            ("accept", "application/json"),
        ];
        match hostcalls::dispatch_http_call(
            self.cluster,
            headers,
            None,
            vec![],
            Duration::from_millis(self.timeout_ms),
        ) {
            Ok(token) => Some(token),
            Err(e) => {
                warn!(
                    "gatehouse: cannot fetch {} from cluster {}: {e:?}",
                    self.what, self.cluster
                );
                None
            }
        }
    }
}

/// The body of a 200 answer to the JWKS callout, if it is not too large.
pub fn response_body(body_size: usize) -> Option<Vec<u8>> {
    callout_body("the JWKS", body_size, MAX_JWKS_BYTES)
}

/// The body of a 200 answer to a callout for `what`, if it is at most `max` bytes.
pub fn callout_body(what: &str, body_size: usize, max: usize) -> Option<Vec<u8>> {
    let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten();
    if status.as_deref() != Some(b"200".as_slice()) {
        warn!(
            "gatehouse: fetching {what} answered {}",
            status.map_or("nothing (unreachable?)".into(), |s| String::from_utf8_lossy(&s)
                .into_owned())
        );
        return None;
    }
    if body_size > max {
        warn!("gatehouse: {what} is larger than {max} bytes");
        return None;
    }
    if body_size == 0 {
        return Some(Vec::new());
    }
    hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
        .ok()
        .flatten()
}

/// Handles the answer to a JWKS callout: installs and publishes a good document,
/// counts the fetch either way.
pub fn handle_response(shared: &Shared, body_size: usize) {
    let Some(keys) = &shared.jwks_keys else { return };
    let stored = response_body(body_size)
        .is_some_and(|body| store(shared, keys, &body, &mut shared.jwks_seen.borrow_mut()));
    let m = &shared.metrics;
    m.bump(if stored {
        m.jwks_fetch_ok
    } else {
        m.jwks_fetch_failed
    });
}

/// Installs a fetched document here and publishes it to the other workers.
pub fn store(shared: &Shared, keys: &SharedKeys, body: &[u8], seen: &mut Option<u32>) -> bool {
    if !install(shared, body) {
        return false;
    }
    if hostcalls::set_shared_data(&keys.document, Some(&encode(now(), body)), None).is_ok() {
        if let Ok((_, cas)) = hostcalls::get_shared_data(&keys.document) {
            *seen = cas;
        }
    }
    true
}
