//! The plugin configuration (JSON) and its compilation into a [`Policy`].
//!
//! Compiled once in `on_configure`; any error names the field it is about, and the
//! filter is then refused (fail closed). Unknown fields are errors, so a typo cannot
//! silently drop a check.

use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;

use serde::Deserialize;
use serde_json::Value;

use crate::claims::Pointer;
use crate::hs256::Hs256Key;
use crate::keys::{parse_jwks, Accepted, AsymAlg, KeySet};
use crate::outcome::Denials;
use crate::path::{canonical_method, canonical_path};
use crate::policy::{
    CookieSource, Discovery, Forward, ForwardSource, Policy, Provider, RemoteJwks, RevocationFeed,
    TokenPolicy,
};
use crate::revocation::BeforeFirstPoll;
use crate::routes::{Condition, PathPattern, Requirement, Routes, Rule, Segment};

/// The signature algorithms Gatehouse can verify. The configuration must name the
/// ones it accepts; the token's `alg` is only ever compared with that list.
pub const SUPPORTED_ALGORITHMS: [&str; 7] = ["HS256", "EdDSA", "Ed25519", "ES256", "ES384", "RS256", "PS256"];

/// Shortest HMAC secret accepted, in bytes of entropy (RFC 7518 §3.2: at least the
/// hash output size).
pub const MIN_SECRET_BYTES: usize = 32;

/// The name of the one provider of a configuration written without `providers`.
pub const DEFAULT_PROVIDER: &str = "default";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// The single issuer of a configuration without `providers` (and the fields up to
    /// `revocation`, which then describe it).
    issuer: Option<String>,
    audiences: Option<Vec<String>>,
    algorithms: Option<Vec<String>>,
    hmac_secret: Option<RawSecret>,
    jwks: Option<RawJwks>,
    clock_skew_seconds: Option<u32>,
    max_token_lifetime_seconds: Option<u32>,
    roles_claim: Option<String>,
    revocation: Option<RawRevocation>,
    /// Name -> issuer.
    providers: Option<BTreeMap<String, RawProvider>>,
    #[serde(default = "defaults::max_token_bytes")]
    max_token_bytes: u32,
    #[serde(default = "defaults::max_form_body_bytes")]
    max_form_body_bytes: u32,
    #[serde(default = "defaults::realm")]
    realm: String,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default = "defaults::no_match")]
    no_match: RawRequire,
    forward: Option<RawForward>,
    #[serde(default)]
    token_cache: RawCache,
    cookie: Option<RawCookie>,
    #[serde(default)]
    cors_preflight: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    issuer: Option<String>,
    /// The FastAPI guide's tokens have no `iss`: a provider may say its tokens carry
    /// none (HS256 with its secret only).
    #[serde(default)]
    tokens_without_issuer: bool,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default = "defaults::audience_claim")]
    audience_claim: String,
    /// Absent: every asymmetric algorithm (each key pinned to its own), plus HS256
    /// when `hmac_secret` is given.
    algorithms: Option<Vec<String>>,
    rsa_keys_without_alg: Option<String>,
    hmac_secret: Option<RawSecret>,
    jwks: Option<RawJwks>,
    #[serde(default = "defaults::clock_skew")]
    clock_skew_seconds: u32,
    #[serde(default = "defaults::max_lifetime")]
    max_token_lifetime_seconds: u32,
    roles: Option<RawPointers>,
    #[serde(default = "defaults::subject_claim")]
    subject_claim: String,
    revocation: Option<RawRevocation>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawPointers {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCookie {
    name: String,
    #[serde(default)]
    allowed_origins: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRevocation {
    cluster: String,
    #[serde(default = "defaults::revocation_path")]
    path: String,
    authority: Option<String>,
    #[serde(default = "defaults::revocation_poll")]
    poll_seconds: u32,
    #[serde(default = "defaults::jwks_timeout")]
    timeout_ms: u32,
    /// Absent: keep serving with the last set however old it is.
    max_stale_seconds: Option<u32>,
    #[serde(default = "defaults::revocation_max_entries")]
    max_entries: u32,
    #[serde(default)]
    before_first_poll: RawBeforeFirstPoll,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawBeforeFirstPoll {
    #[default]
    Refuse,
    Allow,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    #[serde(default = "defaults::cache_entries")]
    max_entries: u32,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            max_entries: defaults::cache_entries(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    env: String,
    #[serde(default)]
    hex_decode: bool,
}

/// Where the public keys come from.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RawJwks {
    /// A JWKS document written into the configuration.
    Inline(serde_json::Value),
    /// A JWKS fetched through an Envoy cluster, refreshed on a timer.
    Remote(RawRemote),
    /// The issuer's OpenID configuration, fetched through an Envoy cluster, names the
    /// JWKS (`jwks_uri`); both are refreshed on the timer.
    Discovery(RawDiscovery),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemote {
    cluster: String,
    #[serde(default = "defaults::jwks_path")]
    path: String,
    authority: Option<String>,
    #[serde(default = "defaults::jwks_refresh")]
    refresh_seconds: u32,
    #[serde(default = "defaults::jwks_timeout")]
    timeout_ms: u32,
    #[serde(default = "defaults::jwks_min_refetch")]
    min_refetch_seconds: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscovery {
    cluster: String,
    /// Absent: the issuer URL's authority.
    authority: Option<String>,
    #[serde(default = "defaults::jwks_refresh")]
    refresh_seconds: u32,
    #[serde(default = "defaults::jwks_timeout")]
    timeout_ms: u32,
    #[serde(default = "defaults::jwks_min_refetch")]
    min_refetch_seconds: u32,
    /// Other authorities `jwks_uri` may name (fetched through the same cluster).
    #[serde(default)]
    jwks_authorities: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    path: Option<String>,
    prefix: Option<String>,
    methods: Option<Vec<String>>,
    require: RawRequire,
    #[serde(default)]
    forward_authorization: bool,
    providers: Option<Vec<String>>,
    claims: Option<BTreeMap<String, RawCondition>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RawCondition {
    Equals(Value),
    AnyOf(Vec<Value>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawRequire {
    Public,
    Optional,
    Authenticated,
    Deny,
    AnyOf(Vec<String>),
    AllOf(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForward {
    #[serde(default = "defaults::header_prefix")]
    header_prefix: String,
    /// Claim name or JSON Pointer (or `$subject`, `$roles`) -> header name suffix.
    /// `None` means the defaults.
    claims: Option<BTreeMap<String, String>>,
    #[serde(default)]
    authorization: bool,
    /// The suffix of the header naming the provider; `None`: `provider` with
    /// `providers`, none without.
    provider: Option<RawSwitch>,
    /// The suffix of the header with the whole verified payload (base64url JSON).
    payload: Option<String>,
}

/// A header suffix, or `false` for none.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSwitch {
    Suffix(String),
    Off(bool),
}

mod defaults {
    use super::RawRequire;
    pub fn clock_skew() -> u32 {
        60
    }
    pub fn max_lifetime() -> u32 {
        24 * 3600
    }
    pub fn max_token_bytes() -> u32 {
        8 * 1024
    }
    pub fn max_form_body_bytes() -> u32 {
        64 * 1024
    }
    pub fn roles_claim() -> String {
        gatehouse_claims::ROLES_CLAIM.into()
    }
    pub fn audience_claim() -> String {
        "aud".into()
    }
    pub fn subject_claim() -> String {
        "sub".into()
    }
    pub fn realm() -> String {
        "gatehouse".into()
    }
    pub fn no_match() -> RawRequire {
        RawRequire::Authenticated
    }
    pub fn header_prefix() -> String {
        "x-auth-".into()
    }
    pub fn cache_entries() -> u32 {
        4096
    }
    pub fn jwks_path() -> String {
        "/.well-known/jwks.json".into()
    }
    pub fn jwks_refresh() -> u32 {
        300
    }
    pub fn jwks_timeout() -> u32 {
        2000
    }
    pub fn jwks_min_refetch() -> u32 {
        10
    }
    pub fn revocation_path() -> String {
        "/revocations".into()
    }
    pub fn revocation_poll() -> u32 {
        2
    }
    pub fn revocation_max_entries() -> u32 {
        100_000
    }
}

/// A configuration error: the field it is about and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

/// Parses and compiles the plugin configuration. `env` reads the VM's environment
/// (the HMAC secret arrives that way, never inside the configuration).
pub fn compile(json: &[u8], env: impl Fn(&str) -> Option<String>) -> Result<Policy, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let mut raw: RawConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        // An unknown member named "" at the top has the empty path (found by fuzzing).
        let field = if path.is_empty() || path == "." || path == "?" {
            "configuration".to_string()
        } else {
            path
        };
        err(field, e.into_inner().to_string())
    })?;
    de.end().map_err(|e| err("configuration", e.to_string()))?;

    let legacy = raw.providers.is_none();
    let raw_providers = match raw.providers.take() {
        Some(map) => {
            let single_issuer_fields = [
                ("issuer", raw.issuer.is_some()),
                ("audiences", raw.audiences.is_some()),
                ("algorithms", raw.algorithms.is_some()),
                ("hmac_secret", raw.hmac_secret.is_some()),
                ("jwks", raw.jwks.is_some()),
                ("clock_skew_seconds", raw.clock_skew_seconds.is_some()),
                (
                    "max_token_lifetime_seconds",
                    raw.max_token_lifetime_seconds.is_some(),
                ),
                ("roles_claim", raw.roles_claim.is_some()),
                ("revocation", raw.revocation.is_some()),
            ];
            if let Some((field, _)) = single_issuer_fields.iter().find(|(_, given)| *given) {
                return Err(err(*field, "belongs inside a provider when `providers` is used"));
            }
            if map.is_empty() {
                return Err(err("providers", "must name at least one provider"));
            }
            map.into_iter()
                .map(|(name, p)| {
                    let field = format!("providers.{name}.");
                    (name, field, p)
                })
                .collect::<Vec<_>>()
        }
        None => vec![(
            DEFAULT_PROVIDER.to_string(),
            String::new(),
            single_issuer(&mut raw)?,
        )],
    };

    let mut providers: Vec<Provider> = Vec::with_capacity(raw_providers.len());
    for (name, field, p) in &raw_providers {
        if !legacy && !is_provider_name(name) {
            return Err(err(
                format!("providers.{name}"),
                "a provider name must be 1 to 64 lower-case letters, digits, `_` or `-` (it names counters and a header value)",
            ));
        }
        let provider = compile_provider(name, field, p, legacy, &env)?;
        if let Some(other) = providers.iter().find(|o| o.token.issuer == provider.token.issuer) {
            return Err(err(
                format!("{field}issuer"),
                format!(
                    "provider {} has the same issuer: a token's iss must select exactly one provider",
                    other.name
                ),
            ));
        }
        providers.push(provider);
    }
    let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();

    if raw.max_token_bytes < 64 {
        return Err(err("max_token_bytes", "must be at least 64"));
    }
    if !(1..=1024 * 1024).contains(&raw.max_form_body_bytes) {
        return Err(err(
            "max_form_body_bytes",
            "must be between 1 and 1048576 (Envoy buffers at most 1 MiB of a request by default)",
        ));
    }
    if raw.realm.is_empty()
        || !raw
            .realm
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        return Err(err(
            "realm",
            "must be printable ASCII without quotes or backslashes",
        ));
    }

    let rules = raw
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| compile_rule(r, &format!("rules[{i}]"), &names))
        .collect::<Result<Vec<_>, _>>()?;
    let no_match = compile_require(&raw.no_match, "no_match")?;
    let legacy_roles = legacy.then(|| raw.roles_claim.clone().unwrap_or_else(defaults::roles_claim));
    let forward = compile_forward(raw.forward.as_ref(), legacy_roles.as_deref())?;
    let cookie = raw.cookie.as_ref().map(compile_cookie).transpose()?;
    let routes = Routes { rules, no_match };
    let challenge = format!("Bearer realm=\"{}\"", raw.realm);

    Ok(Policy {
        providers,
        denials: Denials::new(&challenge, &routes),
        routes,
        forward,
        challenge,
        token_cache_entries: usize::try_from(raw.token_cache.max_entries).unwrap_or(usize::MAX),
        max_form_body_bytes: usize::try_from(raw.max_form_body_bytes).unwrap_or(usize::MAX),
        max_token_bytes: usize::try_from(raw.max_token_bytes).unwrap_or(usize::MAX),
        cookie,
        cors_preflight: raw.cors_preflight,
    })
}

/// The one provider of a configuration without `providers`, from its top-level fields.
fn single_issuer(raw: &mut RawConfig) -> Result<RawProvider, ConfigError> {
    let Some(issuer) = raw.issuer.take() else {
        return Err(err(
            "issuer",
            "is required (or name several issuers under `providers`)",
        ));
    };
    let Some(algorithms) = raw.algorithms.take() else {
        return Err(err("algorithms", "is required"));
    };
    let roles_claim = raw.roles_claim.clone().unwrap_or_else(defaults::roles_claim);
    if roles_claim.is_empty() {
        return Err(err("roles_claim", "must not be empty"));
    }
    Ok(RawProvider {
        issuer: Some(issuer),
        tokens_without_issuer: false,
        audiences: raw.audiences.take().unwrap_or_default(),
        audience_claim: defaults::audience_claim(),
        algorithms: Some(algorithms),
        rsa_keys_without_alg: None,
        hmac_secret: raw.hmac_secret.take(),
        jwks: raw.jwks.take(),
        clock_skew_seconds: raw.clock_skew_seconds.unwrap_or_else(defaults::clock_skew),
        max_token_lifetime_seconds: raw
            .max_token_lifetime_seconds
            .unwrap_or_else(defaults::max_lifetime),
        // A claim name, not a pointer: `/` in it is part of the name.
        roles: Some(RawPointers::One(Pointer::claim(&roles_claim).text)),
        subject_claim: defaults::subject_claim(),
        revocation: raw.revocation.take(),
    })
}

fn is_provider_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn compile_provider(
    name: &str,
    field: &str,
    raw: &RawProvider,
    legacy: bool,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Provider, ConfigError> {
    let f = |name: &str| format!("{field}{name}");
    let issuer = match (&raw.issuer, raw.tokens_without_issuer) {
        (Some(i), false) if !i.is_empty() => Some(i.clone()),
        (Some(_), false) => return Err(err(f("issuer"), "must not be empty")),
        (Some(_), true) => return Err(err(f("tokens_without_issuer"), "cannot be combined with issuer")),
        (None, true) => None,
        (None, false) => {
            return Err(err(
                f("issuer"),
                "is required (or tokens_without_issuer, for tokens that carry no iss)",
            ))
        }
    };
    for (i, aud) in raw.audiences.iter().enumerate() {
        if aud.is_empty() {
            return Err(err(format!("{field}audiences[{i}]"), "must not be empty"));
        }
    }
    if raw.audience_claim.is_empty() {
        return Err(err(f("audience_claim"), "must not be empty"));
    }
    if raw.subject_claim.is_empty() {
        return Err(err(f("subject_claim"), "must not be empty"));
    }
    let (hs256_key, asymmetric) = compile_algorithms(field, raw, env)?;
    if issuer.is_none() && (!asymmetric.is_empty() || hs256_key.is_none()) {
        return Err(err(
            f("tokens_without_issuer"),
            "is for HS256 only, with the provider's hmac_secret: a published key cannot tell one issuer's tokens from another's",
        ));
    }
    let (inline_keys, jwks_remote) = compile_jwks(field, raw.jwks.as_ref(), &asymmetric, issuer.as_deref())?;
    if raw.max_token_lifetime_seconds == 0 {
        return Err(err(f("max_token_lifetime_seconds"), "must be at least 1"));
    }
    let roles = match &raw.roles {
        None => vec![Pointer::claim(&defaults::roles_claim())],
        Some(RawPointers::One(p)) => vec![Pointer::parse(p).map_err(|e| err(f("roles"), e))?],
        Some(RawPointers::Many(list)) if list.is_empty() => {
            return Err(err(f("roles"), "must name at least one JSON Pointer"))
        }
        Some(RawPointers::Many(list)) => list
            .iter()
            .enumerate()
            .map(|(i, p)| Pointer::parse(p).map_err(|e| err(format!("{field}roles[{i}]"), e)))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let revocation = raw
        .revocation
        .as_ref()
        .map(|r| compile_revocation(r, &f("revocation")))
        .transpose()?;
    let _ = legacy;
    Ok(Provider {
        name: name.to_string(),
        token: TokenPolicy {
            issuer,
            audiences: raw.audiences.clone(),
            audience_claim: raw.audience_claim.clone(),
            hs256_key,
            asymmetric,
            clock_skew_seconds: i64::from(raw.clock_skew_seconds),
            max_lifetime_seconds: i64::from(raw.max_token_lifetime_seconds),
            subject_claim: raw.subject_claim.clone(),
            roles,
        },
        inline_keys: Rc::new(inline_keys),
        jwks_remote,
        revocation,
    })
}

fn compile_cookie(raw: &RawCookie) -> Result<CookieSource, ConfigError> {
    // RFC 6265 §4.1.1: a cookie name is an HTTP token.
    let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if raw.name.is_empty() || !raw.name.bytes().all(token_char) {
        return Err(err(
            "cookie.name",
            "must be a cookie name (letters, digits and !#$%&'*+-.^_`|~)",
        ));
    }
    for (i, origin) in raw.allowed_origins.iter().enumerate() {
        let ok = match origin.split_once("://") {
            Some((scheme, host)) => {
                (scheme == "https" || scheme == "http")
                    && !host.is_empty()
                    && !host.contains(['/', '?', '#', ' '])
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase())
            }
            None => false,
        };
        if !ok {
            return Err(err(
                format!("cookie.allowed_origins[{i}]"),
                format!("`{origin}` is not an origin as browsers send it: lower-case `https://host[:port]`, no path"),
            ));
        }
    }
    Ok(CookieSource {
        name: raw.name.clone(),
        allowed_origins: raw.allowed_origins.clone(),
    })
}

fn compile_revocation(r: &RawRevocation, field: &str) -> Result<RevocationFeed, ConfigError> {
    let f = |name: &str| format!("{field}.{name}");
    if r.cluster.is_empty() {
        return Err(err(f("cluster"), "must name an Envoy cluster"));
    }
    if !r.path.starts_with('/') || r.path.contains(['?', '#']) {
        return Err(err(
            f("path"),
            "must start with / and have no query (the filter adds its cursor)",
        ));
    }
    if !(1..=3600).contains(&r.poll_seconds) {
        return Err(err(f("poll_seconds"), "must be between 1 and 3600"));
    }
    if !(100..=60_000).contains(&r.timeout_ms) {
        return Err(err(f("timeout_ms"), "must be between 100 and 60000"));
    }
    if let Some(stale) = r.max_stale_seconds {
        if stale < r.poll_seconds.saturating_mul(2) {
            return Err(err(
                f("max_stale_seconds"),
                "must be at least twice poll_seconds, or one late poll refuses every token",
            ));
        }
    }
    if r.max_entries == 0 {
        return Err(err(f("max_entries"), "must be at least 1"));
    }
    Ok(RevocationFeed {
        cluster: r.cluster.clone(),
        path: r.path.clone(),
        authority: r.authority.clone().unwrap_or_else(|| r.cluster.clone()),
        poll_seconds: i64::from(r.poll_seconds),
        timeout_ms: u64::from(r.timeout_ms),
        max_stale_seconds: r.max_stale_seconds.map(i64::from),
        max_entries: usize::try_from(r.max_entries).unwrap_or(usize::MAX),
        before_first_poll: match r.before_first_poll {
            RawBeforeFirstPoll::Refuse => BeforeFirstPoll::Refuse,
            RawBeforeFirstPoll::Allow => BeforeFirstPoll::Allow,
        },
    })
}

fn compile_algorithms(
    field: &str,
    raw: &RawProvider,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(Option<Hs256Key>, Accepted), ConfigError> {
    let f = |name: &str| format!("{field}{name}");
    let secret = raw.hmac_secret.as_ref();
    let defaulted = raw.algorithms.is_none();
    let algorithms: Vec<String> = match &raw.algorithms {
        Some(list) => list.clone(),
        None => {
            // Every key is pinned to its own algorithm, so accepting each asymmetric
            // one a key may have is safe; HMAC only with the provider's own secret.
            let mut list = Vec::new();
            if secret.is_some() {
                list.push("HS256".to_string());
            }
            if raw.jwks.is_some() {
                list.extend(AsymAlg::ALL.iter().map(|a| a.name().to_string()));
            }
            if list.is_empty() {
                return Err(err(
                    f("jwks"),
                    "a provider needs keys: jwks (inline, remote or discovery) or hmac_secret",
                ));
            }
            list
        }
    };
    if algorithms.is_empty() {
        return Err(err(f("algorithms"), "must name at least one algorithm"));
    }
    let mut asymmetric = Vec::new();
    for (i, alg) in algorithms.iter().enumerate() {
        if !SUPPORTED_ALGORITHMS.contains(&alg.as_str()) {
            return Err(err(
                format!("{field}algorithms[{i}]"),
                format!(
                    "`{alg}` is not supported (supported: {})",
                    SUPPORTED_ALGORITHMS.join(", ")
                ),
            ));
        }
        if let Some(a) = AsymAlg::from_name(alg) {
            if !asymmetric.contains(&a) {
                asymmetric.push(a);
            }
        }
    }
    let rsa: Vec<AsymAlg> = asymmetric.iter().copied().filter(|a| a.is_rsa()).collect();
    let rsa_without_alg = match &raw.rsa_keys_without_alg {
        Some(name) => match AsymAlg::from_name(name).filter(|a| rsa.contains(a)) {
            Some(a) => Some(a),
            None => {
                return Err(err(
                    f("rsa_keys_without_alg"),
                    format!("`{name}` must be an RSA algorithm the provider accepts (RS256 or PS256)"),
                ))
            }
        },
        None if defaulted => Some(AsymAlg::Rs256),
        None => match rsa.as_slice() {
            [] => None,
            [one] => Some(*one),
            _ => {
                return Err(err(
                    f("rsa_keys_without_alg"),
                    "is required when algorithms accept both RS256 and PS256: an RSA key without alg could be either, so say which (RS256 or PS256)",
                ))
            }
        },
    };
    let accepted = Accepted::new(asymmetric, rsa_without_alg);
    if !algorithms.iter().any(|a| a == "HS256") {
        if secret.is_some() {
            return Err(err(
                f("hmac_secret"),
                "is given but algorithms does not include HS256",
            ));
        }
        return Ok((None, accepted));
    }
    Ok((Some(compile_secret(field, secret, env)?), accepted))
}

/// An `http(s)://authority/path` URL, split.
fn split_url(url: &str) -> Option<(&str, &str)> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    (!authority.is_empty() && !url.contains(['?', '#', ' '])).then_some((authority, path))
}

fn compile_jwks(
    field: &str,
    jwks: Option<&RawJwks>,
    accepted: &Accepted,
    issuer: Option<&str>,
) -> Result<(KeySet, Option<RemoteJwks>), ConfigError> {
    let f = |name: &str| format!("{field}{name}");
    let check_fetch = |what: &str, cluster: &str, refresh: u32, timeout: u32, min_refetch: u32| {
        if cluster.is_empty() {
            return Err(err(
                f(&format!("jwks.{what}.cluster")),
                "must name an Envoy cluster",
            ));
        }
        if refresh < 5 {
            return Err(err(
                f(&format!("jwks.{what}.refresh_seconds")),
                "must be at least 5",
            ));
        }
        if !(100..=60_000).contains(&timeout) {
            return Err(err(
                f(&format!("jwks.{what}.timeout_ms")),
                "must be between 100 and 60000",
            ));
        }
        if min_refetch < 1 {
            return Err(err(
                f(&format!("jwks.{what}.min_refetch_seconds")),
                "must be at least 1",
            ));
        }
        Ok(())
    };
    match (jwks, accepted.is_empty()) {
        (None, true) => Ok((KeySet::default(), None)),
        (None, false) => Err(err(
            f("jwks"),
            "is required when algorithms include an asymmetric one (EdDSA, Ed25519, ES256, ES384, RS256, PS256)",
        )),
        (Some(_), true) => Err(err(f("jwks"), "is given but algorithms has no asymmetric algorithm")),
        (Some(RawJwks::Inline(doc)), false) => {
            let text = doc.to_string();
            let parsed = parse_jwks(text.as_bytes(), accepted).map_err(|e| err(f("jwks.inline"), e))?;
            if let Some(why) = parsed.invalid.first() {
                return Err(err(f("jwks.inline"), why.clone()));
            }
            if parsed.keys.is_empty() {
                let why = parsed
                    .other_algorithms
                    .first()
                    .map_or(String::new(), |w| format!(" ({w})"));
                return Err(err(f("jwks.inline"), format!("has no key for the accepted algorithms{why}")));
            }
            Ok((parsed.keys, None))
        }
        (Some(RawJwks::Remote(r)), false) => {
            check_fetch("remote", &r.cluster, r.refresh_seconds, r.timeout_ms, r.min_refetch_seconds)?;
            if !r.path.starts_with('/') {
                return Err(err(f("jwks.remote.path"), "must start with /"));
            }
            let remote = RemoteJwks {
                authority: r.authority.clone().unwrap_or_else(|| r.cluster.clone()),
                cluster: r.cluster.clone(),
                path: r.path.clone(),
                refresh_seconds: i64::from(r.refresh_seconds),
                timeout_ms: u64::from(r.timeout_ms),
                min_refetch_seconds: i64::from(r.min_refetch_seconds),
                discovery: None,
            };
            Ok((KeySet::default(), Some(remote)))
        }
        (Some(RawJwks::Discovery(d)), false) => {
            check_fetch("discovery", &d.cluster, d.refresh_seconds, d.timeout_ms, d.min_refetch_seconds)?;
            let issuer = issuer.unwrap_or_default();
            let Some((issuer_authority, issuer_path)) = split_url(issuer) else {
                return Err(err(
                    f("issuer"),
                    "must be an http(s) URL without query or fragment for OIDC discovery",
                ));
            };
            let authority = d.authority.clone().unwrap_or_else(|| issuer_authority.to_string());
            for (i, a) in d.jwks_authorities.iter().enumerate() {
                if a.is_empty() || a.contains(['/', ' ', '?', '#']) {
                    return Err(err(
                        format!("{field}jwks.discovery.jwks_authorities[{i}]"),
                        "must be a host[:port]",
                    ));
                }
            }
            let mut jwks_authorities = vec![authority.clone()];
            jwks_authorities.extend(d.jwks_authorities.iter().cloned());
            // OpenID Connect Discovery §4: the issuer without its trailing slash, then
            // the well-known suffix.
            let path = format!(
                "{}/.well-known/openid-configuration",
                issuer_path.trim_end_matches('/')
            );
            let remote = RemoteJwks {
                authority,
                cluster: d.cluster.clone(),
                path,
                refresh_seconds: i64::from(d.refresh_seconds),
                timeout_ms: u64::from(d.timeout_ms),
                min_refetch_seconds: i64::from(d.min_refetch_seconds),
                discovery: Some(Discovery {
                    issuer: issuer.to_string(),
                    jwks_authorities,
                }),
            };
            Ok((KeySet::default(), Some(remote)))
        }
    }
}

/// The HMAC key from the VM environment.
fn compile_secret(
    field: &str,
    secret: Option<&RawSecret>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Hs256Key, ConfigError> {
    let f = |name: &str| format!("{field}{name}");
    let secret = secret.ok_or_else(|| err(f("hmac_secret"), "is required when algorithms include HS256"))?;
    if secret.env.is_empty() {
        return Err(err(f("hmac_secret.env"), "must name an environment variable"));
    }
    // The value is never echoed: only its name and what is wrong with it.
    let value = env(&secret.env).ok_or_else(|| {
        err(
            f("hmac_secret.env"),
            format!(
                "environment variable {} is not set in the Wasm VM (pass it with vm_config.environment_variables.host_env_keys)",
                secret.env
            ),
        )
    })?;
    let value = value.trim();
    let decoded = hex::decode(value).map_err(|_| {
        err(
            f("hmac_secret.env"),
            format!(
                "{} must be hex-encoded (for example `openssl rand -hex 32`)",
                secret.env
            ),
        )
    })?;
    if decoded.len() < MIN_SECRET_BYTES {
        return Err(err(
            f("hmac_secret.env"),
            format!(
                "{} must hold at least {MIN_SECRET_BYTES} bytes ({} hex digits)",
                secret.env,
                2 * MIN_SECRET_BYTES
            ),
        ));
    }
    Ok(if secret.hex_decode {
        Hs256Key::new(&decoded)
    } else {
        Hs256Key::new(value.as_bytes())
    })
}

fn compile_rule(raw: &RawRule, field: &str, providers: &[&str]) -> Result<Rule, ConfigError> {
    let pattern = match (&raw.path, &raw.prefix) {
        (Some(path), None) => compile_path(path, &format!("{field}.path"), false)?,
        (None, Some(prefix)) => compile_path(prefix, &format!("{field}.prefix"), true)?,
        _ => return Err(err(field, "needs exactly one of `path` or `prefix`")),
    };
    let methods = match &raw.methods {
        None => None,
        Some(list) if list.is_empty() => {
            return Err(err(
                format!("{field}.methods"),
                "must not be empty (omit it to match every method)",
            ))
        }
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(i, m)| {
                    canonical_method(m.as_bytes()).ok_or_else(|| {
                        err(
                            format!("{field}.methods[{i}]"),
                            format!("`{m}` is not an HTTP method token"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let require = compile_require(&raw.require, &format!("{field}.require"))?;
    let token_needed = !matches!(require, Requirement::Public | Requirement::Deny);
    let accepted = match &raw.providers {
        None => None,
        Some(list) if list.is_empty() => {
            return Err(err(
                format!("{field}.providers"),
                "must name at least one provider (omit it to accept every provider)",
            ))
        }
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(i, name)| {
                    providers.iter().position(|p| p == name).ok_or_else(|| {
                        err(
                            format!("{field}.providers[{i}]"),
                            format!(
                                "`{name}` is not a configured provider (known: {})",
                                providers.join(", ")
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let mut claims = Vec::new();
    for (pointer, condition) in raw.claims.iter().flatten() {
        let cfield = format!("{field}.claims.{pointer}");
        let pointer = Pointer::parse(pointer).map_err(|e| err(&cfield, e))?;
        if pointer
            .first()
            .is_some_and(|c| ["exp", "nbf", "iat"].contains(&c))
        {
            return Err(err(
                &cfield,
                "the token's times are checked by the clock rules (clock_skew_seconds, max_token_lifetime_seconds), not by claim conditions",
            ));
        }
        let condition = match condition {
            RawCondition::Equals(v) => Condition::Equals(v.clone()),
            RawCondition::AnyOf(list) if list.is_empty() => {
                return Err(err(format!("{cfield}.any_of"), "must list at least one value"))
            }
            RawCondition::AnyOf(list) => Condition::AnyOf(list.clone()),
        };
        claims.push((pointer, condition));
    }
    if !token_needed && (accepted.is_some() || !claims.is_empty()) {
        return Err(err(
            field,
            "`providers` and `claims` need a token: they cannot go with require public or deny",
        ));
    }
    Ok(Rule {
        pattern,
        methods,
        require,
        forward_authorization: raw.forward_authorization,
        providers: accepted,
        claims,
    })
}

/// A pattern must already be canonical, so it can be compared with canonical paths.
fn compile_path(pattern: &str, field: &str, is_prefix: bool) -> Result<PathPattern, ConfigError> {
    let canonical = canonical_path(pattern.as_bytes()).map_err(|why| {
        err(field, format!("`{pattern}` is not a canonical path ({why:?}); write it as it reaches Envoy after normalisation"))
    })?;
    if canonical != pattern || pattern.contains('?') {
        return Err(err(
            field,
            format!("`{pattern}` is not canonical; write `{canonical}`"),
        ));
    }
    // In canonical form only a space and bytes beyond ASCII are still escaped.
    let non_ascii = pattern
        .match_indices('%')
        .any(|(i, _)| pattern.get(i + 1..i + 2).is_some_and(|h| "89ABCDEF".contains(h)));
    if non_ascii {
        return Err(err(
            field,
            format!(
                "`{pattern}` names characters beyond ASCII: case-insensitive routers (ASP.NET Core) fold \
                 their case (`%C3%89` is `%C3%A9` to them) and the filter folds only ASCII, so the rule \
                 would miss the other spellings; cover such paths with a prefix or a `{{placeholder}}`"
            ),
        ));
    }
    let trimmed = match pattern.strip_suffix('/') {
        Some(t) if !t.is_empty() => t,
        _ => pattern,
    };
    if is_prefix {
        if trimmed.contains(['{', '}']) {
            return Err(err(field, "a prefix cannot hold `{placeholders}`"));
        }
        return Ok(PathPattern::Prefix(trimmed.to_string()));
    }
    if trimmed != pattern {
        return Err(err(
            field,
            format!("`{pattern}` ends with `/`; trailing slashes are matched either way, write `{trimmed}`"),
        ));
    }
    if !pattern.contains(['{', '}']) {
        return Ok(PathPattern::Exact(pattern.to_string()));
    }
    let segments = pattern
        .split('/')
        .skip(1)
        .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name)
                if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                Ok(Segment::Param)
            }
            Some(_) => Err(err(
                field,
                format!("placeholder `{s}` must be `{{name}}` with letters, digits or `_`"),
            )),
            None if s.contains(['{', '}']) => Err(err(
                field,
                format!("`{s}`: a placeholder must be a whole segment"),
            )),
            None => Ok(Segment::Literal(s.to_string())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PathPattern::Template(segments))
}

fn compile_require(raw: &RawRequire, field: &str) -> Result<Requirement, ConfigError> {
    let roles = |list: &[String], which: &str| -> Result<Vec<String>, ConfigError> {
        if list.is_empty() {
            return Err(err(format!("{field}.{which}"), "must name at least one role"));
        }
        for (i, role) in list.iter().enumerate() {
            if role.is_empty() || role.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(err(
                    format!("{field}.{which}[{i}]"),
                    "a role must be non-empty, without spaces or control characters",
                ));
            }
        }
        Ok(list.to_vec())
    };
    Ok(match raw {
        RawRequire::Public => Requirement::Public,
        RawRequire::Optional => Requirement::Optional,
        RawRequire::Authenticated => Requirement::Authenticated,
        RawRequire::Deny => Requirement::Deny,
        RawRequire::AnyOf(list) => Requirement::AnyOf(roles(list, "any_of")?),
        RawRequire::AllOf(list) => Requirement::AllOf(roles(list, "all_of")?),
    })
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn compile_forward(raw: Option<&RawForward>, legacy_roles: Option<&str>) -> Result<Forward, ConfigError> {
    let prefix = raw.map_or_else(defaults::header_prefix, |r| r.header_prefix.clone());
    if !is_header_name(&prefix) || !prefix.ends_with('-') || prefix.len() < 3 {
        return Err(err(
            "forward.header_prefix",
            "must be lower-case letters, digits and `-`, at least 3 characters, ending with `-` (such as `x-auth-`)",
        ));
    }
    let suffix_ok = |s: &str| is_header_name(s) && !s.starts_with('-') && !s.ends_with('-');
    let mut headers: Vec<String> = Vec::new();
    let mut header = |field: String, suffix: &str| -> Result<String, ConfigError> {
        if !suffix_ok(suffix) {
            return Err(err(
                field,
                format!("`{suffix}` must be lower-case letters, digits and inner `-`"),
            ));
        }
        let name = format!("{prefix}{suffix}");
        if headers.contains(&name) {
            return Err(err(field, format!("header `{name}` is used twice")));
        }
        headers.push(name.clone());
        Ok(name)
    };
    let mut claims = Vec::new();
    match raw.and_then(|r| r.claims.as_ref()) {
        None => {
            claims.push((ForwardSource::Subject, header("forward.claims".into(), "sub")?));
            claims.push((ForwardSource::Roles, header("forward.claims".into(), "roles")?));
        }
        Some(map) => {
            for (claim, suffix) in map {
                let field = format!("forward.claims.{claim}");
                if claim.is_empty() {
                    return Err(err("forward.claims", "claim names must not be empty"));
                }
                let source = match claim.as_str() {
                    "$subject" => ForwardSource::Subject,
                    "$roles" => ForwardSource::Roles,
                    c if Some(c) == legacy_roles => ForwardSource::Roles,
                    c if c.starts_with('/') => {
                        ForwardSource::Claim(Pointer::parse(c).map_err(|e| err(&field, e))?)
                    }
                    c if c.starts_with('$') => {
                        return Err(err(
                            field,
                            "the names starting with `$` are `$subject` and `$roles`",
                        ))
                    }
                    c => ForwardSource::Claim(Pointer::claim(c)),
                };
                claims.push((source, header(field, suffix)?));
            }
        }
    }
    let provider_header = match raw.and_then(|r| r.provider.as_ref()) {
        None if legacy_roles.is_some() => None,
        None => Some(header("forward.provider".into(), "provider")?),
        Some(RawSwitch::Off(false)) => None,
        Some(RawSwitch::Off(true)) => Some(header("forward.provider".into(), "provider")?),
        Some(RawSwitch::Suffix(s)) => Some(header("forward.provider".into(), s)?),
    };
    let payload_header = raw
        .and_then(|r| r.payload.as_deref())
        .map(|s| header("forward.payload".into(), s))
        .transpose()?;
    Ok(Forward {
        header_prefix: prefix.clone(),
        claims,
        authorization: raw.is_some_and(|r| r.authorization),
        provider_header,
        payload_header,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use gatehouse_testkit::SECRET;

    fn env(name: &str) -> Option<String> {
        (name == "SECRET_KEY").then(|| SECRET.to_string())
    }

    fn compile_str(json: &str) -> Result<Policy, ConfigError> {
        compile(json.as_bytes(), env)
    }

    const MINIMAL: &str =
        r#"{"issuer":"https://gatehouse.test","algorithms":["HS256"],"hmac_secret":{"env":"SECRET_KEY"}}"#;

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let p = compile_str(MINIMAL).unwrap();
        assert_eq!(
            p.providers[0].token.issuer.as_deref(),
            Some("https://gatehouse.test")
        );
        assert!(p.providers[0].token.audiences.is_empty());
        assert_eq!(p.providers[0].token.clock_skew_seconds, 60);
        assert_eq!(p.providers[0].token.max_lifetime_seconds, 86400);
        assert_eq!(p.max_token_bytes, 8192);
        assert_eq!(p.providers[0].token.roles, [Pointer::claim("roles")]);
        assert_eq!(p.routes.rules, vec![]);
        assert_eq!(p.routes.no_match, Requirement::Authenticated);
        assert_eq!(
            p.forward,
            Forward {
                header_prefix: "x-auth-".into(),
                claims: vec![
                    (ForwardSource::Subject, "x-auth-sub".into()),
                    (ForwardSource::Roles, "x-auth-roles".into())
                ],
                authorization: false,
                provider_header: None,
                payload_header: None,
            }
        );
        assert_eq!(p.challenge, "Bearer realm=\"gatehouse\"");
        assert_eq!(p.token_cache_entries, 4096);
    }

    #[test]
    fn full_config_compiles() {
        let p = compile_str(
            r#"{
              "issuer": "i", "audiences": ["api", "web"], "algorithms": ["HS256"],
              "hmac_secret": {"env": "SECRET_KEY", "hex_decode": true},
              "clock_skew_seconds": 5, "max_token_lifetime_seconds": 3600, "max_token_bytes": 4096,
              "roles_claim": "scope", "realm": "api",
              "rules": [
                {"path": "/token", "methods": ["post"], "require": "public"},
                {"prefix": "/.well-known/", "require": "public"},
                {"path": "/users/{id}", "methods": ["DELETE"], "require": {"any_of": ["admin"]}},
                {"path": "/reports/{year}/{month}", "require": {"all_of": ["finance", "audit"]}},
                {"prefix": "/internal", "require": "deny"}
              ],
              "no_match": "deny",
              "forward": {"header_prefix": "x-user-", "claims": {"sub": "id", "email": "email"}, "authorization": true},
              "token_cache": {"max_entries": 0}
            }"#,
        )
        .unwrap();
        assert_eq!(p.providers[0].token.audiences, ["api", "web"]);
        assert_eq!(p.routes.rules.len(), 5);
        assert_eq!(p.routes.rules[0].methods, Some(vec!["POST".to_string()]));
        assert_eq!(
            p.routes.rules[1].pattern,
            PathPattern::Prefix("/.well-known".into())
        );
        assert_eq!(
            p.routes.rules[2].pattern,
            PathPattern::Template(vec![Segment::Literal("users".into()), Segment::Param])
        );
        assert_eq!(
            p.routes.rules[3].require,
            Requirement::AllOf(vec!["finance".into(), "audit".into()])
        );
        assert_eq!(p.routes.no_match, Requirement::Deny);
        assert_eq!(
            p.forward.claims,
            vec![
                (
                    ForwardSource::Claim(Pointer::claim("email")),
                    "x-user-email".into()
                ),
                (ForwardSource::Claim(Pointer::claim("sub")), "x-user-id".into())
            ]
        );
        assert!(p.forward.authorization);
        assert_eq!(p.challenge, "Bearer realm=\"api\"");
        assert_eq!(p.token_cache_entries, 0);
    }

    #[test]
    fn secret_bytes_follow_hex_decode() {
        use crate::hs256::Hs256;
        use jwt_compact::{AlgorithmExt, Claims, Header};
        let sign = |key: &[u8]| {
            Hs256
                .token(&Header::empty(), &Claims::empty(), &Hs256Key::new(key))
                .unwrap()
        };
        let text = compile_str(MINIMAL).unwrap();
        let decoded =
            compile_str(&MINIMAL.replace(r#""env":"SECRET_KEY""#, r#""env":"SECRET_KEY","hex_decode":true"#))
                .unwrap();
        let check = |p: &Policy, token: &str| {
            let t = jwt_compact::UntrustedToken::new(token).unwrap();
            Hs256
                .validator::<jwt_compact::Empty>(p.providers[0].token.hs256_key.as_ref().unwrap())
                .validate(&t)
                .is_ok()
        };
        let by_text = sign(SECRET.as_bytes());
        let by_bytes = sign(&hex::decode(SECRET).unwrap());
        assert!(check(&text, &by_text) && !check(&text, &by_bytes));
        assert!(check(&decoded, &by_bytes) && !check(&decoded, &by_text));
    }

    /// An EdDSA-only configuration with `jwks` as its inline JWKS.
    fn asym(jwks: &str) -> String {
        format!(r#"{{"issuer":"i","algorithms":["EdDSA"],"jwks":{{"inline":{jwks}}}}}"#)
    }

    fn remote(r: &str) -> String {
        format!(r#"{{"issuer":"i","algorithms":["EdDSA"],"jwks":{{"remote":{r}}}}}"#)
    }

    fn revocation(r: &str) -> String {
        MINIMAL.replace("}}", &format!("}},\"revocation\":{r}}}"))
    }

    #[test]
    fn revocation_gets_its_defaults_and_its_bounds() {
        assert_eq!(compile_str(MINIMAL).unwrap().providers[0].revocation, None);
        let p = compile_str(&revocation(r#"{"cluster":"token"}"#)).unwrap();
        assert_eq!(
            p.providers[0].revocation,
            Some(RevocationFeed {
                cluster: "token".into(),
                path: "/revocations".into(),
                authority: "token".into(),
                poll_seconds: 2,
                timeout_ms: 2000,
                max_stale_seconds: None,
                max_entries: 100_000,
                before_first_poll: BeforeFirstPoll::Refuse,
            })
        );
        let p = compile_str(&revocation(
            r#"{"cluster":"t","path":"/feed","authority":"auth.internal","poll_seconds":5,"max_stale_seconds":10,"before_first_poll":"allow"}"#,
        ))
        .unwrap();
        let r = p.providers[0].revocation.clone().unwrap();
        assert_eq!(
            (r.path.as_str(), r.authority.as_str()),
            ("/feed", "auth.internal")
        );
        assert_eq!((r.poll_seconds, r.max_stale_seconds), (5, Some(10)));
        assert_eq!(r.before_first_poll, BeforeFirstPoll::Allow);
    }

    #[test]
    fn a_remote_jwks_gets_its_defaults() {
        let p = compile_str(&remote(r#"{"cluster":"token"}"#)).unwrap();
        assert!(p.providers[0].inline_keys.is_empty());
        assert_eq!(
            p.providers[0].jwks_remote,
            Some(RemoteJwks {
                cluster: "token".into(),
                path: "/.well-known/jwks.json".into(),
                authority: "token".into(),
                refresh_seconds: 300,
                timeout_ms: 2000,
                min_refetch_seconds: 10,
                discovery: None,
            })
        );
    }

    #[test]
    fn every_error_names_its_field() {
        let cases: &[(&str, &str)] = &[
            ("{", "configuration"),
            ("[]", "configuration"),
            (r#"{"algorithms":["HS256"],"hmac_secret":{"env":"SECRET_KEY"}}"#, "issuer"),
            (&MINIMAL.replace("}}", "},\"issuerr\":\"x\"}"), "issuerr"),
            // Regression (cargo fuzz, target config): an empty member name.
            (&MINIMAL.replace("}}", "},\"\":1}"), "configuration"),
            (&MINIMAL.replace("\"https://gatehouse.test\"", "\"\""), "issuer"),
            (&MINIMAL.replace("\"https://gatehouse.test\"", "7"), "issuer"),
            (&MINIMAL.replace("}}", "},\"audiences\":[\"\"]}"), "audiences[0]"),
            (&MINIMAL.replace("[\"HS256\"]", "[]"), "algorithms"),
            (&MINIMAL.replace("[\"HS256\"]", "[\"HS256\",\"none\"]"), "algorithms[1]"),
            (&MINIMAL.replace("[\"HS256\"]", "[\"PS384\"]"), "algorithms[0]"),
            (&MINIMAL.replace("[\"HS256\"]", "[\"EdDSA\"]"), "hmac_secret"),
            (&MINIMAL.replace("[\"HS256\"]", "[\"HS256\",\"EdDSA\"]"), "jwks"),
            (&MINIMAL.replace("}}", "},\"jwks\":{\"inline\":{\"keys\":[]}}}"), "jwks"),
            (&asym(r#"{"keys":[]}"#), "jwks.inline"),
            (&asym(r#"{"kees":[]}"#), "jwks.inline"),
            (&asym(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#), "jwks.inline"),
            (&asym(r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}]}"#), "jwks.inline"),
            (&asym(r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","alg":"ES256"}]}"#), "jwks.inline"),
            (&asym(r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qY"}]}"#), "jwks.inline"),
            (&asym(r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","use":"enc"}]}"#), "jwks.inline"),
            (&asym(r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"a"},{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"a"}]}"#), "jwks.inline"),
            (&MINIMAL.replace("}}", "},\"jwks\":{\"remote\":{}}}"), "jwks.remote"),
            (&MINIMAL.replace("}}", "},\"jwks\":{\"remote\":{\"cluster\":\"t\"}}}"), "jwks"),
            (&MINIMAL.replace("}}", "},\"jwks\":{\"url\":\"http://x\"}}"), "jwks"),
            (&remote(r#"{}"#), "jwks.remote"),
            (&remote(r#"{"cluster":""}"#), "jwks.remote.cluster"),
            (&remote(r#"{"cluster":"token","path":"jwks"}"#), "jwks.remote.path"),
            (&remote(r#"{"cluster":"token","refresh_seconds":1}"#), "jwks.remote.refresh_seconds"),
            (&remote(r#"{"cluster":"token","timeout_ms":10}"#), "jwks.remote.timeout_ms"),
            (&remote(r#"{"cluster":"token","min_refetch_seconds":0}"#), "jwks.remote.min_refetch_seconds"),
            (&remote(r#"{"cluster":"token","url":"http://x"}"#), "jwks.remote.url"),
            (&MINIMAL.replace("[\"HS256\"]", "[\"hs256\"]"), "algorithms[0]"),
            (&MINIMAL.replace(",\"hmac_secret\":{\"env\":\"SECRET_KEY\"}", ""), "hmac_secret"),
            (&MINIMAL.replace("SECRET_KEY", "NOPE"), "hmac_secret.env"),
            (&MINIMAL.replace("SECRET_KEY", ""), "hmac_secret.env"),
            (&MINIMAL.replace("\"SECRET_KEY\"}", "\"SECRET_KEY\",\"value\":\"x\"}"), "hmac_secret.value"),
            (&MINIMAL.replace("}}", "},\"clock_skew_seconds\":-1}"), "clock_skew_seconds"),
            (&MINIMAL.replace("}}", "},\"max_token_lifetime_seconds\":0}"), "max_token_lifetime_seconds"),
            (&MINIMAL.replace("}}", "},\"max_token_bytes\":10}"), "max_token_bytes"),
            (&MINIMAL.replace("}}", "},\"roles_claim\":\"\"}"), "roles_claim"),
            (&MINIMAL.replace("}}", "},\"realm\":\"a\\\"b\"}"), "realm"),
            (&MINIMAL.replace("}}", "},\"rules\":[{\"require\":\"public\"}]}"), "rules[0]"),
            (&MINIMAL.replace("}}", "},\"rules\":[{\"path\":\"/a\",\"prefix\":\"/a\",\"require\":\"public\"}]}"), "rules[0]"),
            (&MINIMAL.replace("}}", "},\"rules\":[{\"path\":\"/a\"}]}"), "rules[0]"),
            (&MINIMAL.replace("}}", "},\"rules\":[{\"path\":\"/a\",\"require\":\"open\"}]}"), "rules[0].require"),
            (&MINIMAL.replace("}}", "},\"rules\":[{\"path\":\"/a\",\"require\":{\"any_of\":[]}}]}"), "rules[0].require.any_of"),
            (&MINIMAL.replace("}}", "},\"rules\":[{\"path\":\"/a\",\"require\":{\"all_of\":[\"a b\"]}}]}"), "rules[0].require.all_of[0]"),
            (&MINIMAL.replace("}}", "},\"rules\":[{\"path\":\"/a\",\"methods\":[],\"require\":\"public\"}]}"), "rules[0].methods"),
            (&MINIMAL.replace("}}", "},\"rules\":[{\"path\":\"/a\",\"methods\":[\"GE T\"],\"require\":\"public\"}]}"), "rules[0].methods[0]"),
            (&MINIMAL.replace("}}", "},\"rules\":[{\"path\":\"/a\",\"require\":\"public\",\"method\":[\"GET\"]}]}"), "rules[0].method"),
            (&MINIMAL.replace("}}", "},\"rules\":[{\"path\":\"/ok\",\"require\":\"public\"},{\"path\":\"a\",\"require\":\"public\"}]}"), "rules[1].path"),
            (&MINIMAL.replace("}}", "},\"rules\":[{\"path\":\"/a/../b\",\"require\":\"public\"}]}"), "rules[0].path"),
            (&MINIMAL.replace("}}", "},\"rules\":[{\"path\":\"/a%2fb\",\"require\":\"public\"}]}"), "rules[0].path"),
            (&MINIMAL.replace("}}", "},\"rules\":[{\"path\":\"/%61\",\"require\":\"public\"}]}"), "rules[0].path"),
            (&MINIMAL.replace("}}", "},\"rules\":[{\"path\":\"/a?b\",\"require\":\"public\"}]}"), "rules[0].path"),
            (&MINIMAL.replace("}}", "},\"rules\":[{\"path\":\"/odata/%24batch\",\"require\":\"public\"}]}"), "rules[0].path"),
            (&MINIMAL.replace("}}", "},\"rules\":[{\"path\":\"/caf%C3%A9\",\"require\":\"public\"}]}"), "rules[0].path"),
            (&MINIMAL.replace("}}", "},\"rules\":[{\"prefix\":\"/%E2%82%AC\",\"require\":\"public\"}]}"), "rules[0].prefix"),
            (&MINIMAL.replace("}}", "},\"rules\":[{\"path\":\"/a/\",\"require\":\"public\"}]}"), "rules[0].path"),
            (&MINIMAL.replace("}}", "},\"rules\":[{\"path\":\"/a/{id\",\"require\":\"public\"}]}"), "rules[0].path"),
            (&MINIMAL.replace("}}", "},\"rules\":[{\"path\":\"/a/{}\",\"require\":\"public\"}]}"), "rules[0].path"),
            (&MINIMAL.replace("}}", "},\"rules\":[{\"path\":\"/a/x{id}\",\"require\":\"public\"}]}"), "rules[0].path"),
            (&MINIMAL.replace("}}", "},\"rules\":[{\"prefix\":\"/a/{id}\",\"require\":\"public\"}]}"), "rules[0].prefix"),
            (&MINIMAL.replace("}}", "},\"no_match\":\"maybe\"}"), "no_match"),
            (&MINIMAL.replace("}}", "},\"forward\":{\"header_prefix\":\"X-Auth-\"}}"), "forward.header_prefix"),
            (&MINIMAL.replace("}}", "},\"forward\":{\"header_prefix\":\"x-auth\"}}"), "forward.header_prefix"),
            (&MINIMAL.replace("}}", "},\"forward\":{\"header_prefix\":\"-\"}}"), "forward.header_prefix"),
            (&MINIMAL.replace("}}", "},\"forward\":{\"claims\":{\"sub\":\"a b\"}}}"), "forward.claims.sub"),
            (&MINIMAL.replace("}}", "},\"forward\":{\"claims\":{\"sub\":\"u\",\"name\":\"u\"}}}"), "forward.claims.sub"),
            (&MINIMAL.replace("}}", "},\"forward\":{\"authorisation\":true}}"), "forward.authorisation"),
            (&MINIMAL.replace("}}", "},\"token_cache\":{\"max_entries\":-1}}"), "token_cache.max_entries"),
            (&MINIMAL.replace("}}", "},\"token_cache\":{\"size\":1}}"), "token_cache.size"),
            (&revocation(r#"{}"#), "revocation"),
            (&revocation(r#"{"cluster":""}"#), "revocation.cluster"),
            (&revocation(r#"{"cluster":"t","path":"revocations"}"#), "revocation.path"),
            (&revocation(r#"{"cluster":"t","path":"/r?since=0"}"#), "revocation.path"),
            (&revocation(r#"{"cluster":"t","poll_seconds":0}"#), "revocation.poll_seconds"),
            (&revocation(r#"{"cluster":"t","timeout_ms":99}"#), "revocation.timeout_ms"),
            (&revocation(r#"{"cluster":"t","poll_seconds":5,"max_stale_seconds":9}"#), "revocation.max_stale_seconds"),
            (&revocation(r#"{"cluster":"t","max_entries":0}"#), "revocation.max_entries"),
            (&revocation(r#"{"cluster":"t","before_first_poll":"wait"}"#), "revocation.before_first_poll"),
            (&MINIMAL.replace("}}", "},\"max_form_body_bytes\":0}"), "max_form_body_bytes"),
            (&MINIMAL.replace("}}", "},\"max_form_body_bytes\":2000000}"), "max_form_body_bytes"),
            (&revocation(r#"{"cluster":"t","on_stale":"deny"}"#), "revocation.on_stale"),
        ];
        for (json, field) in cases {
            match compile_str(json) {
                Ok(_) => panic!("accepted: {json}"),
                Err(e) => assert_eq!(&e.field, field, "{json}: {e}"),
            }
        }
    }

    #[test]
    fn weak_or_missing_secrets_are_refused_without_echoing_them() {
        for bad in [
            "",
            "not-hex-at-all",
            "abcd",
            &SECRET[..62],
            &format!("{}zz", &SECRET[..62]),
        ] {
            let e = compile(MINIMAL.as_bytes(), |_| Some(bad.to_string()))
                .err()
                .unwrap();
            assert_eq!(e.field, "hmac_secret.env");
            if !bad.is_empty() {
                assert!(!e.to_string().contains(bad), "{e}");
            }
        }
        // Surrounding whitespace (a secret read from a file) is not part of the key.
        assert!(compile(MINIMAL.as_bytes(), |_| Some(format!("{SECRET}\n"))).is_ok());
    }
}
