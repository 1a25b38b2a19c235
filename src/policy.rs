//! The compiled policy: everything the filter needs to decide, as `config::compile`
//! makes it from the plugin configuration, once.

use crate::hs256::Hs256Key;
use crate::keys::{AsymAlg, KeySet};
use crate::outcome::Denials;
use crate::revocation::BeforeFirstPoll;
use crate::routes::Routes;

/// Everything the filter needs to decide, compiled from the configuration.
pub struct Policy {
    pub token: TokenPolicy,
    pub routes: Routes,
    pub forward: Forward,
    /// `Bearer realm="..."`, the start of every `WWW-Authenticate` we send.
    pub challenge: String,
    /// Every answer this configuration gives, built once.
    pub denials: Denials,
    /// Verified tokens kept per worker; 0 switches the cache off.
    pub token_cache_entries: usize,
    /// Largest form body read for a `_method` field (where one would change the rules).
    pub max_form_body_bytes: usize,
    /// The public keys of an inline JWKS (empty without asymmetric algorithms, and
    /// until the first fetch with a remote one).
    pub inline_keys: std::rc::Rc<KeySet>,
    /// Where to fetch the JWKS from, if it is remote.
    pub jwks_remote: Option<RemoteJwks>,
    /// The token service's revocation feed, if revocation is on.
    pub revocation: Option<RevocationFeed>,
}

/// The revocation feed behind an Envoy cluster, polled on a timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationFeed {
    pub cluster: String,
    /// Without a query: the cursor is appended.
    pub path: String,
    pub authority: String,
    pub poll_seconds: i64,
    pub timeout_ms: u64,
    /// Refuse tokens (503) once the last good poll is older than this; `None` keeps
    /// serving with the last set.
    pub max_stale_seconds: Option<i64>,
    pub max_entries: usize,
    pub before_first_poll: BeforeFirstPoll,
}

/// A JWKS behind an Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub refresh_seconds: i64,
    pub timeout_ms: u64,
    /// Least time between two fetches caused by unknown `kid`s.
    pub min_refetch_seconds: i64,
}

/// How tokens are verified.
pub struct TokenPolicy {
    pub issuer: String,
    /// Empty: `aud` is not checked. Otherwise the token must name one of these.
    pub audiences: Vec<String>,
    /// The HS256 key, when `HS256` is accepted.
    pub hs256_key: Option<Hs256Key>,
    /// Accepted asymmetric algorithms; their keys come from [`Policy::inline_keys`].
    pub asymmetric: Vec<AsymAlg>,
    pub clock_skew_seconds: i64,
    pub max_lifetime_seconds: i64,
    pub max_token_bytes: usize,
    pub roles_claim: String,
}

/// What goes upstream once a token is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Lower-case; every incoming header under it is removed before ours are set.
    pub header_prefix: String,
    /// (claim name, full header name), in a stable order.
    pub claims: Vec<(String, String)>,
    /// Whether the `Authorization` header goes upstream on protected routes.
    pub authorization: bool,
}
