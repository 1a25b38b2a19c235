//! The token service's form parsing: `form::parse` (the body of `/token`, `/revoke`,
//! `/admin/revoke`), `form::read` (content type, query, size), `form::required`, and
//! `username::canonical`.
//!
//! Properties: no panic; parsed names and values hold no NUL; re-encoding the
//! parameters and parsing again gives the same parameters; `read` agrees with `parse`
//! for a form within the size limit and refuses parameters in the query; `required`
//! returns only non-empty values within the limit; a canonical username is ASCII
//! `[a-z0-9][a-z0-9._@+-]{0,63}` and canonical again.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue};
use gatehouse_token::form::TOKEN_BODY_LIMIT;
use gatehouse_token::{form, username};
use libfuzzer_sys::fuzz_target;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

/// `read` on an in-memory body never waits; polled once.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("form::read waited on an in-memory body"),
    }
}

fn check_username(raw: &str) {
    let Some(name) = username::canonical(raw) else {
        return;
    };
    let bytes = name.as_bytes();
    assert!(
        !bytes.is_empty() && bytes.len() <= username::MAX_LEN,
        "{raw:?} -> {name:?}"
    );
    assert!(
        bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit(),
        "{raw:?} -> {name:?}"
    );
    assert!(
        bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._@+-".contains(b)),
        "{raw:?} -> {name:?}"
    );
    assert_eq!(
        username::canonical(&name).as_deref(),
        Some(name.as_str()),
        "not idempotent: {raw:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let parsed = form::parse(data);
    if let Ok(params) = &parsed {
        let encoded: Vec<String> = params
            .iter()
            .map(|(k, v)| {
                assert!(!k.contains('\0') && !v.contains('\0'));
                format!(
                    "{}={}",
                    utf8_percent_encode(k, NON_ALPHANUMERIC),
                    utf8_percent_encode(v, NON_ALPHANUMERIC)
                )
            })
            .collect();
        assert_eq!(
            form::parse(encoded.join("&").as_bytes()).as_ref(),
            Ok(params),
            "re-encoded"
        );
        for name in ["grant_type", "username", "password", "refresh_token", "token", ""] {
            if let Ok(v) = form::required(params, name, 64) {
                assert!(!v.is_empty() && v.len() <= 64 && params.get(name).map(String::as_str) == Some(v));
            }
        }
        for v in params.values() {
            check_username(v);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        check_username(text);
    }

    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
    );
    let read = ready(form::read(None, &headers, Body::from(data.to_vec())));
    if data.len() <= TOKEN_BODY_LIMIT {
        assert_eq!(read, parsed, "read and parse differ");
    } else {
        assert!(read.is_err(), "a body over the limit was read");
    }
    let query = ready(form::read(
        Some("a=1".into()),
        &headers,
        Body::from(data.to_vec()),
    ));
    assert!(query.is_err(), "parameters in the query were accepted");
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    assert!(ready(form::read(None, &headers, Body::from(data.to_vec()))).is_err());
});
