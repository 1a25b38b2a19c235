//! Every failure of the HTTP API: RFC 6749 §5.2 JSON for the token and revocation
//! endpoints, RFC 6750 §3 challenges for the admin API's bearer tokens.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::error;

use crate::store::StoreError;

/// The realm of every `WWW-Authenticate` challenge, as the filter's default.
pub const REALM: &str = "gatehouse";

/// The one error type of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// Malformed request: 400 `invalid_request`.
    InvalidRequest(&'static str),
    /// Body over the limit: 413 `invalid_request`.
    TooLarge,
    /// Wrong password, unknown or disabled user: one answer for all three.
    BadCredentials,
    /// A refresh token that cannot be used: 400 `invalid_grant`.
    InvalidGrant(&'static str),
    UnsupportedGrantType,
    /// No bearer token where one is required: 401 with a bare challenge.
    MissingToken,
    /// A bearer token that is not ours, expired, revoked, or whose user is gone or
    /// disabled: one answer for all, 401 `invalid_token`.
    InvalidToken,
    /// A valid bearer token without the role named here: 403 `insufficient_scope`.
    InsufficientScope(String),
    /// 404 `not_found`.
    NotFound(&'static str),
    /// Too many failed logins: 429.
    RateLimited(Duration),
    /// Too many hashes queued: 503.
    Busy(Duration),
    /// A fault of ours (database down): 500, details only in the log.
    Internal,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, description, retry_after) = match &self {
            ApiError::InvalidRequest(d) => (StatusCode::BAD_REQUEST, "invalid_request", *d, None),
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "request body too large",
                None,
            ),
            ApiError::BadCredentials => (
                StatusCode::UNAUTHORIZED,
                "invalid_grant",
                "Incorrect username or password",
                None,
            ),
            ApiError::InvalidGrant(d) => (StatusCode::BAD_REQUEST, "invalid_grant", *d, None),
            ApiError::UnsupportedGrantType => (
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant_type must be password or refresh_token",
                None,
            ),
            ApiError::MissingToken => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a Bearer token is required",
                None,
            ),
            ApiError::InvalidToken => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the token is invalid, expired or revoked",
                None,
            ),
            ApiError::InsufficientScope(_) => (
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                "the token lacks a required role",
                None,
            ),
            ApiError::NotFound(d) => (StatusCode::NOT_FOUND, "not_found", *d, None),
            ApiError::RateLimited(after) => (
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                "too many failed logins, retry later",
                Some(*after),
            ),
            ApiError::Busy(after) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the service is busy, retry later",
                Some(*after),
            ),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal error",
                None,
            ),
        };
        let challenge = match &self {
            // As the FastAPI guide answers, and RFC 6749 §5.2 allows with 401.
            ApiError::BadCredentials => Some("Bearer".to_string()),
            // RFC 6750 §3.1: no error code when no credentials were presented.
            ApiError::MissingToken => Some(format!("Bearer realm=\"{REALM}\"")),
            ApiError::InvalidToken => Some(format!(
                "Bearer realm=\"{REALM}\", error=\"{error}\", error_description=\"{description}\""
            )),
            ApiError::InsufficientScope(role) => Some(format!(
                "Bearer realm=\"{REALM}\", error=\"{error}\", error_description=\"{description}\", scope=\"{role}\""
            )),
            _ => None,
        };
        let mut response = (
            status,
            Json(json!({"error": error, "error_description": description})),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if let Some(v) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, v);
        }
        if let Some(after) = retry_after {
            let secs = after.as_secs().max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                headers.insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

/// A store failure as the client sees it: 500, the cause only in the log.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        error!(error = %e, "store failure");
        ApiError::Internal
    }
}
