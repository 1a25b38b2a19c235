//! One request in, one decision out: [`decide`] is a pure function of the compiled
//! policy, the method, the path, the headers and the time. The table of outcomes
//! ([`crate::outcome`]) says what each refusal answers and how it is counted.

use std::rc::Rc;

use base64ct::{Base64UrlUnpadded, Encoding};

use crate::cache::TokenCache;
use crate::form_override::{body_methods, form_kind};
use crate::forward::{encode, encode_list, encode_text};
use crate::keys::KeySet;
use crate::path::{canonical_method, canonical_path};
use crate::policy::{ForwardSource, Policy};
use crate::revocation::{Revocations, Unusable};
use crate::routes::{claims_hold, is_method_override_header, request_methods, Requirement};
use crate::token::{verify, VerifiedToken};

pub use crate::outcome::{Denial, Outcome, Reason};

/// What a worker keeps between requests: each provider's keys in use (from the
/// configuration or a JWKS fetch), its cache of verified tokens, and the revoked
/// tokens it knows of each provider.
pub struct Runtime {
    /// Indexed like [`Policy::providers`].
    pub keys: Vec<Rc<KeySet>>,
    pub cache: TokenCache,
    /// Indexed like [`Policy::providers`]; `None` where revocation is not configured.
    pub revocations: Vec<Option<Revocations>>,
}

impl Runtime {
    /// The inline keys of every provider, no revocations yet.
    pub fn new(policy: &Policy) -> Self {
        Runtime {
            keys: policy.providers.iter().map(|p| p.inline_keys.clone()).collect(),
            cache: TokenCache::new(policy.token_cache_entries),
            revocations: policy.providers.iter().map(|_| None).collect(),
        }
    }

    /// New keys for one provider: verified tokens may have been signed by a key that
    /// is now gone.
    pub fn set_keys(&mut self, provider: usize, keys: Rc<KeySet>) {
        if let Some(slot) = self.keys.get_mut(provider) {
            *slot = keys;
        }
        self.cache.clear();
    }
}

/// The request body, as far as the decision is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'b> {
    /// There is none (the headers ended the request), or it is not looked at.
    None,
    /// It will come: the decision may ask for it ([`ReadBody`]).
    Coming,
    /// All of it.
    Read(&'b [u8]),
    /// More than `max_form_body_bytes` of it (the rest was not read).
    TooLarge,
}

/// A form body may hold a `_method` that changes the rules: decide again with the
/// body (at most `max_form_body_bytes` of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadBody;

/// What to do with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Send it upstream after removing and setting these headers.
    Allow {
        outcome: Outcome,
        /// The provider of the token, if there was one.
        provider: Option<usize>,
        /// Header names to delete (every value of each).
        remove: Vec<&'a str>,
        /// Header names to set, replacing any value a client sent.
        set: Vec<(&'a str, String)>,
    },
    /// Refuse it, with this answer; the provider of the token, when it was known.
    Deny(&'a Denial, Option<usize>),
}

impl Decision<'_> {
    pub fn outcome(&self) -> Outcome {
        match self {
            Decision::Allow { outcome, .. } => *outcome,
            Decision::Deny(d, _) => Outcome::Denied(d.reason),
        }
    }

    /// The provider whose token was decided on, if there was one.
    pub fn provider(&self) -> Option<usize> {
        match self {
            Decision::Allow { provider, .. } | Decision::Deny(_, provider) => *provider,
        }
    }
}

/// Decides one request from its headers (its body, if any, is not looked at).
/// `headers` are all request headers, repeated names included; `now` is unix time in
/// seconds.
pub fn decide<'a>(
    policy: &'a Policy,
    runtime: &mut Runtime,
    method: &[u8],
    path: &[u8],
    headers: &'a [(String, Vec<u8>)],
    now: i64,
) -> Decision<'a> {
    match decide_with_body(policy, runtime, method, path, headers, Body::None, now) {
        Ok(decision) => decision,
        // Asked for only while a body is coming, which it is not here.
        Err(ReadBody) => Decision::Deny(policy.denials.get(Reason::UnreadableBody), None),
    }
}

/// Like [`decide`], with what is known of the body: a `POST` with a form body, where a
/// `_method` field would land on other rules, is decided with every such field as one
/// more reading (and [`ReadBody`] while the body is [`Body::Coming`]).
pub fn decide_with_body<'a>(
    policy: &'a Policy,
    runtime: &mut Runtime,
    method: &[u8],
    path: &[u8],
    headers: &'a [(String, Vec<u8>)],
    body: Body<'_>,
    now: i64,
) -> Result<Decision<'a>, ReadBody> {
    let deny = |reason: Reason| Ok(Decision::Deny(policy.denials.get(reason), None));

    let overrides = headers
        .iter()
        .filter(|(name, _)| is_method_override_header(name))
        .map(|(_, value)| value.as_slice());
    let Some(mut methods) = request_methods(method, path, overrides) else {
        return deny(Reason::BadMethod);
    };
    let Ok(path) = canonical_path(path) else {
        return deny(Reason::AmbiguousPath);
    };
    if body != Body::None && methods.first().is_some_and(|m| m == "POST") {
        // Frameworks honour `_method` in the body of a POST only.
        let kind = form_kind(headers);
        if kind != Ok(None) && policy.routes.override_matters(&path, &methods) {
            let bytes = match body {
                Body::Read(bytes) if bytes.len() <= policy.max_form_body_bytes => bytes,
                Body::Read(_) | Body::TooLarge => return deny(Reason::BodyTooLarge),
                Body::None | Body::Coming => return Err(ReadBody),
            };
            let Ok(Some(kind)) = kind else {
                return deny(Reason::UnreadableBody);
            };
            let Ok(values) = body_methods(&kind, bytes) else {
                return deny(Reason::UnreadableBody);
            };
            for value in values {
                match canonical_method(&value) {
                    Some(m) if !methods.contains(&m) => methods.push(m),
                    Some(_) => {}
                    None => return deny(Reason::BadMethod),
                }
            }
        }
    }
    Ok(decide_readings(policy, runtime, &path, &methods, headers, now))
}

/// Decides a request by the rules of every reading of it: its canonical `path` and
/// its `methods` (its own and every override).
fn decide_readings<'a>(
    policy: &'a Policy,
    runtime: &mut Runtime,
    path: &str,
    methods: &[String],
    headers: &'a [(String, Vec<u8>)],
    now: i64,
) -> Decision<'a> {
    let deny = |reason: Reason, provider: Option<usize>| Decision::Deny(policy.denials.get(reason), provider);
    let anonymous = |outcome: Outcome| Decision::Allow {
        outcome,
        provider: None,
        remove: spoofed_identity(policy, headers, &[]),
        set: Vec::new(),
    };
    let matched = policy.routes.lookup(path, methods);
    if matched.iter().any(|m| *m.require == Requirement::Deny) {
        return deny(Reason::Closed, None);
    }
    if policy.cors_preflight && is_preflight(methods, headers) {
        return anonymous(Outcome::AllowedPreflight);
    }
    if matched.iter().all(|m| *m.require == Requirement::Public) {
        return anonymous(Outcome::AllowedPublic);
    }
    let optional = matched
        .iter()
        .all(|m| matches!(m.require, Requirement::Public | Requirement::Optional));

    let credential = match credential(policy, headers) {
        Ok(Some(credential)) => credential,
        Ok(None) if optional => return anonymous(Outcome::AllowedAnonymous),
        Ok(None) => return deny(Reason::MissingToken, None),
        Err(reason) => return deny(reason, None),
    };
    if credential.from_cookie
        && methods.iter().any(|m| !SAFE_METHODS.contains(&m.as_str()))
        && !same_origin(policy, headers)
    {
        return deny(Reason::CrossSite, None);
    }
    let token = credential.token;
    let accepts = |provider: usize| matched.iter().all(|m| m.accepts(provider));
    let verified = match runtime.cache.get(token, now, |p| policy.skew_of(p)) {
        Some(hit) if accepts(hit.provider) => hit,
        Some(hit) => return deny(Reason::ProviderNotAccepted, Some(hit.provider)),
        None => match verify(policy, &runtime.keys, token, now, accepts) {
            Ok(v) => {
                let v = Rc::new(v);
                runtime.cache.insert(token, v.clone(), now, |p| policy.skew_of(p));
                v
            }
            Err(refused) => return deny(refused.reason, refused.provider),
        },
    };
    let provider = Some(verified.provider);
    // After the cache: a token verified a minute ago may have been revoked since.
    if let Some(Some(revocations)) = runtime.revocations.get(verified.provider) {
        match revocations.unusable(now) {
            Some(Unusable::Stale) => return deny(Reason::RevocationStale, provider),
            Some(Unusable::NotLoaded) => return deny(Reason::RevocationUnloaded, provider),
            None => {}
        }
        if revocations
            .set()
            .revokes(&verified.subject, verified.issued_at, verified.token_id())
        {
            return deny(Reason::Revoked, provider);
        }
    }
    if let Some(unmet) = matched.iter().find(|m| !m.require.allows(&verified.roles)) {
        return Decision::Deny(policy.denials.forbidden(unmet.rule), provider);
    }
    if !matched.iter().all(|m| claims_hold(m.claims, &verified.claims)) {
        return deny(Reason::ClaimMismatch, provider);
    }
    let set = identity_headers(policy, &verified);
    let mut remove = spoofed_identity(policy, headers, &set);
    let keep_authorization = policy.forward.authorization || matched.iter().all(|m| m.forward_authorization);
    if !keep_authorization {
        remove.push("authorization");
    }
    Decision::Allow {
        outcome: Outcome::Allowed,
        provider,
        remove,
        set,
    }
}

/// Methods a browser sends cross-site without a preflight that change nothing (by
/// the HTTP spec's definition of safe).
const SAFE_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];

/// A real CORS preflight: `OPTIONS` (and nothing else under any reading) with
/// `Origin` and `Access-Control-Request-Method`.
fn is_preflight(methods: &[String], headers: &[(String, Vec<u8>)]) -> bool {
    let has = |name: &str| {
        headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case(name) && !v.is_empty())
    };
    methods.iter().all(|m| m == "OPTIONS") && has("origin") && has("access-control-request-method")
}

/// Whether a state-changing request that carries a cookie token comes from a page
/// allowed to send it: one `Origin` on the configured list, or the browser's own
/// `Sec-Fetch-Site: same-origin`.
fn same_origin(policy: &Policy, headers: &[(String, Vec<u8>)]) -> bool {
    let only = |name: &str| {
        let mut values = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice());
        match (values.next(), values.next()) {
            (Some(v), None) => Some(v),
            _ => None,
        }
    };
    let allowed = policy
        .cookie
        .as_ref()
        .map_or(&[][..], |c| c.allowed_origins.as_slice());
    only("origin").is_some_and(|o| allowed.iter().any(|a| a.as_bytes() == o))
        || only("sec-fetch-site").is_some_and(|s| s.eq_ignore_ascii_case(b"same-origin"))
}

/// The token of a request, and where it came from.
struct Credential<'h> {
    token: &'h str,
    /// From the cookie (the browser may have sent it on its own): CSRF applies.
    from_cookie: bool,
}

/// The request's one credential: the `Authorization: Bearer` header, or the
/// configured cookie. Both at once must be the same token; never the query string.
fn credential<'h>(
    policy: &Policy,
    headers: &'h [(String, Vec<u8>)],
) -> Result<Option<Credential<'h>>, Reason> {
    let header = bearer_token(headers)?;
    let cookie = match &policy.cookie {
        Some(c) => cookie_token(headers, &c.name)?,
        None => None,
    };
    match (header, cookie) {
        (Some(h), Some(c)) if h != c => Err(Reason::CredentialsConflict),
        (Some(token), _) => Ok(Some(Credential {
            token,
            from_cookie: false,
        })),
        (None, Some(token)) => Ok(Some(Credential {
            token,
            from_cookie: true,
        })),
        (None, None) => Ok(None),
    }
}

/// The value of cookie `name` across every `Cookie` header (RFC 6265 §5.4; HTTP/2
/// may split it into several), without surrounding quotes. Twice is a conflict.
fn cookie_token<'h>(headers: &'h [(String, Vec<u8>)], name: &str) -> Result<Option<&'h str>, Reason> {
    let mut found = None;
    for (_, value) in headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("cookie")) {
        for pair in value.split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            let (n, v) = pair.split_at(eq);
            if n.trim_ascii() != name.as_bytes() {
                continue;
            }
            let v = v.get(1..).unwrap_or_default().trim_ascii();
            let v = v
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(v);
            if found.is_some() {
                return Err(Reason::CredentialsConflict);
            }
            found = Some(std::str::from_utf8(v).map_err(|_| Reason::Malformed)?);
        }
    }
    Ok(found.filter(|t| !t.is_empty()))
}

/// The token from exactly one `Authorization: Bearer <token>` header (RFC 6750 §2.1;
/// the scheme is case-insensitive, the token must be a `b64token`). `None`: no such
/// header, or another scheme (Basic, ...), which is no credential for us (§3.1).
fn bearer_token(headers: &[(String, Vec<u8>)]) -> Result<Option<&str>, Reason> {
    let mut values = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| value.as_slice());
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Reason::AuthorizationRepeated);
    }
    let scheme_end = value.iter().position(|&b| b == b' ').unwrap_or(value.len());
    let (scheme, rest) = value.split_at(scheme_end);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Ok(None);
    }
    let token = rest.strip_prefix(b" ").unwrap_or(&[]);
    let chars_end = token
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)))
        .unwrap_or(token.len());
    let (chars, padding) = token.split_at(chars_end);
    if chars.is_empty() || !padding.iter().all(|&b| b == b'=') {
        return Err(Reason::AuthorizationMalformed);
    }
    std::str::from_utf8(token)
        .map(Some)
        .map_err(|_| Reason::AuthorizationMalformed)
}

/// Headers with which some frameworks (Symfony, IIS URL Rewrite) let a request name
/// another path than the one the rules were checked against.
const REWRITE_HEADERS: [&str; 2] = ["x-original-url", "x-rewrite-url"];

/// Incoming headers under the identity prefix, other than those about to be set, and
/// path-rewrite headers. `_` counts as `-`: some upstreams (CGI, WSGI, PHP) read
/// `x_auth_sub` as `x-auth-sub`.
fn spoofed_identity<'a>(
    policy: &Policy,
    headers: &'a [(String, Vec<u8>)],
    set: &[(&str, String)],
) -> Vec<&'a str> {
    let prefix = policy.forward.header_prefix.as_bytes();
    let mut names: Vec<&str> = Vec::new();
    for (name, _) in headers {
        let under_prefix = name.len() >= prefix.len()
            && name
                .bytes()
                .zip(prefix)
                .all(|(n, p)| n.to_ascii_lowercase() == *p || (n == b'_' && *p == b'-'));
        let rewrite = REWRITE_HEADERS.iter().any(|r| {
            r.len() == name.len()
                && name
                    .bytes()
                    .zip(r.bytes())
                    .all(|(n, r)| n.to_ascii_lowercase() == r || (n == b'_' && r == b'-'))
        });
        let spoofed = (under_prefix && !set.iter().any(|(s, _)| *s == name)) || rewrite;
        if spoofed && !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    names
}

/// The configured claims as (header, value), each encoded so that no value can be
/// refused or misread (see [`crate::forward`]), the provider's name, and the payload.
fn identity_headers<'a>(policy: &'a Policy, verified: &VerifiedToken) -> Vec<(&'a str, String)> {
    let forward = &policy.forward;
    let mut set = Vec::with_capacity(forward.claims.len() + 2);
    for (source, header) in &forward.claims {
        let value = match source {
            ForwardSource::Subject => encode_text(&verified.subject),
            ForwardSource::Roles => encode_list(&verified.roles),
            // The times are read out of the claims by the validator; they come back here.
            ForwardSource::Claim(pointer) => match pointer.top_level() {
                Some("exp") => Some(verified.expires_at.to_string()),
                Some("nbf") => verified.not_before.map(|t| t.to_string()),
                Some("iat") => verified.issued_at.map(|t| t.to_string()),
                _ => verified.claims.pointer(pointer).and_then(encode),
            },
        };
        if let Some(value) = value {
            set.push((header.as_str(), value));
        }
    }
    if let (Some(header), Some(provider)) =
        (&forward.provider_header, policy.providers.get(verified.provider))
    {
        set.push((header.as_str(), provider.name.clone()));
    }
    if let Some(header) = &forward.payload_header {
        let json = verified.payload().to_string();
        set.push((header.as_str(), Base64UrlUnpadded::encode_string(json.as_bytes())));
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::compile;
    use crate::token::tests::{good_claims, sign, sign_raw, NOW, SECRET};
    use serde_json::{json, Value};

    fn demo_policy() -> Policy {
        let json = r#"{
          "issuer": "https://gatehouse.test", "audiences": ["api"], "algorithms": ["HS256"],
          "hmac_secret": {"env": "SECRET_KEY"}, "max_token_lifetime_seconds": 3600,
          "forward": {"claims": {"sub": "sub", "roles": "roles", "email": "email", "level": "level", "name": "name"}},
          "rules": [
            {"path": "/token", "methods": ["POST"], "require": "public"},
            {"prefix": "/.well-known", "methods": ["GET"], "require": "public"},
            {"path": "/healthz", "methods": ["GET"], "require": "public"},
            {"path": "/users/me", "methods": ["GET"], "require": "authenticated"},
            {"path": "/users/{id}", "methods": ["DELETE"], "require": {"any_of": ["admin"]}},
            {"path": "/audit", "require": {"all_of": ["admin", "auditor"]}},
            {"prefix": "/internal", "require": "deny"}
          ]
        }"#;
        compile(json.as_bytes(), |_| Some(SECRET.to_string())).unwrap()
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn bearer(token: &str) -> (&'static str, String) {
        ("authorization", format!("Bearer {token}"))
    }

    fn token_with(changes: serde_json::Value) -> String {
        let mut c = good_claims();
        for (k, v) in changes.as_object().unwrap() {
            c[k] = v.clone();
        }
        sign(&c)
    }

    fn run(method: &str, path: &str, headers: &[(&str, &str)]) -> (Outcome, Option<Denial>) {
        let policy = demo_policy();
        let headers = h(headers);
        let d = decide(
            &policy,
            &mut Runtime::new(&policy),
            method.as_bytes(),
            path.as_bytes(),
            &headers,
            NOW,
        );
        let denial = match &d {
            Decision::Deny(x, _) => Some((*x).clone()),
            Decision::Allow { .. } => None,
        };
        (d.outcome(), denial)
    }

    /// (method, path, headers, expected outcome)
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, String)>, Outcome);

    #[test]
    fn outcomes_for_requests() {
        let alice = sign(&good_claims());
        let bob = token_with(json!({"sub": "bob", "roles": ["user"]}));
        let expired = token_with(json!({"exp": NOW - 3600, "iat": NOW - 4000}));
        let a = format!("Bearer {alice}");
        let b = format!("Bearer {bob}");
        let e = format!("Bearer {expired}");
        use Outcome::*;
        use Reason::*;
        let cases: Vec<Case> = vec![
            ("POST", "/token", vec![], AllowedPublic),
            (
                "POST",
                "/token?x=1",
                vec![("authorization", "garbage".to_string())],
                AllowedPublic,
            ),
            ("GET", "/.well-known/jwks.json", vec![], AllowedPublic),
            ("GET", "/healthz", vec![], AllowedPublic),
            ("HEAD", "/healthz", vec![], AllowedPublic),
            ("GET", "/users/me", vec![], Denied(MissingToken)),
            (
                "GET",
                "/users/me",
                vec![("authorization", "Basic YWxpY2U6cHc=".to_string())],
                Denied(MissingToken),
            ),
            ("GET", "/users/me", vec![("authorization", a.clone())], Allowed),
            (
                "GET",
                "/users/me",
                vec![("authorization", a.replace("Bearer", "bEaReR"))],
                Allowed,
            ),
            ("GET", "/users/me", vec![("authorization", b.clone())], Allowed),
            (
                "GET",
                "/users/me",
                vec![("authorization", e.clone())],
                Denied(Expired),
            ),
            (
                "GET",
                "/users/me",
                vec![("authorization", a.clone()), ("authorization", a.clone())],
                Denied(AuthorizationRepeated),
            ),
            (
                "GET",
                "/users/me",
                vec![("authorization", "Bearer".to_string())],
                Denied(AuthorizationMalformed),
            ),
            (
                "GET",
                "/users/me",
                vec![("authorization", "Bearer ".to_string())],
                Denied(AuthorizationMalformed),
            ),
            (
                "GET",
                "/users/me",
                vec![("authorization", a.replace("Bearer ", "Bearer  "))],
                Denied(AuthorizationMalformed),
            ),
            (
                "GET",
                "/users/me",
                vec![("authorization", a.replace("Bearer ", "Bearer\t"))],
                Denied(MissingToken),
            ),
            (
                "GET",
                "/users/me",
                vec![("authorization", format!("{a} x"))],
                Denied(AuthorizationMalformed),
            ),
            (
                "GET",
                "/users/me",
                vec![("authorization", format!("{a}, {b}"))],
                Denied(AuthorizationMalformed),
            ),
            (
                "GET",
                "/users/me",
                vec![("authorization", "Bearer a=b".to_string())],
                Denied(AuthorizationMalformed),
            ),
            (
                "GET",
                "/users/me",
                vec![("authorization", "Bearer not.a.jwt".to_string())],
                Denied(Malformed),
            ),
            ("GET", "/users/me?access_token=x", vec![], Denied(MissingToken)),
            ("DELETE", "/users/4", vec![("authorization", a.clone())], Allowed),
            (
                "DELETE",
                "/users/4",
                vec![("authorization", b.clone())],
                Denied(Forbidden),
            ),
            (
                "delete",
                "/users/4",
                vec![("authorization", b.clone())],
                Denied(Forbidden),
            ),
            (
                "DELETE",
                "/Users/4",
                vec![("authorization", b.clone())],
                Denied(Forbidden),
            ),
            (
                "DELETE",
                "/users/4/",
                vec![("authorization", b.clone())],
                Denied(Forbidden),
            ),
            (
                "DELETE",
                "/users/4?x=/",
                vec![("authorization", b.clone())],
                Denied(Forbidden),
            ),
            (
                "DELETE",
                "/%75sers/4",
                vec![("authorization", b.clone())],
                Denied(Forbidden),
            ),
            (
                "POST",
                "/users/4",
                vec![
                    ("authorization", b.clone()),
                    ("x-http-method-override", "DELETE".to_string()),
                ],
                Denied(Forbidden),
            ),
            (
                "POST",
                "/users/4?_method=delete",
                vec![("authorization", b.clone())],
                Denied(Forbidden),
            ),
            (
                "POST",
                "/users/4",
                vec![
                    ("authorization", b.clone()),
                    ("x_http_method_override", "DELETE".to_string()),
                ],
                Denied(Forbidden),
            ),
            (
                "POST",
                "/users/4?%5Fmethod=delete",
                vec![("authorization", b.clone())],
                Denied(Forbidden),
            ),
            ("POST", "/users/4", vec![("authorization", b.clone())], Allowed),
            (
                "DELETE",
                "/users/4;x",
                vec![("authorization", b.clone())],
                Denied(AmbiguousPath),
            ),
            (
                "DELETE",
                "/users%2f4",
                vec![("authorization", b.clone())],
                Denied(AmbiguousPath),
            ),
            (
                "DELETE",
                "/users/me/../4",
                vec![("authorization", b.clone())],
                Denied(AmbiguousPath),
            ),
            (
                "DELETE",
                "//users/4",
                vec![("authorization", b.clone())],
                Denied(AmbiguousPath),
            ),
            (
                "DELETE",
                "/users\\4",
                vec![("authorization", b.clone())],
                Denied(AmbiguousPath),
            ),
            (
                "DELETE",
                "http://x/users/4",
                vec![("authorization", b.clone())],
                Denied(AmbiguousPath),
            ),
            (
                "DEL ETE",
                "/users/4",
                vec![("authorization", a.clone())],
                Denied(BadMethod),
            ),
            ("GET", "/healthz;x", vec![], Denied(AmbiguousPath)),
            ("GET", "/HEALTHZ", vec![], Denied(MissingToken)),
            (
                "GET",
                "/audit",
                vec![("authorization", a.clone())],
                Denied(Forbidden),
            ),
            (
                "GET",
                "/audit",
                vec![(
                    "authorization",
                    format!("Bearer {}", token_with(json!({"roles": ["auditor", "admin"]}))),
                )],
                Allowed,
            ),
            (
                "GET",
                "/internal/x",
                vec![("authorization", a.clone())],
                Denied(Closed),
            ),
            ("GET", "/anything", vec![], Denied(MissingToken)),
            ("GET", "/anything", vec![("authorization", a.clone())], Allowed),
        ];
        for (method, path, headers, want) in cases {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert_eq!(run(method, path, &headers).0, want, "{method} {path} {headers:?}");
        }
    }

    #[test]
    fn answers_follow_rfc_6750() {
        let (_, d) = run("GET", "/users/me", &[]);
        let d = d.unwrap();
        assert_eq!(d.status, 401);
        assert_eq!(d.www_authenticate.as_deref(), Some("Bearer realm=\"gatehouse\""));
        assert_eq!(
            serde_json::from_str::<Value>(&d.body).unwrap(),
            json!({"error": "unauthorized", "error_description": "a Bearer token is required"})
        );

        let (_, d) = run("GET", "/users/me", &[("authorization", "Bearer x.y.z")]);
        let d = d.unwrap();
        assert_eq!(d.status, 401);
        assert_eq!(
            d.www_authenticate.as_deref(),
            Some("Bearer realm=\"gatehouse\", error=\"invalid_token\", error_description=\"the token is malformed\"")
        );

        let bob = token_with(json!({"roles": ["user"]}));
        let (_, d) = run(
            "DELETE",
            "/users/1",
            &[("authorization", &format!("Bearer {bob}"))],
        );
        let d = d.unwrap();
        assert_eq!(d.status, 403);
        assert_eq!(
            d.www_authenticate.as_deref(),
            Some("Bearer realm=\"gatehouse\", error=\"insufficient_scope\", error_description=\"the token lacks a required role\", scope=\"admin\"")
        );
        assert_eq!(
            serde_json::from_str::<Value>(&d.body).unwrap()["error"],
            "insufficient_scope"
        );

        let (_, d) = run("GET", "/a", &[("authorization", "x"), ("Authorization", "y")]);
        assert_eq!(d.unwrap().status, 400);

        let (_, d) = run("GET", "/internal", &[]);
        let d = d.unwrap();
        assert_eq!((d.status, d.www_authenticate), (403, None));
    }

    #[test]
    fn nothing_in_an_answer_echoes_the_token() {
        let token = token_with(json!({"exp": NOW - 999, "iat": NOW - 1000}));
        let (_, d) = run(
            "GET",
            "/users/me",
            &[("authorization", &format!("Bearer {token}"))],
        );
        let d = d.unwrap();
        let sig = token.rsplit('.').next().unwrap();
        let text = format!("{d:?}");
        assert!(
            !text.contains(sig) && !text.contains("alice") && !text.contains(SECRET),
            "{text}"
        );
    }

    #[test]
    fn identity_headers_replace_whatever_the_client_sent() {
        let policy = demo_policy();
        let token = token_with(json!({"email": "alice@example.test", "level": 3, "name": "Alice Smith"}));
        let headers = h(&[
            ("authorization", &format!("Bearer {token}")),
            ("x-auth-sub", "root"),
            ("X-Auth-Roles", "admin"),
            ("x_auth_sub", "root"),
            ("x-auth-other", "1"),
            ("x-auth-other", "2"),
            ("x-authentic", "kept"),
            ("x-forwarded-for", "kept"),
            ("X-Original-URL", "/users/1"),
            ("x_rewrite_url", "/users/1"),
            ("x-original-url-extra", "kept"),
        ]);
        let Decision::Allow {
            outcome, remove, set, ..
        } = decide(
            &policy,
            &mut Runtime::new(&policy),
            b"GET",
            b"/users/me",
            &headers,
            NOW,
        )
        else {
            panic!("denied")
        };
        assert_eq!(outcome, Outcome::Allowed);
        assert_eq!(
            set,
            vec![
                ("x-auth-email", "alice@example.test".to_string()),
                ("x-auth-level", "3".to_string()),
                ("x-auth-name", "Alice Smith".to_string()),
                ("x-auth-roles", "admin,user".to_string()),
                ("x-auth-sub", "alice".to_string()),
            ]
        );
        assert_eq!(
            remove,
            [
                "X-Auth-Roles",
                "x_auth_sub",
                "x-auth-other",
                "X-Original-URL",
                "x_rewrite_url",
                "authorization"
            ]
        );

        // On a public route too, and without touching Authorization there.
        let Decision::Allow { remove, set, .. } = decide(
            &policy,
            &mut Runtime::new(&policy),
            b"GET",
            b"/healthz",
            &headers,
            NOW,
        ) else {
            panic!("denied")
        };
        assert!(set.is_empty());
        assert_eq!(
            remove,
            [
                "x-auth-sub",
                "X-Auth-Roles",
                "x_auth_sub",
                "x-auth-other",
                "X-Original-URL",
                "x_rewrite_url"
            ]
        );
    }

    #[test]
    fn every_claim_is_forwarded_in_an_encoding_no_header_can_misread() {
        let policy = demo_policy();
        let cases: Vec<(serde_json::Value, &str, &str)> = vec![
            (
                json!({"sub": "alice\r\nx-auth-roles: admin"}),
                "x-auth-sub",
                r#""alice\r\nx-auth-roles: admin""#,
            ),
            (json!({"sub": "alice,admin"}), "x-auth-sub", r#""alice,admin""#),
            (json!({"sub": " alice"}), "x-auth-sub", r#"" alice""#),
            (json!({"sub": "alice\u{0}"}), "x-auth-sub", r#""alice\u0000""#),
            (json!({"sub": "alicé"}), "x-auth-sub", r#""alic\u00e9""#),
            (
                json!({"roles": ["user,admin"]}),
                "x-auth-roles",
                r#"["user,admin"]"#,
            ),
            (
                json!({"roles": ["user admin"]}),
                "x-auth-roles",
                r#"["user admin"]"#,
            ),
            (json!({"email": ["a@x", "b@x"]}), "x-auth-email", "a@x,b@x"),
            (json!({"email": {"a": 1}}), "x-auth-email", r#"{"a":1}"#),
            (json!({"name": "a;b"}), "x-auth-name", r#""a;b""#),
            (json!({"level": 3}), "x-auth-level", "3"),
        ];
        for (claims, header, want) in cases {
            let token = token_with(claims.clone());
            let headers = h(&[("authorization", &format!("Bearer {token}"))]);
            let decision = decide(
                &policy,
                &mut Runtime::new(&policy),
                b"GET",
                b"/users/me",
                &headers,
                NOW,
            );
            let Decision::Allow { set, .. } = decision else {
                panic!("{claims}: {decision:?}")
            };
            let got = set.iter().find(|(k, _)| *k == header).map(|(_, v)| v.as_str());
            assert_eq!(got, Some(want), "{claims}");
            assert!(
                set.iter()
                    .all(|(_, v)| v.bytes().all(|b| (0x20..0x7f).contains(&b))),
                "{set:?}"
            );
        }
    }

    #[test]
    fn forwarding_authorization_is_a_choice() {
        let json = r#"{"issuer":"https://gatehouse.test","algorithms":["HS256"],"hmac_secret":{"env":"K"},
                       "forward":{"authorization":true,"claims":{}}}"#;
        let policy = compile(json.as_bytes(), |_| Some(SECRET.to_string())).unwrap();
        let token = sign_raw(
            r#"{"alg":"HS256"}"#,
            &good_claims().to_string(),
            SECRET.as_bytes(),
        );
        let headers = h(&[bearer_pair(&token)]);
        let Decision::Allow { remove, set, .. } =
            decide(&policy, &mut Runtime::new(&policy), b"GET", b"/", &headers, NOW)
        else {
            panic!("denied")
        };
        assert!(remove.is_empty() && set.is_empty());

        // Per rule: kept only when every reading of the request lands on such a rule.
        let json = r#"{"issuer":"https://gatehouse.test","algorithms":["HS256"],"hmac_secret":{"env":"K"},
                       "forward":{"claims":{}},
                       "rules":[{"prefix":"/admin","require":"authenticated","forward_authorization":true},
                                {"path":"/Admin/x","require":"authenticated"}]}"#;
        let policy = compile(json.as_bytes(), |_| Some(SECRET.to_string())).unwrap();
        let removed =
            |path: &[u8]| match decide(&policy, &mut Runtime::new(&policy), b"POST", path, &headers, NOW) {
                Decision::Allow { remove, .. } => remove.contains(&"authorization"),
                Decision::Deny(d, _) => panic!("{d:?}"),
            };
        assert!(!removed(b"/admin/users/bob/disable"));
        assert!(removed(b"/users/me"), "no_match never forwards it");
        assert!(removed(b"/Admin/x"), "one reading is a rule without the flag");
    }

    fn bearer_pair(token: &str) -> (&'static str, &'static str) {
        let (k, v) = bearer(token);
        (k, Box::leak(v.into_boxed_str()))
    }

    #[test]
    fn a_cached_token_still_meets_every_rule_and_its_own_exp() {
        let policy = demo_policy();
        let mut runtime = Runtime::new(&policy);
        let bob = token_with(json!({"sub": "bob", "roles": ["user"], "exp": NOW + 300}));
        let headers = h(&[("authorization", &format!("Bearer {bob}"))]);
        let mut run = |method: &[u8], path: &[u8], now: i64| {
            decide(&policy, &mut runtime, method, path, &headers, now).outcome()
        };
        assert_eq!(run(b"GET", b"/users/me", NOW), Outcome::Allowed);
        assert_eq!(run(b"GET", b"/users/me", NOW), Outcome::Allowed);
        assert_eq!(
            run(b"DELETE", b"/users/1", NOW),
            Outcome::Denied(Reason::Forbidden)
        );
        assert_eq!(run(b"GET", b"/users/me", NOW + 300 + 60), Outcome::Allowed);
        assert_eq!(
            run(b"GET", b"/users/me", NOW + 300 + 61),
            Outcome::Denied(Reason::Expired)
        );
        assert_eq!(
            (runtime.cache.hits, runtime.cache.misses),
            (3, 2),
            "the expired entry is a miss, then refused"
        );
        // A tampered token is its own key: verified, and refused.
        let tampered = format!("{}A", &bob[..bob.len() - 1]);
        let headers = h(&[("authorization", &format!("Bearer {tampered}"))]);
        let outcome = decide(&policy, &mut runtime, b"GET", b"/users/me", &headers, NOW).outcome();
        assert!(
            matches!(outcome, Outcome::Denied(Reason::Signature | Reason::Malformed)),
            "{outcome:?}"
        );
    }

    #[test]
    fn a_revocation_applies_to_the_provider_whose_feed_it_came_from() {
        use crate::revocation::{BeforeFirstPoll, RevocationSet, Revocations};
        // Two issuers on one secret (as two services of one team might): `alice` at one
        // is not `alice` at the other.
        let json = r#"{"providers": {
            "a": {"issuer": "https://a.test", "hmac_secret": {"env": "K"}},
            "b": {"issuer": "https://b.test", "hmac_secret": {"env": "K"}}}}"#;
        let policy = compile(json.as_bytes(), |_| Some(SECRET.to_string())).unwrap();
        let mut runtime = Runtime::new(&policy);
        let mut revocations = Revocations::new(NOW - 100, None, BeforeFirstPoll::Allow);
        let page = format!(
            r#"{{"feed":"f","cursor":1,"reset":true,"entries":[{{"sub":"alice","iat_before":{},"until":{}}}]}}"#,
            NOW,
            NOW + 600
        );
        revocations.replica.set = RevocationSet::default().apply(page.as_bytes(), NOW, 10).unwrap();
        runtime.revocations = vec![Some(revocations), None];
        let alice_at =
            |iss: &str| sign(&json!({"iss": iss, "sub": "alice", "iat": NOW - 10, "exp": NOW + 60}));
        for (iss, want) in [
            ("https://a.test", Outcome::Denied(Reason::Revoked)),
            ("https://b.test", Outcome::Allowed),
        ] {
            let headers = h(&[("authorization", &format!("Bearer {}", alice_at(iss)))]);
            let d = decide(&policy, &mut runtime, b"GET", b"/x", &headers, NOW);
            assert_eq!(d.outcome(), want, "{iss}");
            assert_eq!(d.provider(), policy.provider_for(Some(iss)), "{iss}");
        }
    }

    #[test]
    fn a_form_method_override_meets_a_rule_that_differs_only_in_its_claims() {
        // Both readings require "authenticated"; only the DELETE rule wants a claim.
        let json = r#"{"issuer": "https://gatehouse.test", "algorithms": ["HS256"], "hmac_secret": {"env": "K"},
            "rules": [{"path": "/orders/{id}", "methods": ["DELETE"], "require": "authenticated",
                       "claims": {"/azp": {"equals": "backoffice"}}}]}"#;
        let policy = compile(json.as_bytes(), |_| Some(SECRET.to_string())).unwrap();
        let token = format!("Bearer {}", sign(&good_claims()));
        let headers = h(&[
            ("authorization", &token),
            ("content-type", "application/x-www-form-urlencoded"),
        ]);
        let run = |body: Body<'_>| {
            decide_with_body(
                &policy,
                &mut Runtime::new(&policy),
                b"POST",
                b"/orders/7",
                &headers,
                body,
                NOW,
            )
            .map(|d| d.outcome())
        };
        assert_eq!(run(Body::Coming), Err(ReadBody), "the body must be read");
        assert_eq!(
            run(Body::Read(b"_method=DELETE")),
            Ok(Outcome::Denied(Reason::ClaimMismatch))
        );
        assert_eq!(run(Body::Read(b"a=1")), Ok(Outcome::Allowed));
    }

    #[test]
    fn optional_routes_cookies_and_preflights() {
        let json = r#"{"issuer": "https://gatehouse.test", "algorithms": ["HS256"], "hmac_secret": {"env": "K"},
            "rules": [{"prefix": "/maybe", "require": "optional"}, {"prefix": "/closed", "require": "deny"}],
            "cookie": {"name": "sid", "allowed_origins": ["https://app.test"]}, "cors_preflight": true}"#;
        let policy = compile(json.as_bytes(), |_| Some(SECRET.to_string())).unwrap();
        let alice = sign(&good_claims());
        let expired = token_with(json!({"exp": NOW - 3600, "iat": NOW - 4000}));
        let cookie = format!("a=1; sid={alice}");
        let bearer_alice = format!("Bearer {alice}");
        let bearer_expired = format!("Bearer {expired}");
        let quoted = format!("sid=\"{alice}\"");
        let in_query = format!("/other?access_token={alice}");
        type HeaderCase<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Outcome);
        let cases: Vec<HeaderCase> = vec![
            ("GET", "/maybe", vec![], Outcome::AllowedAnonymous),
            (
                "GET",
                "/maybe",
                vec![("authorization", "Basic YTpi")],
                Outcome::AllowedAnonymous,
            ),
            (
                "GET",
                "/maybe",
                vec![("authorization", &bearer_alice)],
                Outcome::Allowed,
            ),
            (
                "GET",
                "/maybe",
                vec![("authorization", &bearer_expired)],
                Outcome::Denied(Reason::Expired),
            ),
            (
                "GET",
                "/maybe",
                vec![("authorization", "Bearer ")],
                Outcome::Denied(Reason::AuthorizationMalformed),
            ),
            ("GET", "/other", vec![], Outcome::Denied(Reason::MissingToken)),
            ("GET", "/other", vec![("cookie", &cookie)], Outcome::Allowed),
            ("GET", "/other", vec![("cookie", &quoted)], Outcome::Allowed),
            (
                "GET",
                "/other",
                vec![("cookie", "a=1"), ("cookie", &cookie)],
                Outcome::Allowed,
            ),
            (
                "GET",
                "/other",
                vec![("cookie", &cookie), ("cookie", &cookie)],
                Outcome::Denied(Reason::CredentialsConflict),
            ),
            (
                "GET",
                "/other",
                vec![("cookie", &cookie), ("authorization", &bearer_alice)],
                Outcome::Allowed,
            ),
            (
                "GET",
                "/other",
                vec![("cookie", &cookie), ("authorization", &bearer_expired)],
                Outcome::Denied(Reason::CredentialsConflict),
            ),
            (
                "DELETE",
                "/other",
                vec![("cookie", &cookie)],
                Outcome::Denied(Reason::CrossSite),
            ),
            (
                "DELETE",
                "/other",
                vec![("cookie", &cookie), ("origin", "https://app.test")],
                Outcome::Allowed,
            ),
            (
                "DELETE",
                "/other",
                vec![
                    ("cookie", &cookie),
                    ("origin", "https://app.test"),
                    ("origin", "https://evil.test"),
                ],
                Outcome::Denied(Reason::CrossSite),
            ),
            (
                "DELETE",
                "/other",
                vec![("cookie", &cookie), ("origin", "https://app.test.evil.test")],
                Outcome::Denied(Reason::CrossSite),
            ),
            (
                "GET",
                "/other",
                vec![("cookie", &cookie), ("x-http-method-override", "DELETE")],
                Outcome::Denied(Reason::CrossSite),
            ),
            (
                "DELETE",
                "/other",
                vec![("authorization", &bearer_alice)],
                Outcome::Allowed,
            ),
            // Never from the query string.
            ("GET", &in_query, vec![], Outcome::Denied(Reason::MissingToken)),
            (
                "OPTIONS",
                "/other",
                vec![
                    ("origin", "https://app.test"),
                    ("access-control-request-method", "POST"),
                ],
                Outcome::AllowedPreflight,
            ),
            (
                "OPTIONS",
                "/other",
                vec![("origin", "https://app.test")],
                Outcome::Denied(Reason::MissingToken),
            ),
            (
                "OPTIONS",
                "/closed",
                vec![
                    ("origin", "https://app.test"),
                    ("access-control-request-method", "POST"),
                ],
                Outcome::Denied(Reason::Closed),
            ),
        ];
        for (method, path, headers, want) in cases {
            let headers = h(&headers);
            let d = decide(
                &policy,
                &mut Runtime::new(&policy),
                method.as_bytes(),
                path.as_bytes(),
                &headers,
                NOW,
            );
            assert_eq!(d.outcome(), want, "{method} {path} {headers:?}");
        }
    }

    #[test]
    fn revoked_tokens_are_refused_from_the_cache_too() {
        use crate::revocation::{BeforeFirstPoll, RevocationSet, Revocations};
        let policy = demo_policy();
        let mut runtime = Runtime::new(&policy);
        let mut revocations = Revocations::new(NOW - 100, None, BeforeFirstPoll::Allow);
        runtime.revocations = vec![Some(revocations.clone())];
        let bob_old = token_with(json!({"sub": "bob", "roles": ["user"], "iat": NOW - 10, "jti": "b1"}));
        let bob_new = token_with(json!({"sub": "bob", "roles": ["user"], "iat": NOW, "jti": "b2"}));
        let alice = sign(&good_claims());
        let carol = token_with(json!({"sub": "carol", "jti": "c1"}));
        let run = |runtime: &mut Runtime, token: &str, path: &str| {
            let headers = h(&[("authorization", &format!("Bearer {token}"))]);
            match decide(&policy, runtime, b"GET", path.as_bytes(), &headers, NOW) {
                Decision::Deny(d, _) => Err(d.clone()),
                Decision::Allow { outcome, .. } => Ok(outcome),
            }
        };
        let outcome = |r: Result<Outcome, Denial>| r.unwrap_or_else(|d| Outcome::Denied(d.reason));
        for t in [&bob_old, &bob_new, &alice, &carol] {
            assert_eq!(outcome(run(&mut runtime, t, "/users/me")), Outcome::Allowed);
        }
        // bob disabled at NOW - 1 (tokens issued up to then), carol's one token revoked.
        let page = format!(
            r#"{{"feed":"f","cursor":2,"reset":true,"entries":[
                {{"sub":"bob","iat_before":{},"until":{}}},{{"jti":"c1","until":{}}}]}}"#,
            NOW - 1 + 1,
            NOW + 600,
            NOW + 600
        );
        revocations.replica.set = RevocationSet::default().apply(page.as_bytes(), NOW, 10).unwrap();
        runtime.revocations = vec![Some(revocations.clone())];
        let cases = [
            (&bob_old, "/users/me", Outcome::Denied(Reason::Revoked)),
            (&bob_old, "/users/1", Outcome::Denied(Reason::Revoked)),
            (&bob_new, "/users/me", Outcome::Allowed),
            (&alice, "/users/me", Outcome::Allowed),
            (&carol, "/users/me", Outcome::Denied(Reason::Revoked)),
        ];
        for (token, path, want) in cases {
            assert_eq!(outcome(run(&mut runtime, token, path)), want, "{path}");
        }
        assert!(runtime.cache.hits >= 4, "the revoked ones came from the cache");
        let d = run(&mut runtime, &bob_old, "/users/me").unwrap_err();
        assert_eq!(d.status, 401);
        assert_eq!(
            d.www_authenticate.as_deref(),
            Some(
                r#"Bearer realm="gatehouse", error="invalid_token", error_description="the token has been revoked""#
            )
        );
        // Public routes do not look at tokens at all.
        assert_eq!(
            outcome(run(&mut runtime, &bob_old, "/healthz")),
            Outcome::AllowedPublic
        );

        // Before any poll, by default, tokens get 503: the set is not known yet.
        runtime.revocations = vec![Some(Revocations::new(NOW, None, BeforeFirstPoll::Refuse))];
        let d = run(&mut runtime, &alice, "/users/me").unwrap_err();
        assert_eq!(
            (d.reason, d.status, d.retry_after),
            (Reason::RevocationUnloaded, 503, Some(5))
        );
        assert_eq!(d.www_authenticate, None);

        // Bounded staleness: once the set is too old, tokens get 503, not a guess.
        runtime.revocations = vec![Some(Revocations::new(NOW - 31, Some(30), BeforeFirstPoll::Allow))];
        let d = run(&mut runtime, &alice, "/users/me").unwrap_err();
        assert_eq!(
            (d.reason, d.status, d.retry_after),
            (Reason::RevocationStale, 503, Some(5))
        );
        assert_eq!(
            outcome(run(&mut runtime, &alice, "/healthz")),
            Outcome::AllowedPublic
        );
        runtime.revocations = vec![Some(Revocations::new(NOW - 30, Some(30), BeforeFirstPoll::Allow))];
        assert_eq!(outcome(run(&mut runtime, &alice, "/users/me")), Outcome::Allowed);
    }

    #[test]
    fn a_method_override_in_a_form_body_is_one_more_reading() {
        let policy = demo_policy();
        let bob = token_with(json!({"sub": "bob", "roles": ["user"]}));
        let auth = format!("Bearer {bob}");
        let form = |ct: &str| h(&[("authorization", auth.as_str()), ("content-type", ct)]);
        let urlencoded = form("application/x-www-form-urlencoded");
        let multipart = form("multipart/form-data; boundary=b0");
        let json_body = form("application/json");
        let decide_body = |headers: &[(String, Vec<u8>)], path: &str, body: Body<'_>| {
            let mut runtime = Runtime::new(&policy);
            let d = decide_with_body(
                &policy,
                &mut runtime,
                b"POST",
                path.as_bytes(),
                headers,
                body,
                NOW,
            );
            d.ok().map(|d| d.outcome())
        };
        let forbidden = Some(Outcome::Denied(Reason::Forbidden));
        let mp = "--b0\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b0--\r\n";
        type Headers = [(String, Vec<u8>)];
        let cases: &[(&Headers, &str, Body<'_>, Option<Outcome>)] = &[
            // Where DELETE has a stricter rule, the body is asked for, then read.
            (&urlencoded, "/users/4", Body::Coming, None),
            (&urlencoded, "/users/4", Body::Read(b"_method=DELETE"), forbidden),
            (
                &urlencoded,
                "/users/4",
                Body::Read(b"name=x&+_method=delete"),
                forbidden,
            ),
            (
                &urlencoded,
                "/users/4",
                Body::Read(b"name=x"),
                Some(Outcome::Allowed),
            ),
            (
                &urlencoded,
                "/users/4",
                Body::Read(b"_method=DEL%20ETE"),
                Some(Outcome::Denied(Reason::BadMethod)),
            ),
            (&urlencoded, "/users/4", Body::None, Some(Outcome::Allowed)),
            (&multipart, "/users/4", Body::Coming, None),
            (&multipart, "/users/4", Body::Read(mp.as_bytes()), forbidden),
            (
                &multipart,
                "/users/4",
                Body::Read(b"--b0\r\nbroken"),
                Some(Outcome::Denied(Reason::UnreadableBody)),
            ),
            // Larger than the bound: refused, not guessed.
            (
                &urlencoded,
                "/users/4",
                Body::Read(&[b'a'; 64 * 1024 + 1]),
                Some(Outcome::Denied(Reason::BodyTooLarge)),
            ),
            // Not a form, or no rule it could change: never waited for.
            (&json_body, "/users/4", Body::Coming, Some(Outcome::Allowed)),
            (&urlencoded, "/users/4/x", Body::Coming, Some(Outcome::Allowed)),
        ];
        for (i, (headers, path, body, want)) in cases.iter().enumerate() {
            assert_eq!(
                decide_body(headers, path, *body),
                *want,
                "case {i}: {path} {body:?}"
            );
        }
        // A multipart type without a boundary, where it matters: unreadable.
        let no_boundary = form("multipart/form-data");
        assert_eq!(
            decide_body(&no_boundary, "/users/4", Body::Read(b"x")),
            Some(Outcome::Denied(Reason::UnreadableBody))
        );
        let d = Reason::BodyTooLarge.denial(&policy.challenge, &[]);
        assert_eq!((d.status, d.www_authenticate), (413, None));
    }

    #[test]
    fn every_outcome_has_its_own_counter() {
        let mut names: Vec<_> = Outcome::ALL.iter().map(|o| o.metric_name()).collect();
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), Some(i));
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Outcome::ALL.len());
    }
}
