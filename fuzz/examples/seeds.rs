//! Writes the seed corpus under fuzz/corpus/<target>/ (committed; regenerate with
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds`). Tokens are signed
//! with the fixture keys of src/lib.rs and valid at its NOW.

use std::fs;
use std::path::Path;

use base64ct::{Base64UrlUnpadded, Encoding};
use gatehouse_fuzz::{good_claims, good_token, sign_raw, SignAlg, ISSUER, NOW};
use serde_json::{json, Value};

fn with(changes: Value) -> Value {
    let mut c = good_claims();
    for (k, v) in changes.as_object().into_iter().flatten() {
        if v.is_null() {
            c.as_object_mut().map(|o| o.remove(k));
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn b64(s: &str) -> String {
    Base64UrlUnpadded::encode_string(s.as_bytes())
}

fn write(target: &str, name: &str, bytes: impl AsRef<[u8]>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    fs::write(dir.join(name), bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
}

/// Tokens made by Python's `cryptography` (tests/fixtures/python-signed-tokens.json),
/// valid at NOW under the `mixed` fixture's JWKS.
const PYTHON_TOKENS: [(&str, &str); 3] = [
    ("python-eddsa", "eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCIsImtpZCI6ImstZWQifQ.eyJpc3MiOiJodHRwczovL2dhdGVob3VzZS50ZXN0IiwiYXVkIjoiYXBpIiwic3ViIjoiYWxpY2UiLCJyb2xlcyI6WyJhZG1pbiIsInVzZXIiXSwiaWF0IjoxNzk5OTk5OTkwLCJleHAiOjE4MDAwMDA2MDAsImp0aSI6ImoxIn0.IpSS8KoFoqnEHkIsm9KQj7ktsiucDrQ35lzbZ9bLEnKYOR_9s4rR9hBTMoW-QsRHtlcz8yhkV3gicPttQwa7DQ"),
    ("python-es256", "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImstZXMifQ.eyJpc3MiOiJodHRwczovL2dhdGVob3VzZS50ZXN0IiwiYXVkIjoiYXBpIiwic3ViIjoiYWxpY2UiLCJyb2xlcyI6WyJhZG1pbiIsInVzZXIiXSwiaWF0IjoxNzk5OTk5OTkwLCJleHAiOjE4MDAwMDA2MDAsImp0aSI6ImoxIn0.V0Vzfg7p9MjnOsf-GP1bOvI9PyxKL4nVYgv5PWqV4VbEgXhzqTTJoCYpmSREtERjn3CWW_8xjrHnTN4-VQJ59Q"),
    ("python-rs256", "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImstcnMifQ.eyJpc3MiOiJodHRwczovL2dhdGVob3VzZS50ZXN0IiwiYXVkIjoiYXBpIiwic3ViIjoiYWxpY2UiLCJyb2xlcyI6WyJhZG1pbiIsInVzZXIiXSwiaWF0IjoxNzk5OTk5OTkwLCJleHAiOjE4MDAwMDA2MDAsImp0aSI6ImoxIn0.sN6IbJF37QOXQ6_Yx6pYt6r7Dtan8ameDBCo7Ys_8WNLanX7ScoQ-VyBEcZer_718g_JYwO0GsvIopp16T_7iHX12ZSDQ7_l8oKJW-wa7Ot-SmmHex6y8kbAZe1mzEDSSBumTv2SoEzJunnaLdB-RwetPgT7xN74K_iIgJufWU4DnZeS9eVtjj1HcfgHdPMDzAByBysCpabx3WuqgpbAh2GKazLtgT2Lg7KYYq8ffndOk9L7yIOFOB8p_WCM2J52wpKHLQUfm8ou3s2ykwjI83w5n5YijjF5c11r4Hlm9irbydJMvZuZ_g1-3MsmUZDWiJcpciYnGErISKNwKTXsWw"),
];

fn token_seeds() {
    let good = good_claims().to_string();
    let hs = good_token(SignAlg::Hs256, &good_claims());
    write("token", "hs256-valid", &hs);
    write("token", "eddsa-valid", good_token(SignAlg::EdDsa, &good_claims()));
    write("token", "es256-valid", good_token(SignAlg::Es256, &good_claims()));
    for (name, token) in PYTHON_TOKENS {
        write("token", name, token);
    }
    let body = b64(&good);
    write(
        "token",
        "alg-none",
        format!("{}.{body}.", b64(r#"{"alg":"none","typ":"JWT"}"#)),
    );
    // HS256 keyed with the published Ed25519 key: the classic algorithm confusion.
    let ed_jwk = gatehouse_fuzz::own_jwks().remove(0);
    let ed_x = ed_jwk["x"].as_str().unwrap_or_default();
    let confused = {
        use hmac::{Hmac, Mac};
        let signed = format!("{}.{body}", b64(r#"{"alg":"HS256","kid":"f-ed"}"#));
        let mut mac =
            <Hmac<sha2::Sha256> as Mac>::new_from_slice(ed_x.as_bytes()).unwrap_or_else(|_| unreachable!());
        mac.update(signed.as_bytes());
        format!(
            "{signed}.{}",
            Base64UrlUnpadded::encode_string(&mac.finalize().into_bytes())
        )
    };
    write("token", "alg-confusion", confused);
    write(
        "token",
        "eddsa-header-hs256-key",
        sign_raw(
            SignAlg::Hs256,
            br#"{"alg":"EdDSA","kid":"f-ed"}"#,
            good.as_bytes(),
        ),
    );
    write(
        "token",
        "expired",
        good_token(
            SignAlg::Hs256,
            &with(json!({"iat": NOW - 4000, "exp": NOW - 3000})),
        ),
    );
    write(
        "token",
        "crit",
        sign_raw(
            SignAlg::Hs256,
            br#"{"alg":"HS256","crit":["exp"]}"#,
            good.as_bytes(),
        ),
    );
    write(
        "token",
        "jku",
        sign_raw(
            SignAlg::Hs256,
            br#"{"alg":"HS256","jku":"https://evil.test/"}"#,
            good.as_bytes(),
        ),
    );
    write(
        "token",
        "unknown-kid",
        good_token(SignAlg::EdDsa, &good_claims()).replacen(
            &b64(r#"{"alg":"EdDSA","kid":"f-ed","typ":"JWT"}"#),
            &b64(r#"{"alg":"EdDSA","kid":"nope","typ":"JWT"}"#),
            1,
        ),
    );
    let dup = good.replacen('{', r#"{"sub":"admin","#, 1);
    write(
        "token",
        "duplicate-sub",
        sign_raw(SignAlg::Hs256, br#"{"alg":"HS256"}"#, dup.as_bytes()),
    );
    write("token", "padded", format!("{hs}="));
    write("token", "garbage", "x.y.z");
}

fn token_signed_seeds() {
    let good = good_claims().to_string();
    let seed = |name: &str, first: &str, header: &str, claims: &str| {
        write("token_signed", name, format!("{first}\n{header}\n{claims}"));
    };
    seed("hs256", "HS256 0", r#"{"alg":"HS256","typ":"JWT"}"#, &good);
    seed(
        "eddsa-later",
        "EdDSA 300",
        r#"{"alg":"EdDSA","kid":"f-ed"}"#,
        &good,
    );
    seed(
        "es256-at-jwt",
        "ES256 7000",
        r#"{"alg":"ES256","kid":"f-es","typ":"at+jwt"}"#,
        &good,
    );
    seed(
        "alg-mismatch",
        "HS256 0",
        r#"{"alg":"EdDSA","kid":"f-ed"}"#,
        &good,
    );
    seed("no-kid", "EdDSA 0", r#"{"alg":"EdDSA"}"#, &good);
    let c = |changes: Value| with(changes).to_string();
    seed(
        "nbf",
        "HS256 120",
        r#"{"alg":"HS256"}"#,
        &c(json!({"nbf": NOW + 30})),
    );
    seed(
        "float-exp",
        "HS256 0",
        r#"{"alg":"HS256"}"#,
        &c(json!({"exp": (NOW + 100) as f64 + 0.5})),
    );
    seed(
        "aud-array-roles-string",
        "ES256 60",
        r#"{"alg":"ES256"}"#,
        &c(json!({"aud": ["x", "api"], "roles": "admin user"})),
    );
    seed(
        "no-iat-long",
        "HS256 0",
        r#"{"alg":"HS256"}"#,
        &c(json!({"iat": null, "exp": NOW + 3661})),
    );
    seed(
        "iat-future",
        "EdDSA 0",
        r#"{"alg":"EdDSA"}"#,
        &c(json!({"iat": NOW + 61})),
    );
    seed(
        "exp-null",
        "HS256 0",
        r#"{"alg":"HS256"}"#,
        &c(json!({"exp": null})),
    );
    seed(
        "roles-object",
        "HS256 0",
        r#"{"alg":"HS256"}"#,
        &c(json!({"roles": {"admin": true}})),
    );
    seed(
        "sub-header-smuggling",
        "HS256 0",
        r#"{"alg":"HS256"}"#,
        &c(json!({"sub": "alice\r\nx-auth-roles: admin"})),
    );
    seed("cty-cbor", "HS256 0", r#"{"alg":"HS256","cty":"CBOR"}"#, &good);
    // Regression: chrono's earliest time as `nbf` made jwt-compact's maturity check panic.
    seed(
        "nbf-earliest",
        "HS256 0",
        r#"{"alg":"HS256"}"#,
        &c(json!({"nbf": -8_334_601_228_800_i64, "iat": null})),
    );
    seed(
        "duplicate-exp",
        "HS256 0",
        r#"{"alg":"HS256"}"#,
        &good.replacen('{', r#"{"exp":9999999999,"#, 1),
    );
}

fn config_seeds() {
    let demo = format!(
        r#"{{
  "issuer": "{ISSUER}", "audiences": ["api"], "algorithms": ["HS256"],
  "hmac_secret": {{"env": "SECRET_KEY"}}, "max_token_lifetime_seconds": 3600,
  "revocation": {{"cluster": "token", "path": "/revocations", "poll_seconds": 2, "max_stale_seconds": 30}},
  "rules": [
    {{"path": "/token", "methods": ["POST"], "require": "public"}},
    {{"prefix": "/admin", "methods": ["POST"], "require": {{"any_of": ["admin"]}}, "forward_authorization": true}},
    {{"prefix": "/.well-known", "methods": ["GET"], "require": "public"}},
    {{"path": "/users/{{id}}", "methods": ["DELETE"], "require": {{"any_of": ["admin"]}}}},
    {{"path": "/audit", "require": {{"all_of": ["admin", "auditor"]}}}},
    {{"prefix": "/internal", "require": "deny"}}
  ],
  "no_match": "authenticated"
}}"#
    );
    write("config", "demo", demo);
    let jwks = json!({"keys": gatehouse_fuzz::own_jwks()});
    write(
        "config",
        "inline-jwks",
        json!({"issuer": "i", "algorithms": ["EdDSA", "ES256"], "jwks": {"inline": jwks}, "realm": "api"})
            .to_string(),
    );
    write(
        "config",
        "remote-jwks",
        r#"{"issuer":"i","algorithms":["RS256","EdDSA"],"jwks":{"remote":{"cluster":"token","path":"/.well-known/jwks.json","refresh_seconds":60,"timeout_ms":500}}}"#,
    );
    write(
        "config",
        "forward-claims",
        r#"{"issuer":"i","algorithms":["HS256"],"hmac_secret":{"env":"K","hex_decode":true},"roles_claim":"scope",
            "forward":{"header_prefix":"x-user-","claims":{"sub":"id","scope":"scopes","email":"email"},"authorization":true},
            "token_cache":{"max_entries":0},"clock_skew_seconds":0,"max_token_bytes":64}"#,
    );
    // Regression: an unknown member named "" had the empty field name in its error.
    write(
        "config",
        "empty-member",
        r#"{"issuer":"i","algorithms":["HS256"],"hmac_secret":{"env":"K"},"":1}"#,
    );
    write(
        "config",
        "minimal",
        r#"{"issuer":"i","algorithms":["HS256"],"hmac_secret":{"env":"K"}}"#,
    );
    write(
        "config",
        "bad-pattern",
        r#"{"issuer":"i","algorithms":["HS256"],"hmac_secret":{"env":"K"},"rules":[{"path":"/a/../b/","require":"public"}]}"#,
    );
}

fn path_seeds() {
    let seeds: [(&str, &str); 14] = [
        ("me", "GET\n/users/me\nauthorization: @alice"),
        (
            "delete-bob",
            "DELETE\n/users/4\nauthorization: @bob\nx-auth-sub: root",
        ),
        (
            "delete-override",
            "GET\n/users/4\nX-HTTP-Method-Override: delete\nauthorization: @bob",
        ),
        (
            "delete-query",
            "POST\n/users/4?_method=DEL%45TE\nauthorization: @bob",
        ),
        (
            "dot-segments",
            "GET\n/internal/../users/me\nauthorization: @alice",
        ),
        (
            "encoded-dot",
            "GET\n/users/%2e%2e/internal\nauthorization: @alice",
        ),
        ("case-and-slash", "get\n/Internal/\nauthorization: @alice"),
        (
            "unreserved-escapes",
            "GET\n/%75sers/%4De?x=/../\nauthorization: @bob",
        ),
        (
            "admin-forward",
            "POST\n/admin/users/bob/disable\nAuthorization: @alice\nx_auth_roles: admin",
        ),
        (
            "public-spoof",
            "HEAD\n/healthz/\nX-Auth-Sub: root\nx-auth-roles: admin",
        ),
        ("options", "OPTIONS\n/internal/x\n"),
        ("semicolon", "GET\n/users;x=1/me\nauthorization: @alice"),
        (
            "two-tokens",
            "GET\n/audit\nauthorization: @alice\nAuthorization: @bob",
        ),
        (
            "expired-basic",
            "GET\n/users/me\nauthorization: @expired\nauthorization: Basic YTpi",
        ),
    ];
    for (name, seed) in seeds {
        write("path", name, seed);
    }
}

fn revocation_seeds() {
    let seeds: [(&str, String); 6] = [
        ("reset", format!(r#"{{"feed":"0a1b","cursor":3,"reset":true,"entries":[{{"sub":"bob","iat_before":{},"until":{}}},{{"jti":"c1","until":{}}}]}}"#, NOW - 1, NOW + 600, NOW + 600)),
        ("incremental", format!(r#"{{"feed":"f1","cursor":8,"entries":[{{"sub":"bob","iat_before":{},"until":{}}},{{"jti":"j2","until":{}}}]}}"#, NOW + 5, NOW + 700, NOW + 1)),
        ("expired-entry", format!(r#"{{"feed":"f1","cursor":9,"entries":[{{"jti":"old","until":{}}}]}}"#, NOW - 1)),
        ("bad-entry", r#"{"feed":"f1","cursor":1,"entries":[{"sub":"bob","jti":"x","until":1}]}"#.to_string()),
        ("extremes", r#"{"feed":"a b#&c","cursor":18446744073709551615,"reset":true,"entries":[{"sub":"s","iat_before":-9223372036854775808,"until":9223372036854775807}]}"#.to_string()),
        ("empty", r#"{"feed":"","cursor":0,"entries":[]}"#.to_string()),
    ];
    for (name, seed) in seeds {
        write("revocation", name, seed);
    }
}

fn form_seeds() {
    let seeds: [(&str, &str); 8] = [
        (
            "password-grant",
            "grant_type=password&username=alice&password=a+b%26c%3D&scope=user",
        ),
        (
            "refresh-grant",
            "grant_type=refresh_token&refresh_token=rt.0123456789abcdef",
        ),
        (
            "revoke",
            "token=eyJhbGciOiJIUzI1NiJ9.e30.sig&token_type_hint=access_token",
        ),
        (
            "fullwidth-username",
            "grant_type=password&username=%EF%BD%81%EF%BD%8C%EF%BD%89%EF%BD%83%EF%BD%85&password=x",
        ),
        ("cyrillic-username", "username=%D0%B0lice&password=x"),
        ("repeated", "a=1&&a=2"),
        ("bad-utf8-nul", "a=%ff&b=%00&c=%C3"),
        ("empty-pairs", "=&=x&y&&"),
    ];
    for (name, seed) in seeds {
        write("form", name, seed);
    }
}

fn main() {
    token_seeds();
    token_signed_seeds();
    config_seeds();
    path_seeds();
    revocation_seeds();
    form_seeds();
    println!("seeds written under fuzz/corpus/");
}
