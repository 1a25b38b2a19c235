//! Attacks on the token service, over real HTTP against a real SQLite file: account
//! enumeration, brute force behind a rotating `X-Forwarded-For`, boundary and hostile
//! input in every field, oversize, smuggled and slow requests, a login flood, weak
//! secrets and leaks into the log. Every refusal is paired with the request that is
//! accepted, so a service that refused everything would fail too.
//!
//! Already covered elsewhere (docs/attacks.md maps every case to its test): the timing
//! of unknown user vs wrong password (`api.rs`
//! `unknown_user_and_wrong_password_take_the_same_time`), the basic malformed-request
//! table (`api.rs` `malformed_requests_are_refused_before_any_hashing`), crashes
//! (`crash.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64ct::{Base64UrlUnpadded, Encoding};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::process::{cli, text, Server};
use support::{raw, Answer, Options, TestApp, SECRET};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ALICE_PW: &str = "alice-demo-pass";
const FORM: &str = "application/x-www-form-urlencoded";

async fn demo_app(options: Options) -> TestApp {
    let app = TestApp::spawn(options).await;
    app.add_user("alice", ALICE_PW, &["admin", "user"], false).await;
    app.add_user("bob", "bob-demo-pass", &["user"], false).await;
    app.add_user("carol", "carol-demo-pass", &["user"], true).await;
    app
}

/// Percent-encodes everything but letters and digits.
fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// A password login with both fields percent-encoded.
async fn login(app: &TestApp, user: &str, password: &str) -> Answer {
    Answer::of(
        app.token(&format!(
            "grant_type=password&username={}&password={}",
            enc(user),
            enc(password)
        ))
        .await,
    )
    .await
}

/// A POST of `body` to `path` with this content type (none if empty) and extra headers.
async fn post(
    app: &TestApp,
    path: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Answer {
    let mut req = app.client.post(app.url(path));
    if !content_type.is_empty() {
        req = req.header("content-type", content_type);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Answer::of(req.body(body).send().await.unwrap()).await
}

/// The claims of a token (the test trusts its own service).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&Base64UrlUnpadded::decode_vec(payload).unwrap()).unwrap()
}

/// The answer every failed password login gets.
fn assert_is_the_generic_refusal(a: &Answer) {
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(a.header("www-authenticate"), Some("Bearer"), "{a:?}");
    assert_eq!(a.header("cache-control"), Some("no-store"), "{a:?}");
    assert_eq!(
        a.json(),
        json!({"error": "invalid_grant", "error_description": "Incorrect username or password"})
    );
}

// ---------------------------------------------------------------------------------
// Enumeration

#[tokio::test]
async fn every_failed_login_looks_the_same_and_costs_one_hash() {
    let app = demo_app(Options {
        max_failures_per_user: 1000,
        ..Options::default()
    })
    .await;
    // Positive control: the right password gets in, for one hash.
    let before = app.hashes().await;
    assert_eq!(login(&app, "alice", ALICE_PW).await.status, 200);
    assert_eq!(app.hashes().await, before + 1.0);

    let reference = login(&app, "mallory", "whatever-pass").await;
    assert_is_the_generic_refusal(&reference);
    let long_name = "a".repeat(65);
    let cases: &[(&str, &str, &str)] = &[
        ("wrong password", "alice", "wrong-password"),
        ("another user's password", "alice", "bob-demo-pass"),
        (
            "known name in another case, wrong password",
            "ALICE",
            "wrong-password",
        ),
        ("disabled user, right password", "carol", "carol-demo-pass"),
        ("disabled user, wrong password", "carol", "wrong-password"),
        ("name that cannot exist: Cyrillic а", "аlice", ALICE_PW),
        ("name that cannot exist: 65 characters", &long_name, ALICE_PW),
        ("name that cannot exist: SQL", "' OR 1=1--", ALICE_PW),
        ("name that cannot exist: a space", "al ice", ALICE_PW),
        ("unknown user, one-character password", "nobody", "x"),
    ];
    for (label, user, password) in cases {
        let before = app.hashes().await;
        let answer = login(&app, user, password).await;
        assert_eq!(
            answer, reference,
            "{label}: status, headers (but Date) and body must not differ"
        );
        assert_eq!(
            app.hashes().await,
            before + 1.0,
            "{label}: exactly one Argon2 run, as for a real user"
        );
    }
}

/// A fresh refresh token of `user` (password `<user>-demo-pass`).
async fn fresh(app: &TestApp, user: &str) -> String {
    let a = login(app, user, &format!("{user}-demo-pass")).await;
    assert_eq!(a.status, 200, "{a:?}");
    a.json()["refresh_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn every_unusable_refresh_token_looks_the_same() {
    let app = demo_app(Options::default()).await;
    let refresh = |token: String| {
        let app = &app;
        async move {
            Answer::of(
                app.token(&format!("grant_type=refresh_token&refresh_token={}", enc(&token)))
                    .await,
            )
            .await
        }
    };

    // Positive control: a live token rotates.
    let live = fresh(&app, "alice").await;
    let rotated = refresh(live.clone()).await;
    assert_eq!(rotated.status, 200, "{rotated:?}");

    let spent = live; // rotated above: presenting it again is reuse
    let revoked = fresh(&app, "alice").await;
    assert_eq!(
        post(&app, "/revoke", FORM, &[], format!("token={revoked}"))
            .await
            .status,
        200
    );
    let of_disabled = fresh(&app, "bob").await;
    app.store.set_disabled("bob", true, 1, 1800).await.unwrap();
    let expired = "an-expired-refresh-token-of-alice-0123456789".to_string();
    let alice = app.store.user("alice").await.unwrap().unwrap();
    let now = gatehouse_token::clock::unix_now();
    app.store
        .insert_refresh(
            &gatehouse_token::issue::refresh_hash(&expired),
            "expired-family",
            alice.id,
            None,
            now - 100,
            now - 10,
        )
        .await
        .unwrap();

    let reference = refresh(gatehouse_token::issue::random_token(32)).await;
    assert_eq!(reference.status, 400);
    assert_eq!(
        reference.json(),
        json!({"error": "invalid_grant", "error_description": "invalid refresh token"})
    );
    for (label, token) in [
        ("spent (reuse)", spent),
        ("revoked", revoked),
        ("of a disabled user", of_disabled),
        ("expired", expired),
        ("garbage", "x".to_string()),
        (
            "an access token",
            rotated.json()["access_token"].as_str().unwrap()[..200].to_string(),
        ),
    ] {
        assert_eq!(refresh(token).await, reference, "{label}");
    }
}

// ---------------------------------------------------------------------------------
// Brute force

/// A login for `user` claiming to come from `xff` (one header per entry).
async fn login_from(app: &TestApp, user: &str, password: &str, xff: &[&str]) -> Answer {
    let headers: Vec<(&str, &str)> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
    post(
        app,
        "/token",
        FORM,
        &headers,
        format!(
            "grant_type=password&username={}&password={}",
            enc(user),
            enc(password)
        ),
    )
    .await
}

fn assert_rate_limited(a: &Answer, label: &str) {
    assert_eq!(a.status, 429, "{label}: {a:?}");
    let retry: u64 = a
        .header("retry-after")
        .unwrap_or_else(|| panic!("{label}: no Retry-After"))
        .parse()
        .unwrap();
    // 5 failures per 300 s: one failure's worth refills in 60 s.
    assert!((1..=60).contains(&retry), "{label}: Retry-After {retry}");
    assert_eq!(a.json()["error"], "temporarily_unavailable", "{label}");
}

#[tokio::test]
async fn rotating_x_forwarded_for_does_not_escape_the_per_user_limit() {
    let app = demo_app(Options {
        trust_forwarded_for: true,
        max_failures_per_user: 5,
        max_failures_per_address: 20,
        ..Options::default()
    })
    .await;
    // Five guesses at bob, each from another address (a botnet behind the trusted proxy).
    for i in 0..5 {
        let xff = format!("198.51.100.{i}");
        let a = login_from(&app, "bob", &format!("guess-{i}-pass"), &[&xff]).await;
        assert_is_the_generic_refusal(&a);
    }
    let hashes = app.hashes().await;
    // Every further try is refused before hashing, wherever it claims to come from,
    // with the right password too, and in any spelling of the name.
    let tries: &[(&str, &[&str])] = &[
        ("bob", &["203.0.113.9"]),
        ("bob", &["1.2.3.4, 203.0.113.10"]),
        ("bob", &["1.2.3.4", "203.0.113.11"]),
        ("BOB", &["203.0.113.12"]),
        ("ｂｏｂ", &[]),
    ];
    for (user, xff) in tries {
        let a = login_from(&app, user, "bob-demo-pass", xff).await;
        assert_rate_limited(&a, &format!("{user} from {xff:?}"));
    }
    assert_eq!(app.hashes().await, hashes, "a limited login must not hash");
    // Positive control: the addresses themselves are not blocked (each failed once),
    // and another user logs in from one of them.
    let a = login_from(&app, "alice", ALICE_PW, &["198.51.100.0"]).await;
    assert_eq!(a.status, 200, "{a:?}");
}

#[tokio::test]
async fn without_trust_x_forwarded_for_is_ignored_entirely() {
    // A password spray: one guess per username, each from a claimed new address.
    // Untrusted, the header is ignored and the TCP peer's limit stops the spray;
    // trusted (the control), each claimed address has its own limit.
    for trusted in [false, true] {
        let app = demo_app(Options {
            trust_forwarded_for: trusted,
            max_failures_per_user: 1000,
            max_failures_per_address: 3,
            ..Options::default()
        })
        .await;
        for i in 0..3 {
            let (user, xff) = (format!("user{i}"), format!("198.51.100.{i}"));
            assert_is_the_generic_refusal(&login_from(&app, &user, "spray-pass", &[&xff]).await);
        }
        let hashes = app.hashes().await;
        let a = login_from(&app, "alice", ALICE_PW, &["203.0.113.7"]).await;
        if trusted {
            assert_eq!(a.status, 200, "trusted: a new address is a new client: {a:?}");
            assert_eq!(app.hashes().await, hashes + 1.0);
        } else {
            assert_eq!(
                a.status, 429,
                "untrusted: X-Forwarded-For must change nothing: {a:?}"
            );
            assert_eq!(app.hashes().await, hashes, "refused before hashing");
        }
    }
}

// ---------------------------------------------------------------------------------
// Hostile and boundary input

#[tokio::test]
async fn documented_caps_are_exact_and_enforced_before_hashing() {
    let app = demo_app(Options {
        max_failures_per_user: 1000,
        ..Options::default()
    })
    .await;
    let ascii = "p".repeat(1024);
    let wide = "é".repeat(512); // 1024 bytes, 512 characters
    app.add_user("long", &ascii, &["user"], false).await;
    app.add_user("wide", &wide, &["user"], false).await;

    let cases: Vec<(&str, &str, String, u16)> = vec![
        ("1024 ASCII bytes, right", "long", ascii.clone(), 200),
        (
            "1024 bytes in 512 two-byte characters, right",
            "wide",
            wide.clone(),
            200,
        ),
        ("1023 bytes, wrong", "long", ascii[..1023].to_string(), 401),
        ("1025 ASCII bytes", "long", format!("{ascii}p"), 400),
        ("1025 bytes in 513 characters", "wide", format!("{wide}p"), 400),
        (
            "1026 bytes in 513 two-byte characters",
            "wide",
            format!("{wide}é"),
            400,
        ),
    ];
    for (label, user, password, status) in cases {
        let before = app.hashes().await;
        let a = login(&app, user, &password).await;
        assert_eq!(a.status, status, "{label}: {a:?}");
        let hashed = app.hashes().await - before;
        if status == 400 {
            assert_eq!(
                a.json(),
                json!({"error": "invalid_request", "error_description": "a parameter is too long"}),
                "{label}"
            );
            assert_eq!(hashed, 0.0, "{label}: refused before hashing");
        } else {
            assert_eq!(hashed, 1.0, "{label}");
        }
    }

    // The body cap (4 KiB): exactly 4096 bytes are read, 4097 are not; a megabyte
    // password never reaches the hasher.
    let base = format!("grant_type=password&username=alice&password={ALICE_PW}&pad=");
    let at_limit = format!("{base}{}", "y".repeat(4096 - base.len()));
    assert_eq!(at_limit.len(), 4096);
    let before = app.hashes().await;
    assert_eq!(
        post(&app, "/token", FORM, &[], at_limit.clone()).await.status,
        200
    );
    let over = post(&app, "/token", FORM, &[], format!("{at_limit}y")).await;
    assert_eq!(over.status, 413, "{over:?}");
    assert_eq!(over.json()["error"], "invalid_request");
    let huge = post(
        &app,
        "/token",
        FORM,
        &[],
        format!(
            "grant_type=password&username=alice&password={}",
            "p".repeat(1 << 20)
        ),
    )
    .await;
    assert_eq!(huge.status, 413, "{huge:?}");
    assert_eq!(
        app.hashes().await,
        before + 1.0,
        "only the body at the limit hashed"
    );

    // The other field caps: username 256 bytes, scope 1024, refresh token 256.
    let too_long = json!({"error": "invalid_request", "error_description": "a parameter is too long"});
    let scope_at = |n: usize| format!("user{}", " ".repeat(n - 4));
    let cases: Vec<(&str, String, u16, f64)> = vec![
        (
            "username of 256 bytes (no such user)",
            format!("grant_type=password&username={}&password=x", "a".repeat(256)),
            401,
            1.0,
        ),
        (
            "username of 257 bytes",
            format!("grant_type=password&username={}&password=x", "a".repeat(257)),
            400,
            0.0,
        ),
        (
            "scope of 1024 bytes",
            format!(
                "grant_type=password&username=bob&password=bob-demo-pass&scope={}",
                enc(&scope_at(1024))
            ),
            200,
            1.0,
        ),
        (
            "scope of 1025 bytes",
            format!(
                "grant_type=password&username=bob&password=bob-demo-pass&scope={}",
                enc(&scope_at(1025))
            ),
            400,
            0.0,
        ),
        (
            "refresh token of 256 bytes",
            format!("grant_type=refresh_token&refresh_token={}", "r".repeat(256)),
            400,
            0.0,
        ),
        (
            "refresh token of 257 bytes",
            format!("grant_type=refresh_token&refresh_token={}", "r".repeat(257)),
            400,
            0.0,
        ),
    ];
    for (label, body, status, hashes) in cases {
        let before = app.hashes().await;
        let a = post(&app, "/token", FORM, &[], body).await;
        assert_eq!(a.status, status, "{label}: {a:?}");
        assert_eq!(app.hashes().await - before, hashes, "{label}");
        match (status, label.contains("257") || label.contains("1025")) {
            (400, true) => assert_eq!(a.json(), too_long, "{label}"),
            (400, false) => assert_eq!(a.json()["error"], "invalid_grant", "{label}"),
            _ => {}
        }
    }

    // New passwords from the command line: up to 1024 bytes too.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    let out = cli(&db, &["user", "add", "long"], &format!("{ascii}\n"), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cli(&db, &["user", "add", "longer"], &format!("{ascii}p\n"), &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("8 to 1024 bytes"), "{}", text(&out));
}

#[tokio::test]
async fn look_alike_usernames_reach_the_one_account_or_none() {
    let app = demo_app(Options {
        max_failures_per_user: 1000,
        ..Options::default()
    })
    .await;
    // Compatibility forms fold to alice: the same account, never a second one.
    for spelling in ["ALICE", "ａｌｉｃｅ", "ａlice", "Ａｌｉｃｅ"] {
        let a = login(&app, spelling, ALICE_PW).await;
        assert_eq!(a.status, 200, "{spelling}: {a:?}");
        let token = a.json()["access_token"].as_str().unwrap().to_string();
        assert_eq!(claims(&token)["sub"], "alice", "{spelling}");
    }
    // Look-alikes from other scripts, invisible and combining characters: no account,
    // even with alice's password, and the same answer as an unknown user.
    let reference = login(&app, "nobody", ALICE_PW).await;
    assert_is_the_generic_refusal(&reference);
    for spelling in [
        "аlice",                // Cyrillic а
        "alicе",                // Cyrillic е
        "ali\u{0441}e",         // Cyrillic с
        "\u{0251}lice",         // Latin alpha
        "alice\u{200B}",        // zero-width space
        "\u{200B}alice",        // zero-width space in front
        "al\u{00AD}ice",        // soft hyphen
        "alice\u{00A0}",        // no-break space
        "alic\u{0065}\u{0301}", // e + combining acute
        "ALİCE",                // Turkish dotted capital I
    ] {
        let before = app.hashes().await;
        assert_eq!(login(&app, spelling, ALICE_PW).await, reference, "{spelling:?}");
        assert_eq!(
            app.hashes().await,
            before + 1.0,
            "{spelling:?}: hashed like an unknown user"
        );
    }
    // The admin API reads names the same way: a Cyrillic "bob" is nobody, a
    // fullwidth one is bob.
    let alice = login(&app, "alice", ALICE_PW).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let admin = |path: String| {
        let (app, alice) = (&app, &alice);
        async move {
            Answer::of(
                app.client
                    .post(app.url(&path))
                    .bearer_auth(alice)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let a = admin(format!("/admin/users/{}/disable", enc("bоb"))).await;
    assert_eq!(a.status, 404, "{a:?}");
    assert_eq!(
        login(&app, "bob", "bob-demo-pass").await.status,
        200,
        "bob untouched"
    );
    let a = admin(format!("/admin/users/{}/revoke", enc("ＢＯＢ"))).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["username"], "bob");
}

const SQL_PAYLOADS: &[&str] = &[
    "' OR 1=1--",
    "\"; DROP TABLE users;--",
    "admin'--",
    "' UNION SELECT password_hash FROM users--",
    "1; DELETE FROM refresh_tokens",
    "%' OR '%'='",
    "') OR ('1'='1",
    "\\'; DROP TABLE revocations; --",
];

/// Schema, users (with their hashes) and row counts: what an injection would change.
async fn database_snapshot(app: &TestApp) -> (Vec<(String, String)>, Vec<(String, String, String, bool)>) {
    let mut db = app.sql().await;
    let schema: Vec<(String, String)> =
        sqlx::query_as("SELECT name, COALESCE(sql, '') FROM sqlite_master ORDER BY name")
            .fetch_all(&mut db)
            .await
            .unwrap();
    let users: Vec<(String, String, String, bool)> =
        sqlx::query_as("SELECT username, password_hash, roles, disabled FROM users ORDER BY id")
            .fetch_all(&mut db)
            .await
            .unwrap();
    (schema, users)
}

async fn count(app: &TestApp, table: &str) -> i64 {
    let mut db = app.sql().await;
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&mut db)
        .await
        .unwrap()
}

#[tokio::test]
async fn sql_metacharacters_are_inert_in_every_field() {
    let app = demo_app(Options {
        max_failures_per_user: 1000,
        ..Options::default()
    })
    .await;
    // Positive control: a password full of SQL is just a password.
    app.add_user("quoter", "' OR 1=1--", &["user"], false).await;
    assert_eq!(login(&app, "quoter", "' OR 1=1--").await.status, 200);
    assert_eq!(login(&app, "quoter", "' OR 1=1-- ").await.status, 401);

    let alice = login(&app, "alice", ALICE_PW).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let snapshot = database_snapshot(&app).await;
    let refresh_rows = count(&app, "refresh_tokens").await;
    let unknown_user = login(&app, "nobody", ALICE_PW).await;
    let mut issued = 0;

    for p in SQL_PAYLOADS {
        let e = enc(p);
        assert_eq!(login(&app, p, ALICE_PW).await, unknown_user, "username {p}");
        assert_eq!(login(&app, "alice", p).await, unknown_user, "password {p}");

        // As a scope it narrows to no role, and the refresh grant keeps exactly that.
        let a = post(
            &app,
            "/token",
            FORM,
            &[],
            format!("grant_type=password&username=alice&password={ALICE_PW}&scope={e}"),
        )
        .await;
        assert_eq!(a.status, 200, "scope {p}: {a:?}");
        assert_eq!(a.json()["scope"], "", "scope {p}");
        assert_eq!(
            claims(a.json()["access_token"].as_str().unwrap())["roles"],
            json!([])
        );
        let r = a.json()["refresh_token"].as_str().unwrap().to_string();
        let a = post(
            &app,
            "/token",
            FORM,
            &[],
            format!("grant_type=refresh_token&refresh_token={r}"),
        )
        .await;
        assert_eq!(a.status, 200, "refresh after scope {p}: {a:?}");
        assert_eq!(a.json()["scope"], "", "scope {p} kept");
        issued += 2;

        let a = post(
            &app,
            "/token",
            FORM,
            &[],
            format!("grant_type={e}&username=alice&password={ALICE_PW}"),
        )
        .await;
        assert_eq!(a.status, 400, "grant_type {p}");
        assert_eq!(a.json()["error"], "unsupported_grant_type");
        let a = post(
            &app,
            "/token",
            FORM,
            &[],
            format!("grant_type=refresh_token&refresh_token={e}"),
        )
        .await;
        assert_eq!(a.status, 400, "refresh_token {p}");
        assert_eq!(a.json()["error"], "invalid_grant");

        let a = post(
            &app,
            "/revoke",
            FORM,
            &[],
            format!("token={e}&token_type_hint={e}"),
        )
        .await;
        assert_eq!((a.status, a.json()), (200, json!({})), "revoke {p}");
        let bearer = format!("Bearer {alice}");
        let a = post(
            &app,
            "/admin/revoke",
            FORM,
            &[("authorization", &bearer)],
            format!("token={e}"),
        )
        .await;
        assert_eq!(
            (a.status, a.json()),
            (200, json!({"revoked": false})),
            "admin revoke {p}"
        );
        for action in ["disable", "enable", "revoke"] {
            let a = post(
                &app,
                &format!("/admin/users/{e}/{action}"),
                "",
                &[("authorization", &bearer)],
                String::new(),
            )
            .await;
            assert_eq!(a.status, 404, "admin {action} {p}: {a:?}");
        }
        let a = post(
            &app,
            "/admin/users/bob/disable",
            "",
            &[("authorization", &format!("Bearer {p}"))],
            String::new(),
        )
        .await;
        assert!([400, 401].contains(&a.status), "bearer {p}: {a:?}");

        let a = Answer::of(
            app.client
                .get(app.url(&format!("/revocations?since={e}")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, 400, "since {p}");
        let a = Answer::of(
            app.client
                .get(app.url(&format!("/revocations?since=0&feed={e}")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, 200, "feed {p}");
        assert_eq!(a.json()["reset"], true, "a foreign feed id starts over");
    }

    // Nothing changed but the tokens the positive controls were issued.
    assert_eq!(database_snapshot(&app).await, snapshot, "schema or users changed");
    assert_eq!(count(&app, "refresh_tokens").await, refresh_rows + issued);
    assert_eq!(count(&app, "revocations").await, 0);
    let mut db = app.sql().await;
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    for (user, pw) in [("alice", ALICE_PW), ("bob", "bob-demo-pass")] {
        assert_eq!(login(&app, user, pw).await.status, 200, "{user} still logs in");
    }
}

#[tokio::test]
async fn odd_forms_and_content_types_are_refused_before_hashing() {
    let app = demo_app(Options::default()).await;
    let login_form = format!("grant_type=password&username=alice&password={ALICE_PW}");
    let multipart = format!(
        "--XyZ\r\ncontent-disposition: form-data; name=\"grant_type\"\r\n\r\npassword\r\n\
         --XyZ\r\ncontent-disposition: form-data; name=\"username\"\r\n\r\nalice\r\n\
         --XyZ\r\ncontent-disposition: form-data; name=\"password\"\r\n\r\n{ALICE_PW}\r\n--XyZ--\r\n"
    );
    let refused: Vec<(&str, &str, String)> = vec![
        (
            "multipart",
            "multipart/form-data; boundary=XyZ",
            multipart.clone(),
        ),
        (
            "JSON",
            "application/json",
            json!({"grant_type": "password", "username": "alice", "password": ALICE_PW}).to_string(),
        ),
        ("text/plain", "text/plain", login_form.clone()),
        ("no content type", "", login_form.clone()),
        (
            "a longer type with the form's name as prefix",
            "application/x-www-form-urlencodedx",
            login_form.clone(),
        ),
        (
            "the form's name as a parameter",
            "text/plain; application/x-www-form-urlencoded",
            login_form.clone(),
        ),
        (
            "a name repeated under an encoding",
            FORM,
            format!("{login_form}&user%6Eame=alice"),
        ),
        (
            "the same password twice",
            FORM,
            format!("{login_form}&password={ALICE_PW}"),
        ),
        ("a bare repeated name", FORM, format!("{login_form}&password")),
        (
            "scope twice",
            FORM,
            format!("{login_form}&scope=user&scope=admin"),
        ),
        (
            "grant_type in another case",
            FORM,
            format!("Grant_Type=password&username=alice&password={ALICE_PW}"),
        ),
        (
            "array syntax",
            FORM,
            format!("grant_type=password&username[]=alice&password={ALICE_PW}"),
        ),
        (
            "NUL in grant_type",
            FORM,
            format!("grant_type=password%00&username=alice&password={ALICE_PW}"),
        ),
        (
            "an overlong UTF-8 slash",
            FORM,
            format!("{login_form}&scope=%C0%AF"),
        ),
        ("a lone surrogate", FORM, format!("{login_form}&scope=%ED%A0%80")),
    ];
    let before = app.hashes().await;
    for (label, content_type, body) in &refused {
        let a = post(&app, "/token", content_type, &[], body.clone()).await;
        assert_eq!(a.status, 400, "{label}: {a:?}");
        assert_eq!(a.json()["error"], "invalid_request", "{label}");
        assert_eq!(a.header("cache-control"), Some("no-store"), "{label}");
    }
    assert_eq!(app.hashes().await, before, "a refused form must not hash");

    // Positive controls: the same login in accepted spellings.
    let accepted: Vec<(&str, &str, String)> = vec![
        ("plain", FORM, login_form.clone()),
        (
            "type in capitals with a charset",
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
            login_form.clone(),
        ),
        (
            "names and values percent-encoded",
            FORM,
            format!(
                "%67rant_type=%70assword&username=%61lice&password={}",
                enc(ALICE_PW)
            ),
        ),
        (
            "an unknown extra parameter",
            FORM,
            format!("{login_form}&client_id=web"),
        ),
    ];
    for (label, content_type, body) in &accepted {
        let a = post(&app, "/token", content_type, &[], body.clone()).await;
        assert_eq!(a.status, 200, "{label}: {a:?}");
    }
    assert_eq!(app.hashes().await, before + accepted.len() as f64);

    // The revocation endpoints read forms the same way.
    let access = login(&app, "alice", ALICE_PW).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let bearer = format!("Bearer {access}");
    for path in ["/revoke", "/admin/revoke"] {
        let headers: &[(&str, &str)] = if path == "/admin/revoke" {
            &[("authorization", &bearer)]
        } else {
            &[]
        };
        for (content_type, body) in [
            (
                "multipart/form-data; boundary=XyZ",
                "--XyZ\r\ncontent-disposition: form-data; name=\"token\"\r\n\r\nx\r\n--XyZ--\r\n".to_string(),
            ),
            ("application/json", r#"{"token":"x"}"#.to_string()),
            ("text/plain", "token=x".to_string()),
        ] {
            let a = post(&app, path, content_type, headers, body).await;
            assert_eq!(a.status, 400, "{path} {content_type}: {a:?}");
        }
        let a = post(&app, path, FORM, headers, "token=x".to_string()).await;
        assert_eq!(a.status, 200, "{path} form: {a:?}");
    }
}

#[tokio::test]
async fn oversize_smuggled_and_header_bomb_requests_are_cut_off() {
    let app = demo_app(Options::default()).await;
    let form = format!("grant_type=password&username=alice&password={ALICE_PW}");
    let head =
        |extra: &str| format!("POST /token HTTP/1.1\r\nhost: x\r\ncontent-type: {FORM}\r\n{extra}\r\n");
    let chunked = |body: &str| format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let wait = Duration::from_secs(5);
    let before = app.hashes().await;

    // A declared 10 GB body: refused after the first 4 KiB (the client sends 8 KiB and
    // stops; the 413 comes without the rest), connection closed.
    let mut req = head("content-length: 10000000000\r\n").into_bytes();
    req.extend(std::iter::repeat_n(b'a', 8192));
    let out = raw(app.addr, &req, wait).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    // 64 KiB in chunks, with no length declared: the same.
    let mut req = head("transfer-encoding: chunked\r\n").into_bytes();
    for _ in 0..64 {
        req.extend(format!("400\r\n{}\r\n", "a".repeat(1024)).bytes());
    }
    req.extend(b"0\r\n\r\n");
    let out = raw(app.addr, &req, wait).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    // Positive control: a chunked login.
    let out = raw(
        app.addr,
        format!(
            "{}{}",
            head("transfer-encoding: chunked\r\nconnection: close\r\n"),
            chunked(&form)
        )
        .as_bytes(),
        wait,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    // Two lengths that disagree: refused.
    let out = raw(
        app.addr,
        format!(
            "{}{form}",
            head(&format!(
                "content-length: {}\r\ncontent-length: 5\r\n",
                form.len()
            ))
        )
        .as_bytes(),
        wait,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // Content-Length and chunked together, a second request hidden behind: the body
    // is read as chunked (RFC 9112 §6.3), and the connection is closed after the
    // answer, so the hidden request is never served.
    let smuggled = "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
    let out = raw(
        app.addr,
        format!(
            "{}{}{smuggled}",
            head("content-length: 4\r\ntransfer-encoding: chunked\r\n"),
            chunked(&form)
        )
        .as_bytes(),
        wait,
    )
    .await;
    assert_eq!(
        out.matches("HTTP/1.1 ").count(),
        1,
        "one request, one answer: {out}"
    );
    assert!(
        out.starts_with("HTTP/1.1 200") && !out.contains("\"status\""),
        "{out}"
    );

    // Header bombs: a 1 MiB header, 200 headers. 90 headers are fine.
    let big = format!("x-big: {}\r\n", "a".repeat(1 << 20));
    let out = raw(
        app.addr,
        format!(
            "{}{form}",
            head(&format!("{big}content-length: {}\r\n", form.len()))
        )
        .as_bytes(),
        wait,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 431"), "{}", &out[..out.len().min(200)]);
    let many = |n: usize| (0..n).map(|i| format!("x-h{i}: v\r\n")).collect::<String>();
    let out = raw(
        app.addr,
        format!(
            "GET /healthz HTTP/1.1\r\nhost: x\r\n{}connection: close\r\n\r\n",
            many(200)
        )
        .as_bytes(),
        wait,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    let out = raw(
        app.addr,
        format!(
            "GET /healthz HTTP/1.1\r\nhost: x\r\n{}connection: close\r\n\r\n",
            many(90)
        )
        .as_bytes(),
        wait,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    assert_eq!(
        app.hashes().await,
        before + 2.0,
        "only the two complete logins hashed"
    );
}

// ---------------------------------------------------------------------------------
// Slow clients and floods

/// A client that sends `head` at once, then one byte of `trickle` per second (and
/// then more filler) until the server answers or closes. Returns what came back and
/// when, counted from the end of `head`.
async fn trickle(addr: SocketAddr, head: String, trickle: &'static [u8]) -> (String, Duration, bool) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let mut i = 0;
    let mut answered_at = None;
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(30) {
        let byte = [trickle.get(i).copied().unwrap_or(b'a')];
        i += 1;
        let write_failed = s.write_all(&byte).await.is_err();
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                answered_at.get_or_insert(started.elapsed());
            }
            Err(_) if write_failed => {
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    let at = answered_at.unwrap_or(started.elapsed());
    (String::from_utf8_lossy(&out).into_owned(), at, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_after_ten_seconds_without_holding_a_hashing_slot() {
    // One hashing slot and a short queue: a slow client holding the slot would turn the
    // honest logins below into 503s.
    let app = demo_app(Options {
        max_concurrent_hashes: 1,
        hash_queue_timeout: Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    let before = app.hashes().await;
    let addr = app.addr;
    let body_head =
        format!("POST /token HTTP/1.1\r\nhost: x\r\ncontent-type: {FORM}\r\ncontent-length: 200\r\n\r\n");
    let slow_bodies: Vec<_> = (0..6)
        .map(|_| {
            tokio::spawn(trickle(
                addr,
                body_head.clone(),
                b"grant_type=password&username=alice&password=",
            ))
        })
        .collect();
    // Headers that never end: one more header byte a second.
    let slow_headers: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(trickle(
                addr,
                "POST /token HTTP/1.1\r\nhost: x\r\nx-slow: ".into(),
                b"",
            ))
        })
        .collect();
    // Positive control: slow, but done well within the limit.
    let in_time = tokio::spawn(async move {
        let form = "grant_type=password&username=bob&password=bob-demo-pass";
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("POST /token HTTP/1.1\r\nhost: x\r\ncontent-type: {FORM}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", form.len())
                .as_bytes(),
        )
        .await
        .unwrap();
        for part in form.as_bytes().chunks(form.len() / 3 + 1) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            s.write_all(part).await.unwrap();
        }
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    });

    // Meanwhile honest clients are served, logins included.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        // 200, not 503: with one slot and a 1 s queue, a slot held by a slow client
        // would turn this login away.
        let a = login(&app, "alice", ALICE_PW).await;
        assert_eq!(a.status, 200, "an honest login while slow clients hang on: {a:?}");
        let health = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);
    }
    let out = in_time.await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "a slow but timely client: {out}");

    for task in slow_bodies {
        let (out, at, closed) = task.await.unwrap();
        // Cut off by the server while the client was still sending (the trickle goes on
        // for 30 s), and not before the 10 s timeout: a timer never fires early.
        assert!(out.starts_with("HTTP/1.1 408"), "slow body: {out:?} after {at:?}");
        assert!(closed, "the slow body's connection stays open");
        assert!(
            at >= Duration::from_millis(9500),
            "slow body cut off early, after {at:?}"
        );
    }
    for task in slow_headers {
        let (out, at, closed) = task.await.unwrap();
        assert!(closed, "slow headers were never cut off ({at:?}): {out:?}");
        assert!(
            at >= Duration::from_millis(9500),
            "slow headers cut off early, after {at:?}"
        );
    }
    assert_eq!(
        app.hashes().await,
        before + 4.0,
        "only the three honest logins and the timely slow one hashed"
    );
}

/// A metric of a server process.
async fn process_metric(client: &reqwest::Client, server: &Server, name: &str) -> f64 {
    let text = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

/// `n` users `flood0`.. with password `flood-demo-pass`, imported in one go.
fn import_users(db: &std::path::Path, prefix: &str, n: usize, password: &str) {
    let hasher = gatehouse_token::passwords::Hasher::new(
        gatehouse_token::passwords::OWASP_MIN,
        1,
        Duration::from_secs(5),
    )
    .unwrap();
    let hash = hasher.hash_blocking(password).unwrap();
    let lines: String = (0..n)
        .map(|i| {
            format!(
                "{}\n",
                json!({"username": format!("{prefix}{i}"), "hashed_password": hash, "roles": ["user"]})
            )
        })
        .collect();
    let file = db.with_extension("jsonl");
    std::fs::write(&file, lines).unwrap();
    let out = cli(db, &["user", "import", file.to_str().unwrap()], "", &[]);
    assert!(out.status.success(), "{}", text(&out));
}

/// Made by pwdlib 0.3.1 exactly as the FastAPI guide does (m=64 MiB, t=3, p=4), of
/// "correct horse battery staple": the migration path of docs/token-service.md for existing users.
const PWDLIB_HASH: &str =
    "$argon2id$v=19$m=65536,t=3,p=4$esBNOrDdi/dFiaZHCeC+iw$1gUH3tc5v37aFs8dt8uvvPi2v0ehMBxtqMAZ5lpBmPg";

/// Medians of interleaved failed logins through the real binary: an unknown user, and a
/// wrong password for each of `users`. Returns (label, median seconds).
async fn failure_medians(server: &Server, users: &[&str], rounds: usize) -> Vec<(String, f64)> {
    let client = reqwest::Client::new();
    let attempt = |user: String| {
        let (client, url) = (client.clone(), server.url("/token"));
        async move {
            let started = Instant::now();
            let r = client
                .post(url)
                .header("content-type", FORM)
                .body(format!(
                    "grant_type=password&username={user}&password=not-the-password"
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "{user}");
            r.bytes().await.unwrap();
            started.elapsed().as_secs_f64()
        }
    };
    let mut labels: Vec<String> = vec!["unknown".into()];
    labels.extend(users.iter().map(|u| u.to_string()));
    let mut samples = vec![Vec::new(); labels.len()];
    // One of each first: the warm-up is not measured.
    for round in 0..=rounds {
        // Interleaved, in a rotating order, so drift in machine load hits all alike.
        for k in 0..labels.len() {
            let i = (k + round) % labels.len();
            let user = if i == 0 {
                format!("nobody{round}")
            } else {
                labels[i].clone()
            };
            let took = attempt(user).await;
            if round > 0 {
                samples[i].push(took);
            }
        }
    }
    labels
        .into_iter()
        .zip(samples)
        .map(|(label, mut v)| {
            v.sort_by(f64::total_cmp);
            (label, v[v.len() / 2])
        })
        .collect()
}

fn assert_same_time(medians: &[(String, f64)], case: &str) {
    println!("{case}: failed-login medians {medians:?}");
    let (fastest, slowest) = medians
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), (_, m)| (lo.min(*m), hi.max(*m)));
    // Unpadded, the pwdlib hash takes five times the OWASP minimum; noise is far smaller.
    assert!(
        slowest / fastest < 1.43,
        "{case}: failed logins differ in time by {:.2}x: {medians:?}",
        slowest / fastest
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_login_takes_the_same_time_whatever_the_stored_hash() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    // "native" has the service's own parameters, "imported" pwdlib's five-times-costlier ones.
    let native = gatehouse_token::passwords::Hasher::new(
        gatehouse_token::passwords::OWASP_MIN,
        1,
        Duration::from_secs(5),
    )
    .unwrap()
    .hash_blocking("correct horse battery staple")
    .unwrap();
    let lines = [("native", native.as_str()), ("imported", PWDLIB_HASH)]
        .iter()
        .map(|(name, hash)| format!("{}\n", json!({"username": name, "hashed_password": hash})))
        .collect::<String>();
    let file = db.with_extension("jsonl");
    std::fs::write(&file, lines).unwrap();
    let out = cli(&db, &["user", "import", file.to_str().unwrap()], "", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let limits = [
        "--max-failures-per-user",
        "100000",
        "--max-failures-per-address",
        "100000",
    ];

    // The service's parameters are the minimum: unknown users are checked against a
    // dummy of those, pwdlib's user against its own costlier hash.
    let server = Server::start(&db, &limits, "info");
    let medians = failure_medians(&server, &["native", "imported"], 11).await;
    assert_same_time(&medians, "OWASP minimum, a pwdlib user imported");
    drop(server);

    // The reverse: the operator raised the parameters above the stored hashes'.
    let mut raised = limits.to_vec();
    raised.extend(["--argon2-memory-kib", "65536", "--argon2-iterations", "3"]);
    let server = Server::start(&db, &raised, "info");
    let medians = failure_medians(&server, &["native"], 11).await;
    assert_same_time(&medians, "parameters raised to m=64 MiB, t=3");
    let r = reqwest::Client::new()
        .post(server.url("/token"))
        .header("content-type", FORM)
        .body("grant_type=password&username=imported&password=correct+horse+battery+staple")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the imported hash still verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_throughout_a_login_flood() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    import_users(&db, "flood", 8, "flood-demo-pass");
    // The real binary with its defaults: one hashing slot per CPU, a 2 s queue.
    let server = Server::start(&db, &["--max-failures-per-user", "100000"], "info");
    let client = reqwest::Client::new();

    // 48 clients log in back to back until the sampling below is done.
    let stop = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..48)
        .map(|i| {
            let (client, url) = (reqwest::Client::new(), server.url("/token"));
            let (stop, in_flight) = (stop.clone(), in_flight.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    let r = client
                        .post(&url)
                        .header("content-type", FORM)
                        .body(format!(
                            "grant_type=password&username=flood{}&password=flood-demo-pass",
                            i % 8
                        ))
                        .send()
                        .await
                        .unwrap();
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    statuses.push(r.status().as_u16());
                }
                statuses
            })
        })
        .collect();

    // Once the flood has filled both slots (logins have completed), /healthz is asked
    // 60 times; each answer must come while more logins are outstanding than there are
    // slots, before and after it: it was served beside the hashing, not after it.
    for waited in 0.. {
        if process_metric(&client, &server, "gatehouse_token_hash_seconds_count").await >= 4.0 {
            break;
        }
        assert!(waited < 600, "the flood never got a login hashed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hashed_before = process_metric(&client, &server, "gatehouse_token_hash_seconds_sum").await;
    let window = Instant::now();
    let health = reqwest::Client::new();
    let mut latencies = Vec::new();
    for _ in 0..60 {
        let outstanding_before = in_flight.load(Ordering::SeqCst);
        let t = Instant::now();
        let r = health.get(server.url("/healthz")).send().await.unwrap();
        let status = r.status();
        r.bytes().await.unwrap();
        latencies.push(t.elapsed());
        let outstanding_after = in_flight.load(Ordering::SeqCst);
        assert_eq!(status, 200);
        assert!(
            outstanding_before > 2 && outstanding_after > 2,
            "/healthz answered while only {outstanding_before}/{outstanding_after} logins were outstanding"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sampled_for = window.elapsed();
    let hashing = process_metric(&client, &server, "gatehouse_token_hash_seconds_sum").await - hashed_before;
    stop.store(true, Ordering::Relaxed);

    let (mut ok, mut busy) = (0, 0);
    for task in flood {
        for status in task.await.unwrap() {
            match status {
                200 => ok += 1,
                503 => busy += 1,
                other => panic!("a flooded login got {other}"),
            }
        }
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1];
    let (p50, p99, max) = (at(0.5), at(0.99), latencies[latencies.len() - 1]);
    println!(
        "healthz under a login flood: {} samples in {sampled_for:.1?}: p50 {p50:.1?}, p99 {p99:.1?}, max {max:.1?}; \
         flood: 48 clients, {ok} logins 200, {busy} 503, {hashing:.1} s of Argon2 meanwhile",
        latencies.len()
    );
    // The flood was real: in the sampling window the slots hashed most of the time (a
    // ratio of two durations of the same window, so load on the machine cancels out).
    // How fast /healthz answered is a figure of `make bench`, not a bound here.
    assert!(
        hashing >= sampled_for.as_secs_f64() * 0.8,
        "only {hashing:.2} s of hashing in {sampled_for:?}: no flood"
    );
    assert!(ok >= 4, "{ok} logins succeeded");
}

// ---------------------------------------------------------------------------------
// Secrets

#[test]
fn weak_secrets_are_refused_before_anything_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    let good_62 = &SECRET[..62];
    let cases: &[(&str, &str)] = &[
        (
            "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7",
            "placeholder",
        ),
        ("secret", "placeholder"),
        ("SECRET", "placeholder"),
        ("your-secret-key-here", "placeholder"),
        ("password", "placeholder"),
        (&"00".repeat(32), "too little variety"),
        (&"0123".repeat(16), "too little variety"),
        (good_62, "at least 32 bytes"),
        (&SECRET[..63], "hex-encoded"),
        (" \n\t ", "not set"),
    ];
    let modes: &[&[&str]] = &[
        &["serve", "--listen", "127.0.0.1:0"],
        &["serve", "--listen", "127.0.0.1:0", "--signing-alg", "EdDSA"],
        &["keys", "rotate", "--alg", "EdDSA"],
    ];
    for mode in modes {
        for (secret, message) in cases {
            let out = cli(&db, mode, "", &[("SECRET_KEY", secret), ("RUST_LOG", "trace")]);
            let t = text(&out);
            assert!(!out.status.success(), "{mode:?} {secret:?}: {t}");
            assert!(t.contains(message), "{mode:?} {secret:?}: {t}");
            // (Dictionary words also occur in the messages: "SECRET_KEY".)
            assert!(
                secret.len() < 16 || !t.contains(secret),
                "{mode:?}: the secret was printed: {t}"
            );
            assert!(!t.contains("listening"), "{mode:?} {secret:?}: {t}");
        }
        if mode[0] == "serve" {
            assert!(
                !db.exists(),
                "{mode:?}: the database was opened with a refused secret"
            );
        }
    }
    // Positive control: the same commands with a good secret.
    let out = cli(
        &db,
        &["keys", "rotate", "--alg", "EdDSA"],
        "",
        &[("SECRET_KEY", SECRET)],
    );
    assert!(out.status.success(), "{}", text(&out));
    let mut server = Server::start(&db, &["--signing-alg", "EdDSA"], "info");
    assert!(server.terminate().success());
}

/// Every form a secret value could take in a log: as is, and for a JWT its
/// signature alone; a refresh token also as the SHA-256 the database keeps.
fn leak_forms(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_string()];
    if let Some(signature) = value.split('.').nth(2) {
        forms.push(signature.to_string());
    } else {
        forms.push(hex::encode(Sha256::digest(value.as_bytes())));
    }
    forms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_reaches_any_log_even_at_trace() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    let env: &[(&str, &str)] = &[("RUST_LOG", "trace"), ("SECRET_KEY", SECRET)];
    let mut logs = String::new();
    let mut secrets: Vec<String> = vec![SECRET.into(), "$argon2id".into()];
    let (alice_pw, bob_pw, bob_new_pw) = ("Alice-Pa55-word", "Bob-Pa55-word", "Bob-new-Pa55-word");
    secrets.extend([alice_pw, bob_pw, bob_new_pw].map(String::from));

    // The command line at trace.
    for (args, stdin) in [
        (&["user", "add", "alice", "--role", "admin"][..], alice_pw),
        (&["user", "add", "bob", "--role", "user"][..], bob_pw),
        (&["user", "passwd", "bob"][..], bob_new_pw),
        (&["user", "list", "--json"][..], ""),
        (&["keys", "rotate", "--alg", "EdDSA"][..], ""),
        (&["keys", "list"][..], ""),
    ] {
        let out = cli(&db, args, &format!("{stdin}\n"), env);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        logs.push_str(&text(&out));
    }

    // The service at trace, signing with the sealed EdDSA key.
    let mut server = Server::start(
        &db,
        &["--signing-alg", "EdDSA", "--max-failures-per-user", "3"],
        "trace",
    );
    let client = reqwest::Client::new();
    let post = |path: &str, bearer: Option<&str>, body: String| {
        let mut req = client
            .post(server.url(path))
            .header("content-type", FORM)
            .body(body);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        async move { Answer::of(req.send().await.unwrap()).await }
    };
    let login = |user: &str, pw: &str| {
        post(
            "/token",
            None,
            format!("grant_type=password&username={user}&password={}", enc(pw)),
        )
    };
    let tokens = |a: &Answer| {
        assert_eq!(a.status, 200, "{a:?}");
        let v = a.json();
        (
            v["access_token"].as_str().unwrap().to_string(),
            v["refresh_token"].as_str().unwrap().to_string(),
        )
    };

    let (alice, alice_refresh) = tokens(&login("alice", alice_pw).await);
    let (bob, bob_refresh) = tokens(&login("bob", bob_new_pw).await);
    // Rotation, then reuse of the spent token (its family is revoked, with a warning).
    let (_, rotated) = tokens(
        &post(
            "/token",
            None,
            format!("grant_type=refresh_token&refresh_token={alice_refresh}"),
        )
        .await,
    );
    assert_eq!(
        post(
            "/token",
            None,
            format!("grant_type=refresh_token&refresh_token={alice_refresh}")
        )
        .await
        .status,
        400
    );
    // Guesses until the limit, then one more, refused before hashing.
    for i in 0..4 {
        let guess = format!("Guessed-Pa55-{i}");
        let want = if i < 3 { 401 } else { 429 };
        assert_eq!(login("mallory", &guess).await.status, want);
        secrets.push(guess);
    }
    // Refused shapes that carry a password: in the query, in an oversize body.
    let a = Answer::of(
        client
            .post(server.url(&format!("/token?password={}", enc("Query-Pa55-word"))))
            .header("content-type", FORM)
            .body("grant_type=password")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 400);
    let big = format!("Big-Pa55-word{}", "x".repeat(5000));
    assert_eq!(login("alice", &big).await.status, 413);
    secrets.extend(["Query-Pa55-word".to_string(), big]);

    // The admin API, with good and bad bearers.
    for path in [
        "/admin/users/bob/disable",
        "/admin/users/bob/enable",
        "/admin/users/bob/revoke",
    ] {
        assert_eq!(
            post(path, Some(&alice), String::new()).await.status,
            200,
            "{path}"
        );
    }
    let (bob2, bob2_refresh) = tokens(&login("bob", bob_new_pw).await);
    let a = post("/admin/revoke", Some(&alice), format!("token={bob2}")).await;
    assert_eq!(a.json()["token_type"], "access_token");
    let a = post("/admin/revoke", Some(&alice), format!("token={bob2_refresh}")).await;
    assert_eq!(a.json()["token_type"], "refresh_token");
    let tampered = format!("{}x", &alice[..alice.len() - 1]);
    assert_eq!(
        post("/admin/users/bob/revoke", Some(&tampered), String::new())
            .await
            .status,
        401
    );
    assert_eq!(
        post("/admin/users/bob/revoke", Some(&bob), String::new())
            .await
            .status,
        401
    );
    // RFC 7009 revocation of both kinds.
    for token in [&bob, &rotated] {
        assert_eq!(post("/revoke", None, format!("token={token}")).await.status, 200);
    }
    for t in [
        &alice,
        &alice_refresh,
        &bob,
        &bob_refresh,
        &rotated,
        &bob2,
        &bob2_refresh,
        &tampered,
    ] {
        secrets.extend(leak_forms(t));
    }

    assert!(server.terminate().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("gatehouse-token stopped") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20)); // the pipe drains after the exit
    }
    let server_log = server.log();
    // The log is not empty: what is there is what was meant to be.
    for expected in [
        "password login",
        "admin action",
        "refresh token",
        "DEBUG",
        "gatehouse-token stopped",
    ] {
        assert!(
            server_log.contains(expected),
            "no {expected:?} in the log:\n{server_log}"
        );
    }
    logs.push_str(&server_log);
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "logged: {}",
            &secret[..secret.len().min(40)]
        );
    }
}
