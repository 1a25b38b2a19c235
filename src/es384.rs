//! ES384 (ECDSA on P-384 with SHA-384, RFC 7518 §3.4) for jwt-compact's validator.
//!
//! jwt-compact 0.8 verifies ES256 only; this plugs RustCrypto's P-384 verifier into
//! its `Algorithm` trait, so ES384 tokens go through the same staged validation. The
//! filter only verifies: signing is not offered (the trait's `sign` answers an
//! all-zero signature that no key accepts, never a real one).

use std::borrow::Cow;
use std::num::NonZeroUsize;

use jwt_compact::{Algorithm, AlgorithmSignature};
use p384::ecdsa::signature::hazmat::PrehashVerifier;
use p384::ecdsa::{Signature, VerifyingKey};
use sha2::{Digest, Sha384};

/// A P-384 public key.
pub type P384Key = VerifyingKey;

/// A 96-byte `r || s` signature (RFC 7518 §3.4). Parsing refuses `r` or `s` of zero or
/// at least the group order, as for P-256.
pub struct Es384Signature(Signature);

impl AlgorithmSignature for Es384Signature {
    const LENGTH: Option<NonZeroUsize> = NonZeroUsize::new(96);

    fn try_from_slice(slice: &[u8]) -> anyhow::Result<Self> {
        Signature::from_slice(slice)
            .map(Es384Signature)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.to_bytes().to_vec())
    }
}

/// `ES384`, verification only.
pub struct Es384;

impl Algorithm for Es384 {
    type SigningKey = ();
    type VerifyingKey = P384Key;
    type Signature = Es384Signature;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed("ES384")
    }

    fn sign(&self, _key: &(), _message: &[u8]) -> Es384Signature {
        // Never used: the filter does not sign. A fixed non-signature keeps the trait
        // total without a panic.
        Es384Signature(unusable_signature())
    }

    fn verify_signature(&self, signature: &Es384Signature, key: &P384Key, message: &[u8]) -> bool {
        let digest = Sha384::digest(message);
        key.verify_prehash(&digest, &signature.0).is_ok()
    }
}

#[cold]
fn unusable_signature() -> Signature {
    // r = s = 1 is a well-formed signature that verifies under no key for any message
    // one could find; it only exists so that `sign` needs no panic.
    let mut bytes = [0u8; 96];
    bytes[47] = 1;
    bytes[95] = 1;
    Signature::from_slice(&bytes).unwrap_or_else(|_| unusable_signature())
}

/// A P-384 key from a JWK's `x` and `y` (48 bytes each, big-endian).
pub fn key_from_coordinates(x: &[u8], y: &[u8]) -> Result<P384Key, String> {
    if x.len() != 48 || y.len() != 48 {
        return Err("a P-384 key's x and y must be 48 bytes each".into());
    }
    let point = p384::EncodedPoint::from_affine_coordinates(x.into(), y.into(), false);
    VerifyingKey::from_encoded_point(&point).map_err(|_| "not a point on P-384".to_string())
}
