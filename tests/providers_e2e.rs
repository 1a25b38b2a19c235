//! Several issuers at once, in the real Envoy: two `gatehouse-token` processes as two
//! identity providers, each found by OIDC discovery through its own cluster, with
//! rules that take one, the other or both; a key rotation and an outage of one while
//! the other's tokens keep passing; cookie tokens and their Origin check; an optional
//! route; and what the upstream reads back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64ct::{Base64UrlUnpadded, Encoding};
use gatehouse_testkit::{eventually, Envoy, Response, TokenIssuer, Upstream};
use serde_json::{json, Value};

const STAFF: &str = "http://staff.test";
const GATEHOUSE: &str = "http://gatehouse.test";

fn config() -> Value {
    // Clusters c0 and c1 lead to the two issuers, c2 to the upstream (the order of
    // the routes given to Envoy).
    json!({
        "providers": {
            "staff": {"issuer": STAFF, "audiences": ["api"],
                      "jwks": {"discovery": {"cluster": "c0", "refresh_seconds": 300, "min_refetch_seconds": 1}}},
            "gatehouse": {"issuer": GATEHOUSE, "audiences": ["api"],
                          "jwks": {"discovery": {"cluster": "c1", "refresh_seconds": 300, "min_refetch_seconds": 1}}}
        },
        "rules": [
            {"prefix": "/staff", "require": "authenticated", "providers": ["staff"]},
            {"prefix": "/customers", "require": "authenticated", "providers": ["gatehouse"]},
            {"prefix": "/maybe", "require": "optional"},
            {"prefix": "/both", "require": {"any_of": ["user", "staff"]}}
        ],
        "no_match": "deny",
        "cookie": {"name": "gh_session", "allowed_origins": ["https://app.test"]},
        "forward": {"claims": {"$subject": "sub", "$roles": "roles", "/aud": "aud"}, "payload": "payload"}
    })
}

struct Setup {
    staff: TokenIssuer,
    gatehouse: TokenIssuer,
    upstream: Upstream,
    envoy: Envoy,
}

fn setup() -> Setup {
    let staff = TokenIssuer::start(STAFF, "ES256", &[("carol", "carol-password-1", &["staff"])]);
    let gatehouse = TokenIssuer::start(
        GATEHOUSE,
        "EdDSA",
        &[("alice", "alice-password-1", &["user", "admin"])],
    );
    let upstream = Upstream::start();
    let envoy = Envoy::start_routes(
        &config(),
        None,
        &[
            ("/__staff", staff.addr.port()),
            ("/__gatehouse", gatehouse.addr.port()),
            ("/", upstream.addr.port()),
        ],
    );
    Setup {
        staff,
        gatehouse,
        upstream,
        envoy,
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn get(envoy: &Envoy, path: &str, token: &str) -> Response {
    envoy.call("GET", path, &[("Authorization", &bearer(token))])
}

fn error_of(r: &Response) -> String {
    serde_json::from_slice::<Value>(&r.body).map_or_else(
        |_| String::from_utf8_lossy(&r.body).into_owned(),
        |b| b["error_description"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn two_providers_by_discovery_each_on_its_routes() {
    let s = setup();
    let carol = s.staff.access_token("carol", "carol-password-1");
    let alice = s.gatehouse.access_token("alice", "alice-password-1");

    // Each provider's keys arrive by discovery (the document, then its jwks_uri).
    eventually("both providers' keys are in use", || {
        let c = s.envoy.counters();
        ["staff", "gatehouse"].iter().all(|p| {
            c.get(&format!("gatehouse.provider.{p}.jwks.fetch_ok"))
                .is_some_and(|n| *n >= 1)
        })
    });

    for (path, token, want) in [
        ("/staff/board", &carol, 200),
        ("/staff/board", &alice, 401),
        ("/customers/orders", &alice, 200),
        ("/customers/orders", &carol, 401),
        ("/both/x", &alice, 200),
        ("/both/x", &carol, 200),
    ] {
        let r = get(&s.envoy, path, token);
        assert_eq!(r.status, want, "{path}: {}", error_of(&r));
        if want == 401 {
            assert_eq!(error_of(&r), "the token issuer is not accepted on this route");
            assert!(r
                .header("www-authenticate")
                .is_some_and(|w| w.contains("invalid_token")));
        }
    }
    let counters = s.envoy.counters_when(|c| {
        c.get("gatehouse.denied.provider_not_accepted")
            .is_some_and(|n| *n >= 2)
    });
    assert_eq!(counters.get("gatehouse.denied.provider_not_accepted"), Some(&2));
    assert!(
        counters
            .get("gatehouse.provider.staff.allowed")
            .is_some_and(|n| *n >= 2),
        "{counters:?}"
    );
    assert!(
        counters
            .get("gatehouse.provider.gatehouse.denied")
            .is_some_and(|n| *n >= 1),
        "{counters:?}"
    );

    // What the upstream read: the provider's name, the roles as a list, the audience,
    // and the whole verified payload.
    let r = get(&s.envoy, "/both/x", &alice);
    assert_eq!(r.status, 200);
    let seen = s.upstream.last();
    assert_eq!(seen.all("x-auth-provider"), ["gatehouse"]);
    assert_eq!(seen.all("x-auth-sub"), ["alice"]);
    let roles = seen.all("x-auth-roles");
    assert!(roles == ["user,admin"] || roles == ["admin,user"], "{roles:?}");
    assert_eq!(seen.all("x-auth-aud"), ["api"]);
    let payload: Value =
        serde_json::from_slice(&Base64UrlUnpadded::decode_vec(seen.all("x-auth-payload")[0]).unwrap())
            .unwrap();
    assert_eq!(payload["iss"], GATEHOUSE);
    assert_eq!(payload["sub"], "alice");
    assert!(payload["roles"].is_array(), "{payload}");
    assert!(payload["exp"].is_i64());
}

#[test]
fn one_provider_rotating_or_down_never_touches_the_other() {
    let mut s = setup();
    let alice = s.gatehouse.access_token("alice", "alice-password-1");
    let carol = s.staff.access_token("carol", "carol-password-1");
    eventually("both providers answer", || {
        get(&s.envoy, "/both/x", &alice).status == 200 && get(&s.envoy, "/both/x", &carol).status == 200
    });

    // A new staff key, signing at once: its first token names an unknown kid, the
    // filter discovers again and fetches the staff JWKS while the request is held.
    s.staff.rotate_now("ES256");
    let fetched_before = s
        .envoy
        .counters()
        .get("gatehouse.provider.staff.jwks.fetch_ok")
        .copied();
    let mut carol_new = String::new();
    eventually("the staff issuer signs with its new key", || {
        carol_new = s.staff.access_token("carol", "carol-password-1");
        carol_new.split('.').next() != carol.split('.').next()
    });
    let r = get(&s.envoy, "/staff/board", &carol_new);
    assert_eq!(r.status, 200, "{}", error_of(&r));
    let after = s
        .envoy
        .counters_when(|c| c.get("gatehouse.provider.staff.jwks.fetch_ok").copied() > fetched_before);
    assert!(after
        .get("gatehouse.provider.staff.jwks.refetch_unknown_kid")
        .is_some_and(|n| *n >= 1));
    assert_eq!(
        after
            .get("gatehouse.provider.gatehouse.jwks.refetch_unknown_kid")
            .copied()
            .unwrap_or(0),
        0,
        "the other provider fetched nothing"
    );

    // The staff issuer goes down: its keys stay in use, the other's tokens pass, and
    // an unknown staff kid is refused without touching the gatehouse provider.
    s.staff.kill();
    assert_eq!(get(&s.envoy, "/customers/orders", &alice).status, 200);
    assert_eq!(
        get(&s.envoy, "/staff/board", &carol_new).status,
        200,
        "last good keys"
    );
    let forged_kid = {
        let mut parts: Vec<String> = carol_new.split('.').map(String::from).collect();
        let header = json!({"alg": "ES256", "kid": "not-a-staff-key", "typ": "JWT"});
        parts[0] = Base64UrlUnpadded::encode_string(header.to_string().as_bytes());
        parts.join(".")
    };
    let r = get(&s.envoy, "/staff/board", &forged_kid);
    assert_eq!(r.status, 401, "{}", error_of(&r));
    assert_eq!(get(&s.envoy, "/customers/orders", &alice).status, 200);
    let counters = s.envoy.counters_when(|c| {
        c.get("gatehouse.provider.staff.jwks.fetch_failed")
            .is_some_and(|n| *n >= 1)
    });
    assert_eq!(
        counters
            .get("gatehouse.provider.gatehouse.jwks.fetch_failed")
            .copied()
            .unwrap_or(0),
        0
    );
}

#[test]
fn cookie_tokens_need_an_allowed_origin_to_change_anything_and_optional_routes_take_none() {
    let s = setup();
    let alice = s.gatehouse.access_token("alice", "alice-password-1");
    let cookie = format!("theme=dark; gh_session={alice}");
    eventually("the gatehouse provider answers", || {
        s.envoy.call("GET", "/both/x", &[("Cookie", &cookie)]).status == 200
    });
    let call = |method: &str, extra: &[(&str, &str)]| {
        let mut headers = vec![("Cookie", cookie.as_str())];
        headers.extend_from_slice(extra);
        s.envoy.call(method, "/both/x", &headers)
    };
    assert_eq!(call("GET", &[]).status, 200, "a safe method needs no origin");
    for (label, extra, want) in [
        ("no Origin", vec![], 403),
        ("another site", vec![("Origin", "https://evil.test")], 403),
        ("the string null", vec![("Origin", "null")], 403),
        ("an allowed origin", vec![("Origin", "https://app.test")], 200),
        (
            "the browser says same-origin",
            vec![("Sec-Fetch-Site", "same-origin")],
            200,
        ),
        (
            "cross-site, said by the browser",
            vec![("Sec-Fetch-Site", "cross-site")],
            403,
        ),
    ] {
        let r = call("POST", &extra);
        assert_eq!(r.status, want, "POST with {label}: {}", error_of(&r));
    }
    // A token in the header is no CSRF risk: a page cannot make a browser add it.
    let r = s
        .envoy
        .call("POST", "/both/x", &[("Authorization", &bearer(&alice))]);
    assert_eq!(r.status, 200);
    // Two different credentials: refused, never one of them picked.
    let other = s.gatehouse.access_token("alice", "alice-password-1");
    let r = s.envoy.call(
        "GET",
        "/both/x",
        &[("Cookie", &cookie), ("Authorization", &bearer(&other))],
    );
    if other != alice {
        assert_eq!(r.status, 400, "{}", error_of(&r));
    }

    // Optional: no token passes without identity (and a forged identity is stripped),
    // a valid one with it, a broken one never as none.
    let r = s.envoy.call("GET", "/maybe/page", &[("x-auth-sub", "root")]);
    assert_eq!(r.status, 200);
    assert!(s.upstream.last().all("x-auth-sub").is_empty());
    assert_eq!(get(&s.envoy, "/maybe/page", &alice).status, 200);
    assert_eq!(s.upstream.last().all("x-auth-sub"), ["alice"]);
    let broken = format!("{}x", &alice[..alice.len() - 1]);
    assert_eq!(get(&s.envoy, "/maybe/page", &broken).status, 401);
    let counters = s.envoy.counters_when(|c| {
        c.get("gatehouse.allowed.anonymous").is_some_and(|n| *n >= 1)
            && c.get("gatehouse.denied.cross_site").is_some_and(|n| *n >= 4)
    });
    assert_eq!(counters.get("gatehouse.denied.cross_site"), Some(&4));
}
