//! `POST /revoke`: token revocation (RFC 7009) for public clients, where holding the
//! token is the proof of owning it. A refresh token revokes its whole family; an
//! access token is listed in the revocation feed until it expires.
//!
//! Per RFC 7009 §2.2 an invalid, expired or unknown token gets the same 200 as a
//! revoked one: the answer tells a caller nothing about tokens it does not hold.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::{debug, info};

use crate::clock::unix_now;
use crate::error::ApiError;
use crate::form;
use crate::form::TOKEN_BODY_LIMIT;
use crate::issue::refresh_hash;
use crate::metrics::RevocationKind;
use crate::state::AppState;
use crate::store::{RecordedAs, RevokedToken};

/// The two kinds of token this service issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    Access,
    Refresh,
}

impl TokenType {
    /// The RFC 7009 `token_type_hint` name.
    pub fn name(self) -> &'static str {
        match self {
            TokenType::Access => "access_token",
            TokenType::Refresh => "refresh_token",
        }
    }

    /// The order to try for `token_type_hint`; an unknown hint is ignored (§2.1).
    fn lookup_order(hint: Option<&str>) -> [TokenType; 2] {
        match hint {
            Some("refresh_token") => [TokenType::Refresh, TokenType::Access],
            _ => [TokenType::Access, TokenType::Refresh],
        }
    }
}

pub async fn revoke(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let params = form::read(query, &headers, body).await?;
    let revoked = revoke_from_form(&state, &params).await?;
    debug!(revoked = revoked.map(TokenType::name), "revocation request");
    let mut response = Json(json!({})).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Revokes the `token` of a revocation form (`token_type_hint` optional); what it was,
/// if it was one of ours and still alive.
pub async fn revoke_from_form(
    state: &AppState,
    params: &BTreeMap<String, String>,
) -> Result<Option<TokenType>, ApiError> {
    let token = form::required(params, "token", TOKEN_BODY_LIMIT)?;
    let hint = params.get("token_type_hint").map(String::as_str);
    let now = unix_now();
    for kind in TokenType::lookup_order(hint) {
        let done = match kind {
            TokenType::Access => revoke_access(state, token, now).await?,
            TokenType::Refresh => revoke_refresh(state, token, now).await?,
        };
        if done {
            return Ok(Some(kind));
        }
    }
    Ok(None)
}

async fn revoke_access(state: &AppState, token: &str, now: i64) -> Result<bool, ApiError> {
    let Ok(access) = state.issuer.verify_access(token, now) else {
        return Ok(false);
    };
    // Listed until it would have expired anyway; after that it needs no entry.
    let token = RevokedToken {
        jti: &access.jti,
        sub: &access.sub,
        iat: access.iat,
        exp: access.exp,
    };
    let kind = match state.store.revoke_token(&token, now).await? {
        RecordedAs::Token => RevocationKind::Token,
        // This user has many revoked tokens alive already: one entry covers them all.
        RecordedAs::Subject => RevocationKind::Subject,
    };
    state.metrics.revoked(kind);
    info!(sub = %access.sub, kind = kind.label(), "access token revoked");
    Ok(true)
}

async fn revoke_refresh(state: &AppState, token: &str, now: i64) -> Result<bool, ApiError> {
    let known = state
        .store
        .revoke_refresh_family(&refresh_hash(token), now)
        .await?;
    if known {
        state.metrics.revoked(RevocationKind::RefreshFamily);
        info!(
            kind = RevocationKind::RefreshFamily.label(),
            "refresh token family revoked"
        );
    }
    Ok(known)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_orders_the_lookup_and_unknown_hints_are_ignored() {
        use TokenType::{Access, Refresh};
        for (hint, order) in [
            (None, [Access, Refresh]),
            (Some("access_token"), [Access, Refresh]),
            (Some("refresh_token"), [Refresh, Access]),
            (Some("id_token"), [Access, Refresh]),
            (Some(""), [Access, Refresh]),
        ] {
            assert_eq!(TokenType::lookup_order(hint), order, "{hint:?}");
        }
    }
}
