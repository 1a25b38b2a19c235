//! Staged JWT validation, as RFC 8725 asks.
//!
//! 1. size and shape: `UntrustedToken` (three base64url parts, strict base64, JSON header
//!    with unique names); header parameters we do not implement are refused;
//! 2. the algorithm comes from the configuration, never from the token: the token's
//!    `alg` must be on the list, then that algorithm's validator checks the signature
//!    and parses the claims (a duplicate claim name fails here);
//! 3. time, with the host clock injected: `exp` required, `nbf`, `iat` not in the
//!    future, and a cap on the lifetime;
//! 4. issuer, audience, subject and roles, each with its type checked.

use std::rc::Rc;

use base64ct::{Base64UrlUnpadded, Encoding};
use chrono::{DateTime, Duration, TimeZone, Utc};
use jwt_compact::alg::{Ed25519, Es256, Rsa};
use jwt_compact::{
    AlgorithmExt, Claims, ParseError, Renamed, TimeOptions, Token, UntrustedToken, ValidationError,
};
use serde::Deserialize;
use serde_json::Value;

use crate::claims::{self, ClaimError, StrictObject};
use crate::decision::Reason;
use crate::es384::Es384;
use crate::hs256::Hs256;
use crate::keys::{AsymAlg, KeyLookup, KeyMaterial, KeySet};
use crate::policy::{Policy, TokenPolicy};

/// Header parameters that would change how the token must be verified (RFC 7515
/// §4.1.11 `crit`, RFC 7797 `b64`) or that carry keys or key locations chosen by the
/// sender (`jwk`, `x5c`; `jku` and `x5u` are read by jwt-compact itself). We never
/// honour them, so a token that needs them is refused rather than misread.
const REFUSED_HEADER_PARAMS: [&str; 4] = ["crit", "b64", "jwk", "x5c"];

/// `typ` values that say "this is a JWT" (RFC 7519 §5.1, RFC 9068 §2.1).
const ACCEPTED_TYPES: [&str; 3] = ["jwt", "at+jwt", "application/at+jwt"];

/// A token that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The provider (index into [`Policy::providers`]) whose token it is.
    pub provider: usize,
    pub subject: String,
    pub roles: Vec<String>,
    pub claims: StrictObject,
    /// `exp`, unix seconds.
    pub expires_at: i64,
    /// `nbf`, unix seconds.
    pub not_before: Option<i64>,
    /// `iat`, unix seconds: revocation of a subject covers the tokens issued before it.
    pub issued_at: Option<i64>,
}

impl VerifiedToken {
    /// `jti`, when it is a string: the id a single token is revoked by.
    pub fn token_id(&self) -> Option<&str> {
        claims::string_claim(&self.claims, "jti").ok()
    }

    /// The whole verified payload, as JSON (the time claims put back).
    pub fn payload(&self) -> Value {
        let mut payload = self.claims.to_value();
        if let Value::Object(map) = &mut payload {
            map.insert("exp".into(), self.expires_at.into());
            if let Some(nbf) = self.not_before {
                map.insert("nbf".into(), nbf.into());
            }
            if let Some(iat) = self.issued_at {
                map.insert("iat".into(), iat.into());
            }
        }
        payload
    }
}

impl VerifiedToken {
    /// Whether `exp` and `nbf` still allow the token at `now` (for a cached token: the
    /// other checks do not depend on time).
    pub fn valid_at(&self, now: i64, skew: i64) -> bool {
        now <= self.expires_at.saturating_add(skew)
            && self.not_before.is_none_or(|nbf| now >= nbf.saturating_sub(skew))
    }
}

/// Why a token was refused, and whose it was when that was known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub reason: Reason,
    pub provider: Option<usize>,
}

impl From<Reason> for Refused {
    fn from(reason: Reason) -> Self {
        Refused {
            reason,
            provider: None,
        }
    }
}

/// Only `iss`, read before the signature is checked, to choose whose keys check it.
#[derive(Deserialize)]
struct IssuerOnly {
    #[serde(default)]
    iss: Option<Value>,
}

/// The provider a token claims to come from: its `iss` selects exactly one (never
/// "try every key"), and a token without `iss` only the provider whose tokens carry
/// none. Read before the signature is checked (and checked again after it). With a
/// single provider that has an issuer, that one, its `iss` checked after the
/// signature: the order of checks (and so the answers) of a configuration without
/// `providers` stay as they were.
fn select_provider(policy: &Policy, token: &str) -> Result<usize, Reason> {
    if let [only] = policy.providers.as_slice() {
        if only.token.issuer.is_some() {
            return Ok(0);
        }
    }
    let payload = token.split('.').nth(1).ok_or(Reason::Malformed)?;
    let bytes = Base64UrlUnpadded::decode_vec(payload).map_err(|_| Reason::Malformed)?;
    // serde would read a struct from a JSON array too; claims are an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Reason::Malformed);
    }
    // A duplicate `iss` is an error here, as it is for the full parse.
    let peek: IssuerOnly = serde_json::from_slice(&bytes).map_err(|_| Reason::Malformed)?;
    let iss = match &peek.iss {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(Reason::Issuer),
    };
    policy.provider_for(iss).ok_or(Reason::Issuer)
}

/// Verifies `token` (the part after `Bearer `) at unix time `now`, with the keys of
/// each provider (`keys`, indexed like the providers). `accepts` says which
/// providers the route takes: a token of another is refused before its signature is
/// checked.
pub fn verify(
    policy: &Policy,
    keys: &[Rc<KeySet>],
    token: &str,
    now: i64,
    accepts: impl Fn(usize) -> bool,
) -> Result<VerifiedToken, Refused> {
    if token.len() > policy.max_token_bytes {
        return Err(Reason::TokenTooLarge.into());
    }

    let untrusted = UntrustedToken::<StrictObject>::try_from(token).map_err(|e| match e {
        ParseError::InvalidTokenStructure
        | ParseError::InvalidBase64Encoding
        | ParseError::MalformedHeader(_) => Reason::Malformed,
        ParseError::UnsupportedContentType(_) => Reason::HeaderRefused,
        _ => Reason::Malformed,
    })?;
    let header = untrusted.header();
    if header.key_set_url.is_some()
        || header.certificate_url.is_some()
        || REFUSED_HEADER_PARAMS
            .iter()
            .any(|p| header.other_fields.contains(p))
    {
        return Err(Reason::HeaderRefused.into());
    }
    if let Some(typ) = &header.token_type {
        if !ACCEPTED_TYPES.iter().any(|t| t.eq_ignore_ascii_case(typ)) {
            return Err(Reason::HeaderRefused.into());
        }
    }

    let index = select_provider(policy, token)?;
    let refused = |reason: Reason| Refused {
        reason,
        provider: Some(index),
    };
    let (Some(provider), Some(keys)) = (policy.providers.get(index), keys.get(index)) else {
        return Err(Reason::Internal.into());
    };
    if !accepts(index) {
        return Err(refused(Reason::ProviderNotAccepted));
    }
    let policy = &provider.token;
    let verified = check_signature(policy, keys, &untrusted).map_err(refused)?;
    let claims = verified.claims();

    check_time(claims, policy, now).map_err(refused)?;
    let expires_at = claims.expiration.map_or(now, |t| t.timestamp());
    let not_before = claims.not_before.map(|t| t.timestamp());
    let issued_at = claims.issued_at.map(|t| t.timestamp());

    let custom = &claims.custom;
    match (claims::string_claim(custom, "iss"), &policy.issuer) {
        (Ok(iss), Some(want)) if iss == want => {}
        (Err(ClaimError::Missing), None) => {}
        _ => return Err(refused(Reason::Issuer)),
    }
    if !policy.audiences.is_empty() {
        let audiences =
            claims::audiences_in(custom, &policy.audience_claim).map_err(|_| refused(Reason::Audience))?;
        if !audiences
            .iter()
            .any(|a| policy.audiences.iter().any(|want| want == a))
        {
            return Err(refused(Reason::Audience));
        }
    }
    let subject = match claims::string_claim(custom, &policy.subject_claim) {
        Ok(sub) if !sub.is_empty() => sub.to_string(),
        _ => return Err(refused(Reason::Claims)),
    };
    let mut roles = Vec::new();
    for pointer in &policy.roles {
        claims::roles_at(custom, pointer, &mut roles).map_err(|_| refused(Reason::Claims))?;
    }
    Ok(VerifiedToken {
        provider: index,
        subject,
        roles,
        claims: verified.into_parts().1.custom,
        expires_at,
        not_before,
        issued_at,
    })
}

/// The algorithm named by the token must be one the configuration accepts, and the
/// signature must verify under that algorithm's key: the configured HMAC secret for
/// HS256, else the JWKS key of the token's `kid`, pinned to its own algorithm.
fn check_signature(
    policy: &TokenPolicy,
    keys: &KeySet,
    untrusted: &UntrustedToken<'_, StrictObject>,
) -> Result<Token<StrictObject, StrictObject>, Reason> {
    let alg = untrusted.algorithm();
    let validated = if alg == "HS256" {
        let key = policy.hs256_key.as_ref().ok_or(Reason::Algorithm)?;
        Hs256.validator::<StrictObject>(key).validate(untrusted)
    } else {
        let asym = AsymAlg::from_name(alg)
            .filter(|a| policy.asymmetric.contains(a))
            .ok_or(Reason::Algorithm)?;
        if keys.is_empty() {
            return Err(Reason::NoKeys);
        }
        let key = keys
            .find(asym, untrusted.header().key_id.as_deref())
            .map_err(|e| match e {
                KeyLookup::Unknown => Reason::UnknownKey,
                KeyLookup::AlgorithmMismatch => Reason::Algorithm,
            })?;
        // The validator compares the token's `alg` with its own name, so each
        // algorithm is checked under the name the token gave and the key allows.
        match (&key.material, asym) {
            (KeyMaterial::Ed25519(k), AsymAlg::Ed25519) => Renamed::new(Ed25519, "Ed25519")
                .validator::<StrictObject>(k)
                .validate(untrusted),
            (KeyMaterial::Ed25519(k), _) => Ed25519.validator::<StrictObject>(k).validate(untrusted),
            (KeyMaterial::P256(k), _) => Es256.validator::<StrictObject>(k).validate(untrusted),
            (KeyMaterial::P384(k), _) => Es384.validator::<StrictObject>(k).validate(untrusted),
            (KeyMaterial::Rsa(k), AsymAlg::Ps256) => {
                Rsa::ps256().validator::<StrictObject>(k).validate(untrusted)
            }
            (KeyMaterial::Rsa(k), _) => Rsa::rs256().validator::<StrictObject>(k).validate(untrusted),
        }
    };
    validated.map_err(|e| match e {
        ValidationError::AlgorithmMismatch { .. } => Reason::Algorithm,
        ValidationError::InvalidSignatureLen { .. }
        | ValidationError::MalformedSignature(_)
        | ValidationError::InvalidSignature => Reason::Signature,
        _ => Reason::Malformed,
    })
}

fn check_time(claims: &Claims<StrictObject>, policy: &TokenPolicy, now: i64) -> Result<(), Reason> {
    let now_dt: DateTime<Utc> = Utc.timestamp_opt(now, 0).single().ok_or(Reason::Expired)?;
    let skew = policy.clock_skew_seconds;
    let options = TimeOptions::new(Duration::seconds(skew), move || now_dt);
    let exp = claims.expiration.ok_or(Reason::Claims)?;
    claims
        .validate_expiration(&options)
        .map_err(|_| Reason::Expired)?;
    // Not jwt-compact's `validate_maturity`: its `nbf - leeway` panics (killing the VM)
    // for an `nbf` within the leeway of chrono's earliest time (found writing the fuzz oracle).
    if let Some(nbf) = claims.not_before {
        if now < nbf.timestamp().saturating_sub(skew) {
            return Err(Reason::NotYetValid);
        }
    }
    if let Some(iat) = claims.issued_at {
        if iat.timestamp() > now.saturating_add(skew) {
            return Err(Reason::IssuedInFuture);
        }
    }
    // The lifetime counts from issuance when the token says when that was, and from
    // now otherwise, so leaving `iat` out does not buy a longer-lived token.
    let start = claims
        .issued_at
        .or(claims.not_before)
        .map_or(now, |t| t.timestamp());
    let exp = exp.timestamp();
    if exp.saturating_sub(start) > policy.max_lifetime_seconds
        || exp.saturating_sub(now) > policy.max_lifetime_seconds.saturating_add(skew)
    {
        return Err(Reason::Lifetime);
    }
    Ok(())
}

#[cfg(test)]
mod idp_tests;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::compile;
    use base64ct::{Base64UrlUnpadded, Encoding};
    use serde_json::json;

    /// The one test secret of every suite (and the demo's).
    pub use gatehouse_testkit::SECRET;
    pub const NOW: i64 = 1_800_000_000;
    pub const ISSUER: &str = "https://gatehouse.test";

    pub fn policy_json() -> String {
        format!(
            r#"{{"issuer":"{ISSUER}","audiences":["api"],"algorithms":["HS256"],
                "hmac_secret":{{"env":"SECRET_KEY"}},"max_token_lifetime_seconds":3600}}"#
        )
    }

    pub fn token_policy() -> Policy {
        compile(policy_json().as_bytes(), |_| Some(SECRET.to_string())).unwrap()
    }

    /// Verifies with the policy's inline keys (`inline`), or with none; every
    /// provider accepted.
    pub fn check(policy: &Policy, inline: bool, token: &str, now: i64) -> Result<VerifiedToken, Reason> {
        let keys: Vec<Rc<KeySet>> = policy
            .providers
            .iter()
            .map(|p| {
                if inline {
                    p.inline_keys.clone()
                } else {
                    Rc::default()
                }
            })
            .collect();
        verify(policy, &keys, token, now, |_| true).map_err(|r| r.reason)
    }

    use gatehouse_testkit::b64url as b64;
    /// Signs an arbitrary header and payload (given as JSON text, so duplicates and
    /// odd encodings can be expressed) with HS256 and `key`: jwt-compact's own HS256,
    /// independent of the one that verifies (the helper every suite shares).
    pub use gatehouse_testkit::mint_raw as sign_raw;

    /// The same bytes with one of the unused low bits of the last character set, as a
    /// lax base64 decoder would accept (the "signature malleability" trick).
    fn non_canonical(sig: &str) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let last = sig.as_bytes()[sig.len() - 1];
        let index = ALPHABET.iter().position(|&c| c == last).unwrap();
        format!("{}{}", &sig[..sig.len() - 1], char::from(ALPHABET[index | 1]))
    }

    pub fn good_claims() -> serde_json::Value {
        json!({"iss": ISSUER, "aud": "api", "sub": "alice", "roles": ["admin", "user"],
               "iat": NOW - 10, "exp": NOW + 600, "jti": "j1"})
    }

    pub fn sign(claims: &serde_json::Value) -> String {
        sign_raw(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &claims.to_string(),
            SECRET.as_bytes(),
        )
    }

    fn with(changes: serde_json::Value) -> serde_json::Value {
        let mut c = good_claims();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    #[test]
    fn a_good_token_verifies() {
        let v = check(&token_policy(), false, &sign(&good_claims()), NOW).unwrap();
        assert_eq!(v.subject, "alice");
        assert_eq!(v.roles, ["admin", "user"]);
        assert_eq!(v.claims.get("jti"), Some(&json!("j1")));
    }

    /// A token made by PyJWT 2.15 exactly as the FastAPI guide does
    /// (`jwt.encode(claims, SECRET_KEY, algorithm="HS256")`, the key being the hex
    /// string itself), so both can run side by side on one secret.
    #[test]
    fn a_pyjwt_token_from_the_fastapi_guide_verifies() {
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsInJvbGVzIjpbImFkbWluIl0sImlzcyI6Imh0dHBzOi8vZ2F0ZWhvdXNlLnRlc3QiLCJhdWQiOiJhcGkiLCJleHAiOjE4MDAwMDE4MDB9.UQn-hTQ9ayKi8mAlhQYIECgaxiR8nPTVFXf_PeOfjc4";
        let v = check(&token_policy(), false, token, NOW).unwrap();
        assert_eq!(v.subject, "alice");
    }

    #[test]
    fn hostile_and_broken_tokens_are_refused_with_their_reason() {
        let p = token_policy();
        let key = SECRET.as_bytes();
        let payload = good_claims().to_string();
        let good = sign(&good_claims());
        let (head, rest) = good.split_once('.').unwrap();
        let (body, sig) = rest.split_once('.').unwrap();
        let none_token = |alg: &str| format!("{}.{}.", b64(format!(r#"{{"alg":"{alg}"}}"#).as_bytes()), body);

        let cases: Vec<(&str, String, Reason)> = vec![
            ("alg none", none_token("none"), Reason::Algorithm),
            ("alg None", none_token("None"), Reason::Algorithm),
            ("alg NONE", none_token("NONE"), Reason::Algorithm),
            (
                "alg nOnE with signature",
                format!("{}.{body}.{sig}", b64(br#"{"alg":"nOnE"}"#)),
                Reason::Algorithm,
            ),
            (
                "alg none, empty signature",
                format!("{}.{body}.", b64(br#"{"alg":"none"}"#)),
                Reason::Algorithm,
            ),
            (
                "HS384 when only HS256",
                sign_raw(r#"{"alg":"HS384"}"#, &payload, key),
                Reason::Algorithm,
            ),
            (
                "RS256 switched",
                sign_raw(r#"{"alg":"RS256"}"#, &payload, key),
                Reason::Algorithm,
            ),
            (
                "alg lower-case",
                sign_raw(r#"{"alg":"hs256"}"#, &payload, key),
                Reason::Algorithm,
            ),
            (
                "no alg",
                sign_raw(r#"{"typ":"JWT"}"#, &payload, key),
                Reason::Malformed,
            ),
            (
                "alg not a string",
                sign_raw(r#"{"alg":["HS256"]}"#, &payload, key),
                Reason::Malformed,
            ),
            (
                "duplicate alg",
                sign_raw(r#"{"alg":"none","alg":"HS256"}"#, &payload, key),
                Reason::Malformed,
            ),
            (
                "duplicate header name",
                sign_raw(r#"{"alg":"HS256","kid":"a","kid":"b"}"#, &payload, key),
                Reason::Malformed,
            ),
            (
                "wrong key",
                sign_raw(
                    r#"{"alg":"HS256"}"#,
                    &payload,
                    b"another secret entirely, 32 bytes!",
                ),
                Reason::Signature,
            ),
            (
                "empty key",
                sign_raw(r#"{"alg":"HS256"}"#, &payload, b""),
                Reason::Signature,
            ),
            (
                "decoded key",
                sign_raw(r#"{"alg":"HS256"}"#, &payload, &hex::decode(SECRET).unwrap()),
                Reason::Signature,
            ),
            ("stripped signature", format!("{head}.{body}."), Reason::Signature),
            (
                "stripped signature, no dot",
                format!("{head}.{body}"),
                Reason::Malformed,
            ),
            (
                "short signature",
                format!(
                    "{head}.{body}.{}",
                    b64(&Base64UrlUnpadded::decode_vec(sig).unwrap()[..30])
                ),
                Reason::Signature,
            ),
            (
                "signature of another body",
                format!(
                    "{head}.{}.{sig}",
                    b64(with(json!({"sub":"bob"})).to_string().as_bytes())
                ),
                Reason::Signature,
            ),
            (
                "non-canonical base64 signature",
                format!("{head}.{body}.{}", non_canonical(sig)),
                Reason::Malformed,
            ),
            (
                "padded base64",
                format!("{head}.{body}.{sig}="),
                Reason::Malformed,
            ),
            (
                "standard base64 alphabet",
                format!("{head}.{body}.{}", sig.replace(['-', '_'], "+")),
                Reason::Malformed,
            ),
            ("four segments", format!("{good}.{sig}"), Reason::Malformed),
            ("two segments", format!("{head}.{body}"), Reason::Malformed),
            ("empty", String::new(), Reason::Malformed),
            (
                "whitespace inside",
                format!("{head}. {body}.{sig}"),
                Reason::Malformed,
            ),
            ("NUL inside", format!("{head}.{body}\0.{sig}"), Reason::Malformed),
            (
                "header not JSON",
                sign_raw("not json", &payload, key),
                Reason::Malformed,
            ),
            (
                "header an array",
                sign_raw(r#"["HS256"]"#, &payload, key),
                Reason::Malformed,
            ),
            (
                "claims not JSON",
                sign_raw(r#"{"alg":"HS256"}"#, "{nope", key),
                Reason::Malformed,
            ),
            (
                "claims an array",
                sign_raw(r#"{"alg":"HS256"}"#, "[1,2]", key),
                Reason::Malformed,
            ),
            (
                "duplicate sub",
                sign_raw(
                    r#"{"alg":"HS256"}"#,
                    &payload.replacen('{', r#"{"sub":"admin","#, 1),
                    key,
                ),
                Reason::Malformed,
            ),
            (
                "duplicate exp",
                sign_raw(
                    r#"{"alg":"HS256"}"#,
                    &payload.replacen('{', &format!(r#"{{"exp":{},"#, NOW + 99_999), 1),
                    key,
                ),
                Reason::Malformed,
            ),
            (
                "duplicate roles",
                sign_raw(
                    r#"{"alg":"HS256"}"#,
                    &payload.replacen('{', r#"{"roles":["root"],"#, 1),
                    key,
                ),
                Reason::Malformed,
            ),
            (
                "deeply nested claim",
                sign_raw(
                    r#"{"alg":"HS256"}"#,
                    &payload.replacen(
                        '{',
                        &format!(r#"{{"x":{}0{},"#, "[".repeat(1000), "]".repeat(1000)),
                        1,
                    ),
                    key,
                ),
                Reason::Malformed,
            ),
            (
                "crit",
                sign_raw(r#"{"alg":"HS256","crit":["exp"]}"#, &payload, key),
                Reason::HeaderRefused,
            ),
            (
                "b64 false",
                sign_raw(r#"{"alg":"HS256","b64":false}"#, &payload, key),
                Reason::HeaderRefused,
            ),
            (
                "embedded jwk",
                sign_raw(r#"{"alg":"HS256","jwk":{"kty":"oct","k":"AA"}}"#, &payload, key),
                Reason::HeaderRefused,
            ),
            (
                "jku",
                sign_raw(r#"{"alg":"HS256","jku":"https://evil.test/jwks"}"#, &payload, key),
                Reason::HeaderRefused,
            ),
            (
                "x5u",
                sign_raw(r#"{"alg":"HS256","x5u":"https://evil.test/cert"}"#, &payload, key),
                Reason::HeaderRefused,
            ),
            (
                "x5c",
                sign_raw(r#"{"alg":"HS256","x5c":["MIIB"]}"#, &payload, key),
                Reason::HeaderRefused,
            ),
            (
                "cty CBOR",
                sign_raw(r#"{"alg":"HS256","cty":"CBOR"}"#, &payload, key),
                Reason::HeaderRefused,
            ),
            (
                "typ JWE-ish",
                sign_raw(r#"{"alg":"HS256","typ":"secevent+jwt"}"#, &payload, key),
                Reason::HeaderRefused,
            ),
            ("expired", sign(&with(json!({"exp": NOW - 61}))), Reason::Expired),
            (
                "expired far",
                sign(&with(json!({"exp": 0, "iat": null}))),
                Reason::Expired,
            ),
            ("exp missing", sign(&with(json!({"exp": null}))), Reason::Claims),
            (
                "exp a string",
                sign(&with(json!({"exp": (NOW + 60).to_string()}))),
                Reason::Malformed,
            ),
            ("exp a bool", sign(&with(json!({"exp": true}))), Reason::Malformed),
            (
                "exp huge",
                sign_raw(
                    r#"{"alg":"HS256"}"#,
                    &payload.replace(&format!("\"exp\":{}", NOW + 600), "\"exp\":1e300"),
                    key,
                ),
                Reason::Malformed,
            ),
            (
                "exp overflowing i64",
                sign_raw(
                    r#"{"alg":"HS256"}"#,
                    &payload.replace(&format!("\"exp\":{}", NOW + 600), "\"exp\":99999999999999999999"),
                    key,
                ),
                Reason::Malformed,
            ),
            (
                "nbf in the future",
                sign(&with(json!({"nbf": NOW + 61}))),
                Reason::NotYetValid,
            ),
            (
                "nbf a string",
                sign(&with(json!({"nbf": "soon"}))),
                Reason::Malformed,
            ),
            (
                "iat in the future",
                sign(&with(json!({"iat": NOW + 61}))),
                Reason::IssuedInFuture,
            ),
            (
                "lifetime past the cap",
                sign(&with(json!({"iat": NOW - 10, "exp": NOW + 3600}))),
                Reason::Lifetime,
            ),
            (
                "no iat, exp past the cap",
                sign(&with(json!({"iat": null, "exp": NOW + 3600 + 61}))),
                Reason::Lifetime,
            ),
            (
                "old iat, long life",
                sign(&with(json!({"iat": NOW - 7200, "exp": NOW + 100}))),
                Reason::Lifetime,
            ),
            (
                "issuer missing",
                sign(&with(json!({"iss": null}))),
                Reason::Issuer,
            ),
            (
                "issuer other",
                sign(&with(json!({"iss": "https://evil.test"}))),
                Reason::Issuer,
            ),
            (
                "issuer trailing slash",
                sign(&with(json!({"iss": format!("{ISSUER}/")}))),
                Reason::Issuer,
            ),
            (
                "issuer case",
                sign(&with(json!({"iss": ISSUER.to_uppercase()}))),
                Reason::Issuer,
            ),
            (
                "issuer as array",
                sign(&with(json!({"iss": [ISSUER]}))),
                Reason::Issuer,
            ),
            (
                "audience missing",
                sign(&with(json!({"aud": null}))),
                Reason::Audience,
            ),
            (
                "audience other",
                sign(&with(json!({"aud": "web"}))),
                Reason::Audience,
            ),
            (
                "audience list without ours",
                sign(&with(json!({"aud": ["web", "apix"]}))),
                Reason::Audience,
            ),
            (
                "audience number",
                sign(&with(json!({"aud": 1}))),
                Reason::Audience,
            ),
            (
                "subject missing",
                sign(&with(json!({"sub": null}))),
                Reason::Claims,
            ),
            ("subject empty", sign(&with(json!({"sub": ""}))), Reason::Claims),
            (
                "subject a number",
                sign(&with(json!({"sub": 42}))),
                Reason::Claims,
            ),
            (
                "roles an object",
                sign(&with(json!({"roles": {"admin": true}}))),
                Reason::Claims,
            ),
            ("roles true", sign(&with(json!({"roles": true}))), Reason::Claims),
            (
                "roles nested",
                sign(&with(json!({"roles": [["admin"]]}))),
                Reason::Claims,
            ),
            (
                "roles with a number",
                sign(&with(json!({"roles": ["user", 1]}))),
                Reason::Claims,
            ),
            (
                "oversize",
                sign(&with(json!({"pad": "x".repeat(9000)}))),
                Reason::TokenTooLarge,
            ),
        ];
        for (name, token, want) in cases {
            assert_eq!(check(&p, false, &token, NOW), Err(want), "{name}");
        }
    }

    /// Regression (fuzz/corpus/token_signed/nbf-earliest): a signed token whose `nbf` is
    /// chrono's earliest time made jwt-compact's maturity check panic on `nbf - skew`.
    #[test]
    fn times_at_the_ends_of_the_calendar_are_refused_without_a_panic() {
        let p = token_policy();
        let earliest: i64 = -8_334_601_228_800; // DateTime::<Utc>::MIN_UTC
        for nbf in [earliest, earliest + 1, earliest + 59] {
            let token = sign(&with(json!({ "nbf": nbf, "iat": null })));
            assert_eq!(check(&p, false, &token, NOW), Err(Reason::Lifetime), "{nbf}");
        }
        let latest: i64 = 8_210_266_876_799; // DateTime::<Utc>::MAX_UTC
        for (claim, want) in [
            ("nbf", Reason::NotYetValid),
            ("iat", Reason::IssuedInFuture),
            ("exp", Reason::Lifetime),
        ] {
            let token = sign(&with(json!({ claim: latest })));
            assert_eq!(check(&p, false, &token, NOW), Err(want), "{claim}");
        }
        let token = sign(&with(json!({ "nbf": earliest - 1 })));
        assert_eq!(check(&p, false, &token, NOW), Err(Reason::Malformed));
    }

    #[test]
    fn boundaries_and_accepted_variants() {
        let p = token_policy();
        let ok = |c: serde_json::Value| check(&p, false, &sign(&c), NOW);
        assert!(ok(with(json!({"exp": NOW - 60}))).is_ok(), "exp within skew");
        assert!(ok(with(json!({"nbf": NOW + 60}))).is_ok(), "nbf within skew");
        assert!(ok(with(json!({"iat": NOW + 60}))).is_ok(), "iat within skew");
        assert!(
            ok(with(json!({"iat": NOW, "exp": NOW + 3600}))).is_ok(),
            "lifetime at the cap"
        );
        assert!(ok(with(json!({"aud": ["web", "api"]}))).is_ok());
        assert!(ok(with(json!({"roles": "admin user"}))).unwrap().roles == ["admin", "user"]);
        assert!(ok(with(json!({"roles": null}))).unwrap().roles.is_empty());
        assert!(
            ok(with(json!({"exp": (NOW + 100) as f64 + 0.5}))).is_ok(),
            "fractional NumericDate"
        );
        for typ in ["JWT", "jwt", "at+jwt", "application/at+JWT"] {
            let t = sign_raw(
                &format!(r#"{{"alg":"HS256","typ":"{typ}"}}"#),
                &good_claims().to_string(),
                SECRET.as_bytes(),
            );
            assert!(check(&p, false, &t, NOW).is_ok(), "{typ}");
        }
        let with_kid = sign_raw(
            r#"{"alg":"HS256","kid":"../../etc/passwd"}"#,
            &good_claims().to_string(),
            SECRET.as_bytes(),
        );
        assert!(
            check(&p, false, &with_kid, NOW).is_ok(),
            "kid is ignored with one HMAC key"
        );
    }

    /// Keys and tokens made by Python's `cryptography` (an independent implementation),
    /// with the same claims as `good_claims`.
    fn python_fixture() -> serde_json::Value {
        serde_json::from_str(include_str!("../tests/fixtures/python-signed-tokens.json")).unwrap()
    }

    fn asym_policy(algorithms: &str, with_hmac: bool) -> crate::policy::Policy {
        let hmac = if with_hmac {
            r#","hmac_secret":{"env":"SECRET_KEY"}"#
        } else {
            ""
        };
        let json = format!(
            r#"{{"issuer":"{ISSUER}","audiences":["api"],"algorithms":{algorithms}{hmac},"max_token_lifetime_seconds":3600,
                "jwks":{{"inline":{}}}}}"#,
            python_fixture()["jwks"]
        );
        compile(json.as_bytes(), |_| Some(SECRET.to_string())).unwrap()
    }

    #[test]
    fn asymmetric_tokens_from_another_implementation_verify() {
        let p = asym_policy(r#"["EdDSA","ES256","RS256"]"#, false);
        for alg in ["EdDSA", "ES256", "RS256"] {
            let token = python_fixture()["tokens"][alg].as_str().unwrap().to_string();
            let v = check(&p, true, &token, NOW).unwrap_or_else(|e| panic!("{alg}: {e:?}"));
            assert_eq!((v.subject.as_str(), v.roles.len()), ("alice", 2), "{alg}");
        }
        // Only what the configuration accepts.
        let only_ed = asym_policy(r#"["EdDSA"]"#, false);
        let es = python_fixture()["tokens"]["ES256"].as_str().unwrap().to_string();
        assert_eq!(check(&only_ed, true, &es, NOW).err(), Some(Reason::Algorithm));
    }

    #[test]
    fn asymmetric_attacks_are_refused() {
        let p = asym_policy(r#"["EdDSA","ES256","RS256"]"#, false);
        let fixture = python_fixture();
        let ed = fixture["tokens"]["EdDSA"].as_str().unwrap();
        let es = fixture["tokens"]["ES256"].as_str().unwrap();
        let (_, ed_rest) = ed.split_once('.').unwrap();
        let (ed_body, ed_sig) = ed_rest.split_once('.').unwrap();
        let payload = String::from_utf8(Base64UrlUnpadded::decode_vec(ed_body).unwrap()).unwrap();
        let public_x = fixture["jwks"]["keys"][0]["x"].as_str().unwrap();
        let header = |h: &str| b64(h.as_bytes());
        let cases: Vec<(&str, String, Reason)> = vec![
            // The classic confusion: HS256 "signed" with the published public key.
            (
                "HS256 with the public key as secret",
                sign_raw(r#"{"alg":"HS256","kid":"k-ed"}"#, &payload, public_x.as_bytes()),
                Reason::Algorithm,
            ),
            (
                "HS256 with the raw public key",
                sign_raw(
                    r#"{"alg":"HS256"}"#,
                    &payload,
                    &Base64UrlUnpadded::decode_vec(public_x).unwrap(),
                ),
                Reason::Algorithm,
            ),
            (
                "EdDSA signature under an ES256 header",
                format!("{}.{ed_body}.{ed_sig}", header(r#"{"alg":"ES256","kid":"k-ed"}"#)),
                Reason::Algorithm,
            ),
            (
                "kid of another algorithm",
                format!("{}.{ed_body}.{ed_sig}", header(r#"{"alg":"EdDSA","kid":"k-es"}"#)),
                Reason::Algorithm,
            ),
            (
                "unknown kid",
                format!(
                    "{}.{ed_body}.{ed_sig}",
                    header(r#"{"alg":"EdDSA","kid":"k-new"}"#)
                ),
                Reason::UnknownKey,
            ),
            (
                "path kid",
                format!(
                    "{}.{ed_body}.{ed_sig}",
                    header(r#"{"alg":"EdDSA","kid":"../../../dev/null"}"#)
                ),
                Reason::UnknownKey,
            ),
            (
                "SQL kid",
                format!(
                    "{}.{ed_body}.{ed_sig}",
                    header(r#"{"alg":"EdDSA","kid":"x' UNION SELECT 'k-ed"}"#)
                ),
                Reason::UnknownKey,
            ),
            (
                "alg none with a kid",
                format!("{}.{ed_body}.", header(r#"{"alg":"none","kid":"k-ed"}"#)),
                Reason::Algorithm,
            ),
            (
                "EdDSA, other payload",
                format!(
                    "{}.{}.{ed_sig}",
                    ed.split('.').next().unwrap(),
                    b64(payload.replace("alice", "admin").as_bytes())
                ),
                Reason::Signature,
            ),
            (
                "ES256 psychic signature",
                format!("{}.{}", es.rsplit_once('.').unwrap().0, b64(&[0u8; 64])),
                Reason::Signature,
            ),
            (
                "ES256 s = 0",
                {
                    let sig = Base64UrlUnpadded::decode_vec(es.rsplit_once('.').unwrap().1).unwrap();
                    let mut bad = sig.clone();
                    bad[32..].fill(0);
                    format!("{}.{}", es.rsplit_once('.').unwrap().0, b64(&bad))
                },
                Reason::Signature,
            ),
            (
                "embedded jwk",
                format!(
                    "{}.{ed_body}.{ed_sig}",
                    header(&format!(
                        r#"{{"alg":"EdDSA","jwk":{{"kty":"OKP","crv":"Ed25519","x":"{public_x}"}}}}"#
                    ))
                ),
                Reason::HeaderRefused,
            ),
        ];
        for (name, token, want) in cases {
            assert_eq!(check(&p, true, &token, NOW).err(), Some(want), "{name}");
        }
        // HS256 beside asymmetric keys still only ever uses the configured secret.
        let mixed = asym_policy(r#"["HS256","EdDSA"]"#, true);
        let by_public = sign_raw(r#"{"alg":"HS256","kid":"k-ed"}"#, &payload, public_x.as_bytes());
        assert_eq!(
            check(&mixed, true, &by_public, NOW).err(),
            Some(Reason::Signature)
        );
        assert!(check(&mixed, true, &sign(&good_claims()), NOW).is_ok());
        // Before any key is loaded (a remote JWKS not fetched yet): 503, not 401.
        assert_eq!(check(&p, false, ed, NOW).err(), Some(Reason::NoKeys));
    }
}
