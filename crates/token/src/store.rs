//! Users, refresh tokens, signing keys, revocations and failed-login limits, in SQLite
//! (the embedded default: WAL, `synchronous=FULL`, foreign keys on) or PostgreSQL (for
//! several replicas of the service), with embedded migrations for each.
//!
//! One set of queries serves both, through sqlx's `Any` driver: placeholders are `$N`
//! (which SQLite also reads) and the SQL sticks to what both databases mean the same
//! way; the few differences are named where they occur. The [`User`] that leaves this
//! module never carries the password hash; only [`Store::credentials`] returns it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, ConnectOptions, Connection, Executor, Row};

mod failures;
mod location;
mod revocations;
pub use location::{Backend, Location};
pub use revocations::{
    FeedPage, RecordedAs, Revoked, RevokedToken, FEED_PAGE_ENTRIES, MAX_POLLER_SKEW,
    MAX_TOKEN_ENTRIES_PER_SUBJECT,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("user {0} already exists")]
    Exists(String),
    #[error("no user {0}")]
    NoSuchUser(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt roles in the database: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("corrupt revocation entry {0} in the database")]
    CorruptRevocation(i64),
    #[error("another process made a current signing key at the same time")]
    KeyRace,
}

/// A user as the rest of the service sees it: no password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A new user; `password_hash` is a PHC string.
pub struct NewUser<'a> {
    pub username: &'a str,
    pub password_hash: &'a str,
    pub roles: &'a [String],
    pub disabled: bool,
}

/// A signing key as stored (the private part sealed).
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub kid: String,
    pub alg: crate::signing::SigningAlg,
    pub sealed: Vec<u8>,
    pub public_jwk: String,
    pub created_at: i64,
    /// Retired from signing at this time (it may be ahead: a key that signs until its
    /// successor activates).
    pub retired_at: Option<i64>,
    /// Signs from this time on (`None`: since it was made).
    pub activates_at: Option<i64>,
}

impl StoredKey {
    /// Whether the key may sign at `now`.
    pub fn signs_at(&self, now: i64) -> bool {
        self.activates_at.is_none_or(|a| a <= now) && self.retired_at.is_none_or(|r| r > now)
    }
}

/// A login's first refresh token (see [`Store::start_family`]).
pub struct FamilyStart<'a> {
    pub user_id: i64,
    /// The stored hash the password was verified against.
    pub checked_hash: &'a str,
    pub token_hash: &'a [u8],
    pub family: &'a str,
    pub scope: Option<&'a [String]>,
    pub now: i64,
    pub expires_at: i64,
}

/// The outcome of presenting a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// Valid: the old token is spent, the new one stored in the same family.
    Rotated { user: User, scope: Option<Vec<String>> },
    /// A spent token came back: its whole family is now revoked.
    Reused,
    /// Unknown, expired, revoked, or the user is disabled.
    Invalid,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Read once a revoking transaction holds the user's lock (see `revocation_time`).
    clock: fn() -> i64,
}

impl Store {
    /// Opens the database (creating a SQLite file if needed) and applies the migrations.
    /// Several processes may do this at once on one PostgreSQL database: its migrations
    /// run under a lock.
    pub async fn open(location: &Location) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = location.backend();
        let options = location.connect_options()?;
        // One connection first: the pool would retry until its timeout and then report
        // only that, not why (refused, bad password, no such database).
        options.connect().await?.close().await?;
        let pool = AnyPoolOptions::new()
            .max_connections(location.max_connections())
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // FULL: a transaction that returned is on disk, even across power
                        // loss. (The URL cannot carry these; the busy timeout is 5 s.)
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        Ok(Store {
            pool,
            backend,
            clock: crate::clock::unix_now,
        })
    }

    /// The same store with another clock for the time a revocation is taken at, for
    /// tests that replay fixed times (`|| 0` leaves every time the caller's).
    pub fn with_clock(mut self, clock: fn() -> i64) -> Store {
        self.clock = clock;
        self
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The time a revocation recorded now must cover: `now` (the request's), or later if
    /// the transaction waited for the user's lock meanwhile. A login that held the lock
    /// before issued its tokens no later than this, so they are covered.
    fn revocation_time(&self, now: i64) -> i64 {
        now.max((self.clock)())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn create_user(&self, new: NewUser<'_>, now: i64) -> Result<User, StoreError> {
        let mut tx = self.pool.begin().await?;
        let user = insert_user(&mut tx, &new, now).await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Inserts every user or none.
    pub async fn import_users(&self, users: &[NewUser<'_>], now: i64) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        for new in users {
            insert_user(&mut tx, new, now).await?;
        }
        tx.commit().await?;
        Ok(users.len())
    }

    /// The user and their password hash, for login only.
    pub async fn credentials(&self, username: &str) -> Result<Option<(User, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT id, username, roles, disabled, created_at, updated_at, password_hash FROM users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((user_from_row(&r)?, r.try_get("password_hash")?)))
            .transpose()
    }

    pub async fn user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(
            "SELECT id, username, roles, disabled, created_at, updated_at FROM users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    /// The parameter sets of the stored password hashes (as `hash_costs::label`s), after
    /// labelling the hashes that have none yet (written before the label existed, or by
    /// a password change: the label is derived here, not trusted from the writer).
    pub async fn hash_param_labels(&self) -> Result<Vec<String>, StoreError> {
        let unlabelled = sqlx::query("SELECT id, password_hash FROM users WHERE hash_params IS NULL")
            .fetch_all(&self.pool)
            .await?;
        for row in unlabelled {
            let (id, phc): (i64, String) = (row.try_get("id")?, row.try_get("password_hash")?);
            sqlx::query("UPDATE users SET hash_params = $1 WHERE id = $2 AND password_hash = $3")
                .bind(hash_label(&phc))
                .bind(id)
                .bind(&phc)
                .execute(&self.pool)
                .await?;
        }
        let rows = sqlx::query("SELECT DISTINCT hash_params FROM users WHERE hash_params <> ''")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("hash_params")?)).collect()
    }

    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, username, roles, disabled, created_at, updated_at FROM users ORDER BY username",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Replaces the hash only if it is still `old_hash` (a re-hash after login must not
    /// undo a password change made meanwhile).
    pub async fn replace_hash(
        &self,
        user_id: i64,
        old_hash: &str,
        new_hash: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1, hash_params = $2, updated_at = $3 WHERE id = $4 AND password_hash = $5",
        )
        .bind(new_hash)
        .bind(hash_label(new_hash))
        .bind(now)
        .bind(user_id)
        .bind(old_hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets a new password and revokes every token of the user: the refresh tokens
    /// here, the access tokens at the edge (after a compromise, the new password must
    /// end the attacker's access, not only their refreshes).
    pub async fn set_password(
        &self,
        username: &str,
        hash: &str,
        now: i64,
        access_ttl_seconds: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let id = update_user(&mut tx, SET_HASH, username, hash, now).await?;
        self.revoke_everything(&mut tx, id, username, now, access_ttl_seconds)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Disables or enables a user. Disabling also revokes every token of the user, in
    /// the same transaction: the refresh tokens here, the access tokens at the edge (a
    /// `sub` revocation covering the longest an access token lives, `access_ttl_seconds`).
    /// Enabling revives none of them.
    pub async fn set_disabled(
        &self,
        username: &str,
        disabled: bool,
        now: i64,
        access_ttl_seconds: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let id = update_user(&mut tx, SET_DISABLED, username, disabled, now).await?;
        if disabled {
            self.revoke_everything(&mut tx, id, username, now, access_ttl_seconds)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Revokes every token issued to the user until now, without disabling them: a
    /// "log out everywhere". Returns the user.
    pub async fn revoke_user(
        &self,
        username: &str,
        now: i64,
        access_ttl_seconds: i64,
    ) -> Result<User, StoreError> {
        let mut tx = self.pool.begin().await?;
        let (user, _) = lock_user(&mut tx, UserKey::Name(username))
            .await?
            .ok_or_else(|| StoreError::NoSuchUser(username.to_string()))?;
        self.revoke_everything(&mut tx, user.id, username, now, access_ttl_seconds)
            .await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Replaces the user's roles. Taking a role away also revokes the user's access
    /// tokens at the edge (a demoted admin's token must stop passing admin rules); the
    /// refresh tokens stay, as each refresh reads the roles afresh. Adding roles revokes
    /// nothing: a token with fewer roles than its user may do less, not more.
    pub async fn set_roles(
        &self,
        username: &str,
        roles: &[String],
        now: i64,
        access_ttl_seconds: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let (user, _) = lock_user(&mut tx, UserKey::Name(username))
            .await?
            .ok_or_else(|| StoreError::NoSuchUser(username.to_string()))?;
        update_user(&mut tx, SET_ROLES, username, serde_json::to_string(roles)?, now).await?;
        if user.roles.iter().any(|old| !roles.contains(old)) {
            revocations::revoke_subject(&mut tx, username, self.revocation_time(now), access_ttl_seconds)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Starts a refresh-token family for a login whose password was checked against
    /// `checked_hash`: under the user's lock, the user is read again and the family
    /// stored only if they are still enabled and their hash unchanged. Returns the user
    /// as stored now (their roles are what the tokens get), or `None`.
    ///
    /// The check and the lock close the window between reading the user and issuing
    /// (a login waits for a hashing slot in between): a disable, password change or
    /// demotion that commits first is seen here; one that commits later takes its
    /// revocation time after this lock is released, so it covers the tokens issued here.
    pub async fn start_family(&self, login: &FamilyStart<'_>) -> Result<Option<User>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some((user, hash)) = lock_user(&mut tx, UserKey::Id(login.user_id)).await? else {
            return Ok(None);
        };
        if user.disabled || hash != login.checked_hash {
            return Ok(None);
        }
        let scope = login.scope.map(serde_json::to_string).transpose()?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family, user_id, scope, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(login.token_hash)
        .bind(login.family)
        .bind(login.user_id)
        .bind(scope)
        .bind(login.now)
        .bind(login.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(user))
    }

    /// Stores a refresh token (by hash) as the first of a new family.
    pub async fn insert_refresh(
        &self,
        token_hash: &[u8],
        family: &str,
        user_id: i64,
        scope: Option<&[String]>,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let scope = scope.map(serde_json::to_string).transpose()?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family, user_id, scope, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_hash)
        .bind(family)
        .bind(user_id)
        .bind(scope)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Spends the refresh token `old_hash` and stores `new_hash` in its family, in one
    /// transaction. The first statement is the conditional spend, so the transaction
    /// holds SQLite's write lock, or PostgreSQL's lock on that row, from its start: of
    /// two concurrent uses of one token (on any replicas), exactly one rotates and the
    /// other, re-checking the row once the first commits, is seen as reuse.
    pub async fn rotate_refresh(
        &self,
        old_hash: &[u8],
        new_hash: &[u8],
        now: i64,
        new_expires_at: i64,
    ) -> Result<Rotation, StoreError> {
        // Whose token it is never changes, so it is read before the transaction.
        let Some(user_id) = self.refresh_owner(old_hash).await? else {
            return Ok(Rotation::Invalid);
        };
        let mut tx = self.pool.begin().await?;
        // The user's lock first, as every revoking path takes it first: a revocation of
        // the family or the user either commits before (and the spend below finds the
        // token revoked) or waits for this rotation and then also revokes its successor.
        let Some((user, _)) = lock_user(&mut tx, UserKey::Id(user_id)).await? else {
            return Ok(Rotation::Invalid);
        };
        let spent = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1
             WHERE token_hash = $2 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $3
             RETURNING id, family, user_id, scope",
        )
        .bind(now)
        .bind(old_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;

        let Some(spent) = spent else {
            // Not spendable: unknown, expired, revoked, or already used (reuse).
            let row = sqlx::query("SELECT family, used_at IS NOT NULL AS used, revoked_at IS NOT NULL AS revoked FROM refresh_tokens WHERE token_hash = $1")
                .bind(old_hash)
                .fetch_optional(&mut *tx)
                .await?;
            let outcome = match row {
                Some(r) if flag(&r, "used")? && !flag(&r, "revoked")? => {
                    let family: String = r.try_get("family")?;
                    revoke_family(&mut tx, &family, now).await?;
                    Rotation::Reused
                }
                Some(r) if flag(&r, "used")? => Rotation::Reused,
                _ => Rotation::Invalid,
            };
            tx.commit().await?;
            return Ok(outcome);
        };

        let family: String = spent.try_get("family")?;
        let scope: Option<String> = spent.try_get("scope")?;
        if user.disabled {
            revoke_family(&mut tx, &family, now).await?;
            tx.commit().await?;
            return Ok(Rotation::Invalid);
        }
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family, user_id, scope, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(new_hash)
        .bind(&family)
        .bind(user_id)
        .bind(&scope)
        .bind(now)
        .bind(new_expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let scope = scope.map(|s| serde_json::from_str(&s)).transpose()?;
        Ok(Rotation::Rotated { user, scope })
    }

    /// Revokes the whole family of the refresh token `token_hash` (RFC 7009 §2.1: the
    /// grant it belongs to). Whether the token is one of ours.
    pub async fn revoke_refresh_family(&self, token_hash: &[u8], now: i64) -> Result<bool, StoreError> {
        // Read first: anyone may present garbage, and a lookup takes no write lock.
        let row = sqlx::query("SELECT family, user_id FROM refresh_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let (family, user_id): (String, i64) = (row.try_get("family")?, row.try_get("user_id")?);
        // Under the user's lock, as a rotation takes it: one racing with this either
        // commits first (and its new token is revoked here: this statement starts after
        // that commit) or finds the family revoked and refuses.
        let mut tx = self.pool.begin().await?;
        if lock_user(&mut tx, UserKey::Id(user_id)).await?.is_some() {
            revoke_family(&mut tx, &family, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The user a refresh token belongs to, if it is one.
    async fn refresh_owner(&self, token_hash: &[u8]) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT user_id FROM refresh_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok(r.try_get("user_id")?)).transpose()
    }

    /// Deletes refresh tokens that can no longer be used.
    pub async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// The families and states of a user's refresh tokens (for tests and operators).
    pub async fn refresh_states(&self, username: &str) -> Result<Vec<(String, bool, bool)>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.family, t.used_at IS NOT NULL AS used, t.revoked_at IS NOT NULL AS revoked
             FROM refresh_tokens t JOIN users u ON u.id = t.user_id WHERE u.username = $1 ORDER BY t.id",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("family")?, flag(r, "used")?, flag(r, "revoked")?)))
            .collect()
    }

    /// Stores a new signing key as the current one; every other key still current is
    /// retired now (and stays published while tokens it signed may be alive).
    pub async fn rotate_signing_key(&self, key: &crate::signing::NewKey, now: i64) -> Result<(), StoreError> {
        self.rotate_signing_key_at(key, now, now).await
    }

    /// Stores a new signing key that signs from `activates_at` on (published from
    /// now); every other key still current signs until then, is retired then, and stays
    /// published while tokens it signed may be alive.
    pub async fn rotate_signing_key_at(
        &self,
        key: &crate::signing::NewKey,
        now: i64,
        activates_at: i64,
    ) -> Result<(), StoreError> {
        let activates_at = activates_at.max(now);
        let mut tx = self.pool.begin().await?;
        // A key still waiting to sign is retired before it ever does.
        sqlx::query(
            "UPDATE signing_keys SET retired_at = CASE WHEN activates_at > $1 THEN activates_at ELSE $1 END
             WHERE retired_at IS NULL",
        )
        .bind(activates_at)
        .execute(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO signing_keys (kid, alg, sealed_key, public_jwk, created_at, activates_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.kid)
        .bind(key.alg.name())
        .bind(&key.sealed)
        .bind(&key.public_jwk)
        .bind(now)
        .bind((activates_at > now).then_some(activates_at))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            // The one-current-key index: another replica's rotation committed first.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Err(StoreError::KeyRace),
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(())
    }

    /// Makes `key` the current key unless a key of its algorithm is current already
    /// (then nothing changes); current keys of other algorithms are retired. Whether
    /// `key` was stored. Replicas starting together on one database end up with one key:
    /// the retiring update waits for a concurrent one, the insert checks afresh, and the
    /// one-current-key index refuses a second insert racing the first.
    pub async fn ensure_signing_key(
        &self,
        key: &crate::signing::NewKey,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL AND alg <> $2")
            .bind(now)
            .bind(key.alg.name())
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO signing_keys (kid, alg, sealed_key, public_jwk, created_at)
             SELECT $1, $2, $3, $4, $5
             WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE retired_at IS NULL AND alg = $6)",
        )
        .bind(&key.kid)
        .bind(key.alg.name())
        .bind(&key.sealed)
        .bind(&key.public_jwk)
        .bind(now)
        .bind(key.alg.name())
        .execute(&mut *tx)
        .await;
        let stored = match inserted {
            Ok(done) => done.rows_affected() == 1,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Err(StoreError::KeyRace),
            Err(e) => return Err(e.into()),
        };
        tx.commit().await?;
        Ok(stored)
    }

    /// Every signing key, newest first.
    pub async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        // Keys made in the same second: the later insert first (SQLite's rowid, a
        // PostgreSQL identity column).
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT kid, alg, sealed_key, public_jwk, created_at, retired_at, activates_at FROM signing_keys ORDER BY created_at DESC, rowid DESC"
            }
            Backend::Postgres => {
                "SELECT kid, alg, sealed_key, public_jwk, created_at, retired_at, activates_at FROM signing_keys ORDER BY created_at DESC, id DESC"
            }
        };
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        let mut keys = Vec::with_capacity(rows.len());
        for r in &rows {
            let kid: String = r.try_get("kid")?;
            let alg: String = r.try_get("alg")?;
            // A key of an algorithm this build does not know (written by a newer one):
            // left out, as the older string comparison left it out of signing.
            let Some(alg) = crate::signing::SigningAlg::from_name(&alg) else {
                tracing::warn!(kid = %kid, alg = %alg, "signing key of an unknown algorithm left out");
                continue;
            };
            keys.push(StoredKey {
                kid,
                alg,
                sealed: r.try_get("sealed_key")?,
                public_jwk: r.try_get("public_jwk")?,
                created_at: r.try_get("created_at")?,
                retired_at: r.try_get("retired_at")?,
                activates_at: r.try_get("activates_at")?,
            });
        }
        Ok(keys)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Any>;

const SET_HASH: &str = "UPDATE users SET password_hash = $1, hash_params = NULL, updated_at = $2 WHERE username = $3 RETURNING id";
const SET_DISABLED: &str = "UPDATE users SET disabled = $1, updated_at = $2 WHERE username = $3 RETURNING id";
const SET_ROLES: &str = "UPDATE users SET roles = $1, updated_at = $2 WHERE username = $3 RETURNING id";

async fn insert_user(tx: &mut Tx<'_>, new: &NewUser<'_>, now: i64) -> Result<User, StoreError> {
    let roles = serde_json::to_string(new.roles)?;
    let result = sqlx::query(
        "INSERT INTO users (username, password_hash, hash_params, roles, disabled, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(new.username)
    .bind(new.password_hash)
    .bind(hash_label(new.password_hash))
    .bind(&roles)
    .bind(new.disabled)
    .bind(now)
    .bind(now)
    .fetch_one(&mut **tx)
    .await;
    match result {
        Ok(row) => Ok(User {
            id: row.try_get("id")?,
            username: new.username.to_string(),
            roles: new.roles.to_vec(),
            disabled: new.disabled,
            created_at: now,
            updated_at: now,
        }),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(StoreError::Exists(new.username.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs `sql` (an `UPDATE users SET <column> = $1, updated_at = $2 WHERE username = $3
/// RETURNING id`); returns the user's id.
async fn update_user<'q, T>(
    tx: &mut Tx<'_>,
    sql: &'static str,
    username: &'q str,
    value: T,
    now: i64,
) -> Result<i64, StoreError>
where
    T: 'q + Send + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    let row = sqlx::query(sql)
        .bind(value)
        .bind(now)
        .bind(username)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::NoSuchUser(username.to_string()))?;
    Ok(row.try_get("id")?)
}

async fn revoke_family(tx: &mut Tx<'_>, family: &str, now: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE family = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(family)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Which user to lock.
enum UserKey<'a> {
    Id(i64),
    Name(&'a str),
}

/// Takes the user's lock for the rest of the transaction and reads the user and their
/// hash: a row lock in PostgreSQL, the write lock in SQLite (a write as the first
/// statement, so the transaction never has to upgrade a read). Every path that issues
/// or revokes a user's tokens takes it first, so those paths are serialised per user.
async fn lock_user(tx: &mut Tx<'_>, key: UserKey<'_>) -> Result<Option<(User, String)>, StoreError> {
    let query = match key {
        UserKey::Id(id) => sqlx::query(
            "UPDATE users SET updated_at = updated_at WHERE id = $1
             RETURNING id, username, roles, disabled, created_at, updated_at, password_hash",
        )
        .bind(id),
        UserKey::Name(name) => sqlx::query(
            "UPDATE users SET updated_at = updated_at WHERE username = $1
             RETURNING id, username, roles, disabled, created_at, updated_at, password_hash",
        )
        .bind(name),
    };
    let row = query.fetch_optional(&mut **tx).await?;
    row.map(|r| Ok((user_from_row(&r)?, r.try_get("password_hash")?)))
        .transpose()
}

impl Store {
    /// Every token of the user, under the user's lock: the refresh tokens here, and the
    /// access tokens at the edge (a subject revocation covering the longest an access
    /// token lives), from the time the lock is held ([`Store::revocation_time`]).
    async fn revoke_everything(
        &self,
        tx: &mut Tx<'_>,
        user_id: i64,
        username: &str,
        now: i64,
        access_ttl_seconds: i64,
    ) -> Result<(), StoreError> {
        revoke_user_tokens(tx, user_id, now).await?;
        revocations::revoke_subject(tx, username, self.revocation_time(now), access_ttl_seconds).await
    }
}

async fn revoke_user_tokens(tx: &mut Tx<'_>, user_id: i64, now: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The `hash_params` of a hash: its parameters, or '' if it is not one we verify.
fn hash_label(phc: &str) -> String {
    crate::passwords::params_label(phc).unwrap_or_default()
}

fn user_from_row(r: &AnyRow) -> Result<User, StoreError> {
    let roles: String = r.try_get("roles")?;
    Ok(User {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        roles: serde_json::from_str(&roles)?,
        disabled: flag(r, "disabled")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// A truth value: PostgreSQL answers a `BOOLEAN`, SQLite an integer.
fn flag(r: &AnyRow, column: &str) -> Result<bool, StoreError> {
    match r.try_get::<bool, _>(column) {
        Ok(b) => Ok(b),
        Err(_) => Ok(r.try_get::<i64, _>(column)? != 0),
    }
}
