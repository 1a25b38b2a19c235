//! Gatehouse: a Bearer-JWT and role gate for Envoy, as a proxy-wasm HTTP filter.
//!
//! Everything that decides is plain Rust with no `proxy_wasm` import, so it is unit
//! tested on the host: [`config`] compiles the plugin configuration into a
//! [`policy::Policy`], [`decision::decide`] turns one request into a
//! [`decision::Decision`]. What happens around a decision (a request's flow, the
//! worker's background work: JWKS, revocation feed, leases, counters) is plain Rust
//! too, behind one trait, [`host::Host`]; only `host_proxy` implements it with host
//! calls, and the proxy-wasm contexts (`root`, `http`) only hand callbacks over.

pub mod cache;
pub mod callout;
pub mod claims;
pub mod config;
pub mod decision;
pub mod es384;
pub mod form_override;
pub mod forward;
pub mod host;
#[cfg(test)]
mod host_mock;
pub mod hs256;
pub mod jwks_sync;
pub mod keys;
pub mod lease;
pub mod metrics;
pub mod outcome;
pub mod path;
pub mod policy;
pub mod request;
pub mod revocation;
pub mod revocation_poll;
pub mod revocation_sync;
pub mod routes;
pub mod token;
pub mod worker;

#[cfg(target_arch = "wasm32")]
mod host_proxy;
#[cfg(target_arch = "wasm32")]
mod http;
#[cfg(target_arch = "wasm32")]
mod root;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::GatehouseRoot::default())
    });
}}
