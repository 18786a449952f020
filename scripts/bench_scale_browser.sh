#!/bin/bash
# W10 and W12 in the dashboard (docs/benchmarks.md), in headless chromium: the flow list with a
# thousand flows, and the grid of a flow with 100,000 runs in a database of a million. Runs after
# `flowctl bench run --only W10,W11,W12` seeded the bench database that scripts/bench.sh started;
# usage: scripts/bench_scale_browser.sh FLOWCTL REPEATS. Prints BENCH lines; asserts nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
workload="W10/W12 in the browser" out_name=scale
. scripts/bench_browser_env.sh
export FLOWKIT_API_URL=http://127.0.0.1:18191
# The scale set's scheduler keeps W10's thousand flows active (the flow list shows active flows).
"$flowctl" bench scheduler --set scale --name bench-scale-browser >"$out/scheduler.log" 2>&1 & s=$!
"$flowctl" server --port 18191 >"$out/api.log" 2>&1 & a=$!
trap 'kill -TERM $s $a 2>/dev/null; wait $s $a 2>/dev/null' EXIT
PYTHONPATH=scripts "$python" scripts/bench_scale.py "$FLOWKIT_API_URL" bench-admin "$repeats"
