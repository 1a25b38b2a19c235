//! The demo's upstream: an existing API that knows nothing about JWTs. It trusts the
//! identity headers that Gatehouse sets, and echoes every request it receives (as
//! httpbin's `/anything` does) so a demo can show what got through.

use std::collections::BTreeMap;

use axum::extract::{Path, Request};
use axum::http::{HeaderMap, Method, Uri};
use axum::routing::{delete, get};
use axum::{Json, Router};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Demo API behind Gatehouse")]
struct Args {
    #[arg(long, env = "DEMO_API_LISTEN", default_value = "127.0.0.1:8000")]
    listen: String,
}

/// Every header received: name -> values (repeats kept).
fn headers_json(headers: &HeaderMap) -> Value {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        map.entry(name.to_string())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    json!(map)
}

fn echo(method: &Method, uri: &Uri, headers: &HeaderMap) -> Value {
    json!({"method": method.as_str(), "path": uri.path(), "query": uri.query(), "headers": headers_json(headers)})
}

/// The identity Gatehouse forwarded, as the FastAPI guide's `/users/me` returns it.
async fn me(method: Method, uri: Uri, headers: HeaderMap) -> Json<Value> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let roles: Vec<&str> = header("x-auth-roles")
        .split(',')
        .filter(|r| !r.is_empty())
        .collect();
    Json(json!({"username": header("x-auth-sub"), "roles": roles, "request": echo(&method, &uri, &headers)}))
}

async fn delete_user(Path(id): Path<String>, method: Method, uri: Uri, headers: HeaderMap) -> Json<Value> {
    let id: Value = id.parse::<i64>().map_or(json!(id), |n| json!(n));
    Json(
        json!({"deleted": id, "by": headers.get("x-auth-sub").and_then(|v| v.to_str().ok()), "request": echo(&method, &uri, &headers)}),
    )
}

async fn healthz(method: Method, uri: Uri, headers: HeaderMap) -> Json<Value> {
    Json(json!({"status": "ok", "request": echo(&method, &uri, &headers)}))
}

async fn anything(req: Request) -> Json<Value> {
    Json(echo(req.method(), req.uri(), req.headers()))
}

fn app() -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/users/me", get(me))
        .route("/users/{id}", delete(delete_user))
        .fallback(anything)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo-api: cannot listen on {}: {e}", args.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!("demo-api listening on {}", args.listen);
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
        }
    };
    match axum::serve(listener, app())
        .with_graceful_shutdown(shutdown)
        .await
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-api: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn json_of(request: reqwest::RequestBuilder) -> Value {
        serde_json::from_str(&request.send().await.unwrap().text().await.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn routes_answer_as_documented() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app()).await });
        let c = reqwest::Client::new();
        let health = json_of(c.get(format!("{base}/healthz"))).await;
        assert_eq!(health["status"], "ok");
        assert_eq!(health["request"]["path"], "/healthz");
        let me = json_of(
            c.get(format!("{base}/users/me"))
                .header("x-auth-sub", "alice")
                .header("x-auth-roles", "admin,user"),
        )
        .await;
        assert_eq!(me["username"], "alice");
        assert_eq!(me["roles"], json!(["admin", "user"]));
        let del = json_of(c.delete(format!("{base}/users/42"))).await;
        assert_eq!(del["deleted"], 42);
        let any = json_of(
            c.post(format!("{base}/x/y?z=1"))
                .header("x-a", "1")
                .header("x-a", "2"),
        )
        .await;
        assert_eq!(any["method"], "POST");
        assert_eq!(any["path"], "/x/y");
        assert_eq!(any["query"], "z=1");
        assert_eq!(any["headers"]["x-a"], json!(["1", "2"]));
    }
}
