//! What keeping the revocation set in step costs a worker, at 100,000 entries: per tick
//! when the feed was idle, and when a poll brought 100 new entries; the way workers
//! shared the set before (every good poll republished the whole set, and every worker
//! parsed it again) against now (versions, deltas, snapshots: `revocation_sync`).
//!
//! The filter's own code, run natively here (release build) over an in-memory shared
//! data map that copies values out as the host does; inside Envoy's V8 the same work
//! costs more, in proportion. "Before" is the old algorithm replayed with today's set:
//! a worker adopted the whole published page whenever its CAS changed (every good
//! poll), and the polling worker cloned its set, applied the page and serialised the
//! whole set for the others.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

use gatehouse::revocation::{Page, RevocationSet};
use gatehouse::revocation_sync::{Change, Limits, Replica, SharedData, SyncKeys};

pub const ENTRIES: usize = 100_000;
pub const NEW_PER_POLL: usize = 100;
const NOW: i64 = 1_800_000_000;
const LIMITS: Limits = Limits {
    horizon: NOW,
    max_entries: 200_000,
};

#[derive(Default)]
struct Shared(RefCell<HashMap<String, (Vec<u8>, u32)>>);

impl SharedData for Shared {
    fn get(&self, key: &str) -> Option<(Vec<u8>, Option<u32>)> {
        self.0.borrow().get(key).map(|(v, cas)| (v.clone(), Some(*cas)))
    }

    fn set(&self, key: &str, value: &[u8], _cas: Option<u32>) -> bool {
        let mut map = self.0.borrow_mut();
        let cas = map.get(key).map_or(0, |(_, c)| c + 1);
        map.insert(key.to_string(), (value.to_vec(), cas));
        true
    }
}

/// Microseconds per tick (medians), for one worker that does not poll and for the
/// worker that polls.
#[derive(Debug, Clone, Copy)]
pub struct SyncFigures {
    pub before_idle_us: f64,
    pub before_change_us: f64,
    pub before_poller_us: f64,
    pub after_idle_us: f64,
    pub after_change_us: f64,
    pub after_poller_us: f64,
    pub snapshot_bytes: usize,
}

fn page(reset: bool, cursor: u64, from: usize, n: usize) -> anyhow::Result<Page> {
    let entries: Vec<String> = (from..from + n)
        .map(|i| {
            if i % 10 == 0 {
                format!(
                    r#"{{"sub":"user-{i}","iat_before":{NOW},"until":{}}}"#,
                    NOW + 1800
                )
            } else {
                format!(r#"{{"jti":"jti-{i:016}","until":{}}}"#, NOW + 1800)
            }
        })
        .collect();
    let body = format!(
        r#"{{"feed":"f","cursor":{cursor},"reset":{reset},"entries":[{}]}}"#,
        entries.join(",")
    );
    Page::parse(body.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))
}

fn median_us(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(0.0)
}

fn time(mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e6
}

pub fn measure(rounds: usize) -> anyhow::Result<SyncFigures> {
    let full = page(true, 1, 0, ENTRIES)?;
    let mut base = RevocationSet::default();
    base.apply_page(&full, LIMITS.horizon, LIMITS.max_entries);
    let snapshot = base.to_page();

    // Before: every good poll changed the shared copy, so every worker parsed it all.
    let mut samples = Vec::new();
    for _ in 0..rounds {
        samples.push(time(|| {
            let mut set = RevocationSet::default();
            if let Ok(page) = Page::parse(&snapshot) {
                set.apply_page(&page, LIMITS.horizon, LIMITS.max_entries);
            }
            std::hint::black_box(&set);
        }));
    }
    let before_worker = median_us(samples);
    let mut samples = Vec::new();
    for r in 0..rounds {
        let delta = page(false, 2 + r as u64, ENTRIES + r * NEW_PER_POLL, NEW_PER_POLL)?;
        samples.push(time(|| {
            let mut next = base.clone();
            next.apply_page(&delta, LIMITS.horizon, LIMITS.max_entries);
            std::hint::black_box(next.to_page());
        }));
    }
    let before_poller = median_us(samples);

    // After: the poller publishes a delta (and every 8 versions a snapshot); a worker
    // reads the head, and the delta when there is one.
    let shared = Shared::default();
    let keys = SyncKeys::new("bench");
    let mut poller = Replica {
        set: base.clone(),
        version: 0,
    };
    poller.publish(&shared, &keys, Change::Replaced, NOW);
    let mut worker = Replica::default();
    worker.adopt(&shared, &keys, LIMITS);
    let (mut idle, mut change, mut polls) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds.max(16) {
        let delta = page(false, 2 + r as u64, ENTRIES + r * NEW_PER_POLL, NEW_PER_POLL)?;
        polls.push(time(|| {
            poller.set.apply_page(&delta, LIMITS.horizon, LIMITS.max_entries);
            poller.publish(&shared, &keys, Change::Delta(&delta), NOW);
        }));
        change.push(time(|| {
            worker.adopt(&shared, &keys, LIMITS);
        }));
        // An idle poll: only the head's time moves.
        poller.publish(&shared, &keys, Change::Nothing, NOW + 1);
        idle.push(time(|| {
            worker.adopt(&shared, &keys, LIMITS);
        }));
    }
    if worker.set != poller.set {
        anyhow::bail!("the worker did not follow the poller");
    }
    // The poller's cost averaged over the polls (a snapshot is written every eighth).
    let after_poller = polls.iter().sum::<f64>() / polls.len() as f64;
    Ok(SyncFigures {
        before_idle_us: before_worker,
        before_change_us: before_worker,
        before_poller_us: before_poller,
        after_idle_us: median_us(idle),
        after_change_us: median_us(change),
        after_poller_us: after_poller,
        snapshot_bytes: snapshot.len(),
    })
}
