//! The token service under load: logins per second against the raw Argon2 rate of the
//! same parameters on the same cores, `/healthz` latency while logins flood it, and
//! refresh-grant throughput.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gatehouse_token::passwords::{Hasher, OWASP_MIN};

pub struct TokenFigures {
    pub cores: usize,
    pub raw_hashes_per_second: f64,
    pub logins_per_second: f64,
    pub healthz_p50_ms: f64,
    pub healthz_p99_ms: f64,
    pub refreshes_per_second: f64,
}

pub const PASSWORD: &str = "bench-password-123";

/// The form of a password login as user `bench` (with `password`).
pub fn login_form(password: &str) -> String {
    format!("grant_type=password&username=bench&password={password}")
}

/// A `gatehouse-token serve` process, stopped on drop.
pub struct Service(Child);

impl Service {
    /// Starts `serve` (a command whose arguments end in `serve ... --listen 127.0.0.1:0`)
    /// with `secret` as SECRET_KEY and returns it with the address it listens on.
    pub fn start(mut serve: Command, secret: &str) -> anyhow::Result<(Service, String)> {
        let mut child = serve
            .env("SECRET_KEY", secret)
            .env("RUST_LOG", "warn,gatehouse_token=info")
            .stderr(Stdio::piped())
            .spawn()
            .context("starting gatehouse-token serve")?;
        let stderr = child.stderr.take().context("stderr")?;
        let service = Service(child);
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let addr = loop {
            let Some(line) = lines.next() else {
                bail!("gatehouse-token exited before listening:\n{}", seen.join("\n"));
            };
            let line = line?;
            if let Some(rest) = line.split("address=").nth(1) {
                break rest.split_whitespace().next().unwrap_or_default().to_string();
            }
            seen.push(line);
        };
        // Keep draining the log so a full pipe never blocks the service.
        std::thread::spawn(move || lines.for_each(drop));
        Ok((service, addr))
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn measure(binary: &Path, secret: &str, seconds: u64) -> anyhow::Result<TokenFigures> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let raw = raw_argon2_rate(cores, Duration::from_secs(seconds))?;

    let dir = std::env::temp_dir().join(format!("gatehouse-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("users.db");
    let _ = std::fs::remove_file(&db);
    let mut add = Command::new(binary);
    add.arg("--db").arg(&db);
    add_user(add)?;

    let mut serve = Command::new(binary);
    serve
        .arg("--db")
        .arg(&db)
        // Failed logins never happen here; lift the limits so a long run cannot trip them.
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-failures-per-address",
            "1000000",
        ]);
    let (service, addr) = Service::start(serve, secret)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let figures = runtime.block_on(load(&addr, cores, Duration::from_secs(seconds)))?;
    drop(service);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(TokenFigures {
        cores,
        raw_hashes_per_second: raw,
        ..figures
    })
}

/// Adds user `bench` (role `user`) with `add`, a `gatehouse-token` command pointed at
/// the database.
pub fn add_user(mut add: Command) -> anyhow::Result<()> {
    let mut add = add
        .args(["user", "add", "bench", "--role", "user"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("running gatehouse-token")?;
    add.stdin
        .take()
        .context("stdin")?
        .write_all(format!("{PASSWORD}\n").as_bytes())?;
    if !add.wait()?.success() {
        bail!("could not add the bench user");
    }
    Ok(())
}

/// Argon2id verifications per second, one thread per core, with the service's default
/// parameters: the physical limit of a login on this machine.
fn raw_argon2_rate(cores: usize, duration: Duration) -> anyhow::Result<f64> {
    let hasher = Hasher::new(OWASP_MIN, cores, Duration::from_secs(1))?;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..cores {
            let (hasher, done) = (&hasher, done.clone());
            s.spawn(move || {
                while started.elapsed() < duration {
                    if hasher.hash_blocking(PASSWORD).is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

async fn load(addr: &str, cores: usize, duration: Duration) -> anyhow::Result<TokenFigures> {
    let client = reqwest::Client::new();
    let token_url = format!("http://{addr}/token");
    let login_form = login_form(PASSWORD);

    // Logins from wrk (a C client, light on the shared cores), four connections per
    // hashing slot so a slot never waits for a client busy with the rest of a login.
    let script = std::env::temp_dir().join(format!("gatehouse-bench-login-{}.lua", std::process::id()));
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = \"{login_form}\"\nwrk.headers[\"Content-Type\"] = \"application/x-www-form-urlencoded\"\n"
        ),
    )?;
    let flood = tokio::process::Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{}", 4 * cores),
            &format!("-d{}s", duration.as_secs().max(1)),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(&token_url)
        .output();
    let started = Instant::now();
    // Meanwhile, /healthz every 10 ms.
    let sampler = async {
        let mut health = Vec::new();
        while started.elapsed() < duration {
            let t = Instant::now();
            let r = client.get(format!("http://{addr}/healthz")).send().await?;
            if r.status() != 200 {
                bail!("/healthz answered {} during the login flood", r.status());
            }
            health.push(t.elapsed().as_secs_f64() * 1000.0);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        anyhow::Ok(health)
    };
    let (out, health) = tokio::join!(flood, sampler);
    let _ = std::fs::remove_file(&script);
    let out = out.context("running wrk")?;
    let mut health = health?;
    let report = String::from_utf8_lossy(&out.stdout);
    let logins = crate::wrk::parse(&report)
        .context("the login flood")?
        .requests_per_second;

    health.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        health
            .get(((health.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };

    // Refresh grants: one rotating chain per client.
    let refreshed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..2 * cores {
        let (client, url, form, refreshed) = (
            client.clone(),
            token_url.clone(),
            login_form.clone(),
            refreshed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut token = refresh_token_of(
                client
                    .post(&url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form),
            )
            .await?;
            while started.elapsed() < duration {
                token = refresh_token_of(
                    client
                        .post(&url)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(format!("grant_type=refresh_token&refresh_token={token}")),
                )
                .await?;
                refreshed.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let refreshes = refreshed.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();

    Ok(TokenFigures {
        cores,
        raw_hashes_per_second: 0.0,
        logins_per_second: logins,
        healthz_p50_ms: pct(0.5),
        healthz_p99_ms: pct(0.99),
        refreshes_per_second: refreshes,
    })
}

async fn refresh_token_of(request: reqwest::RequestBuilder) -> anyhow::Result<String> {
    let r = request.send().await?;
    let status = r.status();
    let body: serde_json::Value = serde_json::from_str(&r.text().await?)?;
    if status != 200 {
        bail!("token endpoint answered {status}: {body}");
    }
    body["refresh_token"]
        .as_str()
        .map(str::to_owned)
        .context("no refresh_token")
}
