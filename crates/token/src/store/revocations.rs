//! Revocation entries for the edge and the feed that serves them.
//!
//! An entry revokes either every token of a user issued before a second (`sub`,
//! `iat_before`) or one token (`jti`). Each lives `until` the last token it covers
//! has expired, then is purged (an hour later: a poller may accept a token that long
//! past its `exp`, see [`MAX_POLLER_SKEW`]). Every insert or update takes the next
//! change number (`seq`), so a poller asks for "everything after my cursor", a page of
//! at most [`FEED_PAGE_ENTRIES`] at a time.
//!
//! No user can grow the set without bound: a user has at most
//! [`MAX_TOKEN_ENTRIES_PER_SUBJECT`] live `jti` entries; revoking one more of their
//! tokens widens their subject entry to cover it (and every token of theirs issued
//! before it) instead. So one account, however it loops refresh and revoke, adds at
//! most that many entries plus one, and a filter's bound on the set is never reached
//! by one user's doing.

use serde::Serialize;
use sqlx::Row;

use super::{Backend, Store, StoreError, Tx};

/// One entry as the feed serves it; the field names are the filter's contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Revoked {
    /// Every token of `sub` whose `iat` is before `iat_before`.
    Subject {
        sub: String,
        iat_before: i64,
        until: i64,
    },
    /// The token with this `jti`.
    Token { jti: String, until: i64 },
}

/// One answer of the feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeedPage {
    /// This database's feed; a cursor is only meaningful with the feed it came from.
    pub feed: String,
    /// The change number to ask from next time.
    pub cursor: u64,
    /// The poller must replace what it holds with `entries` (its cursor is from another
    /// feed, from the future, or absent): `entries` is then every live entry, or with
    /// `more` the first of them.
    pub reset: bool,
    /// More entries follow: ask again at once from `cursor`. A poller that is
    /// replacing its set keeps the old one until the last page has come.
    pub more: bool,
    pub entries: Vec<Revoked>,
}

/// Most entries in one page of the feed (about 700 KB of JSON).
pub const FEED_PAGE_ENTRIES: usize = 10_000;

/// Live `jti` entries one subject may have at once.
pub const MAX_TOKEN_ENTRIES_PER_SUBJECT: i64 = 16;

/// Entries are served (and kept) this long past their `until` to a poller that says
/// it accepts tokens that long after their `exp` (`skew`), and no longer.
pub const MAX_POLLER_SKEW: i64 = 3600;

/// An access token to revoke, as the service verified it.
pub struct RevokedToken<'a> {
    pub jti: &'a str,
    pub sub: &'a str,
    pub iat: i64,
    pub exp: i64,
}

/// How a token's revocation was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordedAs {
    /// Its own `jti` entry.
    Token,
    /// Its subject had too many `jti` entries: the subject entry now covers it.
    Subject,
}

impl Store {
    /// Revokes the access token `jti` until `until` (its `exp`), of no known subject.
    pub async fn revoke_jti(&self, jti: &str, until: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_jti(&mut tx, jti, None, until).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revokes one access token of `sub`: by its `jti`, unless the subject already has
    /// [`MAX_TOKEN_ENTRIES_PER_SUBJECT`] live ones; then by widening the subject's entry
    /// to every token of theirs issued up to this one's `iat`.
    pub async fn revoke_token(&self, token: &RevokedToken<'_>, now: i64) -> Result<RecordedAs, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The counter's lock first: two revocations of one subject's tokens count in turn.
        let seq = next_seq(&mut tx).await?;
        let live = sqlx::query(
            "SELECT count(*) AS n FROM revocations WHERE kind = 'jti' AND sub = $1 AND until >= $2 AND value <> $3",
        )
        .bind(token.sub)
        .bind(now)
        .bind(token.jti)
        .fetch_one(&mut *tx)
        .await?
        .try_get::<i64, _>("n")?;
        let recorded = if live < MAX_TOKEN_ENTRIES_PER_SUBJECT {
            upsert_jti(&mut tx, seq, token.jti, Some(token.sub), token.exp).await?;
            RecordedAs::Token
        } else {
            upsert_subject(&mut tx, seq, token.sub, token.iat.saturating_add(1), token.exp).await?;
            RecordedAs::Subject
        };
        tx.commit().await?;
        Ok(recorded)
    }

    /// Whether the access token (`sub`, `jti`, `iat`) is revoked, as the filter would
    /// decide from the feed.
    pub async fn is_revoked(&self, sub: &str, jti: &str, iat: i64) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 FROM revocations
             WHERE (kind = 'jti' AND value = $1) OR (kind = 'sub' AND value = $2 AND iat_before > $3)",
        )
        .bind(jti)
        .bind(sub)
        .bind(iat)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// The entries changed after `since` that still cover a live token at `now`, or all
    /// of them (`reset`) when the cursor cannot be trusted; one page of at most
    /// [`FEED_PAGE_ENTRIES`].
    pub async fn revocations_since(
        &self,
        since: Option<u64>,
        feed: Option<&str>,
        now: i64,
    ) -> Result<FeedPage, StoreError> {
        self.feed_page(since, feed, now, FEED_PAGE_ENTRIES).await
    }

    /// Like [`Store::revocations_since`], in pages of at most `limit` entries.
    pub async fn feed_page(
        &self,
        since: Option<u64>,
        feed: Option<&str>,
        now: i64,
        limit: usize,
    ) -> Result<FeedPage, StoreError> {
        // One read transaction: the cursor and the entries come from the same snapshot
        // (SQLite's read transactions are snapshots; PostgreSQL's only when asked).
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let head = sqlx::query("SELECT feed, seq FROM revocation_feed WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let ours: String = head.try_get("feed")?;
        let cursor = u64::try_from(head.try_get::<i64, _>("seq")?).unwrap_or(0);
        let reset = needs_reset(since, feed, &ours, cursor);
        let after = if reset { 0 } else { since.unwrap_or(0) };
        let limit = limit.max(1);
        let rows = sqlx::query(
            "SELECT id, seq, kind, value, iat_before, until FROM revocations
             WHERE seq > $1 AND until >= $2 ORDER BY seq LIMIT $3",
        )
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(now)
        .bind(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let more = rows.len() > limit;
        let rows = rows.get(..limit).unwrap_or(&rows);
        // A full page ends at its last entry; the last page at the head, past purged numbers.
        let cursor = match rows.last() {
            Some(last) if more => u64::try_from(last.try_get::<i64, _>("seq")?).unwrap_or(0),
            _ => cursor,
        };
        let entries = rows.iter().map(entry_from_row).collect::<Result<_, _>>()?;
        Ok(FeedPage {
            feed: ours,
            cursor,
            reset,
            more,
            entries,
        })
    }

    /// Deletes the entries that cover no live token any more, even for a poller that
    /// accepts tokens [`MAX_POLLER_SKEW`] past their `exp`.
    pub async fn purge_revocations(&self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM revocations WHERE until < $1")
            .bind(now.saturating_sub(MAX_POLLER_SKEW))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

async fn insert_jti(tx: &mut Tx<'_>, jti: &str, sub: Option<&str>, until: i64) -> Result<(), StoreError> {
    let seq = next_seq(tx).await?;
    upsert_jti(tx, seq, jti, sub, until).await
}

async fn upsert_jti(
    tx: &mut Tx<'_>,
    seq: i64,
    jti: &str,
    sub: Option<&str>,
    until: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO revocations (seq, kind, value, sub, until) VALUES ($1, 'jti', $2, $3, $4)
         ON CONFLICT (kind, value) DO UPDATE SET seq = excluded.seq,
             until = CASE WHEN excluded.until > revocations.until THEN excluded.until ELSE revocations.until END",
    )
    .bind(seq)
    .bind(jti)
    .bind(sub)
    .bind(until)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Every token of `sub` issued before `iat_before`, until `until`. An existing entry only
/// ever widens: the later `iat_before`, the later `until`.
async fn upsert_subject(
    tx: &mut Tx<'_>,
    seq: i64,
    sub: &str,
    iat_before: i64,
    until: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO revocations (seq, kind, value, iat_before, until) VALUES ($1, 'sub', $2, $3, $4)
         ON CONFLICT (kind, value) DO UPDATE SET seq = excluded.seq,
             iat_before = CASE WHEN excluded.iat_before > revocations.iat_before
                               THEN excluded.iat_before ELSE revocations.iat_before END,
             until = CASE WHEN excluded.until > revocations.until THEN excluded.until ELSE revocations.until END",
    )
    .bind(seq)
    .bind(sub)
    .bind(iat_before)
    .bind(until)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Revokes every token of `sub` issued until `now` (inclusive: `iat` has one-second
/// resolution, so a token of this very second may predate the revocation).
pub(super) async fn revoke_subject(
    tx: &mut Tx<'_>,
    sub: &str,
    now: i64,
    access_ttl_seconds: i64,
) -> Result<(), StoreError> {
    let seq = next_seq(tx).await?;
    upsert_subject(
        tx,
        seq,
        sub,
        now.saturating_add(1),
        now.saturating_add(access_ttl_seconds),
    )
    .await
}

/// Takes the next change number. It is the first write of its transaction, so the
/// numbers are handed out in commit order (SQLite has one writer; in PostgreSQL the
/// counter's row stays locked until commit): a poller never sees a number while a
/// smaller one is still uncommitted.
///
/// The number is the larger of the last one + 1 and the time in microseconds: a
/// database restored from a backup (its counter set back) still numbers new changes
/// above every cursor handed out before the restore (migrations/sqlite/0006).
async fn next_seq(tx: &mut Tx<'_>) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "UPDATE revocation_feed SET seq = CASE WHEN seq + 1 > $1 THEN seq + 1 ELSE $1 END WHERE id = 1 RETURNING seq",
    )
    .bind(crate::limiter::now_us())
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get("seq")?)
}

/// Whether a poller at `since` of feed `feed` must start over: it has no cursor, a
/// cursor of another feed, or one this feed has not reached.
fn needs_reset(since: Option<u64>, feed: Option<&str>, ours: &str, cursor: u64) -> bool {
    match (since, feed) {
        (Some(since), Some(feed)) => feed != ours || since > cursor,
        _ => true,
    }
}

fn entry_from_row(r: &sqlx::any::AnyRow) -> Result<Revoked, StoreError> {
    let id: i64 = r.try_get("id")?;
    let kind: String = r.try_get("kind")?;
    let value: String = r.try_get("value")?;
    let until: i64 = r.try_get("until")?;
    match (kind.as_str(), r.try_get::<Option<i64>, _>("iat_before")?) {
        ("sub", Some(iat_before)) => Ok(Revoked::Subject {
            sub: value,
            iat_before,
            until,
        }),
        ("jti", None) => Ok(Revoked::Token { jti: value, until }),
        _ => Err(StoreError::CorruptRevocation(id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_is_trusted_only_from_this_feed_and_not_ahead_of_it() {
        let cases: &[(Option<u64>, Option<&str>, bool)] = &[
            (Some(0), Some("f1"), false),
            (Some(7), Some("f1"), false),
            (Some(12), Some("f1"), false),
            (Some(13), Some("f1"), true),
            (Some(u64::MAX), Some("f1"), true),
            (Some(7), Some("f2"), true),
            (Some(7), Some(""), true),
            (Some(7), None, true),
            (None, Some("f1"), true),
            (None, None, true),
        ];
        for &(since, feed, reset) in cases {
            assert_eq!(needs_reset(since, feed, "f1", 12), reset, "{since:?} {feed:?}");
        }
    }

    #[test]
    fn entries_serialise_as_the_filter_reads_them() {
        let page = FeedPage {
            feed: "f1".into(),
            cursor: 12,
            reset: false,
            more: false,
            entries: vec![
                Revoked::Subject {
                    sub: "bob".into(),
                    iat_before: 1_764_100_001,
                    until: 1_764_101_801,
                },
                Revoked::Token {
                    jti: "abc".into(),
                    until: 1_764_101_800,
                },
            ],
        };
        assert_eq!(
            serde_json::to_string(&page).unwrap(),
            r#"{"feed":"f1","cursor":12,"reset":false,"more":false,"entries":[{"sub":"bob","iat_before":1764100001,"until":1764101801},{"jti":"abc","until":1764101800}]}"#
        );
    }
}
