//! The demo topology, for attack tests: the real Envoy running the top-level
//! `envoy.yaml` (the hardened edge configuration users deploy, with only its addresses
//! and ports rewritten to loopback ports the kernel picks), in front of the real token
//! service (`gatehouse-token serve`, its own SQLite file, users made with its CLI) and
//! the demo API (`examples/demo-api`, which echoes what it receives), and the second
//! issuer `partner` (another token service, Ed25519, found by OIDC discovery).
//!
//! [`Edge::FILTER_ALONE`] runs the same file with Envoy's own path and header
//! normalisation switched off and without the early header mutation, so a test can
//! show what the filter does by itself. Every process is stopped on drop.
//!
//! Requests go through [`DemoTopology::call`], [`DemoTopology::send`] or
//! [`DemoTopology::h2`], which say who answered (Envoy itself, the filter, or an
//! upstream) and whether the request reached the demo API (Envoy's
//! `cluster.api.upstream_rq_total`), as an [`Answer`] with a stable one-line form.

use std::fmt;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{now, request, workspace, Envoy, Response, SECRET};

/// The demo token service's `iss` (`gatehouse-token serve --issuer`, the filter's `issuer`).
pub const DEMO_ISSUER: &str = "gatehouse";
/// The demo's audience.
pub const DEMO_AUDIENCE: &str = "api";
/// The filter's `max_token_lifetime_seconds` in `envoy.yaml`.
pub const DEMO_MAX_LIFETIME: i64 = 3600;

/// The demo users, as `demo/seed-users.sh` makes them: (name, password, roles, disabled).
pub const DEMO_USERS: [(&str, &str, &[&str], bool); 3] = [
    ("alice", "alice-demo-pass", &["admin", "user"], false),
    ("bob", "bob-demo-pass", &["user"], false),
    ("carol", "carol-demo-pass", &["user"], true),
];

/// The demo's second issuer (`partner` in `envoy.yaml`), and its users as
/// `demo/seed-users.sh ... partner` makes them: (name, password, roles).
pub const DEMO_PARTNER_ISSUER: &str = "https://partner.example";
pub const DEMO_PARTNER_USERS: [(&str, &str, &[&str]); 1] = [("dave", "dave-demo-pass", &["admin", "user"])];

/// Claims as the demo token service issues them (issuer `gatehouse`, audience `api`),
/// valid for ten minutes.
pub fn demo_claims(sub: &str, roles: &[&str]) -> Value {
    let now = now();
    json!({"iss": DEMO_ISSUER, "aud": DEMO_AUDIENCE, "sub": sub, "roles": roles,
           "iat": now, "exp": now + 600, "jti": format!("test-{sub}-{now}")})
}

/// Which of Envoy's own defences run in front of the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// `normalize_path`, `merge_slashes`, `path_with_escaped_slashes_action:
    /// REJECT_REQUEST` and `headers_with_underscores_action: REJECT_REQUEST`, as in
    /// `envoy.yaml`; when off: `false`, `false`, `KEEP_UNCHANGED`, `ALLOW`.
    pub envoy_normalisation: bool,
    /// The early header mutation that drops `x-auth-*` before any filter runs.
    pub early_identity_strip: bool,
}

impl Edge {
    /// `envoy.yaml` as it is.
    pub const HARDENED: Edge = Edge {
        envoy_normalisation: true,
        early_identity_strip: true,
    };
    /// `envoy.yaml` with Envoy's normalisation and the early header mutation off: only
    /// Envoy's HTTP codec and the filter stand between the client and the API.
    pub const FILTER_ALONE: Edge = Edge {
        envoy_normalisation: false,
        early_identity_strip: false,
    };

    pub fn label(self) -> &'static str {
        match (self.envoy_normalisation, self.early_identity_strip) {
            (true, true) => "hardened",
            (false, false) => "filter alone",
            (true, false) => "normalising, no early strip",
            (false, true) => "early strip, no normalisation",
        }
    }
}

/// `source` (the top-level `envoy.yaml`) with only the listener, admin, `token`,
/// `partner` and `api` addresses rewritten to loopback (listener and admin on port 0) and, for an
/// [`Edge`] other than [`Edge::HARDENED`], the named settings changed. Panics if the
/// file no longer has exactly one of each line it changes, like `demo/envoy-config.sh`.
pub fn demo_envoy_yaml(
    source: &str,
    edge: Edge,
    token_port: u16,
    partner_port: u16,
    api_port: u16,
) -> String {
    let mut yaml = source.to_string();
    let mut swap = |from: &str, to: &str| {
        let count = yaml.matches(from).count();
        assert_eq!(
            count, 1,
            "expected one `{from}` in envoy.yaml, found {count}: the demo harness must be updated"
        );
        yaml = yaml.replace(from, to);
    };
    swap(
        "{address: 0.0.0.0, port_value: 9901}",
        "{address: 127.0.0.1, port_value: 0}",
    );
    swap(
        "{address: 0.0.0.0, port_value: 10000}",
        "{address: 127.0.0.1, port_value: 0}",
    );
    swap(
        "{address: token, port_value: 8080}",
        &format!("{{address: 127.0.0.1, port_value: {token_port}}}"),
    );
    swap(
        "{address: partner, port_value: 8081}",
        &format!("{{address: 127.0.0.1, port_value: {partner_port}}}"),
    );
    swap(
        "{address: api, port_value: 8000}",
        &format!("{{address: 127.0.0.1, port_value: {api_port}}}"),
    );
    if !edge.envoy_normalisation {
        swap("normalize_path: true", "normalize_path: false");
        swap("merge_slashes: true", "merge_slashes: false");
        swap(
            "path_with_escaped_slashes_action: REJECT_REQUEST",
            "path_with_escaped_slashes_action: KEEP_UNCHANGED",
        );
        swap(
            "headers_with_underscores_action: REJECT_REQUEST",
            "headers_with_underscores_action: ALLOW",
        );
    }
    if !edge.early_identity_strip {
        yaml = remove_block(&yaml, "early_header_mutation_extensions:");
    }
    yaml
}

/// `yaml` without the one line whose content is `key` and the lines indented below it.
fn remove_block(yaml: &str, key: &str) -> String {
    let starts: Vec<usize> = yaml
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == key)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(starts.len(), 1, "expected one `{key}` line in envoy.yaml");
    let start = starts[0];
    let indent = |l: &str| l.len() - l.trim_start().len();
    let lines: Vec<&str> = yaml.lines().collect();
    let key_indent = indent(lines[start]);
    let mut end = start + 1;
    // Below the key: deeper lines, and sequence items at its own indentation.
    let below = |l: &str| {
        l.trim().is_empty()
            || indent(l) > key_indent
            || (indent(l) == key_indent && l.trim_start().starts_with("- "))
    };
    while end < lines.len() && below(lines[end]) {
        end += 1;
    }
    let mut out: Vec<&str> = lines[..start].to_vec();
    out.extend_from_slice(&lines[end..]);
    out.join("\n") + "\n"
}

/// `gatehouse-token` and `demo-api`, built once per test process (dev profile, so the
/// test build's dependencies are reused) so they are never stale.
pub fn demo_binaries() -> &'static (PathBuf, PathBuf) {
    static BINS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINS.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "gatehouse-token", "-p", "demo-api"])
            .current_dir(workspace())
            .status()
            .expect("run cargo to build gatehouse-token and demo-api");
        assert!(status.success(), "building gatehouse-token and demo-api failed");
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from);
        let token = target.join("debug/gatehouse-token");
        let api = target.join("debug/demo-api");
        for bin in [&token, &api] {
            assert!(bin.is_file(), "{} missing after the build", bin.display());
        }
        (token, api)
    })
}

/// A child process, killed on drop, its output in `log`.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(mut cmd: Command, log: PathBuf) -> Process {
        let file = std::fs::File::create(&log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        Process { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago (the caller retries if it is taken).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The demo: Envoy with `envoy.yaml`, the token service and the demo API.
pub struct DemoTopology {
    pub envoy: Envoy,
    pub edge: Edge,
    pub token_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// The Envoy configuration that runs.
    pub yaml: String,
    /// The second issuer, `partner`; tests log in to it directly.
    pub partner: TokenIssuer,
    token: Process,
    api: Process,
    _dir: tempfile::TempDir,
}

impl DemoTopology {
    /// `envoy.yaml` as users deploy it.
    pub fn start() -> DemoTopology {
        DemoTopology::start_with(Edge::HARDENED)
    }

    pub fn start_with(edge: Edge) -> DemoTopology {
        let wasm = crate::wasm_path();
        let (token_bin, api_bin) = demo_binaries();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("users.db");
        for (name, password, roles, disabled) in DEMO_USERS {
            seed_user(token_bin, &db, name, password, roles, disabled);
        }

        let mut token_cmd = Command::new(token_bin);
        token_cmd
            .arg("--db")
            .arg(&db)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--issuer",
                DEMO_ISSUER,
                "--audience",
                DEMO_AUDIENCE,
                "--trust-forwarded-for",
                "--signing-alg",
                "HS256",
            ])
            .env("SECRET_KEY", SECRET)
            .env("RUST_LOG", "info");
        let mut token = Process::spawn(token_cmd, dir.path().join("token.log"));
        let token_addr = wait_for_token_service(&mut token);

        let (api, api_addr) = start_api(api_bin, dir.path());
        let partner = TokenIssuer::start(DEMO_PARTNER_ISSUER, "EdDSA", &DEMO_PARTNER_USERS);

        let source = std::fs::read_to_string(workspace().join("envoy.yaml")).unwrap();
        let yaml = demo_envoy_yaml(
            &source,
            edge,
            token_addr.port(),
            partner.addr.port(),
            api_addr.port(),
        );
        // envoy.yaml names the .wasm relative to the workspace, as `make demo` runs it.
        assert!(wasm.starts_with(workspace()), "{}", wasm.display());
        let envoy = Envoy::launch_in(&yaml, Some(SECRET), None, Some(&workspace()))
            .unwrap_or_else(|f| panic!("Envoy did not start on envoy.yaml ({}): {f:?}", edge.label()));
        let demo = DemoTopology {
            envoy,
            edge,
            token_addr,
            api_addr,
            yaml,
            partner,
            token,
            api,
            _dir: dir,
        };
        demo.wait_until("the demo answers GET /healthz through Envoy", || {
            demo.envoy.call("GET", "/healthz", &[]).status == 200
        });
        demo.wait_until("the token service is ready", || {
            request(token_addr, "GET /readyz HTTP/1.1\r\nHost: token\r\n\r\n").is_ok_and(|r| r.status == 200)
        });
        // The revocation feed is polled through the rewritten `token` cluster.
        demo.wait_until("a first revocation poll", || {
            demo.envoy
                .counters()
                .get("gatehouse.revocation.poll_ok")
                .is_some_and(|n| *n >= 1)
        });
        // The partner's keys, by discovery through the rewritten `partner` cluster.
        demo.wait_until("the partner's keys", || {
            demo.envoy
                .counters()
                .get("gatehouse.provider.partner.jwks.fetch_ok")
                .is_some_and(|n| *n >= 1)
        });
        demo
    }

    /// Polls `ok` every 100 ms; fails after 20 s naming `what`, with the logs.
    fn wait_until(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ok() {
            assert!(
                Instant::now() < deadline,
                "the demo ({}) is not ready: timed out waiting for {what}\n{}",
                self.edge.label(),
                self.logs()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the token service with SIGKILL (Envoy keeps running).
    pub fn kill_token_service(&mut self) {
        let _ = self.token.child.kill();
        let _ = self.token.child.wait();
    }

    /// Kills the demo API with SIGKILL (Envoy keeps running).
    pub fn kill_api(&mut self) {
        let _ = self.api.child.kill();
        let _ = self.api.child.wait();
    }

    /// The logs of the three processes, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- envoy ({})\n{}\n--- token\n{}\n--- api\n{}",
            self.edge.label(),
            self.envoy.log(),
            self.token.log(),
            self.api.log()
        )
    }

    /// `POST /token` through Envoy (the OAuth2 password grant).
    pub fn login(&self, user: &str, password: &str) -> Response {
        self.envoy.post_form(
            "/token",
            &format!("grant_type=password&username={user}&password={password}"),
        )
    }

    /// An access token for a demo user, by logging in through Envoy.
    pub fn access_token(&self, user: &str) -> String {
        let (_, password, _, _) = DEMO_USERS
            .iter()
            .find(|u| u.0 == user)
            .unwrap_or_else(|| panic!("{user} is not a demo user"));
        let r = self.login(user, password);
        assert_eq!(
            r.status,
            200,
            "{user} could not log in: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()["access_token"].as_str().unwrap().to_string()
    }

    /// Requests Envoy sent to the demo API so far.
    pub fn api_requests(&self) -> u64 {
        self.envoy
            .stat("cluster.api.upstream_rq_total")
            .expect("Envoy has no cluster.api.upstream_rq_total")
    }

    /// A raw request (see [`crate::request`]) to the listener.
    pub fn send(&self, raw: impl AsRef<[u8]>) -> Observed {
        self.observe(|| self.envoy.send(raw))
    }

    /// `method path` over HTTP/1.1 with `headers`.
    pub fn call(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Observed {
        self.observe(|| self.envoy.call(method, path, headers))
    }

    /// `method path` over HTTP/2 (prior knowledge, with `curl`; a test that needs it
    /// fails when curl is missing). The path is sent as it is.
    pub fn h2(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Observed {
        let addr: SocketAddr = ([127, 0, 0, 1], self.envoy.port).into();
        self.observe(|| h2_request(addr, method, path, headers))
    }

    fn observe(&self, send: impl FnOnce() -> Response) -> Observed {
        let before = self.api_requests();
        let response = send();
        let reached_api = self.api_requests() > before;
        Observed {
            response,
            reached_api,
        }
    }
}

fn seed_user(bin: &Path, db: &Path, name: &str, password: &str, roles: &[&str], disabled: bool) {
    let mut cmd = Command::new(bin);
    cmd.arg("--db").arg(db).args(["user", "add", name]);
    for role in roles {
        cmd.args(["--role", role]);
    }
    if disabled {
        cmd.arg("--disabled");
    }
    let mut child = cmd
        .env("SECRET_KEY", SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "gatehouse-token user add {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The address the token service logged once it listened.
fn wait_for_token_service(token: &mut Process) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = token.log();
        if let Some(addr) = log
            .lines()
            .filter(|l| l.contains("gatehouse-token listening"))
            .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("address=")))
            .and_then(|a| a.parse().ok())
        {
            return addr;
        }
        assert!(!token.exited(), "the token service exited:\n{log}");
        assert!(
            Instant::now() < deadline,
            "the token service did not start:\n{log}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The demo API on a free loopback port (another one if that port was taken meanwhile).
fn start_api(bin: &Path, dir: &Path) -> (Process, SocketAddr) {
    for attempt in 0..5 {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut cmd = Command::new(bin);
        cmd.arg("--listen").arg(addr.to_string());
        let mut api = Process::spawn(cmd, dir.join(format!("api-{attempt}.log")));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if api.exited() {
                break;
            }
            if api.log().contains("demo-api listening on")
                && request(addr, "GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n").is_ok_and(|r| r.status == 200)
            {
                return (api, addr);
            }
            assert!(
                Instant::now() < deadline,
                "the demo API did not start:\n{}",
                api.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("the demo API could not listen on a free port in five attempts");
}

/// `method path` over HTTP/2 with prior knowledge, by `curl` (`--path-as-is`: the path
/// is sent exactly as given). Panics if curl is missing or cannot connect.
pub fn h2_request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-i",
        "--http2-prior-knowledge",
        "--path-as-is",
        "--max-time",
        "10",
        "-X",
        method,
    ]);
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    cmd.arg(format!("http://{addr}{path}"));
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("HTTP/2 tests need curl with HTTP/2 support: {e}"));
    assert!(
        out.status.success(),
        "curl {method} {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header block from curl: {}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    assert!(status_line.starts_with("HTTP/2 "), "not HTTP/2: {status_line}");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// A response and whether the request reached the demo API.
#[derive(Debug, Clone)]
pub struct Observed {
    pub response: Response,
    pub reached_api: bool,
}

impl Observed {
    pub fn status(&self) -> u16 {
        self.response.status
    }

    /// Who answered, and what the API saw if the request reached it.
    pub fn answer(&self) -> Answer {
        let r = &self.response;
        let body: Option<Value> = serde_json::from_slice(&r.body).ok();
        // Envoy marks what an upstream answered; a request whose headers reached the API
        // while the filter held its body is answered by the filter, without the mark.
        let from_upstream = r.header("x-envoy-upstream-service-time").is_some();
        if self.reached_api && from_upstream {
            let echo = body.as_ref().and_then(|b| {
                let request = b.get("request").unwrap_or(b);
                request.get("method").map(|_| request.clone())
            });
            return Answer::Api {
                status: r.status,
                echo,
            };
        }
        if from_upstream {
            return Answer::TokenService { status: r.status };
        }
        if let Some(error) = body.as_ref().and_then(|b| b.get("error")).and_then(Value::as_str) {
            let description = body
                .as_ref()
                .and_then(|b| b.get("error_description"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Answer::Filter {
                status: r.status,
                reason: filter_reason(error, description),
            };
        }
        // No body (an answer to HEAD): the filter's answers are JSON with no-store, and
        // its challenge names the reason.
        if r.header("content-type") == Some("application/json")
            && r.header("cache-control") == Some("no-store")
        {
            let challenge = r.header("www-authenticate").unwrap_or_default();
            let field = |name: &str| {
                challenge
                    .split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or_default()
                    .to_string()
            };
            let (error, description) = (field("error"), field("error_description"));
            let reason = if error.is_empty() && r.status == 401 && challenge.starts_with("Bearer ") {
                "missing_token".to_string()
            } else {
                filter_reason(&error, &description)
            };
            return Answer::Filter {
                status: r.status,
                reason,
            };
        }
        Answer::Envoy { status: r.status }
    }

    /// The headers the API received (lower-case names, every value), if it echoed them.
    pub fn api_headers(&self) -> Vec<(String, String)> {
        match self.answer() {
            Answer::Api { echo: Some(echo), .. } => echo_headers(&echo),
            _ => Vec::new(),
        }
    }

    /// Whether the API's `DELETE /users/{id}` handler ran.
    pub fn api_deleted(&self) -> bool {
        self.reached_api
            && serde_json::from_slice::<Value>(&self.response.body)
                .ok()
                .is_some_and(|b| b.get("deleted").is_some())
    }
}

/// Who answered a request, in a stable one-line form (see [`fmt::Display`]):
/// `envoy 400`, `filter 403 forbidden`, `api 200 DELETE /users/42 sub=alice roles=admin,user`.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Envoy itself (its codec or router), before or without the filter.
    Envoy { status: u16 },
    /// The filter's own JSON answer; `reason` is the name of the filter's counter
    /// (`denied.<reason>`) for its fixed `error_description`.
    Filter { status: u16, reason: String },
    /// The demo API answered; `echo` is what it saw (method, path, query, headers).
    Api { status: u16, echo: Option<Value> },
    /// Another upstream (the token service) answered.
    TokenService { status: u16 },
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Envoy { status } => write!(f, "envoy {status}"),
            Answer::Filter { status, reason } => write!(f, "filter {status} {reason}"),
            Answer::TokenService { status } => write!(f, "token-service {status}"),
            Answer::Api { status, echo } => {
                write!(f, "api {status}")?;
                if let Some(echo) = echo {
                    let s = |k: &str| {
                        echo.get(k)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    write!(f, " {} {}", s("method"), s("path"))?;
                    if let Some(q) = echo.get("query").and_then(Value::as_str) {
                        write!(f, "?{q}")?;
                    }
                    let headers = echo_headers(echo);
                    for name in ["x-auth-sub", "x-auth-roles"] {
                        let values: Vec<&str> = headers
                            .iter()
                            .filter(|(k, _)| k == name)
                            .map(|(_, v)| v.as_str())
                            .collect();
                        if !values.is_empty() {
                            write!(f, " {}={}", name.trim_start_matches("x-auth-"), values.join("|"))?;
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

fn echo_headers(echo: &Value) -> Vec<(String, String)> {
    echo.get("headers")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .flat_map(|(k, vs)| {
                    vs.as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(move |v| (k.clone(), v.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The filter's counter name for its fixed `error_description` (`src/decision.rs`).
fn filter_reason(error: &str, description: &str) -> String {
    const REASONS: [(&str, &str); 27] = [
        ("a Bearer token is required", "missing_token"),
        ("more than one Authorization header", "authorization_repeated"),
        (
            "the Authorization header must be 'Bearer <token>'",
            "authorization_malformed",
        ),
        ("the request method is not valid", "bad_method"),
        ("the request path is ambiguous", "ambiguous_path"),
        ("the token is too large", "token_too_large"),
        ("the token is malformed", "malformed"),
        ("the token's signing key is unknown", "unknown_key"),
        ("the signing keys are not loaded yet", "no_keys"),
        (
            "the token header has a parameter that is not accepted",
            "header_refused",
        ),
        ("the token algorithm is not accepted", "algorithm"),
        ("the token signature is invalid", "signature"),
        ("the token has expired", "expired"),
        ("the token is not valid yet", "not_yet_valid"),
        ("the token was issued in the future", "issued_in_future"),
        ("the token lifetime is too long", "lifetime"),
        ("the token issuer is not accepted", "issuer"),
        ("the token audience is not accepted", "audience"),
        ("the token claims are invalid", "claims"),
        (
            "the token issuer is not accepted on this route",
            "provider_not_accepted",
        ),
        (
            "the token does not have a claim this route requires",
            "claim_mismatch",
        ),
        (
            "a cookie token on a state-changing request needs an allowed Origin",
            "cross_site",
        ),
        (
            "more than one credential: send the token once",
            "credentials_conflict",
        ),
        ("the token lacks a required role", "forbidden"),
        ("this route is closed", "closed"),
        ("the token has been revoked", "revoked"),
        ("the revocation list is out of date", "revocation_stale"),
    ];
    REASONS
        .iter()
        .find(|(d, _)| *d == description)
        .map_or_else(|| format!("{error}?{description}"), |(_, r)| (*r).to_string())
}

/// A `gatehouse-token` of its own, as one identity provider among several: its own
/// issuer, signing algorithm, users and database, answering OIDC discovery and its
/// JWKS. The filter reaches it through an Envoy cluster; tests log in to it directly.
pub struct TokenIssuer {
    pub addr: SocketAddr,
    pub issuer: String,
    bin: PathBuf,
    db: PathBuf,
    process: Process,
    _dir: tempfile::TempDir,
}

impl TokenIssuer {
    /// Starts one with `issuer` (also its public URL, so its discovery document names
    /// `<issuer>/.well-known/jwks.json`), signing with `alg` (`EdDSA` or `ES256`), with
    /// `users` as (name, password, roles).
    pub fn start(issuer: &str, alg: &str, users: &[(&str, &str, &[&str])]) -> TokenIssuer {
        let (bin, _) = demo_binaries();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("users.db");
        for (name, password, roles) in users {
            seed_user(bin, &db, name, password, roles, false);
        }
        keys_command(bin, &db, &["rotate", "--alg", alg, "--now"]);
        let mut cmd = Command::new(bin);
        cmd.arg("--db")
            .arg(&db)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--issuer",
                issuer,
                "--public-url",
                issuer,
            ])
            .args(["--audience", DEMO_AUDIENCE, "--signing-alg", alg])
            .env("SECRET_KEY", SECRET)
            .env("RUST_LOG", "info");
        let mut process = Process::spawn(cmd, dir.path().join("token.log"));
        let addr = wait_for_token_service(&mut process);
        TokenIssuer {
            addr,
            issuer: issuer.to_string(),
            bin: bin.clone(),
            db,
            process,
            _dir: dir,
        }
    }

    /// A new signing key, signing at once (the old one stays published).
    pub fn rotate_now(&self, alg: &str) {
        keys_command(&self.bin, &self.db, &["rotate", "--alg", alg, "--now"]);
    }

    /// An access token for `user`, by the password grant.
    pub fn access_token(&self, user: &str, password: &str) -> String {
        let form = format!("grant_type=password&username={user}&password={password}");
        let head = format!(
            "POST /token HTTP/1.1\r\nHost: idp\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        );
        let r = request(self.addr, head).unwrap();
        assert_eq!(
            r.status,
            200,
            "login at {}: {}",
            self.issuer,
            String::from_utf8_lossy(&r.body)
        );
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    /// Stops it with SIGKILL: an outage of this provider.
    pub fn kill(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}

fn keys_command(bin: &Path, db: &Path, args: &[&str]) {
    let out = Command::new(bin)
        .arg("--db")
        .arg(db)
        .arg("keys")
        .args(args)
        .env("SECRET_KEY", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keys {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> String {
        std::fs::read_to_string(workspace().join("envoy.yaml")).unwrap()
    }

    #[test]
    fn only_addresses_change_on_the_hardened_edge() {
        let src = source();
        let out = demo_envoy_yaml(&src, Edge::HARDENED, 1111, 3333, 2222);
        let changed: Vec<(&str, &str)> = src.lines().zip(out.lines()).filter(|(a, b)| a != b).collect();
        assert_eq!(src.lines().count(), out.lines().count());
        assert_eq!(changed.len(), 5, "{changed:#?}");
        for (_, new) in &changed {
            assert!(new.contains("address: 127.0.0.1"), "{new}");
        }
        assert!(out.contains("{address: 127.0.0.1, port_value: 1111}"));
        assert!(out.contains("{address: 127.0.0.1, port_value: 2222}"));
        assert!(out.contains("{address: 127.0.0.1, port_value: 3333}"));
    }

    #[test]
    fn the_filter_alone_edge_switches_off_exactly_envoys_defences() {
        let src = source();
        let out = demo_envoy_yaml(&src, Edge::FILTER_ALONE, 1111, 3333, 2222);
        for gone in [
            "normalize_path: true",
            "merge_slashes: true",
            "REJECT_REQUEST",
            "early_header_mutation_extensions",
            "remove_on_match",
        ] {
            assert!(!out.contains(gone), "{gone}");
        }
        for kept in [
            "normalize_path: false",
            "merge_slashes: false",
            "path_with_escaped_slashes_action: KEEP_UNCHANGED",
            "headers_with_underscores_action: ALLOW",
            "use_remote_address: true",
            "route_config:",
        ] {
            assert!(out.contains(kept), "{kept}");
        }
        let removed = src.lines().count() - out.lines().count();
        assert_eq!(removed, 6, "the early header mutation block is 6 lines");
    }
}
