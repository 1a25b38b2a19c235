#!/usr/bin/env bash
# Token service container: creates the demo users on first start (DEMO_USERS=1),
# then runs the service in the foreground (SIGTERM reaches it directly). DEMO_KEYS=eddsa
# signs with an Ed25519 key kept (sealed with SECRET_KEY) in the database.
set -euo pipefail
case ${DEMO_KEYS:-hs256} in
  hs256) ;;
  eddsa) export GATEHOUSE_SIGNING_ALG=EdDSA ;;
  *) echo "DEMO_KEYS must be hs256 or eddsa, not '$DEMO_KEYS'" >&2; exit 2 ;;
esac
if [ "${DEMO_USERS:-0}" = 1 ]; then
  seed-users.sh gatehouse-token "$GATEHOUSE_DB"
fi
exec gatehouse-token serve "$@"
