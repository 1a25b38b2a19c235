//! Root context: the proxy-wasm glue of a [`Worker`]. It builds the worker once, in
//! `on_configure`, ticks it, hands it the answers to its calls, and gives every HTTP
//! context of the worker a handle to it. No decision is made here.

use std::cell::RefCell;
use std::rc::Rc;

use log::error;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use crate::host_proxy::ProxyHost;
use crate::http::GatehouseHttp;
use crate::worker::Worker;

#[derive(Default)]
pub struct GatehouseRoot {
    worker: Option<Rc<RefCell<Worker>>>,
}

impl GatehouseRoot {
    /// Runs `f` on the worker. Callbacks never nest, so the borrow cannot fail; if it
    /// ever did, the callback is skipped (the next tick does the work).
    fn with_worker(&self, f: impl FnOnce(&mut Worker)) {
        if let Some(mut worker) = self.worker.as_ref().and_then(|w| w.try_borrow_mut().ok()) {
            f(&mut worker);
        }
    }
}

impl Context for GatehouseRoot {
    fn on_http_call_response(&mut self, token_id: u32, _headers: usize, body_size: usize, _trailers: usize) {
        self.with_worker(|w| w.on_answer(&ProxyHost, token_id, body_size));
    }
}

/// What the worker counted since its last flush reaches Envoy when the VM lets the root
/// go (`proxy_on_delete`; the module does not export `proxy_on_done`, so the host
/// deletes the root at once, and every request skips a VM entry: `filter-exports.txt`).
impl Drop for GatehouseRoot {
    fn drop(&mut self) {
        self.with_worker(|w| w.flush(&ProxyHost));
    }
}

impl RootContext for GatehouseRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        match Worker::configure(&ProxyHost, &config, |name| std::env::var(name).ok()) {
            Ok(mut worker) => {
                // What the previous configuration counted reaches Envoy first.
                self.with_worker(|old| old.flush(&ProxyHost));
                self.set_tick_period(worker.tick_period());
                worker.flush(&ProxyHost);
                self.worker = Some(Rc::new(RefCell::new(worker)));
                true
            }
            Err(e) => {
                // Returning false makes Envoy refuse the filter: fail closed.
                error!("gatehouse: {e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        self.with_worker(|w| w.tick(&ProxyHost));
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never None: the SDK would panic. Without a worker the context refuses all.
        Some(Box::new(GatehouseHttp::new(self.worker.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
