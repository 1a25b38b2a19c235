//! Gatehouse: a Bearer-JWT and role gate for Envoy, as a proxy-wasm HTTP filter.
//!
//! Everything that decides is plain Rust with no `proxy_wasm` import, so it is unit
//! tested on the host: [`config`] compiles the plugin configuration into a
//! [`config::Policy`], [`decision::decide`] turns one request into a
//! [`decision::Decision`]. The Wasm glue (`root`, `http`, `metrics`) only gathers
//! inputs from Envoy and applies the decision.

pub mod cache;
pub mod claims;
pub mod config;
pub mod decision;
pub mod form_override;
pub mod hs256;
pub mod jwks_sync;
pub mod keys;
pub mod path;
pub mod policy;
pub mod revocation;
pub mod revocation_sync;
pub mod token;

#[cfg(target_arch = "wasm32")]
mod fetch;
#[cfg(target_arch = "wasm32")]
mod http;
#[cfg(target_arch = "wasm32")]
mod metrics;
#[cfg(target_arch = "wasm32")]
mod revocation_poll;
#[cfg(target_arch = "wasm32")]
mod root;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::GatehouseRoot::default())
    });
}}
