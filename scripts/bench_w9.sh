#!/bin/bash
# W9 (docs/benchmarks.md): the dashboard with big flows, measured in headless chromium.
# Runs against the bench servers and database that scripts/bench.sh started; usage:
# scripts/bench_w9.sh FLOWCTL REPEATS. Prints BENCH lines; asserts nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
workload=W9 out_name=w9
. scripts/bench_browser_env.sh
export FLOWKIT_API_URL=http://127.0.0.1:18190
"$flowctl" bench scheduler >"$out/scheduler.log" 2>&1 & s=$!
"$flowctl" bench worker --concurrency 4 >"$out/worker.log" 2>&1 & w=$!
"$flowctl" server --port 18190 >"$out/api.log" 2>&1 & a=$!
trap 'kill -TERM $s $w $a 2>/dev/null; wait $s $w $a 2>/dev/null' EXIT
for i in $(seq 1 150); do curl -sf "$FLOWKIT_API_URL/health" >/dev/null && break; sleep 0.2; done
runs=()
for i in $(seq 1 25); do runs+=("$("$flowctl" trigger bench_w9)"); done
w1=$("$flowctl" trigger bench_w1)
for r in "${runs[@]}" "$w1"; do
  until curl -sf -H "Authorization: Bearer bench-admin" "$FLOWKIT_API_URL/api/v1/runs/$r" | grep -q '"state":"success"'; do sleep 0.5; done
done
PYTHONPATH=scripts "$python" scripts/bench_w9.py "$FLOWKIT_API_URL" bench-admin "${runs[0]}" "$w1" "$repeats"
