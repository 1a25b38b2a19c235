#!/usr/bin/env bash
# Runs a command with GATEHOUSE_TEST_DATABASE_URL set: the one in the environment,
# else the server `make test-postgres-start` left running, else a throwaway server
# started here and stopped when the command ends (whatever its outcome).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${GATEHOUSE_TEST_DATABASE_URL:-}" ]; then
  if ! GATEHOUSE_TEST_DATABASE_URL=$(scripts/test-postgres.sh url 2>/dev/null); then
    GATEHOUSE_TEST_DATABASE_URL=$(scripts/test-postgres.sh start)
    trap 'scripts/test-postgres.sh stop' EXIT
  fi
  export GATEHOUSE_TEST_DATABASE_URL
fi
"$@"
