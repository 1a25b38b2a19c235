//! The floor of any proxy-wasm filter in Envoy: per request it reads one header and
//! sets one, as the least an auth filter must do. `make bench` runs it beside
//! Gatehouse so the cost of the Wasm ABI itself is visible.

#[cfg(target_arch = "wasm32")]
mod filter {
    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType, MapType};

    struct Root;
    impl Context for Root {}
    impl RootContext for Root {
        fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Http))
        }
        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    struct Http;
    impl Context for Http {}
    impl HttpContext for Http {
        fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
            let seen = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "authorization")
                .ok()
                .flatten()
                .is_some();
            let value: &[u8] = if seen { b"someone" } else { b"nobody" };
            let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, "x-auth-sub", Some(value));
            Action::Continue
        }
    }

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
    }}
}
