//! Argon2id password hashing and verification, off the async runtime and bounded.
//!
//! Every verification costs one Argon2 run with the stored hash's parameters; an
//! unknown user is verified against a dummy hash made with the current parameters, and
//! a failed login of either kind is answered only after [`Hasher::failure_time`] (see
//! `hash_costs`), so "no such user" and "wrong password" take the same time whatever
//! parameters the stored hashes have.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::hash_costs::{self, HashCosts};

/// OWASP's minimum for Argon2id: 19 MiB, 2 iterations, 1 lane.
pub const OWASP_MIN: Argon2Params = Argon2Params {
    memory_kib: 19 * 1024,
    iterations: 2,
    parallelism: 1,
};

/// Upper bounds for a hash we agree to verify: an imported hash asking for 4 GiB per
/// login would be a denial of service.
const MAX_MEMORY_KIB: u32 = 1024 * 1024;
const MAX_ITERATIONS: u32 = 64;
const MAX_PARALLELISM: u32 = 64;

/// Longest password accepted, in bytes (Argon2 takes any length; the bound keeps
/// one request's work bounded).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Shortest password a new account may get.
pub const MIN_PASSWORD_CHARS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Argon2Params {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error(
        "Argon2 parameters below OWASP's minimum (m={} KiB, t={}, p={})",
        OWASP_MIN.memory_kib,
        OWASP_MIN.iterations,
        OWASP_MIN.parallelism
    )]
    WeakParams,
    #[error("invalid Argon2 parameters: {0}")]
    BadParams(String),
    #[error("not an Argon2 PHC string this service accepts")]
    BadHash,
    #[error("the password must have {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_BYTES} bytes and no NUL")]
    BadPassword,
    #[error("hashing failed: {0}")]
    Hashing(String),
}

/// One of the `max_concurrent` hashing slots, held while it lives.
pub struct HashSlot<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
}

/// Beyond the bound on concurrent hashes, a request waited too long for a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// The result of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    pub matches: bool,
    /// The stored hash is weaker than the current parameters.
    pub needs_rehash: bool,
}

#[derive(Clone)]
pub struct Hasher {
    inner: Arc<Inner>,
}

struct Inner {
    argon2: Argon2<'static>,
    params: Argon2Params,
    dummy: String,
    permits: Semaphore,
    queue_timeout: Duration,
    costs: HashCosts,
    queued: AtomicUsize,
}

impl Hasher {
    /// Refuses parameters below OWASP's minimum. `max_concurrent` hashes run at once;
    /// a request waits at most `queue_timeout` for its turn.
    pub fn new(
        params: Argon2Params,
        max_concurrent: usize,
        queue_timeout: Duration,
    ) -> Result<Self, PasswordError> {
        if params.memory_kib < OWASP_MIN.memory_kib
            || params.iterations < OWASP_MIN.iterations
            || params.parallelism < OWASP_MIN.parallelism
        {
            return Err(PasswordError::WeakParams);
        }
        let p = Params::new(params.memory_kib, params.iterations, params.parallelism, None)
            .map_err(|e| PasswordError::BadParams(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, p);
        let started = Instant::now();
        let dummy = hash_with(&argon2, "gatehouse dummy password, never a real one")?;
        let costs = HashCosts::default();
        costs.observe(params, started.elapsed());
        Ok(Hasher {
            inner: Arc::new(Inner {
                argon2,
                params,
                dummy,
                permits: Semaphore::new(max_concurrent.max(1)),
                queue_timeout,
                costs,
                queued: AtomicUsize::new(0),
            }),
        })
    }

    /// How long after its hashing began a failed login is answered: the slowest
    /// verification among the parameter sets this hasher knows, with a margin.
    pub fn failure_time(&self) -> Duration {
        self.inner.costs.failure_time()
    }

    /// Learns the parameter sets of stored hashes (their [`hash_costs::label`]s): each
    /// new one is timed by one hash with it, under a hashing slot. Labels that are not
    /// parameters this service would verify are ignored.
    pub async fn learn(&self, labels: &[String]) -> Result<(), Busy> {
        for params in labels.iter().filter_map(|l| hash_costs::parse_label(l)) {
            if self.inner.costs.knows(params) || !within_bounds(params) {
                continue;
            }
            let Ok(p) = Params::new(params.memory_kib, params.iterations, params.parallelism, None) else {
                continue;
            };
            let _slot = self.slot().await?;
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || {
                let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, p);
                let started = Instant::now();
                if hash_with(&argon2, "gatehouse timing probe, never a real password").is_ok() {
                    inner.costs.observe(params, started.elapsed());
                }
            })
            .await
            .map_err(|_| Busy)?;
        }
        Ok(())
    }

    pub fn params(&self) -> Argon2Params {
        self.inner.params
    }

    /// Hashes a new password (checks its length first).
    pub fn hash_blocking(&self, password: &str) -> Result<String, PasswordError> {
        check_new_password(password)?;
        hash_with(&self.inner.argon2, password)
    }

    /// Waits (at most the queue timeout) for one of the hashing slots; the slot is
    /// held until the returned guard is dropped. Every hash and verification runs
    /// under one.
    pub async fn slot(&self) -> Result<HashSlot<'_>, Busy> {
        self.inner.queued.fetch_add(1, Ordering::SeqCst);
        let permit = tokio::time::timeout(self.inner.queue_timeout, self.inner.permits.acquire()).await;
        self.inner.queued.fetch_sub(1, Ordering::SeqCst);
        Ok(HashSlot {
            _permit: permit.map_err(|_| Busy)?.map_err(|_| Busy)?,
        })
    }

    /// How many hashes wait for a slot now.
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::SeqCst)
    }

    /// Verifies `password` against `stored`, or against the dummy hash when there is
    /// no stored hash (unknown user) or it is unusable. Returns the time spent hashing.
    pub async fn verify(
        &self,
        password: Zeroizing<String>,
        stored: Option<String>,
    ) -> Result<(Verification, Duration), Busy> {
        let _slot = self.slot().await?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let v = inner.verify_blocking(&password, stored.as_deref());
            (v, started.elapsed())
        })
        .await
        .map_err(|_| Busy)
    }

    /// Hashes on the blocking pool, under the same bound as verification.
    pub async fn hash(&self, password: Zeroizing<String>) -> Result<Result<String, PasswordError>, Busy> {
        let _slot = self.slot().await?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.hash_blocking(&password))
            .await
            .map_err(|_| Busy)
    }
}

impl Inner {
    fn verify_blocking(&self, password: &str, stored: Option<&str>) -> Verification {
        let parsed = stored.and_then(|s| PasswordHash::new(s).ok()).filter(acceptable);
        let started = Instant::now();
        let (verification, params) = match parsed {
            Some(hash) => (
                Verification {
                    matches: self.argon2.verify_password(password.as_bytes(), &hash).is_ok(),
                    needs_rehash: weaker_than(&hash, self.params),
                },
                params_of(&hash),
            ),
            None => {
                // The work of a real check, so the answer's timing says nothing.
                if let Ok(dummy) = PasswordHash::new(&self.dummy) {
                    let _ = self.argon2.verify_password(password.as_bytes(), &dummy);
                }
                let none = Verification {
                    matches: false,
                    needs_rehash: false,
                };
                (none, Some(self.params))
            }
        };
        if let Some(params) = params {
            self.costs.observe(params, started.elapsed());
        }
        verification
    }
}

/// Checks a PHC string before it is stored (import): Argon2, within our bounds.
pub fn check_phc(phc: &str) -> Result<(), PasswordError> {
    match PasswordHash::new(phc) {
        Ok(hash) if acceptable(&hash) && hash.hash.is_some() => Ok(()),
        _ => Err(PasswordError::BadHash),
    }
}

/// Length and content rules for a new password.
pub fn check_new_password(password: &str) -> Result<(), PasswordError> {
    if password.len() > MAX_PASSWORD_BYTES
        || password.chars().count() < MIN_PASSWORD_CHARS
        || password.contains('\0')
    {
        return Err(PasswordError::BadPassword);
    }
    Ok(())
}

fn hash_with(argon2: &Argon2<'static>, password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hashing(e.to_string()))
}

/// An Argon2 variant whose parameters we are willing to run.
fn acceptable(hash: &PasswordHash<'_>) -> bool {
    Algorithm::try_from(hash.algorithm).is_ok() && params_of(hash).is_some_and(within_bounds)
}

fn within_bounds(p: Argon2Params) -> bool {
    p.memory_kib <= MAX_MEMORY_KIB && p.iterations <= MAX_ITERATIONS && p.parallelism <= MAX_PARALLELISM
}

fn params_of(hash: &PasswordHash<'_>) -> Option<Argon2Params> {
    Params::try_from(hash).ok().map(|p| Argon2Params {
        memory_kib: p.m_cost(),
        iterations: p.t_cost(),
        parallelism: p.p_cost(),
    })
}

/// The [`hash_costs::label`] of a stored PHC string, if it is a hash we would verify.
pub fn params_label(phc: &str) -> Option<String> {
    let hash = PasswordHash::new(phc).ok().filter(acceptable)?;
    params_of(&hash).map(hash_costs::label)
}

fn weaker_than(hash: &PasswordHash<'_>, current: Argon2Params) -> bool {
    let argon2id = Algorithm::try_from(hash.algorithm).is_ok_and(|a| a == Algorithm::Argon2id);
    let version_ok = hash.version.is_none_or(|v| v == u32::from(Version::V0x13));
    match Params::try_from(hash) {
        Ok(p) => {
            !argon2id || !version_ok || p.m_cost() < current.memory_kib || p.t_cost() < current.iterations
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by Python's argon2-cffi 25.1.0 (the library pwdlib uses), with its defaults
    /// (m=65536, t=3, p=4):
    /// `pip install argon2-cffi==25.1.0 && python3 -c "import argon2; print(argon2.PasswordHasher().hash('correct horse battery staple'))"`
    pub const ARGON2_CFFI_HASH: &str =
        "$argon2id$v=19$m=65536,t=3,p=4$rdIeOsJKJKqw3sROLHEqTA$T6mX5Yy7Eocx/1cyIRMczK9iq8TsNbIM0edZ+CPKJeE";

    /// Made by pwdlib 0.3.1 exactly as the FastAPI guide does:
    /// `pip install "pwdlib[argon2]==0.3.1" && python3 -c "from pwdlib import PasswordHash; print(PasswordHash.recommended().hash('correct horse battery staple'))"`
    pub const PWDLIB_HASH: &str =
        "$argon2id$v=19$m=65536,t=3,p=4$esBNOrDdi/dFiaZHCeC+iw$1gUH3tc5v37aFs8dt8uvvPi2v0ehMBxtqMAZ5lpBmPg";

    fn hasher() -> Hasher {
        Hasher::new(OWASP_MIN, 2, Duration::from_secs(5)).unwrap()
    }

    #[tokio::test]
    async fn hashes_from_python_verify() {
        let h = hasher();
        for phc in [ARGON2_CFFI_HASH, PWDLIB_HASH] {
            check_phc(phc).unwrap();
            let pw = || Zeroizing::new("correct horse battery staple".to_string());
            let (v, _) = h.verify(pw(), Some(phc.to_string())).await.unwrap();
            assert_eq!(
                v,
                Verification {
                    matches: true,
                    needs_rehash: false
                },
                "{phc}"
            );
            let (v, _) = h
                .verify(Zeroizing::new("wrong".into()), Some(phc.to_string()))
                .await
                .unwrap();
            assert!(!v.matches);
        }
    }

    #[tokio::test]
    async fn own_hashes_verify_and_weaker_ones_need_a_rehash() {
        let h = hasher();
        let phc = h.hash_blocking("a good password").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let (v, _) = h
            .verify(Zeroizing::new("a good password".into()), Some(phc.clone()))
            .await
            .unwrap();
        assert_eq!(
            v,
            Verification {
                matches: true,
                needs_rehash: false
            }
        );

        let stronger = Hasher::new(
            Argon2Params {
                memory_kib: 32 * 1024,
                ..OWASP_MIN
            },
            1,
            Duration::from_secs(5),
        )
        .unwrap();
        let (v, _) = stronger
            .verify(Zeroizing::new("a good password".into()), Some(phc))
            .await
            .unwrap();
        assert_eq!(
            v,
            Verification {
                matches: true,
                needs_rehash: true
            }
        );

        let weak = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(8192, 1, 1, None).unwrap(),
        );
        let weak_phc = hash_with(&weak, "a good password").unwrap();
        let (v, _) = h
            .verify(Zeroizing::new("a good password".into()), Some(weak_phc))
            .await
            .unwrap();
        assert_eq!(
            v,
            Verification {
                matches: true,
                needs_rehash: true
            }
        );
    }

    #[tokio::test]
    async fn unknown_and_unusable_hashes_never_match() {
        let h = hasher();
        for stored in [
            None,
            Some("".to_string()),
            Some("plaintext".into()),
            Some("$2b$12$abcdefghijklmnopqrstuv".into()),
        ] {
            let (v, spent) = h
                .verify(Zeroizing::new("x".into()), stored.clone())
                .await
                .unwrap();
            assert!(!v.matches, "{stored:?}");
            assert!(
                spent > Duration::from_millis(1),
                "the dummy hash was not run for {stored:?}"
            );
        }
        let huge = "$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
        assert!(check_phc(huge).is_err());
        let (v, _) = h
            .verify(Zeroizing::new("x".into()), Some(huge.into()))
            .await
            .unwrap();
        assert!(!v.matches);
    }

    #[test]
    fn parameters_below_owasp_are_refused() {
        for p in [
            Argon2Params {
                memory_kib: 19 * 1024 - 1,
                ..OWASP_MIN
            },
            Argon2Params {
                iterations: 1,
                ..OWASP_MIN
            },
            Argon2Params {
                parallelism: 0,
                ..OWASP_MIN
            },
        ] {
            assert!(
                matches!(
                    Hasher::new(p, 1, Duration::from_secs(1)),
                    Err(PasswordError::WeakParams)
                ),
                "{p:?}"
            );
        }
    }

    #[test]
    fn new_passwords_have_bounds() {
        assert!(check_new_password("12345678").is_ok());
        assert!(check_new_password("1234567").is_err());
        assert!(check_new_password("password\0x").is_err());
        assert!(check_new_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        assert!(check_new_password("éééééééé").is_ok());
    }

    #[tokio::test]
    async fn a_hash_waits_for_a_slot_and_gives_up_after_the_queue_timeout() {
        let h = Hasher::new(OWASP_MIN, 2, Duration::from_millis(20)).unwrap();
        let phc = h.hash_blocking("a good password").unwrap();
        let pw = || Zeroizing::new("a good password".to_string());
        let held = (h.slot().await.unwrap(), h.slot().await.unwrap());
        assert!(h.slot().await.is_err(), "a third slot out of two");
        assert_eq!(h.verify(pw(), Some(phc.clone())).await.err(), Some(Busy));
        assert!(h.hash(pw()).await.is_err());
        drop(held.0);
        // One slot free again: the verification runs.
        let (v, _) = h.verify(pw(), Some(phc)).await.unwrap();
        assert!(v.matches);
        drop(held.1);
    }
}
