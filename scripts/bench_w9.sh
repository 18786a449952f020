#!/bin/bash
# W9 (docs/benchmarks.md): the dashboard with big flows, measured in headless chromium.
# Runs against the bench servers and database that scripts/bench.sh started; usage:
# scripts/bench_w9.sh FLOWCTL REPEATS. Prints BENCH lines; asserts nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
flowctl="$(realpath "$1")"; repeats="${2:-3}"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "# W9 skipped: chromium and chromium-driver are not installed (scripts/deps.sh installs them)"; exit 0
fi
python="$(scripts/testvenv.sh)"
out=.flowkit/bench/w9; mkdir -p "$out"
export FLOWKIT_DATABASE_URL=postgres://flowkit@127.0.0.1:55532/bench FLOWKIT_REDIS_URL=redis://127.0.0.1:56479/0 FLOWKIT_LOG_LEVEL=warning
export FLOWKIT_API_TOKENS="admin:bench-admin" FLOWKIT_API_URL=http://127.0.0.1:18190 FLOWKIT_API_TOKEN=bench-admin
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
"$python" scripts/bench_w9.py "$FLOWKIT_API_URL" bench-admin "${runs[0]}" "$w1" "$repeats"
