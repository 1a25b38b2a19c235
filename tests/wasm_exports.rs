//! The built filter exports exactly the callbacks it implements (`filter-exports.txt`),
//! so Envoy skips every other one on every request. A callback added in `src/` and not
//! listed never runs, and the end-to-end tests of it fail; this test names the cause.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_testkit::wasm_path;

#[test]
fn the_filter_exports_exactly_the_callbacks_it_implements() {
    let module = std::fs::read(wasm_path()).unwrap();
    let mut exports = wasm_trim::exports(&module).unwrap();
    exports.sort_unstable();
    assert_eq!(
        exports,
        [
            "_initialize",
            "memory",
            "proxy_abi_version_0_2_1",
            "proxy_on_configure",
            "proxy_on_context_create",
            "proxy_on_delete",
            "proxy_on_http_call_response",
            "proxy_on_memory_allocate",
            "proxy_on_request_body",
            "proxy_on_request_headers",
            "proxy_on_tick",
        ]
    );
}

#[test]
fn cargos_module_is_the_sdks_with_every_callback() {
    // What the trim removes is there before it: the SDK's module, as cargo links it.
    let built = wasm_path()
        .parent()
        .unwrap()
        .join("wasm32-wasip1/release/gatehouse.wasm");
    let exports = wasm_trim::exports(&std::fs::read(built).unwrap()).unwrap();
    for name in [
        "proxy_on_done",
        "proxy_on_log",
        "proxy_on_response_headers",
        "proxy_on_response_body",
        "proxy_on_vm_start",
    ] {
        assert!(
            exports.iter().any(|e| e == name),
            "{name} missing from {exports:?}"
        );
    }
}
