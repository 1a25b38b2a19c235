#!/usr/bin/env bash
# Creates the demo users through the token service's own CLI, once: alice (admin,
# user), bob (user), carol (user, disabled). Passwords are demo values; only their
# Argon2id hashes are stored.
# usage: seed-users.sh GATEHOUSE_TOKEN_BINARY DATABASE_FILE
set -euo pipefail
bin=$1
db=$2
existing=$("$bin" --db "$db" user list)
add() {
  local name=$1 password=$2
  shift 2
  if grep -q "^$name	" <<<"$existing"; then
    return
  fi
  printf '%s\n' "$password" | "$bin" --db "$db" user add "$name" "$@"
}
add alice alice-demo-pass --role admin --role user
add bob bob-demo-pass --role user
add carol carol-demo-pass --role user --disabled
