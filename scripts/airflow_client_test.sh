#!/bin/bash
# FlowKit's Airflow-compatible API (/api/v2) driven by Airflow's own Python client
# (scripts/airflow_client_test.py): a standalone FlowKit on the test servers with an Airflow
# user and a read-only one. Needs the test servers (`make test` starts them and runs this);
# usage: scripts/airflow_client_test.sh FLOWCTL.
set -euo pipefail
cd "$(dirname "$0")/.."
flowctl="$(realpath "${1:-.build/debug/flowctl}")"
: "${FLOWKIT_TEST_DATABASE_URL:?run under make test (scripts/services.sh start)}"
python="$(scripts/testvenv.sh)"
work=.flowkit/airflow-client; rm -rf "$work"; mkdir -p "$work"
psql "$FLOWKIT_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS airflow_client" -c "CREATE DATABASE airflow_client" >/dev/null
export FLOWKIT_DATABASE_URL="${FLOWKIT_TEST_DATABASE_URL%/*}/airflow_client"
export FLOWKIT_REDIS_URL="${FLOWKIT_TEST_REDIS_URL%/*}/6"
export FLOWKIT_API_TOKENS="admin:airflow-client-admin" FLOWKIT_API_OPEN_READS=false FLOWKIT_LOG_LEVEL=warning FLOWKIT_HOME="$work/home"
export FLOWKIT_AIRFLOW_USERS="ci:admin:ci-password-1,ci-reader:read:ci-password-1-reader"
redis-cli -p "${FLOWKIT_TEST_REDIS_PORT:-26390}" -n 6 FLUSHDB >/dev/null
port=18770
"$flowctl" standalone --port $port >"$work/standalone.log" 2>&1 & app=$!
trap 'kill -TERM $app 2>/dev/null; wait $app 2>/dev/null' EXIT
for i in $(seq 1 150); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done
"$python" scripts/airflow_client_test.py "http://127.0.0.1:$port" airflow-client-admin ci ci-password-1 || { tail -30 "$work/standalone.log" >&2; exit 1; }
