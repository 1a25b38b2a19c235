//! Fixtures and oracles shared by the fuzz targets.
//!
//! The policies are compiled with the filter's own `config::compile`, the tokens are
//! signed with keys fixed here. The oracles check a verified token against what the
//! docs promise, computed independently of `gatehouse::token`: the signature with
//! the raw algorithm (HMAC recomputed, or the JWKS key's primitive verify), the header
//! parameters, and every claim rule with `serde_json` values. A broken promise is a
//! panic, which libFuzzer reports as a crash.

use std::rc::Rc;

use base64ct::{Base64UrlUnpadded, Encoding};
use gatehouse::config::compile;
use gatehouse::decision::{decide, Decision, Outcome, Runtime};
use gatehouse::policy::Policy;
use gatehouse::token::VerifiedToken;
use hmac::{Hmac, Mac};
use jwt_compact::alg::{Ed25519, Es256, Rsa};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{Algorithm, AlgorithmSignature};
use serde_json::{json, Map, Value};

/// The HS256 secret (hex text, used as the key bytes as PyJWT does), as in the unit tests.
pub const SECRET: &str = "6b0a1f4c2e9d8b7a6f5e4d3c2b1a09f8e7d6c5b4a3928170f6e5d4c3b2a19080";
/// The filter's clock in every target, unix seconds.
pub const NOW: i64 = 1_800_000_000;
pub const ISSUER: &str = "https://gatehouse.test";
pub const AUDIENCE: &str = "api";
pub const SKEW: i64 = 60;
pub const MAX_LIFETIME: i64 = 3600;

/// The VM environment every configuration is compiled with.
pub fn env(_: &str) -> Option<String> {
    Some(SECRET.to_string())
}

/// The Ed25519 pair the targets sign with (`kid` "f-ed").
pub fn ed25519_pair() -> ed25519_compact::KeyPair {
    ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([0x11; 32]))
}

/// The P-256 key the targets sign with (`kid` "f-es").
pub fn p256_key() -> p256::ecdsa::SigningKey {
    // 0x22..22 is a valid scalar (below the group order), so this cannot fail.
    p256::ecdsa::SigningKey::from_slice(&[0x22; 32]).unwrap_or_else(|_| unreachable!())
}

/// The public keys of tests/fixtures/python-signed-tokens.json (made with Python's
/// `cryptography`): an RSA key among them, and tokens signed by them as seeds.
pub const PYTHON_JWKS: &str = r#"[
 {"kty":"OKP","crv":"Ed25519","x":"FeVPivm3BF33QpkUrLQ_Gx1FSccaRHGo-GCaoHgTjYg","kid":"k-ed","alg":"EdDSA","use":"sig"},
 {"kty":"EC","crv":"P-256","x":"_H1nnZYF-dH4dX1XuQ9EQvRAReI2gkC5sCa3Sg2IRgE","y":"1W6iP8X2RUMdesBdWFuwK16yE9oC3UDmgORQLswvvf8","kid":"k-es","alg":"ES256","use":"sig"},
 {"kty":"RSA","n":"v1nLsA3yLXQM2BWcGt9YmYozsJEF5vpT9YTicKiw0Z2e0al0z_NzI-gX-Y_xw8UYKWizSeJGXhd4F-x_tVNNhRVDsmvbkZTxd-sT3YBlvwyUKy-fojEoRdOe1TzH9nHMux6rPAySbFwS0UQvDZYsh9ugKCM79iCWcoGuUX7VaZ_1vh-RFlVNJVqUBaUvjURmNfzuwbAfdX4PHwUjUNX8Zal-CxKGZzhJvGA9GV2Xzm-RZtwODi57YSUpgZ6jz1CIB4ev_cjWrLc2APLzSY95ca8G6Maw3ZjRRGDvR5xdLW2_zzt38XcuDEtjW74uCB-vnybW3YUDnonwGWNgt8mGzQ","e":"AQAB","kid":"k-rs","alg":"RS256","use":"sig"}
]"#;

/// The public JWKs of the keys the targets sign with.
pub fn own_jwks() -> Vec<Value> {
    let with = |jwk: JsonWebKey<'_>, kid: &str, alg: &str| {
        let mut v = serde_json::to_value(&jwk).unwrap_or_default();
        v["kid"] = kid.into();
        v["alg"] = alg.into();
        v["use"] = "sig".into();
        v
    };
    let ed = ed25519_pair().pk;
    let es = jwt_compact::alg::SigningKey::<Es256>::to_verifying_key(&p256_key());
    vec![
        with(JsonWebKey::from(&ed), "f-ed", "EdDSA"),
        with(JsonWebKey::from(&es), "f-es", "ES256"),
    ]
}

/// One compiled configuration and what the oracle needs to know about it.
pub struct Fixture {
    pub name: &'static str,
    pub policy: Policy,
    pub algorithms: Vec<&'static str>,
    /// The JWKS of the configuration, as (kid, alg, JWK).
    pub jwks: Vec<Value>,
}

fn config(algorithms: &[&str], jwks: &[Value]) -> String {
    let mut c = json!({
        "issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": algorithms,
        "max_token_lifetime_seconds": MAX_LIFETIME, "clock_skew_seconds": SKEW,
        "rules": [{"path": "/healthz", "require": "public"}],
        "no_match": "authenticated",
    });
    if algorithms.contains(&"HS256") {
        c["hmac_secret"] = json!({"env": "SECRET_KEY"});
    }
    if !jwks.is_empty() {
        c["jwks"] = json!({"inline": {"keys": jwks}});
    }
    c.to_string()
}

/// `hs256`: HS256 only. `asym`: EdDSA and ES256 from an inline JWKS of our two keys
/// (so a token without `kid` finds its key). `mixed`: HS256, EdDSA, ES256 and RS256,
/// our keys and the Python fixture's, the set-up where algorithm confusion would show.
pub fn fixtures() -> Vec<Fixture> {
    let python: Vec<Value> = serde_json::from_str(PYTHON_JWKS).unwrap_or_default();
    let mut mixed_keys = own_jwks();
    mixed_keys.extend(python);
    let specs: [(&'static str, Vec<&'static str>, Vec<Value>); 3] = [
        ("hs256", vec!["HS256"], vec![]),
        ("asym", vec!["EdDSA", "ES256"], own_jwks()),
        ("mixed", vec!["HS256", "EdDSA", "ES256", "RS256"], mixed_keys),
    ];
    specs
        .into_iter()
        .map(|(name, algorithms, jwks)| {
            let json = config(&algorithms, &jwks);
            let policy = match compile(json.as_bytes(), env) {
                Ok(p) => p,
                Err(e) => panic!("fixture {name} does not compile: {e}"),
            };
            Fixture {
                name,
                policy,
                algorithms,
                jwks,
            }
        })
        .collect()
}

/// The signing algorithms the targets can sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignAlg {
    Hs256,
    EdDsa,
    Es256,
}

/// `base64url(header).base64url(payload).base64url(signature)` for arbitrary header
/// and payload bytes.
pub fn sign_raw(alg: SignAlg, header: &[u8], payload: &[u8]) -> String {
    let signed = format!(
        "{}.{}",
        Base64UrlUnpadded::encode_string(header),
        Base64UrlUnpadded::encode_string(payload)
    );
    let sig: Vec<u8> = match alg {
        SignAlg::Hs256 => hmac(signed.as_bytes()).to_vec(),
        SignAlg::EdDsa => Ed25519
            .sign(&ed25519_pair().sk, signed.as_bytes())
            .as_bytes()
            .to_vec(),
        SignAlg::Es256 => Es256.sign(&p256_key(), signed.as_bytes()).as_bytes().to_vec(),
    };
    format!("{signed}.{}", Base64UrlUnpadded::encode_string(&sig))
}

fn hmac(message: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// A token signed the way the token service signs one, valid at [`NOW`].
pub fn good_token(alg: SignAlg, claims: &Value) -> String {
    let (name, kid) = match alg {
        SignAlg::Hs256 => ("HS256", None),
        SignAlg::EdDsa => ("EdDSA", Some("f-ed")),
        SignAlg::Es256 => ("ES256", Some("f-es")),
    };
    let mut header = json!({"alg": name, "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = kid.into();
    }
    sign_raw(alg, header.to_string().as_bytes(), claims.to_string().as_bytes())
}

pub fn good_claims() -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "roles": ["admin", "user"],
           "iat": NOW - 10, "exp": NOW + 600, "jti": "j1"})
}

/// Whether the signature of `token` is valid under the configuration's keys for the
/// algorithm its header names, checked with the algorithm primitives directly.
fn signature_valid(fx: &Fixture, alg: &str, kid: Option<&str>, token: &str) -> bool {
    let Some((signed, sig)) = token.rsplit_once('.') else {
        return false;
    };
    let Ok(sig) = Base64UrlUnpadded::decode_vec(sig) else {
        return false;
    };
    if alg == "HS256" {
        return fx.algorithms.contains(&"HS256") && hmac(signed.as_bytes()).as_slice() == sig.as_slice();
    }
    let candidates: Vec<&Value> = fx
        .jwks
        .iter()
        .filter(|k| k["alg"] == alg && kid.is_none_or(|kid| k["kid"] == kid))
        .collect();
    candidates.iter().any(|jwk| {
        let Ok(jwk) = serde_json::from_value::<JsonWebKey<'_>>((*jwk).clone()) else {
            return false;
        };
        match alg {
            "EdDSA" => match (
                <Ed25519 as Algorithm>::VerifyingKey::try_from(&jwk),
                <Ed25519 as Algorithm>::Signature::try_from_slice(&sig),
            ) {
                (Ok(k), Ok(s)) => Ed25519.verify_signature(&s, &k, signed.as_bytes()),
                _ => false,
            },
            "ES256" => match (
                <Es256 as Algorithm>::VerifyingKey::try_from(&jwk),
                <Es256 as Algorithm>::Signature::try_from_slice(&sig),
            ) {
                (Ok(k), Ok(s)) => Es256.verify_signature(&s, &k, signed.as_bytes()),
                _ => false,
            },
            "RS256" => match (
                jwt_compact::alg::RsaPublicKey::try_from(&jwk),
                <Rsa as Algorithm>::Signature::try_from_slice(&sig),
            ) {
                (Ok(k), Ok(s)) => Rsa::rs256().verify_signature(&s, &k, signed.as_bytes()),
                _ => false,
            },
            _ => false,
        }
    })
}

fn decode_json(part: &str) -> Option<Map<String, Value>> {
    let bytes = Base64UrlUnpadded::decode_vec(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A JSON number as jwt-compact reads a timestamp.
fn timestamp(v: &Value) -> Option<i64> {
    if let Some(i) = v.as_i64() {
        Some(i)
    } else if let Some(u) = v.as_u64() {
        i64::try_from(u).ok()
    } else {
        #[allow(clippy::cast_possible_truncation)]
        v.as_f64().map(|f| f as i64)
    }
}

/// Panics unless `token`, which `gatehouse::token::verify` accepted at `now` under
/// `fx`, is what docs/configuration.md says may pass: a good signature by a configured key under
/// an accepted algorithm, no refused header parameter, and every claim rule.
pub fn check_verified(fx: &Fixture, token: &str, v: &VerifiedToken, now: i64) {
    let fail = |why: &str| -> ! { panic!("[{}] accepted a token that {why}: {token:?} -> {v:?}", fx.name) };
    if token.len() > fx.policy.max_token_bytes {
        fail("is over the size cap");
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, _] = parts[..] else {
        fail("does not have three parts");
    };
    let Some(header) = decode_json(header) else {
        fail("has no JSON object header in canonical base64url");
    };
    let Some(alg) = header.get("alg").and_then(Value::as_str) else {
        fail("has no string alg");
    };
    if !fx.algorithms.contains(&alg) {
        fail("names an algorithm the configuration does not accept");
    }
    for refused in ["crit", "b64", "jwk", "x5c", "jku", "x5u"] {
        if header.contains_key(refused) {
            fail("has a refused header parameter");
        }
    }
    if let Some(typ) = header.get("typ") {
        let ok = typ.as_str().is_some_and(|t| {
            ["jwt", "at+jwt", "application/at+jwt"]
                .iter()
                .any(|a| a.eq_ignore_ascii_case(t))
        });
        if !ok {
            fail("has a typ that is not JWT");
        }
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => fail("has a kid that is not a string"),
    };
    if !signature_valid(fx, alg, kid, token) {
        fail("has no valid signature by a configured key");
    }

    let Some(claims) = decode_json(payload) else {
        fail("has no JSON object payload");
    };
    if claims.get("iss").and_then(Value::as_str) != Some(ISSUER) {
        fail("has the wrong issuer");
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == AUDIENCE,
        Some(Value::Array(items)) => {
            items.iter().all(Value::is_string) && items.iter().any(|a| a == AUDIENCE)
        }
        _ => false,
    };
    if !aud_ok {
        fail("does not name the audience");
    }
    match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() && *s == v.subject => {}
        _ => fail("has no non-empty string sub (or another than verified)"),
    }
    let expected_roles: Vec<String> = match claims.get("roles") {
        None => vec![],
        Some(Value::String(s)) => s
            .split(' ')
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect(),
        Some(_) => fail("has a roles claim of the wrong type"),
    };
    if expected_roles != v.roles {
        fail("verified to other roles than its claim says");
    }
    let time = |name: &str| -> Option<i64> {
        claims
            .get(name)
            .filter(|v| !v.is_null())
            .map(|t| timestamp(t).unwrap_or_else(|| fail("has a time claim that is not a number")))
    };
    let Some(exp) = time("exp") else {
        fail("has no exp");
    };
    let nbf = time("nbf");
    let iat = time("iat");
    if (v.expires_at, v.not_before, v.issued_at) != (exp, nbf, iat) {
        fail("verified to other times than its claims say");
    }
    let skew = fx.policy.providers[0].token.clock_skew_seconds;
    let max = fx.policy.providers[0].token.max_lifetime_seconds;
    if i128::from(now) > i128::from(exp) + i128::from(skew) {
        fail("has expired");
    }
    if nbf.is_some_and(|nbf| i128::from(now) < i128::from(nbf) - i128::from(skew)) {
        fail("is not valid yet");
    }
    if iat.is_some_and(|iat| i128::from(iat) > i128::from(now) + i128::from(skew)) {
        fail("was issued in the future");
    }
    let start = iat.or(nbf).unwrap_or(now);
    if i128::from(exp) - i128::from(start) > i128::from(max)
        || i128::from(exp) - i128::from(now) > i128::from(max) + i128::from(skew)
    {
        fail("lives longer than the cap");
    }
}

/// Request headers as the filter receives them.
pub fn headers(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect()
}

/// Panics unless an `Allow` keeps the identity headers honest: every incoming header
/// under the prefix (with `_` read as `-`, any case) is removed or replaced, and every
/// header set is under the prefix with a value that cannot split into two.
pub fn check_identity_headers(policy: &Policy, headers: &[(String, Vec<u8>)], decision: &Decision<'_>) {
    let Decision::Allow { remove, set, .. } = decision else {
        return;
    };
    let prefix = &policy.forward.header_prefix;
    for (name, _) in headers {
        let folded = name.to_ascii_lowercase().replace('_', "-");
        if folded.starts_with(prefix.as_str())
            && !remove.contains(&name.as_str())
            && !set.iter().any(|(s, _)| *s == name)
        {
            panic!("incoming identity header {name:?} survives: remove {remove:?}, set {set:?}");
        }
    }
    // Every value is visible ASCII; one that starts like JSON is JSON, any other is
    // plain text without parameter delimiters, quotes or backslashes (commas only
    // between list items). See src/forward.rs.
    for (name, value) in set {
        let visible = !value.is_empty() && value.bytes().all(|b| (0x20..0x7f).contains(&b));
        let readable = if value.starts_with(['"', '[', '{']) {
            serde_json::from_str::<Value>(value).is_ok()
        } else {
            !value.contains([';', '"', '\\']) && !value.split(',').any(str::is_empty)
        };
        if !name.starts_with(prefix.as_str()) || !visible || !readable {
            panic!("set {name:?}: {value:?} is not a safe identity header");
        }
    }
}

/// `gatehouse::token::verify` with the configuration's inline keys, every provider
/// accepted.
pub fn verify_inline(fx: &Fixture, token: &str, now: i64) -> Result<VerifiedToken, gatehouse::decision::Reason> {
    let keys: Vec<Rc<gatehouse::keys::KeySet>> = fx.policy.providers.iter().map(|p| Rc::clone(&p.inline_keys)).collect();
    gatehouse::token::verify(&fx.policy, &keys, token, now, |_| true).map_err(|r| r.reason)
}

/// `decide` for one Bearer token on a protected route, fresh (no cache), with the
/// configuration's inline keys.
pub fn decide_fresh(fx: &Fixture, headers: &[(String, Vec<u8>)], now: i64) -> Outcome {
    let mut runtime = Runtime::new(&fx.policy);
    let decision = decide(&fx.policy, &mut runtime, b"GET", b"/api/x", headers, now);
    check_identity_headers(&fx.policy, headers, &decision);
    decision.outcome()
}
