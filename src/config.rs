//! The plugin configuration (JSON) and its compilation into a [`Policy`].
//!
//! Compiled once in `on_configure`; any error names the field it is about, and the
//! filter is then refused (fail closed). Unknown fields are errors, so a typo cannot
//! silently drop a check.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::hs256::Hs256Key;
use crate::keys::{parse_jwks, AsymAlg, KeySet};
use crate::outcome::Denials;
use crate::path::{canonical_method, canonical_path};
use crate::policy::{Forward, Policy, RemoteJwks, RevocationFeed, TokenPolicy};
use crate::revocation::BeforeFirstPoll;
use crate::routes::{PathPattern, Requirement, Routes, Rule, Segment};

/// The signature algorithms Gatehouse can verify. The configuration must name the
/// ones it accepts; the token's `alg` is only ever compared with that list.
pub const SUPPORTED_ALGORITHMS: [&str; 4] = ["HS256", "EdDSA", "ES256", "RS256"];

/// Shortest HMAC secret accepted, in bytes of entropy (RFC 7518 §3.2: at least the
/// hash output size).
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    issuer: String,
    #[serde(default)]
    audiences: Vec<String>,
    algorithms: Vec<String>,
    hmac_secret: Option<RawSecret>,
    jwks: Option<RawJwks>,
    #[serde(default = "defaults::clock_skew")]
    clock_skew_seconds: u32,
    #[serde(default = "defaults::max_lifetime")]
    max_token_lifetime_seconds: u32,
    #[serde(default = "defaults::max_token_bytes")]
    max_token_bytes: u32,
    #[serde(default = "defaults::max_form_body_bytes")]
    max_form_body_bytes: u32,
    #[serde(default = "defaults::roles_claim")]
    roles_claim: String,
    #[serde(default = "defaults::realm")]
    realm: String,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default = "defaults::no_match")]
    no_match: RawRequire,
    #[serde(default)]
    forward: RawForward,
    #[serde(default)]
    token_cache: RawCache,
    revocation: Option<RawRevocation>,
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
struct RawRule {
    path: Option<String>,
    prefix: Option<String>,
    methods: Option<Vec<String>>,
    require: RawRequire,
    #[serde(default)]
    forward_authorization: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawRequire {
    Public,
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
    /// Claim name -> header name suffix. `None` means the defaults.
    claims: Option<BTreeMap<String, String>>,
    #[serde(default)]
    authorization: bool,
}

impl Default for RawForward {
    fn default() -> Self {
        RawForward {
            header_prefix: defaults::header_prefix(),
            claims: None,
            authorization: false,
        }
    }
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
    let raw: RawConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
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

    if raw.issuer.is_empty() {
        return Err(err("issuer", "must not be empty"));
    }
    for (i, aud) in raw.audiences.iter().enumerate() {
        if aud.is_empty() {
            return Err(err(format!("audiences[{i}]"), "must not be empty"));
        }
    }
    let (hs256_key, asymmetric) = compile_algorithms(&raw.algorithms, raw.hmac_secret.as_ref(), &env)?;
    let (inline_keys, jwks_remote) = compile_jwks(raw.jwks.as_ref(), &asymmetric)?;
    if raw.max_token_lifetime_seconds == 0 {
        return Err(err("max_token_lifetime_seconds", "must be at least 1"));
    }
    if raw.max_token_bytes < 64 {
        return Err(err("max_token_bytes", "must be at least 64"));
    }
    if !(1..=1024 * 1024).contains(&raw.max_form_body_bytes) {
        return Err(err(
            "max_form_body_bytes",
            "must be between 1 and 1048576 (Envoy buffers at most 1 MiB of a request by default)",
        ));
    }
    if raw.roles_claim.is_empty() {
        return Err(err("roles_claim", "must not be empty"));
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
        .map(|(i, r)| compile_rule(r, &format!("rules[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let no_match = compile_require(&raw.no_match, "no_match")?;
    let forward = compile_forward(&raw.forward, &raw.roles_claim)?;
    let revocation = raw.revocation.as_ref().map(compile_revocation).transpose()?;
    let routes = Routes { rules, no_match };
    let challenge = format!("Bearer realm=\"{}\"", raw.realm);

    Ok(Policy {
        token: TokenPolicy {
            issuer: raw.issuer,
            audiences: raw.audiences,
            hs256_key,
            asymmetric,
            clock_skew_seconds: i64::from(raw.clock_skew_seconds),
            max_lifetime_seconds: i64::from(raw.max_token_lifetime_seconds),
            max_token_bytes: usize::try_from(raw.max_token_bytes).unwrap_or(usize::MAX),
            roles_claim: raw.roles_claim,
        },
        denials: Denials::new(&challenge, &routes),
        routes,
        forward,
        challenge,
        token_cache_entries: usize::try_from(raw.token_cache.max_entries).unwrap_or(usize::MAX),
        max_form_body_bytes: usize::try_from(raw.max_form_body_bytes).unwrap_or(usize::MAX),
        inline_keys: std::rc::Rc::new(inline_keys),
        jwks_remote,
        revocation,
    })
}

fn compile_revocation(r: &RawRevocation) -> Result<RevocationFeed, ConfigError> {
    if r.cluster.is_empty() {
        return Err(err("revocation.cluster", "must name an Envoy cluster"));
    }
    if !r.path.starts_with('/') || r.path.contains(['?', '#']) {
        return Err(err(
            "revocation.path",
            "must start with / and have no query (the filter adds its cursor)",
        ));
    }
    if !(1..=3600).contains(&r.poll_seconds) {
        return Err(err("revocation.poll_seconds", "must be between 1 and 3600"));
    }
    if !(100..=60_000).contains(&r.timeout_ms) {
        return Err(err("revocation.timeout_ms", "must be between 100 and 60000"));
    }
    if let Some(stale) = r.max_stale_seconds {
        if stale < r.poll_seconds.saturating_mul(2) {
            return Err(err(
                "revocation.max_stale_seconds",
                "must be at least twice poll_seconds, or one late poll refuses every token",
            ));
        }
    }
    if r.max_entries == 0 {
        return Err(err("revocation.max_entries", "must be at least 1"));
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
    algorithms: &[String],
    secret: Option<&RawSecret>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(Option<Hs256Key>, Vec<AsymAlg>), ConfigError> {
    if algorithms.is_empty() {
        return Err(err("algorithms", "must name at least one algorithm"));
    }
    let mut asymmetric = Vec::new();
    for (i, alg) in algorithms.iter().enumerate() {
        if !SUPPORTED_ALGORITHMS.contains(&alg.as_str()) {
            return Err(err(
                format!("algorithms[{i}]"),
                format!(
                    "`{alg}` is not supported (supported: {})",
                    SUPPORTED_ALGORITHMS.join(", ")
                ),
            ));
        }
        if let Some(a) = AsymAlg::from_name(alg) {
            asymmetric.push(a);
        }
    }
    if !algorithms.iter().any(|a| a == "HS256") {
        if secret.is_some() {
            return Err(err(
                "hmac_secret",
                "is given but algorithms does not include HS256",
            ));
        }
        return Ok((None, asymmetric));
    }
    Ok((Some(compile_secret(secret, env)?), asymmetric))
}

fn compile_jwks(
    jwks: Option<&RawJwks>,
    accepted: &[AsymAlg],
) -> Result<(KeySet, Option<RemoteJwks>), ConfigError> {
    match (jwks, accepted.is_empty()) {
        (None, true) => Ok((KeySet::default(), None)),
        (None, false) => Err(err(
            "jwks",
            "is required when algorithms include EdDSA, ES256 or RS256",
        )),
        (Some(_), true) => Err(err("jwks", "is given but algorithms has no asymmetric algorithm")),
        (Some(RawJwks::Inline(doc)), false) => {
            let text = doc.to_string();
            let parsed = parse_jwks(text.as_bytes(), accepted).map_err(|e| err("jwks.inline", e))?;
            if let Some(why) = parsed.invalid.first() {
                return Err(err("jwks.inline", why.clone()));
            }
            if parsed.keys.is_empty() {
                return Err(err("jwks.inline", "has no key for the accepted algorithms"));
            }
            Ok((parsed.keys, None))
        }
        (Some(RawJwks::Remote(r)), false) => {
            if r.cluster.is_empty() {
                return Err(err("jwks.remote.cluster", "must name an Envoy cluster"));
            }
            if !r.path.starts_with('/') {
                return Err(err("jwks.remote.path", "must start with /"));
            }
            if r.refresh_seconds < 5 {
                return Err(err("jwks.remote.refresh_seconds", "must be at least 5"));
            }
            if !(100..=60_000).contains(&r.timeout_ms) {
                return Err(err("jwks.remote.timeout_ms", "must be between 100 and 60000"));
            }
            if r.min_refetch_seconds < 1 {
                return Err(err("jwks.remote.min_refetch_seconds", "must be at least 1"));
            }
            let remote = RemoteJwks {
                authority: r.authority.clone().unwrap_or_else(|| r.cluster.clone()),
                cluster: r.cluster.clone(),
                path: r.path.clone(),
                refresh_seconds: i64::from(r.refresh_seconds),
                timeout_ms: u64::from(r.timeout_ms),
                min_refetch_seconds: i64::from(r.min_refetch_seconds),
            };
            Ok((KeySet::default(), Some(remote)))
        }
    }
}

/// The HMAC key from the VM environment.
fn compile_secret(
    secret: Option<&RawSecret>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Hs256Key, ConfigError> {
    let secret = secret.ok_or_else(|| err("hmac_secret", "is required when algorithms include HS256"))?;
    if secret.env.is_empty() {
        return Err(err("hmac_secret.env", "must name an environment variable"));
    }
    // The value is never echoed: only its name and what is wrong with it.
    let value = env(&secret.env).ok_or_else(|| {
        err(
            "hmac_secret.env",
            format!(
                "environment variable {} is not set in the Wasm VM (pass it with vm_config.environment_variables.host_env_keys)",
                secret.env
            ),
        )
    })?;
    let value = value.trim();
    let decoded = hex::decode(value).map_err(|_| {
        err(
            "hmac_secret.env",
            format!(
                "{} must be hex-encoded (for example `openssl rand -hex 32`)",
                secret.env
            ),
        )
    })?;
    if decoded.len() < MIN_SECRET_BYTES {
        return Err(err(
            "hmac_secret.env",
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

fn compile_rule(raw: &RawRule, field: &str) -> Result<Rule, ConfigError> {
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
    Ok(Rule {
        pattern,
        methods,
        require: compile_require(&raw.require, &format!("{field}.require"))?,
        forward_authorization: raw.forward_authorization,
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

fn compile_forward(raw: &RawForward, roles_claim: &str) -> Result<Forward, ConfigError> {
    let prefix = &raw.header_prefix;
    if !is_header_name(prefix) || !prefix.ends_with('-') || prefix.len() < 3 {
        return Err(err(
            "forward.header_prefix",
            "must be lower-case letters, digits and `-`, at least 3 characters, ending with `-` (such as `x-auth-`)",
        ));
    }
    let claims: Vec<(String, String)> = match &raw.claims {
        None => vec![("sub".into(), "sub".into()), (roles_claim.into(), "roles".into())],
        Some(map) => map.iter().map(|(c, h)| (c.clone(), h.clone())).collect(),
    };
    let mut headers: Vec<String> = Vec::with_capacity(claims.len());
    for (claim, suffix) in &claims {
        let field = format!("forward.claims.{claim}");
        if claim.is_empty() {
            return Err(err("forward.claims", "claim names must not be empty"));
        }
        if !is_header_name(suffix) || suffix.starts_with('-') || suffix.ends_with('-') {
            return Err(err(
                field,
                format!("`{suffix}` must be lower-case letters, digits and inner `-`"),
            ));
        }
        let header = format!("{prefix}{suffix}");
        if headers.contains(&header) {
            return Err(err(field, format!("header `{header}` is used twice")));
        }
        headers.push(header);
    }
    Ok(Forward {
        header_prefix: prefix.clone(),
        claims: claims.into_iter().map(|(c, _)| c).zip(headers).collect(),
        authorization: raw.authorization,
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
        assert_eq!(p.token.issuer, "https://gatehouse.test");
        assert!(p.token.audiences.is_empty());
        assert_eq!(p.token.clock_skew_seconds, 60);
        assert_eq!(p.token.max_lifetime_seconds, 86400);
        assert_eq!(p.token.max_token_bytes, 8192);
        assert_eq!(p.token.roles_claim, "roles");
        assert_eq!(p.routes.rules, vec![]);
        assert_eq!(p.routes.no_match, Requirement::Authenticated);
        assert_eq!(
            p.forward,
            Forward {
                header_prefix: "x-auth-".into(),
                claims: vec![
                    ("sub".into(), "x-auth-sub".into()),
                    ("roles".into(), "x-auth-roles".into())
                ],
                authorization: false,
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
        assert_eq!(p.token.audiences, ["api", "web"]);
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
                ("email".into(), "x-user-email".into()),
                ("sub".into(), "x-user-id".into())
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
                .validator::<jwt_compact::Empty>(p.token.hs256_key.as_ref().unwrap())
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
        assert_eq!(compile_str(MINIMAL).unwrap().revocation, None);
        let p = compile_str(&revocation(r#"{"cluster":"token"}"#)).unwrap();
        assert_eq!(
            p.revocation,
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
        let r = p.revocation.unwrap();
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
        assert!(p.inline_keys.is_empty());
        assert_eq!(
            p.jwks_remote,
            Some(RemoteJwks {
                cluster: "token".into(),
                path: "/.well-known/jwks.json".into(),
                authority: "token".into(),
                refresh_seconds: 300,
                timeout_ms: 2000,
                min_refetch_seconds: 10,
            })
        );
    }

    #[test]
    fn every_error_names_its_field() {
        let cases: &[(&str, &str)] = &[
            ("{", "configuration"),
            ("[]", "configuration"),
            (r#"{"algorithms":["HS256"],"hmac_secret":{"env":"SECRET_KEY"}}"#, "configuration"),
            (&MINIMAL.replace("}}", "},\"issuerr\":\"x\"}"), "issuerr"),
            // Regression (cargo fuzz, target config): an empty member name.
            (&MINIMAL.replace("}}", "},\"\":1}"), "configuration"),
            (&MINIMAL.replace("\"https://gatehouse.test\"", "\"\""), "issuer"),
            (&MINIMAL.replace("\"https://gatehouse.test\"", "7"), "issuer"),
            (&MINIMAL.replace("}}", "},\"audiences\":[\"\"]}"), "audiences[0]"),
            (&MINIMAL.replace("[\"HS256\"]", "[]"), "algorithms"),
            (&MINIMAL.replace("[\"HS256\"]", "[\"HS256\",\"none\"]"), "algorithms[1]"),
            (&MINIMAL.replace("[\"HS256\"]", "[\"PS256\"]"), "algorithms[0]"),
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
