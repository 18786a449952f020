#!/bin/bash
# The dashboard in a real browser (scripts/browser_test.py): a standalone FlowKit on the test
# servers, Debian's headless chromium and chromedriver, Selenium from PyPI. Screenshots go to
# .flowkit/screenshots/. Under CI=true a missing browser fails; elsewhere it is said and skipped.
# Needs the test servers (`make test` starts them and runs this); usage: scripts/browser_test.sh FLOWCTL.
set -euo pipefail
cd "$(dirname "$0")/.."
flowctl="$(realpath "${1:-.build/debug/flowctl}")"
: "${FLOWKIT_TEST_DATABASE_URL:?run under make test (scripts/services.sh start)}"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "${CI:-}" = "true" ]; then echo "browser test: chromium or chromedriver is missing (scripts/deps.sh installs them)" >&2; exit 1; fi
  echo "browser test: SKIPPED — chromium and chromium-driver are not installed (scripts/deps.sh installs them)" >&2
  exit 0
fi
python="$(scripts/testvenv.sh)"
work=.flowkit/browser; rm -rf "$work"; mkdir -p "$work"
psql "$FLOWKIT_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS browser" -c "CREATE DATABASE browser" >/dev/null
export FLOWKIT_DATABASE_URL="${FLOWKIT_TEST_DATABASE_URL%/*}/browser"
export FLOWKIT_REDIS_URL="${FLOWKIT_TEST_REDIS_URL%/*}/4"
export FLOWKIT_API_TOKENS="admin:browser-admin" FLOWKIT_API_OPEN_READS=false FLOWKIT_LOG_LEVEL=warning FLOWKIT_HOME="$work/home"
redis-cli -p "${FLOWKIT_TEST_REDIS_PORT:-26390}" -n 4 FLUSHDB >/dev/null
port=18750
"$flowctl" standalone --port $port >"$work/standalone.log" 2>&1 & app=$!
trap 'kill -TERM $app 2>/dev/null; wait $app 2>/dev/null' EXIT
for i in $(seq 1 150); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done
"$python" scripts/browser_test.py "http://127.0.0.1:$port" browser-admin .flowkit/screenshots || { tail -30 "$work/standalone.log" >&2; exit 1; }
