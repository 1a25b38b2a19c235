//! Checking that an access token is one of ours, for the endpoints that take one
//! (`/revoke`, the admin API): signed by our algorithm with our current key, a key we
//! still publish, or `SECRET_KEY`; our `iss` and `aud`; not expired.

use gatehouse_claims::AccessClaims;
use jwt_compact::alg::{Ed25519, Es256, Hs256, Hs256Key};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{Algorithm, AlgorithmExt, Token, UntrustedToken, ValidationError};

use super::Issuer;
use crate::signing::SigningAlg;

/// What the service needs from a verified access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAccess {
    pub sub: String,
    pub roles: Vec<String>,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
}

/// Why a token is not accepted; never holds any part of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token algorithm is not the one this service signs with")]
    Algorithm,
    #[error("the token's signing key is not ours")]
    UnknownKey,
    #[error("the token signature is invalid")]
    Signature,
    #[error("the token issuer is not ours")]
    Issuer,
    #[error("the token audience is not ours")]
    Audience,
    #[error("the token lacks iat or exp")]
    Claims,
    #[error("the token has expired")]
    Expired,
}

impl Issuer {
    /// Verifies an access token this service issued, as of `now`.
    pub fn verify_access(&self, token: &str, now: i64) -> Result<VerifiedAccess, AccessError> {
        let untrusted = UntrustedToken::new(token).map_err(|_| AccessError::Malformed)?;
        // The header names the algorithm; only ours is tried, so a token cannot choose
        // how it is checked (no HS256 against a public key, no `none`).
        if untrusted.algorithm() != self.alg.name() {
            return Err(AccessError::Algorithm);
        }
        let kid = untrusted
            .header()
            .key_id
            .as_deref()
            .ok_or(AccessError::UnknownKey)?;
        let verified: Token<AccessClaims> = match self.alg {
            SigningAlg::Hs256 => {
                if kid != self.signer().kid() {
                    return Err(AccessError::UnknownKey);
                }
                let key = Hs256Key::new(self.secret.as_bytes());
                checked(Hs256.validator(&key).validate(&untrusted))?
            }
            SigningAlg::EdDsa => {
                let key = self.published_key::<Ed25519>(kid)?;
                checked(Ed25519.validator(&key).validate(&untrusted))?
            }
            SigningAlg::Es256 => {
                let key = self.published_key::<Es256>(kid)?;
                checked(Es256.validator(&key).validate(&untrusted))?
            }
        };
        let claims = verified.claims();
        if claims.custom.iss != self.issuer {
            return Err(AccessError::Issuer);
        }
        if claims.custom.aud != self.audience {
            return Err(AccessError::Audience);
        }
        let (Some(iat), Some(exp)) = (claims.issued_at, claims.expiration) else {
            return Err(AccessError::Claims);
        };
        let (iat, exp) = (iat.timestamp(), exp.timestamp());
        if exp <= now {
            return Err(AccessError::Expired);
        }
        Ok(VerifiedAccess {
            sub: claims.custom.sub.clone(),
            roles: claims.custom.roles.clone(),
            jti: claims.custom.jti.clone(),
            iat,
            exp,
        })
    }

    /// The verifying key `kid` of our algorithm, if it is still published: a retired
    /// key verifies exactly as long as the filter would trust it.
    fn published_key<A>(&self, kid: &str) -> Result<A::VerifyingKey, AccessError>
    where
        A: Algorithm,
        A::VerifyingKey: for<'k> TryFrom<&'k JsonWebKey<'k>>,
    {
        let jwks = self.jwks();
        let jwk = jwks["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|k| k["kid"] == kid && k["alg"] == self.alg.name())
            .ok_or(AccessError::UnknownKey)?;
        let parsed: JsonWebKey<'_> =
            serde_json::from_value(jwk.clone()).map_err(|_| AccessError::UnknownKey)?;
        A::VerifyingKey::try_from(&parsed).map_err(|_| AccessError::UnknownKey)
    }
}

fn checked(result: Result<Token<AccessClaims>, ValidationError>) -> Result<Token<AccessClaims>, AccessError> {
    result.map_err(|e| match e {
        ValidationError::InvalidSignature
        | ValidationError::InvalidSignatureLen { .. }
        | ValidationError::MalformedSignature(_) => AccessError::Signature,
        ValidationError::AlgorithmMismatch { .. } => AccessError::Algorithm,
        _ => AccessError::Malformed,
    })
}
