//! Where the store lives: a SQLite file (the default) or a PostgreSQL URL.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sqlx::any::AnyConnectOptions;

use super::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database to open. `Display` never shows a password.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    /// A `postgres://` or `postgresql://` URL (it may hold a password).
    Postgres(String),
}

#[derive(Debug, thiserror::Error)]
#[error("DATABASE_URL must be postgres://… or postgresql://… (or sqlite://<path>), not {0}")]
pub struct BadUrl(String);

impl Location {
    /// `database_url` when given (a PostgreSQL URL, or `sqlite://<path>`), else the
    /// SQLite file `path`.
    pub fn pick(path: &Path, database_url: Option<&str>) -> Result<Location, BadUrl> {
        let Some(url) = database_url.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(Location::Sqlite(path.to_path_buf()));
        };
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("postgres" | "postgresql") => Ok(Location::Postgres(url.to_string())),
            Some("sqlite") => Ok(Location::Sqlite(PathBuf::from(&url["sqlite://".len()..]))),
            // Only the scheme: the rest may be a password.
            _ => Err(BadUrl(scheme.map_or_else(
                || "a URL without a scheme".into(),
                |s| format!("a {s}:// URL"),
            ))),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Location::Sqlite(_) => Backend::Sqlite,
            Location::Postgres(_) => Backend::Postgres,
        }
    }

    /// SQLite has one writer, so a few connections are plenty; PostgreSQL's are shared
    /// by every replica (its `max_connections` is 100 by default).
    pub(super) fn max_connections(&self) -> u32 {
        match self {
            Location::Sqlite(_) => 8,
            Location::Postgres(_) => 16,
        }
    }

    pub(super) fn connect_options(&self) -> Result<AnyConnectOptions, StoreError> {
        let url = match self {
            // `sqlite:<path>` with the path percent-encoded (sqlx decodes it), so no
            // character of a file name can be read as URL syntax; created if missing.
            Location::Sqlite(path) => format!(
                "sqlite:{}?mode=rwc",
                utf8_percent_encode(&path.to_string_lossy(), PATH)
            ),
            Location::Postgres(url) => url.clone(),
        };
        Ok(AnyConnectOptions::from_str(&url)?)
    }
}

/// Everything but unreserved characters and `/` is encoded in a SQLite path.
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "SQLite database {}", path.display()),
            Location::Postgres(url) => write!(f, "PostgreSQL database {}", redact(url)),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The URL with any password replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(unreadable URL)".into();
    };
    // The credentials end at the last `@` before the path (a password may hold `@`).
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_picks_the_backend_and_never_shows_a_password() {
        let path = Path::new("users.db");
        let cases: &[(Option<&str>, Result<&str, &str>)] = &[
            (None, Ok("SQLite database users.db")),
            (Some(""), Ok("SQLite database users.db")),
            (
                Some("sqlite:///var/lib/g.db"),
                Ok("SQLite database /var/lib/g.db"),
            ),
            (
                Some("postgres://gh:s3cr@t:x@db.example:5432/gh?sslmode=require"),
                Ok("PostgreSQL database postgres://gh:***@db.example:5432/gh?sslmode=require"),
            ),
            (
                Some("postgresql://gh@db/gh"),
                Ok("PostgreSQL database postgresql://gh:***@db/gh"),
            ),
            (
                Some("POSTGRES://db/gh"),
                Ok("PostgreSQL database POSTGRES://db/gh"),
            ),
            (Some("mysql://root:hunter2@db/gh"), Err("a mysql:// URL")),
            (Some("hunter2"), Err("a URL without a scheme")),
        ];
        for (url, want) in cases {
            let got = Location::pick(path, *url)
                .map(|l| l.to_string())
                .map_err(|e| e.to_string());
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want),
                (Err(got), Err(want)) => {
                    assert!(got.contains(want), "{got}");
                    assert!(!got.contains("hunter2"), "{got}");
                }
                (got, want) => panic!("{url:?}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn sqlite_paths_with_url_syntax_survive() {
        let loc = Location::Sqlite(PathBuf::from("/tmp/a dir/w?x#y%z.db"));
        let opts = loc.connect_options().unwrap();
        let parsed =
            <sqlx::sqlite::SqliteConnectOptions as sqlx::ConnectOptions>::from_url(&opts.database_url)
                .unwrap();
        assert_eq!(parsed.get_filename(), Path::new("/tmp/a dir/w?x#y%z.db"));
    }
}
