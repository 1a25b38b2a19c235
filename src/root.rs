//! Root context: compiles the configuration once and hands it to every request.

use std::rc::Rc;

use log::{error, info};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use crate::config::{compile, Policy};
use crate::http::GatehouseHttp;
use crate::metrics::Metrics;

/// What every HTTP context shares.
pub struct Shared {
    pub policy: Policy,
    pub metrics: Metrics,
}

#[derive(Default)]
pub struct GatehouseRoot {
    shared: Option<Rc<Shared>>,
}

impl Context for GatehouseRoot {}

impl RootContext for GatehouseRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let policy = match compile(&config, |name| std::env::var(name).ok()) {
            Ok(policy) => policy,
            Err(e) => {
                // Returning false makes Envoy refuse the filter: fail closed.
                error!("gatehouse: invalid configuration: {e}");
                return false;
            }
        };
        let Some(metrics) = Metrics::define() else {
            error!("gatehouse: the host refused to define the stats counters");
            return false;
        };
        info!(
            "gatehouse: configured: issuer {}, {} rule(s)",
            policy.token.issuer,
            policy.routes.rules.len()
        );
        self.shared = Some(Rc::new(Shared { policy, metrics }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never None: the SDK would panic. Without a policy the context refuses all.
        Some(Box::new(GatehouseHttp::new(self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
