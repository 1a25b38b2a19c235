//! The deployment manifests in `deploy/` against Gatehouse's own configuration parser:
//! the filter configuration in the Istio `WasmPlugin` (deploy/istio/wasmplugin.yaml)
//! and in the plain Envoy bootstrap (deploy/envoy/sidecar.yaml) both compile, they are
//! one policy (only the Envoy cluster names differ, as they must), and they agree with
//! the token service's Deployment and Service (deploy/kubernetes/token-service.yaml).
//! `deploy/validate.sh` runs this test beside the schema and Envoy checks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use gatehouse::config::compile;
use gatehouse::policy::Policy;
use serde_json::{json, Value};

const WASM_PLUGIN: &str = "deploy/istio/wasmplugin.yaml";
const SIDECAR: &str = "deploy/envoy/sidecar.yaml";
const TOKEN_SERVICE: &str = "deploy/kubernetes/token-service.yaml";

const WASM_FILTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const STRING_VALUE_TYPE: &str = "type.googleapis.com/google.protobuf.StringValue";
const HCM_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// Every YAML document of a file under the repository root.
fn documents(path: &str) -> Vec<Value> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{path} is not valid YAML: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// The one document of `kind` (and `name`, if given) in a file.
fn resource(path: &str, kind: &str, name: Option<&str>) -> Value {
    let found: Vec<Value> = documents(path)
        .into_iter()
        .filter(|d| d["kind"] == kind && name.is_none_or(|n| d["metadata"]["name"] == n))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{path}: expected one {kind} {name:?}, found {}",
        found.len()
    );
    found.into_iter().next().unwrap()
}

/// `spec.pluginConfig` of the WasmPlugin.
fn istio_config() -> Value {
    let plugin = resource(WASM_PLUGIN, "WasmPlugin", None);
    assert_eq!(plugin["apiVersion"], "extensions.istio.io/v1alpha1");
    let config = plugin["spec"]["pluginConfig"].clone();
    assert!(
        config.is_object(),
        "{WASM_PLUGIN}: spec.pluginConfig must be a mapping"
    );
    config
}

fn sidecar() -> Value {
    let docs = documents(SIDECAR);
    assert_eq!(docs.len(), 1, "{SIDECAR}: one Envoy bootstrap");
    docs.into_iter().next().unwrap()
}

fn array<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what} must be a list, found {v}"))
}

/// The `config` of every Wasm HTTP filter in the bootstrap's listeners.
fn wasm_filters(bootstrap: &Value) -> Vec<Value> {
    let mut found = Vec::new();
    for listener in array(&bootstrap["static_resources"]["listeners"], "listeners") {
        for chain in array(&listener["filter_chains"], "filter_chains") {
            for filter in array(&chain["filters"], "filters") {
                let hcm = &filter["typed_config"];
                if hcm["@type"] != HCM_TYPE {
                    continue;
                }
                for http_filter in array(&hcm["http_filters"], "http_filters") {
                    if http_filter["typed_config"]["@type"] == WASM_FILTER_TYPE {
                        found.push(http_filter["typed_config"]["config"].clone());
                    }
                }
            }
        }
    }
    found
}

/// The Gatehouse filter's `config` in the sidecar bootstrap.
fn sidecar_wasm(bootstrap: &Value) -> Value {
    let filters = wasm_filters(bootstrap);
    assert_eq!(filters.len(), 1, "{SIDECAR}: expected one Wasm HTTP filter");
    filters.into_iter().next().unwrap()
}

/// The filter configuration: the JSON inside the Wasm filter's StringValue.
fn sidecar_config(bootstrap: &Value) -> Value {
    let wasm = sidecar_wasm(bootstrap);
    let configuration = &wasm["configuration"];
    assert_eq!(configuration["@type"], STRING_VALUE_TYPE);
    let text = configuration["value"]
        .as_str()
        .expect("configuration.value is a string");
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{SIDECAR}: the filter configuration is not JSON: {e}"))
}

/// Compiles with the filter's own parser and an empty VM environment: with EdDSA the
/// filter needs no secret from the proxy.
fn compiled(config: &Value, origin: &str) -> Policy {
    let bytes = serde_json::to_vec(config).unwrap();
    match compile(&bytes, |_| None) {
        Ok(policy) => policy,
        Err(e) => panic!("{origin}: Gatehouse refuses the filter configuration: {e}"),
    }
}

fn refusal(config: &Value) -> String {
    let bytes = serde_json::to_vec(config).unwrap();
    match compile(&bytes, |_| None) {
        Ok(_) => panic!("accepted a broken configuration: {config}"),
        Err(e) => e.to_string(),
    }
}

/// The configuration with every Envoy cluster name replaced by a marker, after
/// checking that both references name the same cluster.
fn without_clusters(config: &Value) -> (Value, String) {
    let mut config = config.clone();
    let jwks = config["jwks"]["remote"]["cluster"]
        .as_str()
        .expect("jwks.remote.cluster")
        .to_string();
    let revocation = config["revocation"]["cluster"]
        .as_str()
        .expect("revocation.cluster")
        .to_string();
    assert_eq!(
        jwks, revocation,
        "the JWKS and the revocation feed come from one token service"
    );
    config["jwks"]["remote"]["cluster"] = json!("<cluster>");
    config["revocation"]["cluster"] = json!("<cluster>");
    (config, jwks)
}

/// The token service's Kubernetes Service: (name, namespace, port).
fn token_service() -> (String, String, u64) {
    let service = resource(TOKEN_SERVICE, "Service", Some("gatehouse-token"));
    let name = service["metadata"]["name"].as_str().unwrap().to_string();
    let namespace = service["metadata"]["namespace"]
        .as_str()
        .expect("the Service names its namespace")
        .to_string();
    let ports = array(&service["spec"]["ports"], "spec.ports");
    assert_eq!(ports.len(), 1);
    (name, namespace, ports[0]["port"].as_u64().unwrap())
}

#[test]
fn the_istio_plugin_config_compiles_without_a_secret() {
    let config = istio_config();
    let policy = compiled(&config, WASM_PLUGIN);
    assert!(
        policy.providers[0].token.hs256_key.is_none(),
        "SECRET_KEY must not be needed in the proxy"
    );
    assert!(config.get("hmac_secret").is_none());
    assert_eq!(config["algorithms"], json!(["EdDSA"]));
    assert!(
        policy.providers[0].jwks_remote.is_some(),
        "keys from the token service's JWKS"
    );
    assert!(policy.providers[0].revocation.is_some(), "revocation feed polled");
    assert!(!policy.routes.rules.is_empty());
}

#[test]
fn the_sidecar_config_compiles_and_names_clusters_that_exist() {
    let bootstrap = sidecar();
    let config = sidecar_config(&bootstrap);
    let policy = compiled(&config, SIDECAR);
    assert!(policy.providers[0].token.hs256_key.is_none());

    let wasm = sidecar_wasm(&bootstrap);
    assert_eq!(
        wasm["fail_open"], false,
        "a filter that cannot start must close, not open"
    );
    assert!(
        wasm["vm_config"].get("environment_variables").is_none(),
        "no host environment (so no SECRET_KEY) is passed into the VM"
    );

    let clusters: Vec<&str> = array(&bootstrap["static_resources"]["clusters"], "clusters")
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let remote = policy.providers[0].jwks_remote.as_ref().unwrap();
    let feed = policy.providers[0].revocation.as_ref().unwrap();
    for (what, cluster) in [("jwks.remote", &remote.cluster), ("revocation", &feed.cluster)] {
        assert!(
            clusters.contains(&cluster.as_str()),
            "{what}.cluster {cluster} is not in {clusters:?}"
        );
    }
}

#[test]
fn istio_and_the_sidecar_enforce_the_same_policy() {
    let istio = istio_config();
    let envoy = sidecar_config(&sidecar());

    // As written: equal once the cluster names are set aside.
    let (istio_rest, istio_cluster) = without_clusters(&istio);
    let (envoy_rest, envoy_cluster) = without_clusters(&envoy);
    assert_eq!(
        istio_rest, envoy_rest,
        "the two filter configurations differ beyond their cluster names"
    );
    assert_ne!(istio_cluster, envoy_cluster);

    // As compiled by the filter: the same routes, token checks, forwarded headers,
    // key source and revocation feed.
    let a = compiled(&istio, WASM_PLUGIN);
    let b = compiled(&envoy, SIDECAR);
    assert_eq!(a.routes, b.routes);
    assert_eq!(a.forward, b.forward);
    assert_eq!(a.challenge, b.challenge);
    assert_eq!(a.token_cache_entries, b.token_cache_entries);
    assert_eq!(a.providers[0].token.issuer, b.providers[0].token.issuer);
    assert_eq!(a.providers[0].token.audiences, b.providers[0].token.audiences);
    assert_eq!(a.providers[0].token.asymmetric, b.providers[0].token.asymmetric);
    assert_eq!(
        a.providers[0].token.clock_skew_seconds,
        b.providers[0].token.clock_skew_seconds
    );
    assert_eq!(
        a.providers[0].token.max_lifetime_seconds,
        b.providers[0].token.max_lifetime_seconds
    );
    assert_eq!(a.max_token_bytes, b.max_token_bytes);
    assert_eq!(a.providers[0].token.roles, b.providers[0].token.roles);
    let (mut jwks_a, mut jwks_b) = (
        a.providers[0].jwks_remote.clone().unwrap(),
        b.providers[0].jwks_remote.clone().unwrap(),
    );
    jwks_a.cluster.clear();
    jwks_b.cluster.clear();
    assert_eq!(jwks_a, jwks_b);
    let (mut feed_a, mut feed_b) = (
        a.providers[0].revocation.clone().unwrap(),
        b.providers[0].revocation.clone().unwrap(),
    );
    feed_a.cluster.clear();
    feed_b.cluster.clear();
    assert_eq!(feed_a, feed_b);
}

#[test]
fn both_reach_the_token_service_of_the_kubernetes_manifests() {
    let (name, namespace, port) = token_service();
    let fqdn = format!("{name}.{namespace}.svc.cluster.local");

    // Istio's name for the service's outbound cluster.
    let istio = istio_config();
    assert_eq!(
        istio["jwks"]["remote"]["cluster"],
        format!("outbound|{port}||{fqdn}")
    );
    assert_eq!(istio["jwks"]["remote"]["authority"], fqdn.as_str());
    assert_eq!(istio["revocation"]["authority"], fqdn.as_str());

    // The sidecar's cluster resolves the same service.
    let bootstrap = sidecar();
    let envoy = sidecar_config(&bootstrap);
    let cluster_name = envoy["jwks"]["remote"]["cluster"].as_str().unwrap();
    let cluster = array(&bootstrap["static_resources"]["clusters"], "clusters")
        .iter()
        .find(|c| c["name"] == cluster_name)
        .unwrap();
    let endpoints = array(&cluster["load_assignment"]["endpoints"], "endpoints");
    let address =
        &array(&endpoints[0]["lb_endpoints"], "lb_endpoints")[0]["endpoint"]["address"]["socket_address"];
    assert_eq!(address["address"], fqdn.as_str());
    assert_eq!(address["port_value"].as_u64(), Some(port));

    // And the Deployment listens where the Service sends.
    let deployment = resource(TOKEN_SERVICE, "Deployment", Some("gatehouse-token"));
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let container_port = array(&container["ports"], "ports")[0]["containerPort"].as_u64();
    assert_eq!(container_port, Some(8080));
    assert_eq!(env_value(container, "GATEHOUSE_LISTEN"), "0.0.0.0:8080");
}

fn env_entry<'a>(container: &'a Value, name: &str) -> &'a Value {
    array(&container["env"], "env")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{TOKEN_SERVICE}: no env {name}"))
}

fn env_value(container: &Value, name: &str) -> String {
    env_entry(container, name)["value"]
        .as_str()
        .unwrap_or_else(|| panic!("{TOKEN_SERVICE}: env {name} has no literal value"))
        .to_string()
}

#[test]
fn the_token_service_issues_what_the_filter_accepts() {
    let deployment = resource(TOKEN_SERVICE, "Deployment", Some("gatehouse-token"));
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let config = istio_config();

    assert_eq!(
        config["issuer"],
        env_value(container, "GATEHOUSE_ISSUER").as_str()
    );
    let audience = env_value(container, "GATEHOUSE_AUDIENCE");
    assert!(array(&config["audiences"], "audiences").contains(&json!(audience)));
    let alg = env_value(container, "GATEHOUSE_SIGNING_ALG");
    assert!(array(&config["algorithms"], "algorithms").contains(&json!(alg)));
    let access_ttl: u64 = env_value(container, "GATEHOUSE_ACCESS_TTL").parse().unwrap();
    assert!(access_ttl <= config["max_token_lifetime_seconds"].as_u64().unwrap());

    // Secrets come from a Secret, never from the manifest.
    for name in ["SECRET_KEY", "DATABASE_URL"] {
        let entry = env_entry(container, name);
        assert!(
            entry.get("value").is_none(),
            "{name} must not be written in the manifest"
        );
        assert_eq!(
            entry["valueFrom"]["secretKeyRef"]["name"], "gatehouse-token",
            "{name}"
        );
        assert_eq!(entry["valueFrom"]["secretKeyRef"]["key"], name);
    }
}

/// Istio carries `pluginConfig` as a protobuf Struct, whose numbers are doubles, and
/// hands it to the filter as JSON: only integers a double holds exactly survive as
/// the integers the filter's `u32` fields need.
#[test]
fn the_plugin_config_survives_a_protobuf_struct() {
    fn check(v: &Value, at: &str) {
        match v {
            Value::Number(n) => {
                let ok = n.as_u64().is_some_and(|u| u < (1 << 53));
                assert!(ok, "{at}: {n} is not a non-negative integer below 2^53");
            }
            Value::Array(items) => items
                .iter()
                .enumerate()
                .for_each(|(i, x)| check(x, &format!("{at}[{i}]"))),
            Value::Object(map) => map.iter().for_each(|(k, x)| check(x, &format!("{at}.{k}"))),
            Value::Null => panic!("{at}: null has no place in the filter configuration"),
            Value::Bool(_) | Value::String(_) => {}
        }
    }
    check(&istio_config(), "pluginConfig");
}

/// The checks above would pass vacuously if the parser accepted anything: a broken
/// copy of the same configuration is refused, naming the field.
#[test]
fn a_broken_copy_of_the_plugin_config_is_refused() {
    let config = istio_config();

    let mut typo = config.clone();
    typo["issuers"] = typo["issuer"].take();
    typo.as_object_mut().unwrap().remove("issuer");
    assert!(refusal(&typo).contains("issuers"), "{}", refusal(&typo));

    let mut bad_rule = config.clone();
    bad_rule["rules"][0]["require"] = json!("everyone");
    assert!(
        refusal(&bad_rule).starts_with("rules[0]"),
        "{}",
        refusal(&bad_rule)
    );

    let mut hs256_without_secret = config.clone();
    hs256_without_secret["algorithms"] = json!(["HS256"]);
    hs256_without_secret.as_object_mut().unwrap().remove("jwks");
    hs256_without_secret["hmac_secret"] = json!({"env": "SECRET_KEY"});
    assert!(refusal(&hs256_without_secret).starts_with("hmac_secret.env"));
}
