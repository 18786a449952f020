#!/bin/sh
# Starts (or stops) Debian's PgBouncer (1.18) in transaction mode on loopback, in front of the
# test PostgreSQL that scripts/services.sh started: every database, as user flowkit. `start`
# prints FLOWKIT_TEST_PGBOUNCER_URL, which TestServers.freshDatabase uses when
# FLOWKIT_TEST_VIA_PGBOUNCER=1 (the tests' databases then go through it, their sessions direct).
#
#   scripts/pgbouncer.sh start|stop
#
# FLOWKIT_TEST_PGBOUNCER_PORT: its port (26432); FLOWKIT_TEST_PG_PORT: PostgreSQL's (25432).
set -eu
[ -n "${FLOWKIT_TEST_HOME:-}" ] || cd "$(dirname "$0")/.."
home="${FLOWKIT_TEST_HOME:-$PWD/.flowkit/test}/pgbouncer"
port="${FLOWKIT_TEST_PGBOUNCER_PORT:-26432}"
pg_port="${FLOWKIT_TEST_PG_PORT:-25432}"
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || { echo "pgbouncer is not installed: run \`make deps\` (apt-get install pgbouncer)" >&2; exit 1; }
bin=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
# PgBouncer will not run as root: as root it drops to the postgres user (-u), as PostgreSQL does.
as=""; [ "$(id -u)" != 0 ] || as="-u postgres"

stop() {
  if [ -f "$home/pgbouncer.pid" ]; then
    pid=$(cat "$home/pgbouncer.pid" 2>/dev/null || true)
    [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
    i=0; while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do i=$((i+1)); [ $i -gt 100 ] && kill -9 "$pid" 2>/dev/null; sleep 0.05; done
    rm -f "$home/pgbouncer.pid"
  fi
  # A PgBouncer whose directory was deleted under it (a run that died) still holds the port.
  for pid in $(ss -ltnpH "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do kill "$pid" 2>/dev/null || true; done
}

case "${1:-}" in
start)
  stop
  mkdir -p "$home"
  [ -z "$as" ] || chown postgres "$home"
  cat >"$home/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=$pg_port user=flowkit

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = any
pool_mode = transaction
max_client_conn = 2000
default_pool_size = 20
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = $home/pgbouncer.log
pidfile = $home/pgbouncer.pid
INI
  [ -z "$as" ] || chown postgres "$home/pgbouncer.ini"
  # shellcheck disable=SC2086
  "$bin" -d $as "$home/pgbouncer.ini" >/dev/null
  i=0; until (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null || psql "postgres://flowkit@127.0.0.1:$port/postgres" -qtAc "SELECT 1" >/dev/null 2>&1; do
    i=$((i+1)); [ $i -gt 100 ] && { tail -5 "$home/pgbouncer.log" >&2; exit 1; }; sleep 0.05
  done
  echo "export FLOWKIT_TEST_PGBOUNCER_URL=postgres://flowkit@127.0.0.1:$port/postgres"
  ;;
stop)
  stop ;;
*)
  echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
