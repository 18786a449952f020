#!/bin/bash
# `make faults`: faults injected into a running system — real PostgreSQL and Redis, the API, two
# schedulers and two workers as separate processes — each followed by the same checks:
#   every run reaches its correct final state; no task instance lost; exactly one recorded
#   success per task try; exactly one run per cron tick.
# Prints a table; exits non-zero when a check fails.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh   # curl, iproute2 and the servers
flowctl="$(realpath "${1:-.build/debug/flowctl}")"
work="$PWD/.flowkit/faults"
export FLOWKIT_TEST_HOME="$work/servers" FLOWKIT_TEST_PG_PORT=55632 FLOWKIT_TEST_REDIS_PORT=56579
scripts/services.sh stop 2>/dev/null   # servers a previous run left behind
rm -rf "$work"; mkdir -p "$work"
eval "$(scripts/services.sh start)"
db_admin="postgres://flowkit@127.0.0.1:55632/postgres"
psql "$db_admin" -qc "DROP DATABASE IF EXISTS faults" -c "CREATE DATABASE faults" >/dev/null
export FLOWKIT_DATABASE_URL="postgres://flowkit@127.0.0.1:55632/faults"
export FLOWKIT_REDIS_URL="redis://127.0.0.1:56579/0"
export FLOWKIT_CONN_WAREHOUSE="$FLOWKIT_DATABASE_URL" FLOWKIT_DATA_DIR="$work/data" FLOWKIT_LOG_LEVEL=warning
export FLOWKIT_API_TOKENS="admin:faults-admin" FLOWKIT_API_TOKEN="faults-admin" FLOWKIT_API_URL="http://127.0.0.1:18300"
"$flowctl" migrate >/dev/null

declare -A pids
start() {  # start NAME ARGS...
  local name=$1; shift
  "$flowctl" "$@" >>"$work/$name.log" 2>&1 &
  pids[$name]=$!
}
# kill -9 NAME...: reaped at once, so bash does not print its "Killed" job notice later.
kill9() { for name in "$@"; do kill -9 "${pids[$name]}" 2>/dev/null; wait "${pids[$name]}" 2>/dev/null; done; }
stop_all() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done; wait 2>/dev/null; [ "$(id -u)" = 0 ] && scripts/netns.sh down 2>/dev/null; scripts/services.sh stop; }
trap stop_all EXIT

sched_args=(scheduler --zombie-threshold 6 --visibility-timeout 3)
worker_args=(worker --concurrency 2 --heartbeat-interval 0.5 --visibility-timeout 3 --shutdown-grace 2)
start api server --port 18300
start sched1 "${sched_args[@]}"
start sched2 "${sched_args[@]}"
start worker1 "${worker_args[@]}" --name worker1
start worker2 "${worker_args[@]}" --name worker2
for i in $(seq 1 100); do "$flowctl" health >/dev/null 2>&1 && break; sleep 0.2; done

sql() { psql "$FLOWKIT_DATABASE_URL" -qAt -c "$1"; }
trigger() { "$flowctl" trigger "$@"; }
wait_runs() {  # wait until no run is queued or running (max $1 seconds)
  local limit=${1:-120} t=0
  while [ "$(sql "SELECT count(*) FROM runs WHERE state IN ('queued','running')")" != 0 ]; do
    sleep 0.5; t=$((t+1))
    if [ $t -gt $((limit*2)) ]; then return 1; fi
  done
  return 0
}
results=()
check() {  # check SCENARIO EXPECTED_SUCCESS_RUNS
  local name=$1 expect=$2 problems=()
  wait_runs 180 || problems+=("runs still unfinished")
  local ok; ok=$(sql "SELECT count(*) FROM runs WHERE state = 'success' AND run_id = ANY(string_to_array('${scenario_runs[*]:-}', ' '))")
  [ "$ok" = "$expect" ] || problems+=("$ok of $expect runs succeeded")
  local lost; lost=$(sql "SELECT count(*) FROM task_instances t JOIN runs r ON r.id = t.run_pk WHERE r.state IN ('success','failed') AND t.state NOT IN ('success','failed','skipped','upstream_failed','cancelled')")
  [ "$lost" = 0 ] || problems+=("$lost task instances left unfinished")
  local dup; dup=$(sql "SELECT count(*) FROM (SELECT 1 FROM task_history WHERE to_state = 'success' AND applied GROUP BY run_pk, task_id, try_number HAVING count(*) > 1) d")
  [ "$dup" = 0 ] || problems+=("$dup tries with more than one recorded success")
  local ticks; ticks=$(sql "SELECT count(*) FROM (SELECT 1 FROM runs WHERE trigger_kind = 'scheduled' GROUP BY flow_id, logical_date HAVING count(*) > 1) d")
  [ "$ticks" = 0 ] || problems+=("$ticks cron ticks with more than one run")
  if [ ${#problems[@]} -eq 0 ]; then results+=("ok|$name|$expect runs"); else results+=("FAIL|$name|$(IFS=';'; echo "${problems[*]}")"); fi
}
batch() {  # triggers a mixed batch; sets scenario_runs
  scenario_runs=()
  scenario_runs+=("$(trigger lakehouse_end_to_end --conf '{"orders": 100}')")
  scenario_runs+=("$(trigger example_retry)")
  scenario_runs+=("$(trigger example_sleep --conf '{"seconds": 3}')")
  scenario_runs+=("$(trigger example_sleep --conf '{"seconds": 3}')")
  scenario_runs+=("$(trigger catalunya_data_pipeline)")
}
running_on() { sql "SELECT worker FROM task_instances WHERE state = 'running' LIMIT 1"; }

# 1. kill -9 of a worker mid-task.
batch; sleep 1.5
victim=$(running_on); victim=${victim:-worker1}
kill9 "$victim"; sleep 1; start "$victim" "${worker_args[@]}" --name "$victim"
check "kill -9 of a worker mid-task ($victim)" 5

# 2. kill -9 of a scheduler mid-dispatch, then restart.
batch; sleep 0.3
kill9 sched1; sleep 2; start sched1 "${sched_args[@]}"
check "kill -9 of a scheduler mid-dispatch, restarted" 5

# 3. Two schedulers, the leader (maintenance lock holder) killed.
batch
kill9 sched2 sched1; start sched1 "${sched_args[@]}"; sleep 3; start sched2 "${sched_args[@]}"
check "both schedulers killed (leader included), restarted" 5

# 4. Redis restarted mid-run (AOF on).
batch; sleep 1.5
scripts/services.sh restart-redis 1
check "Redis restarted mid-run (AOF)" 5

# 5. Redis flushed entirely mid-run: queues rebuilt from PostgreSQL.
batch; sleep 1
redis-cli -p 56579 FLUSHALL >/dev/null
check "Redis flushed mid-run" 5

# 6. PostgreSQL restarted mid-run; the API answers 503 meanwhile.
batch; sleep 1
( sleep 0.5; scripts/services.sh restart-postgres 3 ) &
restarter=$!
during=""
for i in $(seq 1 30); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$FLOWKIT_API_URL/health" 2>/dev/null || echo 000)
  during="$during $code"; sleep 0.2
done
wait "$restarter"
check "PostgreSQL restarted mid-run (health during:$(echo $during | tr ' ' '\n' | sort | uniq -c | awk '{printf " %s×%s", $2, $1}'))" 5

# 7. A burst of malformed messages on the queues.
batch
for i in $(seq 1 200); do echo "LPUSH default garbage-$i"; done | redis-cli -p 56579 >/dev/null
redis-cli -p 56579 LPUSH default '{"properties": {"delivery_tag": "x"}, "headers": {"task": "nobody.knows", "id": "1"}, "body": "W1tdLCB7fSwge31d", "content-type": "application/json"}' >/dev/null
check "burst of 201 malformed or unknown messages (dead letters: $(redis-cli -p 56579 LLEN flowkit:dead))" 5

# 8. A flood of API requests with bad bodies.
batch
bad=0
for i in $(seq 1 300); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer faults-admin" -H "Content-Type: application/json" --data "{bad json $i" "$FLOWKIT_API_URL/api/v1/flows/example_sleep/runs")
  [ "$code" = 400 ] || bad=$((bad+1))
done
[ $bad -eq 0 ] || results+=("FAIL|API flood|$bad responses were not 400")
check "flood of 300 malformed API requests (all 400: $([ $bad -eq 0 ] && echo yes || echo no))" 5

# 9. A worker host's network cut (network namespace), then restored. The only workers are on
#    host A while the batch starts; the link is cut mid-task, a worker on another host takes
#    over what A held once A's liveness lapses, and A's late reports change nothing.
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null 2>&1 && scripts/netns.sh up 2>"$work/netns.log"; then
  redis-cli -p 56579 CONFIG SET protected-mode no >/dev/null
  redis-cli -p 56579 CONFIG SET bind "127.0.0.1 10.77.1.1" >/dev/null
  kill -TERM "${pids[worker1]}" "${pids[worker2]}" 2>/dev/null; wait "${pids[worker1]}" "${pids[worker2]}" 2>/dev/null
  FLOWKIT_REDIS_URL="redis://10.77.1.1:56579/0" ip netns exec fkA "$flowctl" "${worker_args[@]}" --name hostA >>"$work/hostA.log" 2>&1 &
  pids[hostA]=$!
  sleep 1
  batch; sleep 1.5
  on_a=$(sql "SELECT count(*) FROM task_instances WHERE state = 'running' AND worker = 'hostA'")
  scripts/netns.sh cut A
  start worker1 "${worker_args[@]}" --name worker1
  sleep 10
  scripts/netns.sh restore A
  check "worker host's network cut mid-task ($on_a running on it), restored after 10 s" 5
  kill -TERM "${pids[hostA]}" 2>/dev/null; wait "${pids[hostA]}" 2>/dev/null; unset 'pids[hostA]'
  scripts/netns.sh down
  redis-cli -p 56579 CONFIG SET bind "127.0.0.1" >/dev/null
  redis-cli -p 56579 CONFIG SET protected-mode yes >/dev/null
  start worker2 "${worker_args[@]}" --name worker2
elif [ "${CI:-}" = true ]; then
  results+=("FAIL|worker host's network cut|needs root and iproute2 for network namespaces: $(cat "$work/netns.log" 2>/dev/null)")
else
  results+=("SKIP|worker host's network cut|needs root and iproute2 for network namespaces (make test covers it when run as root)")
fi

echo
printf '%-6s %-75s %s\n' RESULT SCENARIO DETAIL
failed=0
for r in "${results[@]}"; do
  IFS='|' read -r status name detail <<<"$r"
  printf '%-6s %-75s %s\n' "$status" "$name" "$detail"
  [ "$status" = ok ] || [ "$status" = SKIP ] || failed=1
done
exit $failed
