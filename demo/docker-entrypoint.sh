#!/usr/bin/env bash
# Token service container: creates the demo users on first start (DEMO_USERS=1),
# then runs the service in the foreground (SIGTERM reaches it directly).
set -euo pipefail
if [ "${DEMO_USERS:-0}" = 1 ]; then
  seed-users.sh gatehouse-token "$GATEHOUSE_DB"
fi
exec gatehouse-token serve "$@"
