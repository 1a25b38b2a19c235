//! The `gatehouse-token` binary as a real process: `serve` on a kernel-chosen port,
//! and the command line. The environment is cleared, so nothing from the caller's
//! (`GATEHOUSE_*`, `SECRET_KEY`) leaks in.
//!
//! The binary is the one Cargo built for these tests, or `GATEHOUSE_TOKEN_BIN` if set
//! (`GATEHOUSE_TOKEN_BIN=target/release/gatehouse-token` runs them against a release
//! build).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse_token::store::Location;

pub const BIN: &str = env!("CARGO_BIN_EXE_gatehouse-token");

/// The binary under test: `GATEHOUSE_TOKEN_BIN`, else [`BIN`].
pub fn bin() -> String {
    std::env::var("GATEHOUSE_TOKEN_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// A `gatehouse-token serve` process, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `serve --listen 127.0.0.1:0 <args>` on `db` with `SECRET_KEY` set and
    /// `RUST_LOG=<rust_log>` (at least `info`: the address is read from the log).
    pub fn start(db: &Path, args: &[&str], rust_log: &str) -> Server {
        Server::start_at(&Location::Sqlite(db.to_path_buf()), args, rust_log)
    }

    /// Like [`Server::start`], on any database (a PostgreSQL URL goes in `DATABASE_URL`,
    /// as a deployment would pass it, never on the command line).
    pub fn start_at(db: &Location, args: &[&str], rust_log: &str) -> Server {
        let mut child = command(db)
            .env("SECRET_KEY", super::SECRET)
            .env("RUST_LOG", rust_log)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let sink = log.clone();
        // Drained all the time: a full pipe would block the server.
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = log.lock().unwrap().clone();
            let addr = text
                .lines()
                .find(|l| l.contains("gatehouse-token listening"))
                .and_then(|l| l.split("address=").nth(1))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|a| a.parse().ok());
            if let Some(addr) = addr {
                return Server { child, addr, log };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("serve exited early ({status}): {text}");
            }
            assert!(Instant::now() < deadline, "serve did not start: {text}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no flush, no checkpoint.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        self.child.wait().unwrap()
    }

    /// Everything the process wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the command line on `db` with `args`, `stdin` written to it, and `env` (on
/// top of a cleared environment).
pub fn cli(db: &Path, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    cli_at(&Location::Sqlite(db.to_path_buf()), args, stdin, env)
}

/// Like [`cli`], on any database.
pub fn cli_at(db: &Location, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut child = spawn_cli_at(db, args, env);
    let mut input = child.stdin.take().unwrap();
    // A process that refuses early may close its stdin first.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    child.wait_with_output().unwrap()
}

/// The command line started, its stdin, stdout and stderr piped.
pub fn spawn_cli(db: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    spawn_cli_at(&Location::Sqlite(db.to_path_buf()), args, env)
}

fn spawn_cli_at(db: &Location, args: &[&str], env: &[(&str, &str)]) -> Child {
    command(db)
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The binary with a cleared environment, pointed at `db`.
fn command(db: &Location) -> Command {
    let mut cmd = Command::new(bin());
    cmd.env_clear();
    match db {
        Location::Sqlite(path) => cmd.arg("--db").arg(path),
        Location::Postgres(url) => cmd.env("DATABASE_URL", url),
    };
    cmd
}

/// stdout and stderr of a finished process, as text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Reads what is left of a child's stdout and stderr (after it was killed).
pub fn drain(child: &mut Child) -> String {
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut out);
    }
    out
}
