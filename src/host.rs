//! What the filter asks of Envoy, as one trait. `host_proxy` implements it with
//! proxy-wasm host calls (the only file that makes any); `host_mock` implements it for
//! tests, with several workers over one shared-data map and one clock. Everything else
//! (the worker's background work, a request's flow, the decision) is plain Rust that
//! receives a `&impl Host`, so every path of it runs in unit tests on the host.

/// A request's headers as the host hands them over: names in lower case, values as
/// bytes (HTTP/1 allows values that are not UTF-8), repeated names repeated.
pub type Headers = Vec<(String, Vec<u8>)>;

/// Proxy-wasm shared data: one map for every worker of a VM, a CAS per key.
pub trait SharedData {
    /// The value under `key` and its CAS, if there is one.
    fn get(&self, key: &str) -> Option<(Vec<u8>, Option<u32>)>;
    /// Sets `key`; with `cas`, only if the value is still the one read with it.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

/// One `GET` the filter sends to an Envoy cluster (`dispatch_http_call`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call<'a> {
    pub cluster: &'a str,
    pub path: &'a str,
    pub authority: &'a str,
    pub timeout_ms: u64,
}

pub trait Host: SharedData {
    /// Unix time in seconds, from Envoy's clock.
    fn now(&self) -> i64;

    /// Starts `call`; its answer comes to the context that started it, under the
    /// returned token. `Err` says why the host refused.
    fn dispatch(&self, call: &Call<'_>) -> Result<u32, String>;
    /// The `:status` of the answer being handed over (none: the call failed).
    fn answer_status(&self) -> Option<Vec<u8>>;
    /// The body of the answer being handed over, `size` bytes.
    fn answer_body(&self, size: usize) -> Option<Vec<u8>>;

    /// Every header of the current request.
    fn request_headers(&self) -> Option<Headers>;
    /// The first `size` bytes of the current request's body, as buffered so far.
    fn request_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Sets (`Some`) or removes (`None`) every value of a request header.
    fn set_request_header(&self, name: &str, value: Option<&[u8]>);
    /// Answers the current request from the filter; `false` if the host refused.
    fn send_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) -> bool;
    /// Lets a held request go on.
    fn resume_request(&self);

    /// Defines a counter (Envoy shows it as `wasmcustom.<name>`).
    fn define_counter(&self, name: &str) -> Option<u32>;
    /// Adds `n` to a counter; `false` if the host refused.
    fn add_to_counter(&self, id: u32, n: u64) -> bool;
}
