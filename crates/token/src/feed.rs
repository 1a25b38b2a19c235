//! `GET /revocations?since=N&feed=ID`: the revocation feed the Envoy filter polls.
//!
//! The answer is `{"feed": ID, "cursor": N, "reset": bool, "more": bool, "entries": [...]}`, each
//! entry `{"sub", "iat_before", "until"}` (every token of a user issued before
//! `iat_before`) or `{"jti", "until"}` (one token). With `reset` the poller replaces
//! its set by `entries`; otherwise it adds them. It keeps an entry until `until` (plus
//! its clock skew, which it passes as `skew=S` so that entries are served until
//! `until + S`) and polls again with the new `cursor` and `feed`; at once if `more`
//! says the page was full. An idle poll is one small answer with no entries.
//!
//! This endpoint is for the proxy only: it lists usernames. It must not be routed
//! publicly; the demo's Envoy routes only `/token`, `/revoke`, `/admin/` and
//! `/.well-known/` to the token service, and the filter reaches the feed through its
//! own cluster.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::clock::unix_now;
use crate::error::ApiError;
use crate::form;
use crate::state::AppState;
use crate::store::MAX_POLLER_SKEW;

pub async fn revocations(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = form::parse(query.unwrap_or_default().as_bytes())?;
    let since = params
        .get("since")
        .map(|s| decimal(s, "since must be a cursor from a previous answer"))
        .transpose()?;
    let feed = params.get("feed").map(String::as_str);
    // A poller that accepts tokens `skew` seconds past their `exp` needs their entries
    // that much longer (up to MAX_POLLER_SKEW, which purging waits for).
    let skew = params
        .get("skew")
        .map(|s| decimal(s, "skew must be a number of seconds"))
        .transpose()?
        .unwrap_or(0);
    let skew = i64::try_from(skew).unwrap_or(i64::MAX).min(MAX_POLLER_SKEW);
    let page = state
        .store
        .revocations_since(since, feed, unix_now().saturating_sub(skew))
        .await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(page)).into_response())
}

/// A cursor or a number of seconds: decimal digits only (no sign, no space), within u64.
fn decimal(s: &str, bad: &'static str) -> Result<u64, ApiError> {
    let bad = ApiError::InvalidRequest(bad);
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    s.parse().map_err(|_| bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_plain_decimal_u64() {
        for (raw, want) in [
            ("0", Some(0)),
            ("12", Some(12)),
            ("007", Some(7)),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", None),
            ("", None),
            ("-1", None),
            ("+1", None),
            (" 1", None),
            ("1.0", None),
            ("abc", None),
        ] {
            assert_eq!(decimal(raw, "bad").ok(), want, "{raw:?}");
        }
    }
}
