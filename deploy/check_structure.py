#!/usr/bin/env python3
"""Structure checks for what kubernetes-validate cannot check (deploy/validate.sh).

kubernetes-validate only knows the built-in Kubernetes kinds: for anything else (an
Istio WasmPlugin, a Kustomization) it prints a warning and exits 0. So:

  check_structure.py wasmplugin FILE      the Istio WasmPlugin: apiVersion/kind, the
                                          known spec fields and their types and enum
                                          values (Istio's extensions.istio.io/v1alpha1
                                          API), and what Gatehouse needs of it
                                          (AUTHN, FAIL_CLOSE, inbound only, HTTP).
  check_structure.py kustomization DIR    DIR/kustomization.yaml: its fields, that it
                                          lists every manifest of DIR but the example
                                          Secrets, that its images exist, and that
                                          secrets.example.yaml provides every
                                          secretKeyRef the manifests read.

The filter configuration inside the WasmPlugin (pluginConfig) is checked by
Gatehouse's own parser in tests/deploy_manifests.rs, not here.
Silent on success; otherwise prints every problem found and exits 1.
"""

import os
import re
import sys

import yaml

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")

WASM_SPEC_FIELDS = {
    "selector": dict,
    "targetRef": dict,
    "targetRefs": list,
    "url": str,
    "sha256": str,
    "imagePullPolicy": str,
    "imagePullSecret": str,
    "pluginConfig": dict,
    "pluginName": str,
    "phase": str,
    "priority": int,
    "failStrategy": str,
    "vmConfig": dict,
    "match": list,
    "type": str,
}
WASM_ENUMS = {
    "imagePullPolicy": {"UNSPECIFIED_POLICY", "IfNotPresent", "Always"},
    "phase": {"UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"},
    "failStrategy": {"FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"},
    "type": {"UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK"},
}
MATCH_MODES = {"UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER"}
ENV_VALUE_FROM = {"INLINE", "HOST"}
URL_SCHEMES = ("oci://", "https://", "http://", "file://")

KUSTOMIZATION_FIELDS = {
    "apiVersion": str,
    "kind": str,
    "resources": list,
    "images": list,
    "namespace": str,
    "labels": list,
}
KUSTOMIZATION_IMAGE_FIELDS = {"name": str, "newName": str, "newTag": str, "digest": str}
EXAMPLE_SECRETS = "secrets.example.yaml"


def load(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def type_name(t):
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer"}[t]


def check_fields(obj, fields, where, problems):
    """Unknown fields and wrong types; bool is not accepted where an int is wanted."""
    if not isinstance(obj, dict):
        problems.append(f"{where}: must be a mapping")
        return False
    for key, value in obj.items():
        if key not in fields:
            problems.append(f"{where}.{key}: unknown field (known: {', '.join(sorted(fields))})")
        elif not isinstance(value, fields[key]) or (fields[key] is int and isinstance(value, bool)):
            problems.append(f"{where}.{key}: must be {type_name(fields[key])}")
    return True


def check_wasmplugin(path):
    problems = []
    docs = load(path)
    if len(docs) != 1:
        return [f"{path}: expected one document, found {len(docs)}"]
    doc = docs[0]
    check_fields(doc, {"apiVersion": str, "kind": str, "metadata": dict, "spec": dict}, "", problems)
    if doc.get("apiVersion") != "extensions.istio.io/v1alpha1":
        problems.append(".apiVersion: must be extensions.istio.io/v1alpha1")
    if doc.get("kind") != "WasmPlugin":
        problems.append(".kind: must be WasmPlugin")

    meta = doc.get("metadata") or {}
    if not isinstance(meta.get("name"), str) or not DNS_SUBDOMAIN.match(meta["name"]):
        problems.append(".metadata.name: required, a DNS subdomain name")
    if not isinstance(meta.get("namespace"), str) or not DNS_LABEL.match(meta["namespace"]):
        problems.append(".metadata.namespace: required (the API workload's namespace), a DNS label")
    for key in ("labels", "annotations"):
        value = meta.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            problems.append(f".metadata.{key}: must map names to strings")

    spec = doc.get("spec")
    if not check_fields(spec, WASM_SPEC_FIELDS, ".spec", problems):
        return problems
    for key, allowed in WASM_ENUMS.items():
        if key in spec and spec[key] not in allowed:
            problems.append(f".spec.{key}: {spec[key]!r} is not one of {sorted(allowed)}")

    url = spec.get("url")
    if not isinstance(url, str) or not url.startswith(URL_SCHEMES):
        problems.append(f".spec.url: required, starting with one of {URL_SCHEMES}")
    if "sha256" in spec and not SHA256.match(str(spec["sha256"])):
        problems.append(".spec.sha256: must be 64 lower-case hex digits")
    if not spec.get("pluginConfig"):
        problems.append(".spec.pluginConfig: required: the Gatehouse filter configuration")
    if ("selector" in spec) + ("targetRef" in spec) + ("targetRefs" in spec) != 1:
        problems.append(".spec: exactly one of selector, targetRef, targetRefs picks the workload")
    selector = spec.get("selector")
    if selector is not None:
        check_fields(selector, {"matchLabels": dict}, ".spec.selector", problems)
        labels = selector.get("matchLabels") if isinstance(selector, dict) else None
        if not labels or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            problems.append(".spec.selector.matchLabels: at least one label, strings to strings")

    for i, m in enumerate(spec.get("match", [])):
        where = f".spec.match[{i}]"
        if not check_fields(m, {"mode": str, "ports": list}, where, problems):
            continue
        if "mode" in m and m["mode"] not in MATCH_MODES:
            problems.append(f"{where}.mode: {m['mode']!r} is not one of {sorted(MATCH_MODES)}")
        for j, port in enumerate(m.get("ports", [])):
            check_fields(port, {"number": int}, f"{where}.ports[{j}]", problems)
            number = port.get("number") if isinstance(port, dict) else None
            if not isinstance(number, int) or not 1 <= number <= 65535:
                problems.append(f"{where}.ports[{j}].number: a port, 1 to 65535")

    vm = spec.get("vmConfig")
    if vm is not None:
        check_fields(vm, {"env": list}, ".spec.vmConfig", problems)
        for i, env in enumerate(vm.get("env", []) if isinstance(vm, dict) else []):
            where = f".spec.vmConfig.env[{i}]"
            check_fields(env, {"name": str, "value": str, "valueFrom": str}, where, problems)
            if isinstance(env, dict) and env.get("valueFrom", "INLINE") not in ENV_VALUE_FROM:
                problems.append(f"{where}.valueFrom: one of {sorted(ENV_VALUE_FROM)}")
            if isinstance(env, dict) and env.get("name") == "SECRET_KEY":
                problems.append(f"{where}: SECRET_KEY must not reach the proxy (the filter uses EdDSA)")

    # What Gatehouse needs of its WasmPlugin.
    if spec.get("phase") != "AUTHN":
        problems.append(".spec.phase: Gatehouse authenticates: AUTHN")
    if spec.get("failStrategy") != "FAIL_CLOSE":
        problems.append(".spec.failStrategy: FAIL_CLOSE, or a plugin that fails to load lets requests through")
    if spec.get("type") != "HTTP":
        problems.append(".spec.type: HTTP (an HTTP filter)")
    modes = [m.get("mode") for m in spec.get("match", []) if isinstance(m, dict)]
    if modes != ["SERVER"]:
        problems.append(".spec.match: exactly [{mode: SERVER}]: inbound requests only, not the API's own outbound calls")
    return [f"{path}: {p}" for p in problems]


def containers(doc):
    spec = (doc.get("spec") or {}).get("template", {}).get("spec", {})
    return spec.get("initContainers", []) + spec.get("containers", [])


def check_kustomization(directory):
    path = os.path.join(directory, "kustomization.yaml")
    problems = []
    docs = load(path)
    if len(docs) != 1:
        return [f"{path}: expected one document, found {len(docs)}"]
    doc = docs[0]
    check_fields(doc, KUSTOMIZATION_FIELDS, "", problems)
    if doc.get("apiVersion") != "kustomize.config.k8s.io/v1beta1":
        problems.append(".apiVersion: must be kustomize.config.k8s.io/v1beta1")
    if doc.get("kind") != "Kustomization":
        problems.append(".kind: must be Kustomization")

    resources = doc.get("resources") or []
    if len(set(resources)) != len(resources):
        problems.append(".resources: lists a file twice")
    for r in resources:
        if not isinstance(r, str) or not os.path.isfile(os.path.join(directory, r)):
            problems.append(f".resources: {r!r} is not a file in {directory}")
    manifests = sorted(f for f in os.listdir(directory) if f.endswith((".yaml", ".yml")))
    for f in manifests:
        if f not in ("kustomization.yaml", EXAMPLE_SECRETS) and f not in resources:
            problems.append(f".resources: {f} is not listed, so `kubectl apply -k` would leave it out")
    if EXAMPLE_SECRETS in resources:
        problems.append(f".resources: {EXAMPLE_SECRETS} holds placeholders and must not be applied")

    applied = []
    for r in resources:
        if isinstance(r, str) and os.path.isfile(os.path.join(directory, r)):
            applied += load(os.path.join(directory, r))
    images = {c.get("image", "").rsplit(":", 1)[0] for d in applied for c in containers(d)}
    for i, image in enumerate(doc.get("images") or []):
        check_fields(image, KUSTOMIZATION_IMAGE_FIELDS, f".images[{i}]", problems)
        if isinstance(image, dict) and image.get("name") not in images:
            problems.append(f".images[{i}].name: {image.get('name')!r} is no container's image")

    # Every secretKeyRef of the applied manifests has its key in the example Secrets.
    provided = set()
    for secret in load(os.path.join(directory, EXAMPLE_SECRETS)):
        if secret.get("kind") == "Secret":
            data = {**(secret.get("data") or {}), **(secret.get("stringData") or {})}
            provided |= {(secret["metadata"]["name"], key) for key in data}
    for d in applied:
        for c in containers(d):
            for env in c.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref and (ref.get("name"), ref.get("key")) not in provided:
                    problems.append(
                        f"{d['kind']}/{d['metadata']['name']} reads secret {ref.get('name')} key "
                        f"{ref.get('key')}, which {EXAMPLE_SECRETS} does not show"
                    )
    return [f"{path}: {p}" for p in problems]


def main(argv):
    if len(argv) != 3 or argv[1] not in ("wasmplugin", "kustomization"):
        print(__doc__, file=sys.stderr)
        return 2
    what, target = argv[1], argv[2]
    try:
        problems = check_wasmplugin(target) if what == "wasmplugin" else check_kustomization(target)
    except (OSError, yaml.YAMLError, KeyError, AttributeError, TypeError) as e:
        problems = [f"{target}: cannot be checked: {e!r}"]
    for p in problems:
        print(f"ERROR {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
