//! Token attacks (RFC 8725 and the jwt_tool playbook) and `Authorization` header forms,
//! through the real Envoy running the top-level `envoy.yaml` in front of the token
//! service and the demo API. Forged tokens claim `mallory` with role `admin` and go to
//! the admin-only `DELETE /users/42`; their control, the same claims signed properly,
//! is let through, so each refusal is for the one thing the row changes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod attack_support;

use attack_support::{assert_no_failures, bearer, print_table, row, run, Row, Send};
use gatehouse_testkit::{
    b64url, demo_claims, hs256_signature, mint_raw, now, DemoTopology, Observed, DEMO_ISSUER,
    DEMO_PARTNER_ISSUER, DEMO_PARTNER_USERS, SECRET,
};
use serde_json::{json, Value};

const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;
const MALLORY_DELETED: &str = "api 200 DELETE /users/42 sub=mallory roles=admin";
const BOB_ME: &str = "api 200 GET /users/me sub=bob roles=user";

/// Mallory's admin claims, valid for ten minutes.
fn mallory() -> Value {
    demo_claims("mallory", &["admin"])
}

/// `base` with `changes` applied (`null` removes a claim).
fn with(base: Value, changes: Value) -> Value {
    let mut c = base;
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

/// Signed with the demo's secret.
fn sign(header: &str, payload: &str) -> String {
    mint_raw(header, payload, SECRET.as_bytes())
}

fn sign_claims(claims: &Value) -> String {
    sign(HS256, &claims.to_string())
}

fn delete_42(token: &str) -> Send {
    Send::call("DELETE", "/users/42", &[("Authorization", &bearer(token))])
}

fn me(token: &str) -> Send {
    Send::call("GET", "/users/me", &[("Authorization", &bearer(token))])
}

/// The same bytes with an unused low bit of the last character set: a lax decoder
/// reads the same value from different text. `part` must have unused bits.
fn non_canonical(part: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert_ne!(part.len() % 4, 0, "{part} has no unused bits");
    let last = part.as_bytes()[part.len() - 1];
    let index = ALPHABET.iter().position(|&c| c == last).unwrap();
    format!("{}{}", &part[..part.len() - 1], char::from(ALPHABET[index | 1]))
}

/// JSON text padded with spaces before its closing brace until its base64url form has
/// unused bits (length not a multiple of 3).
fn with_unused_bits(json: &str) -> String {
    let mut s = json.to_string();
    while s.len() % 3 == 0 {
        s.insert(s.len() - 1, ' ');
    }
    s
}

/// A token whose header and payload are given as base64url text, signed over that text.
fn sign_parts(header_b64: &str, payload_b64: &str, key: &[u8]) -> String {
    let input = format!("{header_b64}.{payload_b64}");
    format!("{input}.{}", hs256_signature(&input, key))
}

/// A valid token for bob of exactly `len` bytes (a padding claim fills it up).
fn token_of_len(len: usize) -> String {
    let b64_len = |n: usize| (4 * n).div_ceil(3);
    for spaces in 0..3 {
        let header = format!(r#"{{"alg":"HS256","typ":"JWT"{}}}"#, " ".repeat(spaces));
        let bare = with(demo_claims("bob", &["user"]), json!({"pad": ""})).to_string();
        // header . payload . 43-character signature
        let Some(payload_b64) = len.checked_sub(b64_len(header.len()) + 2 + 43) else {
            continue;
        };
        if payload_b64 % 4 == 1 {
            continue; // no byte length encodes to this
        }
        let payload_bytes = payload_b64 * 3 / 4;
        let Some(pad) = payload_bytes.checked_sub(bare.len()) else {
            continue;
        };
        let claims = with(demo_claims("bob", &["user"]), json!({"pad": "x".repeat(pad)}));
        let t = sign(&header, &claims.to_string());
        assert_eq!(t.len(), len);
        return t;
    }
    panic!("no token of {len} bytes");
}

fn token_rows(logged_in_alice: &str, logged_in_bob: &str, partner_dave: &str) -> Vec<Row> {
    let t = now();
    let good = sign_claims(&mallory());
    let (good_head, rest) = good.split_once('.').unwrap();
    let (good_body, good_sig) = rest.split_once('.').unwrap();
    let payload = mallory().to_string();
    let body = b64url(payload.as_bytes());
    let alg = |a: &str| format!(r#"{{"alg":"{a}","typ":"JWT"}}"#);
    let none = |a: &str| format!("{}.{body}.", b64url(alg(a).as_bytes()));
    let header_with = |extra: &str| sign(&format!(r#"{{"alg":"HS256","typ":"JWT",{extra}}}"#), &payload);
    let weak = |key: &[u8]| mint_raw(HS256, &payload, key);
    let kid = |kid: &str, key: &[u8]| {
        mint_raw(
            &json!({"alg": "HS256", "typ": "JWT", "kid": kid}).to_string(),
            &payload,
            key,
        )
    };
    let claims = |changes: Value| sign_claims(&with(mallory(), changes));
    // Time claims on bob's token to GET /users/me; `iat`/`exp` replaced as given.
    let timed = |changes: Value| sign_claims(&with(demo_claims("bob", &["user"]), changes));
    let raw_payload = |p: &str| sign(HS256, p);
    let spaced_header = with_unused_bits(HS256);
    let spaced_payload = with_unused_bits(&payload);
    let rsa_public_pem = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u\n+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyeh\nkd3qqGElvW/VDL5AaWTg0nLVkjRo9z+40RQzuVaE8AkAFmxZzow3x+VJYKdjykkJ\n0iT9wCS0DRTXu269V264Vf/3jvredZiKRkgwlL9xNAwxXFg0x/XFw005UWVRIkdg\ncKWTjpBP2dPwVZ4WWC+9aGVd+Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbc\nmwIDAQAB\n-----END PUBLIC KEY-----\n";
    let deep = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let mut rows = vec![
        // Controls.
        row(
            "control: mallory's claims, signed properly",
            delete_42(&good),
            MALLORY_DELETED,
        ),
        row(
            "control: bob's minted token on GET /users/me",
            me(&sign_claims(&demo_claims("bob", &["user"]))),
            BOB_ME,
        ),
        row(
            "control: alice's minted token on DELETE /users/42",
            delete_42(&sign_claims(&demo_claims("alice", &["admin", "user"]))),
            "api 200 DELETE /users/42 sub=alice roles=admin,user",
        ),
        row(
            "control: alice logged in through Envoy, DELETE /users/42",
            delete_42(logged_in_alice),
            "api 200 DELETE /users/42 sub=alice roles=admin,user",
        ),
        row(
            "control: bob logged in through Envoy, GET /users/me",
            me(logged_in_bob),
            BOB_ME,
        ),
        row(
            "control: bob logged in through Envoy, DELETE /users/42",
            delete_42(logged_in_bob),
            "filter 403 forbidden",
        ),
        // alg none and signature stripping.
        row("alg none", delete_42(&none("none")), "filter 401 algorithm"),
        row("alg None", delete_42(&none("None")), "filter 401 algorithm"),
        row("alg NONE", delete_42(&none("NONE")), "filter 401 algorithm"),
        row("alg nOnE", delete_42(&none("nOnE")), "filter 401 algorithm"),
        row(
            "alg none with the real signature kept",
            delete_42(&format!(
                "{}.{good_body}.{good_sig}",
                b64url(alg("none").as_bytes())
            )),
            "filter 401 algorithm",
        ),
        row(
            "stripped signature (h.p.)",
            delete_42(&format!("{good_head}.{good_body}.")),
            "filter 401 signature",
        ),
        row(
            "stripped signature and dot (h.p)",
            delete_42(&format!("{good_head}.{good_body}")),
            "filter 401 malformed",
        ),
        row(
            "null signature (32 zero bytes)",
            delete_42(&format!("{good_head}.{good_body}.{}", b64url(&[0; 32]))),
            "filter 401 signature",
        ),
        row(
            "signature text `null`",
            delete_42(&format!("{good_head}.{good_body}.null")),
            "filter 401 signature",
        ),
        row(
            "signature of another payload",
            delete_42(&format!(
                "{good_head}.{good_body}.{}",
                sign_claims(&demo_claims("bob", &["user"]))
                    .rsplit('.')
                    .next()
                    .unwrap()
            )),
            "filter 401 signature",
        ),
        row(
            "four parts",
            delete_42(&format!("{good}.{good_sig}")),
            "filter 401 malformed",
        ),
        // Non-canonical base64url, signed over the text as sent.
        row(
            "control: header and payload with padding spaces, canonical base64url",
            delete_42(&sign_parts(
                &b64url(spaced_header.as_bytes()),
                &b64url(spaced_payload.as_bytes()),
                SECRET.as_bytes(),
            )),
            MALLORY_DELETED,
        ),
        row(
            "non-canonical base64url header",
            delete_42(&sign_parts(
                &non_canonical(&b64url(spaced_header.as_bytes())),
                &b64url(spaced_payload.as_bytes()),
                SECRET.as_bytes(),
            )),
            "filter 401 malformed",
        ),
        row(
            "non-canonical base64url payload",
            delete_42(&sign_parts(
                &b64url(spaced_header.as_bytes()),
                &non_canonical(&b64url(spaced_payload.as_bytes())),
                SECRET.as_bytes(),
            )),
            "filter 401 malformed",
        ),
        row(
            "non-canonical base64url signature",
            delete_42(&format!("{good_head}.{good_body}.{}", non_canonical(good_sig))),
            "filter 401 malformed",
        ),
        row(
            "padded base64 (`=`) header (`=` only at the end of a b64token)",
            delete_42(&sign_parts(
                &padded(&b64url(spaced_header.as_bytes())),
                &b64url(spaced_payload.as_bytes()),
                SECRET.as_bytes(),
            )),
            "filter 400 authorization_malformed",
        ),
        row(
            "padded base64 (`=`) signature",
            delete_42(&format!("{good}=")),
            "filter 401 malformed",
        ),
        row(
            "standard base64 alphabet (`+`, `/`) payload",
            delete_42(&sign_parts(
                good_head,
                &standard_alphabet(&payload),
                SECRET.as_bytes(),
            )),
            "filter 401 malformed",
        ),
        // Weak and wrong keys.
        row(
            "weak key `secret`",
            delete_42(&weak(b"secret")),
            "filter 401 signature",
        ),
        row("empty key", delete_42(&weak(b"")), "filter 401 signature"),
        row(
            "FastAPI tutorial key",
            delete_42(&weak(
                b"09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7",
            )),
            "filter 401 signature",
        ),
        row(
            "jwt.io's `your-256-bit-secret`",
            delete_42(&weak(b"your-256-bit-secret")),
            "filter 401 signature",
        ),
        row(
            "the secret hex-decoded (bytes instead of text)",
            delete_42(&weak(&hex(SECRET))),
            "filter 401 signature",
        ),
        // Algorithm confusion.
        row(
            "HS256 signed with an RSA public key's PEM text",
            delete_42(&weak(rsa_public_pem.as_bytes())),
            "filter 401 signature",
        ),
    ];
    for a in [
        "RS256", "ES256", "EdDSA", "PS256", "HS384", "HS512", "hs256", "HS256 ",
    ] {
        rows.push(row(
            &format!("alg {a} header (HMAC-signed with the secret)"),
            delete_42(&sign(&alg(a), &payload)),
            "filter 401 algorithm",
        ));
    }
    rows.push(row(
        "RS256 header, HMAC-signed with the RSA public key text",
        delete_42(&mint_raw(&alg("RS256"), &payload, rsa_public_pem.as_bytes())),
        "filter 401 algorithm",
    ));
    // Keys and key locations in the header, and parameters that change verification.
    let header_params = [
        ("jwk (embedded key)", r#""jwk":{"kty":"oct","k":"c2VjcmV0"}"#),
        ("jku (remote JWKS)", r#""jku":"https://evil.example/jwks.json""#),
        (
            "x5u (remote certificate)",
            r#""x5u":"https://evil.example/cert.pem""#,
        ),
        ("x5c (embedded certificate)", r#""x5c":["MIIBszCCAVmgAwIBAgIUY"]"#),
        ("crit", r#""crit":["exp"]"#),
        ("b64 false", r#""b64":false"#),
        ("cty CBOR", r#""cty":"CBOR""#),
    ];
    for (name, extra) in header_params {
        rows.push(row(
            &format!("header {name}"),
            delete_42(&header_with(extra)),
            "filter 401 header_refused",
        ));
    }
    rows.extend([
        row(
            "header typ JOSE (not a JWT)",
            delete_42(&sign(r#"{"alg":"HS256","typ":"JOSE"}"#, &payload)),
            "filter 401 header_refused",
        ),
        row(
            "control: header typ at+jwt and an unknown parameter",
            delete_42(&sign(r#"{"alg":"HS256","typ":"at+jwt","x-note":"hi"}"#, &payload)),
            MALLORY_DELETED,
        ),
        // Hostile kid: signed with the key the injection would select, then with the real secret.
        row(
            "kid ../../../../dev/null, signed with an empty key",
            delete_42(&kid("../../../../dev/null", b"")),
            "filter 401 signature",
        ),
        row(
            "kid ../../etc/passwd, signed with the file's first line",
            delete_42(&kid("../../etc/passwd", b"root:x:0:0:root:/root:/bin/bash")),
            "filter 401 signature",
        ),
        row(
            "kid ' OR 1=1--, signed with `1`",
            delete_42(&kid("' OR 1=1--", b"1")),
            "filter 401 signature",
        ),
        row(
            "kid x' UNION SELECT 'k'--, signed with `k`",
            delete_42(&kid("x' UNION SELECT 'k'--", b"k")),
            "filter 401 signature",
        ),
        row(
            "kid of 4000 bytes, signed with an empty key",
            delete_42(&kid(&"A".repeat(4000), b"")),
            "filter 401 signature",
        ),
        row(
            "control: the same hostile kids with the real secret (kid is inert with HS256)",
            delete_42(&kid(
                &format!("../../etc/passwd' OR 1=1--{}", "A".repeat(4000)),
                SECRET.as_bytes(),
            )),
            MALLORY_DELETED,
        ),
        // Duplicate names.
        row(
            "duplicate alg in header (none, HS256)",
            delete_42(&sign(r#"{"alg":"none","alg":"HS256"}"#, &payload)),
            "filter 401 malformed",
        ),
        row(
            "duplicate alg in header (HS256, none)",
            delete_42(&sign(r#"{"alg":"HS256","alg":"none"}"#, &payload)),
            "filter 401 malformed",
        ),
        row(
            "duplicate kid in header",
            delete_42(&sign(r#"{"alg":"HS256","kid":"a","kid":"b"}"#, &payload)),
            "filter 401 malformed",
        ),
        row(
            "duplicate sub claim (bob, then mallory)",
            delete_42(&raw_payload(&payload.replacen('{', r#"{"sub":"bob","#, 1))),
            "filter 401 malformed",
        ),
        row(
            "duplicate roles claim (user, then admin)",
            delete_42(&raw_payload(&format!(r#"{{"roles":["user"],{}"#, &payload[1..]))),
            "filter 401 malformed",
        ),
        // Malformed and deeply nested JSON.
        row(
            "header not JSON",
            delete_42(&sign("not json", &payload)),
            "filter 401 malformed",
        ),
        row(
            "header a JSON array",
            delete_42(&sign(r#"["HS256"]"#, &payload)),
            "filter 401 malformed",
        ),
        row(
            "payload not JSON",
            delete_42(&raw_payload("not json")),
            "filter 401 malformed",
        ),
        row(
            "payload a JSON array",
            delete_42(&raw_payload("[1]")),
            "filter 401 malformed",
        ),
        row(
            "payload null",
            delete_42(&raw_payload("null")),
            "filter 401 malformed",
        ),
        row(
            "payload with trailing garbage",
            delete_42(&raw_payload(&format!("{payload}x"))),
            "filter 401 malformed",
        ),
        row(
            "payload with a trailing comma",
            delete_42(&raw_payload(&format!("{},}}", &payload[..payload.len() - 1]))),
            "filter 401 malformed",
        ),
        row(
            "payload not UTF-8",
            delete_42(&sign_parts(
                good_head,
                &b64url(&[b"{\"x\":\"\xff\xfe\",".as_slice(), &payload.as_bytes()[1..]].concat()),
                SECRET.as_bytes(),
            )),
            "filter 401 malformed",
        ),
    ]);
    // Nesting is easiest written as text.
    let nested = |depth: usize| raw_payload(&format!(r#"{{"deep":{},{}"#, deep(depth), &payload[1..]));
    rows.extend([
        row(
            "payload nested 1000 deep",
            delete_42(&nested(1000)),
            "filter 401 malformed",
        ),
        row(
            "header nested 1000 deep",
            delete_42(&sign(
                &format!(r#"{{"alg":"HS256","x":{}}}"#, deep(1000)),
                &payload,
            )),
            "filter 401 malformed",
        ),
        row(
            "control: an extra claim nested 100 deep",
            delete_42(&nested(100)),
            MALLORY_DELETED,
        ),
    ]);
    // Size.
    rows.extend([
        row(
            "control: a valid token of exactly max_token_bytes (8192)",
            me(&token_of_len(8192)),
            BOB_ME,
        ),
        row(
            "a valid token of max_token_bytes + 1 (8193)",
            me(&token_of_len(8193)),
            "filter 401 token_too_large",
        ),
        row(
            "a 70 KB token (over Envoy's header limit)",
            me(&token_of_len(70_000)),
            "envoy 431",
        ),
    ]);
    // Time claims.
    rows.extend([
        row(
            "exp missing",
            me(&timed(json!({"exp": null}))),
            "filter 401 claims",
        ),
        row(
            "exp as a string",
            me(&timed(json!({"exp": (t + 600).to_string()}))),
            "filter 401 malformed",
        ),
        row(
            "exp as a boolean",
            me(&timed(json!({"exp": true}))),
            "filter 401 malformed",
        ),
        row(
            "exp JSON null",
            me(&sign_claims(&set_null(demo_claims("bob", &["user"]), "exp"))),
            "filter 401 malformed",
        ),
        row(
            "control: exp as a float (NumericDate may be fractional)",
            me(&timed(json!({"exp": (t + 600) as f64 + 0.5}))),
            BOB_ME,
        ),
        row(
            "exp huge (year 5138)",
            me(&timed(json!({"exp": 99_999_999_999i64}))),
            "filter 401 lifetime",
        ),
        row(
            "exp i64::MAX",
            me(&timed(json!({"exp": i64::MAX}))),
            "filter 401 malformed",
        ),
        row(
            "exp 1e300",
            me(&timed(json!({"exp": 1e300}))),
            "filter 401 malformed",
        ),
        row(
            "exp negative",
            me(&timed(json!({"exp": -1, "iat": -100}))),
            "filter 401 expired",
        ),
        row(
            "exp two minutes ago (beyond the 60 s skew)",
            me(&timed(json!({"exp": t - 120, "iat": t - 600}))),
            "filter 401 expired",
        ),
        row(
            "control: exp 30 s ago (within the 60 s skew)",
            me(&timed(json!({"exp": t - 30, "iat": t - 600}))),
            BOB_ME,
        ),
        row(
            "nbf in two minutes",
            me(&timed(json!({"nbf": t + 120}))),
            "filter 401 not_yet_valid",
        ),
        row(
            "control: nbf in 30 s (within skew)",
            me(&timed(json!({"nbf": t + 30}))),
            BOB_ME,
        ),
        row(
            "nbf as a string",
            me(&timed(json!({"nbf": t.to_string()}))),
            "filter 401 malformed",
        ),
        row(
            "iat in two minutes",
            me(&timed(json!({"iat": t + 120}))),
            "filter 401 issued_in_future",
        ),
        row(
            "iat as a string",
            me(&timed(json!({"iat": t.to_string()}))),
            "filter 401 malformed",
        ),
        row(
            "lifetime 3601 s (exp - iat)",
            me(&timed(json!({"iat": t, "exp": t + 3601}))),
            "filter 401 lifetime",
        ),
        row(
            "control: lifetime exactly 3600 s",
            me(&timed(json!({"iat": t, "exp": t + 3600}))),
            BOB_ME,
        ),
        row(
            "no iat, exp in 3700 s",
            me(&timed(json!({"iat": null, "exp": t + 3700}))),
            "filter 401 lifetime",
        ),
        row(
            "iat far in the past to stretch the lifetime",
            me(&timed(json!({"iat": t - 86_400, "exp": t + 600}))),
            "filter 401 lifetime",
        ),
    ]);
    // Issuer and audience.
    for (name, iss) in [
        ("Gatehouse", json!("Gatehouse")),
        ("gatehouse/", json!("gatehouse/")),
        ("gatehouse + space", json!("gatehouse ")),
        ("https://gatehouse", json!("https://gatehouse")),
        ("array [gatehouse]", json!(["gatehouse"])),
        ("number", json!(1)),
    ] {
        rows.push(row(
            &format!("iss {name}"),
            delete_42(&claims(json!({"iss": iss}))),
            "filter 401 issuer",
        ));
    }
    rows.push(row(
        "iss missing",
        delete_42(&claims(json!({"iss": null}))),
        "filter 401 issuer",
    ));
    for (name, aud) in [
        ("API", json!("API")),
        ("api/", json!("api/")),
        ("api + space", json!("api ")),
        ("[other]", json!(["other"])),
        ("[]", json!([])),
        ("[api, 1]", json!(["api", 1])),
        ("object", json!({"api": true})),
    ] {
        rows.push(row(
            &format!("aud {name}"),
            delete_42(&claims(json!({"aud": aud}))),
            "filter 401 audience",
        ));
    }
    rows.extend([
        row(
            "aud missing",
            delete_42(&claims(json!({"aud": null}))),
            "filter 401 audience",
        ),
        row(
            "control: aud [other, api]",
            delete_42(&claims(json!({"aud": ["other", "api"]}))),
            MALLORY_DELETED,
        ),
        // Subject.
        row(
            "sub missing",
            delete_42(&claims(json!({"sub": null}))),
            "filter 401 claims",
        ),
        row(
            "sub empty",
            delete_42(&claims(json!({"sub": ""}))),
            "filter 401 claims",
        ),
        row(
            "sub a number",
            delete_42(&claims(json!({"sub": 42}))),
            "filter 401 claims",
        ),
    ]);
    // Roles: type confusion and look-alikes on the admin-only route.
    for (name, roles, expected) in [
        ("string admin (scope convention)", json!("admin"), MALLORY_DELETED),
        (
            "string `user admin` (scope convention)",
            json!("user admin"),
            "api 200 DELETE /users/42 sub=mallory roles=user,admin",
        ),
        ("[Admin]", json!(["Admin"]), "filter 403 forbidden"),
        ("[ADMIN]", json!(["ADMIN"]), "filter 403 forbidden"),
        ("[admin + space]", json!(["admin "]), "filter 403 forbidden"),
        ("[space + admin]", json!([" admin"]), "filter 403 forbidden"),
        (
            "[Cyrillic а + dmin]",
            json!(["\u{430}dmin"]),
            "filter 403 forbidden",
        ),
        ("[admin + NUL]", json!(["admin\u{0}"]), "filter 403 forbidden"),
        (
            "[admin,user] (one role)",
            json!(["admin,user"]),
            "filter 403 forbidden",
        ),
        ("string `admin,user`", json!("admin,user"), "filter 403 forbidden"),
        ("empty string", json!(""), "filter 403 forbidden"),
        ("[]", json!([]), "filter 403 forbidden"),
        ("[[admin]]", json!([["admin"]]), "filter 401 claims"),
        ("{admin: true}", json!({"admin": true}), "filter 401 claims"),
        ("[1]", json!([1]), "filter 401 claims"),
        ("[admin, null]", json!(["admin", null]), "filter 401 claims"),
        ("true", json!(true), "filter 401 claims"),
        ("1", json!(1), "filter 401 claims"),
    ] {
        rows.push(row(
            &format!("roles {name}"),
            delete_42(&claims(json!({"roles": roles}))),
            expected,
        ));
    }
    rows.extend([
        row(
            "roles JSON null",
            delete_42(&sign_claims(&set_null(mallory(), "roles"))),
            "filter 401 claims",
        ),
        row(
            "roles missing, scope admin",
            delete_42(&claims(json!({"roles": null, "scope": "admin"}))),
            "filter 403 forbidden",
        ),
        row(
            "roles missing, Roles [admin]",
            delete_42(&claims(json!({"roles": null, "Roles": ["admin"]}))),
            "filter 403 forbidden",
        ),
    ]);
    // The second issuer: its admin is not ours, and its name on our key proves nothing.
    let partner_claims = |sub: &str| {
        with(
            demo_claims(sub, &["admin", "user"]),
            json!({"iss": DEMO_PARTNER_ISSUER}),
        )
    };
    rows.extend([
        row(
            "control: dave logged in at the partner, GET /users/me",
            me(partner_dave),
            "api 200 GET /users/me sub=dave roles=admin,user",
        ),
        row(
            "the partner's admin dave on DELETE /users/42 (gatehouse tokens only)",
            delete_42(partner_dave),
            "filter 401 provider_not_accepted",
        ),
        row(
            "the partner's issuer on a token signed with the demo's HS256 secret",
            me(&sign_claims(&partner_claims("mallory"))),
            "filter 401 algorithm",
        ),
        row(
            "the partner's token with its iss changed to gatehouse (gatehouse takes HS256 only)",
            me(&reissued(partner_dave, DEMO_ISSUER)),
            "filter 401 algorithm",
        ),
    ]);
    rows
}

/// `token` with its payload's `iss` replaced, its header and signature kept.
fn reissued(token: &str, iss: &str) -> String {
    let mut parts = token.split('.');
    let (head, body, sig) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let mut claims: Value = serde_json::from_slice(&gatehouse_testkit::b64url_decode(body)).unwrap();
    claims["iss"] = json!(iss);
    format!("{head}.{}.{sig}", b64url(claims.to_string().as_bytes()))
}

/// `c` with `name` set to JSON `null`.
fn set_null(mut c: Value, name: &str) -> Value {
    c[name] = Value::Null;
    c
}

/// Base64url text with the `=` padding plain base64 would have.
fn padded(b64: &str) -> String {
    assert_ne!(b64.len() % 4, 0, "{b64} needs no padding");
    format!("{b64}{}", "=".repeat(4 - b64.len() % 4))
}

/// `payload` (with an extra claim chosen so its encoding has `-` or `_`) in the
/// standard base64 alphabet (`+`, `/`).
fn standard_alphabet(payload: &str) -> String {
    let with_marker = format!(r#"{{"x":"?>?>??>>~~~",{}"#, &payload[1..]);
    let url = b64url(with_marker.as_bytes());
    assert!(url.contains(['-', '_']), "{url}");
    url.replace('-', "+").replace('_', "/")
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn no_forged_admin_delete(_: &Row, o: &Observed) -> Result<(), String> {
    if o.api_deleted() && o.response.json()["by"] != "alice" && o.response.json()["by"] != "mallory" {
        return Err(format!("unexpected delete by {}", o.response.json()["by"]));
    }
    Ok(())
}

#[test]
fn forged_and_malformed_tokens_are_refused_through_envoy() {
    let demo = DemoTopology::start();
    let alice = demo.access_token("alice");
    let bob = demo.access_token("bob");
    let (dave, dave_password, _) = DEMO_PARTNER_USERS[0];
    let dave = demo.partner.access_token(dave, dave_password);
    let rows = token_rows(&alice, &bob, &dave);
    let (outcomes, failures) = run(&demo, &rows, no_forged_admin_delete);
    print_table(
        "forged_and_malformed_tokens_are_refused_through_envoy",
        &rows,
        &outcomes,
        None,
    );
    assert_no_failures("forged_and_malformed_tokens_are_refused_through_envoy", &failures);
    let log = demo.envoy.log();
    for secret in [SECRET, &alice, &bob, &dave] {
        assert!(!log.contains(secret), "Envoy's log holds a token or the secret");
    }
}

fn authorization_rows(bob: &str) -> Vec<Row> {
    let me_with = |value: &str| Send::call("GET", "/users/me", &[("Authorization", value)]);
    let raw = |headers: &[u8]| {
        let mut r = b"GET /users/me HTTP/1.1\r\nHost: gatehouse.test\r\n".to_vec();
        r.extend_from_slice(headers);
        r.extend_from_slice(b"\r\n");
        Send::Raw(r)
    };
    let (head, rest) = bob.split_once('.').unwrap();
    let malformed = "filter 400 authorization_malformed";
    let missing = "filter 401 missing_token";
    vec![
        row(
            "control: Bearer <token>",
            me_with(&format!("Bearer {bob}")),
            BOB_ME,
        ),
        row(
            "scheme bearer (RFC 9110: case-insensitive)",
            me_with(&format!("bearer {bob}")),
            BOB_ME,
        ),
        row("scheme BEARER", me_with(&format!("BEARER {bob}")), BOB_ME),
        row("scheme BeArEr", me_with(&format!("BeArEr {bob}")), BOB_ME),
        row(
            "leading and trailing spaces (optional whitespace, trimmed by Envoy)",
            me_with(&format!("  Bearer {bob}  ")),
            BOB_ME,
        ),
        row(
            "trailing tab (optional whitespace)",
            raw(format!("Authorization: Bearer {bob}\t\r\n").as_bytes()),
            BOB_ME,
        ),
        row(
            "two spaces after Bearer",
            me_with(&format!("Bearer  {bob}")),
            malformed,
        ),
        row(
            "no space (Bearer<token>)",
            me_with(&format!("Bearer{bob}")),
            missing,
        ),
        row(
            "tab instead of space",
            me_with(&format!("Bearer\t{bob}")),
            missing,
        ),
        row(
            "space inside the token",
            me_with(&format!("Bearer {head}. {rest}")),
            malformed,
        ),
        row(
            "tab inside the token",
            me_with(&format!("Bearer {head}.\t{rest}")),
            malformed,
        ),
        row(
            "NUL inside the token",
            raw(format!("Authorization: Bearer {head}.\0{rest}\r\n").as_bytes()),
            "envoy 400",
        ),
        row(
            "bare CR inside the token (Envoy drops it: bob's own token)",
            raw(format!("Authorization: Bearer {head}.\r{rest}\r\n").as_bytes()),
            BOB_ME,
        ),
        row(
            "non-ASCII byte inside the token",
            raw(format!("Authorization: Bearer {head}.\u{e9}{rest}\r\n").as_bytes()),
            malformed,
        ),
        row(
            "a second word after the token",
            me_with(&format!("Bearer {bob} x")),
            malformed,
        ),
        row(
            "two tokens, comma-separated",
            me_with(&format!("Bearer {bob},Bearer {bob}")),
            malformed,
        ),
        row(
            "token in quotes",
            me_with(&format!("Bearer \"{bob}\"")),
            malformed,
        ),
        row(
            "Bearer Bearer <token>",
            me_with(&format!("Bearer Bearer {bob}")),
            malformed,
        ),
        row(
            "token with `=` padding appended",
            me_with(&format!("Bearer {bob}=")),
            "filter 401 malformed",
        ),
        row("empty Bearer", me_with("Bearer"), malformed),
        row("Bearer and a space", me_with("Bearer "), malformed),
        row("empty Authorization value", raw(b"Authorization:\r\n"), missing),
        row(
            "Basic credentials",
            me_with("Basic Ym9iOmJvYi1kZW1vLXBhc3M="),
            missing,
        ),
        row("scheme Token", me_with(&format!("Token {bob}")), missing),
        row("scheme JWT", me_with(&format!("JWT {bob}")), missing),
        // Envoy joins repeated Authorization headers with a comma before the filter
        // sees them; either way they are refused with 400 invalid_request.
        row(
            "two Authorization headers, both bob's",
            Send::call(
                "GET",
                "/users/me",
                &[
                    ("Authorization", &format!("Bearer {bob}")),
                    ("Authorization", &format!("Bearer {bob}")),
                ],
            ),
            malformed,
        ),
        row(
            "Authorization and authorization (a junk one second)",
            Send::call(
                "GET",
                "/users/me",
                &[
                    ("Authorization", &format!("Bearer {bob}")),
                    ("authorization", "Bearer x.y.z"),
                ],
            ),
            malformed,
        ),
        row(
            "token only in the query (?access_token=)",
            Send::call("GET", &format!("/users/me?access_token={bob}"), &[]),
            missing,
        ),
        row(
            "token only in a cookie",
            Send::call("GET", "/users/me", &[("Cookie", &format!("access_token={bob}"))]),
            missing,
        ),
        row(
            "token only in Proxy-Authorization",
            Send::call(
                "GET",
                "/users/me",
                &[("Proxy-Authorization", &format!("Bearer {bob}"))],
            ),
            missing,
        ),
        row(
            "token only in X-Access-Token / X-Authorization",
            Send::call(
                "GET",
                "/users/me",
                &[
                    ("X-Access-Token", bob),
                    ("X-Authorization", &format!("Bearer {bob}")),
                ],
            ),
            missing,
        ),
        row(
            "obs-fold: Authorization: Bearer CRLF SP <token> (Envoy unfolds, RFC 9112 §5.2)",
            raw(format!("Authorization: Bearer\r\n {bob}\r\n").as_bytes()),
            BOB_ME,
        ),
        row(
            "HTTP/2: authorization: bearer <token>",
            Send::h2("GET", "/users/me", &[("authorization", &format!("bearer {bob}"))]),
            BOB_ME,
        ),
    ]
}

#[test]
fn authorization_header_forms_through_envoy() {
    let demo = DemoTopology::start();
    let bob = sign_claims(&demo_claims("bob", &["user"]));
    let rows = authorization_rows(&bob);
    let (outcomes, failures) = run(&demo, &rows, |_, _| Ok(()));
    print_table("authorization_header_forms_through_envoy", &rows, &outcomes, None);
    assert_no_failures("authorization_header_forms_through_envoy", &failures);
}
