//! Two `gatehouse-token` replicas on one PostgreSQL database, behind the real Envoy
//! with the filter (EdDSA keys fetched from the replicas' JWKS, revocations polled
//! from their feed, round robin between them). They act as one service: a login on
//! one and a refresh on the other work; reuse of a rotated refresh token is caught
//! whichever replica sees it; failed logins count across replicas; a key rotation is
//! served by both; one replica killed in the middle of a flood loses nothing committed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64ct::{Base64UrlUnpadded, Encoding};
use gatehouse_testkit::{bootstrap_yaml, wasm_filter_yaml, wasm_path, Envoy, Upstream};
use gatehouse_token::store::Location;
use serde_json::{json, Value};
use support::process::{cli_at, text, Server};
use support::{ISSUER, SECRET};

const REPLICA_ARGS: &[&str] = &[
    "--signing-alg",
    "EdDSA",
    "--issuer",
    ISSUER,
    "--audience",
    "api",
    "--max-failures-per-user",
    "3",
    "--max-concurrent-hashes",
    "1",
];

fn filter_config() -> Value {
    json!({
        "issuer": ISSUER, "audiences": ["api"], "algorithms": ["EdDSA"],
        "jwks": {"remote": {"cluster": "token", "refresh_seconds": 30, "timeout_ms": 1000, "min_refetch_seconds": 1}},
        "revocation": {"cluster": "token", "poll_seconds": 1, "timeout_ms": 1000},
        "rules": [
            {"path": "/token", "methods": ["POST"], "require": "public"},
            {"prefix": "/users", "require": {"any_of": ["user"]}}
        ]
    })
}

/// The token route retries a refused connection on the other replica, and a replica
/// that stops answering is ejected after one gateway failure (as a deployment would
/// configure it, or leave it to Kubernetes' readiness probe).
fn envoy_yaml(replicas: &[SocketAddr], api: SocketAddr) -> String {
    let routes = r#"              - match: {prefix: "/token"}
                route:
                  cluster: token
                  retry_policy:
                    retry_on: connect-failure
                    num_retries: 2
                    retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, typed_config: {"@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}}]
              - match: {prefix: "/"}
                route: {cluster: api}
"#;
    let endpoints: String = replicas
        .iter()
        .map(|a| {
            format!(
                "        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}\n",
                a.port()
            )
        })
        .collect();
    let clusters = format!(
        r#"  clusters:
  - name: token
    connect_timeout: 1s
    type: STATIC
    lb_policy: ROUND_ROBIN
    outlier_detection:
      consecutive_gateway_failure: 1
      enforcing_consecutive_gateway_failure: 100
      consecutive_5xx: 1000
      interval: 1s
      base_ejection_time: 60s
      max_ejection_percent: 50
    load_assignment:
      cluster_name: token
      endpoints:
      - lb_endpoints:
{endpoints}  - name: api
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: api
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}
"#,
        api.port()
    );
    let filter = wasm_filter_yaml("gatehouse", wasm_path(), &filter_config().to_string());
    bootstrap_yaml(routes, &filter, &clusters)
}

struct Http(reqwest::Client);

impl Http {
    async fn post(&self, base: &str, path: &str, form: &str) -> (u16, Value) {
        let r = self
            .0
            .post(format!("{base}{path}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    async fn get(&self, base: &str, path: &str, bearer: Option<&str>) -> (u16, Value) {
        let mut req = self.0.get(format!("{base}{path}"));
        if let Some(token) = bearer {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    async fn login(&self, base: &str, user: &str, password: &str) -> (u16, Value) {
        self.post(
            base,
            "/token",
            &format!("grant_type=password&username={user}&password={password}"),
        )
        .await
    }

    async fn refresh(&self, base: &str, token: &str) -> (u16, Value) {
        self.post(
            base,
            "/token",
            &format!("grant_type=refresh_token&refresh_token={token}"),
        )
        .await
    }
}

fn base(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

fn kid(access_token: &str) -> String {
    let header = access_token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&Base64UrlUnpadded::decode_vec(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_string()
}

fn field(v: &Value, name: &str) -> String {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {v}"))
        .to_string()
}

async fn published_kids(http: &Http, replica: &Server) -> BTreeSet<String> {
    let (status, jwks) = http.get(&replica.url(""), "/.well-known/jwks.json", None).await;
    assert_eq!(status, 200);
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| field(k, "kid"))
        .collect()
}

fn run_cli(db: &Location, args: &[&str], stdin: &str) {
    let out = cli_at(
        db,
        args,
        stdin,
        &[("SECRET_KEY", SECRET), ("GATEHOUSE_ACCESS_TTL", "1800")],
    );
    assert!(out.status.success(), "{args:?}: {}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_postgres_act_as_one_service() {
    let db = Location::Postgres(support::postgres::fresh_database().await);
    run_cli(
        &db,
        &["user", "add", "alice", "--role", "user", "--role", "admin"],
        "alice-demo-pass\n",
    );
    run_cli(&db, &["user", "add", "bob", "--role", "user"], "bob-demo-pass\n");

    // Both replicas start at once on a database without a signing key: one key results.
    let (a, b) = {
        let (da, db2) = (db.clone(), db.clone());
        let ta = std::thread::spawn(move || Server::start_at(&da, REPLICA_ARGS, "info"));
        let tb = std::thread::spawn(move || Server::start_at(&db2, REPLICA_ARGS, "info"));
        (ta.join().unwrap(), tb.join().unwrap())
    };
    let http = Http(reqwest::Client::new());
    let first_keys = published_kids(&http, &a).await;
    assert_eq!(first_keys.len(), 1, "{first_keys:?}");
    assert_eq!(published_kids(&http, &b).await, first_keys);

    let api = Upstream::start();
    let envoy = Envoy::launch(&envoy_yaml(&[a.addr, b.addr], api.addr), None, None)
        .unwrap_or_else(|f| panic!("Envoy did not start: {f:?}"));
    let edge = format!("http://127.0.0.1:{}", envoy.port);
    // Keys fetched and a first revocation poll: until then the filter refuses tokens.
    envoy.counters_when(|c| {
        c.get("gatehouse.jwks.fetch_ok").copied().unwrap_or(0) >= 1
            && c.get("gatehouse.revocation.poll_ok").copied().unwrap_or(0) >= 1
    });

    // A login on A, a refresh on B, the refreshed token accepted at the edge.
    let (status, login) = http.login(&base(a.addr), "alice", "alice-demo-pass").await;
    assert_eq!(status, 200, "{login}");
    let (status, refreshed) = http.refresh(&base(b.addr), &field(&login, "refresh_token")).await;
    assert_eq!(status, 200, "{refreshed}");
    let (status, _) = http
        .get(&edge, "/users/me", Some(&field(&refreshed, "access_token")))
        .await;
    assert_eq!(status, 200);

    // Reuse of a rotated token is caught by the other replica, and kills the family.
    let (status, reuse) = http.refresh(&base(a.addr), &field(&login, "refresh_token")).await;
    assert_eq!((status, field(&reuse, "error")), (400, "invalid_grant".into()));
    let (status, _) = http
        .refresh(&base(b.addr), &field(&refreshed, "refresh_token"))
        .await;
    assert_eq!(status, 400, "the family died with the reuse");

    // Failed logins count across replicas: 3 allowed per user, spread over A and B.
    for replica in [&a, &b, &a] {
        let (status, _) = http.login(&base(replica.addr), "bob", "wrong").await;
        assert_eq!(status, 401);
    }
    for replica in [&b, &a] {
        let (status, body) = http.login(&base(replica.addr), "bob", "bob-demo-pass").await;
        assert_eq!(
            (status, field(&body, "error")),
            (429, "temporarily_unavailable".into())
        );
    }
    let (status, _) = http.login(&edge, "bob", "bob-demo-pass").await;
    assert_eq!(status, 429, "through Envoy, whichever replica answers");

    // A key rotation (the CLI, on the shared database) is served by both replicas, and
    // the edge accepts tokens signed with it by either.
    run_cli(&db, &["keys", "rotate", "--alg", "EdDSA", "--now"], "");
    let rotated = Instant::now();
    let mut new_kid = String::new();
    for replica in [&a, &b] {
        loop {
            let (status, body) = http.login(&base(replica.addr), "alice", "alice-demo-pass").await;
            assert_eq!(status, 200, "{body}");
            let token = field(&body, "access_token");
            if !first_keys.contains(&kid(&token)) {
                new_kid = kid(&token);
                let (status, _) = http.get(&edge, "/users/me", Some(&token)).await;
                assert_eq!(status, 200, "a token signed with the new key passes the edge");
                break;
            }
            // A liveness bound (keys are reloaded every second), not a latency one.
            assert!(
                rotated.elapsed() < Duration::from_secs(30),
                "the rotation never reached a replica"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let both: BTreeSet<String> = first_keys.iter().cloned().chain([new_kid]).collect();
    assert_eq!(published_kids(&http, &a).await, both);
    assert_eq!(published_kids(&http, &b).await, both);

    // One revocation feed: the same feed id and cursor from either replica.
    run_cli(&db, &["user", "disable", "bob"], "");
    let (_, feed_a) = http.get(&base(a.addr), "/revocations", None).await;
    let (_, feed_b) = http.get(&base(b.addr), "/revocations", None).await;
    assert_eq!(
        (&feed_a["feed"], &feed_a["cursor"]),
        (&feed_b["feed"], &feed_b["cursor"])
    );
    assert_eq!(feed_a["entries"][0]["sub"], "bob");

    replica_killed_mid_flood(&http, &edge, a, b).await;
    let stats = envoy.counters();
    assert_eq!(
        stats.get("gatehouse.jwks.fetch_failed").copied().unwrap_or(0),
        0,
        "{stats:?}"
    );
}

/// Four clients log in and refresh through Envoy; replica A is SIGKILLed once 8 logins
/// were served, and each client goes on until it is served after the kill. What may fail is told by order, not by time: a request in
/// flight on A when it died (a login is not retried after its request was sent: it is
/// not idempotent), and a client's first request after the kill, which Envoy may have
/// put on a pooled connection to A before reading that A closed it. Every later request
/// is answered by B, and every login or refresh answered 200, before or after, left a
/// refresh token that still works: nothing committed was lost.
async fn replica_killed_mid_flood(http: &Http, edge: &str, mut a: Server, b: Server) {
    let http = Arc::new(Http(http.0.clone()));
    let start = Instant::now();
    // Logins answered 200 so far, and when A's kill ended: the flood runs by cause, not
    // for a while: A is killed once the flood has been served, and each client goes on
    // until it has been served after the kill.
    let served = Arc::new(AtomicUsize::new(0));
    let killed: Arc<OnceLock<Duration>> = Arc::new(OnceLock::new());
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (http, edge) = (http.clone(), edge.to_string());
            let (served, killed) = (served.clone(), killed.clone());
            tokio::spawn(async move {
                let mut held: Vec<String> = Vec::new();
                // (sent, answered, status) of every request, in the order sent.
                let mut requests: Vec<(Duration, Duration, u16)> = Vec::new();
                loop {
                    let served_after_kill = killed.get().is_some_and(|k| {
                        requests
                            .iter()
                            .any(|&(sent, _, status)| sent > *k && status == 200)
                    });
                    if served_after_kill {
                        break;
                    }
                    assert!(requests.len() < 2000, "never served after the kill: {requests:?}");
                    let sent = start.elapsed();
                    let (status, body) = http.login(&edge, "alice", "alice-demo-pass").await;
                    requests.push((sent, start.elapsed(), status));
                    if status != 200 {
                        continue;
                    }
                    served.fetch_add(1, Ordering::SeqCst);
                    // Rotate once: the rotated-to token is what must survive. A refresh
                    // that fails was in flight on A: its outcome is unknown to the
                    // client, so it is not counted as committed either way.
                    let sent = start.elapsed();
                    let (status, refreshed) = http.refresh(&edge, &field(&body, "refresh_token")).await;
                    requests.push((sent, start.elapsed(), status));
                    if status == 200 {
                        held.push(field(&refreshed, "refresh_token"));
                    }
                }
                (held, requests)
            })
        })
        .collect();
    for waited in 0.. {
        if served.load(Ordering::SeqCst) >= 8 {
            break;
        }
        // A hang guard (the flood never got going), not a bound on speed.
        assert!(waited < 1200, "the flood was never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kill_began = start.elapsed();
    a.kill9();
    let kill_ended = start.elapsed();
    let _ = killed.set(kill_ended);

    let mut held = Vec::new();
    let (mut answered, mut failures) = (0, Vec::new());
    for c in clients {
        let (h, requests) = c.await.unwrap();
        held.extend(h);
        answered += requests.iter().filter(|r| r.2 == 200).count();
        let mut first_after_kill = true;
        for &(sent, done, status) in &requests {
            let after_kill = sent > kill_ended;
            if status != 200 {
                failures.push((sent, done, status));
                let in_flight = sent <= kill_ended && done >= kill_began;
                assert!(
                    in_flight || (after_kill && first_after_kill),
                    "only a request in flight at the kill, or a client's first one after it, may fail: \
                     {status} sent at {sent:?}, answered at {done:?}, A killed at {kill_began:?}..{kill_ended:?}"
                );
                assert!(matches!(status, 502..=504), "{status}");
            }
            first_after_kill &= !after_kill;
        }
        assert!(
            requests
                .iter()
                .any(|&(sent, _, status)| sent > kill_ended && status == 200),
            "a client was never served after the kill: {requests:?}"
        );
    }
    eprintln!(
        "flood: {answered} requests answered 200, {} refresh tokens held, failures (sent, answered, status): \
         {failures:?}; A killed at {kill_began:?}..{kill_ended:?}",
        held.len()
    );
    assert!(answered >= 8, "the flood must have been a flood: {answered}");

    // Every refresh token a client was given is still good, on the surviving replica.
    for token in &held {
        let (status, body) = http.refresh(&base(b.addr), token).await;
        assert_eq!(status, 200, "a committed refresh token was lost: {body}");
    }
}
