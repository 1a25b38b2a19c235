//! [`Host`] through proxy-wasm: the one file of the filter that makes host calls.

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType};

use crate::host::{Call, Headers, Host, SharedData};

/// The host of whichever context is running: proxy-wasm knows the current one.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyHost;

impl SharedData for ProxyHost {
    fn get(&self, key: &str) -> Option<(Vec<u8>, Option<u32>)> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(value), cas)) => Some((value, cas)),
            _ => None,
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        hostcalls::set_shared_data(key, Some(value), cas).is_ok()
    }
}

impl Host for ProxyHost {
    fn now(&self) -> i64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    fn dispatch(&self, call: &Call<'_>) -> Result<u32, String> {
        let headers = vec![
            (":method", "GET"),
            (":path", call.path),
            (":authority", call.authority),
            ("accept", "application/json"),
        ];
        hostcalls::dispatch_http_call(
            call.cluster,
            headers,
            None,
            vec![],
            Duration::from_millis(call.timeout_ms),
        )
        .map_err(|e| format!("{e:?}"))
    }

    fn answer_status(&self) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
    }

    fn answer_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size)
            .ok()
            .flatten()
    }

    fn request_headers(&self) -> Option<Headers> {
        // One host call for every header, as bytes: the SDK's String variant would
        // panic on a value that is not UTF-8.
        hostcalls::get_map_bytes(MapType::HttpRequestHeaders).ok()
    }

    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size)
            .ok()
            .flatten()
    }

    fn set_request_header(&self, name: &str, value: Option<&[u8]>) {
        let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, value);
    }

    fn send_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) -> bool {
        hostcalls::send_http_response(status, headers.to_vec(), Some(body)).is_ok()
    }

    fn resume_request(&self) {
        let _ = hostcalls::resume_http_request();
    }

    fn define_counter(&self, name: &str) -> Option<u32> {
        hostcalls::define_metric(MetricType::Counter, name).ok()
    }

    fn add_to_counter(&self, id: u32, n: u64) -> bool {
        hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX)).is_ok()
    }
}
