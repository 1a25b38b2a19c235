#!/usr/bin/env bash
# `make demo`: the demo topology without Docker. Envoy (the top-level envoy.yaml, with
# only its addresses rewritten for localhost) on :10000 and :9901, the token service
# on :8080, a second issuer (`partner`, another token service signing with Ed25519) on
# :8081, the demo API on :8000; all bound to 127.0.0.1. State lives in .demo/ (the
# partner's is new each run: it stands in for an IdP run by someone else).
# DEMO_KEYS=eddsa (`make demo DEMO_KEYS=eddsa`) signs with an Ed25519 key that only the
# token service holds; the filter fetches the public key from its JWKS.
# Ctrl-C or SIGTERM stops every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${ENVOY_BIN:?ENVOY_BIN must point at Envoy 1.40 (make demo sets it)}"
state=.demo
mkdir -p "$state/logs"

for port in 10000 9901 8080 8081 8000; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: port $port is already in use on 127.0.0.1; stop whatever listens there and retry" >&2
    exit 1
  fi
done

keys=${DEMO_KEYS:-hs256}
case $keys in
  hs256) signing_alg=HS256 ;;
  eddsa) signing_alg=EdDSA ;;
  *) echo "demo: DEMO_KEYS must be hs256 or eddsa, not '$keys'" >&2; exit 2 ;;
esac

if [ -z "${SECRET_KEY:-}" ]; then
  SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
  echo "demo: SECRET_KEY not set; generated one for this session"
fi
export SECRET_KEY

echo "demo: building the token service and the demo API (release)"
cargo build --quiet --release -p gatehouse-token -p demo-api
token_bin=target/release/gatehouse-token
api_bin=target/release/demo-api
db="$state/users.db"
demo/seed-users.sh "$token_bin" "$db"
partner_db="$state/partner.db"
rm -f "$partner_db" "$partner_db"-*
demo/seed-users.sh "$token_bin" "$partner_db" partner
# The partner seals its signing key with a secret of its own.
partner_secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')

# The file users deploy is the file that runs: only the addresses (and, with
# DEMO_KEYS=eddsa, the filter's key source) change.
demo/envoy-config.sh --local --keys "$keys" <envoy.yaml >"$state/envoy.yaml"

pids=()
cleanup() {
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  echo "demo: stopped"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$api_bin" --listen 127.0.0.1:8000 >"$state/logs/api.log" 2>&1 &
pids+=($!)
"$token_bin" --db "$db" serve --listen 127.0.0.1:8080 --issuer gatehouse --audience api \
  --trust-forwarded-for --signing-alg "$signing_alg" --public-url http://127.0.0.1:10000 \
  >"$state/logs/token.log" 2>&1 &
pids+=($!)
SECRET_KEY=$partner_secret "$token_bin" --db "$partner_db" serve --listen 127.0.0.1:8081 \
  --issuer https://partner.example --public-url https://partner.example --audience api \
  --signing-alg EdDSA >"$state/logs/partner.log" 2>&1 &
pids+=($!)
"$ENVOY_BIN" -c "$state/envoy.yaml" --concurrency 2 --disable-hot-restart \
  --log-level warn --component-log-level wasm:info >"$state/logs/envoy.log" 2>&1 &
pids+=($!)

ready() {
  curl -sf -o /dev/null http://127.0.0.1:8000/healthz &&
    curl -sf -o /dev/null http://127.0.0.1:8080/readyz &&
    curl -sf -o /dev/null http://127.0.0.1:8081/readyz &&
    curl -sf -o /dev/null http://127.0.0.1:9901/ready &&
    curl -sf -o /dev/null http://127.0.0.1:10000/healthz &&
    revocations_loaded &&
    keys_loaded partner &&
    { [ "$keys" = hs256 ] || keys_loaded gatehouse; }
}
# Until its first good poll of the revocation feed the filter answers tokens with 503.
revocations_loaded() {
  curl -sf "http://127.0.0.1:9901/stats?filter=gatehouse.revocation.poll_ok" | grep -q ': [1-9]'
}
# keys_loaded PROVIDER: Envoy's filter has fetched that provider's JWKS (the partner's
# always, by discovery; the token service's with DEMO_KEYS=eddsa).
keys_loaded() {
  curl -sf "http://127.0.0.1:9901/stats?filter=gatehouse.provider.$1.jwks.fetch_ok" | grep -q ': [1-9]'
}
for _ in $(seq 1 120); do
  ready && break
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "demo: a process exited during start-up; its log is in $state/logs/:" >&2
      tail -n 5 "$state"/logs/*.log >&2
      exit 1
    fi
  done
  sleep 0.5
done
if ! ready; then
  echo "demo: not ready after 60 s; logs in $state/logs/" >&2
  exit 1
fi

echo "demo: ready. Envoy on http://127.0.0.1:10000 (admin :9901), token service :8080, partner issuer :8081, API :8000"
echo "demo: tokens signed with $signing_alg ($([ "$keys" = eddsa ] && echo "private key in the token service; Envoy fetches the public JWKS" || echo "SECRET_KEY, shared with Envoy"))"
echo "demo: users alice/alice-demo-pass (admin, user), bob/bob-demo-pass (user), carol/carol-demo-pass (disabled); at the partner, dave/dave-demo-pass (admin, user)"
if [ "${DEMO_WALKTHROUGH:-1}" = 1 ]; then
  demo/walkthrough.sh || echo "demo: the walk-through found a problem (see above)" >&2
fi
echo
echo "demo: running; Ctrl-C to stop"
# Returns when any process exits (then the trap stops the rest) or on a signal.
wait -n "${pids[@]}"
echo "demo: a process exited; logs in $state/logs/" >&2
exit 1
