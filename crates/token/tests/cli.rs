//! The `gatehouse-token` binary: user management and start-up checks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse-token");
use gatehouse_testkit::SECRET;

/// Runs the binary on `db` with `args`, writing `stdin`.
fn run(db: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("SECRET_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn users_are_added_listed_disabled_and_never_show_their_hash() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    let add = run(
        &db,
        &["user", "add", "Alice", "--role", "admin", "--role", "user"],
        "alice-demo-pass\n",
    );
    assert!(add.status.success(), "{}", text(&add));
    assert!(text(&add).contains("added alice"), "{}", text(&add));
    let add = run(&db, &["user", "add", "bob", "--role", "user"], "bob-demo-pass\n");
    assert!(add.status.success(), "{}", text(&add));

    let list = run(&db, &["user", "list"], "");
    assert!(list.status.success());
    assert_eq!(
        String::from_utf8_lossy(&list.stdout),
        "alice\tactive\tadmin,user\nbob\tactive\tuser\n"
    );

    assert!(run(&db, &["user", "disable", "bob"], "").status.success());
    assert!(run(&db, &["user", "roles", "alice", "--role", "ops"], "")
        .status
        .success());
    let list = run(&db, &["user", "list", "--json"], "");
    let out = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        out.contains(r#""username":"bob""#) && out.contains(r#""disabled":true"#),
        "{out}"
    );
    assert!(out.contains(r#""roles":["ops"]"#), "{out}");
    assert!(!out.contains("argon2") && !out.contains("password"), "{out}");

    assert!(run(&db, &["user", "enable", "bob"], "").status.success());
    assert!(run(&db, &["user", "passwd", "bob"], "a-new-password\n")
        .status
        .success());
}

#[test]
fn a_python_export_imports_and_bad_lines_import_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    // pwdlib 0.3.1 / argon2-cffi 25.1.0 hashes of "correct horse battery staple".
    let good = r#"{"username": "erin", "hashed_password": "$argon2id$v=19$m=65536,t=3,p=4$esBNOrDdi/dFiaZHCeC+iw$1gUH3tc5v37aFs8dt8uvvPi2v0ehMBxtqMAZ5lpBmPg", "roles": ["user"], "disabled": false}
{"username": "frank", "hashed_password": "$argon2id$v=19$m=65536,t=3,p=4$rdIeOsJKJKqw3sROLHEqTA$T6mX5Yy7Eocx/1cyIRMczK9iq8TsNbIM0edZ+CPKJeE", "roles": [], "disabled": true}
"#;
    let file = dir.path().join("users.jsonl");
    std::fs::write(&file, good).unwrap();
    let out = run(&db, &["user", "import", file.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("imported 2 user(s)"));
    let list = run(&db, &["user", "list"], "");
    assert_eq!(
        String::from_utf8_lossy(&list.stdout),
        "erin\tactive\tuser\nfrank\tdisabled\t\n"
    );

    let bad_files = [
        (
            r#"{"username": "gina", "hashed_password": "plaintext"}"#,
            "users.jsonl:2: hashed_password",
        ),
        (
            r#"{"username": "gina", "hashed_password": "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"}"#,
            "hashed_password",
        ),
        (
            r#"{"username": "аlice", "hashed_password": "x"}"#,
            "invalid username",
        ),
        (r#"{"username": "gina", "password": "x"}"#, "not a user record"),
        ("not json", "not a user record"),
        (
            r#"{"username": "erin", "hashed_password": "$argon2id$v=19$m=65536,t=3,p=4$esBNOrDdi/dFiaZHCeC+iw$1gUH3tc5v37aFs8dt8uvvPi2v0ehMBxtqMAZ5lpBmPg"}"#,
            "already exists",
        ),
    ];
    for (line, message) in bad_files {
        let content = format!(
            "{{\"username\": \"harry\", \"hashed_password\": \"$argon2id$v=19$m=65536,t=3,p=4$esBNOrDdi/dFiaZHCeC+iw$1gUH3tc5v37aFs8dt8uvvPi2v0ehMBxtqMAZ5lpBmPg\"}}\n{line}\n"
        );
        std::fs::write(&file, content).unwrap();
        let out = run(&db, &["user", "import", file.to_str().unwrap()], "");
        assert!(!out.status.success(), "{line}");
        assert!(text(&out).contains(message), "{line}: {}", text(&out));
    }
    let list = run(&db, &["user", "list"], "");
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains("harry"),
        "a failed import must insert nothing"
    );
}

#[test]
fn bad_input_exits_non_zero_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    assert!(run(&db, &["user", "add", "alice"], "alice-demo-pass\n")
        .status
        .success());
    let cases: &[(&[&str], &str, &str)] = &[
        (&["user", "add", "alice"], "another-pass\n", "already exists"),
        (&["user", "add", "ALICE"], "another-pass\n", "already exists"),
        (&["user", "add", "аlice"], "another-pass\n", "invalid username"),
        (&["user", "add", "new user"], "another-pass\n", "invalid username"),
        (&["user", "add", "zed"], "short\n", "the password must have"),
        (&["user", "add", "zed"], "", "the password must have"),
        (
            &["user", "add", "zed", "--role", "a,b"],
            "another-pass\n",
            "invalid role",
        ),
        (&["user", "disable", "nobody"], "", "no user nobody"),
        (&["user", "revoke", "nobody"], "", "no user nobody"),
        (&["user", "enable", "nobody"], "", "no user nobody"),
        (&["user", "passwd", "nobody"], "another-pass\n", "no user nobody"),
        (
            &["user", "import", "/nonexistent/file"],
            "",
            "reading /nonexistent/file",
        ),
        (&["user", "frobnicate"], "", "unrecognized subcommand"),
        (
            &["--argon2-memory-kib", "4096", "user", "add", "zed"],
            "another-pass\n",
            "below OWASP",
        ),
    ];
    for (args, stdin, message) in cases {
        let out = run(&db, args, stdin);
        assert!(!out.status.success(), "{args:?}");
        assert!(text(&out).contains(message), "{args:?}: {}", text(&out));
    }
}

#[test]
fn serve_refuses_a_weak_secret() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    let cases: &[(Option<&str>, &str)] = &[
        (None, "SECRET_KEY is not set"),
        (Some("YOUR-SECRET-KEY-HERE"), "placeholder"),
        (Some("changeme"), "placeholder"),
        (Some("abcdef"), "at least 32 bytes"),
        (
            Some("this is not hex but it is long enough to pass a length check"),
            "hex-encoded",
        ),
    ];
    for (secret, message) in cases {
        let mut cmd = Command::new(BIN);
        cmd.arg("--db")
            .arg(&db)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env_remove("SECRET_KEY");
        if let Some(s) = secret {
            cmd.env("SECRET_KEY", s);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{secret:?}");
        let t = text(&out);
        assert!(t.contains(message), "{secret:?}: {t}");
        if let Some(s) = secret {
            assert!(!t.contains(s), "the secret was printed");
        }
    }
}

/// Starts `serve` on a kernel-chosen port; returns the child, its address and its
/// stderr, drained by a thread (a full pipe would block the server) that ends when the
/// child has exited and the pipe is empty.
fn start_server(db: &Path) -> (Server, String, Log) {
    let mut child = Command::new(BIN)
        .arg("--db")
        .arg(db)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("SECRET_KEY", SECRET)
        .env("RUST_LOG", "trace")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let sink = log.clone();
    let reader = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = log.lock().unwrap().clone();
        if let Some(addr) = text
            .split("address=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
        {
            return (Server(child), addr.to_string(), Log { text: log, reader });
        }
        assert!(Instant::now() < deadline, "did not start: {text}");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("exited early ({status}): {text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The server process, killed if a test fails before stopping it.
struct Server(std::process::Child);

/// What the server wrote to stderr so far, and the thread that reads it.
struct Log {
    text: Arc<Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Log {
    /// Everything, once the server has exited (its stderr is then at EOF).
    fn all(self) -> String {
        self.reader.join().unwrap();
        self.text.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A raw HTTP/1.1 POST /token; returns the whole response text.
fn post_token(addr: &str, target: &str, form: &str) -> String {
    post(addr, target, "", form)
}

/// A raw HTTP/1.1 form POST with `extra` header lines (each ending in CRLF).
fn post(addr: &str, target: &str, extra: &str, form: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {target} HTTP/1.1\r\nHost: x\r\n{extra}content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{form}",
        form.len()
    )
    .unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).unwrap();
    out
}

/// A raw HTTP/1.1 GET; returns the status line and the body.
fn get(addr: &str, target: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[test]
fn disable_and_revoke_from_the_cli_reach_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    for (user, role) in [("alice", "admin"), ("bob", "user"), ("carol", "user")] {
        let add = run(
            &db,
            &["user", "add", user, "--role", role],
            &format!("{user}-demo-pass\n"),
        );
        assert!(add.status.success(), "{}", text(&add));
    }
    let before = gatehouse_token::clock::unix_now();
    let disable = run(&db, &["user", "disable", "Bob", "--access-ttl-seconds", "60"], "");
    assert!(disable.status.success(), "{}", text(&disable));
    assert!(text(&disable).contains("disabled bob; all their tokens are revoked"));
    let revoke = run(&db, &["user", "revoke", "carol"], "");
    assert!(revoke.status.success(), "{}", text(&revoke));
    assert!(text(&revoke).contains("revoked every token of carol"));
    let enable = run(&db, &["user", "enable", "bob"], "");
    assert!(enable.status.success(), "{}", text(&enable));
    let after = gatehouse_token::clock::unix_now();
    let list = run(&db, &["user", "list"], "");
    assert_eq!(
        String::from_utf8_lossy(&list.stdout),
        "alice\tactive\tadmin\nbob\tactive\tuser\ncarol\tactive\tuser\n",
        "revoking disables no one, enabling re-enables"
    );

    let (child, addr, _log) = start_server(&db);
    let (status, body) = get(&addr, "/revocations");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let feed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let cursor = feed["cursor"].as_u64().unwrap();
    assert!(cursor > 0, "{feed}");
    let entries = feed["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "enabling bob kept his entry: {feed}");
    let within = |v: &serde_json::Value, lo: i64, hi: i64| (lo..=hi).contains(&v.as_i64().unwrap());
    assert_eq!(entries[0]["sub"], "bob");
    assert!(within(&entries[0]["iat_before"], before + 1, after + 1), "{feed}");
    assert!(
        within(&entries[0]["until"], before + 60, after + 60),
        "--access-ttl-seconds: {feed}"
    );
    assert_eq!(entries[1]["sub"], "carol");
    assert!(
        within(&entries[1]["until"], before + 1800, after + 1800),
        "the default TTL: {feed}"
    );

    // With the service running: a revoked user may log in again, a disabled one not.
    let login = |user: &str| {
        post_token(
            &addr,
            "/token",
            &format!("grant_type=password&username={user}&password={user}-demo-pass"),
        )
    };
    assert!(login("carol").starts_with("HTTP/1.1 200"));
    assert!(run(&db, &["user", "disable", "carol"], "").status.success());
    let refused = login("carol");
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let (_, body) = get(&addr, "/revocations");
    let feed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        feed["cursor"].as_u64().unwrap() > cursor,
        "the disable is a new change: {feed}"
    );
    drop(child);
}

#[test]
fn serve_logs_no_secret_password_or_token_even_at_trace_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    assert!(run(
        &db,
        &["user", "add", "alice", "--role", "admin"],
        "alice-demo-pass\n"
    )
    .status
    .success());
    let (mut child, addr, log) = start_server(&db);

    let ok = post_token(
        &addr,
        "/token",
        "grant_type=password&username=alice&password=alice-demo-pass",
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let body = &ok[ok.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let (access, refresh) = (
        v["access_token"].as_str().unwrap(),
        v["refresh_token"].as_str().unwrap(),
    );
    let bad = post_token(
        &addr,
        "/token",
        "grant_type=password&username=alice&password=guessed-Pa55word",
    );
    assert!(bad.starts_with("HTTP/1.1 401"), "{bad}");
    let query = post_token(&addr, "/token?password=query-Pa55word", "grant_type=password");
    assert!(query.starts_with("HTTP/1.1 400"), "{query}");
    // The admin API and revocation see the tokens too; they log who and what, never them.
    let bearer = format!("authorization: Bearer {access}\r\n");
    let admin = post(&addr, "/admin/users/alice/revoke", &bearer, "");
    assert!(admin.starts_with("HTTP/1.1 200"), "{admin}");
    let refused = post(&addr, "/admin/users/alice/revoke", &bearer, "");
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    for token in [access, refresh] {
        let revoked = post_token(&addr, "/revoke", &format!("token={token}"));
        assert!(revoked.starts_with("HTTP/1.1 200"), "{revoked}");
    }

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.0.wait().unwrap();
    let log = log.all();
    assert!(exit.success(), "exit {exit:?}: {log}");
    assert!(log.contains("gatehouse-token stopped"), "{log}");
    assert!(log.contains("password login"), "the trace log is empty: {log}");
    assert!(log.contains("admin action"), "{log}");
    for secret in [
        SECRET,
        "alice-demo-pass",
        "guessed-Pa55word",
        "query-Pa55word",
        access,
        refresh,
        "$argon2id",
    ] {
        assert!(!log.contains(secret), "logged: {secret}");
    }
}

#[test]
fn a_killed_server_loses_nothing_it_committed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    assert!(run(&db, &["user", "add", "alice"], "alice-demo-pass\n")
        .status
        .success());
    let (child, addr, _log) = start_server(&db);
    let ok = post_token(
        &addr,
        "/token",
        "grant_type=password&username=alice&password=alice-demo-pass",
    );
    let body = &ok[ok.find("\r\n\r\n").unwrap() + 4..];
    let refresh = serde_json::from_str::<serde_json::Value>(body).unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    drop(child); // SIGKILL: no shutdown, no checkpoint

    let (child, addr, _log) = start_server(&db);
    let again = post_token(
        &addr,
        "/token",
        &format!("grant_type=refresh_token&refresh_token={refresh}"),
    );
    assert!(
        again.starts_with("HTTP/1.1 200"),
        "the refresh token committed before the kill is gone: {again}"
    );
    drop(child);
}

#[test]
fn keys_rotate_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    let keys = |args: &[&str], secret: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.arg("--db")
            .arg(&db)
            .arg("keys")
            .args(args)
            .env_remove("SECRET_KEY");
        if let Some(s) = secret {
            cmd.env("SECRET_KEY", s);
        }
        cmd.output().unwrap()
    };
    let refused = keys(&["rotate"], None);
    assert!(
        !refused.status.success() && text(&refused).contains("SECRET_KEY is not set"),
        "{}",
        text(&refused)
    );
    let hs = keys(&["rotate", "--alg", "HS256"], Some(SECRET));
    assert!(
        !hs.status.success() && text(&hs).contains("HS256 has no key to rotate"),
        "{}",
        text(&hs)
    );

    let first = keys(&["rotate", "--alg", "EdDSA", "--now"], Some(SECRET));
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        text(&first).contains("sign with it within a second"),
        "{}",
        text(&first)
    );
    let list = keys(&["list"], None);
    let out = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        out.lines().nth(1).unwrap().contains("\tEdDSA\tcurrent\t"),
        "{out}"
    );
    // Without --now the next key is published first and signs two minutes later; the
    // current one signs until then.
    let second = keys(&["rotate", "--alg", "ES256"], Some(SECRET));
    assert!(second.status.success(), "{}", text(&second));
    assert!(text(&second).contains("(in 120 s)"), "{}", text(&second));
    let list = keys(&["list"], None);
    let out = String::from_utf8_lossy(&list.stdout).to_string();
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(rows[0].contains("\tES256\tpublished, signs from "), "{out}");
    assert!(rows[1].contains("\tEdDSA\tcurrent until "), "{out}");
    assert!(!out.contains(SECRET));
    let both = keys(&["rotate", "--now", "--activate-after", "5"], Some(SECRET));
    assert!(
        !both.status.success(),
        "--now with --activate-after: {}",
        text(&both)
    );
}
