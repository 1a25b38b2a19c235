//! The results as a Markdown section of `docs/benchmarks.md` and a PNG bar chart.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::setups::Setup;
use crate::token_service::TokenFigures;

pub struct SetupFigures {
    pub setup: Setup,
    pub rps: Vec<f64>,
    pub p50_ms: Vec<f64>,
    pub p99_ms: Vec<f64>,
    pub rss_mib: f64,
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

pub struct Context_<'a> {
    pub command: &'a str,
    pub date: String,
    pub machine: String,
    pub envoy_version: String,
    pub wasm_bytes: u64,
    pub rounds: u32,
    pub seconds: u32,
    pub connections: u32,
}

/// The Markdown between the `bench:results` markers.
pub fn markdown(ctx: &Context_<'_>, setups: &[SetupFigures], token: Option<&TokenFigures>) -> String {
    let rps = |s: Setup| {
        setups
            .iter()
            .find(|f| f.setup == s)
            .map_or(0.0, |f| median(&f.rps))
    };
    let ceiling = rps(Setup::NoFilter);
    let native = rps(Setup::Native);
    let native_cache = rps(Setup::NativeCache);
    let ours = rps(Setup::Gatehouse);
    let ours_no_cache = rps(Setup::GatehouseNoCache);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let baseline_rss = setups
        .iter()
        .find(|f| f.setup == Setup::NoFilter)
        .map_or(0.0, |f| f.rss_mib);
    let mut out = String::new();
    let _ = writeln!(out, "Measured on {} by `{}`.\n", ctx.date, ctx.command);
    let _ = writeln!(out, "- Machine: {}", ctx.machine);
    let _ = writeln!(
        out,
        "- Envoy: {} with `--concurrency 1`, pinned to CPU 0; `wrk -t1 -c{}` pinned to CPU 1, loopback.",
        ctx.envoy_version, ctx.connections
    );
    let _ = writeln!(out, "- {} rounds of {} s per set-up, alternated round by round; medians shown. Every set-up is checked first (valid token 200, bad signature 401, wrong role 403) and any non-2xx answer during a timed run fails the bench.", ctx.rounds, ctx.seconds);
    let _ = writeln!(out, "- `gatehouse.wasm`: {} bytes.\n", ctx.wasm_bytes);
    let _ = writeln!(
        out,
        "| set-up | requests/s | p50 | p99 | / no filter | Envoy RSS (1 worker) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for f in setups {
        let r = median(&f.rps);
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} | {:.1} MiB (+{:.1}) |",
            f.setup.label(),
            r,
            median(&f.p50_ms),
            median(&f.p99_ms),
            if ceiling > 0.0 { r / ceiling } else { 0.0 },
            f.rss_mib,
            f.rss_mib - baseline_rss
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "| ratio | value | target |");
    let _ = writeln!(out, "|---|---:|---:|");
    let _ = writeln!(
        out,
        "| Gatehouse (default) / native jwt_authn + rbac (default) | **{:.2}x** | 1.5x |",
        ratio(ours, native)
    );
    let _ = writeln!(
        out,
        "| Gatehouse (default) / no filter | **{:.2}x** | 0.8x |",
        ratio(ours, ceiling)
    );
    let _ = writeln!(
        out,
        "| Gatehouse, cache off / native, no cache (verify every request) | {:.2}x | |",
        ratio(ours_no_cache, native)
    );
    let _ = writeln!(
        out,
        "| Gatehouse, cache on / native with `jwt_cache_config` | {:.2}x | |",
        ratio(ours, native_cache)
    );
    let _ = writeln!(
        out,
        "| empty proxy-wasm filter / no filter (the floor of any Wasm filter) | {:.2}x | |",
        ratio(rps(Setup::WasmFloor), ceiling)
    );
    for (label, ours, theirs) in [
        (
            "Gatehouse EdDSA (cache) / native EdDSA",
            Setup::GatehouseEdDsa,
            Setup::NativeEdDsa,
        ),
        (
            "Gatehouse EdDSA, cache off / native EdDSA",
            Setup::GatehouseEdDsaNoCache,
            Setup::NativeEdDsa,
        ),
        (
            "Gatehouse ES256 (cache) / native ES256",
            Setup::GatehouseEs256,
            Setup::NativeEs256,
        ),
        (
            "Gatehouse ES256, cache off / native ES256",
            Setup::GatehouseEs256NoCache,
            Setup::NativeEs256,
        ),
    ] {
        let _ = writeln!(out, "| {label} | {:.2}x | |", ratio(rps(ours), rps(theirs)));
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "![requests per second by set-up](benchmarks.png)\n");
    if let Some(t) = token {
        let _ = writeln!(out, "Token service (`gatehouse-token`, release build, Argon2id m=19 MiB t=2 p=1, {} hashing slots):\n", t.cores);
        let _ = writeln!(out, "| measure | value |");
        let _ = writeln!(out, "|---|---:|");
        let _ = writeln!(
            out,
            "| raw Argon2id verifications/s, {} threads (the physical limit) | {:.1} |",
            t.cores, t.raw_hashes_per_second
        );
        let _ = writeln!(
            out,
            "| password logins/s through HTTP | {:.1} |",
            t.logins_per_second
        );
        let _ = writeln!(
            out,
            "| logins / raw Argon2 rate | {:.2} (target 0.90) |",
            t.logins_per_second / t.raw_hashes_per_second.max(f64::MIN_POSITIVE)
        );
        let _ = writeln!(
            out,
            "| `/healthz` p50 / p99 during the login flood | {:.2} ms / {:.2} ms (target p99 < 20 ms) |",
            t.healthz_p50_ms, t.healthz_p99_ms
        );
        let _ = writeln!(
            out,
            "| refresh grants/s (rotation, SQLite `synchronous=FULL`) | {:.0} |",
            t.refreshes_per_second
        );
    }
    out
}

/// Replaces the text between the markers in `file` (creating it if needed).
pub fn write_markdown(file: &Path, section: &str) -> anyhow::Result<()> {
    const START: &str = "<!-- bench:results:start -->";
    const END: &str = "<!-- bench:results:end -->";
    let current =
        std::fs::read_to_string(file).unwrap_or_else(|_| format!("# Benchmarks\n\n{START}\n{END}\n"));
    let (head, rest) = current.split_once(START).context("no results start marker")?;
    let (_, tail) = rest.split_once(END).context("no results end marker")?;
    std::fs::write(file, format!("{head}{START}\n{section}{END}{tail}"))?;
    Ok(())
}

/// A horizontal bar chart of requests/s per set-up.
pub fn chart(file: &Path, setups: &[SetupFigures]) -> anyhow::Result<()> {
    // Any DejaVu Sans on the machine (Debian: fonts-dejavu-core).
    let font_file = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    ]
    .iter()
    .find(|p| Path::new(p).exists())
    .context("no DejaVuSans.ttf (apt install fonts-dejavu-core)")?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(font_file)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("cannot load {font_file}"))?;

    let root = BitMapBackend::new(file, (900, 60 + 50 * setups.len() as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = setups.iter().map(|f| median(&f.rps)).fold(0.0, f64::max) * 1.2;
    let n = setups.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Requests/s through one Envoy worker (higher is better)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(280)
        .build_cartesian_2d(0.0..max, 0.0..n)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(setups.len() * 2 + 1)
        .y_label_formatter(&|v| {
            // Labels sit at the middle of each bar (i + 0.5).
            let i = (v - 0.5).round();
            if (v - 0.5 - i).abs() < 0.01 && i >= 0.0 {
                setups
                    .get(i as usize)
                    .map_or(String::new(), |f| f.setup.label().to_string())
            } else {
                String::new()
            }
        })
        .x_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
        .label_style(("sans-serif", 15))
        .draw()?;
    for (i, f) in setups.iter().enumerate() {
        let value = median(&f.rps);
        let ours = f.setup.is_gatehouse();
        let colour = if ours {
            RGBColor(46, 125, 50)
        } else {
            RGBColor(120, 144, 156)
        };
        let y = i as f64;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0.0, y + 0.15), (value, y + 0.85)],
            colour.filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{value:.0}"),
            (value + max * 0.01, y + 0.62),
            ("sans-serif", 15),
        )))?;
    }
    root.present()?;
    Ok(())
}
