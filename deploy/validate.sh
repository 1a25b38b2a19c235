#!/usr/bin/env bash
# Checks every manifest in deploy/ without a cluster; run from the repository root:
#   bash deploy/validate.sh
# 1. deploy/kubernetes/*.yaml: kubernetes-validate (pinned in deploy/requirements.txt,
#    installed into target/deploy-venv on first use) in strict mode (unknown fields
#    fail) against the Kubernetes schemas of $K8S_VERSIONS. A kind it has no schema
#    for is only a warning there; here it is a failure.
# 2. deploy/kubernetes/kustomization.yaml and deploy/istio/wasmplugin.yaml, which
#    kubernetes-validate cannot check (not built-in kinds): deploy/check_structure.py.
#    If kubectl is installed, `kubectl kustomize` renders the kustomization too and
#    the result goes through kubernetes-validate again.
# 3. The filter configuration in the WasmPlugin and in deploy/envoy/sidecar.yaml:
#    Gatehouse's own parser, the same policy in both, consistent with the token
#    service's manifests (cargo test --test deploy_manifests).
# 4. deploy/envoy/sidecar.yaml: `envoy --mode validate` with the filter built from
#    this tree (Envoy 1.40: ENVOY_BIN, `envoy` on PATH, or .tools/ from `make envoy`).
#    Envoy loads the Wasm module and runs the filter's on_configure on the config.
# 5. Negative controls: a deliberately broken copy for each checker must fail, so no
#    check can pass by accepting anything.
# Prints one line per file and check; exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSIONS=${K8S_VERSIONS:-"1.30 1.37"}
venv=target/deploy-venv
wasm=target/gatehouse.wasm
# The path sidecar.yaml gives the filter; swapped for the built file to validate.
sidecar_wasm_path=/etc/envoy/gatehouse.wasm

say() { printf 'deploy-check: %s\n' "$*"; }
fail() {
  printf 'deploy-check: FAILED: %s\n' "$*" >&2
  exit 1
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- the pinned validator, installed once (again only when requirements.txt changes)
stamp="$venv/.requirements.sha256"
want=$(sha256sum deploy/requirements.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" ||
    fail "python3 -m venv failed (on Debian's own python3: apt-get install python3-venv)"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing deploy/requirements.txt into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-virtualenv \
    -r deploy/requirements.txt
  echo "$want" >"$stamp"
fi
py="$venv/bin/python"
kv_version=$("$venv/bin/kubernetes-validate" --version)

# kv FILE...: kubernetes-validate --strict for every version; succeeds only when every
# resource passed (no ERROR, and no WARN for a kind without a schema).
kv() {
  local out rc=0 v
  for v in $K8S_VERSIONS; do
    out=$("$venv/bin/kubernetes-validate" --strict -k "$v" "$@" 2>&1) || rc=$?
    if [ "$rc" != 0 ] || grep -qv '^INFO ' <<<"$out"; then
      printf '%s\n' "$out" | grep -v '^INFO ' >&2 || true
      return 1
    fi
    kv_count=$(grep -c '^INFO ' <<<"$out")
  done
}

# --- 1. Kubernetes manifests
for f in deploy/kubernetes/*.yaml; do
  [ "$f" = deploy/kubernetes/kustomization.yaml ] && continue
  kv "$f" || fail "$f: kubernetes-validate"
  say "$f: kubernetes-validate $kv_version --strict, Kubernetes ${K8S_VERSIONS// /, }: $kv_count resources ok"
done

# --- 2. What kubernetes-validate cannot check
"$py" deploy/check_structure.py kustomization deploy/kubernetes || fail "deploy/kubernetes/kustomization.yaml"
say "deploy/kubernetes/kustomization.yaml: deploy/check_structure.py (fields, every manifest listed, images, secret keys): ok"
if command -v kubectl >/dev/null 2>&1; then
  kubectl kustomize deploy/kubernetes >"$tmp/rendered.yaml" || fail "kubectl kustomize deploy/kubernetes"
  kv "$tmp/rendered.yaml" || fail "kubectl kustomize deploy/kubernetes: the rendered resources"
  say "deploy/kubernetes/kustomization.yaml: kubectl kustomize, then kubernetes-validate --strict: $kv_count resources ok"
else
  say "deploy/kubernetes/kustomization.yaml: kubectl kustomize skipped (no kubectl here)"
fi
"$py" deploy/check_structure.py wasmplugin deploy/istio/wasmplugin.yaml || fail "deploy/istio/wasmplugin.yaml"
say "deploy/istio/wasmplugin.yaml: deploy/check_structure.py (WasmPlugin v1alpha1 fields, types, enums; AUTHN, FAIL_CLOSE, inbound): ok"

# --- 3. The filter configuration, through Gatehouse's parser
if ! out=$(cargo test --quiet --test deploy_manifests 2>&1); then
  printf '%s\n' "$out" >&2
  fail "cargo test --test deploy_manifests"
fi
summary=$(grep -E '^test result:' <<<"$out" | tail -1)
say "deploy/istio/wasmplugin.yaml + deploy/envoy/sidecar.yaml: pluginConfig / filter JSON through gatehouse::config::compile, one policy (cargo test --test deploy_manifests): ${summary#test result: }"

# --- 4. Envoy
envoy=${ENVOY_BIN:-$(command -v envoy 2>/dev/null || echo .tools/envoy/envoy/_bin/envoy)}
[ -x "$envoy" ] || fail "no Envoy at '$envoy': run \`make envoy\` or set ENVOY_BIN"
envoy_version=$("$envoy" --version | grep -o '/[0-9][0-9.]*/' | tr -d / || true)
if ! out=$(make --no-print-directory wasm 2>&1); then
  printf '%s\n' "$out" >&2
  fail "building $wasm (needs the wasm32-wasip1 target: \`make wasm-target\`)"
fi
# with_wasm IN OUT: IN with the filter path swapped for the built file (the one line).
with_wasm() {
  local n
  n=$(grep -c "filename: $sidecar_wasm_path}" "$1" || true)
  [ "$n" = 1 ] || fail "$1: expected one 'filename: $sidecar_wasm_path' line, found $n"
  sed "s|filename: $sidecar_wasm_path}|filename: $PWD/$wasm}|" "$1" >"$2"
}
with_wasm deploy/envoy/sidecar.yaml "$tmp/sidecar.yaml"
if ! out=$("$envoy" --mode validate -c "$tmp/sidecar.yaml" --log-level error 2>&1); then
  printf '%s\n' "$out" >&2
  fail "deploy/envoy/sidecar.yaml: envoy --mode validate"
fi
say "deploy/envoy/sidecar.yaml: envoy $envoy_version --mode validate with $wasm: ok"

# --- 5. Negative controls: each checker must refuse a broken copy.
# edit_yaml IN OUT PYTHON: OUT is IN with the Python statement applied to `docs`.
edit_yaml() {
  "$py" - "$1" "$2" "$3" <<'EOF'
import sys, yaml
src, dst, stmt = sys.argv[1:]
docs = [d for d in yaml.safe_load_all(open(src)) if d is not None]
exec(stmt)
yaml.safe_dump_all(docs, open(dst, "w"), sort_keys=False)
EOF
}
# must_fail WHAT PATTERN COMMAND...: COMMAND must exit non-zero, saying PATTERN (so it
# failed for the planted reason, not another).
must_fail() {
  local what=$1 pattern=$2
  shift 2
  if "$@" >"$tmp/negative.log" 2>&1; then
    fail "negative control: $what was ACCEPTED"
  fi
  grep -q -- "$pattern" "$tmp/negative.log" ||
    fail "negative control: $what failed, but not for the planted reason: $(tail -3 "$tmp/negative.log")"
}
deployment='next(d for d in docs if d["kind"] == "Deployment")'
edit_yaml deploy/kubernetes/token-service.yaml "$tmp/unknown-field.yaml" \
  "$deployment[\"spec\"][\"template\"][\"spec\"][\"containers\"][0][\"securityContext\"][\"readOnlyRootFileSystem\"] = True"
must_fail "a Deployment with securityContext.readOnlyRootFileSystem (typo)" \
  "'readOnlyRootFileSystem' was unexpected" kv "$tmp/unknown-field.yaml"
edit_yaml deploy/kubernetes/token-service.yaml "$tmp/unknown-kind.yaml" "$deployment[\"apiVersion\"] = \"apps/v2\""
must_fail "a Deployment of apiVersion apps/v2 (no schema: only a warning in kubernetes-validate)" \
  "Couldn't find schema for kind Deployment" kv "$tmp/unknown-kind.yaml"
edit_yaml deploy/istio/wasmplugin.yaml "$tmp/wasmplugin.yaml" 'docs[0]["spec"]["failStrategy"] = "FAIL_OPEN"'
must_fail "a WasmPlugin with failStrategy FAIL_OPEN" ".spec.failStrategy" \
  "$py" deploy/check_structure.py wasmplugin "$tmp/wasmplugin.yaml"
edit_yaml deploy/istio/wasmplugin.yaml "$tmp/wasmplugin.yaml" 'docs[0]["spec"]["pluginConfg"] = docs[0]["spec"].pop("pluginConfig")'
must_fail "a WasmPlugin with pluginConfg (typo)" ".spec.pluginConfg: unknown field" \
  "$py" deploy/check_structure.py wasmplugin "$tmp/wasmplugin.yaml"
n=$(grep -c '"no_match": "authenticated"' "$tmp/sidecar.yaml" || true)
[ "$n" = 1 ] || fail "deploy/envoy/sidecar.yaml: expected one '\"no_match\": \"authenticated\"' line, found $n"
sed 's|"no_match": "authenticated"|"no_match": "everyone"|' "$tmp/sidecar.yaml" >"$tmp/sidecar-broken.yaml"
must_fail "sidecar.yaml with a filter configuration Gatehouse refuses" "invalid configuration: no_match" \
  "$envoy" --mode validate -c "$tmp/sidecar-broken.yaml" --log-level error
say "negative controls: kubernetes-validate refused an unknown field and an unknown apiVersion," \
  "check_structure.py a FAIL_OPEN and a misspelt WasmPlugin, Envoy (the filter) a bad no_match;" \
  "tests/deploy_manifests.rs refuses broken pluginConfig copies itself: ok"
