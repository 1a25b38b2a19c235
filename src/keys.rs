//! Verification keys from a JWKS (RFC 7517): each pinned to one algorithm.
//!
//! A key's algorithm comes from its JWK (`alg`, or the curve for OKP/EC keys), never
//! from a token: a token whose `alg` differs from its key's is refused. RFC 7517 makes
//! `alg` optional and real issuers leave it out (Entra ID, certified OpenID
//! providers): an RSA key without it is used for the one RSA algorithm the provider
//! accepts (or the one its configuration names), an Ed25519 key for `EdDSA` and its
//! fully specified name `Ed25519` (RFC 9864), which are the same signature. Symmetric
//! (`oct`) keys are never taken from a JWKS, so HMAC cannot be accepted against
//! published keys. Keys for algorithms the configuration does not accept are skipped,
//! and every key left out says its `kid` and why.

use std::fmt;

use jwt_compact::jwk::JsonWebKey;
use jwt_compact::Algorithm;
use serde::Deserialize;
use serde_json::Value;

use crate::es384::{self, P384Key};

/// Asymmetric algorithms Gatehouse verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsymAlg {
    EdDSA,
    /// RFC 9864's fully specified name for EdDSA over Ed25519.
    Ed25519,
    Es256,
    Es384,
    Rs256,
    Ps256,
}

impl AsymAlg {
    pub const ALL: [AsymAlg; 6] = [
        AsymAlg::EdDSA,
        AsymAlg::Ed25519,
        AsymAlg::Es256,
        AsymAlg::Es384,
        AsymAlg::Rs256,
        AsymAlg::Ps256,
    ];

    pub fn from_name(name: &str) -> Option<AsymAlg> {
        AsymAlg::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            AsymAlg::EdDSA => "EdDSA",
            AsymAlg::Ed25519 => "Ed25519",
            AsymAlg::Es256 => "ES256",
            AsymAlg::Es384 => "ES384",
            AsymAlg::Rs256 => "RS256",
            AsymAlg::Ps256 => "PS256",
        }
    }

    pub fn is_rsa(self) -> bool {
        matches!(self, AsymAlg::Rs256 | AsymAlg::Ps256)
    }

    fn is_ed25519(self) -> bool {
        matches!(self, AsymAlg::EdDSA | AsymAlg::Ed25519)
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
    P384(P384Key),
    Rsa(RsaKey),
}

pub struct VerifyingKey {
    pub kid: Option<String>,
    pub alg: AsymAlg,
    /// The JWK named no `alg`: an Ed25519 key then serves both of its names.
    pub implied: bool,
    pub material: KeyMaterial,
}

impl VerifyingKey {
    /// Whether a token that says `alg` may be checked with this key.
    pub fn accepts(&self, alg: AsymAlg) -> bool {
        self.alg == alg || (self.implied && self.alg.is_ed25519() && alg.is_ed25519())
    }
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
                if key.accepts(alg) {
                    Ok(key)
                } else {
                    Err(KeyLookup::AlgorithmMismatch)
                }
            }
            None => {
                let mut of_alg = self.keys.iter().filter(|k| k.accepts(alg));
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

/// Which algorithms a provider takes keys for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Accepted {
    pub algorithms: Vec<AsymAlg>,
    /// The algorithm of an RSA key that names none: the one RSA algorithm accepted,
    /// or the configuration's choice when both are.
    pub rsa_without_alg: Option<AsymAlg>,
}

impl Accepted {
    pub fn new(algorithms: Vec<AsymAlg>, rsa_without_alg: Option<AsymAlg>) -> Self {
        Accepted {
            algorithms,
            rsa_without_alg,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.algorithms.is_empty()
    }

    pub fn contains(&self, alg: &AsymAlg) -> bool {
        self.algorithms.contains(alg)
    }
}

/// A parsed JWKS: the usable keys, and the JWKs left out (for the log).
pub struct ParsedJwks {
    pub keys: KeySet,
    /// Valid keys for algorithms the configuration does not accept.
    pub other_algorithms: Vec<String>,
    /// Keys that are malformed, private, symmetric or contradictory.
    pub invalid: Vec<String>,
}

impl ParsedJwks {
    /// Every key left out, with its `kid` and why.
    pub fn left_out(&self) -> impl Iterator<Item = &String> {
        self.invalid.iter().chain(&self.other_algorithms)
    }
}

/// What a JWK is called in a log line: its position and, if it has one, its `kid`.
fn label(i: usize, jwk: &Value) -> String {
    match jwk.get("kid").and_then(Value::as_str) {
        Some(kid) => {
            let kid: String = kid.chars().take(64).filter(|c| !c.is_control()).collect();
            format!("keys[{i}] (kid {kid:?})")
        }
        None => format!("keys[{i}] (no kid)"),
    }
}

/// A JWKS document parsed into keys for the `accepted` algorithms.
pub fn parse_jwks(json: &[u8], accepted: &Accepted) -> Result<ParsedJwks, String> {
    let jwks: Jwks = serde_json::from_slice(json).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = Vec::new();
    let (mut other_algorithms, mut invalid) = (Vec::new(), Vec::new());
    for (i, jwk) in jwks.keys.iter().enumerate() {
        match parse_jwk(jwk, accepted) {
            Ok(Some(key)) => {
                if key.kid.is_some() && keys.iter().any(|k: &VerifyingKey| k.kid == key.kid) {
                    return Err(format!("{}: kid is used twice", label(i, jwk)));
                }
                keys.push(key);
            }
            Ok(None) => other_algorithms.push(format!(
                "{}: {} is not an accepted algorithm",
                label(i, jwk),
                describe(jwk)
            )),
            Err(why) => invalid.push(format!("{}: {why}", label(i, jwk))),
        }
    }
    Ok(ParsedJwks {
        keys: KeySet { keys },
        other_algorithms,
        invalid,
    })
}

/// What kind of key a JWK is, for a log line.
fn describe(jwk: &Value) -> String {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    match (text("alg"), text("kty"), text("crv")) {
        (Some(alg), _, _) => alg.chars().take(16).filter(|c| !c.is_control()).collect(),
        (None, Some("RSA"), _) => "an RSA key without alg (no RSA algorithm is accepted)".into(),
        (None, _, Some(crv)) => format!(
            "a {} key",
            crv.chars()
                .take(16)
                .filter(|c| !c.is_control())
                .collect::<String>()
        ),
        _ => "the key".into(),
    }
}

/// A key, `Ok(None)` if it is valid but for no accepted algorithm.
fn parse_jwk(value: &Value, accepted: &Accepted) -> Result<Option<VerifyingKey>, String> {
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
    let declared = match value.get("alg") {
        None => None,
        Some(Value::String(a)) => Some(a.as_str()),
        Some(_) => return Err("alg must be a string".into()),
    };
    let jwk: JsonWebKey<'_> = serde_json::from_value(value.clone()).map_err(|e| format!("not a JWK: {e}"))?;
    if jwk.is_signing_key() {
        // A private part here is a publishing mistake; never load it.
        return Err(match jwk {
            JsonWebKey::Symmetric { .. } => "symmetric (oct) keys are never taken from a JWKS".into(),
            _ => "holds a private key; publish public keys only".into(),
        });
    }
    // The algorithms this kind of key can serve; `declared` must be one of them.
    let (family, material): (&[AsymAlg], KeyMaterial) = match &jwk {
        JsonWebKey::KeyPair { curve, .. } if curve == "Ed25519" => (
            &[AsymAlg::EdDSA, AsymAlg::Ed25519],
            KeyMaterial::Ed25519(Ed25519Key::try_from(&jwk).map_err(|e| e.to_string())?),
        ),
        JsonWebKey::EllipticCurve { curve, .. } if curve == "P-256" => (
            &[AsymAlg::Es256],
            KeyMaterial::P256(P256Key::try_from(&jwk).map_err(|e| e.to_string())?),
        ),
        JsonWebKey::EllipticCurve { curve, x, y, .. } if curve == "P-384" => (
            &[AsymAlg::Es384],
            KeyMaterial::P384(es384::key_from_coordinates(x, y)?),
        ),
        JsonWebKey::Rsa { modulus, .. } => {
            // Bits, not bytes: zeros in front make a short key look long.
            if bit_length(modulus) < MIN_RSA_BITS {
                return Err(format!("RSA modulus shorter than {MIN_RSA_BITS} bits"));
            }
            (
                &[AsymAlg::Rs256, AsymAlg::Ps256],
                KeyMaterial::Rsa(RsaKey::try_from(&jwk).map_err(|e| e.to_string())?),
            )
        }
        other => return Err(format!("unsupported key type {:?}", other.key_type())),
    };
    let key = |alg: AsymAlg, implied: bool| VerifyingKey {
        kid: kid.clone(),
        alg,
        implied,
        material,
    };
    match declared {
        Some(name) => match AsymAlg::from_name(name).filter(|a| family.contains(a)) {
            Some(alg) if accepted.contains(&alg) => Ok(Some(key(alg, false))),
            Some(_) => Ok(None),
            // A key of another algorithm we do not verify (RS512, ES512, ...) is left
            // out; a key claiming an algorithm its type cannot have is an error.
            None if known_for_family(name, family) => Ok(None),
            None => Err(format!("alg {name:?} does not match this key type")),
        },
        None if family.contains(&AsymAlg::Rs256) => Ok(accepted.rsa_without_alg.map(|alg| key(alg, false))),
        None => Ok(family
            .iter()
            .find(|a| accepted.contains(a))
            .map(|&alg| key(alg, true))),
    }
}

/// Whether `alg` is a JWS algorithm of the same key type as `family` (one we do not
/// verify, but not a contradiction).
fn known_for_family(alg: &str, family: &[AsymAlg]) -> bool {
    let rsa = ["RS384", "RS512", "PS384", "PS512"];
    let ec = ["ES512", "ES256K"];
    match family.first() {
        Some(AsymAlg::Rs256) => rsa.contains(&alg),
        Some(AsymAlg::Es256 | AsymAlg::Es384) => ec.contains(&alg),
        _ => false,
    }
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

    fn accepting(algs: &[AsymAlg]) -> Accepted {
        let rsa: Vec<AsymAlg> = algs.iter().copied().filter(|a| a.is_rsa()).collect();
        Accepted::new(algs.to_vec(), (rsa.len() == 1).then(|| rsa[0]))
    }

    fn one(jwk: &str, accepted: &[AsymAlg]) -> Result<VerifyingKey, String> {
        let parsed = parse_jwks(format!(r#"{{"keys":[{jwk}]}}"#).as_bytes(), &accepting(accepted))?;
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
        let parsed = parse_jwks(
            format!(r#"{{"keys":[{{{ed}}}]}}"#).as_bytes(),
            &accepting(&[AsymAlg::Es256]),
        )
        .unwrap();
        assert!(parsed.keys.is_empty() && parsed.invalid.is_empty() && parsed.other_algorithms.len() == 1);
    }

    #[test]
    fn lookup_by_kid_and_without() {
        let fixture: Value =
            serde_json::from_str(include_str!("../tests/fixtures/python-signed-tokens.json")).unwrap();
        let parsed = parse_jwks(fixture["jwks"].to_string().as_bytes(), &accepting(&ALL)).unwrap();
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
            &accepting(&ALL),
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
