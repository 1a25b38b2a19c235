//! The HTTP service: [`app`] builds the router from its state, [`serve`] runs it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tower_service::Service;
use tracing::{debug, error};

use crate::clock::unix_now;
use crate::form::TOKEN_BODY_LIMIT;
use crate::grants::token;
use crate::housekeeping::{spawn_purger, PURGE_INTERVAL};
use crate::state::AppState;

/// How long a client may take to send a request's headers, and so how long a
/// keep-alive connection may sit idle. The 10 s request timeout only starts once the
/// headers are in: without this bound, a client sending one header byte a second
/// would hold its connection (and a file descriptor) for ever.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

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
///
/// HTTP/1.1 as `axum::serve` does it, plus [`HEADER_TIMEOUT`] (which `axum::serve`
/// cannot set).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let purger = spawn_purger(state.store.clone(), PURGE_INTERVAL);
    let mut make_service: IntoMakeServiceWithConnectInfo<Router, SocketAddr> =
        app(state).into_make_service_with_connect_info::<SocketAddr>();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                accept_failed(e).await;
                continue;
            }
        };
        let Ok(service) = make_service.call(peer).await;
        let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
    purger.abort();
    Ok(())
}

/// As `axum::serve`: a client that went away is nothing; anything else (out of file
/// descriptors) is logged and accepting pauses for a second rather than spinning.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
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
        Json(
            state
                .issuer
                .published_jwks(&state.store, unix_now())
                .await
                .as_ref()
                .clone(),
        ),
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
