//! Table-driven attack rows against the demo topology (the top-level `envoy.yaml` in
//! the real Envoy, the token service and the demo API): each row is one request and
//! what must happen, written as the one-line [`Answer`] (`envoy 400`,
//! `filter 403 forbidden`, `api 200 DELETE /users/42 sub=alice roles=admin,user`).
//! Every row runs; the failures are reported together with what did happen.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use gatehouse_testkit::{Answer, DemoTopology, Edge, Observed};

/// How a row's request is sent.
#[derive(Debug, Clone)]
pub enum Send {
    /// HTTP/1.1 through the testkit's client (`Host: gatehouse.test`).
    Call {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
    },
    /// Bytes as they are (a request ending in an empty line gets `connection: close`).
    Raw(Vec<u8>),
    /// HTTP/2 with prior knowledge (curl, path as is).
    H2 {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
    },
}

impl Send {
    pub fn call(method: &str, path: &str, headers: &[(&str, &str)]) -> Send {
        Send::Call {
            method: method.into(),
            path: path.into(),
            headers: owned(headers),
        }
    }

    pub fn h2(method: &str, path: &str, headers: &[(&str, &str)]) -> Send {
        Send::H2 {
            method: method.into(),
            path: path.into(),
            headers: owned(headers),
        }
    }

    pub fn raw(bytes: impl AsRef<[u8]>) -> Send {
        Send::Raw(bytes.as_ref().to_vec())
    }

    fn go(&self, demo: &DemoTopology) -> Observed {
        match self {
            Send::Call {
                method,
                path,
                headers,
            } => demo.call(method, path, &borrowed(headers)),
            Send::Raw(bytes) => demo.send(bytes),
            Send::H2 {
                method,
                path,
                headers,
            } => demo.h2(method, path, &borrowed(headers)),
        }
    }

    /// A short, printable form of the request (tokens shortened).
    pub fn describe(&self) -> String {
        let headers = |h: &[(String, String)]| -> String {
            h.iter().map(|(k, v)| format!(" [{k}: {}]", shorten(v))).collect()
        };
        match self {
            Send::Call {
                method,
                path,
                headers: h,
            } => format!("{method} {}{}", printable(path.as_bytes()), headers(h)),
            Send::H2 {
                method,
                path,
                headers: h,
            } => format!("HTTP/2 {method} {}{}", printable(path.as_bytes()), headers(h)),
            Send::Raw(bytes) => {
                let head = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
                format!("raw `{}`", printable(head).trim_end_matches("\\r"))
            }
        }
    }
}

fn owned(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn borrowed(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Bytes with controls and non-ASCII escaped.
pub fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'\r' => "\\r".to_string(),
            b'\n' => "\\n".to_string(),
            b'\t' => "\\t".to_string(),
            0x20..=0x7e => char::from(b).to_string(),
            _ => format!("\\x{b:02x}"),
        })
        .collect()
}

/// Long values (tokens) cut to their first 12 characters.
pub fn shorten(v: &str) -> String {
    let v = printable(v.as_bytes());
    if v.len() > 40 {
        format!("{}…({} chars)", &v[..12], v.len())
    } else {
        v
    }
}

/// One attack (or control) and what must happen on each edge.
#[derive(Debug, Clone)]
pub struct Row {
    pub label: String,
    pub send: Send,
    /// The answer with `envoy.yaml` as it is.
    pub hardened: String,
    /// The answer with Envoy's normalisation (and early header strip) off.
    pub filter_alone: String,
}

/// A row whose answer is the same on both edges.
pub fn row(label: &str, send: Send, both: &str) -> Row {
    Row {
        label: label.into(),
        send,
        hardened: both.into(),
        filter_alone: both.into(),
    }
}

/// A row whose answer depends on the edge.
pub fn row2(label: &str, send: Send, hardened: &str, filter_alone: &str) -> Row {
    Row {
        label: label.into(),
        send,
        hardened: hardened.into(),
        filter_alone: filter_alone.into(),
    }
}

/// What one row did on one edge.
pub struct Outcome {
    pub label: String,
    pub observed: Observed,
    pub answer: String,
}

/// Sends every row to `demo`; returns the outcomes and a line per mismatch. `check`
/// is called on every outcome for invariants that hold whatever the row expects.
/// Finally every `filter <status> <reason>` answer must show in Envoy's stats as one
/// more `gatehouse.denied.<reason>`: the answers are the filter's, for that reason.
pub fn run(
    demo: &DemoTopology,
    rows: &[Row],
    check: impl Fn(&Row, &Observed) -> Result<(), String>,
) -> (Vec<Outcome>, Vec<String>) {
    let before = demo.envoy.counters();
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for row in rows {
        assert!(
            seen.insert(row.label.clone()),
            "duplicate row label {}",
            row.label
        );
        let want = if demo.edge == Edge::HARDENED {
            &row.hardened
        } else {
            &row.filter_alone
        };
        let started = std::time::Instant::now();
        let observed = row.send.go(demo);
        if started.elapsed() > std::time::Duration::from_secs(1) {
            println!("slow row ({:?}): {}", started.elapsed(), row.label);
        }
        let answer = observed.answer().to_string();
        if &answer != want {
            failures.push(format!(
                "[{}] {}: {} → {answer}, want {want}",
                demo.edge.label(),
                row.label,
                row.send.describe()
            ));
        }
        if let Err(e) = check(row, &observed) {
            failures.push(format!("[{}] {}: {e}", demo.edge.label(), row.label));
        }
        // An answer that did not come from the API must not have reached it.
        if !observed.reached_api && answer.starts_with("api") {
            failures.push(format!(
                "[{}] {}: inconsistent {answer}",
                demo.edge.label(),
                row.label
            ));
        }
        outcomes.push(Outcome {
            label: row.label.clone(),
            observed,
            answer,
        });
    }
    failures.extend(check_counters(demo, &before, &outcomes));
    (outcomes, failures)
}

/// Denials per reason, from the answers and from the filter's counters.
fn check_counters(demo: &DemoTopology, before: &BTreeMap<String, u64>, outcomes: &[Outcome]) -> Vec<String> {
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for o in outcomes {
        if let Answer::Filter { reason, .. } = o.observed.answer() {
            *want.entry(format!("gatehouse.denied.{reason}")).or_default() += 1;
        }
    }
    let moved = |now: &BTreeMap<String, u64>| -> BTreeMap<String, u64> {
        now.iter()
            .filter(|(k, _)| k.starts_with("gatehouse.denied."))
            .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect()
    };
    // The filter hands its counts to Envoy once a second.
    let after = demo.envoy.counters_when(|c| moved(c) == want);
    let got = moved(&after);
    if got == want {
        Vec::new()
    } else {
        vec![format!(
            "[{}] denial counters moved {got:?}, the answers say {want:?}",
            demo.edge.label()
        )]
    }
}

/// Prints the rows as Markdown (`| label | request | hardened | filter alone |`), for
/// docs/attacks.md; visible with `--no-capture` and on failure.
pub fn print_table(test: &str, rows: &[Row], hardened: &[Outcome], alone: Option<&[Outcome]>) {
    println!("\n{test}: | row | sent | hardened | filter alone |");
    for (i, row) in rows.iter().enumerate() {
        let h = hardened.get(i).map_or("-", |o| o.answer.as_str());
        let a = alone.and_then(|a| a.get(i)).map_or("-", |o| o.answer.as_str());
        println!(
            "| `{}` | {} | {} | {} |",
            row.label,
            row.send.describe().replace('|', "\\|"),
            h,
            a
        );
    }
}

/// Starts the hardened demo and the filter-alone variant side by side.
pub fn both_edges() -> (DemoTopology, DemoTopology) {
    let alone = std::thread::spawn(|| DemoTopology::start_with(Edge::FILTER_ALONE));
    let hardened = DemoTopology::start();
    (hardened, alone.join().unwrap())
}

/// Panics with every failure, if any.
pub fn assert_no_failures(test: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{test}: {} row(s) did not answer as they must:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
