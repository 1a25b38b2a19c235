//! Minting access tokens and refresh tokens.

use base64ct::{Base64UrlUnpadded, Encoding};
use chrono::{TimeZone, Utc};
use gatehouse_claims::AccessClaims;
use jwt_compact::alg::{Hs256, Hs256Key};
use jwt_compact::{AlgorithmExt, Claims, Header};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::secret::SecretKey;

/// What goes into every access token besides the user.
pub struct Issuer {
    key: Hs256Key,
    pub issuer: String,
    pub audience: String,
    pub access_ttl_seconds: i64,
}

impl Issuer {
    pub fn new(secret: &SecretKey, issuer: String, audience: String, access_ttl_seconds: i64) -> Self {
        Issuer {
            key: Hs256Key::new(secret.as_bytes()),
            issuer,
            audience,
            access_ttl_seconds,
        }
    }

    /// An HS256 JWT for `sub` with `roles`, issued at `now`.
    pub fn access_token(
        &self,
        sub: &str,
        roles: &[String],
        now: i64,
    ) -> Result<String, jwt_compact::CreationError> {
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: sub.to_string(),
            roles: roles.to_vec(),
            jti: random_token(16),
        };
        let mut claims = Claims::new(claims);
        claims.issued_at = Utc.timestamp_opt(now, 0).single();
        claims.expiration = Utc
            .timestamp_opt(now.saturating_add(self.access_ttl_seconds), 0)
            .single();
        Hs256.token(&Header::empty().with_token_type("JWT"), &claims, &self.key)
    }
}

/// `bytes` random bytes from the OS, base64url.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    Base64UrlUnpadded::encode_string(&buf)
}

/// How a refresh token is stored: its SHA-256 (it has 256 bits of entropy, so a
/// fast hash is enough; the database never holds a usable token).
pub fn refresh_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}
