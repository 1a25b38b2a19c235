//! HTTP context: the proxy-wasm glue of one [`Request`]. Every callback borrows the
//! worker once and hands it, with the host, to the request's plain logic.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::host_proxy::ProxyHost;
use crate::request::{unconfigured, Flow, Request};
use crate::worker::Worker;

pub struct GatehouseHttp {
    worker: Option<Rc<RefCell<Worker>>>,
    request: Request,
}

impl GatehouseHttp {
    pub fn new(worker: Option<Rc<RefCell<Worker>>>) -> Self {
        GatehouseHttp {
            worker,
            request: Request::default(),
        }
    }

    /// Runs `f` on the worker; without one (or, which callbacks that never nest rule
    /// out, while it is borrowed) `otherwise` says what happens.
    fn with_worker(
        &mut self,
        f: impl FnOnce(&mut Request, &mut Worker) -> Flow,
        otherwise: impl FnOnce(&Request) -> Flow,
    ) -> Action {
        let flow = match self.worker.as_ref().and_then(|w| w.try_borrow_mut().ok()) {
            Some(mut worker) => f(&mut self.request, &mut worker),
            None => otherwise(&self.request),
        };
        match flow {
            Flow::Continue => Action::Continue,
            Flow::Pause => Action::Pause,
        }
    }
}

impl Context for GatehouseHttp {
    fn on_http_call_response(&mut self, token_id: u32, _headers: usize, body_size: usize, _trailers: usize) {
        self.with_worker(
            |request, worker| {
                request.on_answer(worker, &ProxyHost, token_id, body_size);
                Flow::Continue
            },
            // A held request is refused rather than left hanging; a stray answer is ignored.
            |request| {
                if request.is_held() {
                    unconfigured(&ProxyHost)
                } else {
                    Flow::Continue
                }
            },
        );
    }
}

impl HttpContext for GatehouseHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.with_worker(
            |request, worker| request.on_headers(worker, &ProxyHost, end_of_stream),
            |_| unconfigured(&ProxyHost),
        )
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.with_worker(
            |request, worker| request.on_body(worker, &ProxyHost, body_size, end_of_stream),
            // A body that had to be read is refused, never let through unread.
            |request| {
                if request.is_reading_body() {
                    unconfigured(&ProxyHost)
                } else {
                    Flow::Continue
                }
            },
        )
    }
}
