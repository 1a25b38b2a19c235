//! `POST /token`: the password and refresh-token grants of RFC 6749 (§4.3, §6).
//!
//! Everything that can be refused cheaply is refused before any hashing: query
//! parameters, content type, body size, repeated or missing fields, field sizes, NUL,
//! and the failure limits.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::{error, info, warn};
use zeroize::Zeroizing;

use crate::clock::unix_now;
use crate::error::ApiError;
use crate::form::required;
use crate::issue::{random_token, refresh_hash};
use crate::limiter::Verdict;
use crate::passwords::MAX_PASSWORD_BYTES;
use crate::state::AppState;
use crate::store::{FamilyStart, Rotation, User};
use crate::{form, username};

const MAX_USERNAME_BYTES: usize = 256;
const MAX_SCOPE_BYTES: usize = 1024;
const MAX_REFRESH_TOKEN_BYTES: usize = 256;

/// The seconds a client is told to wait when every hashing slot is taken.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

pub async fn token(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let params = form::read(query, &headers, body).await?;
    match params.get("grant_type").map(String::as_str) {
        None | Some("") => Err(ApiError::InvalidRequest("grant_type is required")),
        Some("password") => password_grant(&state, client_address(&state, &headers, peer), params).await,
        Some("refresh_token") => refresh_grant(&state, params).await,
        Some(_) => Err(ApiError::UnsupportedGrantType),
    }
}

/// The requested scope as a list of roles, if any.
fn requested_scope(params: &BTreeMap<String, String>) -> Result<Option<Vec<String>>, ApiError> {
    match params.get("scope") {
        None => Ok(None),
        Some(s) if s.len() > MAX_SCOPE_BYTES => Err(ApiError::InvalidRequest("a parameter is too long")),
        Some(s) => Ok(Some(
            s.split(' ')
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect(),
        )),
    }
}

/// The client's address: the TCP peer, or the rightmost `X-Forwarded-For` entry when
/// the proxy in front is trusted (entries to its left are whatever the client wrote).
fn client_address(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> String {
    if state.trust_forwarded_for {
        let last = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|v| !v.is_empty());
        if let Some(addr) = last {
            return addr.to_string();
        }
    }
    peer.ip().to_string()
}

/// The group an address is limited as: an IPv4 address alone, an IPv6 address by its
/// /64 (one subscriber's network: a host picks any address in it at will, so counting
/// each alone would multiply the allowance by 2^64). An IPv4-mapped IPv6 address is
/// its IPv4 address. Anything else (a trusted proxy's entry that is no address) is
/// kept as it is.
fn address_group(address: &str) -> String {
    match address.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let net = u128::from(v6) & !((1u128 << 64) - 1);
                format!("{}/64", Ipv6Addr::from(net))
            }
        },
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Err(_) => address.to_string(),
    }
}

async fn password_grant(
    state: &AppState,
    address: String,
    params: BTreeMap<String, String>,
) -> Result<Response, ApiError> {
    let raw_username = required(&params, "username", MAX_USERNAME_BYTES)?;
    let password = Zeroizing::new(required(&params, "password", MAX_PASSWORD_BYTES)?.to_string());
    let scope = requested_scope(&params)?;
    // A name that cannot exist is looked up as an unknown user: same answer, same time.
    let name = username::canonical(raw_username).unwrap_or_default();
    let user_key = format!("u:{name}");
    let address_key = format!("a:{}", address_group(&address));

    let per_user = state.failures_per_user.check(&state.store, &user_key).await?;
    let per_address = state
        .failures_per_address
        .check(&state.store, &address_key)
        .await?;
    for verdict in [per_user, per_address] {
        if let Verdict::Limited(after) = verdict {
            state.metrics.logins_rate_limited.inc();
            return Err(ApiError::RateLimited(after));
        }
    }

    let credentials = if name.is_empty() {
        None
    } else {
        state.store.credentials(&name).await?
    };
    let stored_hash = credentials.as_ref().map(|(_, h)| h.clone());
    let (verdict, spent) = match state.hasher.verify(password.clone(), stored_hash.clone()).await {
        Ok(v) => v,
        Err(_) => {
            state.metrics.logins_busy.inc();
            return Err(ApiError::Busy(BUSY_RETRY_AFTER));
        }
    };
    state.metrics.hash_seconds.observe(spent.as_secs_f64());

    let user = match credentials {
        Some((user, _)) if verdict.matches && !user.disabled => user,
        _ => {
            // The attempt has happened; a failure that cannot be counted is logged, and
            // the answer stays the same.
            for (limiter, key) in [
                (&state.failures_per_user, &user_key),
                (&state.failures_per_address, &address_key),
            ] {
                if let Err(e) = limiter.fail(&state.store, key).await {
                    error!(error = %e, "could not count a failed login");
                }
            }
            state.metrics.logins_failed.inc();
            info!(outcome = "failed", "password login");
            // As long as the slowest hash in the store would take: the time of a failure
            // says nothing about whether the user exists or what their hash is.
            tokio::time::sleep(state.hasher.failure_time().saturating_sub(spent)).await;
            return Err(ApiError::BadCredentials);
        }
    };
    // Only a key holding failures is written to: a login is otherwise read-only here.
    if per_user == (Verdict::Allowed { holds_failures: true }) {
        state.failures_per_user.reset(&state.store, &user_key).await?;
    }
    let now = unix_now();
    let family = random_token(16);
    let refresh = random_token(32);
    let checked_hash = stored_hash.as_deref().unwrap_or_default();
    let started = state
        .store
        .start_family(&FamilyStart {
            user_id: user.id,
            checked_hash,
            token_hash: &refresh_hash(&refresh),
            family: &family,
            scope: scope.as_deref(),
            now,
            expires_at: now.saturating_add(state.refresh_ttl_seconds),
        })
        .await?;
    // Disabled, or their password changed, while this login waited and hashed: the
    // answer of any refused login.
    let Some(user) = started else {
        state.metrics.logins_failed.inc();
        info!(outcome = "failed", "password login");
        return Err(ApiError::BadCredentials);
    };
    // After the family is stored: the re-hash replaces the hash that start_family checks.
    if verdict.needs_rehash {
        if let Some(old) = stored_hash {
            rehash_later(state, user.id, old, password);
        }
    }
    let roles = granted_roles(&user, scope.as_deref());
    state.metrics.logins_ok.inc();
    info!(outcome = "ok", "password login");
    token_response(state, &user.username, &roles, refresh, now)
}

async fn refresh_grant(state: &AppState, params: BTreeMap<String, String>) -> Result<Response, ApiError> {
    let presented = required(&params, "refresh_token", MAX_REFRESH_TOKEN_BYTES)?;
    if params.contains_key("scope") {
        return Err(ApiError::InvalidRequest("scope cannot change on refresh"));
    }
    let now = unix_now();
    let next = random_token(32);
    let rotation = state
        .store
        .rotate_refresh(
            &refresh_hash(presented),
            &refresh_hash(&next),
            now,
            now.saturating_add(state.refresh_ttl_seconds),
        )
        .await?;
    match rotation {
        Rotation::Rotated { user, scope } => {
            state.metrics.refreshes_ok.inc();
            let roles = granted_roles(&user, scope.as_deref());
            token_response(state, &user.username, &roles, next, now)
        }
        Rotation::Reused => {
            state.metrics.refresh_reuse_detected.inc();
            state.metrics.refreshes_failed.inc();
            warn!("a spent refresh token was presented again; its family is revoked");
            Err(ApiError::InvalidGrant("invalid refresh token"))
        }
        Rotation::Invalid => {
            state.metrics.refreshes_failed.inc();
            Err(ApiError::InvalidGrant("invalid refresh token"))
        }
    }
}

/// The user's roles, narrowed to the requested scope if one was asked for.
fn granted_roles(user: &User, scope: Option<&[String]>) -> Vec<String> {
    match scope {
        None => user.roles.clone(),
        Some(wanted) => user
            .roles
            .iter()
            .filter(|r| wanted.contains(r))
            .cloned()
            .collect(),
    }
}

fn token_response(
    state: &AppState,
    sub: &str,
    roles: &[String],
    refresh: String,
    now: i64,
) -> Result<Response, ApiError> {
    let access = state.issuer.access_token(sub, roles, now).map_err(|e| {
        error!(error = %e, "could not sign an access token");
        ApiError::Internal
    })?;
    let mut response = Json(json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": state.issuer.access_ttl_seconds,
        "refresh_token": refresh,
        "scope": roles.join(" "),
    }))
    .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Upgrades a weak stored hash in the background, after the answer has gone.
fn rehash_later(state: &AppState, user_id: i64, old: String, password: Zeroizing<String>) {
    let (hasher, store) = (state.hasher.clone(), state.store.clone());
    tokio::spawn(async move {
        match hasher.hash(password).await {
            Ok(Ok(new)) => match store.replace_hash(user_id, &old, &new, unix_now()).await {
                Ok(_) => info!(user_id, "password hash upgraded to the current parameters"),
                Err(e) => warn!(error = %e, "could not store an upgraded hash"),
            },
            _ => warn!(
                user_id,
                "could not upgrade a password hash now; will retry at the next login"
            ),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::address_group;

    #[test]
    fn ipv6_addresses_are_limited_by_their_64() {
        for (address, group) in [
            ("192.0.2.7", "192.0.2.7"),
            ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
            ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
            ("[2001:db8:1:2::99]", "2001:db8:1:2::/64"),
            ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
            ("::1", "::/64"),
            ("not-an-address", "not-an-address"),
        ] {
            assert_eq!(address_group(address), group, "{address}");
        }
    }
}
