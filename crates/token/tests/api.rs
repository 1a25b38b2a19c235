//! The HTTP API against a real SQLite file, over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use gatehouse::decision::{decide, Decision, Outcome};
use serde_json::json;
use support::{json, Options, TestApp, ISSUER, SECRET};

const ALICE_PW: &str = "alice-demo-pass";

async fn demo_app(options: Options) -> TestApp {
    let app = TestApp::spawn(options).await;
    app.add_user("alice", ALICE_PW, &["admin", "user"], false).await;
    app.add_user("bob", "bob-demo-pass", &["user"], false).await;
    app.add_user("carol", "carol-demo-pass", &["user"], true).await;
    app
}

#[tokio::test]
async fn a_login_issues_tokens_the_filter_accepts() {
    let app = demo_app(Options::default()).await;
    let r = app.login("alice", ALICE_PW).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body = json(r).await;
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 1800);
    assert_eq!(body["scope"], "admin user");
    assert!(body["refresh_token"].as_str().unwrap().len() >= 43);
    let token = body["access_token"].as_str().unwrap();

    // The filter, with its defaults for this issuer and audience, allows it and
    // forwards the identity: the two crates are in step.
    let config = json!({"issuer": ISSUER, "audiences": ["api"], "algorithms": ["HS256"],
                        "hmac_secret": {"env": "SECRET_KEY"}, "max_token_lifetime_seconds": 1800});
    let policy = gatehouse::config::compile(config.to_string().as_bytes(), |_| Some(SECRET.into())).unwrap();
    let headers = vec![(
        "authorization".to_string(),
        format!("Bearer {token}").into_bytes(),
    )];
    let now = gatehouse_token::clock::unix_now();
    match decide(
        &policy,
        &mut gatehouse::decision::Runtime::new(&policy),
        b"GET",
        b"/users/me",
        &headers,
        now,
    ) {
        Decision::Allow { outcome, set, .. } => {
            assert_eq!(outcome, Outcome::Allowed);
            assert_eq!(
                set,
                vec![
                    ("x-auth-sub", "alice".to_string()),
                    ("x-auth-roles", "admin,user".to_string())
                ]
            );
        }
        Decision::Deny(d, _) => panic!("the filter refused a fresh token: {d:?}"),
    }

    // Two tokens are never alike: each has its own jti.
    let again = json(app.login("alice", ALICE_PW).await).await;
    assert_ne!(again["access_token"], body["access_token"]);
}

#[tokio::test]
async fn unknown_user_wrong_password_and_disabled_user_get_the_same_answer() {
    let app = demo_app(Options::default()).await;
    let mut answers = Vec::new();
    for (user, pw) in [
        ("mallory", "whatever-pass"),
        ("alice", "wrong-password"),
        ("carol", "carol-demo-pass"),
    ] {
        let r = app.login(user, pw).await;
        let status = r.status();
        let mut headers: Vec<(String, String)> = r
            .headers()
            .iter()
            .filter(|(k, _)| *k != "date")
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        headers.sort();
        answers.push((status, headers, r.text().await.unwrap()));
    }
    assert_eq!(answers[0].0, 401);
    assert!(
        answers[0]
            .1
            .contains(&("www-authenticate".into(), "Bearer".into())),
        "{:?}",
        answers[0].1
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&answers[0].2).unwrap(),
        json!({"error": "invalid_grant", "error_description": "Incorrect username or password"})
    );
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[1], answers[2]);
}

#[tokio::test]
async fn unknown_user_and_wrong_password_take_the_same_time() {
    // One limit per username would trip; lift it for the timing run.
    let app = demo_app(Options {
        max_failures_per_user: 1000,
        ..Options::default()
    })
    .await;
    app.login("alice", "warm-up-pass").await;
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for i in 0..15 {
        // Interleaved, so drift in machine load hits both alike.
        let t = Instant::now();
        assert_eq!(
            app.login(&format!("nobody{i}"), "some-password").await.status(),
            401
        );
        unknown.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(app.login("alice", "some-password").await.status(), 401);
        wrong.push(t.elapsed());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64()
    };
    let (u, w) = (median(&mut unknown), median(&mut wrong));
    let ratio = u / w;
    // An unknown user skipping the hash would be ~100x faster; noise is far smaller.
    assert!(
        (0.7..1.43).contains(&ratio),
        "unknown {u:.4}s vs wrong password {w:.4}s (ratio {ratio:.2})"
    );
}

#[tokio::test]
async fn malformed_requests_are_refused_before_any_hashing() {
    let app = demo_app(Options::default()).await;
    let long_pw = "x".repeat(1025);
    let cases: Vec<(&str, Option<&str>, String, u16, &str)> = vec![
        (
            "",
            None,
            "grant_type=password&username=alice&password=x".into(),
            400,
            "invalid_request",
        ),
        (
            "application/json",
            None,
            r#"{"grant_type":"password","username":"alice","password":"x"}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "text/plain",
            None,
            "grant_type=password&username=alice&password=x".into(),
            400,
            "invalid_request",
        ),
        (
            "application/x-www-form-urlencoded",
            Some("username=alice&password=x"),
            "grant_type=password".into(),
            400,
            "invalid_request",
        ),
        (
            "application/x-www-form-urlencoded",
            None,
            "".into(),
            400,
            "invalid_request",
        ),
        (
            "application/x-www-form-urlencoded",
            None,
            "username=alice&password=x".into(),
            400,
            "invalid_request",
        ),
        (
            "application/x-www-form-urlencoded",
            None,
            "grant_type=client_credentials".into(),
            400,
            "unsupported_grant_type",
        ),
        (
            "application/x-www-form-urlencoded",
            None,
            "grant_type=authorization_code&code=x".into(),
            400,
            "unsupported_grant_type",
        ),
        (
            "application/x-www-form-urlencoded",
            None,
            "grant_type=password&password=x".into(),
            400,
            "invalid_request",
        ),
        (
            "application/x-www-form-urlencoded",
            None,
            "grant_type=password&username=alice".into(),
            400,
            "invalid_request",
        ),
        (
            "application/x-www-form-urlencoded",
            None,
            "grant_type=password&username=alice&password=".into(),
            400,
            "invalid_request",
        ),
        (
            "application/x-www-form-urlencoded",
            None,
            "grant_type=password&username=alice&username=bob&password=x".into(),
            400,
            "invalid_request",
        ),
        (
            "application/x-www-form-urlencoded",
            None,
            "grant_type=password&grant_type=password&username=alice&password=x".into(),
            400,
            "invalid_request",
        ),
        (
            "application/x-www-form-urlencoded",
            None,
            format!("grant_type=password&username=alice&password={long_pw}"),
            400,
            "invalid_request",
        ),
        (
            "application/x-www-form-urlencoded",
            None,
            format!("grant_type=password&username={}&password=x", "a".repeat(300)),
            400,
            "invalid_request",
        ),
        (
            "application/x-www-form-urlencoded",
            None,
            "grant_type=password&username=alice&password=x%00y".into(),
            400,
            "invalid_request",
        ),
        (
            "application/x-www-form-urlencoded",
            None,
            "grant_type=password&username=alice%00&password=x".into(),
            400,
            "invalid_request",
        ),
        (
            "application/x-www-form-urlencoded",
            None,
            "grant_type=password&username=alice&password=%ff%fe".into(),
            400,
            "invalid_request",
        ),
        (
            "application/x-www-form-urlencoded",
            None,
            format!(
                "grant_type=password&username=alice&password=x&pad={}",
                "y".repeat(5000)
            ),
            413,
            "invalid_request",
        ),
        (
            "application/x-www-form-urlencoded",
            None,
            "grant_type=refresh_token".into(),
            400,
            "invalid_request",
        ),
        (
            "application/x-www-form-urlencoded",
            None,
            "grant_type=refresh_token&refresh_token=nope".into(),
            400,
            "invalid_grant",
        ),
    ];
    let hashes_before = app.metric("gatehouse_token_hash_seconds_count").await;
    for (content_type, query, body, status, error) in cases {
        let mut req = app.client.post(app.url(&format!(
            "/token{}",
            query.map(|q| format!("?{q}")).unwrap_or_default()
        )));
        if !content_type.is_empty() {
            req = req.header("content-type", content_type);
        }
        let r = req.body(body.clone()).send().await.unwrap();
        let label = format!("{content_type} {query:?} {}", &body[..body.len().min(80)]);
        assert_eq!(r.status(), status, "{label}");
        assert_eq!(r.headers()["cache-control"], "no-store", "{label}");
        let v = json(r).await;
        assert_eq!(v["error"], error, "{label}");
        assert!(v["error_description"].is_string(), "{label}");
    }
    assert_eq!(
        app.metric("gatehouse_token_hash_seconds_count").await,
        hashes_before,
        "something was hashed"
    );
    assert_eq!(
        app.client.get(app.url("/token")).send().await.unwrap().status(),
        405
    );
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let app = demo_app(Options::default()).await;
    let first = json(app.login("bob", "bob-demo-pass").await).await;
    let r1 = first["refresh_token"].as_str().unwrap().to_string();

    let second = app
        .token(&format!("grant_type=refresh_token&refresh_token={r1}"))
        .await;
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["cache-control"], "no-store");
    let second = json(second).await;
    let r2 = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r2, "the refresh token rotates");
    assert_eq!(second["scope"], "user");

    // r1 again: reuse. The answer is invalid_grant and r2 dies with it.
    let reuse = app
        .token(&format!("grant_type=refresh_token&refresh_token={r1}"))
        .await;
    assert_eq!(reuse.status(), 400);
    assert_eq!(json(reuse).await["error"], "invalid_grant");
    let after = app
        .token(&format!("grant_type=refresh_token&refresh_token={r2}"))
        .await;
    assert_eq!(after.status(), 400, "the family of a reused token is revoked");
    let states = app.store.refresh_states("bob").await.unwrap();
    assert_eq!(states.len(), 2);
    assert!(states.iter().all(|(_, _, revoked)| *revoked), "{states:?}");
    assert_eq!(
        app.metric("gatehouse_token_refresh_reuse_detected_total").await,
        1.0
    );

    // A new login starts a new family that works.
    let fresh = json(app.login("bob", "bob-demo-pass").await).await;
    let r3 = fresh["refresh_token"].as_str().unwrap();
    assert_eq!(
        app.token(&format!("grant_type=refresh_token&refresh_token={r3}"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn concurrent_use_of_one_refresh_token_rotates_once() {
    let app = demo_app(Options::default()).await;
    let r = json(app.login("bob", "bob-demo-pass").await).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let form = format!("grant_type=refresh_token&refresh_token={r}");
    let (a, b) = tokio::join!(app.token(&form), app.token(&form));
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 400]);
}

#[tokio::test]
async fn a_disabled_user_cannot_refresh() {
    let app = demo_app(Options::default()).await;
    let r = json(app.login("bob", "bob-demo-pass").await).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    app.store.set_disabled("bob", true, 1, 1800).await.unwrap();
    let refused = app
        .token(&format!("grant_type=refresh_token&refresh_token={r}"))
        .await;
    assert_eq!(refused.status(), 400);
    assert_eq!(json(refused).await["error"], "invalid_grant");
    app.store.set_disabled("bob", false, 2, 1800).await.unwrap();
    let still = app
        .token(&format!("grant_type=refresh_token&refresh_token={r}"))
        .await;
    assert_eq!(
        still.status(),
        400,
        "re-enabling does not revive revoked refresh tokens"
    );
}

#[tokio::test]
async fn scope_narrows_the_roles_and_refresh_keeps_it() {
    let app = demo_app(Options::default()).await;
    let body = json(
        app.token(&format!(
            "grant_type=password&username=alice&password={ALICE_PW}&scope=user+root"
        ))
        .await,
    )
    .await;
    assert_eq!(body["scope"], "user");
    let r = body["refresh_token"].as_str().unwrap();
    let refreshed = json(
        app.token(&format!("grant_type=refresh_token&refresh_token={r}"))
            .await,
    )
    .await;
    assert_eq!(refreshed["scope"], "user");
    let widen = app
        .token(&format!(
            "grant_type=refresh_token&refresh_token={}&scope=admin",
            refreshed["refresh_token"].as_str().unwrap()
        ))
        .await;
    assert_eq!(widen.status(), 400);
}

#[tokio::test]
async fn usernames_are_canonical_at_login() {
    let app = demo_app(Options::default()).await;
    for spelling in ["ALICE", "Alice", "%EF%BD%81%EF%BD%8C%EF%BD%89%EF%BD%83%EF%BD%85"] {
        assert_eq!(app.login(spelling, ALICE_PW).await.status(), 200, "{spelling}");
    }
    // Cyrillic а is not a Latin a: no login, the generic answer.
    assert_eq!(app.login("%D0%B0lice", ALICE_PW).await.status(), 401);
}

#[tokio::test]
async fn failed_logins_are_limited_per_user_and_per_address() {
    let app = demo_app(Options {
        max_failures_per_user: 3,
        max_failures_per_address: 6,
        ..Options::default()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(app.login("bob", "wrong-password").await.status(), 401);
    }
    let limited = app.login("bob", "bob-demo-pass").await;
    assert_eq!(limited.status(), 429, "even the right password waits");
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=100).contains(&retry), "{retry}");
    assert_eq!(json(limited).await["error"], "temporarily_unavailable");
    assert_eq!(
        app.login("alice", ALICE_PW).await.status(),
        200,
        "other users are not affected"
    );
    // Unknown usernames count the same way.
    for _ in 0..3 {
        app.login("ghost", "x-password").await;
    }
    assert_eq!(app.login("ghost", "x-password").await.status(), 429);
    // The address has now failed 6 times: every username is refused from it.
    assert_eq!(app.login("alice", ALICE_PW).await.status(), 429);
    assert!(app.metric("gatehouse_token_logins_rate_limited_total").await >= 3.0);
}

#[tokio::test]
async fn the_address_comes_from_x_forwarded_for_only_when_trusted() {
    for trusted in [false, true] {
        let app = demo_app(Options {
            max_failures_per_user: 1000,
            max_failures_per_address: 2,
            trust_forwarded_for: trusted,
            ..Options::default()
        })
        .await;
        let login = |xff: String| {
            let app = &app;
            async move {
                app.client
                    .post(app.url("/token"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("x-forwarded-for", xff)
                    .body("grant_type=password&username=bob&password=wrong-password")
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        };
        // A client rotating the left part of X-Forwarded-For; the proxy appended the last.
        let statuses = [
            login("1.1.1.1, 10.0.0.7".into()).await,
            login("2.2.2.2, 10.0.0.7".into()).await,
            login("3.3.3.3, 10.0.0.7".into()).await,
            login("10.0.0.8".into()).await,
        ];
        if trusted {
            assert_eq!(
                statuses.map(|s| s.as_u16()),
                [401, 401, 429, 401],
                "keyed on the proxy's entry"
            );
        } else {
            assert_eq!(
                statuses.map(|s| s.as_u16()),
                [401, 401, 429, 429],
                "keyed on the TCP peer"
            );
        }
    }
}

#[tokio::test]
async fn addresses_of_one_ipv6_64_share_one_failure_limit() {
    let app = demo_app(Options {
        max_failures_per_user: 1000,
        max_failures_per_address: 2,
        trust_forwarded_for: true,
        ..Options::default()
    })
    .await;
    let login = |xff: &'static str| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-forwarded-for", xff)
                .body("grant_type=password&username=bob&password=wrong-password")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // A host that picks a fresh address of its /64 for every attempt.
    let statuses = [
        login("2001:db8:7:1::1").await,
        login("2001:db8:7:1::2").await,
        login("2001:db8:7:1:ffff:ffff:ffff:ffff").await,
        login("2001:db8:7:2::1").await,
    ];
    assert_eq!(
        statuses,
        [401, 401, 429, 401],
        "one /64, one allowance; the next /64 its own"
    );
}

#[tokio::test]
async fn a_weak_hash_is_upgraded_at_the_next_login() {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let app = TestApp::spawn(Options::default()).await;
    let weak = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(8192, 1, 1, None).unwrap(),
    );
    let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
    let phc = weak.hash_password(b"old-weak-pass", &salt).unwrap().to_string();
    app.store
        .create_user(
            gatehouse_token::store::NewUser {
                username: "dave",
                password_hash: &phc,
                roles: &[],
                disabled: false,
            },
            0,
        )
        .await
        .unwrap();
    assert_eq!(app.login("dave", "old-weak-pass").await.status(), 200);
    let mut upgraded = String::new();
    for _ in 0..50 {
        upgraded = app.store.credentials("dave").await.unwrap().unwrap().1;
        if upgraded != phc {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        upgraded.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{upgraded}"
    );
    assert_eq!(app.login("dave", "old-weak-pass").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_every_hashing_slot_is_held_logins_get_503_and_nothing_else_waits() {
    let app = demo_app(Options {
        max_concurrent_hashes: 2,
        hash_queue_timeout: Duration::from_millis(50),
        max_failures_per_user: 10_000,
        ..Options::default()
    })
    .await;
    let refresh = json(app.login("bob", "bob-demo-pass").await).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let hashes = app.hashes().await;

    // The test takes both hashing slots: a login can only queue, then be turned away.
    let held = (
        app.state.hasher.slot().await.unwrap(),
        app.state.hasher.slot().await.unwrap(),
    );
    let logins: Vec<_> = (0..6)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url("/token"));
            tokio::spawn(async move {
                client
                    .post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("grant_type=password&username=bob&password=bob-demo-pass")
                    .send()
                    .await
                    .unwrap()
            })
        })
        .collect();
    for login in logins {
        let r = login.await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(json(r).await["error"], "temporarily_unavailable");
    }
    // Meanwhile every endpoint that hashes nothing answers at once: none of them queues
    // behind the slots (a queued one would time out as the logins did, or hang here).
    for path in ["/healthz", "/readyz", "/.well-known/jwks.json", "/metrics"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} while every slot is held");
    }
    let r = app
        .token(&format!("grant_type=refresh_token&refresh_token={refresh}"))
        .await;
    assert_eq!(r.status(), 200, "a refresh needs no hashing slot");
    assert_eq!(
        app.hashes().await,
        hashes,
        "nothing hashed while the slots were held"
    );

    drop(held);
    assert_eq!(app.login("bob", "bob-demo-pass").await.status(), 200);
    assert_eq!(app.metric("gatehouse_token_logins_busy_total").await, 6.0);
}

#[tokio::test]
async fn operations_endpoints() {
    let app = demo_app(Options::default()).await;
    assert_eq!(app.get_json("/healthz").await["status"], "ok");
    assert_eq!(app.get_json("/readyz").await["status"], "ready");
    app.login("alice", ALICE_PW).await;
    app.login("alice", "nope-nope").await;
    assert_eq!(app.metric("gatehouse_token_logins_ok_total").await, 1.0);
    assert_eq!(app.metric("gatehouse_token_logins_failed_total").await, 1.0);
    assert_eq!(app.metric("gatehouse_token_hash_seconds_count").await, 2.0);
    let missing = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    app.store.close().await;
    assert_eq!(
        app.client.get(app.url("/readyz")).send().await.unwrap().status(),
        503
    );
}
