//! Users, refresh tokens and revocations in SQLite (WAL, `synchronous=FULL`, foreign
//! keys on), with embedded migrations. The [`User`] that leaves this module never carries the
//! password hash; only [`Store::credentials`] returns it, for verification.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

mod revocations;
pub use revocations::{FeedPage, Revoked};

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
    pub alg: String,
    pub sealed: Vec<u8>,
    pub public_jwk: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
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
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the database file and applies the migrations.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a transaction that returned is on disk, even across power loss.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store { pool })
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
            "SELECT id, username, roles, disabled, created_at, updated_at, password_hash FROM users WHERE username = ?",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((user_from_row(&r)?, r.try_get("password_hash")?)))
            .transpose()
    }

    pub async fn user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(
            "SELECT id, username, roles, disabled, created_at, updated_at FROM users WHERE username = ?",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| user_from_row(&r)).transpose()
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
            "UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ? AND password_hash = ?",
        )
        .bind(new_hash)
        .bind(now)
        .bind(user_id)
        .bind(old_hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets a new password and revokes every refresh token of the user.
    pub async fn set_password(&self, username: &str, hash: &str, now: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let id = update_user(&mut tx, SET_HASH, username, hash, now).await?;
        revoke_user_tokens(&mut tx, id, now).await?;
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
            revoke_user_tokens(&mut tx, id, now).await?;
            revocations::revoke_subject(&mut tx, username, now, access_ttl_seconds).await?;
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
        // A write first, so the transaction holds the write lock from its start (a read
        // first could not later upgrade if another writer committed meanwhile).
        revocations::revoke_subject(&mut tx, username, now, access_ttl_seconds).await?;
        let row = sqlx::query(
            "SELECT id, username, roles, disabled, created_at, updated_at FROM users WHERE username = ?",
        )
        .bind(username)
        .fetch_optional(&mut *tx)
        .await?;
        // Dropping the transaction rolls the revocation back.
        let user = user_from_row(&row.ok_or_else(|| StoreError::NoSuchUser(username.to_string()))?)?;
        revoke_user_tokens(&mut tx, user.id, now).await?;
        tx.commit().await?;
        Ok(user)
    }

    pub async fn set_roles(&self, username: &str, roles: &[String], now: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        update_user(&mut tx, SET_ROLES, username, serde_json::to_string(roles)?, now).await?;
        tx.commit().await?;
        Ok(())
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
            "INSERT INTO refresh_tokens (token_hash, family, user_id, scope, issued_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
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
    /// holds SQLite's write lock from its start: of two concurrent uses of one token,
    /// exactly one rotates and the other is seen as reuse.
    pub async fn rotate_refresh(
        &self,
        old_hash: &[u8],
        new_hash: &[u8],
        now: i64,
        new_expires_at: i64,
    ) -> Result<Rotation, StoreError> {
        let mut tx = self.pool.begin().await?;
        let spent = sqlx::query(
            "UPDATE refresh_tokens SET used_at = ?
             WHERE token_hash = ? AND used_at IS NULL AND revoked_at IS NULL AND expires_at > ?
             RETURNING id, family, user_id, scope",
        )
        .bind(now)
        .bind(old_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;

        let Some(spent) = spent else {
            // Not spendable: unknown, expired, revoked, or already used (reuse).
            let row = sqlx::query("SELECT family, used_at IS NOT NULL AS used, revoked_at IS NOT NULL AS revoked FROM refresh_tokens WHERE token_hash = ?")
                .bind(old_hash)
                .fetch_optional(&mut *tx)
                .await?;
            let outcome = match row {
                Some(r) if r.try_get::<bool, _>("used")? && !r.try_get::<bool, _>("revoked")? => {
                    let family: String = r.try_get("family")?;
                    revoke_family(&mut tx, &family, now).await?;
                    Rotation::Reused
                }
                Some(r) if r.try_get::<bool, _>("used")? => Rotation::Reused,
                _ => Rotation::Invalid,
            };
            tx.commit().await?;
            return Ok(outcome);
        };

        let family: String = spent.try_get("family")?;
        let user_id: i64 = spent.try_get("user_id")?;
        let scope: Option<String> = spent.try_get("scope")?;
        let user_row = sqlx::query(
            "SELECT id, username, roles, disabled, created_at, updated_at FROM users WHERE id = ?",
        )
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
        let user = user_from_row(&user_row)?;
        if user.disabled {
            revoke_family(&mut tx, &family, now).await?;
            tx.commit().await?;
            return Ok(Rotation::Invalid);
        }
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family, user_id, scope, issued_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
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
        let family = sqlx::query("SELECT family FROM refresh_tokens WHERE token_hash = ?")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        let Some(family) = family else {
            return Ok(false);
        };
        // One statement by family: a rotation racing with it either runs first (and its
        // new token is revoked here) or finds the family revoked and refuses.
        let family: String = family.try_get("family")?;
        sqlx::query("UPDATE refresh_tokens SET revoked_at = ? WHERE family = ? AND revoked_at IS NULL")
            .bind(now)
            .bind(&family)
            .execute(&self.pool)
            .await?;
        Ok(true)
    }

    /// Deletes refresh tokens that can no longer be used.
    pub async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at <= ?")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// The families and states of a user's refresh tokens (for tests and operators).
    pub async fn refresh_states(&self, username: &str) -> Result<Vec<(String, bool, bool)>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.family, t.used_at IS NOT NULL AS used, t.revoked_at IS NOT NULL AS revoked
             FROM refresh_tokens t JOIN users u ON u.id = t.user_id WHERE u.username = ? ORDER BY t.id",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("family")?, r.try_get("used")?, r.try_get("revoked")?)))
            .collect()
    }

    /// Stores a new signing key as the current one; every other key still current is
    /// retired now (and stays published while tokens it signed may be alive).
    pub async fn rotate_signing_key(&self, key: &crate::signing::NewKey, now: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, sealed_key, public_jwk, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&key.kid)
        .bind(key.alg.name())
        .bind(&key.sealed)
        .bind(&key.public_jwk)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every signing key, newest first.
    pub async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, alg, sealed_key, public_jwk, created_at, retired_at FROM signing_keys ORDER BY created_at DESC, rowid DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredKey {
                    kid: r.try_get("kid")?,
                    alg: r.try_get("alg")?,
                    sealed: r.try_get("sealed_key")?,
                    public_jwk: r.try_get("public_jwk")?,
                    created_at: r.try_get("created_at")?,
                    retired_at: r.try_get("retired_at")?,
                })
            })
            .collect()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Sqlite>;

const SET_HASH: &str = "UPDATE users SET password_hash = ?, updated_at = ? WHERE username = ? RETURNING id";
const SET_DISABLED: &str = "UPDATE users SET disabled = ?, updated_at = ? WHERE username = ? RETURNING id";
const SET_ROLES: &str = "UPDATE users SET roles = ?, updated_at = ? WHERE username = ? RETURNING id";

async fn insert_user(tx: &mut Tx<'_>, new: &NewUser<'_>, now: i64) -> Result<User, StoreError> {
    let roles = serde_json::to_string(new.roles)?;
    let result = sqlx::query(
        "INSERT INTO users (username, password_hash, roles, disabled, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(new.username)
    .bind(new.password_hash)
    .bind(&roles)
    .bind(new.disabled)
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await;
    match result {
        Ok(done) => Ok(User {
            id: done.last_insert_rowid(),
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

/// Runs `sql` (an `UPDATE users SET <column> = ?, updated_at = ? WHERE username = ?
/// RETURNING id`); returns the user's id.
async fn update_user<'q, T>(
    tx: &mut Tx<'_>,
    sql: &'static str,
    username: &'q str,
    value: T,
    now: i64,
) -> Result<i64, StoreError>
where
    T: 'q + Send + sqlx::Encode<'q, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
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
    sqlx::query("UPDATE refresh_tokens SET revoked_at = ? WHERE family = ? AND revoked_at IS NULL")
        .bind(now)
        .bind(family)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn revoke_user_tokens(tx: &mut Tx<'_>, user_id: i64, now: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE refresh_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL")
        .bind(now)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn user_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<User, StoreError> {
    let roles: String = r.try_get("roles")?;
    Ok(User {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        roles: serde_json::from_str(&roles)?,
        disabled: r.try_get("disabled")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}
