//! Leases in shared data: which worker does a piece of background work (a fetch, a
//! poll). A lease's value is the time until which it is held, 8 bytes big-endian; a
//! worker takes a free one with compare-and-swap, so of two workers racing for it
//! exactly one wins.

use crate::host::SharedData;

/// A lease's value: the time until which it is held.
pub fn lease_until(value: Option<&[u8]>) -> Option<i64> {
    let bytes: [u8; 8] = value?.try_into().ok()?;
    Some(i64::from_be_bytes(bytes))
}

/// Whether the lease (if any) has run out at `now`.
pub fn lease_free(value: Option<&[u8]>, now: i64) -> bool {
    lease_until(value).is_none_or(|until| now >= until)
}

/// Takes the lease `key` until `now + seconds` if it is free.
pub fn try_take(shared: &impl SharedData, key: &str, now: i64, seconds: i64) -> bool {
    let (value, cas) = match shared.get(key) {
        Some((value, cas)) => (Some(value), cas),
        None => (None, None),
    };
    if !lease_free(value.as_deref(), now) {
        return false;
    }
    let until = now.saturating_add(seconds).to_be_bytes();
    // A key that never existed has no CAS to compare with: two workers taking it at
    // the very same moment may both win, once (a second fetch or poll, no harm).
    shared.set(key, &until, cas)
}

/// Holds the lease `key` until `until` (the holder releasing it, or keeping it longer).
pub fn hold_until(shared: &impl SharedData, key: &str, until: i64) {
    shared.set(key, &until.to_be_bytes(), None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_free_once_it_runs_out() {
        assert!(lease_free(None, 100));
        assert!(!lease_free(Some(&105i64.to_be_bytes()), 100));
        assert!(lease_free(Some(&105i64.to_be_bytes()), 105));
        assert!(
            lease_free(Some(b"odd"), 100),
            "an unreadable lease does not block forever"
        );
    }
}
