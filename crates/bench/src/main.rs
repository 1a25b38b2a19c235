//! `make bench`: requests/s through the same Envoy 1.40 with no filter, an empty
//! proxy-wasm filter, Envoy's native jwt_authn + rbac (with and without its cache) and
//! Gatehouse, in one run, alternated round by round; then the token service against the
//! raw Argon2 rate (SQLite, one process), and on PostgreSQL with one and two replicas
//! behind one Envoy. Writes `docs/benchmarks.md` (between its markers) and
//! `docs/benchmarks.png`. `--smoke` runs every step for a second and writes nothing
//! under `docs/`; nor does `--only`. The PostgreSQL part needs a server:
//! `GATEHOUSE_TEST_DATABASE_URL` (`make bench` runs under `scripts/with-test-postgres.sh`).

mod cpu;
mod keys;
mod replicas;
mod report;
mod revocation_sync;
mod setups;
mod token_service;
mod wrk;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use gatehouse_testkit::{envoy_bin, mint_with, request, wasm_path, workspace, Envoy, SECRET};
use serde_json::json;

use keys::Tokens;
use report::SetupFigures;
use setups::{Modules, Setup, AUDIENCE, ISSUER, PATH};

#[derive(Parser)]
#[command(about = "Benchmarks Gatehouse against no filter and Envoy's native jwt_authn + rbac")]
struct Args {
    /// Rounds; each runs every set-up once, in turn.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Seconds of load per set-up per round.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// wrk connections.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Seconds for each token-service measurement.
    #[arg(long, default_value_t = 10)]
    token_seconds: u64,
    /// Rounds of the token service on PostgreSQL (each: logins, then refresh grants, with
    /// one and two replicas alternately), `--token-seconds` each.
    #[arg(long, default_value_t = 3)]
    replica_rounds: u32,
    /// Skip the token service.
    #[arg(long)]
    skip_token: bool,
    /// Run one part only; prints its section and writes nothing under docs/.
    #[arg(long, value_enum)]
    only: Option<Part>,
    /// One round of one second, token service for one second, nothing written to docs/.
    #[arg(long)]
    smoke: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// The Envoy set-ups (filters).
    Filters,
    /// The token service: SQLite, then PostgreSQL with one and two replicas.
    TokenService,
    /// The revocation set's per-tick cost on a worker, before and after.
    Revocation,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        (args.rounds, args.seconds, args.token_seconds, args.replica_rounds) = (1, 1, 1, 1);
    }
    let filters = args.only.is_none_or(|p| p == Part::Filters);
    let token_part = !args.skip_token && args.only.is_none_or(|p| p == Part::TokenService);
    let revocation_part = args.only.is_none_or(|p| p == Part::Revocation);
    if token_part {
        // Fail now rather than after the filters' quarter of an hour.
        replicas::server_url()?;
    }
    let root = workspace();
    let out_dir = if args.smoke || args.only.is_some() {
        std::env::temp_dir().join("gatehouse-bench-smoke")
    } else {
        root.join("docs")
    };
    std::fs::create_dir_all(&out_dir)?;

    let figures = if filters {
        measure_filters(&args, &root)?
    } else {
        vec![]
    };

    let token = if token_part {
        let token_bin = build(
            &root,
            &["-p", "gatehouse-token"],
            "target/release/gatehouse-token",
        )?;
        println!("bench: token service ({} s per measure)", args.token_seconds);
        let sqlite = token_service::measure(&token_bin, SECRET, args.token_seconds)?;
        println!(
            "bench: token service on PostgreSQL, one and two replicas behind Envoy ({} round(s) of {} s)",
            args.replica_rounds, args.token_seconds
        );
        let postgres = replicas::measure(
            &token_bin,
            SECRET,
            args.token_seconds,
            args.replica_rounds,
            !args.smoke,
        )?;
        Some((sqlite, postgres))
    } else {
        None
    };

    let revocation = if revocation_part {
        println!(
            "bench: the revocation set in step across workers, {} entries",
            revocation_sync::ENTRIES
        );
        Some(revocation_sync::measure(if args.smoke { 3 } else { 25 })?)
    } else {
        None
    };

    let ctx = report::Context_ {
        command: if args.smoke {
            "make bench-smoke"
        } else if args.only.is_some() {
            "gatehouse-bench --only"
        } else {
            "make bench"
        },
        date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine: machine(),
        envoy_version: command_output(envoy_bin().to_str().unwrap_or("envoy"), &["--version"])
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string(),
        wasm_bytes: if filters {
            std::fs::metadata(wasm_path())?.len()
        } else {
            0
        },
        rounds: args.rounds,
        seconds: args.seconds,
        connections: args.connections,
    };
    let section = report::markdown(
        &ctx,
        &figures,
        token.as_ref().map(|(sqlite, _)| sqlite),
        token.as_ref().map(|(_, postgres)| postgres),
        revocation.as_ref(),
    );
    println!("\n{section}");
    report::write_markdown(&out_dir.join("benchmarks.md"), &section)?;
    if !figures.is_empty() {
        report::chart(&out_dir.join("benchmarks.png"), &figures)?;
    }
    println!(
        "bench: wrote {}{}",
        out_dir.join("benchmarks.md").display(),
        if figures.is_empty() {
            ""
        } else {
            " and benchmarks.png"
        }
    );
    Ok(())
}

/// Every Envoy set-up, round after round.
fn measure_filters(args: &Args, root: &Path) -> anyhow::Result<Vec<SetupFigures>> {
    let floor = build(
        root,
        &["--target", "wasm32-wasip1", "-p", "noop-filter"],
        "target/wasm32-wasip1/release/noop_filter.wasm",
    )?;
    let floor_lean = root.join("target/noop_filter.lean.wasm");
    wasm_trim::trim_file(&root.join("crates/noop-filter/exports.txt"), &floor, &floor_lean)?;
    let modules = Modules {
        gatehouse: wasm_path().to_path_buf(),
        floor,
        floor_lean,
    };

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cpus >= 2 && Command::new("taskset").arg("-V").output().is_ok();
    let (envoy_cpu, wrk_cpu) = if pinned {
        (Some("0"), Some("1"))
    } else {
        (None, None)
    };

    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let claims = |roles: &[&str]| json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "roles": roles, "iat": now, "exp": now + 3600});
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let hs = Tokens {
        valid: mint_with(header, &claims(&["user"]), SECRET.as_bytes()),
        forged: mint_with(header, &claims(&["user"]), b"not the key, but 32 bytes long.."),
        wrong_role: mint_with(header, &claims(&["guest"]), SECRET.as_bytes()),
    };
    let asym = keys::AsymKeys::generate();
    let ed = asym.tokens("EdDSA", &claims(&["user"]), &claims(&["guest"]))?;
    let es = asym.tokens("ES256", &claims(&["user"]), &claims(&["guest"]))?;
    let tokens_for = |setup: Setup| match setup.alg() {
        "EdDSA" => &ed,
        "ES256" => &es,
        _ => &hs,
    };

    println!(
        "bench: starting {} Envoys (one worker each{})",
        Setup::ALL.len(),
        if pinned { ", CPU 0" } else { "" }
    );
    let mut envoys = Vec::new();
    for setup in Setup::ALL {
        let yaml = setup.envoy_yaml(SECRET, &asym.jwks, &modules);
        let envoy = Envoy::launch(&yaml, Some(SECRET), envoy_cpu)
            .map_err(|f| anyhow::anyhow!("{} did not start: {}", setup.label(), f.log))?;
        check(setup, &envoy, tokens_for(setup))?;
        envoys.push((setup, envoy));
    }
    println!("bench: every set-up answers 200 / 401 / 403 as it must");

    let mut figures: Vec<SetupFigures> = Setup::ALL
        .iter()
        .map(|&setup| SetupFigures {
            setup,
            rps: vec![],
            p50_ms: vec![],
            p99_ms: vec![],
            cpu_us: vec![],
            rss_mib: 0.0,
        })
        .collect();
    for (setup, envoy) in &envoys {
        // Warm-up: JIT tiers, connection pools, caches.
        wrk::run(
            &url(envoy),
            &tokens_for(*setup).valid,
            args.connections,
            1,
            wrk_cpu,
        )?;
    }
    for round in 1..=args.rounds {
        for ((setup, envoy), f) in envoys.iter().zip(figures.iter_mut()) {
            let cpu_before = cpu::seconds(envoy.pid())?;
            let r = wrk::run(
                &url(envoy),
                &tokens_for(*setup).valid,
                args.connections,
                args.seconds,
                wrk_cpu,
            )
            .with_context(|| format!("round {round}, {}", setup.label()))?;
            // Envoy's own CPU (every thread) for the requests wrk counted; its idle
            // work over the run (a tick, stats) is noise well below a microsecond.
            let cpu_us = (cpu::seconds(envoy.pid())? - cpu_before) * 1e6 / r.requests.max(1) as f64;
            println!(
                "bench: round {round} {:<34} {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms  CPU {:.1} us/request",
                setup.label(),
                r.requests_per_second,
                r.p50_ms,
                r.p99_ms,
                cpu_us
            );
            f.cpu_us.push(cpu_us);
            f.rps.push(r.requests_per_second);
            f.p50_ms.push(r.p50_ms);
            f.p99_ms.push(r.p99_ms);
        }
    }
    for ((_, envoy), f) in envoys.iter().zip(figures.iter_mut()) {
        f.rss_mib = rss_mib(envoy.pid()).unwrap_or(0.0);
    }
    drop(envoys);
    Ok(figures)
}

fn url(envoy: &Envoy) -> String {
    format!("http://127.0.0.1:{}{PATH}", envoy.port)
}

/// Nothing fast-but-wrong is measured: a set-up that authenticates must refuse a forged
/// token and a missing role.
fn check(setup: Setup, envoy: &Envoy, tokens: &Tokens) -> anyhow::Result<()> {
    let (valid, forged, wrong_role) = (&tokens.valid, &tokens.forged, &tokens.wrong_role);
    let status = |token: &str| -> anyhow::Result<u16> {
        let addr = ([127, 0, 0, 1], envoy.port).into();
        Ok(request(
            addr,
            format!("GET {PATH} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n"),
        )?
        .status)
    };
    let got = (status(valid)?, status(forged)?, status(wrong_role)?);
    let want = if setup.authenticates() {
        (200, 401, 403)
    } else {
        (200, 200, 200)
    };
    if got != want {
        bail!(
            "{}: valid/forged/wrong role answered {got:?}, expected {want:?}",
            setup.label()
        );
    }
    Ok(())
}

/// Builds with cargo (release) and returns the artefact.
fn build(root: &Path, args: &[&str], artefact: &str) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--release"])
        .args(args)
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("cargo build {args:?} failed");
    }
    Ok(root.join(artefact))
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(String::new(), |kib| format!(", {:.0} GiB", kib / 1024.0 / 1024.0));
    format!(
        "{model}, {cores} cores{mem}, {}",
        command_output("uname", &["-sr"])
    )
}
