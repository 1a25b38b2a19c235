//! Path canonicalisation and rule matching: `path::canonical_path`,
//! `path::canonical_method`, `Routes::lookup`, and `decide()` with an arbitrary
//! method, path and headers against the demo's rules (plus a closed prefix and an
//! all-of rule).
//!
//! Input: `<method>\n<path>\n<name>: <value>\n...`. A header value `@alice` (roles
//! admin, user), `@bob` (user) or `@expired` becomes `Bearer <that token>`.
//!
//! Properties: no panic; `canonical_path` is idempotent on its own output, ignores
//! the query, and its output has no dot or empty segment, no `;`, `\`, `#`, control or
//! non-ASCII byte and only upper-case escapes of bytes that may not be decoded;
//! `canonical_method` is idempotent; `decide` never lets a request through a closed
//! prefix (in any case, with or without a trailing slash), never allows `DELETE
//! /users/{id}` (by method or override header) without the admin role, allows
//! without a token only on the public paths, allows with a token only with exactly
//! one `Authorization` header, and never lets a spoofed identity header through.
#![no_main]


use gatehouse::config::compile;
use gatehouse::decision::{decide, Decision, Outcome, Runtime};
use gatehouse::path::{canonical_method, canonical_path};
use gatehouse::policy::Policy;
use gatehouse::routes::METHOD_OVERRIDE_HEADERS;
use gatehouse_fuzz::{check_identity_headers, env, good_claims, good_token, SignAlg, ISSUER, NOW};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

const RULES: &str = r#"[
  {"path": "/token", "methods": ["POST"], "require": "public"},
  {"path": "/revoke", "methods": ["POST"], "require": "public"},
  {"prefix": "/admin", "methods": ["POST"], "require": {"any_of": ["admin"]}, "forward_authorization": true},
  {"prefix": "/.well-known", "methods": ["GET"], "require": "public"},
  {"path": "/healthz", "methods": ["GET"], "require": "public"},
  {"path": "/users/me", "methods": ["GET"], "require": "authenticated"},
  {"path": "/users/{id}", "methods": ["DELETE"], "require": {"any_of": ["admin"]}},
  {"path": "/audit", "require": {"all_of": ["admin", "auditor"]}},
  {"prefix": "/internal", "require": "deny"},
  {"prefix": "/", "methods": ["OPTIONS"], "require": "public"}
]"#;

struct Fixture {
    policy: Policy,
    alice: Vec<u8>,
    bob: Vec<u8>,
    expired: Vec<u8>,
}

thread_local! {
    static FIXTURE: Fixture = {
        let config = format!(
            r#"{{"issuer":"{ISSUER}","audiences":["api"],"algorithms":["HS256"],"hmac_secret":{{"env":"K"}},
                "max_token_lifetime_seconds":3600,"rules":{RULES}}}"#
        );
        let policy = compile(config.as_bytes(), env).unwrap_or_else(|e| panic!("{e}"));
        let bearer = |changes: serde_json::Value| {
            let mut c = good_claims();
            for (k, v) in changes.as_object().into_iter().flatten() {
                c[k] = v.clone();
            }
            format!("Bearer {}", good_token(SignAlg::Hs256, &c)).into_bytes()
        };
        Fixture {
            policy,
            alice: bearer(json!({})),
            bob: bearer(json!({"sub": "bob", "roles": ["user"]})),
            expired: bearer(json!({"iat": NOW - 4000, "exp": NOW - 3000})),
        }
    };
}

fn check_canonical(raw: &[u8]) {
    let Ok(c) = canonical_path(raw) else { return };
    assert_eq!(
        canonical_path(c.as_bytes()).as_deref(),
        Ok(c.as_str()),
        "not idempotent on {raw:?}"
    );
    let query = raw.iter().position(|&b| b == b'?').unwrap_or(raw.len());
    assert_eq!(
        canonical_path(&raw[..query]).as_deref(),
        Ok(c.as_str()),
        "the query changed it"
    );
    assert!(c.starts_with('/'), "{c:?}");
    let segments: Vec<&str> = c.split('/').skip(1).collect();
    for (i, s) in segments.iter().enumerate() {
        assert!(*s != "." && *s != "..", "dot segment in {c:?}");
        assert!(!s.is_empty() || i + 1 == segments.len(), "empty segment in {c:?}");
    }
    let b = c.as_bytes();
    for (i, &ch) in b.iter().enumerate() {
        assert!(
            (0x21..0x7f).contains(&ch) && !b";\\#?".contains(&ch),
            "byte {ch:#x} in {c:?}"
        );
        if ch == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .unwrap_or_else(|| panic!("cut escape in {c:?}"));
            assert!(
                hex.iter()
                    .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)),
                "{c:?}"
            );
            let v = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("zz"), 16).unwrap_or(0);
            assert!(
                !(v.is_ascii_alphanumeric() || b"-_~./\\%;?#".contains(&v) || v < 0x20 || v == 0x7f),
                "escape of {v:#x} kept in {c:?}"
            );
        }
    }
}

fn token_of(value: &[u8]) -> &[u8] {
    let space = value.iter().position(|&b| b == b' ').unwrap_or(value.len());
    value.get(space + 1..).unwrap_or_default()
}

fn lower_trimmed(c: &str) -> String {
    let l = c.to_ascii_lowercase();
    match l.strip_suffix('/') {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => l,
    }
}

fn under(path: &str, prefix: &str) -> bool {
    path == prefix || path.starts_with(&format!("{prefix}/"))
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let method = lines.next().unwrap_or_default();
    let path = lines.next().unwrap_or_default();
    check_canonical(path);
    check_canonical(method);
    if let Some(m) = canonical_method(method) {
        assert!(!m.bytes().any(|b| b.is_ascii_lowercase()));
        assert_eq!(canonical_method(m.as_bytes()).as_deref(), Some(m.as_str()));
    }

    FIXTURE.with(|fx| {
        let headers: Vec<(String, Vec<u8>)> = lines
            .filter_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                let name = String::from_utf8_lossy(&line[..colon]).into_owned();
                let value = line[colon + 1..].strip_prefix(b" ").unwrap_or(&line[colon + 1..]);
                let value = match value {
                    b"@alice" => fx.alice.clone(),
                    b"@bob" => fx.bob.clone(),
                    b"@expired" => fx.expired.clone(),
                    v => v.to_vec(),
                };
                Some((name, value))
            })
            .collect();
        let mut runtime = Runtime::new(&fx.policy);
        let decision = decide(&fx.policy, &mut runtime, method, path, &headers, NOW);
        check_identity_headers(&fx.policy, &headers, &decision);
        let outcome = decision.outcome();
        if !matches!(decision, Decision::Allow { .. }) {
            return;
        }
        let c = canonical_path(path).unwrap_or_else(|e| panic!("allowed an ambiguous path ({e:?})"));
        let l = lower_trimmed(&c);
        assert!(
            !under(&l, "/internal"),
            "{outcome:?} through the closed prefix: {c:?}"
        );

        // The token after the (case-insensitive) scheme of each Authorization header.
        let authorization: Vec<&[u8]> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| token_of(v))
            .collect();
        let methods: Vec<String> = std::iter::once(method)
            .chain(
                headers
                    .iter()
                    .filter(|(n, _)| METHOD_OVERRIDE_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(n)))
                    .map(|(_, v)| v.as_slice()),
            )
            .map(|m| String::from_utf8_lossy(m).to_ascii_uppercase())
            .collect();
        let segments: Vec<&str> = l.split('/').skip(1).collect();
        if segments.len() == 2 && segments[0] == "users" && methods.iter().any(|m| m == "DELETE") {
            assert!(
                authorization == [token_of(&fx.alice)],
                "DELETE {c:?} allowed without the admin role ({outcome:?})"
            );
        }
        match outcome {
            Outcome::AllowedPublic => {
                let public = ["/token", "/revoke", "/healthz"].contains(&l.as_str())
                    || under(&l, "/.well-known")
                    || methods.iter().all(|m| m == "OPTIONS");
                assert!(public, "{c:?} allowed without a token");
            }
            Outcome::Allowed => {
                assert!(
                    authorization.len() == 1,
                    "allowed with {} Authorization headers",
                    authorization.len()
                );
                assert!(
                    authorization[0] == token_of(&fx.alice) || authorization[0] == token_of(&fx.bob),
                    "allowed with a token that is not one of the valid ones"
                );
            }
            // The fixture has no optional route and no preflight switch.
            Outcome::AllowedAnonymous | Outcome::AllowedPreflight => panic!("{c:?}: {outcome:?}"),
            Outcome::Denied(_) => unreachable!(),
        }
    });
});
