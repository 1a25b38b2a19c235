//! Revocation at the edge, end to end: the filter in the real Envoy polls the token
//! service's feed through a cluster. A disabled user (CLI or admin API) is refused
//! within two poll intervals while others are not; a revoked `jti` is refused; the
//! token service going away does not stop valid tokens, unless a staleness bound says so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_testkit::{eventually, Envoy, Upstream};
use serde_json::{json, Value};
use support::{Options, TestApp, ISSUER, SECRET};

const POLL_SECONDS: u64 = 1;

fn config(max_stale_seconds: Option<u64>) -> Value {
    config_with(max_stale_seconds, None)
}

fn config_with(max_stale_seconds: Option<u64>, max_entries: Option<u64>) -> Value {
    let mut revocation = json!({"cluster": "c0", "poll_seconds": POLL_SECONDS, "timeout_ms": 500});
    if let Some(bound) = max_stale_seconds {
        revocation["max_stale_seconds"] = json!(bound);
    }
    if let Some(bound) = max_entries {
        revocation["max_entries"] = json!(bound);
    }
    json!({
        "issuer": ISSUER, "audiences": ["api"], "algorithms": ["HS256"],
        "hmac_secret": {"env": "SECRET_KEY"},
        // c0 is the first route's cluster: the token service.
        "revocation": revocation,
        "rules": [
            {"path": "/token", "methods": ["POST"], "require": "public"},
            {"path": "/revoke", "methods": ["POST"], "require": "public"},
            {"prefix": "/admin", "require": {"any_of": ["admin"]}, "forward_authorization": true}
        ]
    })
}

fn start_envoy(token_port: u16, api_port: u16, max_stale_seconds: Option<u64>) -> Envoy {
    let envoy = start_envoy_with(token_port, api_port, &config(max_stale_seconds));
    // Until its first good poll the filter refuses tokens (503): it cannot tell which
    // are revoked.
    eventually("a first good poll", || polls(&envoy) >= 1);
    envoy
}

fn start_envoy_with(token_port: u16, api_port: u16, config: &Value) -> Envoy {
    Envoy::start_routes(
        config,
        Some(SECRET),
        &[
            ("/token", token_port),
            ("/revoke", token_port),
            ("/admin", token_port),
            ("/", api_port),
        ],
    )
}

fn login(envoy: &Envoy, user: &str) -> (u16, Value) {
    let r = envoy.post_form(
        "/token",
        &format!("grant_type=password&username={user}&password={user}-demo-pass"),
    );
    (r.status, r.json())
}

fn access(envoy: &Envoy, user: &str) -> (String, String) {
    let (status, body) = login(envoy, user);
    assert_eq!(status, 200, "{user} could not log in: {body}");
    (
        body["access_token"].as_str().unwrap().to_string(),
        body["refresh_token"].as_str().unwrap().to_string(),
    )
}

fn me(envoy: &Envoy, token: &str) -> gatehouse_testkit::Response {
    envoy.call(
        "GET",
        "/users/me",
        &[("Authorization", &format!("Bearer {token}"))],
    )
}

fn admin(envoy: &Envoy, token: &str, path: &str) -> gatehouse_testkit::Response {
    envoy.call("POST", path, &[("Authorization", &format!("Bearer {token}"))])
}

/// Runs the token service's CLI on the same database (as an operator would).
fn cli(db: &std::path::Path, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse-token"))
        .arg("--db")
        .arg(db)
        .args(args)
        .env("GATEHOUSE_ACCESS_TTL", "1800")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn polls(envoy: &Envoy) -> u64 {
    envoy
        .counters()
        .get("gatehouse.revocation.poll_ok")
        .copied()
        .unwrap_or(0)
}

/// Asks with `token` until it gets 401 "revoked", and says how long that took after
/// `since`. Told by order, not time: the token must be refused before the filter has
/// completed `within` polls counted from `polls_at_revocation` (read once the
/// revocation was recorded): the first of them may have been in flight already, every
/// later one started after the revocation and carries it.
fn refused_within_polls(
    envoy: &Envoy,
    token: &str,
    since: Instant,
    polls_at_revocation: u64,
    within: u64,
) -> Duration {
    loop {
        // Read before the request: a lower bound on the polls done when it is decided.
        let done = polls(envoy) - polls_at_revocation;
        let r = me(envoy, token);
        if r.status == 401 {
            assert!(
                r.header("www-authenticate")
                    .unwrap()
                    .contains(r#"error_description="the token has been revoked""#),
                "{:?}",
                r.header("www-authenticate")
            );
            return since.elapsed();
        }
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert!(
            done < within,
            "still accepted after {done} polls since the revocation"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits into the next second: a token issued then is newer than a revocation made now.
fn next_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000 - u64::from(now.subsec_millis()) + 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_user_is_locked_out_at_the_edge_within_two_polls() {
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("users.db");
    let app = TestApp::spawn_at(Options::default(), "127.0.0.1:0", Some(&db)).await;
    app.add_user("alice", "alice-demo-pass", &["admin", "user"], false)
        .await;
    app.add_user("bob", "bob-demo-pass", &["user"], false).await;
    let api = Upstream::start();
    let (token_port, api_port) = (app.addr.port(), api.addr.port());

    let propagation = tokio::task::spawn_blocking(move || {
        let envoy = start_envoy(token_port, api_port, None);
        let (alice, _) = access(&envoy, "alice");
        let mut samples = Vec::new();
        for round in 0..6u64 {
            let (bob, bob_refresh) = access(&envoy, "bob");
            assert_eq!(me(&envoy, &bob).status, 200);
            assert_eq!(me(&envoy, &alice).status, 200);
            assert_eq!(api.last().all("x-auth-sub"), ["alice"]);

            // At a different point of the poll cycle each round, so the figures cover it.
            std::thread::sleep(Duration::from_millis(round * 167 % 1000));
            // Disabled by the CLI on even rounds, by alice over the admin API on odd ones.
            if round % 2 == 0 {
                cli(&db, &["user", "disable", "bob"]);
            } else {
                let r = admin(&envoy, &alice, "/admin/users/bob/disable");
                assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            }
            let (since, polled) = (Instant::now(), polls(&envoy));
            // Refused by the second poll after the disable (the first may have started
            // before it): within two poll intervals.
            samples.push(refused_within_polls(&envoy, &bob, since, polled, 2));
            assert_eq!(me(&envoy, &alice).status, 200, "alice is unaffected");
            let (status, body) = login(&envoy, "bob");
            assert_eq!((status, body["error"].as_str()), (401, Some("invalid_grant")));
            let r = envoy.post_form(
                "/token",
                &format!("grant_type=refresh_token&refresh_token={bob_refresh}"),
            );
            assert_eq!(
                (r.status, r.json()["error"].as_str()),
                (400, Some("invalid_grant"))
            );

            // Enabled again (CLI or API): his old token stays revoked, a new one works.
            if round % 2 == 0 {
                cli(&db, &["user", "enable", "bob"]);
            } else {
                assert_eq!(admin(&envoy, &alice, "/admin/users/bob/enable").status, 200);
            }
            next_second();
            assert_eq!(me(&envoy, &bob).status, 401);
        }
        let c = envoy.counters_when(|c| c.get("gatehouse.denied.revoked").copied().unwrap_or(0) >= 6);
        assert!(c["gatehouse.revocation.updates"] >= 6, "{c:?}");
        samples
    })
    .await
    .unwrap();
    let mut ms: Vec<u128> = propagation.iter().map(Duration::as_millis).collect();
    ms.sort_unstable();
    println!(
        "revocation propagation over {} runs (poll every {POLL_SECONDS} s): median {} ms, max {} ms, all {ms:?}",
        ms.len(),
        ms[ms.len() / 2],
        ms[ms.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_jti_is_refused_and_an_outage_keeps_the_last_set() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("users.db");
    let mut app = TestApp::spawn_at(Options::default(), &addr.to_string(), Some(&db)).await;
    app.add_user("alice", "alice-demo-pass", &["admin", "user"], false)
        .await;
    let api = Upstream::start();
    let (token_port, api_port) = (addr.port(), api.addr.port());

    let (envoy, bounded) = tokio::task::spawn_blocking(move || {
        (
            Arc::new(start_envoy(token_port, api_port, None)),
            Arc::new(start_envoy(token_port, api_port, Some(2 * POLL_SECONDS))),
        )
    })
    .await
    .unwrap();

    // alice revokes one of her own tokens (RFC 7009): only that one stops working.
    let (e, b) = (envoy.clone(), bounded.clone());
    let (kept, idle_polls) = tokio::task::spawn_blocking(move || {
        let (revoked, _) = access(&e, "alice");
        let (kept, _) = access(&e, "alice");
        assert_eq!(me(&e, &revoked).status, 200);
        assert_eq!(me(&b, &revoked).status, 200);
        let r = e.post_form(
            "/revoke",
            &format!("token={revoked}&token_type_hint=access_token"),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let (since, polled_e, polled_b) = (Instant::now(), polls(&e), polls(&b));
        refused_within_polls(&e, &revoked, since, polled_e, 2);
        refused_within_polls(&b, &revoked, since, polled_b, 2);
        assert_eq!(me(&e, &kept).status, 200);
        // Idle polls change nothing: the set is only rebuilt when an entry arrives.
        let before = e.counters();
        let after = e.counters_when(|c| {
            c["gatehouse.revocation.poll_ok"] >= before["gatehouse.revocation.poll_ok"] + 3
        });
        let polls = after["gatehouse.revocation.poll_ok"] - before["gatehouse.revocation.poll_ok"];
        assert!(polls >= 3, "{polls} polls");
        assert_eq!(
            after["gatehouse.revocation.updates"],
            before["gatehouse.revocation.updates"]
        );
        (kept, polls)
    })
    .await
    .unwrap();
    assert!(idle_polls >= 3);

    // The token service goes away: the unbounded filter keeps serving valid tokens and
    // still refuses the revoked one; the bounded one refuses with 503 once its set is
    // older than its bound, and recovers by itself when the service is back.
    app.stop();
    drop(app);
    let (e, b, k) = (envoy.clone(), bounded.clone(), kept.clone());
    tokio::task::spawn_blocking(move || {
        eventually("failed polls", || {
            e.counters()
                .get("gatehouse.revocation.poll_failed")
                .copied()
                .unwrap_or(0)
                >= 2
        });
        assert_eq!(me(&e, &k).status, 200);
        eventually("the bounded filter refusing", || me(&b, &k).status == 503);
        let r = me(&b, &k);
        assert_eq!(r.header("retry-after"), Some("5"));
        assert_eq!(r.json()["error"], "temporarily_unavailable");
        assert_eq!(me(&e, &k).status, 200, "the unbounded one still serves");
    })
    .await
    .unwrap();

    let _app = TestApp::spawn_at(Options::default(), &addr.to_string(), Some(&db)).await;
    let b = bounded.clone();
    tokio::task::spawn_blocking(move || {
        eventually("recovery after the service is back", || {
            me(&b, &kept).status == 200
        });
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_started_while_the_feed_is_down_refuses_tokens_until_it_answers() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let api = Upstream::start();
    let api_port = api.addr.port();
    // Nothing listens on the token service's port yet.
    let envoy = Arc::new(
        tokio::task::spawn_blocking(move || start_envoy_with(addr.port(), api_port, &config(None)))
            .await
            .unwrap(),
    );
    let t = gatehouse_testkit::now();
    let token = gatehouse_testkit::mint(
        &json!({"iss": ISSUER, "aud": "api", "sub": "alice", "iat": t, "exp": t + 600, "jti": "a1"}),
    );
    let (e, tok) = (envoy.clone(), token.clone());
    tokio::task::spawn_blocking(move || {
        eventually("failed polls", || {
            e.counters()
                .get("gatehouse.revocation.poll_failed")
                .copied()
                .unwrap_or(0)
                >= 2
        });
        // A valid token, but the filter cannot know whether it is revoked: 503, not a guess.
        let r = me(&e, &tok);
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("retry-after"), Some("5"));
        assert_eq!(
            r.json()["error_description"],
            "the revocation list is not loaded yet"
        );
        // Public routes are not concerned: the request goes on to the (absent) upstream.
        let r = e.post_form("/token", "grant_type=password");
        assert!(
            String::from_utf8_lossy(&r.body).contains("upstream connect error"),
            "{r:?}"
        );
    })
    .await
    .unwrap();

    // The token service comes up: the first good poll lets valid tokens through.
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("users.db");
    let _app = TestApp::spawn_at(Options::default(), &addr.to_string(), Some(&db)).await;
    let e = envoy.clone();
    tokio::task::spawn_blocking(move || {
        eventually("the first good poll", || polls(&e) >= 1);
        assert_eq!(me(&e, &token).status, 200);
        let c = e.counters_when(|c| {
            c.get("gatehouse.denied.revocation_unloaded")
                .copied()
                .unwrap_or(0)
                >= 1
        });
        assert!(c["gatehouse.denied.revocation_unloaded"] >= 1, "{c:?}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_revoked_tokens_cannot_keep_a_disable_from_the_edge() {
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("users.db");
    let app = TestApp::spawn_at(Options::default(), "127.0.0.1:0", Some(&db)).await;
    for (user, roles) in [
        ("alice", &["admin", "user"][..]),
        ("bob", &["user"]),
        ("mallory", &["user"]),
        ("carol", &["user"]),
    ] {
        app.add_user(user, &format!("{user}-demo-pass"), roles, false)
            .await;
    }
    let api = Upstream::start();
    let (token_port, api_port) = (app.addr.port(), api.addr.port());
    let store = app.store.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        // A small bound on the filter's set, so the flood below overflows it.
        let envoy = start_envoy_with(token_port, api_port, &config_with(None, Some(20)));
        eventually("a first good poll", || polls(&envoy) >= 1);
        let (alice, _) = access(&envoy, "alice");
        let (bob, _) = access(&envoy, "bob");

        // mallory, a plain user, loops refresh + revoke through the edge, as fast as she
        // can: every refresh mints an access token, every revoke asks for an entry.
        let (_, mut refresh) = access(&envoy, "mallory");
        let mut last = String::new();
        for _ in 0..150 {
            let r = envoy.post_form(
                "/token",
                &format!("grant_type=refresh_token&refresh_token={refresh}"),
            );
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            let body = r.json();
            refresh = body["refresh_token"].as_str().unwrap().to_string();
            last = body["access_token"].as_str().unwrap().to_string();
            assert_eq!(envoy.post_form("/revoke", &format!("token={last}")).status, 200);
        }
        // carol revokes 12 tokens of hers: with mallory's, more token entries than the
        // filter holds.
        let (_, mut refresh) = access(&envoy, "carol");
        for _ in 0..12 {
            let body = envoy
                .post_form(
                    "/token",
                    &format!("grant_type=refresh_token&refresh_token={refresh}"),
                )
                .json();
            refresh = body["refresh_token"].as_str().unwrap().to_string();
            let token = body["access_token"].as_str().unwrap();
            assert_eq!(envoy.post_form("/revoke", &format!("token={token}")).status, 200);
        }
        let failed_before = envoy.counters()["gatehouse.revocation.poll_failed"];

        // Then an admin disables bob: refused by the second poll after it, as always.
        assert_eq!(me(&envoy, &bob).status, 200);
        let r = admin(&envoy, &alice, "/admin/users/bob/disable");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let (since, polled) = (Instant::now(), polls(&envoy));
        let took = refused_within_polls(&envoy, &bob, since, polled, 2);
        // mallory's last token is refused (her subject entry covers it); alice still passes.
        assert_eq!(me(&envoy, &last).status, 401);
        assert_eq!(me(&envoy, &alice).status, 200);
        let c = envoy.counters_when(|c| c.get("gatehouse.revocation.dropped").copied().unwrap_or(0) >= 1);
        assert!(
            c["gatehouse.revocation.dropped"] >= 1,
            "the bound was reached: {c:?}"
        );
        assert_eq!(
            c["gatehouse.revocation.poll_failed"], failed_before,
            "no page was refused: {c:?}"
        );
        took
    })
    .await
    .unwrap();
    // The service held mallory to her bound: 16 token entries and one subject entry.
    let page = store
        .revocations_since(None, None, gatehouse_token::clock::unix_now())
        .await
        .unwrap();
    let entries = serde_json::to_value(&page.entries).unwrap();
    let subjects: Vec<_> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["sub"].is_string())
        .collect();
    assert!(subjects.iter().any(|e| e["sub"] == "mallory") && subjects.iter().any(|e| e["sub"] == "bob"));
    assert!(page.entries.len() <= 2 * 16 + 2, "{} entries", page.entries.len());
    println!("a disable through a flood of 162 revocations: refused after {outcome:?}");
}
