//! Every outcome of a request, in one table: why it was refused (or that it was
//! allowed), the status, the RFC 6750 `error`, the description, the challenge, the
//! `Retry-After` and the counter. The answers are built once per configuration
//! ([`Denials`]), never per request.

use crate::routes::{Requirement, Routes};

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    MissingToken,
    AuthorizationRepeated,
    AuthorizationMalformed,
    BadMethod,
    AmbiguousPath,
    TokenTooLarge,
    Malformed,
    /// No JWKS key has the token's `kid`.
    UnknownKey,
    /// No JWKS was loaded yet: the answer is 503, not 401.
    NoKeys,
    HeaderRefused,
    Algorithm,
    Signature,
    Expired,
    NotYetValid,
    IssuedInFuture,
    Lifetime,
    Issuer,
    Audience,
    Claims,
    /// The token's provider is not one the route accepts.
    ProviderNotAccepted,
    Forbidden,
    /// A claim the route requires has another value.
    ClaimMismatch,
    /// A cookie-borne token on a state-changing request without an allowed origin.
    CrossSite,
    /// A token in the header and another in the cookie (or two such cookies).
    CredentialsConflict,
    Closed,
    /// The token service revoked the token (or every token of its subject).
    Revoked,
    /// Revocation is bounded and the set is older than the bound: 503.
    RevocationStale,
    /// No revocation set was loaded yet (and the configuration says to wait): 503.
    RevocationUnloaded,
    /// A form body that must be read for `_method` is larger than allowed: 413.
    BodyTooLarge,
    /// A form body that must be read for `_method` cannot be: 400.
    UnreadableBody,
    /// The filter itself failed (the host did not hand the request over): 500.
    Internal,
    /// No configuration to decide with (Envoy refused it, so this should never be
    /// reached): 503, and no counter to count it in.
    Unconfigured,
}

/// What `WWW-Authenticate` says (RFC 6750 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Challenge {
    None,
    /// `Bearer realm="..."`: no credentials were presented, so no error code (§3.1).
    Bare,
    /// `Bearer realm="...", error="...", error_description="..."` (and `scope` for a 403).
    WithError,
}

/// One row of the table.
struct Row {
    status: u32,
    error: &'static str,
    description: &'static str,
    challenge: Challenge,
    retry_after: Option<u32>,
    /// Envoy shows it as `wasmcustom.gatehouse.denied.<counter>`.
    counter: &'static str,
}

const fn row(
    status: u32,
    error: &'static str,
    description: &'static str,
    challenge: Challenge,
    counter: &'static str,
) -> Row {
    // A 503 always says when to try again.
    let retry_after = if status == 503 { Some(5) } else { None };
    Row {
        status,
        error,
        description,
        challenge,
        retry_after,
        counter,
    }
}

impl Reason {
    /// The table. Descriptions are fixed strings: never the token, a claim value or a
    /// key.
    const fn row(self) -> Row {
        use Challenge::{Bare, None as NoChallenge, WithError};
        use Reason::*;
        const BAD_TOKEN: &str = "invalid_token";
        const BAD_REQUEST: &str = "invalid_request";
        const UNAVAILABLE: &str = "temporarily_unavailable";
        match self {
            MissingToken => row(
                401,
                "unauthorized",
                "a Bearer token is required",
                Bare,
                "missing_token",
            ),
            AuthorizationRepeated => row(
                400,
                BAD_REQUEST,
                "more than one Authorization header",
                WithError,
                "authorization_repeated",
            ),
            AuthorizationMalformed => row(
                400,
                BAD_REQUEST,
                "the Authorization header must be 'Bearer <token>'",
                WithError,
                "authorization_malformed",
            ),
            BadMethod => row(
                400,
                BAD_REQUEST,
                "the request method is not valid",
                WithError,
                "bad_method",
            ),
            AmbiguousPath => row(
                400,
                BAD_REQUEST,
                "the request path is ambiguous",
                WithError,
                "ambiguous_path",
            ),
            TokenTooLarge => row(
                401,
                BAD_TOKEN,
                "the token is too large",
                WithError,
                "token_too_large",
            ),
            Malformed => row(401, BAD_TOKEN, "the token is malformed", WithError, "malformed"),
            UnknownKey => row(
                401,
                BAD_TOKEN,
                "the token's signing key is unknown",
                WithError,
                "unknown_key",
            ),
            NoKeys => row(
                503,
                UNAVAILABLE,
                "the signing keys are not loaded yet",
                NoChallenge,
                "no_keys",
            ),
            HeaderRefused => row(
                401,
                BAD_TOKEN,
                "the token header has a parameter that is not accepted",
                WithError,
                "header_refused",
            ),
            Algorithm => row(
                401,
                BAD_TOKEN,
                "the token algorithm is not accepted",
                WithError,
                "algorithm",
            ),
            Signature => row(
                401,
                BAD_TOKEN,
                "the token signature is invalid",
                WithError,
                "signature",
            ),
            Expired => row(401, BAD_TOKEN, "the token has expired", WithError, "expired"),
            NotYetValid => row(
                401,
                BAD_TOKEN,
                "the token is not valid yet",
                WithError,
                "not_yet_valid",
            ),
            IssuedInFuture => row(
                401,
                BAD_TOKEN,
                "the token was issued in the future",
                WithError,
                "issued_in_future",
            ),
            Lifetime => row(
                401,
                BAD_TOKEN,
                "the token lifetime is too long",
                WithError,
                "lifetime",
            ),
            Issuer => row(
                401,
                BAD_TOKEN,
                "the token issuer is not accepted",
                WithError,
                "issuer",
            ),
            Audience => row(
                401,
                BAD_TOKEN,
                "the token audience is not accepted",
                WithError,
                "audience",
            ),
            Claims => row(
                401,
                BAD_TOKEN,
                "the token claims are invalid",
                WithError,
                "claims",
            ),
            ProviderNotAccepted => row(
                401,
                BAD_TOKEN,
                "the token issuer is not accepted on this route",
                WithError,
                "provider_not_accepted",
            ),
            ClaimMismatch => row(
                403,
                "insufficient_scope",
                "the token does not have a claim this route requires",
                WithError,
                "claim_mismatch",
            ),
            CrossSite => row(
                403,
                "access_denied",
                "a cookie token on a state-changing request needs an allowed Origin",
                NoChallenge,
                "cross_site",
            ),
            CredentialsConflict => row(
                400,
                BAD_REQUEST,
                "more than one credential: send the token once",
                WithError,
                "credentials_conflict",
            ),
            Forbidden => row(
                403,
                "insufficient_scope",
                "the token lacks a required role",
                WithError,
                "forbidden",
            ),
            Closed => row(
                403,
                "access_denied",
                "this route is closed",
                NoChallenge,
                "closed",
            ),
            Revoked => row(401, BAD_TOKEN, "the token has been revoked", WithError, "revoked"),
            RevocationStale => row(
                503,
                UNAVAILABLE,
                "the revocation list is out of date",
                NoChallenge,
                "revocation_stale",
            ),
            RevocationUnloaded => row(
                503,
                UNAVAILABLE,
                "the revocation list is not loaded yet",
                NoChallenge,
                "revocation_unloaded",
            ),
            BodyTooLarge => row(
                413,
                BAD_REQUEST,
                "the form body is too large to check for a method override",
                NoChallenge,
                "body_too_large",
            ),
            UnreadableBody => row(
                400,
                BAD_REQUEST,
                "the form body cannot be read to check for a method override",
                WithError,
                "unreadable_body",
            ),
            Internal => row(
                500,
                "server_error",
                "the request could not be processed",
                NoChallenge,
                "internal",
            ),
            Unconfigured => row(
                503,
                UNAVAILABLE,
                "the filter is not configured",
                NoChallenge,
                "unconfigured",
            ),
        }
    }

    pub fn status(self) -> u32 {
        self.row().status
    }

    pub fn description(self) -> &'static str {
        self.row().description
    }

    /// The answer for this reason. `challenge` is `Bearer realm="..."`; `scope` names
    /// the roles a 403 wanted.
    pub fn denial(self, challenge: &str, scope: &[String]) -> Denial {
        let Row {
            status,
            error,
            description,
            challenge: kind,
            retry_after,
            ..
        } = self.row();
        let www_authenticate = match kind {
            Challenge::None => None,
            Challenge::Bare => Some(challenge.to_string()),
            Challenge::WithError if !scope.is_empty() => Some(format!(
                "{challenge}, error=\"{error}\", error_description=\"{description}\", scope=\"{}\"",
                scope.join(" ")
            )),
            Challenge::WithError => Some(format!(
                "{challenge}, error=\"{error}\", error_description=\"{description}\""
            )),
        };
        Denial {
            reason: self,
            status,
            www_authenticate,
            retry_after,
            body: serde_json::json!({"error": error, "error_description": description}).to_string(),
        }
    }
}

/// What happened to a request, one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    AllowedPublic,
    /// An optional route, without a token.
    AllowedAnonymous,
    /// A CORS preflight, let through without a token.
    AllowedPreflight,
    Allowed,
    Denied(Reason),
}

impl Outcome {
    /// Every counted outcome (`Unconfigured` has no counter to be counted in).
    pub const ALL: [Outcome; 35] = [
        Outcome::AllowedPublic,
        Outcome::AllowedAnonymous,
        Outcome::AllowedPreflight,
        Outcome::Allowed,
        Outcome::Denied(Reason::MissingToken),
        Outcome::Denied(Reason::AuthorizationRepeated),
        Outcome::Denied(Reason::AuthorizationMalformed),
        Outcome::Denied(Reason::BadMethod),
        Outcome::Denied(Reason::AmbiguousPath),
        Outcome::Denied(Reason::TokenTooLarge),
        Outcome::Denied(Reason::Malformed),
        Outcome::Denied(Reason::UnknownKey),
        Outcome::Denied(Reason::NoKeys),
        Outcome::Denied(Reason::HeaderRefused),
        Outcome::Denied(Reason::Algorithm),
        Outcome::Denied(Reason::Signature),
        Outcome::Denied(Reason::Expired),
        Outcome::Denied(Reason::NotYetValid),
        Outcome::Denied(Reason::IssuedInFuture),
        Outcome::Denied(Reason::Lifetime),
        Outcome::Denied(Reason::Issuer),
        Outcome::Denied(Reason::Audience),
        Outcome::Denied(Reason::Claims),
        Outcome::Denied(Reason::ProviderNotAccepted),
        Outcome::Denied(Reason::Forbidden),
        Outcome::Denied(Reason::ClaimMismatch),
        Outcome::Denied(Reason::CrossSite),
        Outcome::Denied(Reason::CredentialsConflict),
        Outcome::Denied(Reason::Closed),
        Outcome::Denied(Reason::Revoked),
        Outcome::Denied(Reason::RevocationStale),
        Outcome::Denied(Reason::RevocationUnloaded),
        Outcome::Denied(Reason::BodyTooLarge),
        Outcome::Denied(Reason::UnreadableBody),
        Outcome::Denied(Reason::Internal),
    ];

    /// Position in [`Outcome::ALL`] (`None`: not counted).
    pub fn index(self) -> Option<usize> {
        Outcome::ALL.iter().position(|o| *o == self)
    }

    /// The counter's name; Envoy shows it as `wasmcustom.<name>`.
    pub fn metric_name(self) -> String {
        match self {
            Outcome::AllowedPublic => "gatehouse.allowed.public".into(),
            Outcome::AllowedAnonymous => "gatehouse.allowed.anonymous".into(),
            Outcome::AllowedPreflight => "gatehouse.allowed.preflight".into(),
            Outcome::Allowed => "gatehouse.allowed.token".into(),
            Outcome::Denied(reason) => format!("gatehouse.denied.{}", reason.row().counter),
        }
    }
}

/// A refusal, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: Reason,
    pub status: u32,
    pub www_authenticate: Option<String>,
    /// Seconds for `Retry-After` (every 503).
    pub retry_after: Option<u32>,
    /// `{"error": ..., "error_description": ...}`
    pub body: String,
}

/// Every answer a configuration can give, built once: one per reason, and one
/// `Forbidden` per rule (its `scope` names the rule's roles).
#[derive(Debug, Clone)]
pub struct Denials {
    /// Indexed like [`Outcome::ALL`] (the two allowing slots hold `internal`).
    by_outcome: Vec<Denial>,
    internal: Denial,
    unconfigured: Denial,
    /// `Forbidden` for each rule, by index, and for `no_match`.
    forbidden_by_rule: Vec<Denial>,
    forbidden_no_match: Denial,
}

impl Denials {
    pub fn new(challenge: &str, routes: &Routes) -> Denials {
        let internal = Reason::Internal.denial(challenge, &[]);
        let forbidden = |require: &Requirement| Reason::Forbidden.denial(challenge, require.roles());
        Denials {
            forbidden_by_rule: routes.rules.iter().map(|r| forbidden(&r.require)).collect(),
            forbidden_no_match: forbidden(&routes.no_match),
            by_outcome: Outcome::ALL
                .iter()
                .map(|o| match o {
                    Outcome::Denied(reason) => reason.denial(challenge, &[]),
                    Outcome::AllowedPublic
                    | Outcome::AllowedAnonymous
                    | Outcome::AllowedPreflight
                    | Outcome::Allowed => internal.clone(),
                })
                .collect(),
            unconfigured: Reason::Unconfigured.denial(challenge, &[]),
            internal,
        }
    }

    pub fn get(&self, reason: Reason) -> &Denial {
        match reason {
            Reason::Unconfigured => &self.unconfigured,
            _ => Outcome::Denied(reason)
                .index()
                .and_then(|i| self.by_outcome.get(i))
                .unwrap_or(&self.internal),
        }
    }

    /// The 403 of rule `rule` (`None`: `no_match`).
    pub fn forbidden(&self, rule: Option<usize>) -> &Denial {
        rule.and_then(|i| self.forbidden_by_rule.get(i))
            .unwrap_or(&self.forbidden_no_match)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counted_outcome_has_its_own_counter_and_every_denial_is_prebuilt() {
        let names: std::collections::BTreeSet<String> =
            Outcome::ALL.iter().map(|o| o.metric_name()).collect();
        assert_eq!(names.len(), Outcome::ALL.len(), "one counter each");
        let routes = Routes {
            rules: Vec::new(),
            no_match: Requirement::AnyOf(vec!["admin".into()]),
        };
        let denials = Denials::new(r#"Bearer realm="gatehouse""#, &routes);
        for outcome in Outcome::ALL {
            if let Outcome::Denied(reason) = outcome {
                let d = denials.get(reason);
                assert_eq!(d.reason, reason);
                assert_eq!(*d, reason.denial(r#"Bearer realm="gatehouse""#, &[]));
                assert_eq!(d.retry_after.is_some(), d.status == 503, "{reason:?}");
                // A 401 always challenges (RFC 6750 §3).
                assert!(d.status != 401 || d.www_authenticate.is_some(), "{reason:?}");
            }
        }
        assert_eq!(denials.get(Reason::Unconfigured).status, 503);
        let forbidden = denials.forbidden(None);
        assert_eq!(forbidden.status, 403);
        assert!(
            forbidden
                .www_authenticate
                .as_deref()
                .is_some_and(|w| w.ends_with(r#"scope="admin""#)),
            "{forbidden:?}"
        );
        assert_eq!(
            denials.forbidden(Some(7)),
            forbidden,
            "a rule index out of range is no_match"
        );
    }
}
