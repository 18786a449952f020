#!/bin/bash
# docs/deploying.md, step by step, on network namespaces: the database host is the root namespace
# (10.77.1.1 / 10.77.2.1), the worker hosts are fkA (10.77.1.2) and fkB (10.77.2.2).
#   - PostgreSQL with a password role, its own database and a pg_hba line for the hosts' network;
#   - Redis with the default user off and an ACL user, bound to the hosts' addresses;
#   - migrate, a scheduler and the API on the database host; a worker on each worker host with
#     only Redis and the warehouse connection, sharing one data directory (the shared mount);
#   - from a worker host: flowctl workers, then flowctl trigger catalunya_data_pipeline --wait;
#   - refusals: Redis without the password (NOAUTH), a worker with a wrong one (stops, WRONGPASS).
# Needs root (ip netns). Exits non-zero naming the step that failed.
#   scripts/deploy_guide_test.sh [FLOWCTL]
set -uo pipefail
cd "$(dirname "$0")/.."
flowctl="$(realpath "${1:-.build/debug/flowctl}")"
[ "$(id -u)" = 0 ] || { echo "deploy guide: needs root for network namespaces" >&2; exit 1; }
work="$PWD/.flowkit/deploy"
pg_port=25732 redis_port=26699 api_port=18800
step() { echo "deploy guide: $*"; }
fail() { echo "deploy guide: FAILED: $*" >&2; exit 1; }

declare -A pids
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  wait 2>/dev/null
  redis-cli -p "$redis_port" --user flowkit --pass guide-redis-pw --no-auth-warning SHUTDOWN NOSAVE >/dev/null 2>&1
  FLOWKIT_TEST_HOME="$work/servers" FLOWKIT_TEST_PG_PORT=$pg_port FLOWKIT_TEST_REDIS_PORT=$((redis_port + 1)) scripts/services.sh stop >/dev/null 2>&1
  scripts/netns.sh down 2>/dev/null
}
trap cleanup EXIT
cleanup; rm -rf "$work"; mkdir -p "$work/shared-data" "$work/redis"
chmod 777 "$work/shared-data"

step "the hosts: network namespaces fkA and fkB"
scripts/netns.sh up || fail "ip netns"

step "2. PostgreSQL: a password role, its database, pg_hba for 10.77.0.0/16"
export FLOWKIT_TEST_HOME="$work/servers" FLOWKIT_TEST_PG_PORT=$pg_port FLOWKIT_TEST_REDIS_PORT=$((redis_port + 1))
export FLOWKIT_TEST_PG_LISTEN="127.0.0.1,10.77.1.1,10.77.2.1"
eval "$(scripts/services.sh start)" || fail "PostgreSQL did not start"
admin="postgres://flowkit@127.0.0.1:$pg_port/postgres"
export PGOPTIONS="--client-min-messages=warning"
psql "$admin" -qc "DROP DATABASE IF EXISTS flowkit" -c "DROP ROLE IF EXISTS flowkit_app" \
  -c "CREATE ROLE flowkit_app LOGIN PASSWORD 'guide-pg-pw'" -c "CREATE DATABASE flowkit OWNER flowkit_app" >/dev/null || fail "role and database"
hba=$(psql "$admin" -tAc "SHOW hba_file")
echo "host  flowkit  flowkit_app  10.77.0.0/16  scram-sha-256" >>"$hba"
psql "$admin" -qc "SELECT pg_reload_conf()" >/dev/null

step "2. Redis: the default user off, an ACL user, bound to the hosts' addresses"
cat >"$work/redis/redis.conf" <<EOF
port $redis_port
bind 127.0.0.1 10.77.1.1 10.77.2.1
protected-mode yes
user default off
user flowkit on >guide-redis-pw ~* &* +@all
dir $work/redis
save ""
appendonly no
daemonize no
EOF
redis-server "$work/redis/redis.conf" >"$work/redis/redis.log" 2>&1 &
pids[redis]=$!
for i in $(seq 1 50); do redis-cli -p $redis_port --user flowkit --pass guide-redis-pw --no-auth-warning PING 2>/dev/null | grep -q PONG && break; sleep 0.1; done
noauth=$(ip netns exec fkA redis-cli -h 10.77.1.1 -p $redis_port PING 2>&1)
[[ "$noauth" == *NOAUTH* ]] || fail "Redis answered a client without the password: $noauth"

db_url="postgres://flowkit_app:guide-pg-pw@127.0.0.1:$pg_port/flowkit"
redis_url="redis://flowkit:guide-redis-pw@127.0.0.1:$redis_port/0"
step "5. the database host: migrate, a scheduler, the API on 0.0.0.0:$api_port"
FLOWKIT_DATABASE_URL=$db_url "$flowctl" migrate >/dev/null || fail "flowctl migrate"
FLOWKIT_DATABASE_URL=$db_url FLOWKIT_REDIS_URL=$redis_url FLOWKIT_LOG_LEVEL=warning "$flowctl" scheduler >"$work/scheduler.log" 2>&1 &
pids[scheduler]=$!
FLOWKIT_DATABASE_URL=$db_url FLOWKIT_REDIS_URL=$redis_url FLOWKIT_API_TOKENS="admin:guide-admin" FLOWKIT_LOG_LEVEL=warning \
  "$flowctl" server --host 0.0.0.0 --port $api_port >"$work/server.log" 2>&1 &
pids[server]=$!

step "4-5. a worker on each worker host: Redis, the warehouse connection, the shared data directory"
# The worker hosts have no route to PyPI here: dbt's virtualenv (catalunya's build_marts) is
# built beforehand in the home they share (.flowkit), as an image or a provisioning step would.
"$flowctl" venv >/dev/null || fail "flowctl venv (dbt's virtualenv)"
for h in A B; do
  i=$([ $h = A ] && echo 1 || echo 2)
  ip netns exec "fk$h" env -i PATH="$PATH" HOME=/root \
    FLOWKIT_REDIS_URL="redis://flowkit:guide-redis-pw@10.77.$i.1:$redis_port/0" \
    FLOWKIT_CONN_WAREHOUSE="postgres://flowkit_app:guide-pg-pw@10.77.$i.1:$pg_port/flowkit" \
    FLOWKIT_DATA_DIR="$work/shared-data" FLOWKIT_LOG_LEVEL=warning \
    "$flowctl" worker --queues default --concurrency 2 --hostname "host$h" --name "host$h" >"$work/worker$h.log" 2>&1 &
  pids[worker$h]=$!
done

client() { ip netns exec fkB env FLOWKIT_API_URL="http://10.77.2.1:$api_port" FLOWKIT_API_TOKEN=guide-admin "$flowctl" "$@"; }
step "5. from a worker host: flowctl workers"
for i in $(seq 1 100); do
  online=$(client workers --json 2>/dev/null | python3 -c 'import json,sys; print(sum(w["state"] == "online" for w in json.load(sys.stdin)["workers"]))' 2>/dev/null)
  [ "${online:-0}" = 2 ] && break; sleep 0.2
done
[ "${online:-0}" = 2 ] || fail "both workers online (saw ${online:-none}; $(tail -3 "$work/workerA.log" "$work/workerB.log" "$work/server.log"))"
client workers --flows | head -3

step "5. from a worker host: flowctl trigger catalunya_data_pipeline --wait"
client trigger catalunya_data_pipeline --wait >"$work/trigger.log" 2>&1 || { cat "$work/trigger.log"; fail "catalunya_data_pipeline did not succeed"; }
tail -1 "$work/trigger.log"
hosts=$(psql "$db_url" -tAc "SELECT string_agg(DISTINCT worker, ',' ORDER BY worker) FROM task_instances")
echo "deploy guide: its tasks ran on $hosts"

step "2. a worker with a wrong Redis password stops at once, saying so"
ip netns exec fkA env -i PATH="$PATH" HOME=/root FLOWKIT_REDIS_URL="redis://flowkit:wrong@10.77.1.1:$redis_port/0" \
  timeout 20 "$flowctl" worker --name intruder >"$work/intruder.log" 2>&1
rc=$?
{ [ $rc != 0 ] && [ $rc != 124 ] && grep -q WRONGPASS "$work/intruder.log"; } || fail "the intruder worker (rc $rc): $(cat "$work/intruder.log")"
echo "deploy guide: all steps passed"
