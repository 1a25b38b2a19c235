//! HS256 with the key schedule done once.
//!
//! jwt-compact's `Hs256` keys a fresh HMAC for every token: two SHA-256 compressions
//! (the padded key for the inner and outer hash) before the message is even read, out
//! of about seven for a typical token. This algorithm keeps the keyed state and clones
//! it per token. It plugs into jwt-compact's `validator`, so the staged validation is
//! unchanged; the signature is compared in constant time by `hmac`.

use std::borrow::Cow;
use std::num::NonZeroUsize;

use hmac::{Hmac, Mac};
use jwt_compact::{Algorithm, AlgorithmSignature};
use sha2::Sha256;

/// An HMAC-SHA256 key, already absorbed into the inner and outer hash states.
#[derive(Clone)]
pub struct Hs256Key(Hmac<Sha256>);

impl Hs256Key {
    pub fn new(key: &[u8]) -> Self {
        // HMAC takes keys of any length; this cannot fail.
        Hs256Key(<Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable_key()))
    }
}

#[cold]
fn unreachable_key() -> Hmac<Sha256> {
    // `new_from_slice` only fails for fixed-size keys; keep clippy's no-panic rule.
    <Hmac<Sha256> as Mac>::new_from_slice(&[0u8; 32]).unwrap_or_else(|_| unreachable_key())
}

/// A 32-byte HS256 signature.
pub struct Hs256Signature([u8; 32]);

impl AlgorithmSignature for Hs256Signature {
    const LENGTH: Option<NonZeroUsize> = NonZeroUsize::new(32);

    fn try_from_slice(slice: &[u8]) -> anyhow::Result<Self> {
        Ok(Hs256Signature(slice.try_into()?))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.0)
    }
}

/// `HS256`, verifying with a pre-keyed [`Hs256Key`].
pub struct Hs256;

impl Algorithm for Hs256 {
    type SigningKey = Hs256Key;
    type VerifyingKey = Hs256Key;
    type Signature = Hs256Signature;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed("HS256")
    }

    fn sign(&self, key: &Hs256Key, message: &[u8]) -> Hs256Signature {
        let mut mac = key.0.clone();
        mac.update(message);
        Hs256Signature(mac.finalize().into_bytes().into())
    }

    fn verify_signature(&self, signature: &Hs256Signature, key: &Hs256Key, message: &[u8]) -> bool {
        let mut mac = key.0.clone();
        mac.update(message);
        mac.verify_slice(&signature.0).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jwt_compact::{AlgorithmExt, Claims, Empty, Header, UntrustedToken};

    #[test]
    fn agrees_with_jwt_compact_hs256_both_ways() {
        let key = b"an HMAC key of some length, any length at all";
        let ours = Hs256Key::new(key);
        let theirs = jwt_compact::alg::Hs256Key::new(key);
        let claims = Claims::new(Empty {});
        let by_them = jwt_compact::alg::Hs256
            .token(&Header::empty(), &claims, &theirs)
            .unwrap();
        let by_us = Hs256.token(&Header::empty(), &claims, &ours).unwrap();
        assert_eq!(by_them, by_us);
        let token = UntrustedToken::new(&by_them).unwrap();
        assert!(Hs256.validator::<Empty>(&ours).validate(&token).is_ok());
        assert!(Hs256
            .validator::<Empty>(&Hs256Key::new(b"other"))
            .validate(&token)
            .is_err());
    }
}
