//! Strict `application/x-www-form-urlencoded` parsing (RFC 6749 §3.2: no parameter
//! twice), refusing invalid UTF-8 and NUL rather than replacing them.

use std::collections::BTreeMap;

use axum::body::{to_bytes, Body};
use axum::http::{header, HeaderMap};
use percent_encoding::percent_decode;

use crate::error::ApiError;

/// Largest body accepted on `/token`, `/revoke` and `/admin/revoke`.
pub const TOKEN_BODY_LIMIT: usize = 4 * 1024;

/// The form of a POST to `/token`, `/revoke` or `/admin/revoke`. Everything that can
/// be refused cheaply is: parameters in the query string (which proxies log), another
/// content type, a body over the limit, a repeated parameter, invalid UTF-8 or NUL.
pub async fn read(
    query: Option<String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<BTreeMap<String, String>, ApiError> {
    if query.is_some_and(|q| !q.is_empty()) {
        return Err(ApiError::InvalidRequest(
            "parameters must be in the request body, not the query string",
        ));
    }
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !form_type {
        return Err(ApiError::InvalidRequest(
            "content type must be application/x-www-form-urlencoded",
        ));
    }
    let body = to_bytes(body, TOKEN_BODY_LIMIT)
        .await
        .map_err(|_| ApiError::TooLarge)?;
    parse(&body)
}

/// A required parameter, non-empty and at most `max` bytes.
pub fn required<'p>(
    params: &'p BTreeMap<String, String>,
    name: &str,
    max: usize,
) -> Result<&'p str, ApiError> {
    match params.get(name) {
        None => Err(ApiError::InvalidRequest("a required parameter is missing")),
        Some(v) if v.is_empty() => Err(ApiError::InvalidRequest("a required parameter is empty")),
        Some(v) if v.len() > max => Err(ApiError::InvalidRequest("a parameter is too long")),
        Some(v) => Ok(v),
    }
}

/// Parameters by name, each present once.
pub fn parse(body: &[u8]) -> Result<BTreeMap<String, String>, ApiError> {
    let mut params = BTreeMap::new();
    for pair in body.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let mut kv = pair.splitn(2, |&b| b == b'=');
        let name = decode(kv.next().unwrap_or_default())?;
        let value = decode(kv.next().unwrap_or_default())?;
        if params.insert(name, value).is_some() {
            return Err(ApiError::InvalidRequest("a parameter is repeated"));
        }
    }
    Ok(params)
}

fn decode(raw: &[u8]) -> Result<String, ApiError> {
    let spaced: Vec<u8> = raw.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
    let bytes: Vec<u8> = percent_decode(&spaced).collect();
    let text = String::from_utf8(bytes).map_err(|_| ApiError::InvalidRequest("parameters must be UTF-8"))?;
    if text.contains('\0') {
        return Err(ApiError::InvalidRequest("parameters must not contain NUL"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_form_parsing() {
        let p = parse(b"grant_type=password&username=alice&password=a+b%26c%3D").unwrap();
        assert_eq!(p["grant_type"], "password");
        assert_eq!(p["password"], "a b&c=");
        assert_eq!(parse(b"").unwrap().len(), 0);
        assert_eq!(parse(b"a=1&&b=").unwrap()["b"], "");
        for bad in [
            &b"a=1&a=2"[..],
            b"a=%ff",
            b"a=%00",
            b"a\x00=1",
            b"username=al%C3ice",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
