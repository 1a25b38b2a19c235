//! Keys without shared secrets, end to end: the filter in the real Envoy fetches the
//! token service's JWKS through a cluster; rotation, an unreachable service at start,
//! and a service that goes away.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use gatehouse_testkit::{eventually, Envoy, Upstream};
use gatehouse_token::clock::unix_now;
use gatehouse_token::signing::{generate, SigningAlg};
use serde_json::json;
use support::{Options, TestApp, ISSUER, SECRET};

fn config() -> serde_json::Value {
    json!({
        "issuer": ISSUER, "audiences": ["api"], "algorithms": ["EdDSA", "ES256"],
        // c0 is the first route's cluster: the token service.
        "jwks": {"remote": {"cluster": "c0", "refresh_seconds": 5, "timeout_ms": 1000, "min_refetch_seconds": 2}},
        "rules": [
            {"path": "/token", "methods": ["POST"], "require": "public"},
            {"prefix": "/.well-known", "require": "public"}
        ]
    })
}

fn login(envoy: &Envoy) -> String {
    let r = envoy.post_form(
        "/token",
        "grant_type=password&username=alice&password=alice-demo-pass",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["access_token"].as_str().unwrap().to_string()
}

fn me(envoy: &Envoy, token: &str) -> gatehouse_testkit::Response {
    envoy.call(
        "GET",
        "/users/me",
        &[("Authorization", &format!("Bearer {token}"))],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asymmetric_keys_from_the_token_service_rotation_and_outages() {
    // The token service's address is fixed before it runs, so Envoy can start first.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("users.db");
    let api = Upstream::start();
    let (token_port, api_port) = (addr.port(), api.addr.port());

    // 1. Envoy starts while the token service is down: 503 with Retry-After, not 401.
    let envoy = tokio::task::spawn_blocking(move || {
        Envoy::start_routes(
            &config(),
            None,
            &[
                ("/token", token_port),
                ("/.well-known", token_port),
                ("/", api_port),
            ],
        )
    })
    .await
    .unwrap();
    let envoy = std::sync::Arc::new(envoy);
    let e = envoy.clone();
    let early = tokio::task::spawn_blocking(move || me(&e, "eyJhbGciOiJFZERTQSIsImtpZCI6IngifQ.e30.AAAA"))
        .await
        .unwrap();
    assert_eq!(early.status, 503, "{}", String::from_utf8_lossy(&early.body));
    assert!(early.header("retry-after").is_some());

    // 2. The service comes up: the filter recovers by itself, without a restart.
    let mut app = TestApp::spawn_at(
        Options {
            signing_alg: SigningAlg::EdDsa,
            ..Options::default()
        },
        &addr.to_string(),
        Some(&db),
    )
    .await;
    app.add_user("alice", "alice-demo-pass", &["admin"], false).await;
    let e = envoy.clone();
    let old = tokio::task::spawn_blocking(move || {
        let token = login(&e);
        eventually("the first JWKS fetch", || me(&e, &token).status == 200);
        token
    })
    .await
    .unwrap();
    assert_eq!(api.last().all("x-auth-sub"), ["alice"]);

    // 3. Rotation while Envoy runs: a token with the new kid is accepted at once (the
    //    request waits for an early refetch), and the old one keeps working.
    let secret = gatehouse_token::secret::parse(Some(SECRET)).unwrap();
    app.store
        .rotate_signing_key(&generate(SigningAlg::EdDsa, &secret).unwrap(), unix_now())
        .await
        .unwrap();
    app.state.issuer.load(&app.store, unix_now()).await.unwrap();
    let e = envoy.clone();
    let old_token = old.clone();
    let spare = tokio::task::spawn_blocking(move || {
        let new = login(&e);
        // Issued now, presented only after the service is gone (never cached).
        let spare = login(&e);
        let r = me(&e, &new);
        assert_eq!(
            r.status,
            200,
            "a new kid must be fetched, not refused: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            me(&e, &old_token).status,
            200,
            "old tokens stay valid until they expire"
        );
        // A random kid does not hammer the token service: refetches are spaced out.
        for _ in 0..5 {
            let forged = "eyJhbGciOiJFZERTQSIsImtpZCI6InJhbmRvbSJ9.e30.AAAA";
            assert_eq!(me(&e, forged).status, 401);
        }
        let c = e.counters_when(|c| c.get("gatehouse.jwks.refetch_unknown_kid").copied().unwrap_or(0) >= 1);
        assert!(c["gatehouse.jwks.refetch_unknown_kid"] <= 2, "{c:?}");
        spare
    })
    .await
    .unwrap();

    // 4. The service goes away: the last good keys keep serving, failures are counted.
    app.stop();
    drop(app);
    let e = envoy.clone();
    tokio::task::spawn_blocking(move || {
        eventually("a failed refresh", || {
            e.counters()
                .get("gatehouse.jwks.fetch_failed")
                .copied()
                .unwrap_or(0)
                >= 1
        });
        assert_eq!(me(&e, &old).status, 200);
        assert_eq!(
            me(&e, &spare).status,
            200,
            "a token first seen now verifies with the last good keys"
        );
    })
    .await
    .unwrap();
}
