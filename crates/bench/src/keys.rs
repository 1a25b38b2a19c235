//! Asymmetric keys for the bench: one Ed25519 and one P-256 key pair, their JWKS, and
//! tokens signed with them (and with a second, unpublished key, for the forged case).

use jwt_compact::alg::{Ed25519, Es256, SigningKey};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{AlgorithmExt, Claims, Header};
use rand::rngs::OsRng;
use serde_json::{json, Value};

/// A valid token, one signed by a key nobody published, and one without the role.
pub struct Tokens {
    pub valid: String,
    pub forged: String,
    pub wrong_role: String,
}

pub struct AsymKeys {
    ed: <Ed25519 as jwt_compact::Algorithm>::SigningKey,
    ed_other: <Ed25519 as jwt_compact::Algorithm>::SigningKey,
    es: <Es256 as jwt_compact::Algorithm>::SigningKey,
    es_other: <Es256 as jwt_compact::Algorithm>::SigningKey,
    /// Both public keys, with `kid`, `alg` and `use`.
    pub jwks: Value,
}

impl AsymKeys {
    pub fn generate() -> Self {
        let (ed, ed_pub) = Ed25519::generate(&mut OsRng);
        let (ed_other, _) = Ed25519::generate(&mut OsRng);
        let es = p256::ecdsa::SigningKey::random(&mut OsRng);
        let es_other = p256::ecdsa::SigningKey::random(&mut OsRng);
        let es_pub = SigningKey::<Es256>::to_verifying_key(&es);
        let mut ed_jwk = serde_json::to_value(JsonWebKey::from(&ed_pub)).unwrap_or_default();
        ed_jwk["kid"] = "bench-ed".into();
        ed_jwk["alg"] = "EdDSA".into();
        ed_jwk["use"] = "sig".into();
        let mut es_jwk = serde_json::to_value(JsonWebKey::from(&es_pub)).unwrap_or_default();
        es_jwk["kid"] = "bench-es".into();
        es_jwk["alg"] = "ES256".into();
        es_jwk["use"] = "sig".into();
        AsymKeys {
            ed,
            ed_other,
            es,
            es_other,
            jwks: json!({"keys": [ed_jwk, es_jwk]}),
        }
    }

    pub fn tokens(&self, alg: &str, claims: &Value, wrong_role: &Value) -> anyhow::Result<Tokens> {
        let claims = Claims::new(claims.clone());
        let wrong = Claims::new(wrong_role.clone());
        Ok(match alg {
            "EdDSA" => {
                let h = Header::empty().with_key_id("bench-ed").with_token_type("JWT");
                Tokens {
                    valid: Ed25519.token(&h, &claims, &self.ed)?,
                    forged: Ed25519.token(&h, &claims, &self.ed_other)?,
                    wrong_role: Ed25519.token(&h, &wrong, &self.ed)?,
                }
            }
            _ => {
                let h = Header::empty().with_key_id("bench-es").with_token_type("JWT");
                Tokens {
                    valid: Es256.token(&h, &claims, &self.es)?,
                    forged: Es256.token(&h, &claims, &self.es_other)?,
                    wrong_role: Es256.token(&h, &wrong, &self.es)?,
                }
            }
        })
    }
}
