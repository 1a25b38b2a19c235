//! Crashes behind the filter: under the running Envoy with the top-level `envoy.yaml`,
//! the token service and then the demo API are killed with SIGKILL. The filter's
//! answers stay what they were (valid tokens pass, forged, missing and under-privileged
//! ones are refused), only the dead upstream's own routes fail, with Envoy's 503, and
//! Envoy and its Wasm VM stay up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_testkit::{demo_claims, eventually, mint_with, Answer, DemoTopology};

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The filter's answers that must not change whoever is down behind it.
fn assert_filter_answers(demo: &DemoTopology, forged: &str, bob: &str, when: &str) {
    let answer = |method: &str, path: &str, token: Option<&str>| {
        let auth = token.map(bearer);
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        demo.call(method, path, &headers).answer().to_string()
    };
    assert_eq!(
        answer("GET", "/users/me", Some(forged)),
        "filter 401 signature",
        "{when}"
    );
    assert_eq!(
        answer("GET", "/users/me", None),
        "filter 401 missing_token",
        "{when}"
    );
    assert_eq!(
        answer("DELETE", "/users/42", Some(bob)),
        "filter 403 forbidden",
        "{when}"
    );
    assert_eq!(
        answer("GET", "/users/me", Some("not.a.token")),
        "filter 401 malformed",
        "{when}"
    );
}

#[test]
fn the_filter_keeps_its_answers_when_the_token_service_and_then_the_api_die() {
    let mut demo = DemoTopology::start();
    let alice = demo.access_token("alice");
    let bob = demo.access_token("bob");
    let forged = mint_with(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &demo_claims("mallory", &["admin"]),
        b"not the demo secret, 32 bytes ..",
    );
    let me = |demo: &DemoTopology, token: &str| {
        demo.call("GET", "/users/me", &[("Authorization", &bearer(token))])
            .answer()
            .to_string()
    };
    assert_eq!(
        me(&demo, &alice),
        "api 200 GET /users/me sub=alice roles=admin,user"
    );
    assert_filter_answers(&demo, &forged, &bob, "all up");

    // 1. The token service dies: HS256 tokens still verify at the edge, the revocation
    //    feed fails and the last set is kept (the demo keeps serving), logins get Envoy's 503.
    demo.kill_token_service();
    let failed_before = demo
        .envoy
        .counters()
        .get("gatehouse.revocation.poll_failed")
        .copied()
        .unwrap_or(0);
    eventually("a failed revocation poll", || {
        demo.envoy
            .counters()
            .get("gatehouse.revocation.poll_failed")
            .copied()
            .unwrap_or(0)
            > failed_before
    });
    assert_eq!(
        me(&demo, &alice),
        "api 200 GET /users/me sub=alice roles=admin,user"
    );
    assert_filter_answers(&demo, &forged, &bob, "token service down");
    let login = demo.login("alice", "alice-demo-pass");
    assert_eq!(login.status, 503, "{}", String::from_utf8_lossy(&login.body));

    // 2. The API dies too: the filter still refuses what it refused; a valid token now
    //    gets Envoy's 503 for the dead upstream, never a filter answer.
    demo.kill_api();
    let r = demo.call("GET", "/users/me", &[("Authorization", &bearer(&alice))]);
    assert_eq!(r.status(), 503, "{}", demo.logs());
    assert!(!matches!(r.answer(), Answer::Filter { .. }), "{}", r.answer());
    assert_filter_answers(&demo, &forged, &bob, "token service and API down");

    // Envoy (and its Wasm VM) are still up.
    assert_eq!(demo.envoy.admin_get("/ready").status, 200);
    assert!(
        demo.envoy.log().lines().all(|l| !l.contains("panicked")),
        "{}",
        demo.envoy.log()
    );
}
