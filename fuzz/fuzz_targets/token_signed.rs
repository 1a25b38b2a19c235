//! Arbitrary header and claims, properly signed: the claim, time and header checks
//! behind the signature, which random bytes never reach.
//!
//! Input: `<alg> <seconds>\n<header JSON>\n<claims JSON>`, where `<alg>` is `HS256`,
//! `EdDSA` or `ES256` (else the first byte picks one) and `<seconds>` how long after
//! [`NOW`] the cached token is used again. The bytes are signed with the fixture's key
//! for that algorithm and checked under the three configurations.
//!
//! Properties: no panic; whatever verifies passes the independent oracle; `decide`
//! agrees with `verify`; a token served from the cache later (up to two hours) gets
//! the same answer as a fresh verification at that time.
#![no_main]


use gatehouse::decision::{decide, Outcome, Runtime};
use gatehouse_fuzz::verify_inline;
use gatehouse_fuzz::{check_verified, decide_fresh, fixtures, headers, sign_raw, Fixture, SignAlg, NOW};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static FIXTURES: Vec<Fixture> = fixtures();
}

fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

fuzz_target!(|data: &[u8]| {
    let (first, rest) = split_line(data);
    let (header, payload) = split_line(rest);
    let mut words = first.split(|&b| b == b' ');
    let alg = match words.next().unwrap_or_default() {
        b"HS256" => SignAlg::Hs256,
        b"EdDSA" => SignAlg::EdDsa,
        b"ES256" => SignAlg::Es256,
        other => match other.first().copied().unwrap_or(0) % 3 {
            0 => SignAlg::Hs256,
            1 => SignAlg::EdDsa,
            _ => SignAlg::Es256,
        },
    };
    let later: i64 = words
        .next()
        .and_then(|w| std::str::from_utf8(w).ok())
        .and_then(|w| w.parse::<u16>().ok())
        .map_or(0, |s| i64::from(s % 7200));
    let token = sign_raw(alg, header, payload);

    FIXTURES.with(|fixtures| {
        for fx in fixtures {
            let verified = verify_inline(fx, &token, NOW);
            if let Ok(v) = &verified {
                check_verified(fx, &token, v, NOW);
            }
            let value = format!("Bearer {token}");
            let hs = headers(&[("authorization", value.as_bytes())]);
            let outcome = decide_fresh(fx, &hs, NOW);
            match (&verified, outcome) {
                (Ok(_), Outcome::Allowed) => {}
                (Err(r), Outcome::Denied(d)) if *r == d => {}
                (v, o) => panic!("[{}] decide said {o:?}, verify said {v:?}", fx.name),
            }

            // Cached at NOW, used `later`: the same answer as verifying afresh then.
            let mut runtime = Runtime::new(&fx.policy);
            let first = decide(&fx.policy, &mut runtime, b"GET", b"/api/x", &hs, NOW).outcome();
            assert_eq!(first, outcome, "[{}]", fx.name);
            let cached = decide(&fx.policy, &mut runtime, b"GET", b"/api/x", &hs, NOW + later).outcome();
            let fresh = decide_fresh(fx, &hs, NOW + later);
            if cached != fresh {
                panic!(
                    "[{}] cached at {NOW}, at +{later}s the cache says {cached:?}, a fresh check {fresh:?}",
                    fx.name
                );
            }
            if let Ok(v) = verify_inline(fx, &token, NOW + later) {
                check_verified(fx, &token, &v, NOW + later);
            }
        }
    });
});
