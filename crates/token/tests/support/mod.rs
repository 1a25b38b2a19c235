//! A token service on a kernel-chosen port, with a real SQLite file.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_token::issue::Issuer;
use gatehouse_token::limiter::FailureLimiter;
use gatehouse_token::metrics::Metrics;
use gatehouse_token::passwords::{Hasher, OWASP_MIN};
use gatehouse_token::store::{NewUser, Store};
use gatehouse_token::{secret, AppState};
use tokio::sync::oneshot;

pub const SECRET: &str = "6b0a1f4c2e9d8b7a6f5e4d3c2b1a09f8e7d6c5b4a3928170f6e5d4c3b2a19080";
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
        let store = Store::open(&db_path).await.unwrap();
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
