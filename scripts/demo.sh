#!/bin/bash
# `make demo`: standalone in the background (private PostgreSQL and Redis under .flowkit/),
# then `flowctl trigger catalunya_data_pipeline --wait`; exits with the run's outcome.
set -uo pipefail
cd "$(dirname "$0")/.."
flowctl="${1:-.build/debug/flowctl}"
port="${FLOWKIT_DEMO_PORT:-8080}"
mkdir -p .flowkit
log=.flowkit/standalone.log
"$flowctl" standalone --port "$port" >"$log" 2>&1 &
pid=$!
stop() { kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
trap stop EXIT INT TERM
export FLOWKIT_API_URL="http://127.0.0.1:$port"
for i in $(seq 1 300); do
  if "$flowctl" flows list >/dev/null 2>&1; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then echo "standalone did not start; its log:"; cat "$log"; exit 1; fi
  sleep 0.2
done
export FLOWKIT_API_TOKEN="$(cat .flowkit/admin-token)"
echo "FlowKit standalone is up on $FLOWKIT_API_URL (log: $log)"
echo
"$flowctl" flows list
echo
# build_marts runs `dbt build` in the virtualenv a worker builds once (dbt-core and dbt-postgres,
# pinned, from PyPI, under .flowkit/venvs/): built here the first time, so that it says so.
FLOWKIT_HOME=.flowkit "$flowctl" venv >/dev/null || { echo "could not install dbt: catalunya_data_pipeline's build_marts needs it"; exit 1; }
echo "\$ flowctl trigger catalunya_data_pipeline --wait"
"$flowctl" trigger catalunya_data_pipeline --wait | tee .flowkit/demo-run.txt
status=${PIPESTATUS[0]}
run=$(sed -n 's/^run \(.*\): [a-z_]* in .*/\1/p' .flowkit/demo-run.txt | tail -1)
echo
echo "the marts it built (first rows of marts.municipality_exceedances):"
pgport=$(sed -n 's/.*pg=\([0-9]*\).*/\1/p' .flowkit/ports 2>/dev/null)
# The private PostgreSQL wants the password standalone generated (.flowkit/secrets, mode 0600).
PGPASSWORD=$(sed -n 's/^pg_password=//p' .flowkit/secrets 2>/dev/null) \
psql "${FLOWKIT_DATABASE_URL:-postgres://flowkit@127.0.0.1:${pgport:-54329}/flowkit}" -c "select municipality, pollutant, day, mean_value, exceeded from marts.municipality_exceedances where exceeded order by day, municipality limit 5" 2>/dev/null || true
echo
echo "the dashboard: \`make run\` serves it, with this run, at"
echo "  http://127.0.0.1:$port/#/runs/$run"
echo "flowctl on your PATH: \`make install\` (a release build in /usr/local/bin), or for this shell:"
echo "  export PATH=\"$(dirname "$(realpath "$flowctl")"):\$PATH\""
exit $status
