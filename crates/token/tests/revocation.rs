//! Revocation: `/revoke` (RFC 7009), the admin API, and the feed the filter polls,
//! against a real SQLite file over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use base64ct::{Base64UrlUnpadded, Encoding};
use gatehouse_token::clock::unix_now;
use gatehouse_token::signing::{generate, SigningAlg};
use jwt_compact::alg::{Hs256, Hs256Key};
use jwt_compact::{AlgorithmExt, Claims, Header};
use serde_json::{json, Value};
use support::{json, Options, TestApp, SECRET};

async fn demo_app(options: Options) -> TestApp {
    let app = TestApp::spawn(options).await;
    app.add_user("alice", "alice-demo-pass", &["admin", "user"], false)
        .await;
    app.add_user("bob", "bob-demo-pass", &["user"], false).await;
    app
}

/// A login's access and refresh tokens.
async fn tokens(app: &TestApp, user: &str) -> (String, String) {
    let r = app.login(user, &format!("{user}-demo-pass")).await;
    assert_eq!(r.status(), 200, "login of {user}");
    let body = json(r).await;
    (
        body["access_token"].as_str().unwrap().to_string(),
        body["refresh_token"].as_str().unwrap().to_string(),
    )
}

/// The claims of a token, unverified (the test trusts its own service).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&Base64UrlUnpadded::decode_vec(payload).unwrap()).unwrap()
}

async fn refresh(app: &TestApp, refresh_token: &str) -> reqwest::Response {
    app.token(&format!("grant_type=refresh_token&refresh_token={refresh_token}"))
        .await
}

/// POST to the admin API with an optional bearer token.
async fn admin(app: &TestApp, path: &str, bearer: Option<&str>) -> reqwest::Response {
    let mut req = app.client.post(app.url(path));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn revoke(app: &TestApp, form: &str) -> reqwest::Response {
    app.post_form("/revoke", form).await
}

/// The feed's entries for `sub`.
fn sub_entries<'v>(feed: &'v Value, sub: &str) -> Vec<&'v Value> {
    feed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["sub"] == sub)
        .collect()
}

#[tokio::test]
async fn disabling_a_user_through_the_admin_api_locks_them_out_and_only_them() {
    let app = demo_app(Options::default()).await;
    let (alice, alice_refresh) = tokens(&app, "alice").await;
    let (bob, bob_refresh) = tokens(&app, "bob").await;
    let bob_claims = claims(&bob);

    let r = admin(&app, "/admin/users/BOB/disable", Some(&alice)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await, json!({"username": "bob", "disabled": true}));

    let login = app.login("bob", "bob-demo-pass").await;
    assert_eq!(login.status(), 401, "a disabled user cannot log in");
    assert_eq!(json(login).await["error"], "invalid_grant");
    let r = refresh(&app, &bob_refresh).await;
    assert_eq!(r.status(), 400);
    assert_eq!(json(r).await["error"], "invalid_grant");

    let feed = app.get_json("/revocations").await;
    assert_eq!(feed["reset"], true);
    let bobs = sub_entries(&feed, "bob");
    assert_eq!(bobs.len(), 1, "{feed}");
    let iat_before = bobs[0]["iat_before"].as_i64().unwrap();
    assert!(iat_before > bob_claims["iat"].as_i64().unwrap(), "{feed}");
    assert!(
        bobs[0]["until"].as_i64().unwrap() >= bob_claims["exp"].as_i64().unwrap(),
        "the entry outlives every token it covers: {feed}"
    );
    assert_eq!(bobs[0].as_object().unwrap().len(), 3, "{feed}");

    // Alice is not touched.
    assert!(sub_entries(&feed, "alice").is_empty(), "{feed}");
    assert_eq!(refresh(&app, &alice_refresh).await.status(), 200);
    assert_eq!(app.login("alice", "alice-demo-pass").await.status(), 200);

    let r = admin(&app, "/admin/users/bob/enable", Some(&alice)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await, json!({"username": "bob", "disabled": false}));
    assert_eq!(app.login("bob", "bob-demo-pass").await.status(), 200);
    assert_eq!(
        refresh(&app, &bob_refresh).await.status(),
        400,
        "enabling revives no old token"
    );
    let feed = app.get_json("/revocations").await;
    assert_eq!(
        sub_entries(&feed, "bob").len(),
        1,
        "old tokens stay revoked: {feed}"
    );

    for (action, n) in [("disable", 1.0), ("enable", 1.0)] {
        let name = format!("gatehouse_token_admin_actions_total{{action=\"{action}\"}}");
        assert_eq!(app.metric(&name).await, n, "{name}");
    }
    assert_eq!(
        app.metric("gatehouse_token_revocations_recorded_total{kind=\"sub\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_refresh_token_that_survived_a_disable_is_refused() {
    let app = demo_app(Options::default()).await;
    let now = unix_now();
    app.store.set_disabled("bob", true, now, 1800).await.unwrap();
    // As if a token had been stored after the disable (a race, a restored backup).
    let bob = app.store.user("bob").await.unwrap().unwrap();
    let raw = "a-refresh-token-that-should-not-exist-0123456789";
    app.store
        .insert_refresh(
            &gatehouse_token::issue::refresh_hash(raw),
            "family",
            bob.id,
            None,
            now,
            now + 3600,
        )
        .await
        .unwrap();
    let r = refresh(&app, raw).await;
    assert_eq!(r.status(), 400);
    assert_eq!(json(r).await["error"], "invalid_grant");
}

#[tokio::test]
async fn revoking_an_access_token_lists_its_jti_until_it_expires() {
    for alg in [SigningAlg::Hs256, SigningAlg::EdDsa, SigningAlg::Es256] {
        let app = demo_app(Options {
            signing_alg: alg,
            ..Options::default()
        })
        .await;
        let (bob, _) = tokens(&app, "bob").await;
        let c = claims(&bob);
        // The hint is only a hint: a wrong one still finds the token.
        let r = revoke(&app, &format!("token={bob}&token_type_hint=refresh_token")).await;
        assert_eq!(r.status(), 200, "{alg:?}");
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert_eq!(json(r).await, json!({}));
        let feed = app.get_json("/revocations").await;
        assert_eq!(
            feed["entries"],
            json!([{"jti": c["jti"], "until": c["exp"]}]),
            "{alg:?}"
        );

        if alg != SigningAlg::Hs256 {
            // A token of a retired key that is still published is still ours.
            let (old, _) = tokens(&app, "alice").await;
            let secret = gatehouse_token::secret::parse(Some(SECRET)).unwrap();
            app.store
                .rotate_signing_key(&generate(alg, &secret).unwrap(), unix_now())
                .await
                .unwrap();
            app.state.issuer.load(&app.store, unix_now()).await.unwrap();
            assert_eq!(revoke(&app, &format!("token={old}")).await.status(), 200);
            let feed = app.get_json("/revocations").await;
            assert_eq!(feed["entries"].as_array().unwrap().len(), 2, "{alg:?}: {feed}");
        }
        assert!(
            app.metric("gatehouse_token_revocations_recorded_total{kind=\"jti\"}")
                .await
                >= 1.0
        );
    }
}

#[tokio::test]
async fn a_token_that_is_not_ours_is_not_recorded() {
    let app = demo_app(Options::default()).await;
    let (bob, _) = tokens(&app, "bob").await;
    let c = claims(&bob);
    let forge = |secret: &str, iss: &str, aud: &str| {
        let mut claims = Claims::new(gatehouse_claims::AccessClaims {
            iss: iss.into(),
            aud: aud.into(),
            sub: "bob".into(),
            roles: vec!["user".into()],
            jti: "forged".into(),
        });
        let now = chrono::DateTime::from_timestamp(unix_now(), 0).unwrap();
        claims.issued_at = Some(now);
        claims.expiration = Some(now + chrono::Duration::seconds(600));
        let kid = jwt_compact::UntrustedToken::new(&bob)
            .unwrap()
            .header()
            .key_id
            .clone()
            .unwrap();
        Hs256
            .token(
                &Header::empty().with_key_id(kid),
                &claims,
                &Hs256Key::new(secret.as_bytes()),
            )
            .unwrap()
    };
    let other = "0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";
    let iss = c["iss"].as_str().unwrap();
    for (label, token) in [
        ("another secret", forge(other, iss, "api")),
        ("another issuer", forge(SECRET, "https://elsewhere", "api")),
        ("another audience", forge(SECRET, iss, "billing")),
        ("a tampered payload", {
            let mut parts: Vec<String> = bob.split('.').map(str::to_string).collect();
            let mut payload = claims(&bob);
            payload["sub"] = json!("alice");
            parts[1] = Base64UrlUnpadded::encode_string(payload.to_string().as_bytes());
            parts.join(".")
        }),
    ] {
        let r = revoke(&app, &format!("token={token}")).await;
        assert_eq!(r.status(), 200, "{label}");
    }
    // The control: our own secret, issuer and audience is ours.
    assert_eq!(
        revoke(&app, &format!("token={}", forge(SECRET, iss, "api")))
            .await
            .status(),
        200
    );
    let feed = app.get_json("/revocations").await;
    assert_eq!(
        feed["entries"],
        json!([{"jti": "forged", "until": feed["entries"][0]["until"]}]),
        "only the control is recorded: {feed}"
    );
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_its_family_only() {
    let app = demo_app(Options::default()).await;
    let (_, first) = tokens(&app, "bob").await;
    let rotated = json(refresh(&app, &first).await).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, other_login) = tokens(&app, "bob").await;

    // The spent first token names the family: the current one dies with it.
    let r = revoke(&app, &format!("token={first}&token_type_hint=refresh_token")).await;
    assert_eq!(r.status(), 200);
    let refused = refresh(&app, &rotated).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(json(refused).await["error"], "invalid_grant");
    assert_eq!(
        refresh(&app, &other_login).await.status(),
        200,
        "another login's family lives on"
    );
    let feed = app.get_json("/revocations").await;
    assert_eq!(feed["entries"], json!([]), "refresh tokens never reach the edge");
    assert_eq!(
        app.metric("gatehouse_token_revocations_recorded_total{kind=\"refresh_family\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn revoke_answers_200_for_any_token_and_400_without_one() {
    let app = demo_app(Options::default()).await;
    let long = "x".repeat(3000);
    let cases: &[(&str, Option<&str>, &str, u16)] = &[
        ("application/x-www-form-urlencoded", None, "token=garbage", 200),
        ("application/x-www-form-urlencoded", None, "token=a.b.c", 200),
        (
            "application/x-www-form-urlencoded",
            None,
            "token=eyJhbGciOiJub25lIn0.eyJzdWIiOiJib2IifQ.",
            200,
        ),
        (
            "application/x-www-form-urlencoded",
            None,
            &format!("token={long}"),
            200,
        ),
        (
            "application/x-www-form-urlencoded",
            None,
            "token=garbage&token_type_hint=id_token",
            200,
        ),
        (
            "application/x-www-form-urlencoded; charset=UTF-8",
            None,
            "token=garbage&token_type_hint=access_token",
            200,
        ),
        ("application/x-www-form-urlencoded", None, "", 400),
        (
            "application/x-www-form-urlencoded",
            None,
            "token_type_hint=access_token",
            400,
        ),
        ("application/x-www-form-urlencoded", None, "token=", 400),
        ("application/x-www-form-urlencoded", None, "token=a&token=b", 400),
        ("application/x-www-form-urlencoded", None, "token=%ff", 400),
        ("application/x-www-form-urlencoded", Some("token=x"), "", 400),
        ("application/json", None, r#"{"token":"x"}"#, 400),
        ("", None, "token=garbage", 400),
    ];
    for (content_type, query, body, status) in cases {
        let mut req = app.client.post(app.url(&format!(
            "/revoke{}",
            query.map(|q| format!("?{q}")).unwrap_or_default()
        )));
        if !content_type.is_empty() {
            req = req.header("content-type", *content_type);
        }
        let r = req.body(body.to_string()).send().await.unwrap();
        let label = format!("{content_type} {query:?} {}", &body[..body.len().min(60)]);
        assert_eq!(r.status(), *status, "{label}");
        assert_eq!(r.headers()["cache-control"], "no-store", "{label}");
        let v = json(r).await;
        if *status == 200 {
            assert_eq!(v, json!({}), "{label}");
        } else {
            assert_eq!(v["error"], "invalid_request", "{label}");
            assert!(v["error_description"].is_string(), "{label}");
        }
    }
    assert_eq!(app.get_json("/revocations").await["entries"], json!([]));
}

#[tokio::test]
async fn the_admin_api_needs_a_valid_unrevoked_admin_token() {
    let app = demo_app(Options::default()).await;
    app.add_user("root", "root-demo-pass", &["admin"], false).await;
    app.add_user("dave", "dave-demo-pass", &["admin"], false).await;
    let (alice, _) = tokens(&app, "alice").await;
    let (bob, _) = tokens(&app, "bob").await;
    let (root, _) = tokens(&app, "root").await;
    let (dave, _) = tokens(&app, "dave").await;
    let path = "/admin/users/bob/revoke";

    let r = admin(&app, path, None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"gatehouse\"");
    assert_eq!(json(r).await["error"], "unauthorized");

    let invalid = |r: reqwest::Response, label: &str| {
        assert_eq!(r.status(), 401, "{label}");
        let challenge = r.headers()["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with("Bearer realm=\"gatehouse\", error=\"invalid_token\""),
            "{label}: {challenge}"
        );
        assert_eq!(r.headers()["cache-control"], "no-store", "{label}");
        r
    };
    let r = invalid(admin(&app, path, Some("not-a-jwt")).await, "garbage");
    assert_eq!(json(r).await["error"], "invalid_token");

    let r = admin(&app, path, Some(&bob)).await;
    assert_eq!(r.status(), 403, "bob is no admin");
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("error=\"insufficient_scope\""));
    assert_eq!(json(r).await["error"], "insufficient_scope");

    // Demoted since the token was issued: the demotion revoked the token.
    app.store
        .set_roles("dave", &["user".to_string()], unix_now(), 1800)
        .await
        .unwrap();
    invalid(admin(&app, path, Some(&dave)).await, "demoted admin");

    for unknown in [
        "/admin/users/nobody/disable",
        "/admin/users/n%20body/enable",
        "/admin/users/nobody/revoke",
    ] {
        let r = admin(&app, unknown, Some(&alice)).await;
        assert_eq!(r.status(), 404, "{unknown}");
        assert_eq!(json(r).await["error"], "not_found", "{unknown}");
    }

    // Every token of root, revoked by alice: root's admin token stops working.
    let r = admin(&app, "/admin/users/root/revoke", Some(&alice)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        json(r).await,
        json!({"username": "root", "disabled": false, "tokens_revoked": true})
    );
    invalid(admin(&app, path, Some(&root)).await, "sub-revoked admin");

    // Alice revokes her own token: it is refused from then on.
    assert_eq!(revoke(&app, &format!("token={alice}")).await.status(), 200);
    invalid(admin(&app, path, Some(&alice)).await, "jti-revoked admin");

    // A disabled admin's fresh token is no good either.
    let (alice, _) = tokens(&app, "alice").await;
    app.add_user("ops", "ops-demo-pass", &["admin"], false).await;
    let (ops, _) = tokens(&app, "ops").await;
    app.store
        .set_disabled("ops", true, unix_now() - 10, 1800)
        .await
        .unwrap();
    invalid(admin(&app, path, Some(&ops)).await, "disabled admin");

    assert_eq!(
        admin(&app, path, Some(&alice)).await.status(),
        200,
        "a fresh admin token"
    );
    assert!(app.metric("gatehouse_token_admin_requests_refused_total").await >= 7.0);
}

#[tokio::test]
async fn an_admin_revokes_any_token_and_learns_what_it_was() {
    let app = demo_app(Options::default()).await;
    let (alice, _) = tokens(&app, "alice").await;
    let (bob, bob_refresh) = tokens(&app, "bob").await;
    let revoke_as_admin = |form: String| {
        let (app, alice) = (&app, &alice);
        async move {
            app.client
                .post(app.url("/admin/revoke"))
                .bearer_auth(alice)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .unwrap()
        }
    };
    for (form, want) in [
        (
            format!("token={bob}"),
            json!({"revoked": true, "token_type": "access_token"}),
        ),
        (
            format!("token={bob_refresh}"),
            json!({"revoked": true, "token_type": "refresh_token"}),
        ),
        ("token=garbage".to_string(), json!({"revoked": false})),
    ] {
        let r = revoke_as_admin(form).await;
        assert_eq!(r.status(), 200);
        assert_eq!(json(r).await, want);
    }
    let r = revoke_as_admin(String::new()).await;
    assert_eq!(r.status(), 400);
    assert_eq!(json(r).await["error"], "invalid_request");
    assert_eq!(refresh(&app, &bob_refresh).await.status(), 400);
    let no_token = app
        .client
        .post(app.url("/admin/revoke"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={bob}"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
}

#[tokio::test]
async fn the_feed_serves_what_changed_after_a_cursor() {
    let app = demo_app(Options::default()).await;
    let empty = app.get_json("/revocations").await;
    let feed_id = empty["feed"].as_str().unwrap().to_string();
    assert_eq!(feed_id.len(), 32);
    assert!(feed_id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        empty,
        json!({"feed": feed_id, "cursor": 0, "reset": true, "more": false, "entries": []})
    );
    let cursor = |v: &Value| v["cursor"].as_u64().unwrap();

    let (bob, _) = tokens(&app, "bob").await;
    assert_eq!(revoke(&app, &format!("token={bob}")).await.status(), 200);
    let first = cursor(&app.get_json("/revocations").await);
    let now = unix_now();
    app.store.revoke_user("alice", now, 1800).await.unwrap();

    let all = app.get_json("/revocations?since=0").await;
    assert_eq!(all["reset"], true, "a cursor without its feed is not trusted");
    let head = cursor(&all);
    assert!(0 < first && first < head, "{first} {head}");
    assert_eq!(all["entries"].as_array().unwrap().len(), 2);

    let after_first = app
        .get_json(&format!("/revocations?since={first}&feed={feed_id}"))
        .await;
    assert_eq!(after_first["reset"], false);
    assert_eq!(
        after_first["entries"],
        json!([{"sub": "alice", "iat_before": now + 1, "until": now + 1800}])
    );

    // Idle: one small answer.
    let r = app
        .client
        .get(app.url(&format!("/revocations?since={head}&feed={feed_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body = r.text().await.unwrap();
    assert!(body.len() < 140, "{} bytes: {body}", body.len());
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"feed": feed_id, "cursor": head, "reset": false, "more": false, "entries": []})
    );

    for query in [
        format!("since={}&feed={feed_id}", head + 1),
        format!("since={}&feed={feed_id}", u64::MAX),
        format!("since={head}&feed=0123456789abcdef0123456789abcdef"),
        format!("feed={feed_id}"),
    ] {
        let v = app.get_json(&format!("/revocations?{query}")).await;
        assert_eq!(v["reset"], true, "{query}");
        assert_eq!(cursor(&v), head, "{query}");
        assert_eq!(v["entries"], all["entries"], "{query}");
    }

    for query in [
        "since=abc",
        "since=-1",
        "since=",
        "since=1&since=2",
        "since=%ff",
        "skew=-1",
        "skew=1m",
    ] {
        let r = app
            .client
            .get(app.url(&format!("/revocations?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        assert_eq!(json(r).await["error"], "invalid_request", "{query}");
    }
}

#[tokio::test]
async fn entries_only_widen_and_every_change_moves_the_cursor() {
    let app = demo_app(Options::default()).await;
    let now = unix_now();
    let head = || async { app.store.revocations_since(None, None, now).await.unwrap().cursor };
    // Times ahead of the clock, so the revocation's own clock reading never wins.
    let mut cursors = vec![head().await];
    app.store.revoke_user("bob", now + 100, 10).await.unwrap();
    cursors.push(head().await);
    app.store.revoke_user("bob", now + 50, 1800).await.unwrap();
    cursors.push(head().await);
    app.store.revoke_jti("j1", now + 50).await.unwrap();
    cursors.push(head().await);
    app.store.revoke_jti("j1", now + 20).await.unwrap();
    cursors.push(head().await);
    assert!(
        cursors.windows(2).all(|w| w[0] < w[1]),
        "every change moves the cursor: {cursors:?}"
    );
    let page = app.store.revocations_since(None, None, now).await.unwrap();
    assert_eq!(
        serde_json::to_value(&page.entries).unwrap(),
        json!([
            {"sub": "bob", "iat_before": now + 101, "until": now + 1850},
            {"jti": "j1", "until": now + 50},
        ])
    );
    let since_2 = app
        .store
        .revocations_since(Some(cursors[2]), Some(&page.feed), now)
        .await
        .unwrap();
    assert!(!since_2.reset);
    assert_eq!(
        since_2.entries.len(),
        1,
        "bob's entry changed at the second, j1's at the fourth"
    );

    // An unknown user: nothing recorded, the cursor unmoved.
    assert!(app.store.revoke_user("nobody", now, 1800).await.is_err());
    assert!(app.store.set_disabled("nobody", true, now, 1800).await.is_err());
    assert_eq!(head().await, cursors[4]);
}

#[tokio::test]
async fn entries_expire_from_the_feed_and_are_purged() {
    let app = demo_app(Options {
        access_ttl_seconds: 2,
        ..Options::default()
    })
    .await;
    let (bob, _) = tokens(&app, "bob").await;
    assert_eq!(revoke(&app, &format!("token={bob}")).await.status(), 200);
    let (alice, _) = tokens(&app, "alice").await;
    assert_eq!(
        admin(&app, "/admin/users/bob/disable", Some(&alice))
            .await
            .status(),
        200
    );
    let feed = app.get_json("/revocations").await;
    assert_eq!(feed["entries"].as_array().unwrap().len(), 2, "{feed}");
    let last_until = feed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["until"].as_i64().unwrap())
        .max()
        .unwrap();

    while unix_now() <= last_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expired = app.get_json("/revocations").await;
    assert_eq!(expired["entries"], json!([]), "{expired}");
    assert_eq!(expired["cursor"], feed["cursor"]);
    // A poller that accepts tokens a minute past their `exp` still gets them.
    let skewed = app.get_json("/revocations?skew=60").await;
    assert_eq!(skewed["entries"], feed["entries"], "{skewed}");
    // An expired token needs no entry: revoking it records nothing.
    assert_eq!(revoke(&app, &format!("token={bob}")).await.status(), 200);
    assert_eq!(app.get_json("/revocations").await["cursor"], feed["cursor"]);

    // Still stored until purged, an hour after `until` (the largest skew a poller may
    // ask for), then gone; the cursor never goes back.
    let stored = app.store.revocations_since(None, None, 0).await.unwrap();
    assert_eq!(stored.entries.len(), 2);
    assert_eq!(app.store.purge_revocations(unix_now()).await.unwrap(), 0);
    let an_hour_on = unix_now() + gatehouse_token::store::MAX_POLLER_SKEW;
    assert_eq!(app.store.purge_revocations(an_hour_on).await.unwrap(), 2);
    let stored = app.store.revocations_since(None, None, 0).await.unwrap();
    assert!(stored.entries.is_empty());
    assert_eq!(json!(stored.cursor), feed["cursor"]);
}

#[tokio::test]
async fn the_purger_runs_in_the_background_until_stopped() {
    let app = demo_app(Options::default()).await;
    let now = unix_now();
    let skew = gatehouse_token::store::MAX_POLLER_SKEW;
    app.store.revoke_jti("long-gone", now - skew - 10).await.unwrap();
    app.store.revoke_jti("alive", now - skew + 600).await.unwrap();
    let purger = gatehouse_token::housekeeping::spawn_purger(app.store.clone(), Duration::from_millis(50));
    let mut left = usize::MAX;
    for _ in 0..1000 {
        left = app
            .store
            .revocations_since(None, None, 0)
            .await
            .unwrap()
            .entries
            .len();
        if left == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, 1, "the expired entry is purged, the live one kept");
    purger.abort();
    assert!(purger.await.unwrap_err().is_cancelled());
}

/// Whether the filter, holding the feed as it is now, refuses `token`.
async fn edge_refuses(app: &TestApp, token: &str) -> bool {
    let page = app
        .client
        .get(app.url("/revocations"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let set = gatehouse::revocation::RevocationSet::default()
        .apply(&page, unix_now(), 100_000)
        .unwrap();
    let c = claims(token);
    set.revokes(c["sub"].as_str().unwrap(), c["iat"].as_i64(), c["jti"].as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_in_flight_across_a_disable_issue_no_token_the_edge_accepts() {
    let app = demo_app(Options {
        max_concurrent_hashes: 1,
        hash_queue_timeout: Duration::from_secs(600),
        ..Options::default()
    })
    .await;
    // Logins that completed before the disable: their tokens are covered by it.
    let (before, _) = tokens(&app, "bob").await;

    // The test holds the one hashing slot: correct-password logins of bob read him as
    // enabled, then queue for it. Few enough that, hashing one after the other on a
    // loaded machine, none nears the service's 10 s request timeout.
    const LOGINS: usize = 4;
    let slot = app.state.hasher.slot().await.unwrap();
    let logins: Vec<_> = (0..LOGINS)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url("/token"));
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("grant_type=password&username=bob&password=bob-demo-pass")
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                (
                    status,
                    serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap(),
                )
            })
        })
        .collect();
    for waited in 0.. {
        if app.state.hasher.queued() == LOGINS {
            break;
        }
        assert!(waited < 4000, "the logins never queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Disabled while they wait; they go on in a later second than the revocation's.
    app.store
        .set_disabled("bob", true, unix_now(), 1800)
        .await
        .unwrap();
    next_second().await;
    drop(slot);

    assert!(
        edge_refuses(&app, &before).await,
        "a token from before the disable"
    );
    let mut refused = 0;
    for login in logins {
        match login.await.unwrap() {
            (200, body) => {
                let token = body["access_token"].as_str().unwrap();
                assert!(
                    edge_refuses(&app, token).await,
                    "a token issued across the disable passes the edge: {:?}",
                    claims(token)
                );
            }
            (401, body) => {
                refused += 1;
                assert_eq!(body["error"], "invalid_grant");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        refused, LOGINS,
        "every login that hashed after the disable is refused"
    );
}

/// Sleeps into the next second of the clock.
async fn next_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000 - u64::from(now.subsec_millis()) + 20)).await;
}

#[tokio::test]
async fn a_password_change_or_a_demotion_revokes_access_tokens_at_the_edge() {
    let app = demo_app(Options::default()).await;
    let (alice, _) = tokens(&app, "alice").await;
    let (bob, _) = tokens(&app, "bob").await;
    assert!(!edge_refuses(&app, &alice).await && !edge_refuses(&app, &bob).await);

    // alice loses her admin role: her tokens stop passing at the edge.
    app.store
        .set_roles("alice", &["user".to_string()], unix_now(), 1800)
        .await
        .unwrap();
    assert!(edge_refuses(&app, &alice).await, "a demoted admin's token");
    assert!(!edge_refuses(&app, &bob).await);

    // A role added revokes nothing.
    app.store
        .set_roles(
            "bob",
            &["user".to_string(), "auditor".to_string()],
            unix_now(),
            1800,
        )
        .await
        .unwrap();
    assert!(!edge_refuses(&app, &bob).await, "a role given");

    // After a compromise, the new password ends the attacker's access tokens too.
    let hash = app.state.hasher.hash_blocking("bob-new-password").unwrap();
    app.store
        .set_password("bob", &hash, unix_now(), 1800)
        .await
        .unwrap();
    assert!(
        edge_refuses(&app, &bob).await,
        "a token from before the password change"
    );
    assert_eq!(app.login("bob", "bob-demo-pass").await.status(), 401);
}
