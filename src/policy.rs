//! The compiled policy: everything the filter needs to decide, as `config::compile`
//! makes it from the plugin configuration, once.

use std::rc::Rc;

use crate::claims::Pointer;
use crate::hs256::Hs256Key;
use crate::keys::{Accepted, KeySet};
use crate::outcome::Denials;
use crate::revocation::BeforeFirstPoll;
use crate::routes::Routes;

/// Everything the filter needs to decide, compiled from the configuration.
pub struct Policy {
    /// The issuers whose tokens are accepted, each with its keys and claim mapping. A
    /// token's `iss` selects exactly one; the index is the provider's id everywhere.
    pub providers: Vec<Provider>,
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
    /// Longest token looked at, in bytes (before any parsing).
    pub max_token_bytes: usize,
    /// A cookie that may carry the token, for browser apps.
    pub cookie: Option<CookieSource>,
    /// Let a CORS preflight (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`) through without a token.
    pub cors_preflight: bool,
}

impl Policy {
    /// The provider a token's `iss` names: the one with that issuer, or, for a token
    /// without `iss`, the provider whose tokens carry none.
    pub fn provider_for(&self, iss: Option<&str>) -> Option<usize> {
        self.providers
            .iter()
            .position(|p| p.token.issuer.as_deref() == iss)
    }

    /// The clock skew provider `provider` allows.
    pub fn skew_of(&self, provider: usize) -> i64 {
        self.providers
            .get(provider)
            .map_or(0, |p| p.token.clock_skew_seconds)
    }
}

/// One issuer: how its tokens are verified and read, and where its keys and
/// revocations come from.
pub struct Provider {
    /// The configuration's name for it: in rules, counters and the forwarded
    /// provider header.
    pub name: String,
    pub token: TokenPolicy,
    /// The public keys of an inline JWKS (empty without asymmetric algorithms, and
    /// until the first fetch with a remote one).
    pub inline_keys: Rc<KeySet>,
    /// Where to fetch the JWKS from, if it is remote (directly or by discovery).
    pub jwks_remote: Option<RemoteJwks>,
    /// The provider's revocation feed, if revocation is on for it.
    pub revocation: Option<RevocationFeed>,
}

/// A token in a cookie, and the origins allowed to send it on a state-changing
/// request (a browser sends cookies on cross-site requests too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieSource {
    pub name: String,
    /// `scheme://host[:port]`, exactly as browsers send `Origin`.
    pub allowed_origins: Vec<String>,
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
    /// With OIDC discovery, `path` is the discovery document's, and the JWKS is
    /// where its `jwks_uri` says (checked against this).
    pub discovery: Option<Discovery>,
}

/// What a discovery document must say to be believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// The document's `issuer` must be exactly this (OpenID Connect Discovery §4.3).
    pub issuer: String,
    /// Authorities `jwks_uri` may point at: the cluster's own, and any the
    /// configuration names. The JWKS is fetched through the same cluster.
    pub jwks_authorities: Vec<String>,
}

/// How one provider's tokens are verified and read.
pub struct TokenPolicy {
    /// `None`: the provider's tokens carry no `iss` (HS256 only, never the default).
    pub issuer: Option<String>,
    /// Empty: the audience is not checked. Otherwise the token must name one of these.
    pub audiences: Vec<String>,
    /// The claim that holds the audience (`aud`; Cognito access tokens: `client_id`).
    pub audience_claim: String,
    /// The HS256 key, when `HS256` is accepted.
    pub hs256_key: Option<Hs256Key>,
    /// Accepted asymmetric algorithms; their keys come from [`Provider::inline_keys`]
    /// or the remote JWKS.
    pub asymmetric: Accepted,
    pub clock_skew_seconds: i64,
    pub max_lifetime_seconds: i64,
    /// The claim that names the subject (`sub`).
    pub subject_claim: String,
    /// Where the roles are; the values of every pointer are merged.
    pub roles: Vec<Pointer>,
}

/// What goes upstream once a token is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Lower-case; every incoming header under it is removed before ours are set.
    pub header_prefix: String,
    /// (what, full header name), in a stable order.
    pub claims: Vec<(ForwardSource, String)>,
    /// Whether the `Authorization` header goes upstream on protected routes.
    pub authorization: bool,
    /// The header that names the provider (full name), if any.
    pub provider_header: Option<String>,
    /// The header that carries the whole verified payload as base64url JSON, if any.
    pub payload_header: Option<String>,
}

/// What a forwarded header holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardSource {
    /// The subject (the provider's subject claim).
    Subject,
    /// The roles, merged from the provider's role pointers.
    Roles,
    /// A claim, at any depth.
    Claim(Pointer),
}
