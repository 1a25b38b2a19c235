//! HTTP context: gathers the request's inputs, calls [`decide`], applies the result.

use std::rc::Rc;
use std::time::UNIX_EPOCH;

use log::warn;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use crate::decision::{decide, Decision, Denial};
use crate::root::Shared;

pub struct GatehouseHttp {
    shared: Option<Rc<Shared>>,
}

impl GatehouseHttp {
    pub fn new(shared: Option<Rc<Shared>>) -> Self {
        GatehouseHttp { shared }
    }
}

impl Context for GatehouseHttp {}

impl HttpContext for GatehouseHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.as_deref() else {
            return send(503, None, None, r#"{"error":"temporarily_unavailable"}"#);
        };
        // One host call for every header, as bytes: a header value need not be UTF-8,
        // and the SDK's String variant would panic on one that is not.
        let Ok(headers) = hostcalls::get_map_bytes(MapType::HttpRequestHeaders) else {
            return send(500, None, None, r#"{"error":"server_error"}"#);
        };
        let pseudo = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map_or(&[][..], |(_, v)| v.as_slice())
        };
        let now = hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));

        let Ok(mut runtime) = shared.runtime.try_borrow_mut() else {
            return send(500, None, None, r#"{"error":"server_error"}"#);
        };
        let decision = decide(
            &shared.policy,
            &mut runtime,
            pseudo(":method"),
            pseudo(":path"),
            &headers,
            now,
        );
        drop(runtime);
        shared.metrics.count(decision.outcome());
        match decision {
            Decision::Allow { remove, set, .. } => {
                for name in remove {
                    let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, None);
                }
                for (name, value) in &set {
                    let _ = hostcalls::set_map_value_bytes(
                        MapType::HttpRequestHeaders,
                        name,
                        Some(value.as_bytes()),
                    );
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
