//! The store's contract, run on both databases: every case below runs once on a
//! SQLite file and once on a fresh PostgreSQL database (`GATEHOUSE_TEST_DATABASE_URL`;
//! without it the PostgreSQL cases fail, they never skip). Two `Store`s opened on one
//! database stand for two replicas of the service; the races are real (tasks on a
//! multi-threaded runtime, each with its own connection).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use gatehouse_token::issue::Issuer;
use gatehouse_token::limiter::{FailureLimiter, Verdict};
use gatehouse_token::secret;
use gatehouse_token::signing::SigningAlg;
use gatehouse_token::store::{Location, NewUser, Revoked, Rotation, Store, StoreError};
use support::SECRET;

/// One database for a test, and the means to open it again as another replica.
struct Db {
    location: Location,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    async fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        Db {
            location: Location::Sqlite(dir.path().join("store.db")),
            _dir: Some(dir),
        }
    }

    async fn postgres() -> Db {
        Db {
            location: Location::Postgres(support::postgres::fresh_database().await),
            _dir: None,
        }
    }

    /// The cases replay fixed times: the store's own clock is left out of them.
    /// A connection of our own, beside the stores (to play what no API does).
    async fn raw(&self) -> sqlx::AnyConnection {
        use sqlx::Connection;
        let url = match &self.location {
            Location::Sqlite(path) => format!("sqlite://{}", path.display()),
            Location::Postgres(url) => url.clone(),
        };
        sqlx::AnyConnection::connect(&url).await.unwrap()
    }

    async fn open(&self) -> Store {
        Store::open(&self.location).await.unwrap().with_clock(|| 0)
    }
}

/// Each case as two tests, `sqlite::<case>` and `postgres::<case>`.
macro_rules! on_both_databases {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::Db::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::Db::postgres().await).await;
                }
            )*
        }
    };
}

on_both_databases!(
    users_round_trip_and_names_are_unique,
    imports_are_all_or_nothing,
    one_refresh_token_used_at_once_by_many_rotates_exactly_once,
    reuse_seen_by_another_replica_revokes_the_family,
    disabling_revokes_in_one_transaction,
    revocation_numbers_commit_in_order_under_concurrent_writers,
    revocation_entries_only_widen,
    failures_counted_by_two_replicas_all_count,
    two_replicas_starting_together_make_one_signing_key,
    a_rotation_on_one_replica_is_served_by_the_other,
    migrations_are_idempotent_and_reopening_keeps_everything,
    one_user_cannot_grow_the_revocation_set_past_a_bound,
    feed_pages_add_up_to_the_whole_set,
    a_restored_backup_never_hides_new_entries_from_a_poller,
);

fn new_user<'a>(name: &'a str, roles: &'a [String]) -> NewUser<'a> {
    NewUser {
        username: name,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA",
        roles,
        disabled: false,
    }
}

async fn users_round_trip_and_names_are_unique(db: Db) {
    let store = db.open().await;
    let roles = vec!["user".to_string(), "admin".to_string()];
    let alice = store.create_user(new_user("alice", &roles), 100).await.unwrap();
    let bob = store.create_user(new_user("bob", &[]), 101).await.unwrap();
    assert_ne!(alice.id, bob.id);
    assert!(matches!(
        store.create_user(new_user("alice", &[]), 102).await,
        Err(StoreError::Exists(name)) if name == "alice"
    ));
    let (user, hash) = store.credentials("alice").await.unwrap().unwrap();
    assert_eq!(user, alice);
    assert!(hash.starts_with("$argon2id$"));
    assert_eq!(store.user("nobody").await.unwrap(), None);

    store
        .set_roles("bob", &["auditor".into()], 200, 1800)
        .await
        .unwrap();
    store.set_disabled("bob", true, 201, 1800).await.unwrap();
    let bob = store.user("bob").await.unwrap().unwrap();
    assert_eq!(
        (bob.roles.clone(), bob.disabled, bob.updated_at),
        (vec!["auditor".into()], true, 201)
    );
    store.set_disabled("bob", false, 202, 1800).await.unwrap();
    assert!(!store.user("bob").await.unwrap().unwrap().disabled);
    assert!(matches!(
        store.set_disabled("carol", true, 203, 1800).await,
        Err(StoreError::NoSuchUser(_))
    ));

    // A re-hash only replaces the hash it read.
    assert!(store
        .replace_hash(alice.id, &hash, "$argon2id$new", 300)
        .await
        .unwrap());
    assert!(!store
        .replace_hash(alice.id, &hash, "$argon2id$other", 301)
        .await
        .unwrap());
    let names: Vec<String> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["alice", "bob"]);
}

async fn imports_are_all_or_nothing(db: Db) {
    let store = db.open().await;
    store.create_user(new_user("taken", &[]), 1).await.unwrap();
    let batch = [new_user("a1", &[]), new_user("a2", &[]), new_user("taken", &[])];
    assert!(matches!(
        store.import_users(&batch, 2).await,
        Err(StoreError::Exists(_))
    ));
    assert_eq!(
        store.list_users().await.unwrap().len(),
        1,
        "nothing of the batch stayed"
    );
    assert_eq!(store.import_users(&batch[..2], 3).await.unwrap(), 2);
    assert_eq!(store.list_users().await.unwrap().len(), 3);
}

async fn one_refresh_token_used_at_once_by_many_rotates_exactly_once(db: Db) {
    // Two replicas, 16 concurrent presentations of one refresh token.
    let (a, b) = (db.open().await, db.open().await);
    let user = a.create_user(new_user("alice", &[]), 1).await.unwrap();
    a.insert_refresh(b"t0", "fam", user.id, None, 10, 10_000)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..16u8)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { store.rotate_refresh(b"t0", &[b'n', i], 20, 10_000).await.unwrap() })
        })
        .collect();
    let mut rotated = 0;
    let mut reused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Rotation::Rotated { user, .. } => {
                assert_eq!(user.username, "alice");
                rotated += 1;
            }
            Rotation::Reused => reused += 1,
            Rotation::Invalid => panic!("a presented token was called invalid"),
        }
    }
    assert_eq!((rotated, reused), (1, 15));
    // The reuse revoked the whole family, the winner's new token included.
    let states = a.refresh_states("alice").await.unwrap();
    assert_eq!(states.len(), 2);
    assert!(
        states
            .iter()
            .all(|(family, _, revoked)| family == "fam" && *revoked),
        "{states:?}"
    );
}

async fn reuse_seen_by_another_replica_revokes_the_family(db: Db) {
    let (a, b) = (db.open().await, db.open().await);
    let user = a.create_user(new_user("alice", &[]), 1).await.unwrap();
    a.insert_refresh(b"t0", "fam", user.id, Some(&["user".into()]), 10, 10_000)
        .await
        .unwrap();
    let Rotation::Rotated { scope, .. } = a.rotate_refresh(b"t0", b"t1", 11, 10_000).await.unwrap() else {
        panic!("the first use rotates")
    };
    assert_eq!(
        scope,
        Some(vec!["user".to_string()]),
        "the scope travels with the family"
    );
    assert_eq!(
        b.rotate_refresh(b"t0", b"t2", 12, 10_000).await.unwrap(),
        Rotation::Reused
    );
    assert_eq!(
        a.rotate_refresh(b"t1", b"t3", 13, 10_000).await.unwrap(),
        Rotation::Invalid,
        "the rotated-to token died with its family"
    );
    assert_eq!(
        b.rotate_refresh(b"nope", b"t4", 14, 10_000).await.unwrap(),
        Rotation::Invalid
    );
    // Expired tokens are invalid, then purged.
    a.insert_refresh(b"old", "fam2", user.id, None, 10, 50)
        .await
        .unwrap();
    assert_eq!(
        b.rotate_refresh(b"old", b"t5", 60, 10_000).await.unwrap(),
        Rotation::Invalid
    );
    assert_eq!(b.purge_expired(60).await.unwrap(), 1);
    // RFC 7009 revocation by any member of a family.
    a.insert_refresh(b"f3", "fam3", user.id, None, 10, 10_000)
        .await
        .unwrap();
    assert!(b.revoke_refresh_family(b"f3", 70).await.unwrap());
    assert!(!b.revoke_refresh_family(b"unknown", 70).await.unwrap());
    assert_eq!(
        a.rotate_refresh(b"f3", b"t6", 71, 10_000).await.unwrap(),
        Rotation::Invalid
    );
}

async fn disabling_revokes_in_one_transaction(db: Db) {
    let store = db.open().await;
    let user = store.create_user(new_user("bob", &[]), 1).await.unwrap();
    store
        .insert_refresh(b"r1", "f1", user.id, None, 10, 10_000)
        .await
        .unwrap();
    let before = store.revocations_since(None, None, 100).await.unwrap();
    store.set_disabled("bob", true, 100, 1800).await.unwrap();
    assert_eq!(
        store.rotate_refresh(b"r1", b"r2", 101, 10_000).await.unwrap(),
        Rotation::Invalid
    );
    let page = store
        .revocations_since(Some(before.cursor), Some(&before.feed), 100)
        .await
        .unwrap();
    assert_eq!(
        page.entries,
        [Revoked::Subject {
            sub: "bob".into(),
            iat_before: 101,
            until: 1900
        }]
    );
    assert!(store.is_revoked("bob", "any", 100).await.unwrap());
    assert!(!store.is_revoked("bob", "any", 101).await.unwrap());
    // `user revoke` on a missing user writes nothing (its revocation rolls back).
    assert!(matches!(
        store.revoke_user("nobody", 102, 1800).await,
        Err(StoreError::NoSuchUser(_))
    ));
    let after = store
        .revocations_since(Some(page.cursor), Some(&page.feed), 100)
        .await
        .unwrap();
    assert_eq!((after.cursor, after.entries.len()), (page.cursor, 0));
}

async fn revocation_numbers_commit_in_order_under_concurrent_writers(db: Db) {
    // Writers on two replicas revoke 200 tokens while a poller follows the feed with
    // its cursor: it must see every entry, never one twice, and never move backwards.
    let (a, b, poller) = (db.open().await, db.open().await, db.open().await);
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = if w % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                for i in 0..25 {
                    store.revoke_jti(&format!("w{w}-{i}"), 10_000).await.unwrap();
                }
            })
        })
        .collect();
    let mut seen = BTreeSet::new();
    let first = poller.revocations_since(None, None, 0).await.unwrap();
    let feed = first.feed.clone();
    let mut cursor = first.cursor;
    collect(&first.entries, &mut seen);
    let mut done = false;
    loop {
        let page = poller
            .revocations_since(Some(cursor), Some(&feed), 0)
            .await
            .unwrap();
        assert!(!page.reset, "a cursor from this feed is always trusted");
        assert!(page.cursor >= cursor, "the cursor never moves backwards");
        for e in &page.entries {
            let Revoked::Token { jti, .. } = e else {
                panic!("{e:?}")
            };
            assert!(seen.insert(jti.clone()), "{jti} served twice");
        }
        cursor = page.cursor;
        if done {
            break;
        }
        done = writers.iter().all(tokio::task::JoinHandle::is_finished);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(seen.len(), 200, "every revocation reached the poller");
    let all = poller.revocations_since(None, None, 0).await.unwrap();
    assert_eq!((all.cursor, all.entries.len()), (cursor, 200));
}

fn collect(entries: &[Revoked], seen: &mut BTreeSet<String>) {
    for e in entries {
        if let Revoked::Token { jti, .. } = e {
            seen.insert(jti.clone());
        }
    }
}

async fn revocation_entries_only_widen(db: Db) {
    let store = db.open().await;
    store.revoke_jti("j", 500).await.unwrap();
    store.revoke_jti("j", 400).await.unwrap();
    store.create_user(new_user("bob", &[]), 1).await.unwrap();
    store.revoke_user("bob", 100, 1000).await.unwrap();
    store.revoke_user("bob", 50, 10).await.unwrap();
    let page = store.revocations_since(None, None, 0).await.unwrap();
    assert_eq!(
        page.entries,
        [
            Revoked::Token {
                jti: "j".into(),
                until: 500
            },
            Revoked::Subject {
                sub: "bob".into(),
                iat_before: 101,
                until: 1100
            }
        ]
    );
    assert_eq!(
        store
            .purge_revocations(501 + gatehouse_token::store::MAX_POLLER_SKEW)
            .await
            .unwrap(),
        1
    );
}

async fn failures_counted_by_two_replicas_all_count(db: Db) {
    let (a, b) = (db.open().await, db.open().await);
    // 10 failures allowed per hour: 6 minutes of refill each.
    let limiter = std::sync::Arc::new(FailureLimiter::new(10, Duration::from_secs(3600)));
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let (store, limiter) = (if i % 2 == 0 { a.clone() } else { b.clone() }, limiter.clone());
            tokio::spawn(async move { limiter.fail(&store, "u:alice").await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for store in [&a, &b] {
        match limiter.check(store, "u:alice").await.unwrap() {
            Verdict::Limited(after) => assert!(
                after > Duration::from_secs(5 * 60) && after <= Duration::from_secs(6 * 60),
                "{after:?}"
            ),
            v => panic!("10 failures over two replicas must limit on both: {v:?}"),
        }
    }
    assert_eq!(
        limiter.check(&b, "u:bob").await.unwrap(),
        Verdict::Allowed {
            holds_failures: false
        }
    );
    limiter.reset(&b, "u:alice").await.unwrap();
    assert_eq!(
        limiter.check(&a, "u:alice").await.unwrap(),
        Verdict::Allowed {
            holds_failures: false
        }
    );
    // Purging keeps keys that still hold failures.
    limiter.fail(&a, "u:carol").await.unwrap();
    assert_eq!(
        a.purge_failures(gatehouse_token::limiter::now_us())
            .await
            .unwrap(),
        0
    );
    assert_eq!(a.purge_failures(i64::MAX).await.unwrap(), 1);
}

fn issuer(alg: SigningAlg) -> Issuer {
    let secret = secret::parse(Some(SECRET)).unwrap();
    Issuer::new(&secret, "iss".into(), "api".into(), 1800).with_alg(alg)
}

async fn two_replicas_starting_together_make_one_signing_key(db: Db) {
    let (a, b) = (db.open().await, db.open().await);
    for round in 0..5 {
        let (ia, ib) = (issuer(SigningAlg::EdDsa), issuer(SigningAlg::EdDsa));
        let (ra, rb) = tokio::join!(ia.load(&a, 1000 + round), ib.load(&b, 1000 + round));
        ra.unwrap();
        rb.unwrap();
        assert_eq!(ia.signer().kid(), ib.signer().kid(), "round {round}");
        let current = a
            .signing_keys()
            .await
            .unwrap()
            .into_iter()
            .filter(|k| k.retired_at.is_none())
            .count();
        assert_eq!(current, 1);
        // Start the next round with no current key.
        if round < 4 {
            let key =
                gatehouse_token::signing::generate(SigningAlg::Es256, &secret::parse(Some(SECRET)).unwrap())
                    .unwrap();
            a.rotate_signing_key(&key, 2000 + round).await.unwrap();
        }
    }
}

async fn a_rotation_on_one_replica_is_served_by_the_other(db: Db) {
    let (a, b) = (db.open().await, db.open().await);
    let (ia, ib) = (issuer(SigningAlg::EdDsa), issuer(SigningAlg::EdDsa));
    ia.load(&a, 100).await.unwrap();
    ib.load(&b, 100).await.unwrap();
    let old = ia.signer().kid().to_string();
    let key =
        gatehouse_token::signing::generate(SigningAlg::EdDsa, &secret::parse(Some(SECRET)).unwrap()).unwrap();
    a.rotate_signing_key(&key, 200).await.unwrap();
    ib.load(&b, 201).await.unwrap();
    assert_eq!(ib.signer().kid(), key.kid);
    let published: BTreeSet<String> = ib.jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        published,
        BTreeSet::from([old, key.kid.clone()]),
        "both published while old tokens live"
    );
    // Two rotations in the same second: the later is current.
    let k2 =
        gatehouse_token::signing::generate(SigningAlg::EdDsa, &secret::parse(Some(SECRET)).unwrap()).unwrap();
    b.rotate_signing_key(&k2, 200).await.unwrap();
    assert_eq!(a.signing_keys().await.unwrap()[0].kid, k2.kid);
}

async fn migrations_are_idempotent_and_reopening_keeps_everything(db: Db) {
    let store = db.open().await;
    store
        .create_user(new_user("alice", &["user".into()]), 1)
        .await
        .unwrap();
    store.revoke_jti("j", 99).await.unwrap();
    let page = store.revocations_since(None, None, 0).await.unwrap();
    store.close().await;
    let again = db.open().await;
    assert!(again.ping().await);
    assert_eq!(again.user("alice").await.unwrap().unwrap().roles, ["user"]);
    let same = again
        .revocations_since(Some(page.cursor), Some(&page.feed), 0)
        .await
        .unwrap();
    assert!(
        !same.reset && same.entries.is_empty(),
        "the feed and its cursor survive a restart"
    );
}

/// PostgreSQL runs concurrent writers (SQLite has one): a rotation in flight and a
/// revocation of its family or user, on two replicas' connections. The rotation is held
/// open between spending the token and committing its successor (a third connection
/// holds an uncommitted insert of the successor's hash, so the rotation's insert waits
/// on it); the revocation starts meanwhile and waits too; then the holder rolls back.
/// Whichever order the database lets them finish in, the successor must not outlive
/// the revocation: under READ COMMITTED, a revocation that only waited for the spent
/// token's row would not see the successor inserted after its snapshot.
async fn a_revocation_waiting_for_a_rotation_revokes_its_successor(
    revoker: impl FnOnce(Store) -> tokio::task::JoinHandle<()>,
) {
    use sqlx::{Connection, Executor};
    let db = Db::postgres().await;
    let Location::Postgres(url) = &db.location else {
        unreachable!()
    };
    let (a, b) = (db.open().await, db.open().await);
    let bob = a.create_user(new_user("bob", &[]), 1).await.unwrap();
    let now = gatehouse_token::clock::unix_now();
    a.insert_refresh(b"t0", "fam", bob.id, None, now, now + 1000)
        .await
        .unwrap();

    let mut holder = sqlx::PgConnection::connect(url).await.unwrap();
    holder.execute("BEGIN").await.unwrap();
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family, user_id, issued_at, expires_at) VALUES ($1, 'held', $2, 0, 1)",
    )
    .bind(&b"t1"[..])
    .bind(bob.id)
    .execute(&mut holder)
    .await
    .unwrap();
    let mut observer = sqlx::PgConnection::connect(url).await.unwrap();
    let rotation = {
        let a = a.clone();
        tokio::spawn(async move { a.rotate_refresh(b"t0", b"t1", now, now + 1000).await.unwrap() })
    };
    waiting_for_locks(&mut observer, 1).await;
    let revocation = revoker(b.clone());
    waiting_for_locks(&mut observer, 2).await;
    holder.execute("ROLLBACK").await.unwrap();
    let rotated = rotation.await.unwrap();
    revocation.await.unwrap();

    assert!(matches!(rotated, Rotation::Rotated { .. }), "{rotated:?}");
    assert_eq!(
        a.rotate_refresh(b"t1", b"t2", now, now + 1000).await.unwrap(),
        Rotation::Invalid,
        "the successor of a revoked token is still spendable"
    );
    let states = a.refresh_states("bob").await.unwrap();
    assert!(states.iter().all(|(_, _, revoked)| *revoked), "{states:?}");
}

/// Returns once `n` connections to this database wait for a lock.
async fn waiting_for_locks(observer: &mut sqlx::PgConnection, n: i64) {
    use sqlx::Row;
    for tries in 0.. {
        let row = sqlx::query(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut *observer)
        .await
        .unwrap();
        if row.get::<i64, _>("n") >= n {
            return;
        }
        assert!(tries < 4000, "never {n} connections waiting for a lock");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_family_revoked_during_its_rotation_stays_revoked() {
    a_revocation_waiting_for_a_rotation_revokes_its_successor(|b| {
        tokio::spawn(async move {
            let now = gatehouse_token::clock::unix_now();
            assert!(b.revoke_refresh_family(b"t0", now).await.unwrap());
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_log_out_everywhere_during_a_rotation_revokes_its_successor() {
    a_revocation_waiting_for_a_rotation_revokes_its_successor(|b| {
        tokio::spawn(async move {
            let now = gatehouse_token::clock::unix_now();
            b.revoke_user("bob", now, 1800).await.unwrap();
        })
    })
    .await;
}

async fn one_user_cannot_grow_the_revocation_set_past_a_bound(db: Db) {
    use gatehouse_token::store::{RecordedAs, RevokedToken, MAX_TOKEN_ENTRIES_PER_SUBJECT};
    let store = db.open().await;
    let now = 1_000_000;
    // mallory revokes 100 of her own access tokens, as refresh + /revoke in a loop would.
    let mut as_subject = 0;
    for i in 0..100 {
        let jti = format!("m{i}");
        let token = RevokedToken {
            jti: &jti,
            sub: "mallory",
            iat: now + i,
            exp: now + i + 1800,
        };
        if store.revoke_token(&token, now + i).await.unwrap() == RecordedAs::Subject {
            as_subject += 1;
        }
    }
    // Another user's own revocations are untouched by hers.
    let token = RevokedToken {
        jti: "b1",
        sub: "bob",
        iat: now,
        exp: now + 1800,
    };
    assert_eq!(store.revoke_token(&token, now).await.unwrap(), RecordedAs::Token);

    let page = store.revocations_since(None, None, now).await.unwrap();
    let jtis = page
        .entries
        .iter()
        .filter(|e| matches!(e, Revoked::Token { .. }))
        .count();
    assert_eq!(jtis as i64, MAX_TOKEN_ENTRIES_PER_SUBJECT + 1, "{page:?}");
    assert_eq!(as_subject, 100 - MAX_TOKEN_ENTRIES_PER_SUBJECT);
    // Her subject entry covers every token she revoked past the bound, and the ones
    // before them: the last had iat now + 99.
    let subjects: Vec<_> = page
        .entries
        .iter()
        .filter(|e| matches!(e, Revoked::Subject { .. }))
        .collect();
    assert_eq!(
        subjects,
        [&Revoked::Subject {
            sub: "mallory".into(),
            iat_before: now + 100,
            until: now + 99 + 1800
        }]
    );
    // Her jti entries count only while alive: once they have expired she has room again.
    let later = now + 99 + 1801;
    let token = RevokedToken {
        jti: "m-late",
        sub: "mallory",
        iat: later,
        exp: later + 1800,
    };
    assert_eq!(
        store.revoke_token(&token, later).await.unwrap(),
        RecordedAs::Token
    );
}

async fn feed_pages_add_up_to_the_whole_set(db: Db) {
    let store = db.open().await;
    for i in 0..25 {
        store.revoke_jti(&format!("j{i:02}"), 10_000).await.unwrap();
    }
    let head = store.revocations_since(None, None, 0).await.unwrap();
    assert!(!head.more && head.entries.len() == 25);

    let first = store.feed_page(None, None, 0, 10).await.unwrap();
    assert!(first.reset && first.more && first.entries.len() == 10);
    assert!(first.cursor < head.cursor);
    let (mut cursor, mut entries, mut pages) = (first.cursor, first.entries, 1);
    loop {
        let page = store
            .feed_page(Some(cursor), Some(&first.feed), 0, 10)
            .await
            .unwrap();
        assert!(!page.reset, "a continuation is no reset");
        pages += 1;
        entries.extend(page.entries);
        cursor = page.cursor;
        if !page.more {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(cursor, head.cursor, "the last page ends at the head");
    assert_eq!(entries, head.entries, "every entry once, in order");
    // A page that is exactly full says so only if something follows.
    let exact = store.feed_page(None, None, 0, 25).await.unwrap();
    assert!(!exact.more && exact.cursor == head.cursor);
}

async fn a_restored_backup_never_hides_new_entries_from_a_poller(db: Db) {
    use sqlx::{Executor, Row};
    let store = db.open().await;
    store.revoke_jti("before-backup", 10_000).await.unwrap();
    let backup = store.revocations_since(None, None, 0).await.unwrap();
    // After the backup: one more entry, which a poller reads.
    store.revoke_jti("lost-by-the-restore", 10_000).await.unwrap();
    let poller = store.revocations_since(None, None, 0).await.unwrap();
    assert!(poller.cursor > backup.cursor);

    // The database is restored from the backup: the later entry is gone and the
    // feed's counter is back where it was (its id never changed).
    let mut raw = db.raw().await;
    raw.execute("DELETE FROM revocations WHERE value = 'lost-by-the-restore'")
        .await
        .unwrap();
    sqlx::query("UPDATE revocation_feed SET seq = $1")
        .bind(i64::try_from(backup.cursor).unwrap())
        .execute(&mut raw)
        .await
        .unwrap();
    let row = sqlx::query("SELECT seq FROM revocation_feed")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(row.get::<i64, _>("seq"), i64::try_from(backup.cursor).unwrap());

    // A revocation after the restore must reach the poller that kept its cursor.
    store.revoke_jti("after-restore", 10_000).await.unwrap();
    let next = store
        .revocations_since(Some(poller.cursor), Some(&poller.feed), 0)
        .await
        .unwrap();
    assert!(
        next.entries.contains(&Revoked::Token {
            jti: "after-restore".into(),
            until: 10_000
        }),
        "the poller skipped a revocation made after the restore: {next:?}"
    );
}
