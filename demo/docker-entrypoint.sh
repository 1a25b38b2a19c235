#!/usr/bin/env bash
# Token service container: creates the demo users on first start (DEMO_USERS=1, or
# DEMO_USERS=partner for the second issuer's), then runs the service in the foreground
# (SIGTERM reaches it directly). DEMO_KEYS=eddsa signs with an Ed25519 key kept (sealed
# with SECRET_KEY) in the database.
set -euo pipefail
case ${DEMO_KEYS:-hs256} in
  hs256) ;;
  eddsa) export GATEHOUSE_SIGNING_ALG=EdDSA ;;
  *) echo "DEMO_KEYS must be hs256 or eddsa, not '$DEMO_KEYS'" >&2; exit 2 ;;
esac
case ${DEMO_USERS:-0} in
  0) ;;
  1) seed-users.sh gatehouse-token "$GATEHOUSE_DB" demo ;;
  partner) seed-users.sh gatehouse-token "$GATEHOUSE_DB" partner ;;
  *) echo "DEMO_USERS must be 0, 1 or partner, not '$DEMO_USERS'" >&2; exit 2 ;;
esac
exec gatehouse-token serve "$@"
