//! Identity-header spoofing and header smuggling through the real Envoy running the
//! top-level `envoy.yaml`, in front of the demo API, whose echo shows every header it
//! received. Identity headers (`x-auth-*`, in any case, repeated, with `_` for `-`)
//! sent by a client never reach the API: on the hardened edge Envoy drops or refuses
//! them first; with Envoy's normalisation and early header mutation off, the filter
//! alone removes them. Claims whose values could smuggle a second value or a new line
//! into a forwarded header are refused with 401 and never reach the API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod attack_support;

use attack_support::{
    assert_no_failures, bearer, both_edges, print_table, row, row2, run, Outcome, Row, Send,
};
use gatehouse_testkit::{demo_claims, mint, DemoTopology, Observed};
use serde_json::{json, Value};

const HEALTHZ: &str = "api 200 GET /healthz";
const BOB_ME: &str = "api 200 GET /users/me sub=bob roles=user";

/// Every identity header the API saw is one the filter set, once: `x-auth-sub` and
/// `x-auth-roles` (whose values the row's answer pins) and `x-auth-provider`, which
/// must name `gatehouse` (every token here is the demo token service's, whatever
/// provider a client claims); nothing else under the prefix, in any case or with `_`
/// for `-`.
fn only_the_filters_identity(_: &Row, o: &Observed) -> Result<(), String> {
    let identity: Vec<(String, String)> = o
        .api_headers()
        .into_iter()
        .filter(|(k, _)| k.to_ascii_lowercase().replace('_', "-").starts_with("x-auth-"))
        .collect();
    let mut names: Vec<&str> = identity.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    if names.len() != before
        || names
            .iter()
            .any(|n| !matches!(*n, "x-auth-sub" | "x-auth-roles" | "x-auth-provider"))
        || identity
            .iter()
            .any(|(k, v)| k == "x-auth-provider" && v != "gatehouse")
    {
        return Err(format!("the API received identity headers {identity:?}"));
    }
    // Nor a header that tells some frameworks to serve another path.
    let rewrite: Vec<(String, String)> = o
        .api_headers()
        .into_iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase().replace('_', "-");
            k == "x-original-url" || k == "x-rewrite-url"
        })
        .collect();
    if !rewrite.is_empty() {
        return Err(format!("the API received path-rewrite headers {rewrite:?}"));
    }
    Ok(())
}

fn spoof_rows(bob: &str, nobody: &str) -> Vec<Row> {
    let b = bearer(bob);
    let healthz = |headers: &[(&str, &str)]| Send::call("GET", "/healthz", headers);
    let me = |headers: &[(&str, &str)]| {
        let mut h = vec![("Authorization", b.as_str())];
        h.extend_from_slice(headers);
        Send::call("GET", "/users/me", &h)
    };
    let raw_healthz = |headers: &[u8]| {
        let mut r = b"GET /healthz HTTP/1.1\r\nHost: gatehouse.test\r\n".to_vec();
        r.extend_from_slice(headers);
        r.extend_from_slice(b"\r\n");
        Send::Raw(r)
    };
    let underscore = "envoy 400";
    vec![
        // Public route, no token.
        row("control: public GET /healthz", healthz(&[]), HEALTHZ),
        row(
            "public: X-Original-URL and X-Rewrite-URL (Symfony / IIS path rewrites)",
            healthz(&[("X-Original-URL", "/users/42"), ("X-Rewrite-URL", "/users/42")]),
            HEALTHZ,
        ),
        row(
            "protected: X-Original-URL and X-Rewrite-URL",
            me(&[("X-Original-URL", "/users/42"), ("X-Rewrite-URL", "/users/42")]),
            BOB_ME,
        ),
        row(
            "public: X-Auth-Sub and X-Auth-Roles",
            healthz(&[("X-Auth-Sub", "root"), ("X-Auth-Roles", "admin")]),
            HEALTHZ,
        ),
        row(
            "public: x-auth-sub repeated",
            healthz(&[("x-auth-sub", "root"), ("x-auth-sub", "admin")]),
            HEALTHZ,
        ),
        row(
            "public: X-AUTH-SUB and x-AuTh-RoLeS",
            healthz(&[("X-AUTH-SUB", "root"), ("x-AuTh-RoLeS", "admin")]),
            HEALTHZ,
        ),
        row(
            "public: x-auth-anything",
            healthz(&[("x-auth-anything", "1")]),
            HEALTHZ,
        ),
        row2(
            "public: x_auth_sub (underscores)",
            healthz(&[("x_auth_sub", "root")]),
            underscore,
            HEALTHZ,
        ),
        row2(
            "public: X_Auth_Roles (underscores)",
            healthz(&[("X_Auth_Roles", "admin")]),
            underscore,
            HEALTHZ,
        ),
        row2(
            "public: x-auth_sub and x_auth-roles (mixed)",
            healthz(&[("x-auth_sub", "root"), ("x_auth-roles", "admin")]),
            underscore,
            HEALTHZ,
        ),
        row(
            "public: X-Auth-Sub after a bare LF in another header",
            raw_healthz(b"X-Foo: a\nX-Auth-Sub: root\r\n"),
            HEALTHZ,
        ),
        row(
            "public: X-Auth-Sub after a bare CR in another header (joined into X-Foo)",
            raw_healthz(b"X-Foo: a\rX-Auth-Sub: root\r\n"),
            HEALTHZ,
        ),
        row(
            "public: X-Auth-Sub folded into another header (obs-fold)",
            raw_healthz(b"X-Foo: a\r\n X-Auth-Sub: root\r\n"),
            HEALTHZ,
        ),
        row(
            "public: X-Auth-Sub:root (no space)",
            raw_healthz(b"X-Auth-Sub:root\r\n"),
            HEALTHZ,
        ),
        row(
            "public: `X-Auth-Sub : root` (space before the colon)",
            raw_healthz(b"X-Auth-Sub : root\r\n"),
            "envoy 400",
        ),
        row(
            "public: HTTP/2 x-auth-sub and x-auth-roles",
            Send::h2(
                "GET",
                "/healthz",
                &[("x-auth-sub", "root"), ("x-auth-roles", "admin")],
            ),
            HEALTHZ,
        ),
        row(
            "public: bob's token and X-Auth-Sub (no identity on public routes)",
            healthz(&[("Authorization", &b), ("X-Auth-Sub", "root")]),
            HEALTHZ,
        ),
        // Protected routes, bob's token.
        row("control: bob GET /users/me", me(&[]), BOB_ME),
        row(
            "protected: X-Auth-Sub alice and X-Auth-Roles admin",
            me(&[("X-Auth-Sub", "alice"), ("X-Auth-Roles", "admin")]),
            BOB_ME,
        ),
        row(
            "protected: X-Auth-Provider partner (the provider is the filter's word)",
            me(&[("X-Auth-Provider", "partner")]),
            BOB_ME,
        ),
        row(
            "protected: x-auth-roles admin, repeated",
            me(&[("x-auth-roles", "admin"), ("x-auth-roles", "admin")]),
            BOB_ME,
        ),
        row(
            "protected: X-AUTH-ROLES in upper case",
            me(&[("X-AUTH-ROLES", "admin")]),
            BOB_ME,
        ),
        row2(
            "protected: x_auth_roles (underscores)",
            me(&[("x_auth_roles", "admin")]),
            underscore,
            BOB_ME,
        ),
        row2(
            "protected: x_auth_sub (underscores)",
            me(&[("x_auth_sub", "alice")]),
            underscore,
            BOB_ME,
        ),
        row(
            "protected: HTTP/2 x-auth-sub and x-auth-roles",
            Send::h2(
                "GET",
                "/users/me",
                &[
                    ("authorization", &b),
                    ("x-auth-sub", "alice"),
                    ("x-auth-roles", "admin"),
                ],
            ),
            BOB_ME,
        ),
        row(
            "protected: a token without roles and X-Auth-Roles admin",
            Send::call(
                "GET",
                "/users/me",
                &[("Authorization", &bearer(nobody)), ("X-Auth-Roles", "admin")],
            ),
            "api 200 GET /users/me sub=nobody",
        ),
        row2(
            "protected: a token without roles and x_auth_roles admin",
            Send::call(
                "GET",
                "/users/me",
                &[("Authorization", &bearer(nobody)), ("x_auth_roles", "admin")],
            ),
            underscore,
            "api 200 GET /users/me sub=nobody",
        ),
        row(
            "protected: X-Auth-Roles admin does not grant DELETE /users/42",
            Send::call(
                "DELETE",
                "/users/42",
                &[("Authorization", &b), ("X-Auth-Roles", "admin")],
            ),
            "filter 403 forbidden",
        ),
        row(
            "protected (no rule): GET /anything with X-Auth-Sub alice",
            Send::call(
                "GET",
                "/anything",
                &[("Authorization", &b), ("X-Auth-Sub", "alice")],
            ),
            "api 200 GET /anything sub=bob roles=user",
        ),
    ]
}

/// The outcome of the row labelled `label`.
fn outcome<'a>(outcomes: &'a [Outcome], label: &str) -> &'a Outcome {
    outcomes
        .iter()
        .find(|o| o.label == label)
        .unwrap_or_else(|| panic!("no row {label}"))
}

#[test]
fn identity_headers_sent_by_clients_never_reach_the_api() {
    let test = "identity_headers_sent_by_clients_never_reach_the_api";
    let bob = mint(&demo_claims("bob", &["user"]));
    let nobody = {
        let mut c = demo_claims("nobody", &[]);
        c.as_object_mut().unwrap().remove("roles");
        mint(&c)
    };
    let rows = spoof_rows(&bob, &nobody);
    let (hardened, alone) = both_edges();
    let (h, mut failures) = run(&hardened, &rows, only_the_filters_identity);
    let (a, f) = run(&alone, &rows, only_the_filters_identity);
    failures.extend(f);
    print_table(test, &rows, &h, Some(&a));
    assert_no_failures(test, &failures);

    // The token itself goes upstream only where the route is public.
    for outcomes in [&h, &a] {
        let me = outcome(outcomes, "control: bob GET /users/me");
        let seen = me.observed.api_headers();
        assert!(
            !seen.iter().any(|(k, _)| k == "authorization"),
            "the token reached the API on a protected route: {seen:?}"
        );
        let public = outcome(
            outcomes,
            "public: bob's token and X-Auth-Sub (no identity on public routes)",
        );
        let seen = public.observed.api_headers();
        assert!(
            seen.iter()
                .any(|(k, v)| k == "authorization" && *v == bearer(&bob)),
            "public routes leave Authorization alone: {seen:?}"
        );
    }
}

fn smuggle_rows() -> Vec<Row> {
    let me = |claims: Value| Send::call("GET", "/users/me", &[("Authorization", &bearer(&mint(&claims)))]);
    let bob_with = |changes: Value| {
        let mut c = demo_claims("bob", &["user"]);
        for (k, v) in changes.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    // What the API must receive: the value as JSON with everything beyond ASCII
    // escaped (docs/configuration.md, "Forwarded headers"), written here apart from
    // the filter's own encoder.
    let as_json = |v: &Value| -> String {
        let mut out = String::new();
        for c in v.to_string().chars() {
            if c.is_ascii() && c != '\u{7f}' {
                out.push(c);
            } else {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
        out
    };
    let mut rows = vec![
        row("control: sub bob", me(bob_with(json!({}))), BOB_ME),
        row(
            "control: sub with an inner space",
            me(bob_with(json!({"sub": "bob smith"}))),
            "api 200 GET /users/me sub=bob smith roles=user",
        ),
        row(
            "control: sub an e-mail address",
            me(bob_with(json!({"sub": "bob.smith+x@example.com"}))),
            "api 200 GET /users/me sub=bob.smith+x@example.com roles=user",
        ),
    ];
    for (name, sub) in [
        ("comma (a second list value)", "bob,alice"),
        ("CRLF and a header line", "bob\r\nX-Auth-Roles: admin"),
        ("LF", "bob\nx"),
        ("CR", "bob\rx"),
        ("semicolon (a parameter)", "bob;role=admin"),
        ("double quotes", "\"bob\""),
        ("backslash", "bob\\"),
        ("NUL", "bob\u{0}"),
        ("tab", "bob\tx"),
        ("DEL", "bob\u{7f}"),
        ("leading space", " bob"),
        ("trailing space", "bob "),
        ("non-ASCII é", "b\u{e9}b"),
        ("Cyrillic о (look-alike)", "b\u{43e}b"),
        ("NEL U+0085", "bob\u{85}"),
        ("LINE SEPARATOR U+2028", "bob\u{2028}"),
    ] {
        rows.push(row(
            &format!("sub with {name}"),
            me(bob_with(json!({"sub": sub}))),
            &format!("api 200 GET /users/me sub={} roles=user", as_json(&json!(sub))),
        ));
    }
    for (name, roles) in [
        ("a comma inside one role", json!(["user,admin"])),
        ("CRLF inside one role", json!(["user", "x\r\nX-Auth-Sub: alice"])),
        ("a semicolon inside one role", json!(["user;admin"])),
        ("a space inside one role", json!(["us er"])),
        ("a quote inside one role", json!(["user\""])),
        ("non-ASCII inside one role", json!(["us\u{e9}r"])),
        ("CRLF in a scope string", json!("user\r\nadmin")),
    ] {
        // A space-delimited string is a list of roles; an array is one already.
        let list = match &roles {
            Value::String(s) => json!(s.split(' ').collect::<Vec<_>>()),
            other => other.clone(),
        };
        rows.push(row(
            &format!("roles with {name}"),
            me(bob_with(json!({"roles": roles}))),
            &format!("api 200 GET /users/me sub=bob roles={}", as_json(&list)),
        ));
    }
    rows.extend([
        row(
            "sub mallory,alice with role admin on DELETE /users/42",
            Send::call(
                "DELETE",
                "/users/42",
                &[(
                    "Authorization",
                    &bearer(&mint(&demo_claims("mallory,alice", &["admin"]))),
                )],
            ),
            r#"api 200 DELETE /users/42 sub="mallory,alice" roles=admin"#,
        ),
        row(
            "public: a token with a CRLF sub on GET /healthz (not read, nothing forwarded)",
            Send::call(
                "GET",
                "/healthz",
                &[(
                    "Authorization",
                    &bearer(&mint(&bob_with(json!({"sub": "bob\r\nX-Auth-Roles: admin"})))),
                )],
            ),
            HEALTHZ,
        ),
    ]);
    rows
}

#[test]
fn claim_values_reach_the_api_encoded_so_none_can_smuggle_a_header() {
    let test = "claim_values_that_could_smuggle_header_values_are_refused";
    let demo = DemoTopology::start();
    let rows = smuggle_rows();
    let (outcomes, failures) = run(&demo, &rows, only_the_filters_identity);
    print_table(test, &rows, &outcomes, None);
    assert_no_failures(test, &failures);
}
