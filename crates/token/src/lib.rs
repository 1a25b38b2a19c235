//! The Gatehouse token service: OAuth2 password and refresh-token grants (RFC 6749)
//! over Argon2id users in SQLite, issuing the HS256 JWTs that the filter checks.

pub mod app;
pub mod cli;
pub mod error;
pub mod form;
pub mod grants;
pub mod issue;
pub mod limiter;
pub mod metrics;
pub mod passwords;
pub mod secret;
pub mod signing;
pub mod store;
pub mod username;

pub use app::{app, serve, AppState};
