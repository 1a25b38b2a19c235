#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the test suite (make test).
#
#   scripts/test-postgres.sh start   start one (or find the running one), print its URL
#   scripts/test-postgres.sh url     print the URL of the running one
#   scripts/test-postgres.sh stop    stop it and delete its data; fine if none runs
#
# The URL, postgres://gatehouse:PASSWORD@127.0.0.1:PORT/postgres, is the only line on
# stdout; everything else goes to stderr. The superuser role `gatehouse` has a random
# password (scram-sha-256 over TCP); the server listens on 127.0.0.1 only, on
# GATEHOUSE_PG_PORT (default 55432) or the next free port, with no Unix socket, so it
# never meets a cluster the Debian package may have started on 5432. Its data lives in
# a fresh ${TMPDIR:-/tmp}/gatehouse-pg.XXXXXX; the state (directory, port, pid, URL) in
# target/test-postgres.env, shell-sourceable, with GATEHOUSE_TEST_DATABASE_URL.
#
# PostgreSQL refuses to run as root: as root the server runs as the `postgres` user
# (GATEHOUSE_PG_USER to pick another); otherwise as the current user. The binaries come
# from GATEHOUSE_PG_BINDIR, else `pg_config --bindir`, else the newest
# /usr/lib/postgresql/*/bin (Debian), else initdb on PATH.
set -euo pipefail

# Only the URL goes to stdout (fd 3); everything else, pg_ctl's chatter included, to stderr.
exec 3>&1 1>&2

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE_DIR="$ROOT/target"
STATE="$STATE_DIR/test-postgres.env"
DEFAULT_PORT=55432
ROLE=gatehouse

# To fd 2 explicitly: these also run inside $(...), whose fd 1 is the capture.
die() {
  echo "test-postgres: $*" >&2
  exit 1
}
note() { echo "test-postgres: $*" >&2; }

usage() {
  echo "usage: $0 start|stop|url" >&2
  exit 2
}

NOT_INSTALLED="PostgreSQL (initdb, pg_ctl) not found: install Debian's postgresql package: apt-get install postgresql"

find_bindir() {
  local d
  if [ -n "${GATEHOUSE_PG_BINDIR:-}" ]; then
    [ -x "$GATEHOUSE_PG_BINDIR/initdb" ] && [ -x "$GATEHOUSE_PG_BINDIR/pg_ctl" ] \
      || die "GATEHOUSE_PG_BINDIR=$GATEHOUSE_PG_BINDIR has no initdb and pg_ctl"
    echo "$GATEHOUSE_PG_BINDIR"
    return
  fi
  # On Debian, /usr/bin/pg_config comes from libpq-dev and may name the bindir of another
  # major version than the server installed: only take it if the server binaries are there.
  if command -v pg_config >/dev/null && d=$(pg_config --bindir 2>/dev/null) \
    && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
    echo "$d"
    return
  fi
  d=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
    echo "$d"
    return
  fi
  if d=$(command -v initdb 2>/dev/null) && d=$(dirname "$(readlink -f "$d")") && [ -x "$d/pg_ctl" ]; then
    echo "$d"
    return
  fi
  die "$NOT_INSTALLED"
}

# The user the server runs as: empty when that is the current user.
server_user() {
  if [ "$(id -u)" -ne 0 ]; then
    echo ""
    return
  fi
  local u=${GATEHOUSE_PG_USER:-postgres}
  [ "$u" != root ] || die "PostgreSQL cannot run as root (GATEHOUSE_PG_USER=root)"
  id -u "$u" >/dev/null 2>&1 \
    || die "running as root, and there is no '$u' user to run PostgreSQL as: install Debian's postgresql package: apt-get install postgresql (it creates the postgres user)"
  [ -n "$(runuser_bin)" ] || die "running as root, and runuser (util-linux) is not found to run PostgreSQL as '$u'"
  echo "$u"
}

# runuser lives in /usr/sbin, which a root PATH may lack (PATH=/usr/bin:/bin).
runuser_bin() {
  command -v runuser 2>/dev/null || for r in /usr/sbin/runuser /sbin/runuser; do
    [ -x "$r" ] && echo "$r" && break
  done
}

# as_server USER CMD...: run CMD as the server's user (from /, which it can always enter).
# The server must not inherit fd 3 (the caller's $(...) would wait for it) nor the lock.
as_server() {
  local u=$1
  shift
  if [ -n "$u" ]; then
    (cd / && "$(runuser_bin)" -u "$u" -- "$@") 3>&- 9>&-
  else
    "$@" 3>&- 9>&-
  fi
}

pg_isready_bin() {
  if [ -x "$1/pg_isready" ]; then echo "$1/pg_isready"; else command -v pg_isready || true; fi
}

# Does the postmaster of data directory $1 live? Not if its pid is gone, a zombie (an
# init that does not reap, as in some containers), or another program's (reused pid).
postmaster_alive() {
  local pid st exe
  [ -f "$1/postmaster.pid" ] || return 1
  pid=$(head -n 1 "$1/postmaster.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/stat" ]; then
    st=$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$pid/stat" 2>/dev/null) || true
    [ "$st" != Z ] || return 1
    if exe=$(readlink "/proc/$pid/exe" 2>/dev/null); then
      case "$(basename "$exe")" in postgres* | postmaster*) ;; *) return 1 ;; esac
    fi
  fi
}

# Is the server of the loaded state file running and accepting connections?
state_running() {
  [ -n "${GATEHOUSE_TEST_PG_DATA:-}" ] && postmaster_alive "$GATEHOUSE_TEST_PG_DATA" || return 1
  local ready
  ready=$(pg_isready_bin "$GATEHOUSE_TEST_PG_BINDIR")
  [ -n "$ready" ] || return 0
  "$ready" -q -h 127.0.0.1 -p "$GATEHOUSE_TEST_PG_PORT" -d postgres -t 5
}

load_state() {
  unset GATEHOUSE_TEST_PG_DIR GATEHOUSE_TEST_PG_DATA GATEHOUSE_TEST_PG_PORT GATEHOUSE_TEST_PG_PID \
    GATEHOUSE_TEST_PG_BINDIR GATEHOUSE_TEST_PG_USER GATEHOUSE_TEST_DATABASE_URL
  [ -f "$STATE" ] || return 1
  # shellcheck disable=SC1090
  . "$STATE"
  [ -n "${GATEHOUSE_TEST_PG_DIR:-}" ] && [ -n "${GATEHOUSE_TEST_DATABASE_URL:-}" ]
}

lock() {
  mkdir -p "$STATE_DIR"
  if command -v flock >/dev/null; then
    exec 9>"$STATE_DIR/test-postgres.lock"
    flock -w 300 9 || die "another scripts/test-postgres.sh holds $STATE_DIR/test-postgres.lock"
  fi
}

# Stop the server of the loaded state (if it runs), delete its directory and the state file.
teardown() {
  local dir=${GATEHOUSE_TEST_PG_DIR:-} data=${GATEHOUSE_TEST_PG_DATA:-}
  local bindir=${GATEHOUSE_TEST_PG_BINDIR:-} user=${GATEHOUSE_TEST_PG_USER:-}
  if [ -n "$data" ] && postmaster_alive "$data"; then
    [ -n "$bindir" ] && [ -x "$bindir/pg_ctl" ] || bindir=$(find_bindir)
    if ! as_server "$user" "$bindir/pg_ctl" stop -D "$data" -m fast -w -t 60 && postmaster_alive "$data"; then
      note "fast shutdown failed, trying immediate"
      as_server "$user" "$bindir/pg_ctl" stop -D "$data" -m immediate -w -t 30 || ! postmaster_alive "$data" \
        || die "could not stop the server in $data (state kept in $STATE)"
    fi
  fi
  # Only ever delete a directory this script made.
  case "$(basename "${dir:-/}")" in
    gatehouse-pg.*) [ -d "$dir" ] && rm -rf -- "$dir" ;;
    *) [ -z "$dir" ] || note "not deleting $dir: not a gatehouse-pg.* directory" ;;
  esac
  rm -f -- "$STATE"
}

port_busy() {
  # Something accepts connections on it (the connect fails at once on a free loopback port).
  (exec 4<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

cmd_start() {
  lock
  if load_state; then
    if state_running; then
      note "already running on 127.0.0.1:$GATEHOUSE_TEST_PG_PORT (data in $GATEHOUSE_TEST_PG_DATA)"
      echo "$GATEHOUSE_TEST_DATABASE_URL" >&3
      return
    fi
    note "cleaning up a server that no longer runs ($GATEHOUSE_TEST_PG_DIR)"
    teardown
  fi

  local bindir user base dir data password port tries=0 ready
  bindir=$(find_bindir)
  user=$(server_user)

  # A fresh directory the server's user owns; $TMPDIR only if that user can get into it.
  base=${TMPDIR:-/tmp}
  if [ -n "$user" ] && ! as_server "$user" test -x "$base"; then
    base=/tmp
  fi
  dir=$(mktemp -d "$base/gatehouse-pg.XXXXXX")
  data="$dir/data"
  [ -z "$user" ] || chown "$user" "$dir"
  chmod 700 "$dir"

  # A throwaway random password, never on a command line (printf is a builtin).
  password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  [ ${#password} -eq 32 ] || die "could not read a random password from /dev/urandom"
  (umask 077 && printf '%s\n' "$password" >"$dir/pwfile")
  [ -z "$user" ] || chown "$user" "$dir/pwfile"

  if ! as_server "$user" "$bindir/initdb" -D "$data" -U "$ROLE" --pwfile="$dir/pwfile" \
    --auth-host=scram-sha-256 --auth-local=scram-sha-256 \
    --encoding=UTF8 --no-locale >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log"
    rm -rf -- "$dir"
    die "initdb failed (with $bindir/initdb)"
  fi
  rm -f -- "$dir/pwfile"
  echo "include 'gatehouse-test.conf'" >>"$data/postgresql.conf"

  port=${GATEHOUSE_PG_PORT:-$DEFAULT_PORT}
  [[ $port =~ ^[0-9]+$ ]] && [ "$port" -gt 0 ] && [ "$port" -lt 65536 ] \
    || { rm -rf -- "$dir"; die "GATEHOUSE_PG_PORT=$port is not a port"; }
  while :; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ]; then
      rm -rf -- "$dir"
      die "no free port found from ${GATEHOUSE_PG_PORT:-$DEFAULT_PORT} on"
    fi
    if port_busy "$port"; then
      note "port $port is busy, trying $((port + 1))"
      port=$((port + 1))
      continue
    fi
    # Test-friendly, but durable: fsync and synchronous commits stay on (the tests check
    # that a committed write survives); many test processes each open pools.
    cat >"$data/gatehouse-test.conf" <<EOF
# written by scripts/test-postgres.sh
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
max_connections = 300
shared_buffers = 32MB
fsync = on
synchronous_commit = on
full_page_writes = on
password_encryption = 'scram-sha-256'
max_parallel_workers_per_gather = 0
timezone = 'UTC'
log_timezone = 'UTC'
EOF
    [ -z "$user" ] || chown "$user" "$data/gatehouse-test.conf"
    if as_server "$user" "$bindir/pg_ctl" start -D "$data" -l "$dir/server.log" -w -t 60; then
      break
    fi
    if grep -qiE 'could not (bind|create listen)|address already in use' "$dir/server.log" 2>/dev/null; then
      note "port $port was taken, trying $((port + 1))"
      port=$((port + 1))
      : >"$dir/server.log"
      continue
    fi
    tail -n 30 "$dir/server.log" 2>/dev/null || true
    as_server "$user" "$bindir/pg_ctl" stop -D "$data" -m immediate -w -t 10 >/dev/null 2>&1 || true
    rm -rf -- "$dir"
    die "the server did not start (log above)"
  done

  ready=$(pg_isready_bin "$bindir")
  if [ -n "$ready" ]; then
    local i=0
    until "$ready" -q -h 127.0.0.1 -p "$port" -d postgres -t 2; do
      i=$((i + 1))
      if [ "$i" -ge 60 ]; then
        tail -n 30 "$dir/server.log" || true
        as_server "$user" "$bindir/pg_ctl" stop -D "$data" -m immediate -w -t 10 || true
        rm -rf -- "$dir"
        die "the server does not accept connections on 127.0.0.1:$port"
      fi
      sleep 0.5
    done
  fi

  local url="postgres://$ROLE:$password@127.0.0.1:$port/postgres" tmp
  tmp=$(mktemp "$STATE_DIR/.test-postgres.env.XXXXXX")
  chmod 600 "$tmp"
  {
    echo "# written by scripts/test-postgres.sh start; removed by scripts/test-postgres.sh stop"
    printf 'GATEHOUSE_TEST_PG_DIR=%q\n' "$dir"
    printf 'GATEHOUSE_TEST_PG_DATA=%q\n' "$data"
    printf 'GATEHOUSE_TEST_PG_PORT=%q\n' "$port"
    printf 'GATEHOUSE_TEST_PG_PID=%q\n' "$(head -n 1 "$data/postmaster.pid")"
    printf 'GATEHOUSE_TEST_PG_BINDIR=%q\n' "$bindir"
    printf 'GATEHOUSE_TEST_PG_USER=%q\n' "$user"
    printf 'GATEHOUSE_TEST_DATABASE_URL=%q\n' "$url"
  } >"$tmp"
  mv -f -- "$tmp" "$STATE"
  note "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data in $data, run as ${user:-$(id -un)}; stop with scripts/test-postgres.sh stop)"
  echo "$url" >&3
}

cmd_stop() {
  lock
  if ! load_state; then
    [ ! -e "$STATE" ] || { note "removing unreadable $STATE"; rm -f -- "$STATE"; }
    note "no test PostgreSQL running (no $STATE)"
    return
  fi
  teardown
  note "stopped; removed $GATEHOUSE_TEST_PG_DIR"
}

cmd_url() {
  load_state || die "no test PostgreSQL running (no $STATE): start one with scripts/test-postgres.sh start"
  state_running || die "the test PostgreSQL of $STATE is not running: scripts/test-postgres.sh stop, then start"
  echo "$GATEHOUSE_TEST_DATABASE_URL" >&3
}

[ $# -eq 1 ] || usage
case "$1" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  url) cmd_url ;;
  *) usage ;;
esac
