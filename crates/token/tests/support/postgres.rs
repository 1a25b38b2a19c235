//! A fresh PostgreSQL database per test, on the server `GATEHOUSE_TEST_DATABASE_URL`
//! names (`make test` starts a throwaway one: scripts/test-postgres.sh). Without it a
//! PostgreSQL test fails; it never skips.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{Connection, Executor, PgConnection};

pub const URL_VAR: &str = "GATEHOUSE_TEST_DATABASE_URL";

/// The server's URL (any database on it), or a panic saying how to get one.
pub fn server_url() -> String {
    std::env::var(URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{URL_VAR} is not set: these tests need a PostgreSQL server. \
             `make test` starts one; by hand: `export {URL_VAR}=$(scripts/test-postgres.sh start)` \
             or export {URL_VAR}=postgres://user:password@127.0.0.1:5432/postgres"
        )
    })
}

/// Creates an empty database and returns its URL.
pub async fn fresh_database() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let server = server_url();
    let name = format!(
        "gh_test_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let mut admin = PgConnection::connect(&server)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {URL_VAR}: {e}"));
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    admin.close().await.unwrap();
    with_database(&server, &name)
}

/// `url` with its database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
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
