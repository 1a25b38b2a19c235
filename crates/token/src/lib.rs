//! The Gatehouse token service: OAuth2 password and refresh-token grants (RFC 6749)
//! over Argon2id users in SQLite or PostgreSQL, issuing the JWTs that the filter checks; token
//! revocation (RFC 7009), an admin API, and the revocation feed the filter polls.

pub mod admin;
pub mod admin_auth;
pub mod app;
pub mod cli;
pub mod clock;
pub mod error;
pub mod feed;
pub mod form;
pub mod grants;
pub mod hash_costs;
pub mod housekeeping;
pub mod issue;
pub mod limiter;
pub mod metrics;
pub mod passwords;
pub mod revoke;
pub mod secret;
pub mod signing;
pub mod state;
pub mod store;
pub mod username;

pub use app::{app, serve};
pub use state::AppState;
