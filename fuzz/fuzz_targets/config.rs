//! Arbitrary bytes as the plugin configuration: `config::compile`, with an environment
//! that always holds a good HMAC secret.
//!
//! Properties: no panic; an error names a field; a compiled policy holds only
//! canonical path patterns and methods, forwards only headers under its prefix,
//! has a challenge that cannot break out of its quotes, compiles the same twice, and
//! `decide` runs on it for a handful of requests without panicking.
#![no_main]


use gatehouse::config::compile;
use gatehouse::decision::{decide, Decision, Runtime};
use gatehouse::path::{canonical_method, canonical_path};
use gatehouse::routes::{PathPattern, Segment};
use gatehouse_fuzz::{check_identity_headers, env, good_claims, good_token, headers, SignAlg, NOW};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static BEARER: Vec<u8> = format!("Bearer {}", good_token(SignAlg::Hs256, &good_claims())).into_bytes();
}

fuzz_target!(|data: &[u8]| {
    let policy = match compile(data, env) {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.field.is_empty() && !e.message.is_empty(), "{e:?}");
            return;
        }
    };
    for rule in &policy.routes.rules {
        match &rule.pattern {
            PathPattern::Exact(p) | PathPattern::Prefix(p) => {
                assert_eq!(
                    canonical_path(p.as_bytes()).as_deref(),
                    Ok(p.as_str()),
                    "{rule:?}"
                );
            }
            PathPattern::Template(segments) => {
                assert!(!segments.is_empty(), "{rule:?}");
                for s in segments {
                    if let Segment::Literal(l) = s {
                        assert!(!l.is_empty() && !l.contains(['/', '{', '}', '?']), "{rule:?}");
                    }
                }
            }
        }
        for m in rule.methods.iter().flatten() {
            assert_eq!(
                canonical_method(m.as_bytes()).as_deref(),
                Some(m.as_str()),
                "{rule:?}"
            );
        }
    }
    let prefix = &policy.forward.header_prefix;
    assert!(
        prefix.ends_with('-')
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    );
    for (i, (_, header)) in policy.forward.claims.iter().enumerate() {
        assert!(
            header.starts_with(prefix.as_str()) && header.len() > prefix.len(),
            "{header}"
        );
        assert!(
            !policy.forward.claims[..i].iter().any(|(_, h)| h == header),
            "{header} twice"
        );
    }
    let realm = policy
        .challenge
        .strip_prefix("Bearer realm=\"")
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or_else(|| panic!("challenge {:?}", policy.challenge));
    assert!(
        !realm.is_empty()
            && realm
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    );
    assert!(policy.max_token_bytes >= 64 && !policy.providers.is_empty());
    for p in &policy.providers {
        assert!(p.token.max_lifetime_seconds >= 1);
        assert!(p.token.issuer.as_ref().is_none_or(|i| !i.is_empty()));
    }

    let again = compile(data, env).unwrap_or_else(|e| panic!("compiled once, then {e:?}"));
    assert_eq!(again.routes, policy.routes);
    assert_eq!(again.forward, policy.forward);
    for (a, b) in again.providers.iter().zip(&policy.providers) {
        assert_eq!(a.revocation, b.revocation);
        assert_eq!(a.jwks_remote, b.jwks_remote);
    }

    BEARER.with(|bearer| {
        let with_token = headers(&[("authorization", bearer), ("x-auth-sub", b"root")]);
        let without = headers(&[("X_AUTH_ROLES", b"admin")]);
        let mut runtime = Runtime::new(&policy);
        for (method, path) in [
            (&b"GET"[..], &b"/"[..]),
            (b"GET", b"/healthz"),
            (b"DELETE", b"/users/4"),
            (b"POST", b"/admin/users/bob/disable?x=1"),
            (b"get", b"/Internal/x/"),
        ] {
            for hs in [&with_token, &without] {
                let d = decide(&policy, &mut runtime, method, path, hs, NOW);
                check_identity_headers(&policy, hs, &d);
                if let Decision::Deny(denial, _) = &d {
                    assert!((400..=503).contains(&denial.status), "{denial:?}");
                }
            }
        }
    });
});
