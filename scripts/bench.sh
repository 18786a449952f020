#!/bin/bash
# `make bench`: the workloads of docs/benchmarks.md for FlowKit (release build) and, in the
# same run, W1–W4 for Celery 5 on Redis (its own virtualenv, made by the peer script), then the
# ratios. Figures are medians of 3 runs with min–max; nothing here asserts a time.
set -uo pipefail
cd "$(dirname "$0")/.."
flowctl="${1:-.build/release/flowctl}"
repeats="${REPEATS:-3}"
peers="${FLOWKIT_PEERS:-scripts/bench/peers}"   # the Celery reference, kept in the repository
out=.flowkit/bench
mkdir -p "$out"

command -v wrk >/dev/null 2>&1 || { apt-get install -y -q --no-install-recommends wrk >/dev/null 2>&1 || echo "# wrk unavailable: W5 skipped"; }

export FLOWKIT_TEST_HOME="$PWD/.flowkit/bench/servers" FLOWKIT_TEST_PG_PORT=25532 FLOWKIT_TEST_REDIS_PORT=26479
export FLOWKIT_TEST_PG_DURABLE=1   # every state change committed with PostgreSQL's default durability
eval "$(scripts/services.sh start)"
trap 'scripts/services.sh stop' EXIT
psql "postgres://flowkit@127.0.0.1:25532/postgres" -qc "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench" >/dev/null

echo "# FlowKit $(git rev-parse --short HEAD 2>/dev/null) on $(nproc) cores, $(date -u +%F)"
FLOWKIT_DATABASE_URL=postgres://flowkit@127.0.0.1:25532/bench FLOWKIT_REDIS_URL=redis://127.0.0.1:26479/0 FLOWKIT_LOG_LEVEL=warning \
  "$flowctl" bench run --repeats "$repeats" | tee "$out/flowkit.txt"

# W7: a fresh data directory to catalunya_data_pipeline's first task running.
w7=()
for i in $(seq 1 "$repeats"); do
  home=$(mktemp -d /tmp/flowkit-w7.XXXXXX)
  chmod 755 "$home"
  port=$((18100 + i))
  t0=$(date +%s.%N)
  FLOWKIT_HOME="$home" FLOWKIT_LOG_LEVEL=warning "$flowctl" standalone --port "$port" >"$out/w7-$i.log" 2>&1 &
  pid=$!
  export FLOWKIT_API_URL="http://127.0.0.1:$port"
  until FLOWKIT_API_TOKEN=$(cat "$home/admin-token" 2>/dev/null) "$flowctl" trigger catalunya_data_pipeline >"$out/w7-run" 2>/dev/null; do
    sleep 0.05
    kill -0 "$pid" 2>/dev/null || break
  done
  run=$(cat "$out/w7-run")
  until "$flowctl" runs show "$run" --json 2>/dev/null | grep -q '"startedAt" : "'; do sleep 0.02; done
  t1=$(date +%s.%N)
  w7+=("$(python3 -c "print(round($t1-$t0,3))")")
  kill -TERM "$pid"; wait "$pid" 2>/dev/null
  rm -rf "$home"
done
python3 - "${w7[@]}" <<'PY' | tee -a "$out/flowkit.txt"
import statistics, sys
v = [float(x) for x in sys.argv[1:]]
print(f"BENCH id=W7 metric=seconds_to_first_task value={statistics.median(v):.3g} runs={len(v)} min={min(v):.3g} max={max(v):.3g}")
PY

# W9: the dashboard with a 1,000-task grid and a 10,000-task run, in headless chromium.
scripts/bench_w9.sh "$flowctl" "$repeats" | tee -a "$out/flowkit.txt"

# W10–W12: a thousand flows, one flow of 5,000 tasks, a million runs — with a scheduler and a
# worker that carry those flows (an invocation of its own: W4 above measured the default set).
FLOWKIT_DATABASE_URL=postgres://flowkit@127.0.0.1:25532/bench FLOWKIT_REDIS_URL=redis://127.0.0.1:26479/0 FLOWKIT_LOG_LEVEL=warning \
  "$flowctl" bench run --repeats "$repeats" --only W10,W11,W12 | tee -a "$out/flowkit.txt"
scripts/bench_scale_browser.sh "$flowctl" "$repeats" | tee -a "$out/flowkit.txt"

# W13: the edit loop — save a one-line change in a copy of Examples/MyFlows under `flowctl dev`,
# until the new version answers (the template's first build is not counted).
scripts/dev_loop.sh bench "$repeats" | tee -a "$out/flowkit.txt"

# Celery on the same machine, same run.
if [ -x "$peers/celery_bench.sh" ] || [ -f "$peers/celery_bench.sh" ]; then
  echo "# Celery 5 (prefork, concurrency 2) via $peers/celery_bench.sh"
  REPEATS="$repeats" bash "$peers/celery_bench.sh" 2>"$out/celery.log" | tee "$out/celery.txt"
else
  echo "# $peers/celery_bench.sh not found: no Celery comparison"
fi

python3 scripts/bench_report.py "$out/flowkit.txt" "$out/celery.txt"
