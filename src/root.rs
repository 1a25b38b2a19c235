//! Root context: compiles the configuration once and hands it to every request.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use log::{error, info};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use crate::config::{compile, Policy};
use crate::decision::Runtime;
use crate::http::GatehouseHttp;
use crate::metrics::Metrics;

/// What every HTTP context of this worker shares.
pub struct Shared {
    pub policy: Policy,
    pub metrics: Metrics,
    pub runtime: RefCell<Runtime>,
}

#[derive(Default)]
pub struct GatehouseRoot {
    shared: Option<Rc<Shared>>,
}

impl GatehouseRoot {
    fn flush(&self) {
        if let Some(shared) = &self.shared {
            if let Ok(runtime) = shared.runtime.try_borrow() {
                shared.metrics.flush(&runtime.cache);
            }
        }
    }
}

impl Context for GatehouseRoot {
    fn on_done(&mut self) -> bool {
        self.flush();
        true
    }
}

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
            "gatehouse: configured: issuer {}, {} rule(s), token cache {}",
            policy.token.issuer,
            policy.routes.rules.len(),
            policy.token_cache_entries
        );
        let runtime = RefCell::new(Runtime::new(
            policy.inline_keys.clone(),
            policy.token_cache_entries,
        ));
        // Counters reach Envoy's stats once a second (see metrics.rs).
        self.set_tick_period(Duration::from_secs(1));
        self.flush();
        self.shared = Some(Rc::new(Shared {
            policy,
            metrics,
            runtime,
        }));
        true
    }

    fn on_tick(&mut self) {
        self.flush();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never None: the SDK would panic. Without a policy the context refuses all.
        Some(Box::new(GatehouseHttp::new(self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
