//! HTTP context: gathers the request's inputs, calls [`decide`], applies the result.
//! A token naming an unknown `kid` under a remote JWKS may hold the request while the
//! JWKS is fetched again (rate-limited across workers), then decides once more.

use std::rc::Rc;

use log::warn;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};

use crate::decision::{decide_with_body, Body, Decision, Denial, ReadBody, Reason};
use crate::fetch;
use crate::revocation_poll;
use crate::root::Shared;

type Headers = Vec<(String, Vec<u8>)>;

pub struct GatehouseHttp {
    shared: Option<Rc<Shared>>,
    /// While an early JWKS fetch runs: its callout and the request's headers.
    waiting: Option<(u32, Headers)>,
    /// While a form body is read for `_method`: the request's headers.
    reading_body: Option<Headers>,
}

impl GatehouseHttp {
    pub fn new(shared: Option<Rc<Shared>>) -> Self {
        GatehouseHttp {
            shared,
            waiting: None,
            reading_body: None,
        }
    }
}

/// Decides with this worker's keys and cache at `now`; `Err(ReadBody)` if the body
/// must be read first.
fn decide_now<'a>(
    shared: &'a Shared,
    headers: &'a Headers,
    body: Body<'_>,
    now: i64,
) -> Option<Result<Decision<'a>, ReadBody>> {
    let pseudo = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map_or(&[][..], |(_, v)| v.as_slice())
    };
    let mut runtime = shared.runtime.try_borrow_mut().ok()?;
    Some(decide_with_body(
        &shared.policy,
        &mut runtime,
        pseudo(":method"),
        pseudo(":path"),
        headers,
        body,
        now,
    ))
}

/// Applies a decision; `paused` if the request was held and must be resumed.
fn apply(shared: &Shared, decision: Decision<'_>, paused: bool) -> Action {
    shared.metrics.count(decision.outcome());
    match decision {
        Decision::Allow { .. } => {
            apply_headers(decision);
            if paused {
                let _ = hostcalls::resume_http_request();
            }
            Action::Continue
        }
        Decision::Deny(Denial {
            status,
            www_authenticate,
            retry_after,
            body,
            ..
        }) => send(status, www_authenticate.as_deref(), retry_after, &body),
    }
}

impl Context for GatehouseHttp {
    fn on_http_call_response(&mut self, token_id: u32, _headers: usize, body_size: usize, _trailers: usize) {
        if self.waiting.as_ref().is_none_or(|(token, _)| *token != token_id) {
            return;
        }
        let (Some(shared), Some((_, headers))) = (self.shared.clone(), self.waiting.take()) else {
            return;
        };
        fetch::handle_response(&shared, body_size);
        // A held request never reads its body (it was held after its headers were
        // decided on, which needed no body).
        match decide_now(&shared, &headers, Body::None, fetch::now()) {
            Some(Ok(decision)) => {
                apply(&shared, decision, true);
            }
            _ => {
                send(500, None, None, r#"{"error":"server_error"}"#);
            }
        }
    }
}

impl HttpContext for GatehouseHttp {
    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(headers) = self.reading_body.as_ref() else {
            return Action::Continue;
        };
        let Some(shared) = self.shared.clone() else {
            return send(503, None, None, r#"{"error":"temporarily_unavailable"}"#);
        };
        let max = shared.policy.max_form_body_bytes;
        if !end_of_stream && body_size <= max {
            // Buffered until it is whole (or too large).
            return Action::Pause;
        }
        let bytes = (body_size <= max).then(|| {
            hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default()
        });
        let body = bytes.as_deref().map_or(Body::TooLarge, Body::Read);
        let action = match decide_now(&shared, headers, body, fetch::now()) {
            // The headers were set when they went on; only the count is left to do.
            Some(Ok(decision @ Decision::Allow { .. })) => {
                shared.metrics.count(decision.outcome());
                Action::Continue
            }
            Some(Ok(decision)) => apply(&shared, decision, false),
            _ => send(500, None, None, r#"{"error":"server_error"}"#),
        };
        self.reading_body = None;
        action
    }

    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return send(503, None, None, r#"{"error":"temporarily_unavailable"}"#);
        };
        // One host call for every header, as bytes: a header value need not be UTF-8,
        // and the SDK's String variant would panic on one that is not.
        let Ok(headers) = hostcalls::get_map_bytes(MapType::HttpRequestHeaders) else {
            return send(500, None, None, r#"{"error":"server_error"}"#);
        };
        let now = fetch::now();
        adopt_first_revocations(&shared);
        let body = if end_of_stream { Body::None } else { Body::Coming };
        let (decision, read_body) = match decide_now(&shared, &headers, body, now) {
            Some(Ok(decision)) => (decision, false),
            // The host cannot hold the headers and still hand over the body (it turns a
            // headers pause into a pause of everything), so the headers go on as their
            // own readings allow, and the body is held here until it has been read:
            // a refusal then resets the upstream request before it has its body.
            Some(Err(ReadBody)) => match decide_now(&shared, &headers, Body::None, now) {
                Some(Ok(decision)) => (decision, true),
                _ => return send(500, None, None, r#"{"error":"server_error"}"#),
            },
            None => return send(500, None, None, r#"{"error":"server_error"}"#),
        };
        let unknown_kid = matches!(&decision, Decision::Deny(d) if d.reason == Reason::UnknownKey);
        if unknown_kid {
            if let (Some(remote), Some(keys)) = (&shared.policy.jwks_remote, &shared.jwks_keys) {
                if fetch::try_lease(&keys.refetch, now, remote.min_refetch_seconds) {
                    if let Some(token) = fetch::dispatch(remote) {
                        shared.metrics.bump(shared.metrics.jwks_refetch_unknown_kid);
                        drop(decision);
                        self.waiting = Some((token, headers));
                        return Action::Pause;
                    }
                }
            }
        }
        if read_body && matches!(decision, Decision::Allow { .. }) {
            // The decision counts once, when the body has been read.
            let action = apply_headers(decision);
            self.reading_body = Some(headers);
            return action;
        }
        apply(&shared, decision, false)
    }
}

/// Until this worker holds a revocation set, a request looks for the shared one
/// itself rather than wait for the tick: the first good poll (on whichever thread)
/// lets tokens through at once. One host call, and only until the set is loaded.
fn adopt_first_revocations(shared: &Shared) {
    let unloaded = shared
        .runtime
        .try_borrow()
        .is_ok_and(|r| r.revocations.as_ref().is_some_and(|r| !r.loaded));
    if unloaded {
        if let (Some(feed), Some(keys)) = (&shared.policy.revocation, &shared.revocation_keys) {
            revocation_poll::adopt_shared(shared, feed, keys);
        }
    }
}

/// Removes and sets the headers an allowing decision says (nothing for a refusal).
fn apply_headers(decision: Decision<'_>) -> Action {
    if let Decision::Allow { remove, set, .. } = decision {
        for name in remove {
            let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, None);
        }
        for (name, value) in &set {
            let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, Some(value.as_bytes()));
        }
    }
    Action::Continue
}

/// Sends a local reply and stops the request.
fn send(status: u32, www_authenticate: Option<&str>, retry_after: Option<u32>, body: &str) -> Action {
    let retry = retry_after.map(|s| s.to_string());
    let mut headers = vec![
        ("content-type", "application/json"),
        ("cache-control", "no-store"),
    ];
    if let Some(challenge) = www_authenticate {
        headers.push(("www-authenticate", challenge));
    }
    if let Some(seconds) = retry.as_deref() {
        headers.push(("retry-after", seconds));
    }
    if hostcalls::send_http_response(status, headers, Some(body.as_bytes())).is_err() {
        warn!("gatehouse: could not send the {status} reply");
    }
    Action::Pause
}
