//! The token service on PostgreSQL: password logins/s and refresh grants/s through one
//! replica and through two replicas of `gatehouse-token` behind one Envoy
//! (`ROUND_ROBIN`), every replica on the same fresh database of the server that
//! `GATEHOUSE_TEST_DATABASE_URL` names (`scripts/with-test-postgres.sh` provides one).
//!
//! Both topologies run side by side and are measured alternately, round by round, so a
//! drift of the machine (or a growing table) does not favour one of them. The hashing
//! slots (`--max-concurrent-hashes`) total the core count in both: one replica gets all
//! of them, two replicas half each.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use gatehouse_testkit::{bootstrap_yaml, request, Envoy, Response};

use crate::token_service::{add_user, login_form, Service, PASSWORD};
use crate::wrk;

pub const URL_VAR: &str = "GATEHOUSE_TEST_DATABASE_URL";

/// The PostgreSQL server to use, or an error saying how to get one.
pub fn server_url() -> anyhow::Result<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Ok(url),
        _ => bail!(
            "{URL_VAR} is not set: the token service's PostgreSQL section needs a PostgreSQL \
             server (any database on it; the bench creates and drops its own). `make bench` and \
             `make bench-smoke` provide a throwaway one; by hand: \
             `scripts/with-test-postgres.sh cargo run --release -p gatehouse-bench -- ...`, \
             or --skip-token"
        ),
    }
}

/// One topology's runs, one entry per round.
#[derive(Default)]
pub struct Runs {
    pub per_second: Vec<f64>,
    pub p50_ms: Vec<f64>,
    pub p99_ms: Vec<f64>,
    pub cpu: Vec<CpuShares>,
    /// The smallest share of the grants one replica served (1 with one replica).
    pub smallest_share: Vec<f64>,
}

/// Where the machine's CPU time went during a run, as shares of all of it (all cores
/// for the whole run), 0..1.
#[derive(Clone, Copy, Default)]
pub struct CpuShares {
    pub busy: f64,
    pub replicas: f64,
    pub envoy: f64,
    /// The server's processes (`None` when they are not on this machine).
    pub postgres: Option<f64>,
    pub wrk: f64,
}

impl CpuShares {
    /// What the processes above do not account for.
    pub fn other(&self) -> f64 {
        (self.busy - self.replicas - self.envoy - self.postgres.unwrap_or(0.0) - self.wrk).max(0.0)
    }
}

pub struct Topology {
    pub replicas: usize,
    pub hashes_per_replica: usize,
    pub logins: Runs,
    pub refreshes: Runs,
}

pub struct ReplicaFigures {
    pub cores: usize,
    pub rounds: u32,
    pub seconds: u64,
    pub login_connections: u32,
    pub refresh_connections: u32,
    /// `PostgreSQL 15.x (fsync on, synchronous_commit on)`.
    pub postgres: String,
    /// One replica, then two.
    pub topologies: [Topology; 2],
}

/// What a timed run measures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Grant {
    Password,
    Refresh,
}

impl Grant {
    fn metric(self) -> &'static str {
        match self {
            Grant::Password => "gatehouse_token_logins_ok_total",
            Grant::Refresh => "gatehouse_token_refreshes_ok_total",
        }
    }
}

pub fn measure(
    binary: &Path,
    secret: &str,
    seconds: u64,
    rounds: u32,
    warm_up: bool,
) -> anyhow::Result<ReplicaFigures> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let psql = Psql::new(&server_url()?)?;
    let db = Database::create(psql)?;
    let postgres = db.describe_server()?;

    let mut add = Command::new(binary);
    add.env("DATABASE_URL", &db.url);
    add_user(add).context("adding the bench user on PostgreSQL")?;

    // Four connections per hashing slot, as for SQLite: a slot never waits for a client.
    let login_connections = u32::try_from(4 * cores).unwrap_or(8);
    let refresh_connections = 16;
    let mut running: Vec<(Running, Topology)> = Vec::new();
    for replicas in [1, 2] {
        let hashes = (cores / replicas).max(1);
        let r = Running::start(binary, &db.url, secret, replicas, hashes)
            .with_context(|| format!("{replicas} replica(s) on PostgreSQL"))?;
        r.check()
            .with_context(|| format!("{replicas} replica(s) on PostgreSQL"))?;
        println!(
            "bench: {replicas} replica(s) on PostgreSQL behind Envoy :{} answer login 200, wrong password 401, \
             refresh 200, reused refresh token 400",
            r.envoy.port
        );
        running.push((
            r,
            Topology {
                replicas,
                hashes_per_replica: hashes,
                logins: Runs::default(),
                refreshes: Runs::default(),
            },
        ));
    }

    // The PostgreSQL server's processes: the children of the parent of the replicas' sessions.
    let postmaster = db.backend_pids()?.into_iter().find_map(postmaster_of);

    let scripts = std::env::temp_dir().join(format!("gatehouse-bench-replicas-{}", std::process::id()));
    std::fs::create_dir_all(&scripts)?;
    let result = (|| {
        let login_script = scripts.join("login.lua");
        std::fs::write(&login_script, login_lua())?;
        if warm_up {
            for (r, _) in &running {
                let what = format!("warm-up, {} replica(s)", r.replicas.len());
                r.timed(Grant::Password, &login_script, login_connections, 1, postmaster)
                    .with_context(|| format!("{what}, logins"))?;
                let script = r.refresh_script(&scripts, refresh_connections)?;
                r.timed(Grant::Refresh, &script, refresh_connections, 1, postmaster)
                    .with_context(|| format!("{what}, refresh grants"))?;
            }
        }
        for round in 1..=rounds {
            for grant in [Grant::Password, Grant::Refresh] {
                // Alternate which topology goes first.
                let order: Vec<usize> = if round % 2 == 1 { vec![0, 1] } else { vec![1, 0] };
                for i in order {
                    let (r, topology) = &mut running[i];
                    let (script, connections, runs, what) = match grant {
                        Grant::Password => (
                            login_script.clone(),
                            login_connections,
                            &mut topology.logins,
                            "logins",
                        ),
                        Grant::Refresh => (
                            r.refresh_script(&scripts, refresh_connections)?,
                            refresh_connections,
                            &mut topology.refreshes,
                            "refresh grants",
                        ),
                    };
                    let m = r
                        .timed(grant, &script, connections, seconds, postmaster)
                        .with_context(|| format!("round {round}, {what}, {} replica(s)", r.replicas.len()))?;
                    let c = m.cpu;
                    println!(
                        "bench: round {round} PostgreSQL {} replica(s) {what:<14} {:>8.1}/s  p99 {:.1} ms  \
                         CPU busy {:.0} % (replicas {:.0}, Envoy {:.0}, PostgreSQL {}, wrk {:.0}, other {:.0}){}",
                        r.replicas.len(),
                        m.per_second,
                        m.p99_ms,
                        100.0 * c.busy,
                        100.0 * c.replicas,
                        100.0 * c.envoy,
                        c.postgres.map_or("n/a".into(), |v| format!("{:.0}", 100.0 * v)),
                        100.0 * c.wrk,
                        100.0 * c.other(),
                        if r.replicas.len() > 1 {
                            format!("  smallest replica share {:.0} %", 100.0 * m.smallest_share)
                        } else {
                            String::new()
                        }
                    );
                    runs.per_second.push(m.per_second);
                    runs.p50_ms.push(m.p50_ms);
                    runs.p99_ms.push(m.p99_ms);
                    runs.cpu.push(m.cpu);
                    runs.smallest_share.push(m.smallest_share);
                }
            }
        }
        anyhow::Ok(())
    })();
    let _ = std::fs::remove_dir_all(&scripts);
    let mut topologies = Vec::new();
    // Replicas and Envoys stop before the database is dropped.
    for (r, topology) in running {
        drop(r);
        topologies.push(topology);
    }
    drop(db);
    result?;
    let [one, two]: [Topology; 2] = topologies
        .try_into()
        .map_err(|_| anyhow::anyhow!("two topologies expected"))?;
    Ok(ReplicaFigures {
        cores,
        rounds,
        seconds,
        login_connections,
        refresh_connections,
        postgres,
        topologies: [one, two],
    })
}

/// The figures of one timed run.
struct Measured {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu: CpuShares,
    smallest_share: f64,
}

/// Replicas on the database and one Envoy in front of them, all stopped on drop.
struct Running {
    replicas: Vec<(Service, SocketAddr)>,
    envoy: Envoy,
}

impl Running {
    fn start(
        binary: &Path,
        database_url: &str,
        secret: &str,
        replicas: usize,
        hashes: usize,
    ) -> anyhow::Result<Running> {
        let mut started = Vec::new();
        for _ in 0..replicas {
            let mut serve = Command::new(binary);
            serve
                // The URL (with its password) in the environment, not in a process listing.
                .env("DATABASE_URL", database_url)
                .args(["serve", "--listen", "127.0.0.1:0"])
                .args(["--max-concurrent-hashes", &hashes.to_string()])
                // Failed logins never happen in a timed run; the address is Envoy's.
                .args(["--max-failures-per-address", "1000000"]);
            let (service, addr) = Service::start(serve, secret)?;
            let addr = addr
                .parse()
                .with_context(|| format!("gatehouse-token listens on {addr:?}"))?;
            started.push((service, addr));
        }
        let ports: Vec<u16> = started
            .iter()
            .map(|(_, a): &(Service, SocketAddr)| a.port())
            .collect();
        let envoy = Envoy::launch(&envoy_yaml(&ports), None, None)
            .map_err(|f| anyhow::anyhow!("Envoy did not start: {}", f.log))?;
        Ok(Running {
            replicas: started,
            envoy,
        })
    }

    fn envoy_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.envoy.port).into()
    }

    /// Nothing fast-but-wrong is measured: every replica logs in, and through Envoy a
    /// login is 200 with a refresh token, a wrong password 401, a refresh 200 with a new
    /// token, the spent token again 400 (reuse) and then the family's newest token too
    /// (the family is revoked). With two replicas, Envoy alternates, so the refresh and
    /// the reuse are answered by different replicas: the families are shared.
    fn check(&self) -> anyhow::Result<()> {
        for (i, (_, addr)) in self.replicas.iter().enumerate() {
            let r = post_form(*addr, &login_form(PASSWORD))?;
            if r.status != 200 {
                bail!(
                    "replica {} answered a login with {}: {}",
                    i + 1,
                    r.status,
                    body(&r)
                );
            }
        }
        let envoy = self.envoy_addr();
        let first =
            refresh_token(&post_form(envoy, &login_form(PASSWORD))?).context("a login through Envoy")?;
        let wrong = post_form(envoy, &login_form("not-the-password"))?;
        if wrong.status != 401 {
            bail!(
                "a wrong password through Envoy answered {}, expected 401: {}",
                wrong.status,
                body(&wrong)
            );
        }
        let second =
            refresh_token(&post_form(envoy, &refresh_form(&first))?).context("a refresh through Envoy")?;
        if second == first {
            bail!("a refresh grant returned the same refresh token");
        }
        for (what, token) in [
            ("the spent refresh token", &first),
            ("the newest token of a reused family", &second),
        ] {
            let r = post_form(envoy, &refresh_form(token))?;
            if r.status != 400 {
                bail!("{what} answered {}, expected 400: {}", r.status, body(&r));
            }
        }
        Ok(())
    }

    /// A Lua script refreshing fresh families (one login each) on `connections`.
    fn refresh_script(&self, dir: &Path, connections: u32) -> anyhow::Result<PathBuf> {
        let envoy = self.envoy_addr();
        let mut tokens = Vec::new();
        for _ in 0..connections + SPARE_FAMILIES {
            tokens.push(
                refresh_token(&post_form(envoy, &login_form(PASSWORD))?).context("a login for a family")?,
            );
        }
        let path = dir.join(format!("refresh-{}.lua", self.envoy.port));
        std::fs::write(&path, refresh_lua(&tokens))?;
        Ok(path)
    }

    /// One timed wrk run through Envoy, with the CPU time it took and how Envoy spread
    /// the grants over the replicas (from their `/metrics`).
    fn timed(
        &self,
        grant: Grant,
        script: &Path,
        connections: u32,
        seconds: u64,
        postmaster: Option<u32>,
    ) -> anyhow::Result<Measured> {
        let url = format!("http://127.0.0.1:{}/token", self.envoy.port);
        let served_before = self.served(grant)?;
        let pids: Vec<u32> = self
            .replicas
            .iter()
            .map(|(s, _)| s.pid())
            .chain([self.envoy.pid()])
            .collect();
        let before = CpuSnapshot::take(&pids, postmaster)?;
        let r = wrk::run_script(&url, script, connections, seconds)?;
        let after = CpuSnapshot::take(&pids, postmaster)?;
        let served: Vec<u64> = self
            .served(grant)?
            .iter()
            .zip(served_before)
            .map(|(a, b)| a.saturating_sub(b))
            .collect();
        let total: u64 = served.iter().sum();
        if let Some(i) = served.iter().position(|&n| n == 0) {
            bail!("replica {} served none of the {total} grants", i + 1);
        }
        Ok(Measured {
            per_second: r.requests_per_second,
            p50_ms: r.p50_ms,
            p99_ms: r.p99_ms,
            cpu: after.since(&before, self.replicas.len(), postmaster.is_some()),
            smallest_share: served.iter().min().copied().unwrap_or(0) as f64 / total.max(1) as f64,
        })
    }

    /// The successful grants each replica has counted so far.
    fn served(&self, grant: Grant) -> anyhow::Result<Vec<u64>> {
        self.replicas
            .iter()
            .map(|(_, addr)| {
                let r = request(*addr, "GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")?;
                let text = String::from_utf8_lossy(&r.body);
                text.lines()
                    .find_map(|l| l.strip_prefix(grant.metric())?.trim().parse::<f64>().ok())
                    .map(|v| v as u64)
                    .with_context(|| format!("no {} in /metrics", grant.metric()))
            })
            .collect()
    }
}

/// Admin and listener on kernel-chosen ports; every request to the replicas, in turn.
fn envoy_yaml(ports: &[u16]) -> String {
    let route = "              - match: {prefix: \"/\"}\n                route: {cluster: replicas}\n";
    let endpoints: String = ports
        .iter()
        .map(|p| {
            format!("        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {p}}}}}}}\n")
        })
        .collect();
    let clusters = format!(
        r#"  clusters:
  - name: replicas
    connect_timeout: 1s
    type: STATIC
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: replicas
      endpoints:
      - lb_endpoints:
{endpoints}"#
    );
    bootstrap_yaml(route, "", &clusters)
}

/// Notes the first error answer, which wrk's `done()` prints (wrk itself only counts
/// them): `first_error` is global so `done()` can read it from the thread.
const ERROR_LUA: &str = r#"
first_error = nil
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local function note_error(status, body)
  if status >= 300 and first_error == nil then
    first_error = status .. " " .. string.sub(body or "", 1, 200)
  end
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    local e = thread:get("first_error")
    if e then
      io.write("First error answer: " .. e .. "\n")
    end
  end
end
"#;

fn login_lua() -> String {
    format!(
        r#"wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
{ERROR_LUA}
function response(status, headers, body)
  note_error(status, body)
end
"#,
        login_form(PASSWORD)
    )
}

/// Families beyond one per connection: wrk calls `request()` once more than it sends,
/// to check the script (wrk 4.2: on the first thread, before any connection), and the
/// token that call takes is never presented.
pub const SPARE_FAMILIES: u32 = 4;

/// Refresh grants in which every refresh token is presented exactly once (presenting a
/// rotated one again would revoke its family). wrk gives a script no handle on the
/// connection a request goes out on, so the tokens go through one queue: it starts
/// with one token per connection, plus [`SPARE_FAMILIES`], each from its own login, so
/// its own family; `request()` takes the oldest, `response()` appends the one the
/// answer rotated to. Each request takes one token and its answer gives one back, so
/// while every answer is a 200 the queue never runs dry, and each family has at most
/// one token queued or in flight: it is rotated strictly in turn, never reused. Were it
/// to run dry, `spent` is sent, refused with a 400, and the non-2xx answer fails the
/// bench.
fn refresh_lua(tokens: &[String]) -> String {
    let queue: Vec<String> = tokens.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
{ERROR_LUA}
local queue = {{{}}}
local first, last = 1, #queue

function request()
  local token = "spent"
  if first <= last then
    token = queue[first]
    queue[first] = nil
    first = first + 1
  end
  return wrk.format(nil, nil, nil, "grant_type=refresh_token&refresh_token=" .. token)
end

function response(status, headers, body)
  note_error(status, body)
  local token = body:match('"refresh_token"%s*:%s*"([^"]+)"')
  if token then
    last = last + 1
    queue[last] = token
  end
end
"#,
        queue.join(", ")
    )
}

fn refresh_form(token: &str) -> String {
    format!("grant_type=refresh_token&refresh_token={token}")
}

fn post_form(addr: SocketAddr, form: &str) -> anyhow::Result<Response> {
    Ok(request(
        addr,
        format!(
            "POST /token HTTP/1.1\r\nHost: bench\r\ncontent-type: application/x-www-form-urlencoded\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{form}",
            form.len()
        ),
    )?)
}

fn body(r: &Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The refresh token of a 200 answer.
fn refresh_token(r: &Response) -> anyhow::Result<String> {
    if r.status != 200 {
        bail!("answered {}, expected 200: {}", r.status, body(r));
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body)?;
    v["refresh_token"]
        .as_str()
        .filter(|t| {
            t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .map(str::to_owned)
        .with_context(|| format!("no usable refresh_token in {v}"))
}

/// CPU time in clock ticks: the machine's busy and total time (`/proc/stat`), each
/// process's user + system time (`/proc/<pid>/stat`), that of every child of the
/// PostgreSQL server's main process (a session's process starts and ends with it), and
/// that of this process's finished children, which during a run is wrk's.
struct CpuSnapshot {
    busy: u64,
    total: u64,
    per_pid: Vec<u64>,
    postgres: HashMap<u32, u64>,
    waited_children: u64,
}

impl CpuSnapshot {
    fn take(pids: &[u32], postmaster: Option<u32>) -> anyhow::Result<CpuSnapshot> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let fields: Vec<u64> = stat
            .lines()
            .find_map(|l| l.strip_prefix("cpu "))
            .context("no cpu line in /proc/stat")?
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let total: u64 = fields.iter().take(8).sum();
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        let per_pid = pids
            .iter()
            .map(|&pid| {
                let f = proc_stat(pid).with_context(|| format!("/proc/{pid}/stat"))?;
                anyhow::Ok(f.ticks)
            })
            .collect::<anyhow::Result<_>>()?;
        let mut postgres = HashMap::new();
        if let Some(postmaster) = postmaster {
            postgres.extend(proc_stat(postmaster).map(|f| (postmaster, f.ticks)));
            for entry in std::fs::read_dir("/proc")?.filter_map(Result::ok) {
                let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                if let Some(f) = proc_stat(pid).filter(|f| f.ppid == postmaster) {
                    postgres.insert(pid, f.ticks);
                }
            }
        }
        Ok(CpuSnapshot {
            busy: total - idle.min(total),
            total,
            per_pid,
            postgres,
            waited_children: proc_stat_self_children()?,
        })
    }

    /// The shares of the time from `before` to `self`; the first `replicas` pids are the
    /// replicas, the next Envoy.
    fn since(&self, before: &CpuSnapshot, replicas: usize, postgres_here: bool) -> CpuShares {
        let machine = self.total.saturating_sub(before.total).max(1) as f64;
        let share = |ticks: u64| ticks as f64 / machine;
        let per_process: Vec<u64> = self
            .per_pid
            .iter()
            .zip(&before.per_pid)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        let (replica_ticks, envoy_ticks) = per_process.split_at(replicas.min(per_process.len()));
        // A session that ended during the run is missed; one that began counts from 0.
        let postgres: u64 = self
            .postgres
            .iter()
            .map(|(pid, t)| t.saturating_sub(before.postgres.get(pid).copied().unwrap_or(0)))
            .sum();
        CpuShares {
            busy: share(self.busy.saturating_sub(before.busy)),
            replicas: share(replica_ticks.iter().sum()),
            envoy: share(envoy_ticks.iter().sum()),
            postgres: postgres_here.then(|| share(postgres)),
            wrk: share(self.waited_children.saturating_sub(before.waited_children)),
        }
    }
}

struct ProcStat {
    ppid: u32,
    /// utime + stime.
    ticks: u64,
}

/// The fields after the command name, which ends with the line's last ')': the state is
/// the line's 3rd field, the parent's pid the 4th, utime the 14th, stime the 15th,
/// cutime and cstime (finished children) the 16th and 17th.
fn stat_fields(text: &str) -> Vec<u64> {
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect()
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let f = stat_fields(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?);
    Some(ProcStat {
        ppid: u32::try_from(*f.first()?).ok()?,
        ticks: f.get(10)? + f.get(11)?,
    })
}

fn proc_stat_self_children() -> anyhow::Result<u64> {
    let f = stat_fields(&std::fs::read_to_string("/proc/self/stat")?);
    Ok(f.get(12).copied().unwrap_or(0) + f.get(13).copied().unwrap_or(0))
}

/// The PostgreSQL server's main process, from the pid of one of its sessions: its
/// parent, if both are `postgres` processes on this machine (a server elsewhere has
/// pids that mean nothing here).
fn postmaster_of(session: u32) -> Option<u32> {
    let is_postgres =
        |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres");
    let parent = proc_stat(session)?.ppid;
    (is_postgres(session) && is_postgres(parent)).then_some(parent)
}

/// `psql`, with the server's URL split so the password goes in `PGPASSWORD`, not in a
/// process listing.
struct Psql {
    bin: PathBuf,
    /// The URL without its password.
    url: String,
    password: Option<String>,
}

impl Psql {
    fn new(server_url: &str) -> anyhow::Result<Psql> {
        let (url, password) = split_password(server_url)?;
        Ok(Psql {
            bin: psql_bin()?,
            url,
            password,
        })
    }

    /// Runs `sql` on `database` (the URL's own when `None`) and returns its output
    /// (unaligned, tuples only).
    fn run(&self, database: Option<&str>, sql: &str) -> anyhow::Result<String> {
        let url = database.map_or_else(|| self.url.clone(), |d| with_database(&self.url, d));
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &url,
            "-c",
            sql,
        ]);
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p);
        }
        let out = cmd
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "psql `{sql}` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// `psql` on PATH, else Debian's newest /usr/lib/postgresql/*/bin/psql.
fn psql_bin() -> anyhow::Result<PathBuf> {
    if Command::new("psql").arg("--version").output().is_ok() {
        return Ok("psql".into());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin/psql"))
        .filter(|p| p.exists())
        .collect();
    found.sort_by_key(|p| {
        p.iter()
            .nth(4)
            .and_then(|v| v.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found
        .pop()
        .context("psql not found (Debian: apt-get install postgresql-client)")
}

/// A database of its own on the server, dropped on drop.
struct Database {
    psql: Psql,
    name: String,
    /// Its URL, password included (for DATABASE_URL).
    url: String,
}

impl Database {
    fn create(psql: Psql) -> anyhow::Result<Database> {
        let name = format!("gh_bench_{}", std::process::id());
        psql.run(None, &format!("DROP DATABASE IF EXISTS {name}"))?;
        psql.run(None, &format!("CREATE DATABASE {name}"))
            .context("creating the bench database")?;
        let url = with_database(&server_url()?, &name);
        Ok(Database { psql, name, url })
    }

    /// The server processes of the sessions open on the database, other than psql's.
    fn backend_pids(&self) -> anyhow::Result<Vec<u32>> {
        let out = self.psql.run(
            Some(&self.name),
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )?;
        Ok(out.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    fn describe_server(&self) -> anyhow::Result<String> {
        let out = self.psql.run(
            Some(&self.name),
            "SELECT current_setting('server_version') || '|' || current_setting('fsync') || '|' \
             || current_setting('synchronous_commit')",
        )?;
        let v: Vec<&str> = out.split('|').collect();
        match v.as_slice() {
            [version, fsync, sync] => Ok(format!(
                "PostgreSQL {} (`fsync={fsync}`, `synchronous_commit={sync}`)",
                version.split_whitespace().next().unwrap_or(version)
            )),
            _ => bail!("unexpected server description {out:?}"),
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // WITH (FORCE) (PostgreSQL 13+) ends connections a killed replica may have left.
        let force = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if self.psql.run(None, &force).is_err() {
            if let Err(e) = self
                .psql
                .run(None, &format!("DROP DATABASE IF EXISTS {}", self.name))
            {
                eprintln!("bench: could not drop database {}: {e:#}", self.name);
            }
        }
    }
}

/// `url` without its password, and the password, percent-decoded.
fn split_password(url: &str) -> anyhow::Result<(String, Option<String>)> {
    let scheme_end = url.find("://").context("the database URL has no scheme")? + 3;
    let authority_end = url[scheme_end..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return Ok((url.to_string(), None));
    };
    let Some((user, password)) = userinfo.split_once(':') else {
        return Ok((url.to_string(), None));
    };
    Ok((
        format!("{}{user}@{host}{}", &url[..scheme_end], &url[authority_end..]),
        Some(percent_decode(password)?),
    ))
}

fn percent_decode(s: &str) -> anyhow::Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .context("a bad %-escape in the database URL")?;
            out.push(u8::from_str_radix(hex, 16).context("a bad %-escape in the database URL")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8(out)?)
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_and_retargeted() {
        let (url, pw) =
            split_password("postgres://gatehouse:p%40ss:w@127.0.0.1:55432/postgres?sslmode=disable").unwrap();
        assert_eq!(
            url,
            "postgres://gatehouse@127.0.0.1:55432/postgres?sslmode=disable"
        );
        assert_eq!(pw.as_deref(), Some("p@ss:w"));
        assert_eq!(
            split_password("postgres://127.0.0.1/db").unwrap(),
            ("postgres://127.0.0.1/db".to_string(), None)
        );
        assert_eq!(
            with_database("postgres://u@h:1/postgres?sslmode=require", "gh_bench_1"),
            "postgres://u@h:1/gh_bench_1?sslmode=require"
        );
        assert_eq!(with_database("postgres://u@h:1", "x"), "postgres://u@h:1/x");
        assert!(percent_decode("%zz").is_err());
    }

    #[test]
    fn refresh_script_queues_every_token() {
        let lua = refresh_lua(&["a-1".into(), "b_2".into()]);
        assert!(lua.contains(r#"local queue = {"a-1", "b_2"}"#));
        assert!(lua.contains("function response("));
    }

    #[test]
    fn envoy_balances_over_every_replica() {
        let yaml = envoy_yaml(&[1001, 1002]);
        assert!(yaml.contains("lb_policy: ROUND_ROBIN"));
        assert!(yaml.contains("port_value: 1001") && yaml.contains("port_value: 1002"));
    }
}
