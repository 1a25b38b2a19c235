//! Route rules and how a request finds the rules that apply to it.
//!
//! An upstream may read a path case-insensitively, drop a trailing slash, or honour a
//! method-override header. Rather than guess which, a request is looked up under every
//! such reading and must satisfy the rule of each: the filter is never the weaker of
//! the two parsers.

use serde_json::Value;

use crate::claims::{Pointer, StrictObject};
use crate::path::canonical_method;

/// What a rule demands of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// No token needed.
    Public,
    /// No token passes without identity; a token must be valid, and then passes with
    /// it (a broken token is never taken for none).
    Optional,
    /// Any valid token.
    Authenticated,
    /// A valid token with at least one of these roles.
    AnyOf(Vec<String>),
    /// A valid token with every one of these roles.
    AllOf(Vec<String>),
    /// Nobody passes.
    Deny,
}

impl Requirement {
    /// Whether `roles` (from a verified token) satisfy the requirement; `Public` and
    /// `Authenticated` are always satisfied once a token is verified.
    pub fn allows(&self, roles: &[String]) -> bool {
        match self {
            Requirement::Public | Requirement::Optional | Requirement::Authenticated => true,
            Requirement::AnyOf(wanted) => wanted.iter().any(|w| roles.iter().any(|r| r == w)),
            Requirement::AllOf(wanted) => wanted.iter().all(|w| roles.iter().any(|r| r == w)),
            Requirement::Deny => false,
        }
    }

    /// The roles named by the requirement, for the `scope` of an RFC 6750 answer.
    pub fn roles(&self) -> &[String] {
        match self {
            Requirement::AnyOf(roles) | Requirement::AllOf(roles) => roles,
            _ => &[],
        }
    }
}

/// How a rule matches the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// The whole path.
    Exact(String),
    /// The path itself or anything below it, segment-wise: `/api` matches `/api` and
    /// `/api/x`, never `/apix`. `/` matches every path.
    Prefix(String),
    /// Literal segments and `{name}` placeholders that match one non-empty segment.
    Template(Vec<Segment>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub pattern: PathPattern,
    /// Upper-case methods; `None` matches any. A rule for `GET` also covers `HEAD`.
    pub methods: Option<Vec<String>>,
    pub require: Requirement,
    /// Keep the `Authorization` header upstream on this rule's requests (for an
    /// upstream that checks the token itself, such as the token service's admin API).
    pub forward_authorization: bool,
    /// The providers whose tokens this rule accepts (indexes); `None`: every one.
    pub providers: Option<Vec<usize>>,
    /// Claims the token must have, each compared with its JSON type.
    pub claims: Vec<(Pointer, Condition)>,
}

/// What a rule demands of one claim.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The claim is exactly this value (a string never equals a number).
    Equals(Value),
    /// The claim is one of these values, or an array holding one of them.
    AnyOf(Vec<Value>),
}

impl Condition {
    pub fn holds(&self, claim: Option<&Value>) -> bool {
        let Some(claim) = claim else { return false };
        match self {
            Condition::Equals(want) => claim == want,
            Condition::AnyOf(wanted) => match claim {
                Value::Array(items) => items.iter().any(|i| wanted.contains(i)),
                one => wanted.contains(one),
            },
        }
    }
}

impl Eq for Condition {}

/// Whether `claims` meet every condition.
pub fn claims_hold(conditions: &[(Pointer, Condition)], claims: &StrictObject) -> bool {
    conditions.iter().all(|(p, c)| c.holds(claims.pointer(p)))
}

/// What applies to a request under one reading of it: the rule's requirement and
/// whether it keeps `Authorization` (never for `no_match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched<'r> {
    /// The rule's index in [`Routes::rules`]; `None` for `no_match`.
    pub rule: Option<usize>,
    pub require: &'r Requirement,
    pub forward_authorization: bool,
    pub providers: Option<&'r [usize]>,
    pub claims: &'r [(Pointer, Condition)],
}

impl Matched<'_> {
    /// Whether this rule takes tokens of provider `provider`.
    pub fn accepts(&self, provider: usize) -> bool {
        self.providers.is_none_or(|list| list.contains(&provider))
    }
}

/// Headers by which common frameworks let a request claim another method.
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] =
    ["x-http-method-override", "x-http-method", "x-method-override"];

/// Whether `name` is one of [`METHOD_OVERRIDE_HEADERS`], in any case and with `_` for
/// `-`: CGI, WSGI and PHP read `X_HTTP_Method_Override` as `X-HTTP-Method-Override`.
pub fn is_method_override_header(name: &str) -> bool {
    METHOD_OVERRIDE_HEADERS.iter().any(|h| {
        h.len() == name.len()
            && h.bytes()
                .zip(name.bytes())
                .all(|(h, n)| h == n.to_ascii_lowercase() || (h == b'-' && n == b'_'))
    })
}

/// The query parameter that Rails, Laravel and Symfony accept for the same purpose.
const METHOD_OVERRIDE_PARAM: &str = "_method";

/// The ordered rules and the requirement when none matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    pub rules: Vec<Rule>,
    pub no_match: Requirement,
}

impl Routes {
    /// Whether another method than those of `methods` could land the request on a
    /// requirement none of them lands on: then a `_method` field in a form body would
    /// matter, and the body must be read. Only the methods rules name can differ.
    pub fn override_matters(&self, path: &str, methods: &[String]) -> bool {
        // By rule, not by requirement: rules that require the same may still differ
        // in the providers or the claims they take.
        let current: Vec<Option<usize>> = self.lookup(path, methods).iter().map(|m| m.rule).collect();
        let mut with_one_more = methods.to_vec();
        self.rules
            .iter()
            .filter_map(|r| r.methods.as_deref())
            .flatten()
            .filter(|m| !methods.contains(m))
            .any(|m| {
                with_one_more.truncate(methods.len());
                with_one_more.push(m.clone());
                self.lookup(path, &with_one_more)
                    .iter()
                    .any(|m| !current.contains(&m.rule))
            })
    }

    /// The rules (or `no_match`) of every reading of the request, each once. `path` is
    /// canonical (see [`crate::path::canonical_path`]), `methods` are the canonical
    /// method and any override.
    pub fn lookup<'r>(&'r self, path: &str, methods: &[String]) -> Vec<Matched<'r>> {
        let paths = path_readings(path);
        let mut found: Vec<Option<usize>> = Vec::with_capacity(2);
        for method in methods {
            for p in &paths {
                for fold_case in [false, true] {
                    let hit = self.rules.iter().position(|r| r.matches(p, method, fold_case));
                    if !found.contains(&hit) {
                        found.push(hit);
                    }
                }
            }
        }
        found
            .into_iter()
            .map(|hit| match hit.and_then(|i| self.rules.get(i).map(|r| (i, r))) {
                Some((i, r)) => Matched {
                    rule: Some(i),
                    require: &r.require,
                    forward_authorization: r.forward_authorization,
                    providers: r.providers.as_deref(),
                    claims: &r.claims,
                },
                None => Matched {
                    rule: None,
                    require: &self.no_match,
                    forward_authorization: false,
                    providers: None,
                    claims: &[],
                },
            })
            .collect()
    }
}

/// Every path an upstream might route `path` (canonical) to: itself; without a
/// trailing slash; and, when its last segment has them, without trailing dots and
/// spaces (IIS drops them: `/admin/report.` and `/admin/report%20` are
/// `/admin/report`) and without a format suffix (Rails routes `(.:format)` by
/// default, Spring MVC before 5.3 matched `.*`: `/admin/report.json` is
/// `/admin/report`), cut at the first dot and at the last. Most paths have one or two.
pub fn path_readings(path: &str) -> Vec<&str> {
    // Every reading is a prefix of the path: kept as lengths.
    let mut lengths: Vec<usize> = vec![path.len()];
    let mut add = |len: usize| {
        if len > 0 && !lengths.contains(&len) {
            lengths.push(len);
        }
    };
    let trimmed = match path.strip_suffix('/') {
        Some(t) if !t.is_empty() => t,
        _ => path,
    };
    add(trimmed.len());
    let segment_start = trimmed.rfind('/').map_or(0, |i| i + 1);
    let mut bare = trimmed;
    loop {
        let shorter = bare.strip_suffix('.').or_else(|| bare.strip_suffix("%20"));
        match shorter {
            Some(s) if s.len() > segment_start => bare = s,
            _ => break,
        }
    }
    add(bare.len());
    let last = bare.get(segment_start..).unwrap_or("");
    for dot in [last.find('.'), last.rfind('.')].into_iter().flatten() {
        // A stem of dots alone (`..x`) or nothing (`.well-known`) is no resource name.
        if last
            .get(..dot)
            .is_some_and(|stem| stem.bytes().any(|b| b != b'.'))
        {
            add(segment_start + dot);
        }
    }
    lengths.into_iter().filter_map(|len| path.get(..len)).collect()
}

impl Rule {
    fn matches(&self, path: &str, method: &str, fold_case: bool) -> bool {
        let method_ok = match &self.methods {
            None => true,
            Some(list) => list
                .iter()
                .any(|m| m == method || (method == "HEAD" && m == "GET")),
        };
        method_ok && self.pattern.matches(path, fold_case)
    }
}

impl PathPattern {
    fn matches(&self, path: &str, fold_case: bool) -> bool {
        let eq = |a: &str, b: &str| {
            if fold_case {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        };
        match self {
            PathPattern::Exact(p) => eq(p, path),
            PathPattern::Prefix(p) if p == "/" => true,
            PathPattern::Prefix(p) => match path.get(..p.len()) {
                Some(head) if eq(head, p) => matches!(path.as_bytes().get(p.len()), None | Some(b'/')),
                _ => false,
            },
            PathPattern::Template(segments) => {
                let mut parts = path.split('/').skip(1);
                let all = segments.iter().all(|s| match (s, parts.next()) {
                    (Segment::Literal(l), Some(p)) => eq(l, p),
                    (Segment::Param, Some(p)) => !p.is_empty(),
                    (_, None) => false,
                });
                all && parts.next().is_none()
            }
        }
    }
}

/// The methods under which the request is looked up: its own, and any that an
/// override header or `_method` query parameter asks for. `None` if one of them is
/// not a valid method token (the request is then refused).
pub fn request_methods<'h>(
    method: &[u8],
    raw_path: &[u8],
    override_values: impl Iterator<Item = &'h [u8]>,
) -> Option<Vec<String>> {
    let mut methods = vec![canonical_method(method)?];
    let query_values = query_params(raw_path, METHOD_OVERRIDE_PARAM);
    for value in override_values {
        push_method(&mut methods, value)?;
    }
    for value in query_values {
        push_method(&mut methods, &percent_decode(value)?)?;
    }
    Some(methods)
}

fn push_method(methods: &mut Vec<String>, raw: &[u8]) -> Option<()> {
    let m = canonical_method(raw)?;
    if !methods.contains(&m) {
        methods.push(m);
    }
    Some(())
}

/// Form-decodes a query value as the upstream's framework would (`+` is a space).
pub fn percent_decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter().copied();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?
            }
            b'+' => b' ',
            _ => b,
        });
    }
    Some(out)
}

/// Raw values of the query parameter `name` (its name percent-decoded, as frameworks
/// read it, and compared case-insensitively).
fn query_params<'p>(raw_path: &'p [u8], name: &'p str) -> impl Iterator<Item = &'p [u8]> {
    let query = raw_path
        .iter()
        .position(|&b| b == b'?')
        .and_then(|i| raw_path.get(i + 1..))
        .unwrap_or(&[]);
    form_params(query, name)
}

/// Raw values of the form field `name` in `application/x-www-form-urlencoded` text
/// (a query or a body), its name read as frameworks read one.
pub fn form_params<'p>(form: &'p [u8], name: &'p str) -> impl Iterator<Item = &'p [u8]> {
    // `;` separates too: Rack before 3 and old Python split on both.
    form.split(|&b| b == b'&' || b == b';').filter_map(move |pair| {
        let mut kv = pair.splitn(2, |&b| b == b'=');
        let key = kv.next()?;
        let decoded = percent_decode(key).unwrap_or_else(|| key.to_vec());
        field_named(&decoded, name).then(|| kv.next().unwrap_or(&[]))
    })
}

/// Whether a decoded field name is `name` as some framework reads it: cut at the
/// first NUL, `.`, ` ` and `[` as `_` (PHP, hence Laravel and Symfony), with leading
/// spaces skipped (PHP) or not (as `_`); compared case-insensitively. Both readings
/// count: the filter must not be the weaker parser.
pub fn field_named(decoded: &[u8], name: &str) -> bool {
    let end = decoded.iter().position(|&b| b == 0).unwrap_or(decoded.len());
    let whole = decoded.get(..end).unwrap_or(&[]);
    let start = whole.iter().position(|&b| b != b' ').unwrap_or(whole.len());
    let php = |b: u8| if matches!(b, b'.' | b' ' | b'[') { b'_' } else { b };
    let same = |key: &[u8]| {
        key.len() == name.len()
            && key
                .iter()
                .zip(name.bytes())
                .all(|(&a, b)| php(a).eq_ignore_ascii_case(&b))
    };
    same(whole) || whole.get(start..).is_some_and(same)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Requirement::*;

    fn template(t: &str) -> PathPattern {
        PathPattern::Template(
            t.split('/')
                .skip(1)
                .map(|s| {
                    if s.starts_with('{') {
                        Segment::Param
                    } else {
                        Segment::Literal(s.to_string())
                    }
                })
                .collect(),
        )
    }

    fn rule(pattern: PathPattern, methods: &[&str], require: Requirement) -> Rule {
        Rule {
            pattern,
            methods: (!methods.is_empty()).then(|| methods.iter().map(|m| m.to_string()).collect()),
            require,
            forward_authorization: false,
            providers: None,
            claims: Vec::new(),
        }
    }

    fn admin() -> Requirement {
        AnyOf(vec!["admin".into()])
    }

    fn demo_routes() -> Routes {
        Routes {
            rules: vec![
                rule(PathPattern::Exact("/token".into()), &["POST"], Public),
                rule(PathPattern::Prefix("/.well-known".into()), &["GET"], Public),
                rule(PathPattern::Exact("/healthz".into()), &["GET"], Public),
                rule(PathPattern::Exact("/users/me".into()), &["GET"], Authenticated),
                rule(template("/users/{id}"), &["DELETE"], admin()),
                rule(PathPattern::Prefix("/internal".into()), &[], Deny),
            ],
            no_match: Authenticated,
        }
    }

    fn lookup(routes: &Routes, method: &str, path: &str) -> Vec<Requirement> {
        routes
            .lookup(path, &[method.to_string()])
            .into_iter()
            .map(|m| m.require.clone())
            .collect()
    }

    #[test]
    fn first_match_wins_under_every_reading() {
        let routes = demo_routes();
        let cases: &[(&str, &str, &[Requirement])] = &[
            ("POST", "/token", &[Public]),
            ("GET", "/token", &[Authenticated]),
            ("GET", "/.well-known/jwks.json", &[Public]),
            ("GET", "/.well-known", &[Public]),
            ("GET", "/.well-knownx", &[Authenticated]),
            ("HEAD", "/healthz", &[Public]),
            ("GET", "/healthz/", &[Authenticated, Public]),
            ("GET", "/HEALTHZ", &[Authenticated, Public]),
            ("GET", "/users/me", &[Authenticated]),
            ("DELETE", "/users/4", &[admin()]),
            ("DELETE", "/users/4/", &[Authenticated, admin()]),
            ("DELETE", "/Users/4", &[Authenticated, admin()]),
            ("DELETE", "/USERS/4/", &[Authenticated, admin()]),
            ("DELETE", "/users/4/x", &[Authenticated]),
            ("DELETE", "/users", &[Authenticated]),
            ("GET", "/users/4", &[Authenticated]),
            ("GET", "/internal", &[Deny]),
            ("GET", "/internal/x", &[Deny]),
            ("GET", "/INTERNAL/x", &[Authenticated, Deny]),
            ("GET", "/internalx", &[Authenticated]),
            ("GET", "/", &[Authenticated]),
        ];
        for (method, path, want) in cases {
            assert_eq!(&lookup(&routes, method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn method_overrides_add_readings() {
        let routes = demo_routes();
        let methods = request_methods(b"POST", b"/users/4", [&b"delete"[..]].into_iter()).unwrap();
        assert_eq!(methods, ["POST", "DELETE"]);
        let found: Vec<_> = routes
            .lookup("/users/4", &methods)
            .into_iter()
            .map(|m| m.require.clone())
            .collect();
        assert_eq!(found, [Authenticated, admin()]);

        let methods = request_methods(b"GET", b"/users/4?a=1&_method=DELETE", std::iter::empty()).unwrap();
        assert_eq!(methods, ["GET", "DELETE"]);
        let methods = request_methods(b"GET", b"/users/4?_METHOD=get", std::iter::empty()).unwrap();
        assert_eq!(methods, ["GET"]);
        let methods = request_methods(b"GET", b"/x?_method=DEL%45TE", std::iter::empty()).unwrap();
        assert_eq!(methods, ["GET", "DELETE"]);
        // The name is decoded as frameworks decode it.
        for query in [
            &b"/x?%5Fmethod=DELETE"[..],
            b"/x?%5fMETHOD=delete",
            b"/x?_%6Dethod=DELETE",
            // PHP reads `.`, ` ` and `[` in a parameter name as `_`.
            b"/x?.method=DELETE",
            b"/x?%2Emethod=DELETE",
            b"/x?+method=DELETE",
            b"/x?[method=DELETE",
            // Leading spaces skipped and the name cut at NUL, as PHP reads it.
            b"/x?+_method=DELETE",
            b"/x?%20_method=DELETE",
            b"/x?++_method=DELETE",
            b"/x?_method%00=DELETE",
            b"/x?_method%00junk=DELETE",
            // `;` as a separator (Rack before 3).
            b"/x?a=1;_method=DELETE",
        ] {
            let methods = request_methods(b"POST", query, std::iter::empty()).unwrap();
            assert_eq!(methods, ["POST", "DELETE"], "{}", String::from_utf8_lossy(query));
        }
        for name in [
            "X-HTTP-Method-Override",
            "x_http_method_override",
            "X_Http-Method",
            "x-method_override",
        ] {
            assert!(is_method_override_header(name), "{name}");
        }
        for name in [
            "x-http-method-overrides",
            "x-http-methodoverride",
            "x.http.method",
        ] {
            assert!(!is_method_override_header(name), "{name}");
        }
        assert_eq!(
            request_methods(b"GET", b"/x?_method=DEL+ETE", std::iter::empty()),
            None
        );
        assert_eq!(
            request_methods(b"GET", b"/x?_method=DEL%4", std::iter::empty()),
            None
        );
        assert_eq!(
            request_methods(b"GET", b"/x", [&b"DE LETE"[..]].into_iter()),
            None
        );
        assert_eq!(request_methods(b"G T", b"/x", std::iter::empty()), None);
    }

    #[test]
    fn format_suffixes_and_trailing_dots_and_spaces_are_readings_too() {
        let cases: &[(&str, &[&str])] = &[
            ("/users/me", &["/users/me"]),
            ("/users/me/", &["/users/me/", "/users/me"]),
            ("/internal.json", &["/internal.json", "/internal"]),
            ("/admin/report.json", &["/admin/report.json", "/admin/report"]),
            (
                "/admin/report.tar.gz",
                &["/admin/report.tar.gz", "/admin/report", "/admin/report.tar"],
            ),
            ("/admin/report.", &["/admin/report.", "/admin/report"]),
            ("/admin/report%20", &["/admin/report%20", "/admin/report"]),
            ("/admin/report.%20.", &["/admin/report.%20.", "/admin/report"]),
            (
                "/admin/report.json/",
                &["/admin/report.json/", "/admin/report.json", "/admin/report"],
            ),
            ("/.well-known", &["/.well-known"]),
            (
                "/.well-known/jwks.json",
                &["/.well-known/jwks.json", "/.well-known/jwks"],
            ),
            ("/files/..a", &["/files/..a"]),
            ("/a.b/c", &["/a.b/c"]),
            ("/", &["/"]),
        ];
        for (path, want) in cases {
            assert_eq!(&path_readings(path), want, "{path}");
        }
        let routes = demo_routes();
        for (method, path, want) in [
            ("GET", "/internal.json", &[Authenticated, Deny][..]),
            // `{id}` takes `4.json` too: one rule either way.
            ("DELETE", "/users/4.json", &[admin()]),
            ("DELETE", "/users/4.", &[admin()]),
            ("DELETE", "/users/me.json", &[admin()]),
            ("GET", "/users/me.json", &[Authenticated, Authenticated]),
            ("GET", "/healthz.json", &[Authenticated, Public]),
            ("GET", "/.well-known/jwks.json", &[Public]),
        ] {
            assert_eq!(&lookup(&routes, method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn a_body_override_matters_only_where_another_method_has_another_rule() {
        let routes = demo_routes();
        let post = ["POST".to_string()];
        assert!(routes.override_matters("/users/4", &post), "DELETE needs admin");
        assert!(routes.override_matters("/Users/4/", &post));
        assert!(
            !routes.override_matters("/users/4/x", &post),
            "every method: no_match"
        );
        assert!(
            !routes.override_matters("/internal/x", &post),
            "every method: deny"
        );
        assert!(
            routes.override_matters("/token", &post),
            "GET /token is not public"
        );
        let both = ["POST".to_string(), "DELETE".to_string()];
        assert!(!routes.override_matters("/users/4", &both), "DELETE already read");
    }

    #[test]
    fn prefix_root_and_templates() {
        let routes = Routes {
            rules: vec![
                rule(template("/a/{x}/b/{y}"), &[], Deny),
                rule(PathPattern::Prefix("/".into()), &["GET"], Public),
            ],
            no_match: Authenticated,
        };
        assert_eq!(lookup(&routes, "GET", "/a/1/b/2"), [Deny]);
        assert_eq!(lookup(&routes, "GET", "/a/1/c/2"), [Public]);
        assert_eq!(lookup(&routes, "GET", "/a/1/b"), [Public]);
        assert_eq!(lookup(&routes, "POST", "/a/1/b"), [Authenticated]);
    }

    #[test]
    fn role_requirements_compare_exactly() {
        let roles = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(admin().allows(&roles(&["user", "admin"])));
        for near in [
            &["Admin"][..],
            &["admin "],
            &["ADMIN"],
            &["adm1n"],
            &["admin\0"],
            &["аdmin"],
            &[],
        ] {
            assert!(!admin().allows(&roles(near)), "{near:?}");
        }
        let both = AllOf(vec!["a".into(), "b".into()]);
        assert!(both.allows(&roles(&["b", "a"])));
        assert!(!both.allows(&roles(&["a"])));
        assert!(Authenticated.allows(&[]));
        assert!(!Deny.allows(&roles(&["admin"])));
    }
}
