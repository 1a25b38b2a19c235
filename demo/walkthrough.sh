#!/usr/bin/env bash
# The demo walk-through: each step is a curl through Envoy, printed with its real
# answer and checked. Exits non-zero at the first answer that is not as expected.
# usage: walkthrough.sh [BASE_URL] [ADMIN_URL] [PARTNER_URL]   (defaults: the `make demo`
# ports; PARTNER_URL is the second issuer's token endpoint base, outside Envoy)
set -euo pipefail
base=${1:-http://127.0.0.1:10000}
admin=${2:-http://127.0.0.1:9901}
partner=${3:-http://127.0.0.1:8081}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# call LABEL CURL_ARGS...: runs curl, prints the command, the status line, chosen
# headers and the body (tokens shortened), leaving STATUS and $tmp/body.
call() {
  local shown=()
  for a in "$@"; do
    case $a in
      *"Bearer "*) shown+=("'${a%%Bearer *}Bearer \$${TOKEN_NAME:-TOKEN}'") ;;
      *\ *) shown+=("'$a'") ;;
      *) shown+=("$a") ;;
    esac
  done
  echo
  echo "\$ curl -i ${shown[*]}"
  STATUS=$(curl -s -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' "$@")
  head -n 1 "$tmp/headers" | tr -d '\r'
  grep -i -E '^(www-authenticate|retry-after):' "$tmp/headers" | tr -d '\r' || true
  echo
  python3 - "$tmp/body" <<'PY'
import json, re, sys
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
try:
    body = json.loads(text)
except ValueError:
    print(text)
    sys.exit()
def short(v):
    if isinstance(v, str) and len(v) >= 40 and re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+){0,2}", v):
        return v[:16] + "…"
    if isinstance(v, dict):
        return {k: short(x) for k, x in v.items()}
    if isinstance(v, list):
        return [short(x) for x in v]
    return v
# The API echoes every header it received; show the ones this demo is about.
def trim(v):
    if isinstance(v, dict):
        out = {k: trim(x) for k, x in v.items()}
        if "headers" in out and isinstance(out["headers"], dict):
            out["headers"] = {k: x for k, x in out["headers"].items()
                              if k.startswith("x-auth") or k in ("authorization", "x-forwarded-for")}
        return out
    return v
print(json.dumps(short(trim(body)), ensure_ascii=False))
PY
}

json_field() { python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); 
for k in sys.argv[2].split("."): v = v[int(k)] if isinstance(v, list) else v.get(k)
print(json.dumps(v) if not isinstance(v, str) else v)' "$tmp/body" "$1"; }

# show_token_header TOKEN: prints the JWT's decoded header (its algorithm and key id).
show_token_header() {
  echo "(the access token's header: $(python3 -c 'import base64,sys; h=sys.argv[1].split(".")[0]; print(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)).decode())' "$1"))"
}

fail() { echo "walk-through: FAILED: $*" >&2; exit 1; }
expect_status() { [ "$STATUS" = "$1" ] || fail "expected HTTP $1, got $STATUS"; }
expect_field() {
  local got
  got=$(json_field "$1")
  [ "$got" = "$2" ] || fail "expected $1 = $2, got $got"
}
expect_header() { grep -qi "^$1" "$tmp/headers" || fail "expected a header $1"; }

echo "== 1. A public route needs no token"
call "$base/healthz"
expect_status 200
expect_field status ok

echo
echo "== 2. A protected route without a token: 401 with an RFC 6750 challenge"
call "$base/users/me"
expect_status 401
expect_header 'www-authenticate: Bearer realm="gatehouse"'

echo
echo "== 3. alice logs in through Envoy (OAuth2 password grant)"
call -d grant_type=password -d username=alice -d password=alice-demo-pass "$base/token"
expect_status 200
expect_field token_type bearer
ALICE=$(json_field access_token)
show_token_header "$ALICE"

echo
echo "== 4. alice's token on /users/me: the API sees the identity Gatehouse forwarded"
TOKEN_NAME=ALICE call -H "Authorization: Bearer $ALICE" "$base/users/me"
expect_status 200
expect_field username alice
expect_field roles '["admin", "user"]'

echo
echo "== 5. bob (role user) may not delete users: 403 insufficient_scope"
call -d grant_type=password -d username=bob -d password=bob-demo-pass "$base/token" >/dev/null
expect_status 200
BOB=$(json_field access_token)
TOKEN_NAME=BOB call -X DELETE -H "Authorization: Bearer $BOB" "$base/users/42"
expect_status 403
expect_field error insufficient_scope

echo
echo "== 6. alice (role admin) may"
TOKEN_NAME=ALICE call -X DELETE -H "Authorization: Bearer $ALICE" "$base/users/42"
expect_status 200
expect_field deleted 42

echo
echo "== 7. carol is disabled: refused at login with the same answer as a wrong password"
call -d grant_type=password -d username=carol -d password=carol-demo-pass "$base/token"
expect_status 401
expect_field error invalid_grant
expect_field error_description "Incorrect username or password"

echo
echo "== 8. A tampered token (last character changed) is refused"
TOKEN_NAME='{ALICE%?}x' call -H "Authorization: Bearer ${ALICE%?}x" "$base/users/me"
expect_status 401
expect_header 'www-authenticate: Bearer realm="gatehouse", error="invalid_token"'

echo
echo "== 9. Identity headers sent by the client never reach the API, on public routes too"
call -H "X-Auth-Sub: root" -H "X-Auth-Roles: admin" "$base/healthz"
expect_status 200
expect_field request.headers.x-auth-sub null
expect_field request.headers.x-auth-roles null
TOKEN_NAME=BOB call -H "Authorization: Bearer $BOB" -H "X-Auth-Roles: admin" "$base/users/me"
expect_status 200
expect_field username bob
expect_field roles '["user"]'
call -H "x_auth_sub: root" "$base/healthz"
expect_status 400

echo
echo "== 10. alice (admin) disables bob: within seconds his token stops working at the edge"
TOKEN_NAME=ALICE call -X POST -H "Authorization: Bearer $ALICE" "$base/admin/users/bob/disable"
expect_status 200
expect_field disabled true
started=$(date +%s%N)
# Until refused six times in a row: Envoy runs two workers, and the one that polled
# refuses first; the other adopts the new set within 100 ms (its next tick).
refused_at=0
streak=0
for _ in $(seq 1 300); do
  if [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $BOB" "$base/users/me")" = 401 ]; then
    [ "$streak" -eq 0 ] && refused_at=$(date +%s%N)
    streak=$((streak + 1))
    [ "$streak" -ge 6 ] && break
  else
    streak=0
  fi
  sleep 0.05
done
echo "(bob's token was refused $(( (refused_at - started) / 1000000 )) ms after the disable answered)"
TOKEN_NAME=BOB call -H "Authorization: Bearer $BOB" "$base/users/me"
expect_status 401
expect_header 'www-authenticate: Bearer realm="gatehouse", error="invalid_token", error_description="the token has been revoked"'
call -d grant_type=password -d username=bob -d password=bob-demo-pass "$base/token"
expect_status 401
TOKEN_NAME=ALICE call -H "Authorization: Bearer $ALICE" "$base/users/me"
expect_status 200
echo
echo "(bob is enabled again so the demo can run again; his old token stays revoked)"
TOKEN_NAME=ALICE call -X POST -H "Authorization: Bearer $ALICE" "$base/admin/users/bob/enable"
expect_status 200
TOKEN_NAME=BOB call -H "Authorization: Bearer $BOB" "$base/users/me" >/dev/null
expect_status 401

echo
echo "== 11. A second issuer: dave logs in at the partner, whose keys Envoy found by OIDC discovery"
call -d grant_type=password -d username=dave -d password=dave-demo-pass "$partner/token"
expect_status 200
DAVE=$(json_field access_token)
show_token_header "$DAVE"
echo
echo "His token passes where every provider is accepted; the API is told which one it was"
TOKEN_NAME=DAVE call -H "Authorization: Bearer $DAVE" "$base/users/me"
expect_status 200
expect_field username dave
expect_field request.headers.x-auth-provider '["partner"]'
echo
echo "He is an admin at the partner, but DELETE /users/{id} takes only gatehouse's tokens: 401, not 403"
TOKEN_NAME=DAVE call -X DELETE -H "Authorization: Bearer $DAVE" "$base/users/42"
expect_status 401
expect_header 'www-authenticate: Bearer realm="gatehouse", error="invalid_token", error_description="the token issuer is not accepted on this route"'

echo
echo "== 12. Every decision is counted in Envoy's stats"
echo
echo "\$ curl -s '$admin/stats?filter=wasmcustom.gatehouse' | grep -v ': 0\$'"
# The filter flushes its counts to Envoy once a second.
for _ in 1 2 3 4 5 6 7 8 9 10; do
  curl -s "$admin/stats?filter=wasmcustom.gatehouse" >"$tmp/stats"
  grep -q '^wasmcustom.gatehouse.denied.forbidden: [1-9]' "$tmp/stats" && break
  sleep 0.3
done
sleep 1.2
curl -s "$admin/stats?filter=wasmcustom.gatehouse" >"$tmp/stats"
grep -v ': 0$' "$tmp/stats" || true
grep -q '^wasmcustom.gatehouse.allowed.token: [1-9]' "$tmp/stats" || fail "allowed.token did not move"
grep -q '^wasmcustom.gatehouse.denied.forbidden: [1-9]' "$tmp/stats" || fail "denied.forbidden did not move"
grep -q '^wasmcustom.gatehouse.denied.missing_token: [1-9]' "$tmp/stats" || fail "denied.missing_token did not move"
grep -q '^wasmcustom.gatehouse.denied.revoked: [1-9]' "$tmp/stats" || fail "denied.revoked did not move"
grep -q '^wasmcustom.gatehouse.denied.provider_not_accepted: [1-9]' "$tmp/stats" || fail "denied.provider_not_accepted did not move"
grep -q '^wasmcustom.gatehouse.provider.partner.allowed: [1-9]' "$tmp/stats" || fail "provider.partner.allowed did not move"

echo
echo "walk-through: every step answered as expected"
