#!/usr/bin/env bash
# Creates the demo users through the token service's own CLI, once. The `demo` set
# (the default): alice (admin, user), bob (user), carol (user, disabled). The `partner`
# set, for the second issuer: dave (admin, user) — an admin at the partner, which the
# edge does not take as an admin of ours. Passwords are demo values; only their
# Argon2id hashes are stored.
# usage: seed-users.sh GATEHOUSE_TOKEN_BINARY DATABASE_FILE [demo|partner]
set -euo pipefail
bin=$1
db=$2
set=${3:-demo}
existing=$("$bin" --db "$db" user list)
add() {
  local name=$1 password=$2
  shift 2
  if grep -q "^$name	" <<<"$existing"; then
    return
  fi
  printf '%s\n' "$password" | "$bin" --db "$db" user add "$name" "$@"
}
case $set in
  demo)
    add alice alice-demo-pass --role admin --role user
    add bob bob-demo-pass --role user
    add carol carol-demo-pass --role user --disabled
    ;;
  partner)
    add dave dave-demo-pass --role admin --role user
    ;;
  *) echo "seed-users: the user set must be demo or partner, not '$set'" >&2; exit 2 ;;
esac
