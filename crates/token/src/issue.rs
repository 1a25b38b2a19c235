//! Minting access tokens and refresh tokens, the keys that sign them, and checking
//! access tokens that come back ([`Issuer::verify_access`]).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64ct::{Base64UrlUnpadded, Encoding};
use chrono::{TimeZone, Utc};
use gatehouse_claims::AccessClaims;
use jwt_compact::Claims;
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::secret::SecretKey;
use crate::signing::{generate, unseal_signer, Signer, SigningAlg, SigningError};
use crate::store::Store;

mod verify;
pub use verify::{AccessError, VerifiedAccess};

/// How old the published keys may be when `/.well-known/jwks.json` answers: a flood
/// of JWKS requests costs the store at most this many reads per second and replica.
pub const JWKS_READ_EVERY: Duration = Duration::from_millis(200);

/// What goes into every access token besides the user, and the key that signs it.
pub struct Issuer {
    secret: SecretKey,
    alg: SigningAlg,
    signer: RwLock<Arc<Signer>>,
    jwks: RwLock<Arc<Value>>,
    /// When the published keys were last read from the store (see
    /// [`Issuer::published_jwks`]); the lock makes concurrent readers share one read.
    jwks_read_at: tokio::sync::Mutex<Option<Instant>>,
    pub issuer: String,
    pub audience: String,
    pub access_ttl_seconds: i64,
    /// Where clients reach this service (for the discovery document).
    pub public_url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Signing(#[from] SigningError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl Issuer {
    /// An HS256 issuer; [`Issuer::with_alg`] for asymmetric keys.
    pub fn new(secret: &SecretKey, issuer: String, audience: String, access_ttl_seconds: i64) -> Self {
        Issuer {
            secret: secret.clone(),
            alg: SigningAlg::Hs256,
            signer: RwLock::new(Arc::new(Signer::hs256(secret))),
            jwks: RwLock::new(Arc::new(json!({"keys": []}))),
            jwks_read_at: tokio::sync::Mutex::new(None),
            issuer,
            audience,
            access_ttl_seconds,
            public_url: String::new(),
        }
    }

    /// Signs with `alg`; for EdDSA and ES256 the keys come from the store
    /// ([`Issuer::load`]).
    #[must_use]
    pub fn with_alg(mut self, alg: SigningAlg) -> Self {
        self.alg = alg;
        self
    }

    #[must_use]
    pub fn with_public_url(mut self, url: String) -> Self {
        self.public_url = url.trim_end_matches('/').to_string();
        self
    }

    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// How long a retired key stays published: until every token it signed expired,
    /// plus room for clock skew at the edge.
    pub fn publish_window(&self) -> i64 {
        self.access_ttl_seconds.saturating_add(120)
    }

    /// (Re)loads the current signing key and the published ones from the store,
    /// creating a first key if there is none for the algorithm. Called at start and
    /// then every second, so a `keys rotate` from the CLI, or a key another replica
    /// made, is picked up.
    pub async fn load(&self, store: &Store, now: i64) -> Result<(), KeyError> {
        if self.alg == SigningAlg::Hs256 {
            return Ok(());
        }
        let mut keys = store.signing_keys().await?;
        let has_current = keys.iter().any(|k| k.retired_at.is_none() && k.alg == self.alg);
        if !has_current {
            let key = generate(self.alg, &self.secret)?;
            match store.ensure_signing_key(&key, now).await {
                Ok(true) => info!(kid = %key.kid, alg = self.alg.name(), "generated a signing key"),
                // Another replica made one meanwhile: sign with that one.
                Ok(false) | Err(crate::store::StoreError::KeyRace) => {}
                Err(e) => return Err(e.into()),
            }
            keys = store.signing_keys().await?;
        }
        // The newest key that signs now; a key published ahead of its activation waits
        // (and is used only if no other key of the algorithm can sign).
        let ours = || keys.iter().filter(|k| k.alg == self.alg);
        let Some(current) = ours()
            .find(|k| k.signs_at(now))
            .or_else(|| ours().find(|k| k.retired_at.is_none()))
        else {
            return Ok(());
        };
        let current_kid = current.kid.clone();
        if self.signer().kid() != current_kid {
            let signer = unseal_signer(&self.secret, &current.kid, self.alg, &current.sealed)?;
            if let Ok(mut slot) = self.signer.write() {
                *slot = Arc::new(signer);
            }
            info!(kid = %current_kid, "signing with key");
        }
        self.publish(&keys, now);
        Ok(())
    }

    /// Every key that signs, will sign, or signed tokens that may still be alive.
    fn publish(&self, keys: &[crate::store::StoredKey], now: i64) {
        let window = self.publish_window();
        let published: Vec<Value> = keys
            .iter()
            .filter(|k| k.retired_at.is_none_or(|r| r.saturating_add(window) > now))
            .filter_map(|k| serde_json::from_str(&k.public_jwk).ok())
            .collect();
        if let Ok(mut slot) = self.jwks.write() {
            *slot = Arc::new(json!({ "keys": published }));
        }
    }

    /// The public keys for `/.well-known/jwks.json`, with any key the store holds
    /// that signs now or will (read when the copy is older than [`JWKS_READ_EVERY`], so a
    /// replica that has not reloaded yet misses such a key for at most that long).
    /// Replicas reload their keys every second, so without this a verifier that
    /// refetches the JWKS for a token's unknown `kid` (the Gatehouse filter does, at
    /// once) could reach a replica that has not yet seen the key another replica
    /// signed that token with (`keys rotate --now`), and refuse the token until its
    /// next refetch. Keys are only added here; which key signs, and which retired key
    /// is no longer published, change on the reload.
    pub async fn published_jwks(&self, store: &Store, now: i64) -> Arc<Value> {
        if self.alg == SigningAlg::Hs256 {
            return self.jwks();
        }
        // One read at a time; requests meanwhile get the copy, never wait for the store.
        let Ok(mut read_at) = self.jwks_read_at.try_lock() else {
            return self.jwks();
        };
        if read_at.is_none_or(|t| t.elapsed() >= JWKS_READ_EVERY) {
            // Failures too wait for the next slot: a store that is down is not asked
            // once per request.
            *read_at = Some(Instant::now());
            match tokio::time::timeout(JWKS_READ_EVERY, store.signing_keys()).await {
                Ok(Ok(keys)) => self.add_signing_keys(&keys, now),
                // The copy is still good, at most a reload old.
                Ok(Err(e)) => warn!(error = %e, "could not read the signing keys for the JWKS"),
                Err(_) => warn!("reading the signing keys for the JWKS took too long"),
            }
        }
        self.jwks()
    }

    /// Adds to the published set the keys that sign at `now` or later and are not in it.
    fn add_signing_keys(&self, keys: &[crate::store::StoredKey], now: i64) {
        // Under the write lock: a reload publishing meanwhile is not undone.
        let Ok(mut slot) = self.jwks.write() else { return };
        let mut published = slot["keys"].as_array().cloned().unwrap_or_default();
        let missing: Vec<Value> = keys
            .iter()
            .filter(|k| k.retired_at.is_none_or(|r| r > now))
            .filter(|k| !published.iter().any(|p| p["kid"] == k.kid.as_str()))
            .filter_map(|k| serde_json::from_str(&k.public_jwk).ok())
            .collect();
        if !missing.is_empty() {
            published.extend(missing);
            *slot = Arc::new(json!({ "keys": published }));
        }
    }

    pub fn signer(&self) -> Arc<Signer> {
        self.signer
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// The public keys, as `/.well-known/jwks.json` serves them.
    pub fn jwks(&self) -> Arc<Value> {
        self.jwks
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// A JWT for `sub` with `roles`, issued at `now`.
    pub fn access_token(&self, sub: &str, roles: &[String], now: i64) -> Result<String, SigningError> {
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
        self.signer().sign(&claims)
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
