#!/usr/bin/env bash
# Prints envoy.yaml as the demo runs it. The file users deploy is the file that runs;
# two switches change only what they name, and fail loudly if envoy.yaml no longer
# has the lines they change:
#   --local        the cluster (token, partner, api) and listener addresses become
#                  127.0.0.1 (`make demo`);
#   --keys eddsa   the filter trusts the token service's public keys, fetched from
#                  /.well-known/jwks.json through the `token` cluster, instead of the
#                  shared SECRET_KEY, which then never reaches the Wasm VM.
# usage: envoy-config.sh [--local] [--keys hs256|eddsa] < envoy.yaml > out.yaml
set -euo pipefail
local_addresses=0
keys=hs256
while [ $# -gt 0 ]; do
  case $1 in
    --local) local_addresses=1 ;;
    --keys) keys=${2:-}; shift ;;
    *) echo "envoy-config: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

config=$(cat)
# swap LINE_PATTERN REPLACEMENT: replaces the one line matching the pattern.
swap() {
  local count
  count=$(grep -c -- "$1" <<<"$config" || true)
  if [ "$count" != 1 ]; then
    echo "envoy-config: expected one line matching '$1' in envoy.yaml, found $count" >&2
    exit 1
  fi
  config=$(sed -e "s|$1|$2|" <<<"$config")
}

case $keys in
  hs256) ;;
  eddsa)
    swap '"algorithms": \["HS256"\],' '"algorithms": ["EdDSA"],'
    swap '"hmac_secret": {"env": "SECRET_KEY"},' '"jwks": {"remote": {"cluster": "token", "path": "/.well-known/jwks.json"}},'
    swap 'environment_variables: {host_env_keys: \["SECRET_KEY"\]}' 'environment_variables: {host_env_keys: []}'
    ;;
  *) echo "envoy-config: --keys must be hs256 or eddsa, not '$keys'" >&2; exit 2 ;;
esac

if [ "$local_addresses" = 1 ]; then
  config=$(sed -e 's/address: token,/address: 127.0.0.1,/' \
    -e 's/address: api,/address: 127.0.0.1,/' \
    -e 's/address: partner,/address: 127.0.0.1,/' \
    -e 's/address: 0\.0\.0\.0,/address: 127.0.0.1,/' <<<"$config")
fi
printf '%s\n' "$config"
