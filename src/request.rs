//! One request through the filter: gather its inputs from the host, [`decide`], apply
//! the decision. A token naming an unknown `kid` under a remote JWKS may hold the
//! request while the JWKS is fetched again (rate-limited across workers), then it is
//! decided once more. A form body whose `_method` would change the rules is held
//! until it has been read.
//!
//! [`decide`]: crate::decision::decide

use log::warn;

use crate::decision::{decide_with_body, Body, Decision, Denial, Outcome, ReadBody, Reason, Runtime};
use crate::host::{Headers, Host};
use crate::jwks_sync::Answered;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::worker::Worker;

/// What the host should do with the request after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Held: a reply was sent, or the filter waits for a fetch or for the body.
    Pause,
}

/// A request's state between its callbacks.
#[derive(Default)]
pub struct Request {
    /// While an early JWKS fetch runs: its callout, the request's headers, whether
    /// its body must then be read for `_method`, and the provider whose keys are
    /// fetched.
    waiting: Option<Waiting>,
    /// While a form body is read for `_method`: the request's headers.
    reading_body: Option<Headers>,
}

struct Waiting {
    token: u32,
    headers: Headers,
    read_body: bool,
    provider: usize,
}

/// Decides with the worker's keys and cache; `Err(ReadBody)` if the body must be read
/// first.
fn decide<'a>(
    policy: &'a Policy,
    runtime: &mut Runtime,
    headers: &'a Headers,
    body: Body<'_>,
    now: i64,
) -> Result<Decision<'a>, ReadBody> {
    let pseudo = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map_or(&[][..], |(_, v)| v.as_slice())
    };
    decide_with_body(
        policy,
        runtime,
        pseudo(":method"),
        pseudo(":path"),
        headers,
        body,
        now,
    )
}

impl Request {
    pub fn on_headers(&mut self, worker: &mut Worker, host: &impl Host, end_of_stream: bool) -> Flow {
        let Some(headers) = host.request_headers() else {
            return internal_error(&mut worker.metrics, &worker.policy, host);
        };
        worker.catch_up(host);
        let now = host.now();
        let Worker {
            policy,
            runtime,
            metrics,
            jwks,
            ..
        } = worker;
        let body = if end_of_stream { Body::None } else { Body::Coming };
        let (decision, read_body) = match decide(policy, runtime, &headers, body, now) {
            Ok(decision) => (decision, false),
            // The host cannot hold the headers and still hand over the body (it turns a
            // headers pause into a pause of everything), so the headers go on as their
            // own readings allow, and the body is held here until it has been read:
            // a refusal then resets the upstream request before it has its body.
            Err(ReadBody) => match decide(policy, runtime, &headers, Body::None, now) {
                Ok(decision) => (decision, true),
                Err(ReadBody) => return internal_error(metrics, policy, host),
            },
        };
        if let Decision::Deny(d, Some(provider)) = &decision {
            let provider = *provider;
            if d.reason == Reason::UnknownKey {
                let sync = jwks.iter_mut().find(|j| j.provider == provider);
                if let Some(token) = sync.and_then(|j| j.refetch(host, policy, metrics)) {
                    drop(decision);
                    self.waiting = Some(Waiting {
                        token,
                        headers,
                        read_body,
                        provider,
                    });
                    return Flow::Pause;
                }
            }
        }
        if read_body && matches!(decision, Decision::Allow { .. }) {
            // The decision counts once, when the body has been read.
            set_identity(host, &decision);
            drop(decision);
            self.reading_body = Some(headers);
            return Flow::Continue;
        }
        metrics.count(decision.outcome(), decision.provider());
        apply(host, &decision, false)
    }

    pub fn on_body(
        &mut self,
        worker: &mut Worker,
        host: &impl Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        let Some(headers) = self.reading_body.take() else {
            return Flow::Continue;
        };
        let max = worker.policy.max_form_body_bytes;
        if !end_of_stream && body_size <= max {
            // Buffered until it is whole (or too large).
            self.reading_body = Some(headers);
            return Flow::Pause;
        }
        let bytes = (body_size <= max).then(|| host.request_body(body_size).unwrap_or_default());
        let body = bytes.as_deref().map_or(Body::TooLarge, Body::Read);
        let now = host.now();
        let Worker {
            policy,
            runtime,
            metrics,
            ..
        } = worker;
        match decide(policy, runtime, &headers, body, now) {
            Ok(decision) => {
                metrics.count(decision.outcome(), decision.provider());
                match decision {
                    // The headers were set when they went on.
                    Decision::Allow { .. } => Flow::Continue,
                    Decision::Deny(denial, _) => send(host, denial),
                }
            }
            Err(ReadBody) => internal_error(metrics, policy, host),
        }
    }

    /// The answer to this request's early JWKS fetch; any other token is stray.
    pub fn on_answer(&mut self, worker: &mut Worker, host: &impl Host, token: u32, body_size: usize) {
        if self.waiting.as_ref().is_none_or(|w| w.token != token) {
            return;
        }
        let Some(Waiting {
            headers,
            read_body,
            provider,
            ..
        }) = self.waiting.take()
        else {
            return;
        };
        let now = host.now();
        let Worker {
            policy,
            runtime,
            metrics,
            jwks,
            ..
        } = worker;
        if let Some(sync) = jwks.iter_mut().find(|j| j.provider == provider) {
            if let Answered::Next(next) = sync.on_answer(host, policy, runtime, metrics, token, body_size) {
                // Discovery answered; the JWKS it names is on its way.
                self.waiting = Some(Waiting {
                    token: next,
                    headers,
                    read_body,
                    provider,
                });
                return;
            }
        }
        // Decided on its headers as before it was held; a body that must be read for
        // `_method` still is, once the request goes on.
        match decide(policy, runtime, &headers, Body::None, now) {
            Ok(decision) if read_body && matches!(decision, Decision::Allow { .. }) => {
                // The decision counts once, when the body has been read.
                set_identity(host, &decision);
                drop(decision);
                self.reading_body = Some(headers);
                host.resume_request();
            }
            Ok(decision) => {
                metrics.count(decision.outcome(), decision.provider());
                apply(host, &decision, true);
            }
            Err(ReadBody) => {
                internal_error(metrics, policy, host);
            }
        }
    }

    /// Whether the request is held for a fetch.
    pub fn is_held(&self) -> bool {
        self.waiting.is_some()
    }

    /// Whether the request's body is being held to be read.
    pub fn is_reading_body(&self) -> bool {
        self.reading_body.is_some()
    }
}

/// The filter itself failed (the host did not hand over the request): 500, counted.
pub fn internal_error(metrics: &mut Metrics, policy: &Policy, host: &impl Host) -> Flow {
    metrics.count(Outcome::Denied(Reason::Internal), None);
    send(host, policy.denials.get(Reason::Internal))
}

/// No worker to decide with (the configuration was refused, so Envoy should never
/// route a request here): 503, and nothing to count it in.
pub fn unconfigured(host: &impl Host) -> Flow {
    send(host, &Reason::Unconfigured.denial("", &[]))
}

/// Applies a decision; `held` if the request was held and must be resumed.
fn apply(host: &impl Host, decision: &Decision<'_>, held: bool) -> Flow {
    match decision {
        Decision::Allow { .. } => {
            set_identity(host, decision);
            if held {
                host.resume_request();
            }
            Flow::Continue
        }
        Decision::Deny(denial, _) => send(host, denial),
    }
}

/// Removes and sets the headers an allowing decision says (nothing for a refusal).
fn set_identity(host: &impl Host, decision: &Decision<'_>) {
    if let Decision::Allow { remove, set, .. } = decision {
        for name in remove {
            host.set_request_header(name, None);
        }
        for (name, value) in set {
            host.set_request_header(name, Some(value.as_bytes()));
        }
    }
}

/// Sends a refusal and stops the request.
fn send(host: &impl Host, denial: &Denial) -> Flow {
    let retry = denial.retry_after.map(|s| s.to_string());
    let mut headers = vec![
        ("content-type", "application/json"),
        ("cache-control", "no-store"),
    ];
    if let Some(challenge) = denial.www_authenticate.as_deref() {
        headers.push(("www-authenticate", challenge));
    }
    if let Some(seconds) = retry.as_deref() {
        headers.push(("retry-after", seconds));
    }
    if !host.send_reply(denial.status, &headers, denial.body.as_bytes()) {
        warn!("gatehouse: could not send the {} reply", denial.status);
    }
    Flow::Pause
}
