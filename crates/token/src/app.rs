//! The HTTP service: [`app`] builds the router from its state, [`serve`] runs it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::grants::token;
use crate::housekeeping::{spawn_purger, PURGE_INTERVAL};
use crate::issue::Issuer;
use crate::limiter::FailureLimiter;
use crate::metrics::Metrics;
use crate::passwords::Hasher;
use crate::store::Store;

/// Largest body accepted on `/token`, `/revoke` and `/admin/revoke`.
pub const TOKEN_BODY_LIMIT: usize = 4 * 1024;

pub struct AppState {
    pub store: Store,
    pub hasher: Hasher,
    pub issuer: Issuer,
    pub refresh_ttl_seconds: i64,
    pub failures_per_user: FailureLimiter,
    pub failures_per_address: FailureLimiter,
    /// Read the client address from the last `X-Forwarded-For` entry (the one the
    /// proxy in front appended) instead of the TCP peer.
    pub trust_forwarded_for: bool,
    pub metrics: Metrics,
    /// The role an access token (and its user, now) must have for the admin API.
    pub admin_role: String,
}

/// The router, apart from `main` so tests serve it on port 0.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/token", post(token))
        .route("/revoke", post(crate::revoke::revoke))
        .route("/revocations", get(crate::feed::revocations))
        .route("/admin/users/{username}/disable", post(crate::admin::disable))
        .route("/admin/users/{username}/enable", post(crate::admin::enable))
        .route("/admin/users/{username}/revoke", post(crate::admin::revoke_user))
        .route("/admin/revoke", post(crate::admin::revoke_token))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/openid-configuration", get(discovery))
        .fallback(|| async { (StatusCode::NOT_FOUND, Json(json!({"error": "not_found"}))) })
        .layer(DefaultBodyLimit::max(TOKEN_BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(10),
        ))
        // The span names the path only: a query string could hold credentials.
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
        }))
        .with_state(state)
}

/// Serves `app(state)` on `listener` until `shutdown` completes, then lets requests
/// in flight finish. Expired revocations and refresh tokens are purged meanwhile.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let purger = spawn_purger(state.store.clone(), PURGE_INTERVAL);
    let served = axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    purger.abort();
    served
}

async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.store.ping().await {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "database unreachable"})),
        )
    }
}

/// The public keys: never a symmetric one (HS256 mode publishes an empty set).
async fn jwks(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        Json(state.issuer.jwks().as_ref().clone()),
    )
}

/// OpenID Connect discovery (the parts that apply to a token endpoint).
async fn discovery(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let base = &state.issuer.public_url;
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(json!({
            "issuer": state.issuer.issuer,
            "token_endpoint": format!("{base}/token"),
            "jwks_uri": format!("{base}/.well-known/jwks.json"),
            "revocation_endpoint": format!("{base}/revoke"),
            "revocation_endpoint_auth_methods_supported": ["none"],
            "grant_types_supported": ["password", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["none"],
            "response_types_supported": [],
            "id_token_signing_alg_values_supported": [state.issuer.alg().name()],
            "token_endpoint_auth_signing_alg_values_supported": [state.issuer.alg().name()],
        })),
    )
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Unix time in seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
