//! Keeping every worker's revocation set in step, at a cost proportional to change.
//!
//! One worker polls the feed (under a lease) and publishes to proxy-wasm shared data:
//! - `<base>.head`: 24 bytes: the set's version, when the last good poll ended, and
//!   the version of the last snapshot. Written after every good poll.
//! - `<base>.delta.<v % 16>`: the page that made version `v` (the feed's own format),
//!   for the last 16 versions.
//! - `<base>.snapshot`: the whole set at some version, rewritten by a reset and every
//!   8 versions, so a worker that fell behind (or just started) can catch up.
//!
//! Every worker reads the head on its tick: an idle poll costs it those 24 bytes and
//! nothing else; a poll that brought 100 entries costs it those 100 entries, not the
//! 100,000 already held. Only a worker more than a few versions behind parses the
//! snapshot. Versions only grow; a record whose version is not the one expected (a
//! slot rewritten meanwhile) is never applied, and the worker falls back to the
//! snapshot, then catches up on the next tick.
//!
//! No `proxy_wasm` here: the host is behind [`SharedData`] (part of `host::Host`), and
//! tests run several workers over one map.

use crate::revocation::{Page, RevocationSet};

pub use crate::host::SharedData;

/// How many deltas are kept.
pub const DELTAS: u64 = 16;
/// A snapshot is rewritten once this many versions have passed since the last one,
/// so a worker at most this far behind it still finds every delta it needs.
const SNAPSHOT_EVERY: u64 = DELTAS / 2;

/// The shared-data keys of one feed.
pub struct SyncKeys {
    pub head: String,
    pub snapshot: String,
    pub lease: String,
    deltas: Vec<String>,
}

impl SyncKeys {
    pub fn new(base: &str) -> Self {
        SyncKeys {
            head: format!("{base}.head"),
            snapshot: format!("{base}.snapshot"),
            lease: format!("{base}.lease"),
            deltas: (0..DELTAS).map(|i| format!("{base}.delta.{i}")).collect(),
        }
    }

    fn delta(&self, version: u64) -> &str {
        let slot = usize::try_from(version % DELTAS).unwrap_or(0);
        self.deltas.get(slot).map_or("", String::as_str)
    }
}

/// What the head says.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub version: u64,
    /// When the last good poll ended.
    pub fresh_at: i64,
    /// The version the snapshot holds (0: none yet, the empty set).
    pub snapshot: u64,
}

impl Head {
    fn encode(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&self.version.to_be_bytes());
        out[8..16].copy_from_slice(&self.fresh_at.to_be_bytes());
        out[16..].copy_from_slice(&self.snapshot.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Head> {
        let field = |i: usize| -> Option<[u8; 8]> { bytes.get(i..i + 8)?.try_into().ok() };
        if bytes.len() != 24 {
            return None;
        }
        Some(Head {
            version: u64::from_be_bytes(field(0)?),
            fresh_at: i64::from_be_bytes(field(8)?),
            snapshot: u64::from_be_bytes(field(16)?),
        })
    }
}

/// Limits a worker applies to what it adopts (its own clock and bound).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Entries whose `until` is before this are dropped.
    pub horizon: i64,
    pub max_entries: usize,
}

/// A record: the version it makes, then a feed page.
fn record(version: u64, page: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + page.len());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(page);
    out
}

fn read_record(shared: &impl SharedData, key: &str) -> Option<(u64, Page)> {
    let (bytes, _) = shared.get(key)?;
    let (version, page) = bytes.split_at_checked(8)?;
    let version = u64::from_be_bytes(version.try_into().ok()?);
    Some((version, Page::parse(page).ok()?))
}

pub fn read_head(shared: &impl SharedData, keys: &SyncKeys) -> Option<Head> {
    shared.get(&keys.head).and_then(|(bytes, _)| Head::decode(&bytes))
}

/// One worker's copy of the shared set: the set, and the version it is at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replica {
    pub set: RevocationSet,
    pub version: u64,
}

/// What a good poll changed, for [`Replica::publish`].
pub enum Change<'p> {
    /// Nothing: only the time of the poll is news.
    Nothing,
    /// This page was applied to the set.
    Delta(&'p Page),
    /// The set was replaced (a reset, maybe over several pages).
    Replaced,
}

impl Replica {
    /// Catches up with the shared copy; returns the head it read, if there is one.
    pub fn adopt(&mut self, shared: &impl SharedData, keys: &SyncKeys, limits: Limits) -> Option<Head> {
        let head = read_head(shared, keys)?;
        if head.version == self.version {
            return Some(head);
        }
        let from_deltas = self.version >= head.snapshot && self.version < head.version;
        if from_deltas && self.apply_deltas(shared, keys, head.version, limits) {
            return Some(head);
        }
        if let Some((version, page)) = read_record(shared, &keys.snapshot) {
            // Never back to an older copy, unless ours is from a shared state that is
            // gone (ahead of the head).
            if version >= head.snapshot && (version > self.version || self.version > head.version) {
                let mut set = RevocationSet::default();
                set.apply_page(&page, limits.horizon, limits.max_entries);
                (self.set, self.version) = (set, version);
                // What is missing now comes on a later tick.
                self.apply_deltas(shared, keys, head.version, limits);
            }
        }
        Some(head)
    }

    /// Applies the deltas after this replica's version up to `to`; whether all were there.
    fn apply_deltas(&mut self, shared: &impl SharedData, keys: &SyncKeys, to: u64, limits: Limits) -> bool {
        while self.version < to {
            let next = self.version.saturating_add(1);
            match read_record(shared, keys.delta(next)) {
                Some((version, page)) if version == next && !page.reset => {
                    self.set.apply_page(&page, limits.horizon, limits.max_entries);
                    self.version = next;
                }
                _ => return false,
            }
        }
        true
    }

    /// Publishes a good poll that ended at `fresh_at` (after this replica adopted the
    /// head and applied `change` to its set). Only the polling worker, under its
    /// lease, writes: records first, the head last, so a reader that sees a version
    /// finds its records.
    pub fn publish(&mut self, shared: &impl SharedData, keys: &SyncKeys, change: Change<'_>, fresh_at: i64) {
        let head = read_head(shared, keys).unwrap_or_default();
        let next = head.version.saturating_add(1);
        let head = match change {
            Change::Nothing => Head { fresh_at, ..head },
            Change::Delta(page) => {
                shared.set(keys.delta(next), &record(next, &page.to_bytes()), None);
                let mut snapshot = head.snapshot;
                if next.saturating_sub(head.snapshot) >= SNAPSHOT_EVERY {
                    shared.set(&keys.snapshot, &record(next, &self.set.to_page()), None);
                    snapshot = next;
                }
                self.version = next;
                Head {
                    version: next,
                    fresh_at,
                    snapshot,
                }
            }
            Change::Replaced => {
                shared.set(&keys.snapshot, &record(next, &self.set.to_page()), None);
                self.version = next;
                Head {
                    version: next,
                    fresh_at,
                    snapshot: next,
                }
            }
        };
        shared.set(&keys.head, &head.encode(), None);
    }
}

#[cfg(test)]
pub mod mock {
    //! Shared data as the host keeps it: one map for every worker, a CAS per key.
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::SharedData;

    #[derive(Default)]
    pub struct MockShared {
        map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        /// Bytes handed out by `get`: what reading costs a worker.
        pub read_bytes: RefCell<usize>,
    }

    impl SharedData for MockShared {
        fn get(&self, key: &str) -> Option<(Vec<u8>, Option<u32>)> {
            let map = self.map.borrow();
            let (value, cas) = map.get(key)?;
            *self.read_bytes.borrow_mut() += value.len();
            Some((value.clone(), Some(*cas)))
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            let mut map = self.map.borrow_mut();
            let current = map.get(key).map(|(_, c)| *c);
            if cas.is_some() && cas != current {
                return false;
            }
            map.insert(key.to_string(), (value.to_vec(), current.unwrap_or(0) + 1));
            true
        }
    }

    impl MockShared {
        pub fn overwrite(&self, key: &str, value: &[u8]) {
            self.set(key, value, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mock::MockShared;
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const LIMITS: Limits = Limits {
        horizon: NOW,
        max_entries: 100_000,
    };

    fn page(reset: bool, cursor: u64, jtis: std::ops::Range<u32>) -> Page {
        let entries: Vec<String> = jtis
            .map(|i| format!(r#"{{"jti":"j{i}","until":{}}}"#, NOW + 600))
            .collect();
        Page::parse(
            format!(
                r#"{{"feed":"f","cursor":{cursor},"reset":{reset},"entries":[{}]}}"#,
                entries.join(",")
            )
            .as_bytes(),
        )
        .unwrap()
    }

    /// The polling worker takes a page as the filter does: adopt, apply, publish.
    fn poll(poller: &mut Replica, shared: &MockShared, keys: &SyncKeys, page: &Page, at: i64) {
        poller.adopt(shared, keys, LIMITS);
        if page.reset {
            poller.set = RevocationSet::default();
            poller.set.apply_page(page, NOW, 100_000);
            poller.publish(shared, keys, Change::Replaced, at);
        } else if poller.set.apply_page(page, NOW, 100_000).changed {
            poller.publish(shared, keys, Change::Delta(page), at);
        } else {
            poller.publish(shared, keys, Change::Nothing, at);
        }
    }

    #[test]
    fn heads_round_trip() {
        let head = Head {
            version: 7,
            fresh_at: -3,
            snapshot: 4,
        };
        assert_eq!(Head::decode(&head.encode()), Some(head));
        assert_eq!(Head::decode(b"short"), None);
    }

    #[test]
    fn other_workers_follow_by_deltas_and_an_idle_poll_costs_them_the_head_only() {
        let (shared, keys) = (MockShared::default(), SyncKeys::new("g"));
        let (mut a, mut b) = (Replica::default(), Replica::default());
        assert_eq!(b.adopt(&shared, &keys, LIMITS), None, "nothing published yet");

        poll(&mut a, &shared, &keys, &page(true, 10, 0..1000), NOW);
        let head = b.adopt(&shared, &keys, LIMITS).unwrap();
        assert_eq!((head.version, head.fresh_at, b.version), (1, NOW, 1));
        assert_eq!(b.set, a.set);

        // 100 new entries: b reads the head and one delta, not the 1,000 held.
        poll(&mut a, &shared, &keys, &page(false, 11, 1000..1100), NOW + 2);
        *shared.read_bytes.borrow_mut() = 0;
        b.adopt(&shared, &keys, LIMITS);
        assert_eq!(b.set, a.set);
        assert_eq!(b.set.len(), 1100);
        let read = *shared.read_bytes.borrow();
        assert!(read < 100 * 40, "{read} bytes read for 100 entries");

        // Idle polls: the head's time moves, nothing else is read.
        for t in 3..6 {
            poll(&mut a, &shared, &keys, &page(false, 11, 0..0), NOW + t);
            *shared.read_bytes.borrow_mut() = 0;
            let head = b.adopt(&shared, &keys, LIMITS).unwrap();
            assert_eq!(head.fresh_at, NOW + t);
            assert_eq!(*shared.read_bytes.borrow(), 24);
        }
        assert_eq!(b.version, 2);
    }

    #[test]
    fn a_worker_far_behind_or_new_catches_up_from_the_snapshot() {
        let (shared, keys) = (MockShared::default(), SyncKeys::new("g"));
        let mut a = Replica::default();
        poll(&mut a, &shared, &keys, &page(true, 1, 0..10), NOW);
        let mut b = Replica::default();
        b.adopt(&shared, &keys, LIMITS);
        // 40 versions go by without b: its deltas were overwritten long ago.
        for v in 0..40u32 {
            let from = 10 + v * 2;
            poll(
                &mut a,
                &shared,
                &keys,
                &page(false, 2 + u64::from(v), from..from + 2),
                NOW,
            );
        }
        b.adopt(&shared, &keys, LIMITS);
        assert_eq!((b.version, &b.set), (a.version, &a.set));
        assert_eq!(b.set.len(), 90);
        // A worker that starts now: the same.
        let mut c = Replica::default();
        c.adopt(&shared, &keys, LIMITS);
        assert_eq!(c, a);
    }

    #[test]
    fn a_record_of_another_version_is_never_applied() {
        let (shared, keys) = (MockShared::default(), SyncKeys::new("g"));
        let mut a = Replica::default();
        poll(&mut a, &shared, &keys, &page(true, 1, 0..1), NOW);
        let mut b = Replica::default();
        b.adopt(&shared, &keys, LIMITS);
        poll(&mut a, &shared, &keys, &page(false, 2, 1..2), NOW);
        // The delta b needs is clobbered by a record of another version.
        shared.overwrite(keys.delta(2), &record(18, &page(false, 9, 7..8).to_bytes()));
        b.adopt(&shared, &keys, LIMITS);
        assert!(
            !b.set.revokes("x", None, Some("j7")),
            "a record of version 18 was applied as 2"
        );
        // It fell back to the snapshot (version 1) and waits there for a readable delta.
        assert_eq!(b.version, 1);
        poll(&mut a, &shared, &keys, &page(false, 3, 2..3), NOW);
        let mut c = Replica::default();
        c.adopt(&shared, &keys, LIMITS);
        assert!(c.version <= a.version);
    }

    #[test]
    fn a_revocation_seen_by_one_worker_is_seen_by_all_on_their_next_tick() {
        // The flip-flop of 5254a72 in small: once the polling worker refuses a token,
        // every other worker that has ticked since refuses it too.
        let (shared, keys) = (MockShared::default(), SyncKeys::new("g"));
        let mut workers = vec![Replica::default(); 4];
        poll(&mut workers[0], &shared, &keys, &page(true, 1, 0..1), NOW);
        poll(&mut workers[0], &shared, &keys, &page(false, 2, 1..2), NOW);
        assert!(workers[0].set.revokes("x", None, Some("j1")));
        for w in &mut workers[1..] {
            w.adopt(&shared, &keys, LIMITS);
            assert!(w.set.revokes("x", None, Some("j1")));
        }
    }
}
