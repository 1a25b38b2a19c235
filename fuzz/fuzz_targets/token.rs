//! Arbitrary bytes as the Bearer token: `token::verify` directly and `decide()` on a
//! protected route, under an HS256, an asymmetric (inline JWKS: EdDSA, ES256) and a
//! mixed configuration (all four algorithms, HS256 next to public keys).
//!
//! Properties: no panic; a token that verifies passes the independent oracle
//! (`check_verified`: signature by a configured key, header, every claim rule);
//! `decide` allows exactly when the header is a well-formed `Bearer <b64token>` and
//! the token verifies (else it refuses for the same reason as `verify`); a cached
//! decision is the same as a fresh one; spoofed identity headers never survive.
#![no_main]


use gatehouse::decision::{decide, Outcome, Reason, Runtime};
use gatehouse_fuzz::{verify_inline, check_identity_headers, check_verified, decide_fresh, fixtures, headers, Fixture, NOW};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static FIXTURES: Vec<Fixture> = fixtures();
}

fn is_b64token(b: &[u8]) -> bool {
    let end = b
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || b"-._~+/".contains(&c)))
        .unwrap_or(b.len());
    end > 0 && b[end..].iter().all(|&c| c == b'=')
}

fuzz_target!(|data: &[u8]| {
    FIXTURES.with(|fixtures| {
        for fx in fixtures {
            let token = std::str::from_utf8(data).ok();
            let verified = token.map(|t| verify_inline(fx, t, NOW));
            if let (Some(t), Some(Ok(v))) = (token, &verified) {
                check_verified(fx, t, v, NOW);
            }

            let mut value = b"Bearer ".to_vec();
            value.extend_from_slice(data);
            let hs = headers(&[
                ("authorization", &value),
                ("x-auth-sub", b"root"),
                ("X_Auth_Roles", b"admin"),
            ]);
            let outcome = decide_fresh(fx, &hs, NOW);
            let expected = match &verified {
                Some(_) if !is_b64token(data) => Outcome::Denied(Reason::AuthorizationMalformed),
                Some(Ok(_)) => Outcome::Allowed,
                Some(Err(reason)) => Outcome::Denied(*reason),
                None => Outcome::Denied(Reason::AuthorizationMalformed),
            };
            if outcome != expected {
                panic!("[{}] decide said {outcome:?}, verify says {expected:?}", fx.name);
            }

            // The same token twice through a cache: the second answer is a hit and agrees.
            let mut runtime = Runtime::new(&fx.policy);
            for _ in 0..2 {
                let d = decide(&fx.policy, &mut runtime, b"GET", b"/api/x", &hs, NOW);
                check_identity_headers(&fx.policy, &hs, &d);
                assert_eq!(d.outcome(), outcome, "[{}] cached decision differs", fx.name);
            }
        }
    });
});
