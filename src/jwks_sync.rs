//! Keeping a remote JWKS in step across workers, without a fetch per worker.
//!
//! The document lives in proxy-wasm shared data (one copy for every worker of the VM),
//! prefixed by when it was fetched. A worker fetches only when the copy is due for a
//! refresh (or missing) and it wins a short lease in shared data; the others adopt the
//! new copy on their next tick. A token naming an unknown `kid` may trigger an early
//! fetch, under a second lease that spaces such fetches out, so random `kid`s cannot
//! make the filter hammer the token service. A failed fetch changes nothing: the last
//! good keys stay in use.

use crate::config::RemoteJwks;

/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// The shared-data keys of one remote JWKS.
pub struct SharedKeys {
    pub document: String,
    pub lease: String,
    pub refetch: String,
}

impl SharedKeys {
    pub fn new(remote: &RemoteJwks) -> Self {
        let base = format!("gatehouse.jwks.{}.{}", remote.cluster, remote.path);
        SharedKeys {
            lease: format!("{base}.lease"),
            refetch: format!("{base}.refetch"),
            document: base,
        }
    }
}

/// A stored document: when it was fetched (8 bytes, big-endian) and its bytes.
pub fn encode(fetched_at: i64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&fetched_at.to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn decode(record: &[u8]) -> Option<(i64, &[u8])> {
    let (time, body) = record.split_at_checked(8)?;
    Some((i64::from_be_bytes(time.try_into().ok()?), body))
}

/// Whether a scheduled fetch is due.
pub fn due(fetched_at: Option<i64>, now: i64, refresh_seconds: i64) -> bool {
    fetched_at.is_none_or(|t| now.saturating_sub(t) >= refresh_seconds)
}

/// A lease's value: the time until which it is held.
pub fn lease_until(value: Option<&[u8]>) -> Option<i64> {
    let bytes: [u8; 8] = value?.try_into().ok()?;
    Some(i64::from_be_bytes(bytes))
}

/// Whether the lease (if any) has run out at `now`.
pub fn lease_free(value: Option<&[u8]>, now: i64) -> bool {
    lease_until(value).is_none_or(|until| now >= until)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = encode(1_800_000_000, br#"{"keys":[]}"#);
        assert_eq!(decode(&r), Some((1_800_000_000, &br#"{"keys":[]}"#[..])));
        assert_eq!(decode(b"short"), None);
        assert_eq!(decode(&encode(-5, b"")), Some((-5, &b""[..])));
    }

    #[test]
    fn fetch_schedule_and_leases() {
        assert!(due(None, 100, 300), "nothing fetched yet");
        assert!(!due(Some(100), 399, 300));
        assert!(due(Some(100), 400, 300));
        assert!(lease_free(None, 100));
        assert!(!lease_free(Some(&105i64.to_be_bytes()), 100));
        assert!(lease_free(Some(&105i64.to_be_bytes()), 105));
        assert!(
            lease_free(Some(b"odd"), 100),
            "an unreadable lease does not block forever"
        );
    }
}
