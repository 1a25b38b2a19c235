//! The tokens the token service has revoked, as the filter knows them.
//!
//! The token service's feed (`GET /revocations?since=<cursor>&feed=<id>&skew=<s>`)
//! answers with the entries changed since a cursor, or with the whole set (`reset`)
//! when the cursor means nothing to it, in pages (`more`: ask again at once). Two kinds
//! of entry: a subject (every token of `sub` issued before `iat_before`, e.g. a
//! disabled user) and a token id (`jti`). Each entry carries `until`, after which no
//! token it covers can still be valid, and is dropped then (plus the clock skew).
//!
//! The set has a bound (`revocation.max_entries`). Past it, the token-id entries that
//! expire soonest are dropped, counted and logged; subject entries are never dropped.
//! So a flood of revoked tokens can at worst let some of those very tokens through
//! again, never stop a disable from reaching the edge (the token service also lets no
//! user have more than a few token-id entries, see its `store/revocations.rs`).
//!
//! Applying a page changes the set in place, in time proportional to the page (and to
//! the entries that expire), never to the set; the set travels between workers in the
//! feed's own format (see `revocation_sync`), so there is one parser.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::revocation_sync::Replica;

/// Largest feed page accepted.
pub const MAX_FEED_BYTES: usize = 8 * 1024 * 1024;

/// One page of the feed, as it arrives and as workers share changes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Page {
    pub feed: String,
    pub cursor: u64,
    #[serde(default)]
    pub reset: bool,
    /// The page was full: more follows from `cursor`.
    #[serde(default)]
    pub more: bool,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Entry {
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
}

impl std::fmt::Display for FeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeedError::Malformed(why) => write!(f, "not a revocation feed page: {why}"),
        }
    }
}

impl Page {
    /// Parses and checks a page: every entry is either a subject with `iat_before` or
    /// a token id. A page that is not is refused whole.
    pub fn parse(body: &[u8]) -> Result<Page, FeedError> {
        let page: Page = serde_json::from_slice(body).map_err(|e| FeedError::Malformed(e.to_string()))?;
        for (i, entry) in page.entries.iter().enumerate() {
            let ok = match (&entry.sub, &entry.jti, entry.iat_before) {
                (Some(sub), None, Some(_)) => !sub.is_empty(),
                (None, Some(jti), None) => !jti.is_empty(),
                _ => false,
            };
            if !ok {
                return Err(FeedError::Malformed(format!(
                    "entries[{i}] must have either a non-empty sub with iat_before, or a non-empty jti"
                )));
            }
        }
        Ok(page)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What applying a page did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Entries were added or widened.
    pub changed: bool,
    /// Token-id entries dropped to stay within the bound.
    pub dropped: usize,
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
    /// (until, key) of every entry of each kind, soonest first: expiry and the bound
    /// take from the front without looking at the rest.
    subject_expiry: BTreeSet<(i64, String)>,
    token_expiry: BTreeSet<(i64, String)>,
}

impl RevocationSet {
    pub fn len(&self) -> usize {
        self.subjects.len() + self.token_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many entries are token ids (the kind the bound may drop).
    pub fn token_entries(&self) -> usize {
        self.token_ids.len()
    }

    pub fn feed(&self) -> &str {
        &self.feed
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The next poll: `path` with this set's cursor and feed id, and the `skew` (the
    /// seconds past `exp` a token is still accepted) for which entries must be kept.
    pub fn poll_path(&self, path: &str, skew: i64) -> String {
        if self.feed.is_empty() {
            format!("{path}?skew={skew}")
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
            format!("{path}?since={}&feed={feed}&skew={skew}", self.cursor)
        }
    }

    /// Applies one page in place: a `reset` page replaces the set, any other adds to
    /// it. Entries whose `until` is before `horizon` are dropped (those of the page,
    /// and those already held); then, beyond `max_entries`, the token ids that expire
    /// soonest.
    pub fn apply_page(&mut self, page: &Page, horizon: i64, max_entries: usize) -> Applied {
        let mut changed = false;
        if page.reset {
            changed = !self.is_empty();
            self.subjects.clear();
            self.token_ids.clear();
            self.subject_expiry.clear();
            self.token_expiry.clear();
        }
        for entry in &page.entries {
            if entry.until < horizon {
                continue;
            }
            changed |= match (&entry.sub, &entry.jti, entry.iat_before) {
                (Some(sub), None, Some(iat_before)) => self.add_subject(sub, iat_before, entry.until),
                (None, Some(jti), None) => self.add_token(jti, entry.until),
                _ => false,
            };
        }
        self.feed.clone_from(&page.feed);
        self.cursor = page.cursor;
        self.expire(horizon);
        Applied {
            changed,
            dropped: self.bound(max_entries),
        }
    }

    /// Parses and applies a page to a copy of the set (for tests and tools: the
    /// filter applies in place).
    pub fn apply(&self, body: &[u8], horizon: i64, max_entries: usize) -> Result<RevocationSet, FeedError> {
        let page = Page::parse(body)?;
        let mut next = self.clone();
        next.apply_page(&page, horizon, max_entries);
        Ok(next)
    }

    fn add_subject(&mut self, sub: &str, iat_before: i64, until: i64) -> bool {
        match self.subjects.get_mut(sub) {
            Some((held_iat, held_until)) => {
                let widened = (iat_before.max(*held_iat), until.max(*held_until));
                if widened == (*held_iat, *held_until) {
                    return false;
                }
                if widened.1 != *held_until {
                    self.subject_expiry.remove(&(*held_until, sub.to_string()));
                    self.subject_expiry.insert((widened.1, sub.to_string()));
                }
                (*held_iat, *held_until) = widened;
            }
            None => {
                self.subjects.insert(sub.to_string(), (iat_before, until));
                self.subject_expiry.insert((until, sub.to_string()));
            }
        }
        true
    }

    fn add_token(&mut self, jti: &str, until: i64) -> bool {
        match self.token_ids.get_mut(jti) {
            Some(held) if *held >= until => false,
            Some(held) => {
                self.token_expiry.remove(&(*held, jti.to_string()));
                self.token_expiry.insert((until, jti.to_string()));
                *held = until;
                true
            }
            None => {
                self.token_ids.insert(jti.to_string(), until);
                self.token_expiry.insert((until, jti.to_string()));
                true
            }
        }
    }

    /// Drops the entries that can no longer cover a valid token (`until` before `horizon`).
    pub fn expire(&mut self, horizon: i64) {
        while let Some((until, sub)) = self.subject_expiry.first().cloned() {
            if until >= horizon {
                break;
            }
            self.subject_expiry.pop_first();
            self.subjects.remove(&sub);
        }
        while let Some((until, jti)) = self.token_expiry.first().cloned() {
            if until >= horizon {
                break;
            }
            self.token_expiry.pop_first();
            self.token_ids.remove(&jti);
        }
    }

    /// Drops the soonest-expiring token ids until the set fits in `max_entries` (or
    /// only subjects are left); how many went.
    fn bound(&mut self, max_entries: usize) -> usize {
        let mut dropped = 0;
        while self.len() > max_entries {
            let Some((_, jti)) = self.token_expiry.pop_first() else {
                break;
            };
            self.token_ids.remove(&jti);
            dropped += 1;
        }
        dropped
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
        Page {
            feed: self.feed.clone(),
            cursor: self.cursor,
            reset: true,
            more: false,
            entries,
        }
        .to_bytes()
    }
}

/// What to do with tokens before the first good poll, when the filter cannot know
/// which are revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeforeFirstPoll {
    /// 503 with `Retry-After` (the default): a revoked token never passes because
    /// the feed was down when Envoy started.
    Refuse,
    /// Accept them (the bound of `max_stale_seconds`, if any, still applies, counted
    /// from the start).
    Allow,
}

/// What the filter keeps about revocation: the set (and its version among the
/// workers), and since when it is known good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocations {
    pub replica: Replica,
    /// When the last good poll ended (or, before any, when the filter started).
    pub fresh_at: i64,
    /// Whether any good poll has happened (here or, through shared data, on any worker).
    pub loaded: bool,
    pub max_stale_seconds: Option<i64>,
    pub before_first_poll: BeforeFirstPoll,
}

/// Why tokens cannot be checked against the set now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    NotLoaded,
    Stale,
}

impl Revocations {
    pub fn new(started_at: i64, max_stale_seconds: Option<i64>, before_first_poll: BeforeFirstPoll) -> Self {
        Revocations {
            replica: Replica::default(),
            fresh_at: started_at,
            loaded: false,
            max_stale_seconds,
            before_first_poll,
        }
    }

    pub fn set(&self) -> &RevocationSet {
        &self.replica.set
    }

    /// A good poll ended at `at` (here or on another worker).
    pub fn refreshed(&mut self, at: i64) {
        self.fresh_at = self.fresh_at.max(at);
        self.loaded = true;
    }

    /// Whether the configuration says tokens must be refused for want of a set, or of
    /// a recent enough one.
    pub fn unusable(&self, now: i64) -> Option<Unusable> {
        if !self.loaded && self.before_first_poll == BeforeFirstPoll::Refuse {
            return Some(Unusable::NotLoaded);
        }
        self.max_stale_seconds
            .is_some_and(|bound| now.saturating_sub(self.fresh_at) > bound)
            .then_some(Unusable::Stale)
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

    fn jti(id: &str, until: i64) -> String {
        format!(r#"{{"jti":"{id}","until":{until}}}"#)
    }

    #[test]
    fn subjects_and_token_ids_revoke_what_they_cover() {
        let set = RevocationSet::default()
            .apply(
                &page(
                    true,
                    3,
                    &format!("{},{}", bob(NOW, NOW + 600), jti("j1", NOW + 60)),
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
        assert_eq!(empty.poll_path("/revocations", 60), "/revocations?skew=60");
        let one = empty
            .apply(&page(true, 1, &bob(NOW, NOW + 600)), NOW, 10)
            .unwrap();
        assert_eq!(
            one.poll_path("/revocations", 60),
            "/revocations?since=1&feed=f1&skew=60"
        );
        let two = one.apply(&page(false, 2, &jti("j1", NOW + 60)), NOW, 10).unwrap();
        assert!(two.revokes("bob", Some(NOW - 1), None) && two.revokes("x", Some(NOW), Some("j1")));
        // A later entry for the same subject only ever widens it.
        let widened = two
            .apply(&page(false, 3, &bob(NOW + 10, NOW + 30)), NOW, 10)
            .unwrap();
        assert!(widened.revokes("bob", Some(NOW + 9), None));
        assert_eq!(widened.subjects["bob"], (NOW + 10, NOW + 600));
        // Idle: nothing changes but the cursor, and the page says so.
        let mut idle = widened.clone();
        let applied = idle.apply_page(&Page::parse(&page(false, 4, "")).unwrap(), NOW, 10);
        assert_eq!(applied, Applied::default());
        assert_eq!(idle.cursor(), 4);
        // Nothing new either: an entry the set already covers.
        let applied = idle.apply_page(
            &Page::parse(&page(false, 5, &bob(NOW, NOW + 1))).unwrap(),
            NOW,
            10,
        );
        assert!(!applied.changed);
        let reset = idle.apply(&page(true, 1, ""), NOW, 10).unwrap();
        assert!(reset.is_empty() && !reset.revokes("bob", Some(NOW - 1), Some("j1")));
    }

    #[test]
    fn entries_expire_soonest_first() {
        let mut set = RevocationSet::default()
            .apply(
                &page(
                    true,
                    2,
                    &format!(
                        "{},{},{}",
                        bob(NOW, NOW + 600),
                        jti("j1", NOW + 60),
                        jti("j2", NOW + 90)
                    ),
                ),
                NOW,
                10,
            )
            .unwrap();
        set.expire(NOW + 61);
        assert_eq!(set.len(), 2);
        assert!(!set.revokes("x", None, Some("j1")) && set.revokes("x", None, Some("j2")));
        // A widened entry expires by its new until, not the old one.
        set.apply_page(
            &Page::parse(&page(false, 3, &jti("j2", NOW + 700))).unwrap(),
            NOW,
            10,
        );
        set.expire(NOW + 601);
        assert_eq!(set.len(), 1);
        assert!(set.revokes("x", None, Some("j2")) && !set.revokes("bob", None, None));
        set.expire(NOW + 701);
        assert!(set.is_empty());
        assert!(set.subject_expiry.is_empty() && set.token_expiry.is_empty());
        // Already expired on arrival: never stored.
        let late = RevocationSet::default()
            .apply(&page(true, 2, &bob(NOW - 10, NOW - 1)), NOW, 10)
            .unwrap();
        assert!(late.is_empty());
    }

    #[test]
    fn beyond_the_bound_the_soonest_token_ids_go_and_subjects_stay() {
        let tokens: Vec<String> = (0..10).map(|i| jti(&format!("j{i}"), NOW + 100 + i)).collect();
        let mut set = RevocationSet::default()
            .apply(&page(true, 1, &tokens.join(",")), NOW, 10)
            .unwrap();
        assert_eq!(set.len(), 10);
        // A page that brings two subjects and one more token id: three token ids go,
        // the three that expire soonest; every subject is kept.
        let more = format!(
            "{},{},{}",
            bob(NOW, NOW + 50),
            r#"{"sub":"carol","iat_before":1,"until":1800000050}"#,
            jti("late", NOW + 900)
        );
        let applied = set.apply_page(&Page::parse(&page(false, 2, &more)).unwrap(), NOW, 10);
        assert_eq!(
            applied,
            Applied {
                changed: true,
                dropped: 3
            }
        );
        assert_eq!(set.len(), 10);
        assert_eq!(set.cursor(), 2, "the page is taken: the cursor moves on");
        assert!(set.revokes("bob", Some(NOW - 1), None) && set.revokes("carol", Some(0), None));
        for gone in ["j0", "j1", "j2"] {
            assert!(!set.revokes("x", Some(NOW), Some(gone)), "{gone}");
        }
        for kept in ["j3", "j9", "late"] {
            assert!(set.revokes("x", Some(NOW), Some(kept)), "{kept}");
        }
        // Subjects alone beyond the bound: all kept, no token id left.
        let subjects: Vec<String> = (0..12)
            .map(|i| format!(r#"{{"sub":"u{i}","iat_before":{NOW},"until":{}}}"#, NOW + 60))
            .collect();
        let applied = set.apply_page(
            &Page::parse(&page(false, 3, &subjects.join(","))).unwrap(),
            NOW,
            10,
        );
        assert_eq!(applied.dropped, 8);
        assert_eq!((set.subjects.len(), set.token_ids.len()), (14, 0));
    }

    #[test]
    fn a_bad_page_is_refused_whole() {
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
            &page(false, 2, &format!(r#"{},{{"jti":""}}"#, jti("ok", NOW + 60))),
        ];
        for body in bad {
            assert!(
                matches!(Page::parse(body), Err(FeedError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let paged = Page::parse(br#"{"feed":"f","cursor":9,"reset":true,"more":true,"entries":[]}"#).unwrap();
        assert!(paged.reset && paged.more);
    }

    #[test]
    fn the_shared_form_round_trips() {
        let set = RevocationSet::default()
            .apply(
                &page(
                    true,
                    7,
                    &format!("{},{}", bob(NOW, NOW + 600), jti("j1", NOW + 60)),
                ),
                NOW,
                10,
            )
            .unwrap();
        let copy = RevocationSet::default().apply(&set.to_page(), NOW, 10).unwrap();
        assert_eq!(copy, set);
    }

    #[test]
    fn tokens_wait_for_a_first_poll_unless_told_not_to_and_for_a_recent_one_if_bounded() {
        let mut refuse = Revocations::new(NOW, None, BeforeFirstPoll::Refuse);
        assert_eq!(refuse.unusable(NOW), Some(Unusable::NotLoaded));
        refuse.refreshed(NOW + 1);
        assert_eq!(
            refuse.unusable(NOW + 1_000_000),
            None,
            "no bound: the last set serves"
        );
        let allow = Revocations::new(NOW, None, BeforeFirstPoll::Allow);
        assert_eq!(allow.unusable(NOW), None);
        let mut bounded = Revocations::new(NOW, Some(10), BeforeFirstPoll::Allow);
        assert_eq!(bounded.unusable(NOW + 10), None);
        assert_eq!(
            bounded.unusable(NOW + 11),
            Some(Unusable::Stale),
            "counted from the start"
        );
        bounded.refreshed(NOW + 11);
        assert_eq!(bounded.unusable(NOW + 21), None);
        assert_eq!(bounded.unusable(NOW + 22), Some(Unusable::Stale));
        // An older report never moves the freshness back.
        bounded.refreshed(NOW);
        assert_eq!(bounded.unusable(NOW + 21), None);
    }

    #[test]
    fn odd_feed_ids_are_encoded_in_the_poll() {
        let set = RevocationSet::default()
            .apply(br#"{"feed":"a b&c","cursor":4,"entries":[]}"#, NOW, 10)
            .unwrap();
        assert_eq!(set.poll_path("/r", 0), "/r?since=4&feed=a%20b%26c&skew=0");
    }
}
