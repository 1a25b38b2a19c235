//! Who may call the admin API: the bearer of an access token this service issued,
//! unexpired and unrevoked, whose user still exists, is enabled and holds the admin
//! role both in the token and now (a demoted admin's token stops working at once).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use tracing::info;

use crate::clock::unix_now;
use crate::error::ApiError;
use crate::state::AppState;

/// Longest bearer token looked at; ours are well under a kilobyte.
const MAX_TOKEN_BYTES: usize = 4096;

/// An authenticated administrator (extracting it is the authentication).
#[derive(Debug, Clone)]
pub struct Admin {
    pub username: String,
}

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let outcome = authenticate(state, &parts.headers).await;
        if let Err(e) = &outcome {
            if *e != ApiError::Internal {
                state.metrics.admin_requests_refused.inc();
                info!(path = %parts.uri.path(), "admin request refused");
            }
        }
        outcome
    }
}

async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Admin, ApiError> {
    let token = bearer_token(headers)?;
    let access = state
        .issuer
        .verify_access(token, unix_now())
        .map_err(|_| ApiError::InvalidToken)?;
    if state
        .store
        .is_revoked(&access.sub, &access.jti, access.iat)
        .await?
    {
        return Err(ApiError::InvalidToken);
    }
    let user = match state.store.user(&access.sub).await? {
        Some(u) if !u.disabled => u,
        _ => return Err(ApiError::InvalidToken),
    };
    let role = &state.admin_role;
    if !(access.roles.contains(role) && user.roles.contains(role)) {
        return Err(ApiError::InsufficientScope(role.clone()));
    }
    Ok(Admin {
        username: user.username,
    })
}

/// The token of the one `Authorization: Bearer <token>` header (RFC 6750 §2.1).
fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(if headers.contains_key(header::AUTHORIZATION) {
            ApiError::InvalidRequest("more than one Authorization header")
        } else {
            ApiError::MissingToken
        });
    };
    let malformed = ApiError::InvalidRequest("the Authorization header must be 'Bearer <token>'");
    let value = value.to_str().map_err(|_| malformed.clone())?;
    let (scheme, token) = value.split_once(' ').ok_or(malformed.clone())?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Credentials of another scheme are not bearer credentials: challenge for one.
        return Err(ApiError::MissingToken);
    }
    if token.is_empty() || token.contains(' ') {
        return Err(malformed);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(ApiError::InvalidToken);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn one_bearer_header_or_a_precise_refusal() {
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        let cases: &[(&[&str], Result<&str, ApiError>)] = &[
            (&["Bearer abc.def.ghi"], Ok("abc.def.ghi")),
            (&["bearer abc"], Ok("abc")),
            (&["BEARER abc"], Ok("abc")),
            (&[], Err(ApiError::MissingToken)),
            (&["Basic YWxpY2U6eA=="], Err(ApiError::MissingToken)),
            (
                &["Bearer"],
                Err(ApiError::InvalidRequest(
                    "the Authorization header must be 'Bearer <token>'",
                )),
            ),
            (
                &["Bearer "],
                Err(ApiError::InvalidRequest(
                    "the Authorization header must be 'Bearer <token>'",
                )),
            ),
            (
                &["Bearer a b"],
                Err(ApiError::InvalidRequest(
                    "the Authorization header must be 'Bearer <token>'",
                )),
            ),
            (
                &["Bearer a", "Bearer b"],
                Err(ApiError::InvalidRequest("more than one Authorization header")),
            ),
            (&[long.as_str()], Err(ApiError::InvalidToken)),
        ];
        for (values, want) in cases {
            let mut headers = HeaderMap::new();
            for v in *values {
                headers.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            }
            assert_eq!(&bearer_token(&headers), want, "{values:?}");
        }
    }
}
