//! The tokens the token service has revoked, as the filter knows them.
//!
//! The token service's feed (`GET /revocations?since=<cursor>&feed=<id>`) answers with
//! the entries changed since a cursor, or with the whole set (`reset`) when the
//! cursor means nothing to it. Two kinds of entry: a subject (every token of `sub`
//! issued before `iat_before`, e.g. a disabled user) and a token id (`jti`). Each
//! entry carries `until`, after which no token it covers can still be valid, and is
//! dropped then. One worker polls; the set travels to the others through shared
//! data in the feed's own format (a `reset` page), so there is one parser.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Largest feed page accepted.
pub const MAX_FEED_BYTES: usize = 8 * 1024 * 1024;

/// One page of the feed, and the form the set is shared in.
#[derive(Debug, Deserialize, Serialize)]
struct Page {
    feed: String,
    cursor: u64,
    #[serde(default)]
    reset: bool,
    entries: Vec<Entry>,
}

#[derive(Debug, Deserialize, Serialize)]
struct Entry {
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iat_before: Option<i64>,
    until: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedError {
    /// Not a feed page; the text says why (never the body itself).
    Malformed(String),
    /// Applying the page would hold more entries than configured.
    TooMany(usize),
}

impl std::fmt::Display for FeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeedError::Malformed(why) => write!(f, "not a revocation feed page: {why}"),
            FeedError::TooMany(n) => write!(f, "{n} revocation entries exceed revocation.max_entries"),
        }
    }
}

/// The revoked subjects and token ids this worker knows, and where in the feed it is.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RevocationSet {
    feed: String,
    cursor: u64,
    /// `sub` → (tokens issued before this are revoked, entry kept until).
    subjects: HashMap<String, (i64, i64)>,
    /// `jti` → entry kept until.
    token_ids: HashMap<String, i64>,
}

impl RevocationSet {
    pub fn len(&self) -> usize {
        self.subjects.len() + self.token_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next poll: `path` with this set's cursor and feed id.
    pub fn poll_path(&self, path: &str) -> String {
        if self.feed.is_empty() {
            path.to_string()
        } else {
            // The feed id is the token service's own (hex); encode anything else.
            let feed: String = self
                .feed
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                        char::from(b).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("{path}?since={}&feed={feed}", self.cursor)
        }
    }

    /// Applies one feed page at `now`: a `reset` page replaces the set, any other
    /// adds to it. All or nothing: on an error the set is unchanged.
    pub fn apply(&self, body: &[u8], now: i64, max_entries: usize) -> Result<RevocationSet, FeedError> {
        let page: Page = serde_json::from_slice(body).map_err(|e| FeedError::Malformed(e.to_string()))?;
        let mut next = if page.reset {
            RevocationSet::default()
        } else {
            self.clone()
        };
        for (i, entry) in page.entries.into_iter().enumerate() {
            match (entry.sub, entry.jti, entry.iat_before) {
                (Some(sub), None, Some(iat_before)) if !sub.is_empty() => {
                    let slot = next.subjects.entry(sub).or_insert((iat_before, entry.until));
                    *slot = (slot.0.max(iat_before), slot.1.max(entry.until));
                }
                (None, Some(jti), None) if !jti.is_empty() => {
                    let until = next.token_ids.entry(jti).or_insert(entry.until);
                    *until = (*until).max(entry.until);
                }
                _ => {
                    return Err(FeedError::Malformed(format!(
                        "entries[{i}] must have either a non-empty sub with iat_before, or a non-empty jti"
                    )))
                }
            }
        }
        next.feed = page.feed;
        next.cursor = page.cursor;
        next.expire(now);
        if next.len() > max_entries {
            return Err(FeedError::TooMany(next.len()));
        }
        Ok(next)
    }

    /// Drops the entries that can no longer cover a valid token.
    pub fn expire(&mut self, now: i64) {
        self.subjects.retain(|_, (_, until)| *until >= now);
        self.token_ids.retain(|_, until| *until >= now);
    }

    /// Whether the token of `sub`, issued at `iat` (if it says), with id `jti`, is revoked.
    /// A token without `iat` cannot show it came after its subject's revocation.
    pub fn revokes(&self, sub: &str, iat: Option<i64>, jti: Option<&str>) -> bool {
        let by_subject = self
            .subjects
            .get(sub)
            .is_some_and(|(iat_before, _)| iat.is_none_or(|iat| iat < *iat_before));
        by_subject || jti.is_some_and(|jti| self.token_ids.contains_key(jti))
    }

    /// The whole set as a `reset` page, for the other workers.
    pub fn to_page(&self) -> Vec<u8> {
        let entries = self
            .subjects
            .iter()
            .map(|(sub, (iat_before, until))| Entry {
                sub: Some(sub.clone()),
                jti: None,
                iat_before: Some(*iat_before),
                until: *until,
            })
            .chain(self.token_ids.iter().map(|(jti, until)| Entry {
                sub: None,
                jti: Some(jti.clone()),
                iat_before: None,
                until: *until,
            }))
            .collect();
        let page = Page {
            feed: self.feed.clone(),
            cursor: self.cursor,
            reset: true,
            entries,
        };
        serde_json::to_vec(&page).unwrap_or_default()
    }
}

/// What the filter keeps about revocation: the set, and since when it is known good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocations {
    pub set: RevocationSet,
    /// When the last good poll ended (or, before any, when the filter started).
    pub fresh_at: i64,
    pub max_stale_seconds: Option<i64>,
}

impl Revocations {
    pub fn new(started_at: i64, max_stale_seconds: Option<i64>) -> Self {
        Revocations {
            set: RevocationSet::default(),
            fresh_at: started_at,
            max_stale_seconds,
        }
    }

    /// Whether the configured bound says tokens must be refused for want of a recent set.
    pub fn stale(&self, now: i64) -> bool {
        self.max_stale_seconds
            .is_some_and(|bound| now.saturating_sub(self.fresh_at) > bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn page(reset: bool, cursor: u64, entries: &str) -> Vec<u8> {
        format!(r#"{{"feed":"f1","cursor":{cursor},"reset":{reset},"entries":[{entries}]}}"#).into_bytes()
    }

    fn bob(iat_before: i64, until: i64) -> String {
        format!(r#"{{"sub":"bob","iat_before":{iat_before},"until":{until}}}"#)
    }

    #[test]
    fn subjects_and_token_ids_revoke_what_they_cover() {
        let set = RevocationSet::default()
            .apply(
                &page(
                    true,
                    3,
                    &format!(r#"{},{{"jti":"j1","until":{}}}"#, bob(NOW, NOW + 600), NOW + 60),
                ),
                NOW,
                10,
            )
            .unwrap();
        assert_eq!(set.len(), 2);
        let cases: &[(&str, Option<i64>, Option<&str>, bool)] = &[
            ("bob", Some(NOW - 1), None, true),
            ("bob", Some(NOW), None, false),
            ("bob", Some(NOW + 5), Some("j2"), false),
            ("bob", None, None, true),
            ("alice", Some(NOW - 100), None, false),
            ("alice", Some(NOW - 100), Some("j1"), true),
            ("alice", None, Some("j1"), true),
            ("Bob", Some(NOW - 1), None, false),
        ];
        for (sub, iat, jti, revoked) in cases {
            assert_eq!(set.revokes(sub, *iat, *jti), *revoked, "{sub} {iat:?} {jti:?}");
        }
    }

    #[test]
    fn pages_add_up_and_a_reset_replaces() {
        let empty = RevocationSet::default();
        assert_eq!(empty.poll_path("/revocations"), "/revocations");
        let one = empty
            .apply(&page(true, 1, &bob(NOW, NOW + 600)), NOW, 10)
            .unwrap();
        assert_eq!(one.poll_path("/revocations"), "/revocations?since=1&feed=f1");
        let two = one
            .apply(
                &page(false, 2, &format!(r#"{{"jti":"j1","until":{}}}"#, NOW + 60)),
                NOW,
                10,
            )
            .unwrap();
        assert!(two.revokes("bob", Some(NOW - 1), None) && two.revokes("x", Some(NOW), Some("j1")));
        // A later entry for the same subject only ever widens it.
        let widened = two
            .apply(&page(false, 3, &bob(NOW + 10, NOW + 30)), NOW, 10)
            .unwrap();
        assert!(widened.revokes("bob", Some(NOW + 9), None));
        assert_eq!(widened.subjects["bob"], (NOW + 10, NOW + 600));
        // Idle: nothing changes but the cursor.
        let idle = widened.apply(&page(false, 3, ""), NOW, 10).unwrap();
        assert_eq!(idle, widened);
        let reset = idle.apply(&page(true, 1, ""), NOW, 10).unwrap();
        assert!(reset.is_empty() && !reset.revokes("bob", Some(NOW - 1), Some("j1")));
    }

    #[test]
    fn entries_expire() {
        let mut set = RevocationSet::default()
            .apply(
                &page(
                    true,
                    2,
                    &format!(r#"{},{{"jti":"j1","until":{}}}"#, bob(NOW, NOW + 600), NOW + 60),
                ),
                NOW,
                10,
            )
            .unwrap();
        set.expire(NOW + 61);
        assert_eq!(set.len(), 1);
        assert!(!set.revokes("x", None, Some("j1")));
        set.expire(NOW + 601);
        assert!(set.is_empty());
        // Already expired on arrival: never stored.
        let late = RevocationSet::default()
            .apply(&page(true, 2, &bob(NOW - 10, NOW - 1)), NOW, 10)
            .unwrap();
        assert!(late.is_empty());
    }

    #[test]
    fn a_bad_page_changes_nothing() {
        let set = RevocationSet::default()
            .apply(&page(true, 1, &bob(NOW, NOW + 600)), NOW, 10)
            .unwrap();
        let bad: &[&[u8]] = &[
            b"",
            b"not json",
            b"[]",
            br#"{"feed":"f1","cursor":2}"#,
            br#"{"feed":"f1","cursor":-1,"entries":[]}"#,
            &page(false, 2, r#"{"until":1}"#),
            &page(false, 2, r#"{"sub":"x","until":1}"#),
            &page(false, 2, r#"{"sub":"","iat_before":1,"until":1}"#),
            &page(false, 2, r#"{"sub":"x","jti":"y","iat_before":1,"until":1}"#),
            &page(false, 2, r#"{"jti":"y","iat_before":1,"until":1}"#),
            &page(false, 2, r#"{"jti":"y","until":"later"}"#),
        ];
        for body in bad {
            assert!(
                matches!(set.apply(body, NOW, 10), Err(FeedError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let many = (0..11)
            .map(|i| format!(r#"{{"jti":"j{i}","until":{}}}"#, NOW + 60))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            set.apply(&page(false, 2, &many), NOW, 10),
            Err(FeedError::TooMany(12))
        );
    }

    #[test]
    fn the_shared_form_round_trips() {
        let set = RevocationSet::default()
            .apply(
                &page(
                    true,
                    7,
                    &format!(r#"{},{{"jti":"j1","until":{}}}"#, bob(NOW, NOW + 600), NOW + 60),
                ),
                NOW,
                10,
            )
            .unwrap();
        let copy = RevocationSet::default().apply(&set.to_page(), NOW, 10).unwrap();
        assert_eq!(copy, set);
    }

    #[test]
    fn staleness_follows_the_configured_bound() {
        let keep_serving = Revocations::new(NOW, None);
        assert!(!keep_serving.stale(NOW + 1_000_000));
        let bounded = Revocations::new(NOW, Some(10));
        assert!(!bounded.stale(NOW + 10));
        assert!(bounded.stale(NOW + 11));
    }

    #[test]
    fn odd_feed_ids_are_encoded_in_the_poll() {
        let set = RevocationSet::default()
            .apply(br#"{"feed":"a b&c","cursor":4,"entries":[]}"#, NOW, 10)
            .unwrap();
        assert_eq!(set.poll_path("/r"), "/r?since=4&feed=a%20b%26c");
    }
}
