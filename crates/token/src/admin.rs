//! The admin API, for a bearer of an admin access token ([`Admin`]): disable, enable
//! and log out users, and revoke any token. Every action is logged with who did it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};
use tracing::info;

use crate::admin_auth::Admin;
use crate::clock::unix_now;
use crate::error::ApiError;
use crate::metrics::{AdminAction, RevocationKind};
use crate::revoke::{revoke_from_form, TokenType};
use crate::state::AppState;
use crate::store::StoreError;
use crate::{form, username};

/// `POST /admin/users/{username}/disable`: disabled, and every token revoked.
pub async fn disable(
    admin: Admin,
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_disabled(&admin, &state, &raw, true).await
}

/// `POST /admin/users/{username}/enable`: tokens revoked before stay revoked.
pub async fn enable(
    admin: Admin,
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_disabled(&admin, &state, &raw, false).await
}

async fn set_disabled(
    admin: &Admin,
    state: &AppState,
    raw: &str,
    disabled: bool,
) -> Result<Json<Value>, ApiError> {
    let name = known_name(raw)?;
    state
        .store
        .set_disabled(&name, disabled, unix_now(), state.issuer.access_ttl_seconds)
        .await
        .map_err(not_found_or_internal)?;
    if disabled {
        state.metrics.revoked(RevocationKind::Subject);
    }
    let action = if disabled {
        AdminAction::Disable
    } else {
        AdminAction::Enable
    };
    done(state, admin, action, &name);
    Ok(Json(json!({"username": name, "disabled": disabled})))
}

/// `POST /admin/users/{username}/revoke`: every token issued until now is revoked; the
/// user may log in again.
pub async fn revoke_user(
    admin: Admin,
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = known_name(&raw)?;
    let user = state
        .store
        .revoke_user(&name, unix_now(), state.issuer.access_ttl_seconds)
        .await
        .map_err(not_found_or_internal)?;
    state.metrics.revoked(RevocationKind::Subject);
    done(&state, &admin, AdminAction::RevokeUser, &name);
    Ok(Json(
        json!({"username": user.username, "disabled": user.disabled, "tokens_revoked": true}),
    ))
}

/// `POST /admin/revoke` with the form `token=...` (and optional `token_type_hint`):
/// revokes any access or refresh token of ours, whoever holds it, and says what it was.
pub async fn revoke_token(
    admin: Admin,
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let params = form::read(query, &headers, body).await?;
    let revoked = revoke_from_form(&state, &params).await?;
    state.metrics.admin_action(AdminAction::RevokeToken);
    info!(admin = %admin.username, action = AdminAction::RevokeToken.label(), revoked = revoked.map(TokenType::name), "admin action");
    Ok(Json(match revoked {
        Some(kind) => json!({"revoked": true, "token_type": kind.name()}),
        None => json!({"revoked": false}),
    }))
}

/// The canonical username; a name that cannot exist is simply not found.
fn known_name(raw: &str) -> Result<String, ApiError> {
    username::canonical(raw).ok_or(ApiError::NotFound("no such user"))
}

fn not_found_or_internal(e: StoreError) -> ApiError {
    match e {
        StoreError::NoSuchUser(_) => ApiError::NotFound("no such user"),
        e => e.into(),
    }
}

fn done(state: &AppState, admin: &Admin, action: AdminAction, user: &str) {
    state.metrics.admin_action(action);
    info!(admin = %admin.username, action = action.label(), user, "admin action");
}
