//! The filter inside the real Envoy 1.40, in front of a recording upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_testkit::{claims, mint, mint_with, now, Envoy, Upstream, ISSUER, SECRET};
use serde_json::json;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn a_valid_token_reaches_the_upstream_with_its_identity() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(&gatehouse_testkit::demo_config(), Some(SECRET), &upstream);
    let alice = mint(&claims("alice", &["admin", "user"]));

    let r = envoy.call("GET", "/users/me?page=2", &[("Authorization", &bearer(&alice))]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen = upstream.last();
    assert_eq!(seen.url, "/users/me?page=2");
    assert_eq!(seen.all("x-auth-sub"), ["alice"]);
    assert_eq!(seen.all("x-auth-roles"), ["admin,user"]);
    assert!(seen.all("authorization").is_empty(), "the token went upstream");

    let r = envoy.call("DELETE", "/users/42", &[("Authorization", &bearer(&alice))]);
    assert_eq!(r.status, 200);
    assert_eq!(upstream.last().method, "DELETE");
    assert_eq!(upstream.count(), 2);
}

/// (method, path, headers, status, error in WWW-Authenticate, error in the body)
type Refusal<'a> = (
    &'a str,
    &'a str,
    Vec<(&'a str, String)>,
    u16,
    Option<&'a str>,
    &'a str,
);

#[test]
fn refusals_carry_status_challenge_and_body_and_never_reach_the_upstream() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(&gatehouse_testkit::demo_config(), Some(SECRET), &upstream);
    let t = now();
    let bob = mint(&claims("bob", &["user"]));
    let expired = mint(&json!({"iss": ISSUER, "aud": "api", "sub": "bob", "iat": t - 900, "exp": t - 300}));
    let wrong_key = mint_with(
        r#"{"alg":"HS256"}"#,
        &claims("bob", &["admin"]),
        b"0123456789abcdef0123456789abcdef",
    );
    let alg_none = {
        let real = mint(&claims("bob", &["admin"]));
        let body = real.split('.').nth(1).unwrap().to_string();
        format!("eyJhbGciOiJub25lIn0.{body}.")
    };
    let other_issuer = mint(&json!({"iss": "https://evil.test", "aud": "api", "sub": "bob", "exp": t + 60}));

    let cases: Vec<Refusal> = vec![
        ("GET", "/users/me", vec![], 401, None, "unauthorized"),
        (
            "GET",
            "/users/me",
            vec![("Authorization", "Basic Ym9iOnB3".into())],
            401,
            None,
            "unauthorized",
        ),
        (
            "GET",
            "/users/me",
            vec![("Authorization", bearer("not-a-jwt"))],
            401,
            Some("invalid_token"),
            "invalid_token",
        ),
        (
            "GET",
            "/users/me",
            vec![("Authorization", bearer(&expired))],
            401,
            Some("invalid_token"),
            "invalid_token",
        ),
        (
            "GET",
            "/users/me",
            vec![("Authorization", bearer(&wrong_key))],
            401,
            Some("invalid_token"),
            "invalid_token",
        ),
        (
            "GET",
            "/users/me",
            vec![("Authorization", bearer(&alg_none))],
            401,
            Some("invalid_token"),
            "invalid_token",
        ),
        (
            "GET",
            "/users/me",
            vec![("Authorization", bearer(&other_issuer))],
            401,
            Some("invalid_token"),
            "invalid_token",
        ),
        (
            "GET",
            "/users/me",
            vec![("Authorization", bearer(&bob)), ("Authorization", bearer(&bob))],
            400,
            Some("invalid_request"),
            "invalid_request",
        ),
        (
            "DELETE",
            "/users/7",
            vec![("Authorization", bearer(&bob))],
            403,
            Some("insufficient_scope"),
            "insufficient_scope",
        ),
        (
            "GET",
            "/users/me?access_token=x",
            vec![],
            401,
            None,
            "unauthorized",
        ),
    ];
    for (method, path, headers, status, error, body_error) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = envoy.call(method, path, &headers);
        let label = format!(
            "{method} {path} {:?}",
            headers.iter().map(|h| h.0).collect::<Vec<_>>()
        );
        assert_eq!(r.status, status, "{label}");
        let challenge = r
            .header("www-authenticate")
            .unwrap_or_else(|| panic!("no challenge: {label}"));
        assert!(
            challenge.starts_with("Bearer realm=\"gatehouse\""),
            "{label}: {challenge}"
        );
        match error {
            Some(e) => assert!(
                challenge.contains(&format!("error=\"{e}\"")),
                "{label}: {challenge}"
            ),
            None => assert!(!challenge.contains("error="), "{label}: {challenge}"),
        }
        assert_eq!(r.header("content-type"), Some("application/json"), "{label}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{label}");
        let body = r.json();
        assert_eq!(body["error"], body_error, "{label}");
        assert!(body["error_description"].is_string(), "{label}");
    }
    assert_eq!(upstream.count(), 0, "a refused request reached the upstream");
    let log = envoy.log();
    for secret in [SECRET, &bob, &expired] {
        assert!(!log.contains(secret), "Envoy's log holds a token or the secret");
    }
}

#[test]
fn spoofed_identity_headers_never_reach_the_upstream() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(&gatehouse_testkit::demo_config(), Some(SECRET), &upstream);
    let bob = mint(&json!({"iss": ISSUER, "aud": "api", "sub": "bob", "exp": now() + 60}));
    let spoofs = [
        ("X-Auth-Sub", "root"),
        ("x-auth-sub", "admin"),
        ("X-AUTH-ROLES", "admin"),
        ("x-auth-roles", "admin"),
        ("x_auth_roles", "admin"),
        ("x-auth-anything", "1"),
    ];
    for (path, auth) in [("/healthz", None), ("/users/me", Some(bearer(&bob)))] {
        let mut headers: Vec<(&str, &str)> = spoofs.to_vec();
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth));
        }
        let r = envoy.call("GET", path, &headers);
        assert_eq!(r.status, 200, "{path}");
        let seen = upstream.last();
        let identity: Vec<_> = seen
            .headers
            .iter()
            .filter(|(k, _)| k.to_ascii_lowercase().replace('_', "-").starts_with("x-auth-"))
            .collect();
        match auth {
            // bob's token has no roles: only his own subject may arrive.
            Some(_) => assert_eq!(
                identity,
                [&("x-auth-sub".to_string(), "bob".to_string())],
                "{path}"
            ),
            None => assert!(identity.is_empty(), "{path}: {identity:?}"),
        }
    }
}

#[test]
fn every_decision_is_counted_in_envoys_stats() {
    let upstream = Upstream::start();
    let envoy = Envoy::start(&gatehouse_testkit::demo_config(), Some(SECRET), &upstream);
    let before = envoy.counters();
    assert_eq!(before.get("gatehouse.allowed.token"), Some(&0), "{before:?}");
    let alice = mint(&claims("alice", &["admin"]));
    let bob = mint(&claims("bob", &["user"]));
    envoy.call("GET", "/healthz", &[]);
    envoy.call("GET", "/users/me", &[("Authorization", &bearer(&alice))]);
    envoy.call("GET", "/users/me", &[("Authorization", &bearer(&alice))]);
    envoy.call("GET", "/users/me", &[]);
    envoy.call("DELETE", "/users/1", &[("Authorization", &bearer(&bob))]);
    envoy.call("GET", "/users/me", &[("Authorization", "Bearer a.b.c")]);
    envoy.call("GET", "/users/%2e%2e/me", &[("Authorization", &bearer(&alice))]);

    let decisions = |c: &std::collections::BTreeMap<String, u64>| -> u64 {
        c.iter()
            // Decisions only: not the cache, nor the per-provider copies of the counts.
            .filter(|(k, _)| !k.starts_with("gatehouse.token_cache") && !k.starts_with("gatehouse.provider."))
            .map(|(_, v)| v)
            .sum()
    };
    // Counts reach Envoy once a second: wait until every expected one has arrived.
    let expected = [
        ("gatehouse.allowed.public", 1),
        ("gatehouse.allowed.token", 2),
        ("gatehouse.denied.missing_token", 1),
        ("gatehouse.denied.forbidden", 1),
        ("gatehouse.denied.malformed", 1),
    ];
    let moved_in = |c: &std::collections::BTreeMap<String, u64>, name: &str| {
        c.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0)
    };
    let after = envoy.counters_when(|c| expected.iter().all(|(name, n)| moved_in(c, name) >= *n));
    let moved = |name: &str| moved_in(&after, name);
    assert_eq!(moved("gatehouse.allowed.public"), 1);
    assert_eq!(moved("gatehouse.allowed.token"), 2);
    assert_eq!(moved("gatehouse.denied.missing_token"), 1);
    assert_eq!(moved("gatehouse.denied.forbidden"), 1);
    assert_eq!(moved("gatehouse.denied.malformed"), 1);
    let total = decisions(&after);
    // Envoy itself may refuse `%2e%2e` before the filter sees it; either way it is not allowed.
    assert!(
        total == 6 || (total == 7 && moved("gatehouse.denied.ambiguous_path") == 1),
        "{after:?}"
    );

    let prometheus = String::from_utf8(envoy.admin_get("/stats/prometheus").body).unwrap();
    assert!(prometheus.contains("gatehouse_allowed_token{} 2"), "{prometheus}");
    // alice's token twice: verified once, then served from the worker's cache; bob's
    // and the broken token were looked up once each and verified.
    assert_eq!(moved("gatehouse.token_cache.hits"), 1, "{after:?}");
    assert_eq!(moved("gatehouse.token_cache.misses"), 3, "{after:?}");
}

#[test]
fn header_values_that_are_not_utf8_do_not_crash_the_filter() {
    // HTTP/1 allows obs-text (bytes 0x80-0xFF) in values; the SDK's String accessors
    // would panic on them and kill the VM.
    let upstream = Upstream::start();
    let envoy = Envoy::start(&gatehouse_testkit::demo_config(), Some(SECRET), &upstream);
    let alice = mint(&claims("alice", &["admin"]));
    let raw = |auth: Option<&str>| {
        let mut head = b"GET /users/me HTTP/1.1\r\nHost: x\r\nX-Latin1: caf\xe9\r\n".to_vec();
        if let Some(token) = auth {
            head.extend_from_slice(format!("Authorization: Bearer {token}\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        head
    };
    for _ in 0..3 {
        assert_eq!(envoy.send(raw(None)).status, 401, "{}", envoy.log());
        // Allowed by the filter (the test upstream itself may refuse a non-ASCII value).
        envoy.send(raw(Some(&alice)));
    }
    let counters = envoy.counters_when(|c| c.get("gatehouse.allowed.token") == Some(&3));
    assert_eq!(counters["gatehouse.denied.missing_token"], 3);
    assert_eq!(counters["gatehouse.allowed.token"], 3);
    let r = envoy.call("GET", "/users/me", &[("Authorization", &bearer(&alice))]);
    assert_eq!(r.status, 200, "the VM is still alive");
    assert!(!envoy.log().contains("panicked"), "{}", envoy.log());
}

#[test]
fn a_broken_configuration_makes_envoy_refuse_the_filter() {
    let upstream = Upstream::start();
    let mut bad_issuer = gatehouse_testkit::demo_config();
    bad_issuer["issuer"] = json!("");
    let mut typo = gatehouse_testkit::demo_config();
    typo["audience"] = json!(["api"]);
    let mut bad_rule = gatehouse_testkit::demo_config();
    bad_rule["rules"][3]["require"] = json!("everyone");
    let short_secret = &SECRET[..40];

    let cases = [
        (bad_issuer, Some(SECRET), "issuer: must not be empty"),
        (typo, Some(SECRET), "audience: unknown field `audience`"),
        (
            bad_rule,
            Some(SECRET),
            "rules[3].require: unknown variant `everyone`",
        ),
        (
            gatehouse_testkit::demo_config(),
            None,
            "hmac_secret.env: environment variable SECRET_KEY is not set",
        ),
        (
            gatehouse_testkit::demo_config(),
            Some(short_secret),
            "hmac_secret.env: SECRET_KEY must hold at least 32 bytes",
        ),
    ];
    for (config, secret, expected) in cases {
        let failure = match Envoy::try_start(&config, secret, &[("/", upstream.addr.port())]) {
            Ok(_) => panic!("Envoy accepted a bad configuration ({expected})"),
            Err(f) => f,
        };
        assert_ne!(failure.exit_code, Some(0), "{expected}");
        assert!(failure.exit_code.is_some(), "Envoy did not exit: {expected}");
        assert!(
            failure
                .log
                .contains(&format!("gatehouse: invalid configuration: {expected}")),
            "{expected}\n{}",
            failure.log
        );
        assert!(
            failure.log.contains("Unable to create Wasm plugin gatehouse"),
            "{}",
            failure.log
        );
        assert!(!failure.log.contains(short_secret), "the secret was logged");
    }
}

#[test]
fn a_token_from_a_fastapi_pyjwt_issuer_on_the_same_secret_passes() {
    // PyJWT signs with the SECRET_KEY string itself; so does the filter by default.
    let upstream = Upstream::start();
    let envoy = Envoy::start(&gatehouse_testkit::demo_config(), Some(SECRET), &upstream);
    let by_text = mint(&claims("alice", &[]));
    let by_bytes = mint_with(r#"{"alg":"HS256"}"#, &claims("alice", &[]), &hex_decode(SECRET));
    assert_eq!(
        envoy
            .call("GET", "/users/me", &[("Authorization", &bearer(&by_text))])
            .status,
        200
    );
    assert_eq!(
        envoy
            .call("GET", "/users/me", &[("Authorization", &bearer(&by_bytes))])
            .status,
        401
    );

    let mut decoded = gatehouse_testkit::demo_config();
    decoded["hmac_secret"]["hex_decode"] = json!(true);
    let envoy = Envoy::start(&decoded, Some(SECRET), &upstream);
    assert_eq!(
        envoy
            .call("GET", "/users/me", &[("Authorization", &bearer(&by_bytes))])
            .status,
        200
    );
    assert_eq!(
        envoy
            .call("GET", "/users/me", &[("Authorization", &bearer(&by_text))])
            .status,
        401
    );
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn every_reading_of_a_path_or_method_must_pass_its_rule() {
    let upstream = Upstream::start();
    let admin = json!({"any_of": ["admin"]});
    let config = json!({
        "issuer": ISSUER, "audiences": ["api"], "algorithms": ["HS256"],
        "hmac_secret": {"env": "SECRET_KEY"},
        "rules": [
            {"path": "/jobs:purge", "methods": ["POST"], "require": admin},
            {"path": "/odata/$batch", "methods": ["POST"], "require": admin},
            {"prefix": "/@admin", "require": admin},
            {"prefix": "/internal", "require": "deny"},
            {"path": "/admin/report", "methods": ["GET"], "require": admin},
            {"path": "/users/{id}", "methods": ["DELETE"], "require": admin},
        ]
    });
    let envoy = Envoy::start(&config, Some(SECRET), &upstream);
    let bob = bearer(&mint(&claims("bob", &["user"])));
    let alice = bearer(&mint(&claims("alice", &["admin"])));
    let raw = |request: String| envoy.send(request);
    let form = |auth: &str, content_type: &str, body: &str| {
        format!(
            "POST /users/4 HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let multipart = "--b0\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b0--\r\n";
    let big = format!("note={}&_method=DELETE", "x".repeat(70_000));
    let chunked = format!(
        "POST /users/4 HTTP/1.1\r\nHost: x\r\nAuthorization: {bob}\r\ncontent-type: application/x-www-form-urlencoded\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nname=\r\n10\r\nx&_method=DELETE\r\n0\r\n\r\n"
    );
    let cases: Vec<(&str, gatehouse_testkit::Response, u16)> = vec![
        (
            "POST /jobs%3Apurge",
            envoy.call("POST", "/jobs%3Apurge", &[("Authorization", &bob)]),
            403,
        ),
        (
            "POST /odata/%24batch",
            envoy.call("POST", "/odata/%24batch", &[("Authorization", &bob)]),
            403,
        ),
        (
            "GET /%40admin/x",
            envoy.call("GET", "/%40admin/x", &[("Authorization", &bob)]),
            403,
        ),
        (
            "GET /internal.json",
            envoy.call("GET", "/internal.json", &[("Authorization", &bob)]),
            403,
        ),
        (
            "GET /admin/report.json",
            envoy.call("GET", "/admin/report.json", &[("Authorization", &bob)]),
            403,
        ),
        (
            "GET /admin/report.",
            envoy.call("GET", "/admin/report.", &[("Authorization", &bob)]),
            403,
        ),
        (
            "GET /admin/report%20",
            envoy.call("GET", "/admin/report%20", &[("Authorization", &bob)]),
            403,
        ),
        (
            "POST ?+_method=DELETE",
            envoy.call("POST", "/users/4?+_method=DELETE", &[("Authorization", &bob)]),
            403,
        ),
        (
            "POST ?%20_method=DELETE",
            envoy.call("POST", "/users/4?%20_method=DELETE", &[("Authorization", &bob)]),
            403,
        ),
        (
            "POST ?_method%00=DELETE",
            envoy.call("POST", "/users/4?_method%00=DELETE", &[("Authorization", &bob)]),
            403,
        ),
        (
            "POST ?a=1;_method=DELETE",
            envoy.call("POST", "/users/4?a=1;_method=DELETE", &[("Authorization", &bob)]),
            403,
        ),
        (
            "form body _method=DELETE",
            raw(form(&bob, "application/x-www-form-urlencoded", "_method=DELETE")),
            403,
        ),
        (
            "multipart body _method=DELETE",
            raw(form(&bob, "multipart/form-data; boundary=b0", multipart)),
            403,
        ),
        ("chunked form body _method=DELETE", raw(chunked), 403),
        (
            "form body over the bound",
            raw(form(&bob, "application/x-www-form-urlencoded", &big)),
            413,
        ),
        (
            "multipart without a boundary",
            raw(form(&bob, "multipart/form-data", "x")),
            400,
        ),
        // Controls: the same requests pass where every reading allows them.
        (
            "form body without _method",
            raw(form(&bob, "application/x-www-form-urlencoded", "name=x")),
            200,
        ),
        (
            "json body with _method",
            raw(form(&bob, "application/json", r#"{"_method":"DELETE"}"#)),
            200,
        ),
        (
            "alice: form body _method=DELETE",
            raw(form(
                &alice,
                "application/x-www-form-urlencoded",
                "_method=DELETE",
            )),
            200,
        ),
        (
            "alice: POST /jobs%3Apurge",
            envoy.call("POST", "/jobs%3Apurge", &[("Authorization", &alice)]),
            200,
        ),
        (
            "alice: GET /admin/report.json",
            envoy.call("GET", "/admin/report.json", &[("Authorization", &alice)]),
            200,
        ),
    ];
    for (label, r, status) in &cases {
        assert_eq!(r.status, *status, "{label}: {}", String::from_utf8_lossy(&r.body));
    }
    let r = &cases[14].1;
    assert_eq!(
        r.json()["error_description"],
        "the form body is too large to check for a method override"
    );
    // A body that was read reaches the upstream whole, as the POST it is; a refused
    // one never reaches it (its headers may have: the upstream request is reset).
    let seen = upstream.requests();
    let posted: Vec<_> = seen.iter().filter(|s| s.url == "/users/4").collect();
    assert!(posted.iter().all(|s| s.method == "POST"), "{posted:?}");
    let bodies: Vec<String> = posted
        .iter()
        .filter(|s| !s.body.is_empty())
        .map(|s| String::from_utf8_lossy(&s.body).into_owned())
        .collect();
    assert_eq!(
        bodies,
        ["name=x", r#"{"_method":"DELETE"}"#, "_method=DELETE"],
        "only the allowed bodies, whole"
    );
    assert_eq!(posted.last().unwrap().all("x-auth-sub"), ["alice"]);
    let c = envoy.counters_when(|c| c.get("gatehouse.denied.body_too_large").copied().unwrap_or(0) >= 1);
    assert_eq!(c["gatehouse.denied.unreadable_body"], 1, "{c:?}");
}
