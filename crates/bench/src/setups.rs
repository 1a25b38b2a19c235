//! The Envoy set-ups compared: the same listener and `direct_response` route, with
//! different HTTP filters in front of the router, so only the filters' cost differs.

use std::path::PathBuf;

use gatehouse_testkit::{bootstrap_yaml, wasm_filter_yaml};
use serde_json::json;

pub const ISSUER: &str = "https://gatehouse.bench";
pub const AUDIENCE: &str = "api";
/// The path benchmarked; every set-up requires role `user` on it.
pub const PATH: &str = "/api/items";

/// The Wasm modules the set-ups load.
pub struct Modules {
    pub gatehouse: PathBuf,
    /// The empty filter as the SDK builds it, and trimmed to its callbacks.
    pub floor: PathBuf,
    pub floor_lean: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// No filter: the ceiling.
    NoFilter,
    /// A proxy-wasm filter that reads one header and sets one, as the SDK builds it
    /// (every callback exported).
    WasmFloor,
    /// The same module exporting only what it implements (`crates/wasm-trim`): the
    /// floor of any proxy-wasm filter.
    WasmFloorLean,
    /// Envoy's C++ jwt_authn (HS256, issuer, audience, payload in metadata, sub to a
    /// header) and rbac requiring role `user` from the payload.
    Native,
    /// The same with jwt_authn's cache of verified tokens.
    NativeCache,
    /// Gatehouse, HS256, the same checks and the same forwarded header, as configured
    /// by default (its token cache on).
    Gatehouse,
    /// The same with the token cache off: every request verified from scratch.
    GatehouseNoCache,
    /// Asymmetric keys (inline JWKS), each with Gatehouse's cache on and off, and
    /// native jwt_authn + rbac with the same key.
    GatehouseEdDsa,
    GatehouseEdDsaNoCache,
    NativeEdDsa,
    GatehouseEs256,
    GatehouseEs256NoCache,
    NativeEs256,
}

impl Setup {
    pub const ALL: [Setup; 13] = [
        Setup::NoFilter,
        Setup::WasmFloor,
        Setup::WasmFloorLean,
        Setup::Native,
        Setup::NativeCache,
        Setup::GatehouseNoCache,
        Setup::Gatehouse,
        Setup::NativeEdDsa,
        Setup::GatehouseEdDsaNoCache,
        Setup::GatehouseEdDsa,
        Setup::NativeEs256,
        Setup::GatehouseEs256NoCache,
        Setup::GatehouseEs256,
    ];

    /// The signature algorithm of the tokens this set-up gets.
    pub fn alg(self) -> &'static str {
        match self {
            Setup::GatehouseEdDsa | Setup::GatehouseEdDsaNoCache | Setup::NativeEdDsa => "EdDSA",
            Setup::GatehouseEs256 | Setup::GatehouseEs256NoCache | Setup::NativeEs256 => "ES256",
            _ => "HS256",
        }
    }

    pub fn is_gatehouse(self) -> bool {
        matches!(
            self,
            Setup::Gatehouse
                | Setup::GatehouseNoCache
                | Setup::GatehouseEdDsa
                | Setup::GatehouseEdDsaNoCache
                | Setup::GatehouseEs256
                | Setup::GatehouseEs256NoCache
        )
    }

    pub fn label(self) -> &'static str {
        match self {
            Setup::NoFilter => "no filter",
            Setup::WasmFloor => "empty proxy-wasm filter (SDK)",
            Setup::WasmFloorLean => "empty proxy-wasm filter, trimmed",
            Setup::Native => "native jwt_authn + rbac",
            Setup::NativeCache => "native jwt_authn (cache) + rbac",
            Setup::Gatehouse => "Gatehouse HS256 (cache, default)",
            Setup::GatehouseNoCache => "Gatehouse HS256, cache off",
            Setup::GatehouseEdDsa => "Gatehouse EdDSA (cache)",
            Setup::GatehouseEdDsaNoCache => "Gatehouse EdDSA, cache off",
            Setup::NativeEdDsa => "native jwt_authn EdDSA + rbac",
            Setup::GatehouseEs256 => "Gatehouse ES256 (cache)",
            Setup::GatehouseEs256NoCache => "Gatehouse ES256, cache off",
            Setup::NativeEs256 => "native jwt_authn ES256 + rbac",
        }
    }

    /// Whether the set-up checks tokens (and so must answer 401 and 403).
    pub fn authenticates(self) -> bool {
        !matches!(self, Setup::NoFilter | Setup::WasmFloor | Setup::WasmFloorLean)
    }

    /// The HTTP filters of this set-up, as YAML list items.
    fn filters(self, secret: &str, jwks: &serde_json::Value, modules: &Modules) -> String {
        match self {
            Setup::NoFilter => String::new(),
            Setup::WasmFloor => wasm_filter_yaml("floor", &modules.floor, "{}"),
            Setup::WasmFloorLean => wasm_filter_yaml("floor", &modules.floor_lean, "{}"),
            Setup::Gatehouse
            | Setup::GatehouseNoCache
            | Setup::GatehouseEdDsa
            | Setup::GatehouseEdDsaNoCache
            | Setup::GatehouseEs256
            | Setup::GatehouseEs256NoCache => {
                let cached = matches!(
                    self,
                    Setup::Gatehouse | Setup::GatehouseEdDsa | Setup::GatehouseEs256
                );
                let entries = if cached { 4096 } else { 0 };
                let mut config = json!({
                    "issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": [self.alg()],
                    "rules": [{"prefix": "/api", "require": {"any_of": ["user"]}}],
                    "forward": {"claims": {"sub": "sub"}},
                    "token_cache": {"max_entries": entries}
                });
                if self.alg() == "HS256" {
                    config["hmac_secret"] = json!({"env": "SECRET_KEY"});
                } else {
                    config["jwks"] = json!({"inline": jwks});
                }
                wasm_filter_yaml("gatehouse", &modules.gatehouse, &config.to_string())
            }
            Setup::Native | Setup::NativeCache | Setup::NativeEdDsa | Setup::NativeEs256 => {
                use base64ct::{Base64UrlUnpadded, Encoding};
                // PyJWT's convention, as Gatehouse's default: the key is the secret text.
                let k = Base64UrlUnpadded::encode_string(secret.as_bytes());
                let local_jwks = if self.alg() == "HS256" {
                    format!(r#"{{"keys":[{{"kty":"oct","alg":"HS256","k":"{k}"}}]}}"#)
                } else {
                    jwks.to_string()
                };
                let cache = if self == Setup::NativeCache {
                    "\n                  jwt_cache_config: {jwt_cache_size: 1000}"
                } else {
                    ""
                };
                format!(
                    r#"
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                bench:
                  issuer: {ISSUER}
                  audiences: [{AUDIENCE}]
                  local_jwks:
                    inline_string: '{local_jwks}'
                  forward: false
                  payload_in_metadata: jwt_payload
                  claim_to_headers: [{{header_name: x-auth-sub, claim_name: sub}}]{cache}
              rules:
              - match: {{prefix: /}}
                requires: {{provider_name: bench}}
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: ALLOW
                policies:
                  user:
                    permissions: [{{any: true}}]
                    principals:
                    - metadata:
                        filter: envoy.filters.http.jwt_authn
                        path: [{{key: jwt_payload}}, {{key: roles}}]
                        value: {{list_match: {{one_of: {{string_match: {{exact: user}}}}}}}}"#
                )
            }
        }
    }

    /// The whole Envoy configuration (listener and admin on kernel-chosen ports).
    pub fn envoy_yaml(self, secret: &str, jwks: &serde_json::Value, modules: &Modules) -> String {
        let route = "              - match: {prefix: \"/\"}\n                direct_response: {status: 200, body: {inline_string: \"ok\"}}\n";
        bootstrap_yaml(route, &self.filters(secret, jwks, modules), "")
    }
}
