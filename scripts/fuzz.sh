#!/bin/bash
# Schemathesis (from PyPI, pinned) against a live API: every operation of the OpenAPI document with
# generated valid and invalid input — examples, boundary values, fuzzing. A 5xx answer, or a
# request that takes more than 20 s, fails. Needs the test servers (`make test` starts them and
# runs this); usage: scripts/fuzz.sh FLOWCTL.
set -euo pipefail
cd "$(dirname "$0")/.."
flowctl="$(realpath "${1:-.build/debug/flowctl}")"
: "${FLOWKIT_TEST_DATABASE_URL:?run under make test (scripts/services.sh start)}"
v=.flowkit/venv-fuzz
if [ ! -x "$v/bin/schemathesis" ]; then
  python3 -m venv "$v" >&2 || { rm -rf "$v"; python3 -m pip install --quiet virtualenv >&2 && python3 -m virtualenv -q "$v" >&2; }
  "$v/bin/pip" install --quiet --disable-pip-version-check "schemathesis==4.32.5" >&2
fi
work=.flowkit/fuzz; rm -rf "$work"; mkdir -p "$work"
psql "$FLOWKIT_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS fuzz" -c "CREATE DATABASE fuzz" >/dev/null
export FLOWKIT_DATABASE_URL="${FLOWKIT_TEST_DATABASE_URL%/*}/fuzz"
export FLOWKIT_REDIS_URL="${FLOWKIT_TEST_REDIS_URL%/*}/3"
export FLOWKIT_API_TOKENS="admin:fuzz-admin" FLOWKIT_API_OPEN_READS=false FLOWKIT_LOG_LEVEL=warning
# Connections and variables are sealed with this key (a fixed one: the fuzz database is thrown away).
export FLOWKIT_SECRET_KEY="ZnV6ei1rZXktZm9yLWZsb3draXQtdGVzdHMtb25seSE="
redis-cli -p "${FLOWKIT_TEST_REDIS_PORT:-26390}" -n 3 FLUSHDB >/dev/null
"$flowctl" migrate >/dev/null
port=18700
# The API and a scheduler (for /health); no worker: the runs the fuzzer makes just wait.
"$flowctl" server --port $port >>"$work/api.log" 2>&1 & api=$!
"$flowctl" scheduler >>"$work/scheduler.log" 2>&1 & sched=$!
trap 'kill -TERM $api $sched 2>/dev/null; wait $api $sched 2>/dev/null' EXIT
for i in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done

# One worker: with two, hypothesis parses lambdas' source from two threads at once and CPython
# 3.11 can fail with "SystemError: AST constructor recursion depth mismatch" (seen 2026-12-04,
# a runtime error of the fuzzer, not of the API).
"$v/bin/schemathesis" run "http://127.0.0.1:$port/api/v1/openapi.json" --url "http://127.0.0.1:$port" \
  -H "Authorization: Bearer fuzz-admin" --exclude-path /api/v1/events/stream --checks not_a_server_error --request-timeout 20 \
  --phases examples,coverage,fuzzing --max-examples "${FUZZ_EXAMPLES:-100}" --seed 17 --workers 1 \
  --suppress-health-check all --warnings off --no-color 2>&1 | tee "$work/schemathesis.log"
status=${PIPESTATUS[0]}
if grep -q "unexpected error on" "$work/api.log"; then
  echo "the API logged unexpected errors:" >&2; grep "unexpected error on" "$work/api.log" | head -5 >&2; status=1
fi
exit "$status"
