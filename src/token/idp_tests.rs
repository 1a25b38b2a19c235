//! Tokens shaped exactly as Keycloak, Auth0, Entra ID, Okta and Cognito issue them
//! (and RFC 9068 tokens signed Ed25519, ES384 and PS256, and the FastAPI guide's
//! token without `iss`), signed by PyJWT with `cryptography`
//! (`tests/fixtures/make_idp_tokens.py`), against the configuration a newcomer
//! writes for each: issuer, keys, and where the roles are.

use std::rc::Rc;

use base64ct::{Base64UrlUnpadded, Encoding};
use serde_json::{json, Value};

use super::{verify, VerifiedToken};
use crate::config::compile;
use crate::decision::{decide, Decision, Outcome, Reason, Runtime};
use crate::keys::KeySet;
use crate::policy::Policy;
use gatehouse_testkit::SECRET;

fn fixture() -> Value {
    serde_json::from_str(include_str!("../../tests/fixtures/idp-tokens.json")).unwrap()
}

fn now() -> i64 {
    fixture()["now"].as_i64().unwrap()
}

fn token(provider: &str, label: &str) -> String {
    fixture()["providers"][provider]["tokens"][label]
        .as_str()
        .unwrap_or_else(|| panic!("no {provider} {label}"))
        .to_string()
}

/// A provider as a newcomer writes it: the issuer and keys from the fixture, plus `extra`.
fn provider(name: &str, extra: Value) -> Value {
    let p = &fixture()["providers"][name];
    let mut out = json!({"issuer": p["issuer"], "jwks": {"inline": p["jwks"]}});
    for (k, v) in extra.as_object().unwrap() {
        out[k] = v.clone();
    }
    out
}

fn compile_value(config: &Value) -> Policy {
    compile(config.to_string().as_bytes(), |_| Some(SECRET.to_string()))
        .unwrap_or_else(|e| panic!("{e}: {config}"))
}

fn check(policy: &Policy, token: &str) -> Result<VerifiedToken, Reason> {
    let keys: Vec<Rc<KeySet>> = policy.providers.iter().map(|p| p.inline_keys.clone()).collect();
    verify(policy, &keys, token, now(), |_| true).map_err(|r| r.reason)
}

/// Every provider of the fixture, as one configuration.
fn all_providers() -> Value {
    json!({"providers": {
        "keycloak": provider("keycloak", json!({"audiences": ["orders-api"],
            "roles": ["/realm_access/roles", "/resource_access/orders-api/roles"]})),
        "auth0": provider("auth0", json!({"audiences": ["https://orders.example.test"],
            "roles": ["/permissions", "/https:~1~1example.test~1roles"]})),
        "entra": provider("entra", json!({"audiences": ["api://orders"], "roles": ["/roles", "/scp"]})),
        "okta": provider("okta", json!({"audiences": ["api://default"], "roles": ["/scp", "/groups"]})),
        "cognito": provider("cognito", json!({"audiences": ["5k7abc123defg"], "audience_claim": "client_id",
            "roles": "/cognito:groups"})),
        "modern": provider("modern", json!({"audiences": ["https://orders.example.test"], "roles": "/scope"})),
        "fastapi": {"tokens_without_issuer": true, "hmac_secret": {"env": "SECRET_KEY"}}
    }})
}

#[test]
fn each_idp_token_verifies_as_its_own_provider_with_its_roles() {
    let policy = compile_value(&all_providers());
    let name = |v: &VerifiedToken| policy.providers[v.provider].name.clone();
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "keycloak",
            "access",
            "8f14e45f-ceea-467f-a0e6-7a5b3c2d1e0f",
            &[
                "offline_access",
                "uma_authorization",
                "orders-reader",
                "orders-admin",
            ],
        ),
        (
            "keycloak",
            "no_roles",
            "8f14e45f-ceea-467f-a0e6-7a5b3c2d1e0f",
            &[],
        ),
        (
            "auth0",
            "access",
            "auth0|65f0c0ffee",
            &["read:orders", "write:orders", "admin", "staff"],
        ),
        (
            "auth0",
            "single_aud",
            "auth0|65f0c0ffee",
            &["read:orders", "write:orders", "admin", "staff"],
        ),
        (
            "auth0",
            "client_credentials",
            "Xk1r3QpT9vLm2Zs8Yc4Nw7Bd6Hf0Ja5E@clients",
            &["read:orders"],
        ),
        // Entra publishes its RSA keys without `alg`.
        (
            "entra",
            "access",
            "kL3v9Qw2Xe7Rt5Yu1Io8Pa4Sd6Fg0Hj2Kl9Zx3Cv5Bn7",
            &["Orders.Admin", "Orders.Read", "Orders.ReadWrite", "User.Read"],
        ),
        (
            "entra",
            "app_only",
            "9b8a7c6d-5e4f-4a3b-8c2d-1e0f2a3b4c5d",
            &["Orders.Read"],
        ),
        (
            "okta",
            "access",
            "alice@acme.test",
            &["openid", "profile", "orders.read", "Everyone", "Orders-Admins"],
        ),
        // Cognito access tokens carry no `aud`: the audience is `client_id`.
        (
            "cognito",
            "access",
            "d2b5f4a1-7c3e-4f9b-8a6d-0e1c2b3a4f5e",
            &["admins", "staff"],
        ),
        ("modern", "ed25519", "svc-42", &["orders.read", "orders.write"]),
        ("modern", "es384", "svc-42", &["orders.read", "orders.write"]),
        ("modern", "ps256", "svc-42", &["orders.read", "orders.write"]),
        // Exactly as the FastAPI guide's create_access_token: only sub and exp.
        ("fastapi", "access", "alice", &[]),
    ];
    for (idp, label, sub, roles) in cases {
        let v = check(&policy, &token(idp, label)).unwrap_or_else(|e| panic!("{idp} {label}: {e:?}"));
        assert_eq!(name(&v), *idp, "{label}");
        assert_eq!(v.subject, *sub, "{idp} {label}");
        assert_eq!(v.roles, *roles, "{idp} {label}");
    }
    // A Cognito ID token names the client in `aud`, not `client_id`: not an access token.
    assert_eq!(
        check(&policy, &token("cognito", "id_token")).err(),
        Some(Reason::Audience)
    );
}

#[test]
fn the_iss_selects_whose_keys_check_the_signature_and_nothing_else_is_tried() {
    // Provider "b" claims Keycloak's issuer but holds Auth0's keys; "a" holds
    // Keycloak's keys under another issuer. A Keycloak token selects "b" by its iss
    // and fails there: the key that would verify it belongs to another issuer.
    let fx = fixture();
    let config = json!({"providers": {
        "a": {"issuer": "https://other.test", "jwks": {"inline": fx["providers"]["keycloak"]["jwks"]}},
        "b": {"issuer": fx["providers"]["keycloak"]["issuer"], "jwks": {"inline": fx["providers"]["auth0"]["jwks"]}}
    }});
    let policy = compile_value(&config);
    assert_eq!(
        check(&policy, &token("keycloak", "access")).err(),
        Some(Reason::UnknownKey)
    );
    // An issuer no provider has, a token without iss where no provider takes one, and
    // a claims array where an object must be: refused before any key is looked at.
    let two = compile_value(&json!({"providers": {
        "keycloak": provider("keycloak", json!({})),
        "okta": provider("okta", json!({}))}}));
    for other in [token("auth0", "access"), token("fastapi", "access")] {
        assert_eq!(check(&two, &other).err(), Some(Reason::Issuer));
    }
    let array =
        crate::token::tests::sign_raw(r#"{"alg":"HS256"}"#, r#"["https://x.test"]"#, SECRET.as_bytes());
    assert_eq!(check(&two, &array).err(), Some(Reason::Malformed));
    // One provider (as a configuration without `providers`): the signature first, as
    // before; a token of another issuer signed with its key is refused by iss.
    let one = compile_value(&json!({"providers": {"b": config["providers"]["a"].clone()}}));
    assert_eq!(
        check(&one, &token("okta", "access")).err(),
        Some(Reason::UnknownKey)
    );
    assert_eq!(
        check(&one, &token("keycloak", "access")).err(),
        Some(Reason::Issuer)
    );
    // A no-iss provider never takes a token that has one, even when its secret verifies.
    let seed = compile_value(
        &json!({"providers": {"seed": {"tokens_without_issuer": true, "hmac_secret": {"env": "SECRET_KEY"}}}}),
    );
    let with_iss =
        crate::token::tests::sign(&json!({"iss": "https://x.test", "sub": "alice", "exp": now() + 60}));
    assert_eq!(check(&seed, &with_iss).err(), Some(Reason::Issuer));
    let null_iss = crate::token::tests::sign(&json!({"iss": null, "sub": "alice", "exp": now() + 60}));
    assert_eq!(check(&seed, &null_iss).err(), Some(Reason::Issuer));
}

#[test]
fn an_rsa_key_without_alg_serves_the_one_rsa_algorithm_the_provider_accepts() {
    let entra = token("entra", "access");
    let with_algs = |algs: Value, extra: Value| {
        let mut p = provider("entra", json!({"algorithms": algs}));
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        compile(json!({"providers": {"entra": p}}).to_string().as_bytes(), |_| {
            None
        })
    };
    let p = with_algs(json!(["RS256"]), json!({})).unwrap();
    assert!(check(&p, &entra).is_ok());
    // Pinned to PS256, the same key refuses an RS256 token.
    let p = with_algs(json!(["PS256"]), json!({})).unwrap();
    assert_eq!(check(&p, &entra).err(), Some(Reason::Algorithm));
    // Both accepted: the configuration must say which, or it is refused.
    let e = with_algs(json!(["RS256", "PS256"]), json!({})).err().unwrap();
    assert_eq!(e.field, "providers.entra.rsa_keys_without_alg", "{e}");
    let p = with_algs(
        json!(["RS256", "PS256"]),
        json!({"rsa_keys_without_alg": "RS256"}),
    )
    .unwrap();
    assert!(check(&p, &entra).is_ok());
    // No RSA algorithm at all: the key is left out, and the message says why.
    let e = with_algs(json!(["ES256"]), json!({})).err().unwrap();
    assert_eq!(e.field, "providers.entra.jwks.inline", "{e}");
    assert!(e.message.contains("without alg"), "{e}");
}

#[test]
fn rules_choose_providers_and_require_claims_with_their_json_type() {
    let mut config = all_providers();
    config["rules"] = json!([
        {"prefix": "/staff", "require": "authenticated", "providers": ["keycloak", "entra"],
         "claims": {"/azp": {"any_of": ["frontend", "c0ffee00-5a1e-4b7d-9c3e-2d1f0a9b8c7d"]}}},
        {"prefix": "/tenant", "require": {"any_of": ["Orders.Read"]}, "providers": ["entra"],
         "claims": {"/tid": {"equals": "7f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b"}}},
        {"prefix": "/verified", "require": "authenticated", "claims": {"/email_verified": {"equals": true}}},
        {"prefix": "/verified-text", "require": "authenticated", "claims": {"/email_verified": {"equals": "true"}}},
        {"prefix": "/groups", "require": "authenticated", "claims": {"/groups": {"any_of": ["Orders-Admins"]}}}
    ]);
    let policy = compile_value(&config);
    let run = |path: &str, idp: &str, label: &str| -> Outcome {
        let headers = vec![(
            "authorization".to_string(),
            format!("Bearer {}", token(idp, label)).into_bytes(),
        )];
        decide(
            &policy,
            &mut Runtime::new(&policy),
            b"GET",
            path.as_bytes(),
            &headers,
            now(),
        )
        .outcome()
    };
    let denied = Outcome::Denied;
    for (path, idp, label, want) in [
        ("/staff/x", "keycloak", "access", Outcome::Allowed),
        ("/staff/x", "entra", "access", Outcome::Allowed),
        ("/staff/x", "keycloak", "other_azp", denied(Reason::ClaimMismatch)),
        ("/staff/x", "auth0", "access", denied(Reason::ProviderNotAccepted)),
        ("/tenant/x", "entra", "access", Outcome::Allowed),
        (
            "/tenant/x",
            "entra",
            "other_tenant",
            denied(Reason::ClaimMismatch),
        ),
        (
            "/tenant/x",
            "keycloak",
            "access",
            denied(Reason::ProviderNotAccepted),
        ),
        ("/verified/x", "keycloak", "access", Outcome::Allowed),
        // A string never equals a boolean, nor a missing claim anything.
        (
            "/verified-text/x",
            "keycloak",
            "access",
            denied(Reason::ClaimMismatch),
        ),
        ("/verified/x", "auth0", "access", denied(Reason::ClaimMismatch)),
        ("/groups/x", "okta", "access", Outcome::Allowed),
        ("/groups/x", "cognito", "access", denied(Reason::ClaimMismatch)),
    ] {
        assert_eq!(run(path, idp, label), want, "{path} {idp} {label}");
    }
}

#[test]
fn nested_and_typed_claims_are_forwarded_and_the_provider_named() {
    let mut config = all_providers();
    config["forward"] = json!({"claims": {
        "$subject": "sub", "$roles": "roles", "/realm_access/roles": "realm-roles",
        "/resource_access": "resources", "/email_verified": "email-verified", "/aud": "aud",
        "/allowed-origins/0": "origin", "iat": "issued-at"
    }, "payload": "payload"});
    let policy = compile_value(&config);
    let headers = vec![(
        "authorization".to_string(),
        format!("Bearer {}", token("keycloak", "access")).into_bytes(),
    )];
    let decision = decide(
        &policy,
        &mut Runtime::new(&policy),
        b"GET",
        b"/x",
        &headers,
        now(),
    );
    let Decision::Allow { set, provider, .. } = decision else {
        panic!("{decision:?}")
    };
    let got = |h: &str| set.iter().find(|(k, _)| *k == h).map(|(_, v)| v.clone());
    assert_eq!(got("x-auth-provider").as_deref(), Some("keycloak"));
    assert_eq!(policy.providers[provider.unwrap()].name, "keycloak");
    assert_eq!(
        got("x-auth-realm-roles").as_deref(),
        Some("offline_access,uma_authorization,orders-reader")
    );
    assert_eq!(
        got("x-auth-resources").as_deref(),
        Some(
            r#"{"account":{"roles":["manage-account","view-profile"]},"orders-api":{"roles":["orders-admin"]}}"#
        )
    );
    assert_eq!(got("x-auth-email-verified").as_deref(), Some("true"));
    assert_eq!(got("x-auth-aud").as_deref(), Some("orders-api,account"));
    assert_eq!(got("x-auth-origin").as_deref(), Some("https://app.example.test"));
    assert_eq!(got("x-auth-issued-at"), Some((now() - 10).to_string()));
    let payload = Base64UrlUnpadded::decode_vec(&got("x-auth-payload").unwrap()).unwrap();
    let payload: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(payload, fixture()["providers"]["keycloak"]["claims"]["access"]);
}

#[test]
fn provider_configuration_errors_name_their_field() {
    let kc = || provider("keycloak", json!({}));
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = json!({"providers": {"kc": kc()}});
        f(&mut c);
        c
    };
    let rule = |r: Value| with(&|c| c["rules"] = json!([r.clone()]));
    let cases: Vec<(Value, &str)> = vec![
        (json!({"providers": {}}), "providers"),
        (json!({"providers": {"Bad Name": kc()}}), "providers.Bad Name"),
        (with(&|c| c["issuer"] = json!("x")), "issuer"),
        (
            with(&|c| c["providers"]["kc"]["roles"] = json!("realm_access/roles")),
            "providers.kc.roles",
        ),
        (
            with(&|c| c["providers"]["kc"]["roles"] = json!(["/ok", "/bad~2"])),
            "providers.kc.roles[1]",
        ),
        (
            with(&|c| c["providers"]["kc"]["roles"] = json!([])),
            "providers.kc.roles",
        ),
        (
            with(&|c| {
                c["providers"]["kc"].as_object_mut().unwrap().remove("jwks");
            }),
            "providers.kc.jwks",
        ),
        (with(&|c| c["providers"]["kc2"] = kc()), "providers.kc2.issuer"),
        (
            with(&|c| c["providers"]["kc"]["algorithms"] = json!(["HS256"])),
            "providers.kc.hmac_secret",
        ),
        (
            with(&|c| c["providers"]["kc"]["tokens_without_issuer"] = json!(true)),
            "providers.kc.tokens_without_issuer",
        ),
        (
            json!({"providers": {"seed": {"tokens_without_issuer": true,
                   "jwks": {"inline": fixture()["providers"]["okta"]["jwks"]}}}}),
            "providers.seed.tokens_without_issuer",
        ),
        (
            rule(json!({"prefix": "/a", "require": "authenticated", "providers": ["nope"]})),
            "rules[0].providers[0]",
        ),
        (
            rule(json!({"prefix": "/a", "require": "authenticated", "providers": []})),
            "rules[0].providers",
        ),
        (
            rule(json!({"prefix": "/a", "require": "authenticated", "claims": {"azp": {"equals": "x"}}})),
            "rules[0].claims.azp",
        ),
        (
            rule(json!({"prefix": "/a", "require": "authenticated", "claims": {"/azp": {"is": "x"}}})),
            "rules[0].claims./azp",
        ),
        (
            rule(json!({"prefix": "/a", "require": "authenticated", "claims": {"/azp": {"any_of": []}}})),
            "rules[0].claims./azp.any_of",
        ),
        (
            rule(json!({"prefix": "/a", "require": "public", "providers": ["kc"]})),
            "rules[0]",
        ),
        (
            with(&|c| c["providers"]["kc"]["jwks"] = json!({"discovery": {"cluster": ""}})),
            "providers.kc.jwks.discovery.cluster",
        ),
        (
            with(&|c| {
                c["providers"]["kc"]["issuer"] = json!("kc-realm");
                c["providers"]["kc"]["jwks"] = json!({"discovery": {"cluster": "kc"}});
            }),
            "providers.kc.issuer",
        ),
        (
            with(&|c| {
                c["providers"]["kc"]["jwks"] =
                    json!({"discovery": {"cluster": "kc", "jwks_authorities": ["a/b"]}})
            }),
            "providers.kc.jwks.discovery.jwks_authorities[0]",
        ),
        (
            with(&|c| c["providers"]["kc"]["rsa_keys_without_alg"] = json!("ES256")),
            "providers.kc.rsa_keys_without_alg",
        ),
        (
            rule(json!({"prefix": "/a", "require": "authenticated", "claims": {"/iat": {"equals": 1}}})),
            "rules[0].claims./iat",
        ),
        (with(&|c| c["cookie"] = json!({"name": "a b"})), "cookie.name"),
        (
            with(&|c| c["cookie"] = json!({"name": "s", "allowed_origins": ["https://app.test/"]})),
            "cookie.allowed_origins[0]",
        ),
        (
            with(&|c| c["forward"] = json!({"claims": {"/a~": "a"}})),
            "forward.claims./a~",
        ),
        (
            with(&|c| c["forward"] = json!({"claims": {"$who": "a"}})),
            "forward.claims.$who",
        ),
        (
            with(&|c| c["forward"] = json!({"claims": {"sub": "provider"}})),
            "forward.provider",
        ),
        (
            with(&|c| c["forward"] = json!({"payload": "Bad"})),
            "forward.payload",
        ),
    ];
    for (config, field) in cases {
        match compile(config.to_string().as_bytes(), |_| Some(SECRET.to_string())) {
            Ok(_) => panic!("accepted: {config}"),
            Err(e) => assert_eq!(e.field, field, "{config}: {e}"),
        }
    }
    // The newcomer's Keycloak: issuer, cluster, role pointer.
    let p = compile_value(&json!({"providers": {"keycloak": {
        "issuer": "https://sso.example.test/realms/acme",
        "jwks": {"discovery": {"cluster": "keycloak"}},
        "roles": "/realm_access/roles"}}}));
    let remote = p.providers[0].jwks_remote.as_ref().unwrap();
    assert_eq!(remote.path, "/realms/acme/.well-known/openid-configuration");
    assert_eq!(remote.authority, "sso.example.test");
    // Auth0's issuer ends with a slash: the well-known path has one slash.
    let p = compile_value(&json!({"providers": {"auth0": {
        "issuer": "https://acme.eu.auth0.com/", "jwks": {"discovery": {"cluster": "auth0"}}}}}));
    assert_eq!(
        p.providers[0].jwks_remote.as_ref().unwrap().path,
        "/.well-known/openid-configuration"
    );
}
