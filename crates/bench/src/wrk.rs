//! Load from `wrk` (Debian's package), pinned to its own core, and its report parsed.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

#[derive(Debug, Clone, Copy)]
pub struct WrkResult {
    pub requests_per_second: f64,
    /// Requests completed in the run ("N requests in").
    pub requests: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Runs `wrk -t1 -c{connections} -d{seconds}s --latency` against `url` with
/// `Authorization: Bearer {token}`; fails on any non-2xx answer or socket error.
pub fn run(
    url: &str,
    token: &str,
    connections: u32,
    seconds: u32,
    cpu: Option<&str>,
) -> anyhow::Result<WrkResult> {
    let header = format!("Authorization: Bearer {token}");
    run_with(url, &["-H", &header], connections, u64::from(seconds), cpu)
}

/// Like [`run`], with the requests made by the Lua `script` instead.
pub fn run_script(url: &str, script: &Path, connections: u32, seconds: u64) -> anyhow::Result<WrkResult> {
    let script = script.to_str().context("script path")?;
    run_with(url, &["-s", script], connections, seconds, None)
}

fn run_with(
    url: &str,
    extra: &[&str],
    connections: u32,
    seconds: u64,
    cpu: Option<&str>,
) -> anyhow::Result<WrkResult> {
    let mut cmd = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpu, "wrk"]);
            c
        }
        None => Command::new("wrk"),
    };
    let out = cmd
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
        ])
        .args(extra)
        .arg(url)
        .output()
        .context("running wrk (apt install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    parse(&text)
}

pub fn parse(text: &str) -> anyhow::Result<WrkResult> {
    if let Some(line) = text.lines().find(|l| l.contains("Non-2xx or 3xx responses")) {
        let first = text
            .lines()
            .find_map(|l| l.strip_prefix("First error answer: "))
            .map_or(String::new(), |e| format!("; the first: {e}"));
        bail!(
            "a timed run got error answers ({}{first}): every request must succeed",
            line.trim()
        );
    }
    if let Some(line) = text.lines().find(|l| l.trim_start().starts_with("Socket errors")) {
        bail!("a timed run had socket errors ({})", line.trim());
    }
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no Requests/sec in wrk's output")?;
    let percentile = |p: &str| -> anyhow::Result<f64> {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(p))
            .with_context(|| format!("no {p} latency in wrk's output"))?;
        let value = line.split_whitespace().nth(1).context("empty latency line")?;
        duration_ms(value)
    };
    let requests = text
        .lines()
        .find_map(|l| l.trim_start().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .context("no \"N requests in\" in wrk's output")?;
    Ok(WrkResult {
        requests_per_second: rps,
        requests,
        p50_ms: percentile("50%")?,
        p99_ms: percentile("99%")?,
    })
}

/// `512.00us`, `1.25ms`, `2.00s` in milliseconds.
fn duration_ms(v: &str) -> anyhow::Result<f64> {
    let (number, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        bail!("unknown duration {v}")
    };
    Ok(number.parse::<f64>()? * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 4s test @ http://127.0.0.1:18000/api/items
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.30ms  234.52us   5.80ms   90.02%
    Req/Sec    24.71k     1.02k   26.05k    82.50%
  Latency Distribution
     50%    1.25ms
     75%    1.35ms
     90%    1.52ms
     99%    2.43ms
  98365 requests in 4.00s, 7.22MB read
Requests/sec:  24590.12
Transfer/sec:      1.81MB
";

    #[test]
    fn parses_wrk_reports() {
        let r = parse(REPORT).unwrap();
        assert_eq!(r.requests_per_second, 24590.12);
        assert_eq!(r.requests, 98365);
        assert_eq!(r.p50_ms, 1.25);
        assert_eq!(r.p99_ms, 2.43);
        let us = REPORT.replace("1.25ms", "596.00us");
        assert!((parse(&us).unwrap().p50_ms - 0.596).abs() < 1e-9);
        let bad = REPORT.replace("Requests/sec", "  Non-2xx or 3xx responses: 12\nRequests/sec");
        assert!(parse(&bad).is_err());
        let sock = REPORT.replace(
            "Requests/sec",
            "  Socket errors: connect 0, read 3, write 0, timeout 0\nRequests/sec",
        );
        assert!(parse(&sock).is_err());
    }
}
