//! Every failure of the token endpoint, as RFC 6749 §5.2 JSON.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

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
    /// Too many failed logins: 429.
    RateLimited(Duration),
    /// Too many hashes queued: 503.
    Busy(Duration),
    /// A fault of ours (database down): 500, details only in the log.
    Internal,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, description, retry_after) = match self {
            ApiError::InvalidRequest(d) => (StatusCode::BAD_REQUEST, "invalid_request", d, None),
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
            ApiError::InvalidGrant(d) => (StatusCode::BAD_REQUEST, "invalid_grant", d, None),
            ApiError::UnsupportedGrantType => (
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant_type must be password or refresh_token",
                None,
            ),
            ApiError::RateLimited(after) => (
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                "too many failed logins, retry later",
                Some(after),
            ),
            ApiError::Busy(after) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the service is busy, retry later",
                Some(after),
            ),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal error",
                None,
            ),
        };
        let mut response = (
            status,
            Json(json!({"error": error, "error_description": description})),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if self == ApiError::BadCredentials {
            // As the FastAPI guide answers, and RFC 6749 §5.2 allows with 401.
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
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
