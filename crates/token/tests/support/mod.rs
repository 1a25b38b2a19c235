//! A token service on a kernel-chosen port, on a real SQLite file, or on a fresh
//! PostgreSQL database when `GATEHOUSE_TEST_BACKEND=postgres` (how `make test` runs
//! the API suites a second time).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_token::issue::Issuer;
use gatehouse_token::limiter::FailureLimiter;
use gatehouse_token::metrics::Metrics;
use gatehouse_token::passwords::{Hasher, OWASP_MIN};
use gatehouse_token::store::{Backend, Location, NewUser, Store};
use gatehouse_token::{secret, AppState};
use tokio::sync::oneshot;

pub mod postgres;
pub mod process;

/// The database the suites run on: `GATEHOUSE_TEST_BACKEND` = `sqlite` (default) or
/// `postgres`.
pub fn backend_under_test() -> Backend {
    match std::env::var("GATEHOUSE_TEST_BACKEND").as_deref() {
        Err(_) | Ok("" | "sqlite") => Backend::Sqlite,
        Ok("postgres") => Backend::Postgres,
        Ok(other) => panic!("GATEHOUSE_TEST_BACKEND={other}: expected sqlite or postgres"),
    }
}

pub use gatehouse_testkit::SECRET;
pub const ISSUER: &str = "https://gatehouse.test";

pub struct Options {
    pub max_failures_per_user: u32,
    pub max_failures_per_address: u32,
    pub max_concurrent_hashes: usize,
    pub hash_queue_timeout: Duration,
    pub trust_forwarded_for: bool,
    pub signing_alg: gatehouse_token::signing::SigningAlg,
    pub access_ttl_seconds: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_failures_per_user: 5,
            max_failures_per_address: 1000,
            max_concurrent_hashes: 2,
            hash_queue_timeout: Duration::from_secs(5),
            trust_forwarded_for: false,
            signing_alg: gatehouse_token::signing::SigningAlg::Hs256,
            access_ttl_seconds: 1800,
        }
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub store: Store,
    pub state: Arc<AppState>,
    pub client: reqwest::Client,
    /// The SQLite file the service runs on.
    pub db_path: std::path::PathBuf,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl TestApp {
    pub async fn spawn(options: Options) -> TestApp {
        TestApp::spawn_at(options, "127.0.0.1:0", None).await
    }

    /// Like [`TestApp::spawn`], on `addr` and, if given, over an existing database.
    pub async fn spawn_at(options: Options, addr: &str, db: Option<&std::path::Path>) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let db_path = db.map_or_else(|| dir.path().join("users.db"), std::path::Path::to_path_buf);
        let location = match (db, backend_under_test()) {
            (None, Backend::Postgres) => Location::Postgres(postgres::fresh_database().await),
            _ => Location::Sqlite(db_path.clone()),
        };
        let store = Store::open(&location).await.unwrap();
        let secret = secret::parse(Some(SECRET)).unwrap();
        let window = Duration::from_secs(300);
        let issuer = Issuer::new(&secret, ISSUER.into(), "api".into(), options.access_ttl_seconds)
            .with_alg(options.signing_alg)
            .with_public_url("http://gatehouse.test".into());
        issuer.load(&store, 0).await.unwrap();
        let state = Arc::new(AppState {
            store: store.clone(),
            hasher: Hasher::new(
                OWASP_MIN,
                options.max_concurrent_hashes,
                options.hash_queue_timeout,
            )
            .unwrap(),
            issuer,
            refresh_ttl_seconds: 7 * 24 * 3600,
            failures_per_user: FailureLimiter::new(options.max_failures_per_user, window),
            failures_per_address: FailureLimiter::new(options.max_failures_per_address, window),
            trust_forwarded_for: options.trust_forwarded_for,
            metrics: Metrics::default(),
            admin_role: "admin".into(),
        });
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let s = state.clone();
        tokio::spawn(async move {
            gatehouse_token::serve(listener, s, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        TestApp {
            addr,
            store,
            state,
            client: reqwest::Client::new(),
            db_path,
            stop: Some(stop),
            _dir: dir,
        }
    }

    /// Adds a user with `password` hashed under the current parameters.
    pub async fn add_user(&self, name: &str, password: &str, roles: &[&str], disabled: bool) {
        let hash = self.state.hasher.hash_blocking(password).unwrap();
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        self.store
            .create_user(
                NewUser {
                    username: name,
                    password_hash: &hash,
                    roles: &roles,
                    disabled,
                },
                0,
            )
            .await
            .unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POST /token with a form body.
    pub async fn token(&self, form: &str) -> reqwest::Response {
        self.post_form("/token", form).await
    }

    /// POST `path` with a form body.
    pub async fn post_form(&self, path: &str, form: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_string())
            .send()
            .await
            .unwrap()
    }

    pub async fn login(&self, user: &str, password: &str) -> reqwest::Response {
        self.token(&format!(
            "grant_type=password&username={user}&password={password}"
        ))
        .await
    }

    /// `GET path`, its body as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        json(self.client.get(self.url(path)).send().await.unwrap()).await
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }
}

impl TestApp {
    /// Stops serving (the database stays).
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn json(r: reqwest::Response) -> serde_json::Value {
    let text = r.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

impl TestApp {
    /// Argon2 runs so far (every verification is one observation of `hash_seconds`).
    pub async fn hashes(&self) -> f64 {
        self.metric("gatehouse_token_hash_seconds_count").await
    }

    /// A read-only SQLite connection to the service's database, beside the service's own.
    pub async fn sql(&self) -> sqlx::SqliteConnection {
        sql(&self.db_path).await
    }
}

/// A read-only SQLite connection to `db` (WAL: it reads beside a running writer).
pub async fn sql(db: &std::path::Path) -> sqlx::SqliteConnection {
    use sqlx::ConnectOptions;
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .unwrap()
}

/// What a client can observe of a response, but the `Date` header: status, every
/// other header (sorted) and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub async fn of(r: reqwest::Response) -> Answer {
        let status = r.status().as_u16();
        let mut headers: Vec<(String, String)> = r
            .headers()
            .iter()
            .filter(|(k, _)| *k != "date")
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        headers.sort();
        Answer {
            status,
            headers,
            body: r.text().await.unwrap(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends `request` as raw bytes on a new connection and reads until the server closes
/// it or `wait` passes; returns what came back.
pub async fn raw(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer (and close) before it has read everything: not an error.
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}
