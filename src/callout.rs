//! The filter's own requests to a cluster (the JWKS, the revocation feed): starting
//! one, and reading its answer. A failure is logged here, once, with what it was for.

use log::warn;

use crate::host::{Call, Host};

/// Starts `call` for `what` (in log lines); `None` if the host refused it.
pub fn start(host: &impl Host, what: &str, call: &Call<'_>) -> Option<u32> {
    match host.dispatch(call) {
        Ok(token) => Some(token),
        Err(e) => {
            warn!(
                "gatehouse: cannot fetch {what} from cluster {}: {e}",
                call.cluster
            );
            None
        }
    }
}

/// The body of the answer being handed over, if it is a 200 of at most `max` bytes.
pub fn answer_body(host: &impl Host, what: &str, body_size: usize, max: usize) -> Option<Vec<u8>> {
    let status = host.answer_status();
    if status.as_deref() != Some(b"200".as_slice()) {
        warn!(
            "gatehouse: fetching {what} answered {}",
            status.map_or("nothing (unreachable?)".into(), |s| String::from_utf8_lossy(&s)
                .into_owned())
        );
        return None;
    }
    if body_size > max {
        warn!("gatehouse: {what} is larger than {max} bytes");
        return None;
    }
    if body_size == 0 {
        return Some(Vec::new());
    }
    host.answer_body(body_size)
}
