#!/usr/bin/env bash
# The demo's checks, part of `make test`:
# 1. envoy.yaml validates in Envoy 1.40 with the built filter (`--mode validate`);
# 2. docker-compose.yml validates with `docker-compose config`, and refuses to start
#    without SECRET_KEY (Docker itself cannot run here: nothing is built or started);
# 3. `make demo` starts on a fresh state folder, the walk-through passes against it,
#    and stopping it leaves no process and no open port behind; with the shared
#    secret (HS256) and again with DEMO_KEYS=eddsa.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${ENVOY_BIN:?}"
export SECRET_KEY=${SECRET_KEY:-$(python3 -c 'import secrets; print(secrets.token_hex(32))')}

echo "demo-check: envoy --mode validate -c envoy.yaml"
"$ENVOY_BIN" --mode validate -c envoy.yaml --log-level error
echo "demo-check: envoy --mode validate, envoy.yaml with DEMO_KEYS=eddsa's key source"
eddsa_yaml=$(mktemp --suffix .yaml)
demo/envoy-config.sh --keys eddsa <envoy.yaml >"$eddsa_yaml"
grep -q '"jwks": {"remote"' "$eddsa_yaml" && ! grep -q 'hmac_secret\|host_env_keys: \["SECRET_KEY"' "$eddsa_yaml" ||
  { echo "demo-check: the eddsa switch did not replace the key source" >&2; exit 1; }
"$ENVOY_BIN" --mode validate -c "$eddsa_yaml" --log-level error
rm -f "$eddsa_yaml"

compose=""
if command -v docker-compose >/dev/null 2>&1; then
  compose="docker-compose"
elif docker compose version >/dev/null 2>&1; then
  compose="docker compose"
fi
if [ -n "$compose" ]; then
  echo "demo-check: $compose config"
  $compose config --quiet
  DEMO_KEYS=eddsa $compose config --quiet
  if env -u SECRET_KEY $compose config --quiet 2>/tmp/compose-no-secret.$$; then
    echo "demo-check: docker-compose.yml accepted a missing SECRET_KEY" >&2
    exit 1
  fi
  grep -q "set SECRET_KEY" /tmp/compose-no-secret.$$ || { cat /tmp/compose-no-secret.$$ >&2; exit 1; }
  rm -f /tmp/compose-no-secret.$$
elif [ "${CI:-}" = true ]; then
  echo "demo-check: docker-compose is missing (CI installs Debian's docker-compose)" >&2
  exit 1
else
  echo "demo-check: WARNING: docker-compose.yml NOT checked: install Debian's docker-compose" >&2
fi

echo "demo-check: building the demo's binaries (release)"
cargo build --quiet --release -p gatehouse-token -p demo-api

echo "demo-check: a port in use is a clear error naming it"
# SO_REUSEADDR, as the servers have it: a demo that just stopped leaves 8080 in TIME-WAIT.
python3 -c 'import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1",8080)); s.listen(); time.sleep(60)' &
holder=$!
for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break
  sleep 0.1
done
if out=$(DEMO_WALKTHROUGH=0 timeout 60 demo/run.sh 2>&1); then
  kill "$holder"
  echo "demo-check: the demo started although port 8080 was taken" >&2
  exit 1
fi
kill "$holder"
wait "$holder" 2>/dev/null || true
grep -q "port 8080 is already in use" <<<"$out" || { echo "$out" >&2; exit 1; }

# demo_run KEYS: `make demo` in the background on a fresh state folder, the walk-through
# against it, then a stop that must leave no process and no open port behind.
demo_run() {
  echo "demo-check: make demo DEMO_KEYS=$1 in the background, on a fresh state folder"
  rm -rf .demo
  log=$(mktemp)
  setsid env DEMO_WALKTHROUGH=0 DEMO_KEYS="$1" demo/run.sh >"$log" 2>&1 &
  leader=$!
  trap stop_demo EXIT
  for _ in $(seq 1 240); do
    grep -q "demo: running" "$log" && break
    if ! kill -0 "$leader" 2>/dev/null; then
      cat "$log" >&2
      echo "demo-check: make demo exited before it was ready" >&2
      exit 1
    fi
    sleep 0.5
  done
  grep -q "demo: running" "$log" || { cat "$log" >&2; echo "demo-check: not ready" >&2; exit 1; }
  grep "demo: tokens signed with" "$log"

  demo/walkthrough.sh >"$log.walk" || { cat "$log.walk"; exit 1; }
  cat "$log.walk"
  expected_alg=$([ "$1" = eddsa ] && echo EdDSA || echo HS256)
  grep -q "header: {\"alg\":\"$expected_alg\"" "$log.walk" ||
    { echo "demo-check: the tokens were not signed with $expected_alg" >&2; exit 1; }

  stop_demo
  trap - EXIT
  grep -q "demo: stopped" "$log" || { cat "$log" >&2; echo "demo-check: no clean stop" >&2; exit 1; }
  for port in 10000 9901 8080 8081 8000; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "demo-check: port $port is still open after the demo stopped" >&2
      exit 1
    fi
  done
  ours='gatehouse-token --db \.demo/|demo-api --listen 127\.0\.0\.1:8000|-c \.demo/envoy\.yaml'
  if pgrep -f "$ours" >/dev/null; then
    echo "demo-check: processes left behind:" >&2
    pgrep -af "$ours" >&2
    exit 1
  fi
  rm -f "$log" "$log.walk"
}
stop_demo() {
  kill -TERM -- "-$leader" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$leader" 2>/dev/null || break
    sleep 0.2
  done
}
demo_run hs256
demo_run eddsa
echo "demo-check: ok"
