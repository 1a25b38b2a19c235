//! Log in through the real Envoy with the filter, then use the token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use gatehouse_testkit::{Envoy, Upstream};
use serde_json::json;
use support::{Options, TestApp, ISSUER, SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_through_the_proxy_and_use_the_token() {
    let app = TestApp::spawn(Options::default()).await;
    app.add_user("alice", "alice-demo-pass", &["admin", "user"], false)
        .await;
    app.add_user("bob", "bob-demo-pass", &["user"], false).await;
    let api = Upstream::start();
    let config = json!({
        "issuer": ISSUER, "audiences": ["api"], "algorithms": ["HS256"],
        "hmac_secret": {"env": "SECRET_KEY"},
        "rules": [
            {"path": "/token", "methods": ["POST"], "require": "public"},
            {"path": "/users/me", "methods": ["GET"], "require": "authenticated"},
            {"path": "/users/{id}", "methods": ["DELETE"], "require": {"any_of": ["admin"]}}
        ]
    });
    let token_port = app.addr.port();
    let envoy = tokio::task::spawn_blocking(move || {
        let envoy = Envoy::start_routes(
            &config,
            Some(SECRET),
            &[("/token", token_port), ("/", api.addr.port())],
        );
        (envoy, api)
    })
    .await
    .unwrap();

    let (alice, bob, bad, api_seen) = tokio::task::spawn_blocking(move || {
        let (envoy, api) = envoy;
        let login = |user: &str, pw: &str| {
            envoy.post_form(
                "/token",
                &format!("grant_type=password&username={user}&password={pw}"),
            )
        };
        let alice = login("alice", "alice-demo-pass");
        let bob = login("bob", "bob-demo-pass");
        let bad = login("bob", "wrong-password");
        let alice_token = alice.json()["access_token"].as_str().unwrap().to_string();
        let bob_token = bob.json()["access_token"].as_str().unwrap().to_string();

        let me = envoy.call(
            "GET",
            "/users/me",
            &[("Authorization", &format!("Bearer {alice_token}"))],
        );
        assert_eq!(me.status, 200);
        let seen = api.last();
        assert_eq!(seen.all("x-auth-sub"), ["alice"]);
        assert_eq!(seen.all("x-auth-roles"), ["admin,user"]);

        let forbidden = envoy.call(
            "DELETE",
            "/users/3",
            &[("Authorization", &format!("Bearer {bob_token}"))],
        );
        assert_eq!(forbidden.status, 403);
        let allowed = envoy.call(
            "DELETE",
            "/users/3",
            &[("Authorization", &format!("Bearer {alice_token}"))],
        );
        assert_eq!(allowed.status, 200);
        let anonymous = envoy.call("GET", "/users/me", &[]);
        assert_eq!(anonymous.status, 401);
        (alice, bob, bad, api.count())
    })
    .await
    .unwrap();
    assert_eq!(alice.status, 200);
    assert_eq!(bob.status, 200);
    assert_eq!(bad.status, 401);
    assert_eq!(bad.json()["error"], "invalid_grant");
    assert_eq!(api_seen, 2, "only the two allowed calls reached the api");
}
