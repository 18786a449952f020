#!/bin/sh
# Starts (or stops) a private PostgreSQL and Redis on loopback for the tests, under
# $FLOWKIT_TEST_HOME (default .flowkit/test). PostgreSQL refuses to run as root, so as root it
# runs as the `postgres` user. `start` prints the variables the tests read.
#
#   scripts/services.sh start|stop|env
set -eu
cd "$(dirname "$0")/.."
home="${FLOWKIT_TEST_HOME:-$PWD/.flowkit/test}"
pg_port="${FLOWKIT_TEST_PG_PORT:-55432}"
redis_port="${FLOWKIT_TEST_REDIS_PORT:-56379}"
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$pgbin" ] || { echo "PostgreSQL is not installed: run scripts/deps.sh" >&2; exit 1; }
as_pg=""
[ "$(id -u)" -eq 0 ] && as_pg="runuser -u postgres --"
# Tests trade durability for speed; benchmarks keep PostgreSQL's defaults (fsync, synchronous commit).
pg_opts="-p $pg_port -k $home/pg -c listen_addresses=127.0.0.1 -c max_connections=300"
[ "${FLOWKIT_TEST_PG_DURABLE:-0}" = 1 ] || pg_opts="$pg_opts -c fsync=off -c synchronous_commit=off"

env_lines() {
  echo "export FLOWKIT_TEST_DATABASE_URL=postgres://flowkit@127.0.0.1:$pg_port/postgres"
  echo "export FLOWKIT_TEST_REDIS_URL=redis://127.0.0.1:$redis_port/0"
  echo "export FLOWKIT_TEST_REDIS_PORT=$redis_port"
  echo "export FLOWKIT_TEST_PG_PORT=$pg_port"
  echo "export FLOWKIT_TEST_PG_DATA=$home/pg"
  echo "export FLOWKIT_TEST_REDIS_DIR=$home/redis"
}

case "${1:-}" in
start)
  mkdir -p "$home/redis"
  if [ ! -f "$home/pg/PG_VERSION" ]; then
    mkdir -p "$home/pg"
    if [ -n "$as_pg" ]; then
      chown -R postgres:postgres "$home/pg"
      d="$home"; while [ "$d" != "/" ]; do chmod o+x "$d" 2>/dev/null || true; d=$(dirname "$d"); done
    fi
    $as_pg "$pgbin/initdb" -D "$home/pg" -U flowkit --auth=trust -E UTF8 --locale=C.UTF-8 >"$home/initdb.log" 2>&1 \
      || { cat "$home/initdb.log" >&2; exit 1; }
  fi
  if ! $as_pg "$pgbin/pg_ctl" -D "$home/pg" status >/dev/null 2>&1; then
    # The ports lie in Linux's ephemeral range: a client socket may hold one for a moment
    # ("could not bind … Address already in use"). Try again rather than fail the run.
    n=0
    until $as_pg "$pgbin/pg_ctl" -D "$home/pg" -l "$home/pg/server.log" -w -t 60 -o "$pg_opts" start >/dev/null 2>&1; do
      n=$((n+1)); [ $n -ge 5 ] && { tail -5 "$home/pg/server.log" >&2; exit 1; }
      sleep 1
    done
  fi
  n=0
  while ! redis-cli -p "$redis_port" ping >/dev/null 2>&1; do
    n=$((n+1)); [ $n -gt 5 ] && { tail -5 "$home/redis/redis.log" >&2; exit 1; }
    redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$home/redis" --appendonly yes --save "" \
      --daemonize yes --pidfile "$home/redis/redis.pid" --logfile "$home/redis/redis.log"
    i=0; until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 40 ] && break; sleep 0.05; done
  done
  env_lines
  ;;
restart-redis)
  # For fault tests: a clean shutdown (AOF is flushed) and a start on the same data.
  redis-cli -p "$redis_port" shutdown >/dev/null 2>&1 || true
  sleep "${2:-0}"
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$home/redis" --appendonly yes --save "" \
    --daemonize yes --pidfile "$home/redis/redis.pid" --logfile "$home/redis/redis.log"
  i=0; until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 100 ] && exit 1; sleep 0.05; done
  ;;
restart-postgres)
  $as_pg "$pgbin/pg_ctl" -D "$home/pg" -m fast -w stop >/dev/null
  sleep "${2:-0}"
  $as_pg "$pgbin/pg_ctl" -D "$home/pg" -l "$home/pg/server.log" -w -t 60 \
    -o "$pg_opts" start >/dev/null
  ;;
stop)
  $as_pg "$pgbin/pg_ctl" -D "$home/pg" -m fast -w stop >/dev/null 2>&1 || true
  redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
  ;;
env)
  env_lines
  ;;
*)
  echo "usage: $0 start|stop|env|restart-redis [pause]|restart-postgres [pause]" >&2; exit 2 ;;
esac
