//! The worker's background work and a request's flow, driven through the mock host:
//! several workers over one shared-data map and one clock, with the test answering,
//! failing or never answering the calls they start.

use serde_json::json;

use crate::host_mock::{MockEnvoy, MockHost, Reply, SentCall};
use crate::request::{Flow, Request};
use crate::token::tests::{good_claims, sign, ISSUER, NOW, SECRET};
use crate::worker::Worker;

/// Keys and tokens made by Python's `cryptography`: `k-ed` (EdDSA) and `k-es` (ES256).
fn python_fixture() -> serde_json::Value {
    serde_json::from_str(include_str!("../../tests/fixtures/python-signed-tokens.json")).unwrap()
}

fn jwks_with(kids: &[&str]) -> String {
    let mut jwks = python_fixture()["jwks"].clone();
    jwks["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| kids.contains(&k["kid"].as_str().unwrap()));
    jwks.to_string()
}

fn eddsa_token() -> String {
    python_fixture()["tokens"]["EdDSA"].as_str().unwrap().to_string()
}

const RULES: &str = r#""rules": [{"path": "/healthz", "require": "public"}], "no_match": "authenticated""#;

fn revocation_config(extra: &str) -> String {
    format!(
        r#"{{"issuer": "{ISSUER}", "audiences": ["api"], "algorithms": ["HS256"],
            "hmac_secret": {{"env": "SECRET_KEY"}}, "max_token_lifetime_seconds": 3600,
            "revocation": {{"cluster": "token", "poll_seconds": 2{extra}}}, {RULES}}}"#
    )
}

fn jwks_config() -> String {
    format!(
        r#"{{"issuer": "{ISSUER}", "audiences": ["api"], "algorithms": ["EdDSA", "ES256"],
            "max_token_lifetime_seconds": 3600,
            "jwks": {{"remote": {{"cluster": "token", "refresh_seconds": 300, "min_refetch_seconds": 10}}}},
            {RULES}}}"#
    )
}

/// Workers of one Envoy, each ticking at the period it asked for, from its own phase.
struct Envoy {
    envoy: MockEnvoy,
    workers: Vec<(Worker, MockHost, i64)>,
}

impl Envoy {
    /// `phases_ms`: when each worker's first tick comes, after start.
    fn start(config: &str, phases_ms: &[i64]) -> Envoy {
        let envoy = MockEnvoy::new(NOW);
        let workers = phases_ms
            .iter()
            .enumerate()
            .map(|(i, phase)| {
                let host = envoy.host(i);
                let worker = Worker::configure(&host, config.as_bytes(), |_| Some(SECRET.to_string()))
                    .unwrap_or_else(|e| panic!("{e}"));
                (worker, host, envoy.now_ms() + phase)
            })
            .collect();
        Envoy { envoy, workers }
    }

    fn tick(&mut self, i: usize) {
        let (worker, host, _) = &mut self.workers[i];
        worker.tick(host);
    }

    /// Moves the clock on by `ms`, 10 ms at a time, ticking every worker that is due.
    fn run_for(&mut self, ms: i64) {
        let end = self.envoy.now_ms() + ms;
        while self.envoy.now_ms() < end {
            self.envoy.advance_ms(10);
            self.tick_due();
        }
    }

    fn tick_due(&mut self) {
        let now = self.envoy.now_ms();
        for (worker, host, next) in &mut self.workers {
            if now >= *next {
                worker.tick(host);
                *next += i64::try_from(worker.tick_period().as_millis()).unwrap();
            }
        }
    }

    /// Answers a call the worker's root context started.
    fn answer(&mut self, call: &SentCall, status: Option<u32>, body: &str) {
        let (worker, host, _) = &mut self.workers[call.worker];
        let size = host.answering(status, body);
        worker.on_answer(host, call.token, size);
    }

    fn calls(&self) -> Vec<SentCall> {
        self.envoy.take_calls()
    }

    /// One call must have been started; it is returned.
    fn one_call(&self) -> SentCall {
        let calls = self.calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        calls.into_iter().next().unwrap()
    }

    /// A `GET /users/me` with `token` on worker `i`: the reply, if the filter sent one
    /// (`None`: it went upstream).
    fn get(&mut self, i: usize, token: &str) -> Option<Reply> {
        let (worker, host, _) = &mut self.workers[i];
        let mut request = Request::default();
        let flow = request_on(&mut request, worker, host, token);
        match flow {
            Flow::Continue => {
                assert!(host.reply().is_none());
                None
            }
            Flow::Pause => Some(host.reply().expect("paused without a reply")),
        }
    }

    fn status(&mut self, i: usize, token: &str) -> u32 {
        self.get(i, token).map_or(200, |r| r.status)
    }

    fn counter(&mut self, name: &str) -> u64 {
        for (worker, host, _) in &mut self.workers {
            worker.flush(host);
        }
        self.envoy.counter(name)
    }
}

fn request_on(request: &mut Request, worker: &mut Worker, host: &MockHost, token: &str) -> Flow {
    let bearer = format!("Bearer {token}");
    host.begin(
        &[
            (":method", "GET"),
            (":path", "/users/me"),
            ("authorization", &bearer),
        ],
        b"",
    );
    request.on_headers(worker, host, true)
}

fn alice() -> String {
    sign(&good_claims())
}

fn page(reset: bool, cursor: u64, entries: serde_json::Value) -> String {
    json!({"feed": "f1", "cursor": cursor, "reset": reset, "entries": entries}).to_string()
}

fn alice_revoked() -> serde_json::Value {
    json!([{"sub": "alice", "iat_before": NOW, "until": NOW + 600}])
}

#[test]
fn of_two_workers_racing_for_the_poll_lease_exactly_one_polls() {
    let mut envoy = Envoy::start(&revocation_config(""), &[100, 100]);
    envoy.tick(0);
    envoy.tick(1);
    let call = envoy.one_call();
    assert_eq!(call.cluster, "token");
    assert!(call.path.starts_with("/revocations?"), "{}", call.path);
    // While it runs, neither starts another.
    envoy.run_for(1000);
    assert!(envoy.calls().is_empty());
}

#[test]
fn a_set_one_worker_polled_is_adopted_by_the_other_on_its_next_tick() {
    let mut envoy = Envoy::start(&revocation_config(""), &[0, 50]);
    envoy.tick(0);
    let call = envoy.one_call();
    envoy.answer(&call, Some(200), &page(true, 1, alice_revoked()));
    assert_eq!(
        envoy.status(0, &alice()),
        401,
        "the polling worker refuses at once"
    );
    let reply = envoy.get(0, &alice()).unwrap();
    assert!(reply.body.contains("revoked"), "{}", reply.body);
    envoy.run_for(100);
    assert_eq!(envoy.status(1, &alice()), 401, "the other worker after its tick");
    assert_eq!(envoy.counter("gatehouse.revocation.poll_ok"), 1);
    assert_eq!(envoy.counter("gatehouse.revocation.updates"), 1);
    assert_eq!(envoy.counter("gatehouse.denied.revoked"), 3);
}

/// Commit 5254a72: worker B accepted a token worker A had refused a moment before,
/// because B looked at the shared set only every `poll_seconds / 4`. Now every
/// worker reads the head on a 100 ms tick: once one worker refuses a token, a
/// request to any worker refuses it after that worker's next tick, whatever the
/// phase of the workers' timers.
#[test]
fn a_token_refused_by_one_worker_is_refused_by_every_worker_from_its_next_tick() {
    let mut envoy = Envoy::start(&revocation_config(""), &[0, 230, 470]);
    // A first good poll with nothing revoked, then alice is revoked on the next.
    envoy.tick(0);
    let call = envoy.one_call();
    envoy.answer(&call, Some(200), &page(true, 1, json!([])));
    envoy.run_for(100);
    for i in 0..3 {
        assert_eq!(envoy.status(i, &alice()), 200);
    }
    let call = loop {
        envoy.run_for(10);
        if let Some(call) = envoy.calls().into_iter().next() {
            break call;
        }
    };
    envoy.answer(&call, Some(200), &page(false, 2, alice_revoked()));
    assert_eq!(envoy.status(call.worker, &alice()), 401);
    let refused_at = envoy.envoy.now_ms();
    // Every 10 ms, a request to each worker: each may accept only until it has ticked.
    let mut accepted_after = [None; 3];
    while envoy.envoy.now_ms() < refused_at + 1000 {
        envoy.run_for(10);
        for (i, last) in accepted_after.iter_mut().enumerate() {
            if envoy.status(i, &alice()) == 200 {
                *last = Some(envoy.envoy.now_ms() - refused_at);
            }
        }
    }
    // The promise of the docs: once one worker refuses a token, all do within 100 ms
    // (of the mock clock; no wall-clock time is measured here).
    for (i, last) in accepted_after.iter().enumerate() {
        assert!(
            last.is_none_or(|ms| ms < 100),
            "worker {i} accepted the token {last:?} ms after worker {} refused it",
            call.worker
        );
    }
}

#[test]
fn a_failed_poll_keeps_the_last_set_and_waits_one_interval() {
    let mut envoy = Envoy::start(&revocation_config(""), &[0]);
    envoy.tick(0);
    let call = envoy.one_call();
    envoy.answer(&call, Some(200), &page(true, 1, alice_revoked()));
    envoy.run_for(2000);
    let call = envoy.one_call();
    envoy.answer(&call, Some(503), "down");
    assert_eq!(envoy.status(0, &alice()), 401, "the last set stays");
    assert_eq!(envoy.counter("gatehouse.revocation.poll_failed"), 1);
    envoy.run_for(1900);
    assert!(envoy.calls().is_empty(), "no retry before one interval");
    envoy.run_for(200);
    let call = envoy.one_call();
    // A call that fails outright (no status: timed out, reset) counts the same.
    envoy.answer(&call, None, "");
    assert_eq!(envoy.counter("gatehouse.revocation.poll_failed"), 2);
    assert_eq!(envoy.status(0, &alice()), 401);
}

#[test]
fn past_the_staleness_bound_tokens_get_503_until_a_good_poll() {
    let mut envoy = Envoy::start(&revocation_config(r#", "max_stale_seconds": 4"#), &[0, 50]);
    envoy.tick(0);
    let call = envoy.one_call();
    envoy.answer(&call, Some(200), &page(true, 1, json!([])));
    envoy.run_for(100);
    assert_eq!(envoy.status(1, &alice()), 200);
    // Every poll from now on fails, until the set is older than 4 s.
    let mut waited = 0;
    while envoy.status(1, &alice()) == 200 {
        envoy.run_for(100);
        for call in envoy.calls() {
            envoy.answer(&call, Some(500), "");
        }
        waited += 100;
        assert!(waited < 10_000, "never stale");
    }
    let stale = envoy.get(1, &alice()).unwrap();
    assert_eq!(stale.status, 503);
    assert!(stale.headers.contains(&("retry-after".into(), "5".into())));
    assert!(stale.body.contains("out of date"), "{}", stale.body);
    assert_eq!(envoy.status(0, &alice()), 503, "on every worker");
    // The next good poll, on whichever worker, lets tokens through on all of them.
    let call = loop {
        envoy.run_for(100);
        if let Some(call) = envoy.calls().into_iter().next() {
            break call;
        }
    };
    envoy.answer(&call, Some(200), &page(false, 1, json!([])));
    envoy.run_for(100);
    assert_eq!(envoy.status(0, &alice()), 200);
    assert_eq!(envoy.status(1, &alice()), 200);
}

#[test]
fn before_the_first_poll_tokens_get_503_and_the_first_good_poll_ends_it_everywhere_at_once() {
    let mut envoy = Envoy::start(&revocation_config(""), &[0, 500]);
    let reply = envoy.get(1, &alice()).unwrap();
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("not loaded"), "{}", reply.body);
    envoy.tick(0);
    let call = envoy.one_call();
    envoy.answer(&call, Some(200), &page(true, 1, json!([])));
    // Worker 1 has not ticked since: its request looks at the shared set itself.
    assert_eq!(envoy.status(1, &alice()), 200);
    assert_eq!(envoy.counter("gatehouse.denied.revocation_unloaded"), 1);
}

#[test]
fn keys_fetched_by_one_worker_serve_a_request_on_another_at_once() {
    let mut envoy = Envoy::start(&jwks_config(), &[0, 500]);
    let reply = envoy.get(1, &eddsa_token()).unwrap();
    assert_eq!(
        (
            reply.status,
            reply.headers.contains(&("retry-after".into(), "5".into()))
        ),
        (503, true)
    );
    envoy.tick(0);
    let call = envoy.one_call();
    assert_eq!(call.path, "/.well-known/jwks.json");
    envoy.answer(&call, Some(200), &jwks_with(&["k-ed", "k-es"]));
    // Worker 1 has not ticked since: no 503 window while it waits for its tick.
    assert_eq!(envoy.status(1, &eddsa_token()), 200);
    assert_eq!(envoy.status(0, &eddsa_token()), 200);
    assert_eq!(envoy.counter("gatehouse.jwks.fetch_ok"), 1);
}

#[test]
fn a_rotated_jwks_reaches_every_worker_within_a_tick() {
    let mut envoy = Envoy::start(&jwks_config(), &[0, 40]);
    envoy.tick(0);
    let call = envoy.one_call();
    envoy.answer(&call, Some(200), &jwks_with(&["k-es"]));
    envoy.run_for(100);
    // Worker 0 learns k-ed by an early fetch; worker 1 adopts it on its next tick,
    // without a fetch of its own.
    let (worker, host, _) = &mut envoy.workers[0];
    let mut held = Request::default();
    assert_eq!(request_on(&mut held, worker, host, &eddsa_token()), Flow::Pause);
    let call = envoy.one_call();
    let (worker, host, _) = &mut envoy.workers[0];
    let size = host.answering(Some(200), &jwks_with(&["k-ed", "k-es"]));
    held.on_answer(worker, host, call.token, size);
    envoy.run_for(100);
    assert_eq!(envoy.status(1, &eddsa_token()), 200);
    assert!(envoy.calls().is_empty());
}

/// Worker 0 holds only `k-es`; a request with the `k-ed` token is held while the JWKS
/// is fetched again. The held request and that fetch.
fn held_for_unknown_kid(envoy: &mut Envoy) -> (Request, SentCall) {
    envoy.tick(0);
    let call = envoy.one_call();
    envoy.answer(&call, Some(200), &jwks_with(&["k-es"]));
    let (worker, host, _) = &mut envoy.workers[0];
    let mut held = Request::default();
    assert_eq!(request_on(&mut held, worker, host, &eddsa_token()), Flow::Pause);
    assert!(host.reply().is_none(), "held, not refused");
    (held, envoy.one_call())
}

#[test]
fn a_request_held_for_an_unknown_kid_resumes_when_the_jwks_answers() {
    let mut envoy = Envoy::start(&jwks_config(), &[0]);
    let (mut held, call) = held_for_unknown_kid(&mut envoy);
    // A stray answer (another token) changes nothing: still held.
    let (worker, host, _) = &mut envoy.workers[0];
    let size = host.answering(Some(200), &jwks_with(&["k-ed"]));
    held.on_answer(worker, host, call.token + 100, size);
    assert!(!host.resumed() && host.reply().is_none());
    held.on_answer(worker, host, call.token, size);
    assert!(host.resumed(), "resumed once the key is known");
    assert_eq!(host.header("x-auth-sub").as_deref(), Some("alice"));
    assert!(
        host.header("authorization").is_none(),
        "the token does not go upstream"
    );
    assert_eq!(envoy.counter("gatehouse.jwks.refetch_unknown_kid"), 1);
    assert_eq!(envoy.counter("gatehouse.allowed.token"), 1);
}

#[test]
fn a_request_held_for_an_unknown_kid_is_refused_when_the_jwks_fetch_fails() {
    let mut envoy = Envoy::start(&jwks_config(), &[0]);
    let (mut held, call) = held_for_unknown_kid(&mut envoy);
    let (worker, host, _) = &mut envoy.workers[0];
    host.answering(None, "");
    held.on_answer(worker, host, call.token, 0);
    let reply = host.reply().expect("refused");
    assert_eq!(reply.status, 401);
    assert!(reply.body.contains("signing key is unknown"), "{}", reply.body);
    assert!(!host.resumed());
    // Within min_refetch_seconds another unknown kid is refused at once, no fetch.
    assert_eq!(envoy.status(0, &eddsa_token()), 401);
    assert!(envoy.calls().is_empty());
    assert_eq!(envoy.counter("gatehouse.jwks.fetch_failed"), 1);
    assert_eq!(envoy.counter("gatehouse.denied.unknown_key"), 2);
}

/// A form POST whose `_method` must be read, held for an unknown `kid`: once the key is
/// known its body is still read, and `_method=DELETE` meets the DELETE rule.
#[test]
fn a_held_request_whose_body_matters_still_has_its_body_read() {
    let config = format!(
        r#"{{"issuer": "{ISSUER}", "audiences": ["api"], "algorithms": ["EdDSA", "ES256"],
            "max_token_lifetime_seconds": 3600,
            "jwks": {{"remote": {{"cluster": "token"}}}},
            "rules": [{{"path": "/users/{{id}}", "methods": ["DELETE"], "require": {{"any_of": ["root"]}}}}],
            "no_match": "authenticated"}}"#
    );
    let mut envoy = Envoy::start(&config, &[0]);
    envoy.tick(0);
    let call = envoy.one_call();
    envoy.answer(&call, Some(200), &jwks_with(&["k-es"]));
    let (worker, host, _) = &mut envoy.workers[0];
    let bearer = format!("Bearer {}", eddsa_token());
    host.begin(
        &[
            (":method", "POST"),
            (":path", "/users/4"),
            ("authorization", &bearer),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        b"_method=DELETE",
    );
    let mut held = Request::default();
    assert_eq!(
        held.on_headers(worker, host, false),
        Flow::Pause,
        "held for the kid"
    );
    let call = envoy.one_call();
    let (worker, host, _) = &mut envoy.workers[0];
    let size = host.answering(Some(200), &jwks_with(&["k-ed"]));
    held.on_answer(worker, host, call.token, size);
    assert!(host.resumed() && host.reply().is_none(), "the headers go on");
    assert!(held.is_reading_body());
    let body_len = b"_method=DELETE".len();
    assert_eq!(held.on_body(worker, host, body_len, true), Flow::Pause);
    let reply = host.reply().expect("refused once the body is read");
    assert_eq!(reply.status, 403);
    assert!(reply.body.contains("insufficient_scope"), "{}", reply.body);
    assert_eq!(envoy.counter("gatehouse.denied.forbidden"), 1);
    assert_eq!(
        envoy.counter("gatehouse.allowed.token"),
        0,
        "counted once, as refused"
    );
}

#[test]
fn a_stray_answer_to_the_root_context_changes_nothing() {
    let mut envoy = Envoy::start(&revocation_config(""), &[0]);
    envoy.tick(0);
    let call = envoy.one_call();
    let stray = SentCall {
        token: call.token + 7,
        ..call.clone()
    };
    envoy.answer(&stray, Some(200), &page(true, 1, alice_revoked()));
    assert_eq!(envoy.get(0, &alice()).unwrap().status, 503, "still not loaded");
    assert_eq!(envoy.counter("gatehouse.revocation.poll_ok"), 0);
    envoy.answer(&call, Some(200), &page(true, 1, json!([])));
    assert_eq!(envoy.status(0, &alice()), 200);
}

#[test]
fn a_host_that_refuses_to_dispatch_counts_a_failed_fetch_and_retries_later() {
    let mut envoy = Envoy::start(&jwks_config(), &[0]);
    envoy.envoy.refuse_dispatch(true);
    envoy.tick(0);
    assert!(envoy.calls().is_empty());
    assert_eq!(envoy.counter("gatehouse.jwks.fetch_failed"), 1);
    envoy.envoy.refuse_dispatch(false);
    // The lease is held as long as a call could take (the 2 s timeout + 2 s), then
    // the fetch is tried again.
    envoy.run_for(3900);
    assert!(envoy.calls().is_empty());
    envoy.run_for(200);
    assert_eq!(envoy.calls().len(), 1);
}

#[test]
fn the_tick_is_100_ms_with_background_work_and_a_second_without() {
    let without = Envoy::start(
        &format!(
            r#"{{"issuer": "{ISSUER}", "algorithms": ["HS256"], "hmac_secret": {{"env": "SECRET_KEY"}}}}"#
        ),
        &[0],
    );
    assert_eq!(without.workers[0].0.tick_period().as_millis(), 1000);
    for config in [revocation_config(""), jwks_config()] {
        assert_eq!(
            Envoy::start(&config, &[0]).workers[0].0.tick_period().as_millis(),
            100
        );
    }
}

#[test]
fn a_bad_configuration_says_which_field() {
    let host = MockEnvoy::new(NOW).host(0);
    let err = Worker::configure(
        &host,
        br#"{"issuer": "x", "algorithms": ["HS256"], "rulez": []}"#,
        |_| Some(SECRET.to_string()),
    )
    .err()
    .unwrap();
    assert!(err.starts_with("invalid configuration: "), "{err}");
    assert!(err.contains("rulez"), "{err}");
    assert!(!err.contains(SECRET));
}

#[test]
fn providers_behind_one_cluster_keep_their_own_shared_keys_and_sets() {
    use crate::jwks_sync::SharedKeys;
    let config = r#"{"providers": {
        "a": {"issuer": "https://a.eu.auth0.com/", "jwks": {"discovery": {"cluster": "egress"}},
              "revocation": {"cluster": "egress"}},
        "b": {"issuer": "https://b.eu.auth0.com/", "jwks": {"discovery": {"cluster": "egress"}},
              "revocation": {"cluster": "egress", "authority": "b.eu.auth0.com"}}}}"#;
    let policy = crate::config::compile(config.as_bytes(), |_| None).unwrap();
    let (a, b) = (&policy.providers[0], &policy.providers[1]);
    let (ra, rb) = (a.jwks_remote.as_ref().unwrap(), b.jwks_remote.as_ref().unwrap());
    assert_eq!(
        (ra.cluster.as_str(), ra.path.as_str()),
        (rb.cluster.as_str(), rb.path.as_str())
    );
    let (ka, kb) = (SharedKeys::new(Some("a"), ra), SharedKeys::new(Some("b"), rb));
    for (x, y) in [
        (&ka.head, &kb.head),
        (&ka.document, &kb.document),
        (&ka.lease, &kb.lease),
        (&ka.refetch, &kb.refetch),
    ] {
        assert_ne!(x, y);
    }
    // The one provider of a configuration without `providers` keeps the old names.
    let legacy = crate::config::compile(jwks_config().as_bytes(), |_| None).unwrap();
    let remote = legacy.providers[0].jwks_remote.as_ref().unwrap();
    assert_eq!(
        SharedKeys::new(None, remote).head,
        "gatehouse.jwks.token./.well-known/jwks.json.head"
    );
    // Two workers of such a VM: each provider fetches its own document.
    let mut envoy = Envoy::start(config, &[0]);
    envoy.tick(0);
    let calls = envoy.calls();
    assert_eq!(calls.len(), 4, "{calls:?}");
    let authorities: std::collections::BTreeSet<&str> = calls.iter().map(|c| c.authority.as_str()).collect();
    assert!(
        authorities.contains("a.eu.auth0.com") && authorities.contains("b.eu.auth0.com"),
        "{calls:?}"
    );
}
