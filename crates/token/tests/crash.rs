//! `kill -9` of the token service (the `gatehouse-token serve` process) in the middle
//! of a stream of writes: refresh rotations, admin disables and enables, logins and
//! revocations, while the command line adds users (and is killed too). After each
//! kill the service is started again on the same database, and everything a client
//! was told succeeded must be there, whole: SQLite's integrity and foreign keys hold,
//! every refresh-token family has exactly one live token (or is revoked as a whole),
//! a token whose successor was returned is spent, a disabled user has their tokens
//! revoked in the same transaction. Repeated at different moments.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64ct::{Base64UrlUnpadded, Encoding};
use serde_json::{json, Value};
use support::process::{cli, drain, spawn_cli, text, Server};

const FORM: &str = "application/x-www-form-urlencoded";
const PASSWORD: &str = "crash-demo-pass";
const ROTATORS: usize = 6;
const TOGGLED: usize = 3;

/// Users imported in one go (one hash for all): `root` (admin), `rot*`, `tog*`, `rev0`.
fn import_users(db: &Path) {
    let hasher = gatehouse_token::passwords::Hasher::new(
        gatehouse_token::passwords::OWASP_MIN,
        1,
        Duration::from_secs(5),
    )
    .unwrap();
    let hash = hasher.hash_blocking(PASSWORD).unwrap();
    let mut names = vec![("root".to_string(), vec!["admin"])];
    names.extend((0..ROTATORS).map(|i| (format!("rot{i}"), vec!["user"])));
    names.extend((0..TOGGLED).map(|i| (format!("tog{i}"), vec!["user"])));
    names.push(("rev0".to_string(), vec!["user"]));
    let lines: String = names
        .iter()
        .map(|(name, roles)| {
            format!(
                "{}\n",
                json!({"username": name, "hashed_password": hash, "roles": roles})
            )
        })
        .collect();
    let file = db.with_extension("jsonl");
    std::fs::write(&file, lines).unwrap();
    let out = cli(db, &["user", "import", file.to_str().unwrap()], "", &[]);
    assert!(out.status.success(), "{}", text(&out));
}

/// One HTTP exchange: `Ok((status, body))` if the whole answer arrived, `Err` if the
/// outcome is unknown (the server died before, during or after the write).
async fn exchange(req: reqwest::RequestBuilder) -> Result<(u16, Value), ()> {
    let r = req.send().await.map_err(|_| ())?;
    let status = r.status().as_u16();
    let body = r.bytes().await.map_err(|_| ())?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

fn form(client: &reqwest::Client, url: String, body: String) -> reqwest::RequestBuilder {
    client.post(url).header("content-type", FORM).body(body)
}

async fn login(client: &reqwest::Client, server_url: &str, user: &str, password: &str) -> (u16, Value) {
    exchange(form(
        client,
        format!("{server_url}/token"),
        format!("grant_type=password&username={user}&password={password}"),
    ))
    .await
    .unwrap()
}

fn claims(access: &str) -> Value {
    let payload = access.split('.').nth(1).unwrap();
    serde_json::from_slice(&Base64UrlUnpadded::decode_vec(payload).unwrap()).unwrap()
}

fn jti(access: &str) -> String {
    claims(access)["jti"].as_str().unwrap().to_string()
}

fn iat(access: &str) -> i64 {
    claims(access)["iat"].as_i64().unwrap()
}

fn sha256(token: &str) -> Vec<u8> {
    gatehouse_token::issue::refresh_hash(token)
}

/// What a rotator was told: the chain of refresh tokens it received (each returned
/// as the successor of the one before) and the token of a request left unanswered.
struct Chain {
    tokens: Vec<String>,
    in_flight: Option<String>,
}

async fn rotate_until_stopped(
    client: reqwest::Client,
    url: String,
    first: String,
    stop: Arc<AtomicBool>,
) -> Chain {
    let mut chain = Chain {
        tokens: vec![first],
        in_flight: None,
    };
    while !stop.load(Ordering::SeqCst) {
        let current = chain.tokens.last().unwrap().clone();
        match exchange(form(
            &client,
            url.clone(),
            format!("grant_type=refresh_token&refresh_token={current}"),
        ))
        .await
        {
            Ok((200, body)) => chain
                .tokens
                .push(body["refresh_token"].as_str().unwrap().to_string()),
            Ok((status, body)) => panic!("a rotation got {status}: {body}"),
            Err(()) => {
                chain.in_flight = Some(current);
                break;
            }
        }
    }
    chain
}

/// What a toggler was told: the states it set, acknowledged, in order, and the state
/// of a request left unanswered.
struct Toggles {
    user: String,
    acked: Vec<bool>,
    in_flight: Option<bool>,
}

async fn toggle_until_stopped(
    client: reqwest::Client,
    base: String,
    admin: String,
    user: String,
    stop: Arc<AtomicBool>,
) -> Toggles {
    let mut t = Toggles {
        user,
        acked: Vec::new(),
        in_flight: None,
    };
    let mut disable = true;
    while !stop.load(Ordering::SeqCst) {
        let action = if disable { "disable" } else { "enable" };
        let req = client
            .post(format!("{base}/admin/users/{}/{action}", t.user))
            .bearer_auth(&admin);
        match exchange(req).await {
            Ok((200, body)) => {
                assert_eq!(body["disabled"], disable, "{body}");
                t.acked.push(disable);
            }
            Ok((status, body)) => panic!("{action} got {status}: {body}"),
            Err(()) => {
                t.in_flight = Some(disable);
                break;
            }
        }
        disable = !disable;
    }
    t
}

/// What the revoker was told: refresh tokens issued (by a login) and access tokens
/// revoked (RFC 7009), both acknowledged.
#[derive(Default)]
struct Revoker {
    issued_refresh: Vec<String>,
    /// (jti, iat) of every access token whose revocation was acknowledged.
    revoked_jti: Vec<(String, i64)>,
}

async fn login_and_revoke_until_stopped(
    client: reqwest::Client,
    base: String,
    stop: Arc<AtomicBool>,
) -> Revoker {
    let mut r = Revoker::default();
    while !stop.load(Ordering::SeqCst) {
        let Ok((status, body)) = exchange(form(
            &client,
            format!("{base}/token"),
            format!("grant_type=password&username=rev0&password={PASSWORD}"),
        ))
        .await
        else {
            break;
        };
        assert_eq!(status, 200, "{body}");
        r.issued_refresh
            .push(body["refresh_token"].as_str().unwrap().to_string());
        let access = body["access_token"].as_str().unwrap().to_string();
        match exchange(form(&client, format!("{base}/revoke"), format!("token={access}"))).await {
            Ok((200, _)) => r.revoked_jti.push((jti(&access), iat(&access))),
            Ok((status, body)) => panic!("revoke got {status}: {body}"),
            Err(()) => break,
        }
    }
    r
}

/// Users added by the command line in a loop; the one running when `stop` is set is
/// killed with SIGKILL. Returns (acknowledged, killed) names.
fn add_users_until_stopped(
    db: std::path::PathBuf,
    prefix: String,
    stop: Arc<AtomicBool>,
) -> (Vec<String>, Vec<String>) {
    let (mut acked, mut killed) = (Vec::new(), Vec::new());
    for i in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let name = format!("{prefix}{i}");
        let mut child = spawn_cli(&db, &["user", "add", &name, "--role", "user"], &[]);
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
        }
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let out = drain(&mut child);
                assert!(status.success(), "user add {name}: {out}");
                acked.push(name);
                break;
            }
            if stop.load(Ordering::SeqCst) {
                child.kill().unwrap(); // SIGKILL
                let status = child.wait().unwrap();
                if status.success() {
                    acked.push(name); // it finished first
                } else {
                    killed.push(name);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    (acked, killed)
}

/// The database after a crash and a restart, checked for torn writes.
async fn check_invariants(db: &Path) -> BTreeMap<&'static str, i64> {
    let mut c = support::sql(db).await;
    let integrity: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert_eq!(integrity, ["ok"], "integrity_check");
    let fk: Vec<(String, i64, String, i64)> = sqlx::query_as("PRAGMA foreign_key_check")
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert!(fk.is_empty(), "foreign_key_check: {fk:?}");

    // Every family: one user, and either revoked as a whole or exactly one live token
    // (the newest) with every older one spent.
    let families: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT family, COUNT(DISTINCT user_id), COUNT(*),
                SUM(revoked_at IS NOT NULL), SUM(used_at IS NULL AND revoked_at IS NULL),
                SUM(used_at IS NOT NULL)
         FROM refresh_tokens GROUP BY family",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    for (family, users, rows, revoked, live, used) in &families {
        assert_eq!(*users, 1, "family {family} spans users");
        if *revoked > 0 {
            assert_eq!(revoked, rows, "family {family} half revoked");
        } else {
            assert_eq!(
                (*live, *used),
                (1, rows - 1),
                "family {family}: {rows} rows, {live} live, {used} spent"
            );
        }
    }
    let newest_is_live: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM refresh_tokens t
         WHERE t.used_at IS NULL AND t.revoked_at IS NULL
           AND t.id <> (SELECT MAX(id) FROM refresh_tokens WHERE family = t.family)",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(newest_is_live, 0, "a live token that is not its family's newest");

    // A disabled user: their refresh tokens revoked and a revocation for the edge
    // covering tokens issued up to the disable, in the same transaction.
    let torn_disables: Vec<String> = sqlx::query_scalar(
        "SELECT u.username FROM users u WHERE u.disabled = 1 AND (
             EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.user_id = u.id AND t.revoked_at IS NULL)
             OR NOT EXISTS (SELECT 1 FROM revocations r
                            WHERE r.kind = 'sub' AND r.value = u.username AND r.iat_before >= u.updated_at + 1))",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert!(
        torn_disables.is_empty(),
        "disabled without their revocations: {torn_disables:?}"
    );

    // Users whole; the feed's counter ahead of every entry it numbered.
    let bad_users: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM users WHERE password_hash NOT LIKE '$argon2id$%' OR NOT json_valid(roles)",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(bad_users, 0, "a user row is not whole");
    let (seq, max_seq): (i64, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT seq FROM revocation_feed WHERE id = 1), (SELECT MAX(seq) FROM revocations)",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert!(
        seq >= max_seq.unwrap_or(0),
        "feed counter {seq} behind entry {max_seq:?}"
    );

    let mut counts = BTreeMap::new();
    for table in ["users", "refresh_tokens", "revocations"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&mut c)
            .await
            .unwrap();
        counts.insert(table, n);
    }
    counts.insert("families", i64::try_from(families.len()).unwrap());
    counts
}

/// (used, revoked) of a refresh token by its hash, or None if it is not stored.
async fn token_state(db: &Path, token: &str) -> Option<(bool, bool, String)> {
    let mut c = support::sql(db).await;
    sqlx::query_as(
        "SELECT used_at IS NOT NULL, revoked_at IS NOT NULL, family FROM refresh_tokens WHERE token_hash = ?",
    )
    .bind(sha256(token))
    .fetch_optional(&mut c)
    .await
    .unwrap()
}

async fn family_rows(db: &Path, family: &str) -> i64 {
    let mut c = support::sql(db).await;
    sqlx::query_scalar("SELECT COUNT(*) FROM refresh_tokens WHERE family = ?")
        .bind(family)
        .fetch_one(&mut c)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_loses_nothing_acknowledged_and_tears_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    import_users(&db);
    let args = [
        "--max-failures-per-user",
        "100000",
        "--max-failures-per-address",
        "100000",
    ];
    let mut server = Server::start(&db, &args, "info");
    let client = reqwest::Client::new();
    let mut in_flight_at_kills = 0;

    // Kill moments after the stream starts: very early, then later and later.
    for (round, kill_after_ms) in [40u64, 350, 900, 1600].into_iter().enumerate() {
        let base = format!("http://{}", server.addr);
        let (status, body) = login(&client, &base, "root", PASSWORD).await;
        assert_eq!(status, 200, "{body}");
        let admin = body["access_token"].as_str().unwrap().to_string();
        // Fresh families for the rotators; the toggled users enabled, each with a
        // refresh token that a committed disable must revoke.
        let mut firsts = Vec::new();
        for i in 0..ROTATORS {
            let (status, body) = login(&client, &base, &format!("rot{i}"), PASSWORD).await;
            assert_eq!(status, 200, "{body}");
            firsts.push(body["refresh_token"].as_str().unwrap().to_string());
        }
        let mut toggled_refresh = Vec::new();
        for i in 0..TOGGLED {
            let r = client
                .post(format!("{base}/admin/users/tog{i}/enable"))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let (status, body) = login(&client, &base, &format!("tog{i}"), PASSWORD).await;
            assert_eq!(status, 200, "{body}");
            toggled_refresh.push(body["refresh_token"].as_str().unwrap().to_string());
        }

        // The stream.
        let stop = Arc::new(AtomicBool::new(false));
        let rotators: Vec<_> = firsts
            .into_iter()
            .map(|first| {
                tokio::spawn(rotate_until_stopped(
                    reqwest::Client::new(),
                    format!("{base}/token"),
                    first,
                    stop.clone(),
                ))
            })
            .collect();
        let togglers: Vec<_> = (0..TOGGLED)
            .map(|i| {
                tokio::spawn(toggle_until_stopped(
                    reqwest::Client::new(),
                    base.clone(),
                    admin.clone(),
                    format!("tog{i}"),
                    stop.clone(),
                ))
            })
            .collect();
        let revoker = tokio::spawn(login_and_revoke_until_stopped(
            reqwest::Client::new(),
            base.clone(),
            stop.clone(),
        ));
        let adder = {
            let (db, stop) = (db.clone(), stop.clone());
            tokio::task::spawn_blocking(move || add_users_until_stopped(db, format!("cli{round}x"), stop))
        };

        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
        server.kill9();
        stop.store(true, Ordering::SeqCst);
        let wal = std::fs::metadata(db.with_extension("db-wal")).map_or(0, |m| m.len());

        let mut chains = Vec::new();
        for t in rotators {
            chains.push(t.await.unwrap());
        }
        let mut toggles = Vec::new();
        for t in togglers {
            toggles.push(t.await.unwrap());
        }
        let revoker = revoker.await.unwrap();
        let (added, killed) = adder.await.unwrap();
        let in_flight = chains.iter().filter(|c| c.in_flight.is_some()).count()
            + toggles.iter().filter(|t| t.in_flight.is_some()).count();
        in_flight_at_kills += in_flight;

        // Restart on the same database, then check it.
        let started = Instant::now();
        server = Server::start(&db, &args, "info");
        let restart = started.elapsed();
        let base = format!("http://{}", server.addr);
        let counts = check_invariants(&db).await;

        // Every rotation the client saw: the presented token spent, its successor
        // stored in the same family. The last one: live, unless a rotation of it was
        // in flight, which either committed (spent, one unseen successor) or not.
        let (mut rotations, mut committed_unanswered) = (0, 0);
        for chain in &chains {
            let (tokens, last) = (&chain.tokens, chain.tokens.last().unwrap());
            rotations += tokens.len() - 1;
            let family = token_state(&db, &tokens[0]).await.unwrap().2;
            for t in &tokens[..tokens.len() - 1] {
                let (used, revoked, f) = token_state(&db, t).await.expect("an acknowledged token is gone");
                assert!(
                    used && !revoked,
                    "a token whose successor was returned is not spent"
                );
                assert_eq!(f, family);
            }
            let (used, revoked, _) = token_state(&db, last)
                .await
                .expect("the last token received is gone");
            assert!(!revoked);
            let rows = family_rows(&db, &family).await;
            let seen = i64::try_from(tokens.len()).unwrap();
            if used {
                assert_eq!(
                    chain.in_flight.as_ref(),
                    Some(last),
                    "spent without an answer in flight"
                );
                assert_eq!(
                    rows,
                    seen + 1,
                    "the in-flight rotation committed: one successor, unseen"
                );
                committed_unanswered += 1;
            } else {
                assert_eq!(rows, seen);
            }
            // And the service agrees after the restart: the live token rotates, a
            // spent one is reuse.
            let (status, body) = exchange(form(
                &client,
                format!("{base}/token"),
                format!("grant_type=refresh_token&refresh_token={last}"),
            ))
            .await
            .unwrap();
            assert_eq!(status, if used { 400 } else { 200 }, "{body}");
        }

        // Every acknowledged toggle: the database holds the last acknowledged state,
        // or the one in flight after it.
        let mut c = support::sql(&db).await;
        for (t, first_refresh) in toggles.iter().zip(&toggled_refresh) {
            let disabled: bool = sqlx::query_scalar("SELECT disabled FROM users WHERE username = ?")
                .bind(&t.user)
                .fetch_one(&mut c)
                .await
                .unwrap();
            let mut allowed = vec![t.acked.last().copied().unwrap_or(false)];
            allowed.extend(t.in_flight);
            assert!(
                allowed.contains(&disabled),
                "{}: disabled={disabled}, allowed {allowed:?}",
                t.user
            );
            if t.in_flight
                .is_some_and(|d| d == disabled && Some(&d) != t.acked.last())
            {
                committed_unanswered += 1;
            }
            if t.acked.contains(&true) {
                let (_, revoked, _) = token_state(&db, first_refresh).await.unwrap();
                assert!(
                    revoked,
                    "{}: disabled (acknowledged) but its refresh token lives",
                    t.user
                );
            }
        }
        for refresh in &revoker.issued_refresh {
            assert!(
                token_state(&db, refresh).await.is_some(),
                "an issued refresh token is gone"
            );
        }
        for (jti, iat) in &revoker.revoked_jti {
            // By its own entry, or (past the per-user bound of token entries) by rev0's
            // subject entry.
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM revocations WHERE (kind = 'jti' AND value = ?)
                 OR (kind = 'sub' AND value = 'rev0' AND iat_before > ?)",
            )
            .bind(jti)
            .bind(iat)
            .fetch_one(&mut c)
            .await
            .unwrap();
            assert!(n >= 1, "an acknowledged revocation is gone");
        }
        // Users added by the command line: every acknowledged one logs in; a killed
        // one is either absent or whole.
        for name in &added {
            let (status, body) = login(&client, &base, name, PASSWORD).await;
            assert_eq!(status, 200, "{name} was added, then: {body}");
        }
        for name in &killed {
            let present: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE username = ?")
                .bind(name)
                .fetch_one(&mut c)
                .await
                .unwrap();
            let (status, _) = login(&client, &base, name, PASSWORD).await;
            assert_eq!(status, if present == 1 { 200 } else { 401 }, "{name} (killed)");
        }
        let r = client.get(format!("{base}/revocations")).send().await.unwrap();
        assert_eq!(r.status(), 200, "the feed reads every entry");
        assert_eq!(
            client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        drop(c);
        println!(
            "round {round}: killed {kill_after_ms} ms into the stream (WAL {wal} bytes); in flight {in_flight} \
             (of which committed but unanswered: {committed_unanswered}); \
             acknowledged: {rotations} rotations, {} toggles, {} logins, {} revocations, {} CLI adds ({} CLI killed); \
             restarted in {restart:.0?}; {counts:?}",
            toggles.iter().map(|t| t.acked.len()).sum::<usize>(),
            revoker.issued_refresh.len(),
            revoker.revoked_jti.len(),
            added.len(),
            killed.len(),
        );
    }
    assert!(
        in_flight_at_kills > 0,
        "no kill landed while a write was in flight: the test proved nothing"
    );
    assert!(server.terminate().success());
}
