//! How access tokens are signed: HS256 with `SECRET_KEY`, or EdDSA / ES256 with a
//! private key that never leaves the token service. Every token names its key (`kid`).
//!
//! Asymmetric private keys are stored sealed: ChaCha20-Poly1305 under a key derived
//! (HKDF-SHA256) from `SECRET_KEY` and bound to the key's `kid`, so a copy of the
//! database alone signs nothing. `SECRET_KEY` then never needs to reach Envoy.

use std::fmt;

use base64ct::{Base64UrlUnpadded, Encoding};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use gatehouse_claims::AccessClaims;
use hkdf::Hkdf;
use jwt_compact::alg::{Ed25519, Es256, Hs256, Hs256Key, SigningKey};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{AlgorithmExt, Claims, Header};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::secret::SecretKey;

/// The algorithms the service signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SigningAlg {
    #[value(name = "HS256")]
    Hs256,
    #[value(name = "EdDSA")]
    EdDsa,
    #[value(name = "ES256")]
    Es256,
}

impl SigningAlg {
    pub fn name(self) -> &'static str {
        match self {
            SigningAlg::Hs256 => "HS256",
            SigningAlg::EdDsa => "EdDSA",
            SigningAlg::Es256 => "ES256",
        }
    }

    pub fn from_name(name: &str) -> Option<SigningAlg> {
        [SigningAlg::Hs256, SigningAlg::EdDsa, SigningAlg::Es256]
            .into_iter()
            .find(|a| a.name() == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("the stored private key {0} cannot be unsealed (was SECRET_KEY changed?)")]
    Unseal(String),
    #[error("the stored key {0} is corrupt")]
    Corrupt(String),
    #[error("HS256 keys are not stored; they are SECRET_KEY")]
    Symmetric,
    #[error("signing failed: {0}")]
    Sign(String),
}

/// A key ready to sign.
pub enum Signer {
    Hs256 {
        kid: String,
        key: Hs256Key,
    },
    EdDsa {
        kid: String,
        key: <Ed25519 as jwt_compact::Algorithm>::SigningKey,
    },
    Es256 {
        kid: String,
        key: <Es256 as jwt_compact::Algorithm>::SigningKey,
    },
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({}, {})", self.alg().name(), self.kid())
    }
}

impl Signer {
    /// HS256 with `SECRET_KEY` as text (PyJWT's convention). The `kid` is a short hash
    /// of the secret: stable, and revealing nothing usable about it.
    pub fn hs256(secret: &SecretKey) -> Signer {
        let digest = Sha256::digest([b"gatehouse hs256 kid\0".as_slice(), secret.as_bytes()].concat());
        Signer::Hs256 {
            kid: format!("hs256-{}", hex::encode(&digest[..6])),
            key: Hs256Key::new(secret.as_bytes()),
        }
    }

    pub fn kid(&self) -> &str {
        match self {
            Signer::Hs256 { kid, .. } | Signer::EdDsa { kid, .. } | Signer::Es256 { kid, .. } => kid,
        }
    }

    pub fn alg(&self) -> SigningAlg {
        match self {
            Signer::Hs256 { .. } => SigningAlg::Hs256,
            Signer::EdDsa { .. } => SigningAlg::EdDsa,
            Signer::Es256 { .. } => SigningAlg::Es256,
        }
    }

    pub fn sign(&self, claims: &Claims<AccessClaims>) -> Result<String, SigningError> {
        let header = Header::empty().with_token_type("JWT").with_key_id(self.kid());
        let token = match self {
            Signer::Hs256 { key, .. } => Hs256.token(&header, claims, key),
            Signer::EdDsa { key, .. } => Ed25519.token(&header, claims, key),
            Signer::Es256 { key, .. } => Es256.token(&header, claims, key),
        };
        token.map_err(|e| SigningError::Sign(e.to_string()))
    }
}

/// A new asymmetric key, as it is stored.
pub struct NewKey {
    pub kid: String,
    pub alg: SigningAlg,
    pub sealed: Vec<u8>,
    /// The public JWK with `kid`, `alg` and `use`.
    pub public_jwk: String,
}

/// Generates a key pair; the `kid` is its RFC 7638 thumbprint.
pub fn generate(alg: SigningAlg, secret: &SecretKey) -> Result<NewKey, SigningError> {
    let public = |jwk: JsonWebKey<'_>| -> Result<(serde_json::Value, String), SigningError> {
        let jwk = jwk.to_verifying_key();
        let kid = Base64UrlUnpadded::encode_string(&jwk.thumbprint::<Sha256>());
        let value = serde_json::to_value(&jwk).map_err(|e| SigningError::Sign(e.to_string()))?;
        Ok((value, kid))
    };
    let (private, (mut jwk, kid)) = match alg {
        SigningAlg::Hs256 => return Err(SigningError::Symmetric),
        SigningAlg::EdDsa => {
            let (sk, pk) = Ed25519::generate(&mut OsRng);
            let private = Zeroizing::new(SigningKey::<Ed25519>::as_bytes(&sk).to_vec());
            (private, public(JsonWebKey::from(&pk))?)
        }
        SigningAlg::Es256 => {
            let sk = p256::ecdsa::SigningKey::random(&mut OsRng);
            let pk = SigningKey::<Es256>::to_verifying_key(&sk);
            let private = Zeroizing::new(SigningKey::<Es256>::as_bytes(&sk).to_vec());
            (private, public(JsonWebKey::from(&pk))?)
        }
    };
    jwk["kid"] = kid.clone().into();
    jwk["alg"] = alg.name().into();
    jwk["use"] = "sig".into();
    Ok(NewKey {
        sealed: seal(secret, &kid, &private)?,
        kid,
        alg,
        public_jwk: jwk.to_string(),
    })
}

/// A stored key, unsealed for signing.
pub fn unseal_signer(
    secret: &SecretKey,
    kid: &str,
    alg: SigningAlg,
    sealed: &[u8],
) -> Result<Signer, SigningError> {
    let private = unseal(secret, kid, sealed)?;
    let corrupt = |_| SigningError::Corrupt(kid.to_string());
    Ok(match alg {
        SigningAlg::Hs256 => return Err(SigningError::Symmetric),
        SigningAlg::EdDsa => Signer::EdDsa {
            kid: kid.into(),
            key: SigningKey::<Ed25519>::from_slice(&private).map_err(corrupt)?,
        },
        SigningAlg::Es256 => Signer::Es256 {
            kid: kid.into(),
            key: SigningKey::<Es256>::from_slice(&private).map_err(corrupt)?,
        },
    })
}

fn cipher(secret: &SecretKey, kid: &str) -> ChaCha20Poly1305 {
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is a valid HKDF-SHA256 output length; `expand` cannot fail for it.
    let _ = Hkdf::<Sha256>::new(Some(b"gatehouse-token sealed signing key v1"), secret.as_bytes())
        .expand(kid.as_bytes(), key.as_mut());
    ChaCha20Poly1305::new(Key::from_slice(key.as_ref()))
}

fn seal(secret: &SecretKey, kid: &str, plaintext: &[u8]) -> Result<Vec<u8>, SigningError> {
    let mut nonce = [0u8; 12];
    OsRng.fill_bytes(&mut nonce);
    let sealed = cipher(secret, kid)
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: kid.as_bytes(),
            },
        )
        .map_err(|_| SigningError::Sign("sealing failed".into()))?;
    Ok([nonce.as_slice(), &sealed].concat())
}

fn unseal(secret: &SecretKey, kid: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SigningError> {
    let (nonce, body) = sealed
        .split_at_checked(12)
        .ok_or_else(|| SigningError::Corrupt(kid.into()))?;
    cipher(secret, kid)
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: body,
                aad: kid.as_bytes(),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| SigningError::Unseal(kid.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret;

    use gatehouse_testkit::SECRET;
    const OTHER: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";

    fn claims() -> Claims<AccessClaims> {
        Claims::new(AccessClaims {
            iss: "i".into(),
            aud: "api".into(),
            sub: "alice".into(),
            roles: vec!["user".into()],
            jti: "j".into(),
        })
    }

    #[test]
    fn sealed_keys_round_trip_and_verify_with_their_published_jwk() {
        let secret = secret::parse(Some(SECRET)).unwrap();
        for alg in [SigningAlg::EdDsa, SigningAlg::Es256] {
            let key = generate(alg, &secret).unwrap();
            let jwk: serde_json::Value = serde_json::from_str(&key.public_jwk).unwrap();
            assert_eq!(jwk["kid"], key.kid.as_str());
            assert_eq!(jwk["alg"], alg.name());
            assert!(jwk.get("d").is_none(), "the published JWK holds no private part");
            let signer = unseal_signer(&secret, &key.kid, alg, &key.sealed).unwrap();
            let token = signer.sign(&claims()).unwrap();
            let untrusted = jwt_compact::UntrustedToken::new(&token).unwrap();
            assert_eq!(untrusted.header().key_id.as_deref(), Some(key.kid.as_str()));
            let parsed: JsonWebKey<'_> = serde_json::from_value(jwk).unwrap();
            let ok = match alg {
                SigningAlg::EdDsa => Ed25519
                    .validator::<AccessClaims>(
                        &<Ed25519 as jwt_compact::Algorithm>::VerifyingKey::try_from(&parsed).unwrap(),
                    )
                    .validate(&untrusted)
                    .is_ok(),
                _ => Es256
                    .validator::<AccessClaims>(
                        &<Es256 as jwt_compact::Algorithm>::VerifyingKey::try_from(&parsed).unwrap(),
                    )
                    .validate(&untrusted)
                    .is_ok(),
            };
            assert!(ok, "{alg:?}");
            // The sealed bytes are useless without SECRET_KEY, or under another kid.
            let other = secret::parse(Some(OTHER)).unwrap();
            assert!(matches!(
                unseal_signer(&other, &key.kid, alg, &key.sealed),
                Err(SigningError::Unseal(_))
            ));
            assert!(matches!(
                unseal_signer(&secret, "another-kid", alg, &key.sealed),
                Err(SigningError::Unseal(_))
            ));
        }
    }

    #[test]
    fn hs256_tokens_name_a_stable_kid_that_hides_the_secret() {
        let secret = secret::parse(Some(SECRET)).unwrap();
        let a = Signer::hs256(&secret);
        assert_eq!(a.kid(), Signer::hs256(&secret).kid());
        assert!(a.kid().starts_with("hs256-") && !SECRET.contains(&a.kid()[6..]));
        let token = a.sign(&claims()).unwrap();
        assert_eq!(
            jwt_compact::UntrustedToken::new(&token)
                .unwrap()
                .header()
                .key_id
                .as_deref(),
            Some(a.kid())
        );
    }
}
