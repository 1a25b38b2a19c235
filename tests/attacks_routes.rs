//! Route-policy bypass attempts through the real Envoy with the top-level `envoy.yaml`
//! in front of the demo API: `DELETE /users/{id}` needs role `admin`, and bob (role
//! `user`) tries every way of reaching it anyway. Each row says what Envoy with the
//! hardened configuration does (refuses it itself, or normalises it and lets the filter
//! refuse it) and what the filter does alone, with Envoy's normalisation switched off.
//! Whatever a row expects, the API's admin-only delete handler may run only for alice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod attack_support;

use attack_support::{assert_no_failures, bearer, both_edges, print_table, row, row2, run, Row, Send};
use gatehouse_testkit::{demo_claims, mint, Observed};

/// Whatever a row expects, the API's `DELETE /users/{id}` handler runs only for alice
/// (the alice rows are the positive control that this check sees a delete).
fn no_admin_delete_for_bob(_: &Row, o: &Observed) -> Result<(), String> {
    if !o.api_deleted() {
        return Ok(());
    }
    let body = o.response.json();
    if body["by"] == "alice" {
        Ok(())
    } else {
        Err(format!(
            "the admin-only DELETE reached the API for {}",
            body["by"]
        ))
    }
}

const ALICE_DELETED: &str = "api 200 DELETE /users/42 sub=alice roles=admin,user";
const FORBIDDEN: &str = "filter 403 forbidden";
const AMBIGUOUS: &str = "filter 400 ambiguous_path";
const MULTIPART: &str =
    "--zz\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--zz--\r\n";

/// Paths, encodings and request targets, over HTTP/1.1 and HTTP/2.
fn path_rows(alice: &str, bob: &str) -> Vec<Row> {
    let a = bearer(alice);
    let b = bearer(bob);
    let bob_h: &[(&str, &str)] = &[("Authorization", &b)];
    let del = |path: &str| Send::call("DELETE", path, bob_h);
    let raw = |target: &[u8]| {
        let mut r = b"DELETE ".to_vec();
        r.extend_from_slice(target);
        r.extend_from_slice(
            format!(" HTTP/1.1\r\nHost: gatehouse.test\r\nAuthorization: {b}\r\n\r\n").as_bytes(),
        );
        Send::Raw(r)
    };
    vec![
        // Controls: the rule works, in both directions.
        row(
            "control: alice DELETE /users/42",
            Send::call("DELETE", "/users/42", &[("Authorization", &a)]),
            ALICE_DELETED,
        ),
        row("control: bob DELETE /users/42", del("/users/42"), FORBIDDEN),
        row(
            "control: no token DELETE /users/42",
            Send::call("DELETE", "/users/42", &[]),
            "filter 401 missing_token",
        ),
        row(
            "control: bob GET /users/me",
            Send::call("GET", "/users/me", bob_h),
            "api 200 GET /users/me sub=bob roles=user",
        ),
        // Dot segments, plain and encoded.
        row2("dot: /users/./42", del("/users/./42"), FORBIDDEN, AMBIGUOUS),
        row2("dot: /users/x/../42", del("/users/x/../42"), FORBIDDEN, AMBIGUOUS),
        row2("dot: /../users/42", del("/../users/42"), FORBIDDEN, AMBIGUOUS),
        row2("dot: /users/42/.", del("/users/42/."), FORBIDDEN, AMBIGUOUS),
        row2(
            "dot: /users/42/../43",
            del("/users/42/../43"),
            FORBIDDEN,
            AMBIGUOUS,
        ),
        row2("dot: /users/%2e/42", del("/users/%2e/42"), FORBIDDEN, AMBIGUOUS),
        row2(
            "dot: /users/x/%2e%2e/42",
            del("/users/x/%2e%2e/42"),
            FORBIDDEN,
            AMBIGUOUS,
        ),
        row2(
            "dot: /users/x/%2E%2E/42",
            del("/users/x/%2E%2E/42"),
            FORBIDDEN,
            AMBIGUOUS,
        ),
        row2(
            "dot: /users/x/.%2e/42",
            del("/users/x/.%2e/42"),
            FORBIDDEN,
            AMBIGUOUS,
        ),
        row2(
            "dot: /users/42/.. (leaves the rule)",
            del("/users/42/.."),
            "api 200 DELETE /users/ sub=bob roles=user",
            AMBIGUOUS,
        ),
        // Doubled slashes.
        row2("slash: //users/42", del("//users/42"), FORBIDDEN, AMBIGUOUS),
        row2("slash: /users//42", del("/users//42"), FORBIDDEN, AMBIGUOUS),
        row2("slash: /users/42//", del("/users/42//"), FORBIDDEN, AMBIGUOUS),
        row("slash: /users/42/ (trailing)", del("/users/42/"), FORBIDDEN),
        // Case.
        row("case: /Users/42", del("/Users/42"), FORBIDDEN),
        row("case: /USERS/42", del("/USERS/42"), FORBIDDEN),
        row("case: /Users/42/", del("/Users/42/"), FORBIDDEN),
        // Format suffixes and trailing dots or spaces (Rails, Spring < 5.3, IIS).
        row("suffix: /users/42.json", del("/users/42.json"), FORBIDDEN),
        row("suffix: /users/42.", del("/users/42."), FORBIDDEN),
        row("suffix: /users/42%20", del("/users/42%20"), FORBIDDEN),
        // Encoded sub-delims are decoded as routers decode them.
        row("encoded sub-delim: /users/42%2C", del("/users/42%2C"), FORBIDDEN),
        // Encoded and double-encoded slashes, backslashes, other characters.
        row2("encoded: /users%2f42", del("/users%2f42"), "envoy 400", AMBIGUOUS),
        row2("encoded: /users%2F42", del("/users%2F42"), "envoy 400", AMBIGUOUS),
        row2(
            "encoded: /users/42%2f",
            del("/users/42%2f"),
            "envoy 400",
            AMBIGUOUS,
        ),
        row2("encoded: /users%5c42", del("/users%5c42"), "envoy 400", AMBIGUOUS),
        row("double-encoded: /users%252f42", del("/users%252f42"), AMBIGUOUS),
        row(
            "double-encoded: /users/%252e%252e/42",
            del("/users/%252e%252e/42"),
            AMBIGUOUS,
        ),
        row("encoded unreserved: /%75sers/42", del("/%75sers/42"), FORBIDDEN),
        row(
            "encoded unreserved: /users/%34%32",
            del("/users/%34%32"),
            FORBIDDEN,
        ),
        row2(
            "encoded: /users/42%00",
            del("/users/42%00"),
            "envoy 400",
            AMBIGUOUS,
        ),
        row("encoded: /users/42%0a", del("/users/42%0a"), AMBIGUOUS),
        row("encoded: /users/42%3f", del("/users/42%3f"), AMBIGUOUS),
        row("encoded: /users/42%23", del("/users/42%23"), AMBIGUOUS),
        row("bad escape: /users/42%zz", del("/users/42%zz"), AMBIGUOUS),
        row(
            "unicode: /u%C5%BFers/42 (U+017F folds to S in Unicode-aware matchers)",
            del("/u%C5%BFers/42"),
            AMBIGUOUS,
        ),
        row(
            "unicode: /users/%E2%84%AA (the Kelvin sign folds to k)",
            del("/users/%E2%84%AA"),
            AMBIGUOUS,
        ),
        // Backslashes.
        row2("backslash: /users\\42", del("/users\\42"), FORBIDDEN, AMBIGUOUS),
        row2(
            "backslash: /users\\..\\x\\42",
            del("/users\\x\\..\\42"),
            FORBIDDEN,
            AMBIGUOUS,
        ),
        // Path parameters.
        row("param: /users/42;x", del("/users/42;x"), AMBIGUOUS),
        row("param: /users;x/42", del("/users;x/42"), AMBIGUOUS),
        row(
            "param: /users/42;jsessionid=1",
            del("/users/42;jsessionid=1"),
            AMBIGUOUS,
        ),
        row("param: /users/42%3bx", del("/users/42%3bx"), AMBIGUOUS),
        // Query and fragment.
        row("query: /users/42?x=1", del("/users/42?x=1"), FORBIDDEN),
        row(
            "query: /users/42?/../../healthz",
            del("/users/42?/../../healthz"),
            FORBIDDEN,
        ),
        row("query: /users/42?", del("/users/42?"), FORBIDDEN),
        row("fragment: /users/42#x", del("/users/42#x"), "envoy 400"),
        // NUL, control and non-ASCII bytes in the request target.
        row("raw NUL in path", raw(b"/users/4\x002"), "envoy 400"),
        row(
            "raw control byte 0x01 in path",
            raw(b"/users/4\x012"),
            "envoy 400",
        ),
        row("raw DEL 0x7f in path", raw(b"/users/4\x7f2"), "envoy 400"),
        row("raw tab in path", raw(b"/users/4\t2"), "envoy 400"),
        row("raw byte 0xff in path", raw(b"/users/4\xff2"), "envoy 400"),
        // Request-target forms.
        row(
            "absolute-form: http://x/users/42",
            raw(b"http://x/users/42"),
            FORBIDDEN,
        ),
        row2(
            "absolute-form: http://x/users/./42",
            raw(b"http://x/users/./42"),
            FORBIDDEN,
            AMBIGUOUS,
        ),
        row(
            "absolute-form: HTTP://X:1/Users/42",
            raw(b"HTTP://X:1/Users/42"),
            FORBIDDEN,
        ),
        row("no leading slash: users/42", raw(b"users/42"), "envoy 400"),
        row("asterisk-form: *", raw(b"*"), "envoy 400"),
        // HTTP/2 (curl, prior knowledge).
        row(
            "h2 control: alice DELETE /users/42",
            Send::h2("DELETE", "/users/42", &[("Authorization", &a)]),
            ALICE_DELETED,
        ),
        row(
            "h2: bob DELETE /users/42",
            Send::h2("DELETE", "/users/42", bob_h),
            FORBIDDEN,
        ),
        row2(
            "h2: /users/./42",
            Send::h2("DELETE", "/users/./42", bob_h),
            FORBIDDEN,
            AMBIGUOUS,
        ),
        row2(
            "h2: /users//42",
            Send::h2("DELETE", "/users//42", bob_h),
            FORBIDDEN,
            AMBIGUOUS,
        ),
        row("h2: /Users/42", Send::h2("DELETE", "/Users/42", bob_h), FORBIDDEN),
        row2(
            "h2: /users%2f42",
            Send::h2("DELETE", "/users%2f42", bob_h),
            "envoy 400",
            AMBIGUOUS,
        ),
        row(
            "h2: /users/42;x",
            Send::h2("DELETE", "/users/42;x", bob_h),
            AMBIGUOUS,
        ),
    ]
}

/// Methods, method overrides and Host tricks.
fn method_rows(alice: &str, bob: &str) -> Vec<Row> {
    let a = bearer(alice);
    let b = bearer(bob);
    let bob_h: &[(&str, &str)] = &[("Authorization", &b)];
    let raw = |method: &[u8], path: &str, extra: &str| {
        let mut r = method.to_vec();
        r.extend_from_slice(
            format!(" {path} HTTP/1.1\r\nHost: gatehouse.test\r\nAuthorization: {b}\r\n{extra}\r\n")
                .as_bytes(),
        );
        Send::Raw(r)
    };
    let post = |path: &str, header: Option<(&str, &str)>| {
        let mut h: Vec<(&str, &str)> = vec![("Authorization", &b)];
        h.extend(header);
        Send::call("POST", path, &h)
    };
    vec![
        row(
            "control: alice DELETE /users/42",
            Send::call("DELETE", "/users/42", &[("Authorization", &a)]),
            ALICE_DELETED,
        ),
        row("control: bob DELETE /users/42", Send::call("DELETE", "/users/42", bob_h), FORBIDDEN),
        // Method case over HTTP/1 and HTTP/2.
        row("method: delete (HTTP/1)", raw(b"delete", "/users/42", ""), "envoy 400"),
        row("method: Delete (HTTP/1)", raw(b"Delete", "/users/42", ""), "envoy 400"),
        row("method: dElEtE (HTTP/1)", raw(b"dElEtE", "/users/42", ""), "envoy 400"),
        row("method: delete (HTTP/2)", Send::h2("delete", "/users/42", bob_h), FORBIDDEN),
        // HEAD against GET rules, unknown and invalid methods.
        row(
            "HEAD /users/me without token (GET rule covers HEAD)",
            Send::call("HEAD", "/users/me", &[]),
            "filter 401 missing_token",
        ),
        row(
            "control: HEAD /healthz without token (public GET)",
            Send::call("HEAD", "/healthz", &[]),
            "api 200",
        ),
        row(
            "HEAD /users/42 as bob (no admin rule for HEAD)",
            Send::call("HEAD", "/users/42", bob_h),
            "api 405",
        ),
        row(
            "unknown method PURGE /users/42 without token",
            Send::call("PURGE", "/users/42", &[]),
            "filter 401 missing_token",
        ),
        row(
            "unknown method PURGE /users/42 as bob",
            Send::call("PURGE", "/users/42", bob_h),
            "api 405",
        ),
        row("invalid method DEL(ETE", raw(b"DEL(ETE", "/users/42", ""), "envoy 400"),
        row("method with NUL", raw(b"DELETE\x00", "/users/42", ""), "envoy 400"),
        row(
            "CONNECT 127.0.0.1:1 (no origin-form path)",
            raw(b"CONNECT", "127.0.0.1:1", ""),
            AMBIGUOUS,
        ),
        // Method overrides, in headers and in the query.
        row(
            "control: bob POST /users/42 (reaches the API as POST)",
            post("/users/42", None),
            "api 405",
        ),
        row(
            "override: X-HTTP-Method-Override: DELETE",
            post("/users/42", Some(("X-HTTP-Method-Override", "DELETE"))),
            FORBIDDEN,
        ),
        row(
            "override: X-HTTP-Method: DELETE",
            post("/users/42", Some(("X-HTTP-Method", "DELETE"))),
            FORBIDDEN,
        ),
        row(
            "override: X-Method-Override: DELETE",
            post("/users/42", Some(("X-Method-Override", "DELETE"))),
            FORBIDDEN,
        ),
        row(
            "override: x-http-method-override: delete",
            post("/users/42", Some(("x-http-method-override", "delete"))),
            FORBIDDEN,
        ),
        row(
            "override: X-HTTP-METHOD-OVERRIDE: DELETE on GET",
            Send::call("GET", "/users/42", &[("Authorization", &b), ("X-HTTP-METHOD-OVERRIDE", "DELETE")]),
            FORBIDDEN,
        ),
        row2(
            "override: X_HTTP_Method_Override: DELETE (underscores, as CGI/PHP read it)",
            post("/users/42", Some(("X_HTTP_Method_Override", "DELETE"))),
            "envoy 400",
            FORBIDDEN,
        ),
        row(
            "override: two X-HTTP-Method-Override headers (GET, DELETE)",
            Send::call(
                "POST",
                "/users/42",
                &[
                    ("Authorization", &b),
                    ("X-HTTP-Method-Override", "GET"),
                    ("X-HTTP-Method-Override", "DELETE"),
                ],
            ),
            FORBIDDEN,
        ),
        row(
            "override: X-HTTP-Method-Override: GET, DELETE (a list)",
            post("/users/42", Some(("X-HTTP-Method-Override", "GET, DELETE"))),
            "filter 400 bad_method",
        ),
        row(
            "override: not a method (DEL ETE)",
            post("/users/42", Some(("X-HTTP-Method-Override", "DEL ETE"))),
            "filter 400 bad_method",
        ),
        row("override: ?_method=DELETE", post("/users/42?_method=DELETE", None), FORBIDDEN),
        row("override: ?_METHOD=delete", post("/users/42?_METHOD=delete", None), FORBIDDEN),
        row("override: ?_method=DEL%45TE", post("/users/42?_method=DEL%45TE", None), FORBIDDEN),
        row(
            "override: ?x=1&_method=DELETE&_method=GET",
            post("/users/42?x=1&_method=DELETE&_method=GET", None),
            FORBIDDEN,
        ),
        row(
            "override: ?%5Fmethod=DELETE (encoded name)",
            post("/users/42?%5Fmethod=DELETE", None),
            FORBIDDEN,
        ),
        row(
            "override: ?%5fMETHOD=DELETE (encoded name)",
            post("/users/42?%5fMETHOD=DELETE", None),
            FORBIDDEN,
        ),
        row(
            "override: ?_%6Dethod=DELETE (encoded name)",
            post("/users/42?_%6Dethod=DELETE", None),
            FORBIDDEN,
        ),
        row(
            "override: ?.method=DELETE (PHP reads the name as _method)",
            post("/users/42?.method=DELETE", None),
            FORBIDDEN,
        ),
        row(
            "override: ?%5Bmethod=DELETE (PHP reads [ in a name as _)",
            post("/users/42?%5Bmethod=DELETE", None),
            FORBIDDEN,
        ),
        row(
            "override: ?_method=DELETE+ (not a method)",
            post("/users/42?_method=DELETE+", None),
            "filter 400 bad_method",
        ),
        row(
            "override: _method=DELETE in a form body (read by the filter where DELETE has its own rule)",
            Send::raw(format!(
                "POST /users/42 HTTP/1.1\r\nHost: gatehouse.test\r\nAuthorization: {b}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 14\r\nconnection: close\r\n\r\n_method=DELETE"
            )),
            FORBIDDEN,
        ),
        row(
            "override: _method=DELETE in a multipart form body",
            Send::raw(format!(
                "POST /users/42 HTTP/1.1\r\nHost: gatehouse.test\r\nAuthorization: {b}\r\ncontent-type: multipart/form-data; boundary=zz\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{MULTIPART}",
                MULTIPART.len()
            )),
            FORBIDDEN,
        ),
        row(
            "override: a 70 KB form body where it matters (envoy.yaml buffers at most 32 KiB per connection; the filter's own bound is 64 KiB)",
            Send::raw(format!(
                "POST /users/42 HTTP/1.1\r\nHost: gatehouse.test\r\nAuthorization: {b}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 70014\r\nconnection: close\r\n\r\n_method=DELETE{}",
                "x".repeat(70_000)
            )),
            "envoy 413",
        ),
        row(
            "control: a form body without _method (reaches the API as POST)",
            Send::raw(format!(
                "POST /users/42 HTTP/1.1\r\nHost: gatehouse.test\r\nAuthorization: {b}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 6\r\nconnection: close\r\n\r\nname=x"
            )),
            "api 405",
        ),
        row("override: ?+_method=DELETE (PHP skips leading spaces)", post("/users/42?+_method=DELETE", None), FORBIDDEN),
        row("override: ?%20_method=DELETE", post("/users/42?%20_method=DELETE", None), FORBIDDEN),
        row("override: ?_method%00=DELETE (PHP cuts the name at NUL)", post("/users/42?_method%00=DELETE", None), FORBIDDEN),
        row("override: ?a=1;_method=DELETE (; separates, Rack < 3)", post("/users/42?a=1;_method=DELETE", None), FORBIDDEN),
        // Host and forwarding headers change nothing.
        row(
            "host: Host: evil.example",
            raw(b"DELETE", "/users/42", "").replace_host("evil.example"),
            FORBIDDEN,
        ),
        row(
            "host: Host: 127.0.0.1:1",
            raw(b"DELETE", "/users/42", "").replace_host("127.0.0.1:1"),
            FORBIDDEN,
        ),
        row(
            "host: two Host headers",
            raw(b"DELETE", "/users/42", "Host: other\r\n"),
            FORBIDDEN,
        ),
        row(
            "host: no Host header",
            Send::raw(format!("DELETE /users/42 HTTP/1.1\r\nAuthorization: {b}\r\n\r\n")),
            "envoy 400",
        ),
        row(
            "host: absolute-form with another Host",
            raw(b"DELETE", "http://admin.internal/users/42", ""),
            FORBIDDEN,
        ),
        row(
            "host: X-Forwarded-Host / X-Forwarded-Prefix / X-Original-URL",
            raw(
                b"DELETE",
                "/users/42",
                "X-Forwarded-Host: admin\r\nX-Forwarded-Prefix: /admin\r\nX-Original-URL: /healthz\r\nX-Rewrite-URL: /healthz\r\n",
            ),
            FORBIDDEN,
        ),
        row(
            "X-Original-URL: /users/42 on a public GET /healthz (reaches the API as GET /healthz, without the header)",
            Send::call("GET", "/healthz", &[("X-Original-URL", "/users/42")]),
            "api 200 GET /healthz",
        ),
        row(
            "HTTP/1.0 request",
            Send::raw(format!("DELETE /users/42 HTTP/1.0\r\nHost: x\r\nAuthorization: {b}\r\n\r\n")),
            "envoy 426",
        ),
    ]
}

trait HostSwap {
    fn replace_host(self, host: &str) -> Send;
}

impl HostSwap for Send {
    fn replace_host(self, host: &str) -> Send {
        match self {
            Send::Raw(bytes) => {
                let text = String::from_utf8(bytes).unwrap();
                Send::raw(text.replace("Host: gatehouse.test", &format!("Host: {host}")))
            }
            other => other,
        }
    }
}

fn tokens() -> (String, String) {
    (
        mint(&demo_claims("alice", &["admin", "user"])),
        mint(&demo_claims("bob", &["user"])),
    )
}

fn run_both(test: &str, rows: &[Row]) {
    let (hardened, alone) = both_edges();
    let (h, mut failures) = run(&hardened, rows, no_admin_delete_for_bob);
    let (a, f) = run(&alone, rows, no_admin_delete_for_bob);
    failures.extend(f);
    print_table(test, rows, &h, Some(&a));
    if !failures.is_empty() {
        eprintln!(
            "{}",
            hardened
                .logs()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert_no_failures(test, &failures);
}

#[test]
fn route_bypass_paths_never_reach_the_admin_delete_as_bob() {
    let (alice, bob) = tokens();
    run_both(
        "route_bypass_paths_never_reach_the_admin_delete_as_bob",
        &path_rows(&alice, &bob),
    );
}

#[test]
fn route_bypass_methods_and_hosts_never_reach_the_admin_delete_as_bob() {
    let (alice, bob) = tokens();
    run_both(
        "route_bypass_methods_and_hosts_never_reach_the_admin_delete_as_bob",
        &method_rows(&alice, &bob),
    );
}
