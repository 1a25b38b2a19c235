//! What every handler shares: the store, the hasher, the issuer, the limits and the
//! counters. Built once by `serve` (or a test) and handed to [`crate::app`].

use crate::issue::Issuer;
use crate::limiter::FailureLimiter;
use crate::metrics::Metrics;
use crate::passwords::Hasher;
use crate::store::Store;

pub struct AppState {
    pub store: Store,
    pub hasher: Hasher,
    pub issuer: Issuer,
    pub refresh_ttl_seconds: i64,
    pub failures_per_user: FailureLimiter,
    pub failures_per_address: FailureLimiter,
    /// Read the client address from the last `X-Forwarded-For` entry (the one the
    /// proxy in front appended) instead of the TCP peer.
    pub trust_forwarded_for: bool,
    pub metrics: Metrics,
    /// The role an access token (and its user, now) must have for the admin API.
    pub admin_role: String,
}
