//! Asymmetric signing: tokens the filter verifies from the published JWKS alone, and
//! key rotation that keeps old tokens valid until they expire.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::rc::Rc;

use gatehouse::decision::{decide, Decision, Outcome, Reason, Runtime};
use gatehouse::keys::parse_jwks;
use gatehouse_token::clock::unix_now;
use gatehouse_token::signing::{generate, SigningAlg};
use serde_json::json;
use support::{json, Options, TestApp, ISSUER, SECRET};

async fn login(app: &TestApp) -> String {
    let r = json(app.login("alice", "alice-demo-pass").await).await;
    r["access_token"].as_str().unwrap().to_string()
}

/// The `kid`s a JWKS publishes.
fn kids_of(jwks: &serde_json::Value) -> Vec<&str> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect()
}

fn kid_of(token: &str) -> String {
    jwt_compact::UntrustedToken::new(token)
        .unwrap()
        .header()
        .key_id
        .clone()
        .unwrap()
}

/// The filter with only the published keys (no secret): what does it decide?
fn filter_outcome(jwks: &serde_json::Value, token: &str, algs: &[&str]) -> Outcome {
    let config = json!({"issuer": ISSUER, "audiences": ["api"], "algorithms": algs, "jwks": {"inline": jwks},
                        "max_token_lifetime_seconds": 1800});
    let policy = gatehouse::config::compile(config.to_string().as_bytes(), |_| None).unwrap();
    let keys = parse_jwks(jwks.to_string().as_bytes(), &policy.providers[0].token.asymmetric)
        .unwrap()
        .keys;
    let headers = vec![(
        "authorization".to_string(),
        format!("Bearer {token}").into_bytes(),
    )];
    let mut runtime = Runtime::new(&policy);
    runtime.set_keys(0, Rc::new(keys));
    match decide(&policy, &mut runtime, b"GET", b"/users/me", &headers, unix_now()) {
        Decision::Allow { outcome, .. } => outcome,
        Decision::Deny(d, _) => Outcome::Denied(d.reason),
    }
}

#[tokio::test]
async fn eddsa_and_es256_tokens_verify_from_the_jwks_alone() {
    for alg in [SigningAlg::EdDsa, SigningAlg::Es256] {
        let app = TestApp::spawn(Options {
            signing_alg: alg,
            ..Options::default()
        })
        .await;
        app.add_user("alice", "alice-demo-pass", &["admin"], false).await;
        let token = login(&app).await;
        let header = jwt_compact::UntrustedToken::new(&token).unwrap();
        assert_eq!(header.algorithm(), alg.name());

        let r = app
            .client
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["cache-control"], "public, max-age=60");
        let jwks = json(r).await;
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0]["kid"], kid_of(&token).as_str());
        assert_eq!(keys[0]["alg"], alg.name());
        assert_eq!(keys[0]["use"], "sig");
        assert!(keys[0].get("d").is_none(), "a private part was published");
        assert_eq!(
            filter_outcome(&jwks, &token, &[alg.name()]),
            Outcome::Allowed,
            "{alg:?}"
        );
        // HMAC is not accepted against these keys, whatever secret a forger picks.
        assert_eq!(
            filter_outcome(&jwks, &token, &["EdDSA", "ES256"]),
            Outcome::Allowed
        );

        let discovery = app.get_json("/.well-known/openid-configuration").await;
        assert_eq!(discovery["issuer"], ISSUER);
        assert_eq!(
            discovery["jwks_uri"],
            "http://gatehouse.test/.well-known/jwks.json"
        );
        assert_eq!(discovery["token_endpoint"], "http://gatehouse.test/token");
        assert_eq!(
            discovery["id_token_signing_alg_values_supported"],
            json!([alg.name()])
        );
    }
}

#[tokio::test]
async fn rotation_keeps_old_tokens_valid_and_publishes_both_keys() {
    let app = TestApp::spawn(Options {
        signing_alg: SigningAlg::EdDsa,
        ..Options::default()
    })
    .await;
    app.add_user("alice", "alice-demo-pass", &["admin"], false).await;
    let old = login(&app).await;

    let secret = gatehouse_token::secret::parse(Some(SECRET)).unwrap();
    let next = generate(SigningAlg::EdDsa, &secret).unwrap();
    app.store.rotate_signing_key(&next, unix_now()).await.unwrap();
    app.state.issuer.load(&app.store, unix_now()).await.unwrap();
    let new = login(&app).await;
    assert_ne!(kid_of(&old), kid_of(&new));
    assert_eq!(kid_of(&new), next.kid);

    let jwks = app.get_json("/.well-known/jwks.json").await;
    let kids = kids_of(&jwks);
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert!(kids.contains(&kid_of(&old).as_str()) && kids.contains(&next.kid.as_str()));
    assert_eq!(
        filter_outcome(&jwks, &old, &["EdDSA"]),
        Outcome::Allowed,
        "old token until it expires"
    );
    assert_eq!(filter_outcome(&jwks, &new, &["EdDSA"]), Outcome::Allowed);

    // Once the old key's tokens can no longer be alive, it is no longer published.
    let later = unix_now() + app.state.issuer.publish_window() + 1;
    app.state.issuer.load(&app.store, later).await.unwrap();
    let jwks = app.get_json("/.well-known/jwks.json").await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(
        filter_outcome(&jwks, &old, &["EdDSA"]),
        Outcome::Denied(Reason::UnknownKey)
    );
}

#[tokio::test]
async fn a_rotated_key_is_published_before_it_signs() {
    let app = TestApp::spawn(Options {
        signing_alg: SigningAlg::EdDsa,
        ..Options::default()
    })
    .await;
    app.add_user("alice", "alice-demo-pass", &["admin"], false).await;
    let old = login(&app).await;
    let secret = gatehouse_token::secret::parse(Some(SECRET)).unwrap();
    let next = generate(SigningAlg::EdDsa, &secret).unwrap();
    let now = unix_now();
    app.store
        .rotate_signing_key_at(&next, now, now + 120)
        .await
        .unwrap();

    // Published at once, not used yet.
    app.state.issuer.load(&app.store, now).await.unwrap();
    let cached = app.get_json("/.well-known/jwks.json").await;
    assert_eq!(cached["keys"].as_array().unwrap().len(), 2, "{cached}");
    assert_eq!(
        kid_of(&login(&app).await),
        kid_of(&old),
        "the old key still signs"
    );

    // Once it activates, tokens are signed with it, and a verifier still holding the
    // JWKS it fetched before the switch accepts them: no refetch needed.
    app.state.issuer.load(&app.store, now + 120).await.unwrap();
    let new = app
        .state
        .issuer
        .access_token("alice", &["admin".to_string()], now)
        .unwrap();
    assert_eq!(kid_of(&new), next.kid);
    assert_eq!(filter_outcome(&cached, &new, &["EdDSA"]), Outcome::Allowed);
    assert_eq!(filter_outcome(&cached, &old, &["EdDSA"]), Outcome::Allowed);
    // The old key stays published while its tokens live, counted from its retirement.
    app.state.issuer.load(&app.store, now + 121).await.unwrap();
    let jwks = app.get_json("/.well-known/jwks.json").await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "{jwks}");
}

/// Replicas reload their keys every second; a replica that has not reloaded since
/// another one (or the CLI) made a key current must still publish it, or a verifier
/// refetching the JWKS for a token's unknown `kid` may land on it and refuse the token
/// (a clean-clone CI run under load: `replicas_through_envoy` got 401 for a token
/// signed with the new key). This app stands for the replica that has not reloaded.
#[tokio::test]
async fn a_key_made_current_elsewhere_is_published_before_this_replica_reloads() {
    let app = TestApp::spawn(Options {
        signing_alg: SigningAlg::EdDsa,
        ..Options::default()
    })
    .await;
    let before = app.get_json("/.well-known/jwks.json").await;
    assert_eq!(before["keys"].as_array().unwrap().len(), 1, "{before}");
    let secret = gatehouse_token::secret::parse(Some(SECRET)).unwrap();
    let next = generate(SigningAlg::EdDsa, &secret).unwrap();
    app.store.rotate_signing_key(&next, unix_now()).await.unwrap();
    // No issuer.load here: the reloader of this replica has not run yet. The JWKS copy
    // is older than a read may be (JWKS_READ_EVERY), so the next request reads the store.
    tokio::time::sleep(gatehouse_token::issue::JWKS_READ_EVERY).await;
    let jwks = app.get_json("/.well-known/jwks.json").await;
    let kids = kids_of(&jwks);
    assert!(kids.contains(&next.kid.as_str()), "{jwks}");
    assert_eq!(kids.len(), 2, "the old key's tokens are still alive: {jwks}");
    let signed_elsewhere = {
        let other = gatehouse_token::issue::Issuer::new(&secret, ISSUER.into(), "api".into(), 1800)
            .with_alg(SigningAlg::EdDsa);
        other.load(&app.store, unix_now()).await.unwrap();
        other
            .access_token("alice", &["admin".to_string()], unix_now())
            .unwrap()
    };
    assert_eq!(kid_of(&signed_elsewhere), next.kid);
    assert_eq!(
        filter_outcome(&jwks, &signed_elsewhere, &["EdDSA"]),
        Outcome::Allowed
    );
}

#[tokio::test]
async fn hs256_mode_publishes_no_key() {
    let app = TestApp::spawn(Options::default()).await;
    let jwks = app.get_json("/.well-known/jwks.json").await;
    assert_eq!(jwks, json!({"keys": []}));
}
