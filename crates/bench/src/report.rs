//! The results as a Markdown section of `docs/benchmarks.md` and a PNG bar chart.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::replicas::{CpuShares, ReplicaFigures, Runs, SPARE_FAMILIES};
use crate::revocation_sync::{SyncFigures, ENTRIES, NEW_PER_POLL};
use crate::setups::Setup;
use crate::token_service::TokenFigures;

pub struct SetupFigures {
    pub setup: Setup,
    pub rps: Vec<f64>,
    pub p50_ms: Vec<f64>,
    pub p99_ms: Vec<f64>,
    /// Envoy's CPU time per request, microseconds, per round.
    pub cpu_us: Vec<f64>,
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

/// The Markdown between the `bench:results` markers: the Envoy set-ups (if measured)
/// and the token service (if measured).
pub fn markdown(
    ctx: &Context_<'_>,
    setups: &[SetupFigures],
    token: Option<&TokenFigures>,
    replicas: Option<&ReplicaFigures>,
    revocation: Option<&SyncFigures>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Measured on {} by `{}`.\n", ctx.date, ctx.command);
    let _ = writeln!(out, "- Machine: {}", ctx.machine);
    if !setups.is_empty() {
        filters_markdown(&mut out, ctx, setups);
    } else {
        let _ = writeln!(out);
    }
    if let Some(t) = token {
        token_markdown(&mut out, t);
    }
    if let Some(r) = replicas {
        replicas_markdown(&mut out, r, token);
    }
    if let Some(r) = revocation {
        revocation_markdown(&mut out, r);
    }
    out
}

/// What keeping the revocation set in step costs a worker, before and after.
fn revocation_markdown(out: &mut String, r: &SyncFigures) {
    let _ = writeln!(
        out,
        "Revocation set in step across workers, at {ENTRIES} entries (a {:.1} MB snapshot): microseconds per tick, \
         medians; the filter's own code run natively (release build), so inside Envoy's V8 each figure is larger in \
         proportion. Before: every good poll republished the whole set and every worker parsed it again; now: \
         a version in a 24-byte head, {NEW_PER_POLL}-entry deltas, a snapshot every 8 versions.\n",
        r.snapshot_bytes as f64 / 1e6
    );
    let _ = writeln!(out, "| per tick | before | now | before / now |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let rows = [
        ("a worker, idle feed", r.before_idle_us, r.after_idle_us),
        (
            "a worker, a poll brought 100 entries",
            r.before_change_us,
            r.after_change_us,
        ),
        (
            "the polling worker, a poll that brought 100 entries",
            r.before_poller_us,
            r.after_poller_us,
        ),
    ];
    for (label, before, after) in rows {
        let ratio = before / after.max(f64::MIN_POSITIVE);
        let ratio = if ratio > 10_000.0 {
            "> 10,000x".to_string()
        } else {
            format!("{ratio:.0}x")
        };
        let _ = writeln!(out, "| {label} | {before:.0} µs | {after:.1} µs | {ratio} |");
    }
    let _ = writeln!(out);
}

fn filters_markdown(out: &mut String, ctx: &Context_<'_>, setups: &[SetupFigures]) {
    let rps = |s: Setup| {
        setups
            .iter()
            .find(|f| f.setup == s)
            .map_or(0.0, |f| median(&f.rps))
    };
    let cpu = |s: Setup| {
        setups
            .iter()
            .find(|f| f.setup == s)
            .map_or(0.0, |f| median(&f.cpu_us))
    };
    let cpu_floor = cpu(Setup::NoFilter);
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
    let _ = writeln!(
        out,
        "- Envoy: {} with `--concurrency 1`, pinned to CPU 0; `wrk -t1 -c{}` pinned to CPU 1, loopback.",
        ctx.envoy_version, ctx.connections
    );
    let _ = writeln!(out, "- {} rounds of {} s per set-up, alternated round by round; medians shown. Every set-up is checked first (valid token 200, bad signature 401, wrong role 403) and any non-2xx answer during a timed run fails the bench.", ctx.rounds, ctx.seconds);
    let _ = writeln!(out, "- `gatehouse.wasm`: {} bytes.\n", ctx.wasm_bytes);
    let _ = writeln!(
        out,
        "Envoy CPU per request: utime + stime of the Envoy process (`/proc/<pid>/stat`) over each timed run, \
         divided by the requests wrk counted; \"over no filter\" subtracts the no-filter set-up's. It holds much \
         better than requests/s when other work shares the machine.\n"
    );
    let _ = writeln!(
        out,
        "| set-up | requests/s | p50 | p99 | / no filter | Envoy CPU / request | over no filter | Envoy RSS (1 worker) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for f in setups {
        let r = median(&f.rps);
        let c = median(&f.cpu_us);
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} | {:.1} µs | {:+.1} µs | {:.1} MiB (+{:.1}) |",
            f.setup.label(),
            r,
            median(&f.p50_ms),
            median(&f.p99_ms),
            if ceiling > 0.0 { r / ceiling } else { 0.0 },
            c,
            c - cpu_floor,
            f.rss_mib,
            f.rss_mib - baseline_rss
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "| ratio (requests/s) | value | target |");
    let _ = writeln!(out, "|---|---:|---:|");
    let _ = writeln!(
        out,
        "| Gatehouse (default) / native jwt_authn (cache) + rbac | **{:.2}x** | 1.0x |",
        ratio(ours, native_cache)
    );
    let _ = writeln!(
        out,
        "| Gatehouse (default) / native jwt_authn + rbac (default) | **{:.2}x** | 1.6x |",
        ratio(ours, native)
    );
    let _ = writeln!(
        out,
        "| Gatehouse (default) / empty proxy-wasm filter, trimmed | **{:.2}x** | 0.95x |",
        ratio(ours, rps(Setup::WasmFloorLean))
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
        "| empty proxy-wasm filter (SDK) / no filter | {:.2}x | |",
        ratio(rps(Setup::WasmFloor), ceiling)
    );
    let _ = writeln!(
        out,
        "| empty proxy-wasm filter, trimmed / no filter (the floor of any Wasm filter) | {:.2}x | |",
        ratio(rps(Setup::WasmFloorLean), ceiling)
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
    for (label, ours, theirs) in [
        (
            "Gatehouse EdDSA (cache) / Gatehouse HS256 (cache)",
            Setup::GatehouseEdDsa,
            Setup::Gatehouse,
        ),
        (
            "Gatehouse ES256 (cache) / Gatehouse HS256 (cache)",
            Setup::GatehouseEs256,
            Setup::Gatehouse,
        ),
    ] {
        let _ = writeln!(out, "| {label} | {:.2}x | 0.95x |", ratio(rps(ours), rps(theirs)));
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "| Envoy CPU per request over no filter | µs |");
    let _ = writeln!(out, "|---|---:|");
    for s in [
        Setup::WasmFloor,
        Setup::WasmFloorLean,
        Setup::NativeCache,
        Setup::Native,
        Setup::Gatehouse,
        Setup::GatehouseNoCache,
    ] {
        let _ = writeln!(out, "| {} | {:+.1} |", s.label(), cpu(s) - cpu_floor);
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "![requests per second by set-up](benchmarks.png)\n");
}

fn token_markdown(out: &mut String, t: &TokenFigures) {
    let _ = writeln!(
        out,
        "Token service (`gatehouse-token`, release build, Argon2id m=19 MiB t=2 p=1, {} hashing slots), \
         SQLite, one process, no Envoy in front:\n",
        t.cores
    );
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
    let _ = writeln!(out);
}

/// PostgreSQL, one replica against two, and what limits each figure.
fn replicas_markdown(out: &mut String, r: &ReplicaFigures, sqlite: Option<&TokenFigures>) {
    let [one, two] = &r.topologies;
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let rate = |runs: &Runs| median(&runs.per_second);
    let logins_ratio = ratio(rate(&two.logins), rate(&one.logins));
    let refresh_ratio = ratio(rate(&two.refreshes), rate(&one.refreshes));
    // Median of one CPU share over the rounds, in per cent.
    let cpu =
        |runs: &Runs, f: fn(&CpuShares) -> f64| 100.0 * median(&runs.cpu.iter().map(f).collect::<Vec<_>>());
    let _ = writeln!(
        out,
        "Token service on PostgreSQL: one replica behind Envoy, and two replicas behind one Envoy \
         (`ROUND_ROBIN`), all on this machine's {} cores; {} round(s) of {} s, one and two \
         replicas alternated; medians:\n",
        r.cores, r.rounds, r.seconds
    );
    let _ = writeln!(out, "| measure | 1 replica | 2 replicas | 2 / 1 |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| logins/s, PostgreSQL | {:.1} | {:.1} | **{logins_ratio:.2}x** |",
        rate(&one.logins),
        rate(&two.logins)
    );
    let _ = writeln!(
        out,
        "| refresh grants/s, PostgreSQL | {:.0} | {:.0} | **{refresh_ratio:.2}x** |",
        rate(&one.refreshes),
        rate(&two.refreshes)
    );
    if let Some(t) = sqlite {
        let raw = t.raw_hashes_per_second.max(f64::MIN_POSITIVE);
        let _ = writeln!(
            out,
            "| logins / raw Argon2 rate | {:.2} | {:.2} | |",
            rate(&one.logins) / raw,
            rate(&two.logins) / raw
        );
    }
    for (label, a, b) in [
        ("login p50 / p99", &one.logins, &two.logins),
        ("refresh grant p50 / p99", &one.refreshes, &two.refreshes),
    ] {
        let _ = writeln!(
            out,
            "| {label} | {:.1} / {:.1} ms | {:.1} / {:.1} ms | |",
            median(&a.p50_ms),
            median(&a.p99_ms),
            median(&b.p50_ms),
            median(&b.p99_ms)
        );
    }
    let postgres_here = one.logins.cpu.iter().all(|c| c.postgres.is_some());
    let _ = writeln!(
        out,
        "\nWhere the CPU time went during those runs, as a share of all {} cores' time (medians per column{}):\n",
        r.cores,
        if postgres_here {
            ""
        } else {
            "; the PostgreSQL server is not on this machine"
        }
    );
    let _ = writeln!(
        out,
        "| run | cores busy | replicas | Envoy | PostgreSQL | wrk | other |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for (label, runs) in [
        ("logins, 1 replica", &one.logins),
        ("logins, 2 replicas", &two.logins),
        ("refresh grants, 1 replica", &one.refreshes),
        ("refresh grants, 2 replicas", &two.refreshes),
    ] {
        let postgres = if postgres_here {
            format!("{:.0} %", cpu(runs, |c| c.postgres.unwrap_or(0.0)))
        } else {
            "n/a".into()
        };
        let _ = writeln!(
            out,
            "| {label} | {:.0} % | {:.0} % | {:.0} % | {postgres} | {:.0} % | {:.0} % |",
            cpu(runs, |c| c.busy),
            cpu(runs, |c| c.replicas),
            cpu(runs, |c| c.envoy),
            cpu(runs, |c| c.wrk),
            cpu(runs, CpuShares::other),
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "- Set-up: `gatehouse-token serve` with `DATABASE_URL` on one fresh database of {} on \
         this machine. One replica runs with `--max-concurrent-hashes {}`; two replicas with \
         `--max-concurrent-hashes {}` each, so the hashing slots total {} either way, the core \
         count. Envoy (1 worker) has a `STATIC` cluster of the replica addresses, `lb_policy: \
         ROUND_ROBIN`. Load: `wrk -t1 -c{}` of password logins; `wrk -t1 -c{}` of refresh grants \
         on {} fresh families (one login each) in which every refresh token is presented exactly \
         once: a Lua queue holds each family's newest token, a request takes the oldest, its \
         answer queues the rotated one (presenting a spent token again would revoke its family). \
         Nothing is pinned: replicas, Envoy, PostgreSQL and wrk share the cores. CPU shares from \
         `/proc/stat` and `/proc/<pid>/stat`; other is anything else running on the machine.",
        r.postgres,
        one.hashes_per_replica,
        two.hashes_per_replica,
        two.hashes_per_replica * two.replicas,
        r.login_connections,
        r.refresh_connections,
        r.refresh_connections + SPARE_FAMILIES
    );
    let _ = writeln!(
        out,
        "- Checked first, for each topology: every replica answers a login 200; through Envoy a \
         login 200, a wrong password 401, a refresh 200 with a new token, the spent token again \
         400 and then the family's newest token 400 (reuse revokes the family; with two replicas \
         consecutive requests land on different replicas, so this crosses them). Any non-2xx \
         answer or socket error during a timed run fails the bench, and so does a replica that \
         served none of a run's grants (with two, the smaller share was {:.0} % of the logins and \
         {:.0} % of the refresh grants).",
        100.0 * median(&two.logins.smallest_share),
        100.0 * median(&two.refreshes.smallest_share)
    );
    // A bare verification costs cores / raw rate of CPU time, so hashing took logins/s
    // divided by the raw rate of all the cores' time.
    let raw = sqlite.map_or(String::new(), |t| {
        let raw = t.raw_hashes_per_second.max(f64::MIN_POSITIVE);
        format!(
            ", of which the hashing itself about {:.0} % and {:.0} % (logins/s over the raw rate of \
             {:.1} verifications/s that {} threads doing nothing else reach)",
            100.0 * rate(&one.logins) / raw,
            100.0 * rate(&two.logins) / raw,
            t.raw_hashes_per_second,
            t.cores
        )
    });
    let _ = writeln!(
        out,
        "- What limits logins: Argon2id, which is CPU-bound. Every login is one verification; the \
         replicas took {:.0} % of the cores' time with one replica and {:.0} % with \
         two{raw}. A second replica on the same {} cores adds a process, not a core: two \
         replicas cannot hash faster than one, so a ratio of about 1 is all there is to expect \
         (measured: {logins_ratio:.2}x). \
         Replicas add login capacity only when each has cores of its own (other machines, or \
         more cores); this bench cannot show that.",
        cpu(&one.logins, |c| c.replicas),
        cpu(&two.logins, |c| c.replicas),
        r.cores
    );
    let busy = cpu(&one.refreshes, |c| c.busy).min(cpu(&two.refreshes, |c| c.busy));
    let limit = if busy >= 85.0 {
        format!(
            "The cores are the limit (at least {busy:.0} % busy), and the work is spread over every \
             process: with one replica the replicas took {:.0} %, PostgreSQL {}, Envoy {:.0} % and \
             wrk {:.0} % of it. A second replica splits the service's share over two processes on \
             the same cores and adds none: a ratio of about 1 at best",
            cpu(&one.refreshes, |c| c.replicas),
            if postgres_here {
                format!("{:.0} %", cpu(&one.refreshes, |c| c.postgres.unwrap_or(0.0)))
            } else {
                "(elsewhere)".into()
            },
            cpu(&one.refreshes, |c| c.envoy),
            cpu(&one.refreshes, |c| c.wrk)
        )
    } else {
        format!(
            "The cores are not saturated ({busy:.0} % busy at least): the time goes to waiting, \
             each grant's commit for its WAL `fsync`, which a second replica does not shorten: a \
             ratio of about 1 at best"
        )
    };
    let _ = writeln!(
        out,
        "- What limits refresh grants: no hashing; each is one PostgreSQL transaction (the \
         presented token marked spent, the next one inserted, committed with `fsync`) and an \
         HS256 signature. {limit} (measured: {refresh_ratio:.2}x). Replicas on machines of their own would \
         take the service's share off these cores; the one PostgreSQL server would then be the \
         limit.\n"
    );
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
