//! Verification keys from a JWKS (RFC 7517): each pinned to one algorithm.
//!
//! A key's algorithm comes from its JWK (`alg`, or the curve for OKP/EC keys), never
//! from a token: a token whose `alg` differs from its key's is refused. Symmetric
//! (`oct`) keys are never taken from a JWKS, so HMAC cannot be accepted against
//! published keys. Keys for algorithms the configuration does not accept are skipped.

use std::fmt;

use jwt_compact::jwk::JsonWebKey;
use jwt_compact::Algorithm;
use serde::Deserialize;
use serde_json::Value;

/// Asymmetric algorithms Gatehouse verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsymAlg {
    EdDSA,
    Es256,
    Rs256,
}

impl AsymAlg {
    pub fn from_name(name: &str) -> Option<AsymAlg> {
        match name {
            "EdDSA" => Some(AsymAlg::EdDSA),
            "ES256" => Some(AsymAlg::Es256),
            "RS256" => Some(AsymAlg::Rs256),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AsymAlg::EdDSA => "EdDSA",
            AsymAlg::Es256 => "ES256",
            AsymAlg::Rs256 => "RS256",
        }
    }
}

/// RSA moduli below this are refused (NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;

pub type Ed25519Key = <jwt_compact::alg::Ed25519 as Algorithm>::VerifyingKey;
pub type P256Key = <jwt_compact::alg::Es256 as Algorithm>::VerifyingKey;
pub type RsaKey = jwt_compact::alg::RsaPublicKey;

pub enum KeyMaterial {
    Ed25519(Ed25519Key),
    P256(P256Key),
    Rsa(RsaKey),
}

pub struct VerifyingKey {
    pub kid: Option<String>,
    pub alg: AsymAlg,
    pub material: KeyMaterial,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({:?}, {})", self.kid, self.alg.name())
    }
}

/// The keys in use, looked up by `kid`.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<VerifyingKey>,
}

/// Why no key was found for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLookup {
    /// No key with this `kid` (or, without `kid`, no single key for the algorithm).
    Unknown,
    /// The key of this `kid` is pinned to another algorithm.
    AlgorithmMismatch,
}

impl KeySet {
    /// The key for a token with `alg` and `kid`. Without `kid`, only a set with exactly
    /// one key of that algorithm answers.
    pub fn find(&self, alg: AsymAlg, kid: Option<&str>) -> Result<&VerifyingKey, KeyLookup> {
        match kid {
            Some(kid) => {
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.kid.as_deref() == Some(kid))
                    .ok_or(KeyLookup::Unknown)?;
                if key.alg == alg {
                    Ok(key)
                } else {
                    Err(KeyLookup::AlgorithmMismatch)
                }
            }
            None => {
                let mut of_alg = self.keys.iter().filter(|k| k.alg == alg);
                match (of_alg.next(), of_alg.next()) {
                    (Some(key), None) => Ok(key),
                    _ => Err(KeyLookup::Unknown),
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref()).collect()
    }
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Value>,
}

/// A parsed JWKS: the usable keys, and the JWKs left out (for the log).
pub struct ParsedJwks {
    pub keys: KeySet,
    /// Valid keys for algorithms the configuration does not accept.
    pub other_algorithms: Vec<String>,
    /// Keys that are malformed, private, symmetric or contradictory.
    pub invalid: Vec<String>,
}

/// A JWKS document parsed into keys for the `accepted` algorithms.
pub fn parse_jwks(json: &[u8], accepted: &[AsymAlg]) -> Result<ParsedJwks, String> {
    let jwks: Jwks = serde_json::from_slice(json).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = Vec::new();
    let (mut other_algorithms, mut invalid) = (Vec::new(), Vec::new());
    for (i, jwk) in jwks.keys.iter().enumerate() {
        match parse_jwk(jwk) {
            Ok(key) if accepted.contains(&key.alg) => {
                if key.kid.is_some() && keys.iter().any(|k: &VerifyingKey| k.kid == key.kid) {
                    return Err(format!("keys[{i}]: kid {:?} is used twice", key.kid));
                }
                keys.push(key);
            }
            Ok(key) => other_algorithms.push(format!(
                "keys[{i}]: {} is not an accepted algorithm",
                key.alg.name()
            )),
            Err(why) => invalid.push(format!("keys[{i}]: {why}")),
        }
    }
    Ok(ParsedJwks {
        keys: KeySet { keys },
        other_algorithms,
        invalid,
    })
}

fn parse_jwk(value: &Value) -> Result<VerifyingKey, String> {
    let text = |name: &str| value.get(name).and_then(Value::as_str);
    if let Some(u) = text("use") {
        if u != "sig" {
            return Err(format!("use {u:?} is not sig"));
        }
    }
    let kid = match value.get("kid") {
        None => None,
        Some(Value::String(k)) if !k.is_empty() && k.len() <= 256 => Some(k.clone()),
        Some(_) => return Err("kid must be a non-empty string of at most 256 bytes".into()),
    };
    let jwk: JsonWebKey<'_> = serde_json::from_value(value.clone()).map_err(|e| format!("not a JWK: {e}"))?;
    if jwk.is_signing_key() {
        // A private part here is a publishing mistake; never load it.
        return Err(match jwk {
            JsonWebKey::Symmetric { .. } => "symmetric (oct) keys are never taken from a JWKS".into(),
            _ => "holds a private key; publish public keys only".into(),
        });
    }
    let declared = text("alg");
    let (alg, material) = match &jwk {
        JsonWebKey::KeyPair { curve, .. } if curve == "Ed25519" => (
            AsymAlg::EdDSA,
            KeyMaterial::Ed25519(Ed25519Key::try_from(&jwk).map_err(|e| e.to_string())?),
        ),
        JsonWebKey::EllipticCurve { curve, .. } if curve == "P-256" => (
            AsymAlg::Es256,
            KeyMaterial::P256(P256Key::try_from(&jwk).map_err(|e| e.to_string())?),
        ),
        JsonWebKey::Rsa { modulus, .. } => {
            if declared != Some("RS256") {
                return Err("an RSA key must say alg RS256".into());
            }
            // Bits, not bytes: zeros in front make a short key look long.
            if bit_length(modulus) < MIN_RSA_BITS {
                return Err(format!("RSA modulus shorter than {MIN_RSA_BITS} bits"));
            }
            (
                AsymAlg::Rs256,
                KeyMaterial::Rsa(RsaKey::try_from(&jwk).map_err(|e| e.to_string())?),
            )
        }
        other => return Err(format!("unsupported key type {:?}", other.key_type())),
    };
    if let Some(declared) = declared {
        if declared != alg.name() {
            return Err(format!("alg {declared:?} does not match a {} key", alg.name()));
        }
    }
    Ok(VerifyingKey { kid, alg, material })
}

/// The bit length of a big-endian unsigned integer.
fn bit_length(be: &[u8]) -> usize {
    match be.iter().position(|&b| b != 0) {
        Some(i) => (be.len() - i) * 8 - be.get(i).map_or(0, |b| b.leading_zeros() as usize),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64ct::{Base64UrlUnpadded, Encoding};
    use jwt_compact::AlgorithmSignature;

    fn b64(s: &str) -> Vec<u8> {
        Base64UrlUnpadded::decode_vec(s).unwrap()
    }

    fn one(jwk: &str, accepted: &[AsymAlg]) -> Result<VerifyingKey, String> {
        let parsed = parse_jwks(format!(r#"{{"keys":[{jwk}]}}"#).as_bytes(), accepted)?;
        if let Some(why) = parsed.invalid.into_iter().chain(parsed.other_algorithms).next() {
            return Err(why);
        }
        parsed.keys.keys.into_iter().next().ok_or_else(|| "no key".into())
    }

    const ALL: [AsymAlg; 3] = [AsymAlg::EdDSA, AsymAlg::Es256, AsymAlg::Rs256];

    #[test]
    fn bit_lengths_count_bits_not_bytes() {
        for (be, bits) in [
            (&[][..], 0),
            (&[0, 0], 0),
            (&[1], 1),
            (&[0x80], 8),
            (&[0, 0, 0x7f, 0xff], 15),
            (&[0xff; 256], 2048),
        ] {
            assert_eq!(bit_length(be), bits, "{be:?}");
        }
        let mut padded = vec![0u8; 192];
        padded.extend([0xc5; 64]);
        assert_eq!(bit_length(&padded), 512);
    }

    #[test]
    fn rfc_8037_ed25519_vector_verifies() {
        // RFC 8037 A.2 public key and A.4 signature over "Example of Ed25519 signing".
        let key = one(
            r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
            &ALL,
        )
        .unwrap();
        assert_eq!(key.alg, AsymAlg::EdDSA);
        let KeyMaterial::Ed25519(k) = &key.material else {
            panic!("not Ed25519")
        };
        let signed = b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
        let sig_bytes =
            b64("hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg");
        let sig = <jwt_compact::alg::Ed25519 as Algorithm>::Signature::try_from_slice(&sig_bytes).unwrap();
        assert!(jwt_compact::alg::Ed25519.verify_signature(&sig, k, signed));
        assert!(!jwt_compact::alg::Ed25519.verify_signature(&sig, k, b"eyJhbGciOiJFZERTQSJ9.x"));
    }

    #[test]
    fn rfc_7515_a3_es256_vector_verifies() {
        let key = one(
            r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#,
            &ALL,
        )
        .unwrap();
        assert_eq!(key.alg, AsymAlg::Es256);
        let KeyMaterial::P256(k) = &key.material else {
            panic!("not P-256")
        };
        let signed = b"eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
        let sig_bytes =
            b64("DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q");
        let sig = <jwt_compact::alg::Es256 as Algorithm>::Signature::try_from_slice(&sig_bytes).unwrap();
        assert!(jwt_compact::alg::Es256.verify_signature(&sig, k, signed));
        // "Psychic signatures" (CVE-2022-21449): r = s = 0 must never verify, nor parse.
        assert!(<jwt_compact::alg::Es256 as Algorithm>::Signature::try_from_slice(&[0u8; 64]).is_err());
        let mut r_zero = sig_bytes.clone();
        r_zero[..32].fill(0);
        assert!(<jwt_compact::alg::Es256 as Algorithm>::Signature::try_from_slice(&r_zero).is_err());
    }

    #[test]
    fn keys_pin_their_algorithm_and_bad_keys_are_refused() {
        let ed = r#""kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo""#;
        let cases: &[(String, Option<AsymAlg>)] = &[
            (format!("{{{ed}}}"), Some(AsymAlg::EdDSA)),
            (
                format!(r#"{{{ed},"alg":"EdDSA","use":"sig","kid":"k1"}}"#),
                Some(AsymAlg::EdDSA),
            ),
            (format!(r#"{{{ed},"alg":"ES256"}}"#), None),
            (format!(r#"{{{ed},"alg":"HS256"}}"#), None),
            (format!(r#"{{{ed},"use":"enc"}}"#), None),
            (format!(r#"{{{ed},"kid":""}}"#), None),
            (format!(r#"{{{ed},"kid":7}}"#), None),
            (
                format!(r#"{{{ed},"d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}}"#),
                None,
            ),
            (
                r#"{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0","alg":"HS256"}"#.into(),
                None,
            ),
            (
                r#"{"kty":"OKP","crv":"X25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#.into(),
                None,
            ),
            (r#"{"kty":"EC","crv":"P-384","x":"AA","y":"AA"}"#.into(), None),
            (
                r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"AAAA"}"#
                    .into(),
                None,
            ),
            (
                format!(r#"{{"kty":"RSA","n":"{}","e":"AQAB"}}"#, "q".repeat(342)),
                None,
            ),
            (
                format!(
                    r#"{{"kty":"RSA","n":"{}","e":"AQAB","alg":"RS256"}}"#,
                    "q".repeat(170)
                ),
                None,
            ),
            // A 512-bit modulus padded with zero bytes to 2048 bits' length.
            (
                format!(
                    r#"{{"kty":"RSA","n":"{}","e":"AQAB","alg":"RS256"}}"#,
                    Base64UrlUnpadded::encode_string(&[vec![0u8; 192], vec![0xc5; 64]].concat())
                ),
                None,
            ),
            (r#"{"kty":"weird"}"#.into(), None),
            (r#""not an object""#.into(), None),
        ];
        for (jwk, want) in cases {
            assert_eq!(one(jwk, &ALL).ok().map(|k| k.alg), *want, "{jwk}");
        }
        // Valid, but for an algorithm the configuration does not accept: left out.
        let parsed = parse_jwks(format!(r#"{{"keys":[{{{ed}}}]}}"#).as_bytes(), &[AsymAlg::Es256]).unwrap();
        assert!(parsed.keys.is_empty() && parsed.invalid.is_empty() && parsed.other_algorithms.len() == 1);
    }

    #[test]
    fn lookup_by_kid_and_without() {
        let fixture: Value =
            serde_json::from_str(include_str!("../tests/fixtures/python-signed-tokens.json")).unwrap();
        let parsed = parse_jwks(fixture["jwks"].to_string().as_bytes(), &ALL).unwrap();
        let set = parsed.keys;
        assert_eq!(set.kids(), ["k-ed", "k-es", "k-rs"]);
        assert_eq!(
            set.find(AsymAlg::EdDSA, Some("k-ed")).unwrap().alg,
            AsymAlg::EdDSA
        );
        assert_eq!(
            set.find(AsymAlg::Es256, Some("k-ed")).err(),
            Some(KeyLookup::AlgorithmMismatch)
        );
        for hostile in ["k-ed ", "K-ED", "../../etc/passwd", "' OR 1=1 --", "", "k-ed\0"] {
            assert_eq!(
                set.find(AsymAlg::EdDSA, Some(hostile)).err(),
                Some(KeyLookup::Unknown),
                "{hostile:?}"
            );
        }
        assert!(set.find(AsymAlg::Rs256, None).is_ok(), "the only RS256 key");
        let two = parse_jwks(
            br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"a"},
                        {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"b"}]}"#,
            &ALL,
        )
        .unwrap()
        .keys;
        assert_eq!(
            two.find(AsymAlg::EdDSA, None).err(),
            Some(KeyLookup::Unknown),
            "ambiguous without kid"
        );
    }
}
