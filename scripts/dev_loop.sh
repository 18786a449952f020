#!/bin/bash
# The flow author's loop, end to end: a copy of Examples/MyFlows placed outside this checkout,
# `make dev` in it (flowctl dev: private servers, watch, rebuild, swap), a run of daily_report,
# a one-line change to a task's return value saved, and the next run showing the new result —
# with nothing restarted by hand. Prints each "save → new version running" time.
#
#   scripts/dev_loop.sh            one change (make example runs it; CI checks the results)
#   scripts/dev_loop.sh bench N    N changes; prints `BENCH id=W13 metric=save_to_running_s …`
#
# Reuses .build-myflows (make example's build of the template) as SwiftPM's scratch path, so
# only the package's own modules are compiled the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
mode="${1:-test}"; repeats="${2:-1}"
[ "$mode" = bench ] || repeats=1
work="$(mktemp -d /tmp/flowkit-dev-loop.XXXXXX)"
port="${DEV_PORT:-18790}"
cp -r Examples/MyFlows "$work/MyFlows"
rm -rf "$work/MyFlows/.build" "$work/MyFlows/.flowkit"
# This copy's publish can be held back (param `hold`, seconds), so that a run is still going when
# the change is saved: it must finish on the version it started with.
flows="$work/MyFlows/Sources/MyFlows/MyFlows.swift"
sed -i -E 's/params: \[Param\("region", \.string, default: "catalunya"\)\]/params: [Param("region", .string, default: "catalunya"), Param("hold", .int, default: 0)]/' "$flows"
perl -0pi -e 's/(let publish = f\.task\("publish", triggerRule: \.allSuccess\) \{ ctx in\n)(\s+)\[/$1$2try await Task.sleep(for: .seconds(ctx.param("hold")?.intValue ?? 0))\n$2return [/' "$flows"
grep -q 'Param("hold"' "$flows" && grep -q 'Task.sleep(for: .seconds(ctx.param("hold")' "$flows" || { echo "dev loop: could not patch the copy's flow" >&2; exit 1; }
export FLOWKIT_PATH="$root"
log="$work/dev.log"
( cd "$work/MyFlows" && exec make dev SWIFT_BUILD_FLAGS="--scratch-path $root/.build-myflows" DEV_FLAGS="--port $port" ) >"$log" 2>&1 &
dev=$!
cleanup() {
  kill -TERM "$dev" 2>/dev/null || true
  # make exec'd the supervisor: it stops its stack and servers on SIGTERM.
  for _ in $(seq 1 300); do kill -0 "$dev" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$dev" 2>/dev/null || true
  [ -n "${KEEP_DEV_LOOP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
wait_for() {  # wait_for PATTERN SECONDS
  for _ in $(seq 1 $(( $2 * 10 ))); do
    grep -q "$1" "$log" && return 0
    kill -0 "$dev" 2>/dev/null || { echo "dev loop: flowctl dev exited:" >&2; tail -40 "$log" >&2; exit 1; }
    sleep 0.1
  done
  echo "dev loop: no \`$1\` within $2 s:" >&2; tail -40 "$log" >&2; exit 1
}
wait_for "dev: version 1 running" 1200
cli="$work/MyFlows/.flowkit/myflowctl-dev"
export FLOWKIT_API_URL="http://127.0.0.1:$port" FLOWKIT_API_TOKEN="$(cat "$work/MyFlows/.flowkit/admin-token")"
rows_of_run() {  # triggers daily_report, waits, prints fetch's rows
  local run
  run=$("$cli" trigger daily_report --wait --timeout 120s | awk '/^triggered /{print $NF; exit}' || true)
  [ -n "$run" ] || { echo "dev loop: no run was triggered" >&2; return 1; }
  curl -sf -H "Authorization: Bearer $FLOWKIT_API_TOKEN" "$FLOWKIT_API_URL/api/v1/runs/$run/tasks" \
    | python3 -c 'import json,sys
tasks = json.load(sys.stdin)["tasks"]
bad = [t["taskId"] + ": " + t["state"] for t in tasks if t["state"] != "success"]
if bad: sys.exit("dev loop: run '"$run"' did not succeed: " + ", ".join(bad))
print([t for t in tasks if t["taskId"] == "fetch"][0]["result"]["rows"])'
}
got=$(rows_of_run)
[ "$got" = 1200 ] || { echo "dev loop: version 1's fetch returned $got rows, not 1200" >&2; exit 1; }
echo "dev loop: version 1 runs; fetch returns $got rows"
# A run that is still going when the first change is saved.
api() { curl -sf -H "Authorization: Bearer $FLOWKIT_API_TOKEN" "$FLOWKIT_API_URL$1"; }
held=$("$cli" trigger daily_report --conf '{"hold": 8}' | tail -1)
for _ in $(seq 1 200); do
  api "/api/v1/runs/$held/tasks" | python3 -c 'import json,sys; sys.exit(0 if any(t["taskId"]=="publish" and t["state"]=="running" for t in json.load(sys.stdin)["tasks"]) else 1)' && break
  sleep 0.1
done
times=()
for i in $(seq 1 "$repeats"); do
  want=$((1200 + i))
  sleep 1.1   # a new modification time even on a filesystem with whole-second times
  sed -i -E "s/return \[\"rows\": [0-9]+\]/return [\"rows\": $want]/" "$work/MyFlows/Sources/MyFlows/MyFlows.swift"
  wait_for "dev: version $((i + 1)) running" 600
  t=$(grep "dev: version $((i + 1)) running" "$log" | sed -E 's/.* running ([0-9.]+) s after the save.*/\1/')
  times+=("$t")
  grep "dev: version $((i + 1)) running" "$log"
  got=$(rows_of_run)
  [ "$got" = "$want" ] || { echo "dev loop: after the change, fetch returned $got rows, not $want" >&2; tail -20 "$log" >&2; exit 1; }
  echo "dev loop: version $((i + 1)) runs; fetch returns $got rows"
  if [ "$i" = 1 ]; then
    # The held run, started on version 1, finishes there: its state, fetch's old result, and the
    # version 1 worker retired only once it is done.
    for _ in $(seq 1 300); do
      state=$(api "/api/v1/runs/$held" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
      [ "$state" = running ] || [ "$state" = queued ] || break; sleep 0.1
    done
    [ "$state" = success ] || { echo "dev loop: the run in flight during the swap ended $state" >&2; tail -20 "$log" >&2; exit 1; }
    old=$(api "/api/v1/runs/$held/tasks" | python3 -c 'import json,sys; print([t for t in json.load(sys.stdin)["tasks"] if t["taskId"]=="fetch"][0]["result"]["rows"])')
    [ "$old" = 1200 ] || { echo "dev loop: the run in flight got $old rows" >&2; exit 1; }
    wait_for "dev: the worker of version 1 stopped" 60
    echo "dev loop: the run in flight during the swap finished on version 1; then its worker stopped"
  fi
done
# A change that does not compile: printed once, the running version goes on.
sleep 1.1
sed -i -E 's/return \["rows": ([0-9]+)\]/return ["rows": \1 +]/' "$work/MyFlows/Sources/MyFlows/MyFlows.swift"
wait_for "dev: the build failed" 600
[ "$(grep -c 'dev: the build failed' "$log")" = 1 ] || { echo "dev loop: the failed build was reported more than once" >&2; exit 1; }
grep -q "error:" "$log" || { echo "dev loop: the compiler's error was not printed" >&2; exit 1; }
got=$(rows_of_run)
[ "$got" = "$want" ] || { echo "dev loop: after a failed build, fetch returned $got rows, not $want" >&2; exit 1; }
echo "dev loop: a failed build is printed once and version $((repeats + 1)) keeps running"
# Every older worker has been stopped once its runs were done: one worker is left online.
for _ in $(seq 1 300); do
  online=$(api "/api/v1/workers" | python3 -c 'import json,sys; print(sum(1 for w in json.load(sys.stdin)["workers"] if w["state"]=="online"))')
  [ "$online" = 1 ] && break; sleep 0.1
done
[ "$online" = 1 ] || { echo "dev loop: $online workers online after the swaps, not 1:" >&2; api "/api/v1/workers" >&2; echo >&2
  api "/api/v1/runs?state=running" >&2; echo >&2; api "/api/v1/runs?state=queued" >&2; exit 1; }
grep -E '^dev:' "$log" | sed 's/^/  | /'
if [ "$mode" = bench ]; then
  python3 - "${times[@]}" <<'PY'
import statistics, sys
v = [float(x) for x in sys.argv[1:]]
print(f"BENCH id=W13 metric=save_to_running_s value={statistics.median(v):.3g} runs={len(v)} min={min(v):.3g} max={max(v):.3g}")
PY
fi
