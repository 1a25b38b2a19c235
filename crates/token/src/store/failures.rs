//! Failed-login limits in the database, so that every replica counts the same
//! failures. Each key holds one number, the time its bucket is full again (GCRA's
//! theoretical arrival time); [`crate::limiter`] turns it into a verdict.

use sqlx::Row;

use super::{Store, StoreError};

impl Store {
    /// When `key`'s failures have all refilled, in unix microseconds (`None`: no row).
    pub async fn failures_full_at(&self, key: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT tat_us FROM login_failures WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("tat_us")).transpose()?)
    }

    /// Counts one failure against `key` at `now_us`: its full-again time moves to
    /// `max(that time, now) + interval_us`, in one statement, so failures counted at
    /// once by several replicas all count.
    pub async fn record_failure(&self, key: &str, now_us: i64, interval_us: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO login_failures (key, tat_us) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET tat_us =
                 CASE WHEN login_failures.tat_us > $3 THEN login_failures.tat_us ELSE $3 END + $4",
        )
        .bind(key)
        .bind(now_us.saturating_add(interval_us))
        .bind(now_us)
        .bind(interval_us)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets the failures of `key`.
    pub async fn forget_failures(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes the keys whose buckets are full again: they hold nothing.
    pub async fn purge_failures(&self, now_us: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM login_failures WHERE tat_us <= $1")
            .bind(now_us)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
