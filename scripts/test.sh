#!/bin/bash
# `make test`: starts PostgreSQL, PgBouncer, Redis and a Redis Sentinel group for the tests, checks the OpenAPI document with a real
# validator, renders and validates the Kubernetes manifests, fuzzes the live API with Schemathesis, runs every test, the dashboard in a browser, Airflow's
# Python client against /api/v2 and docs/deploying.md on network namespaces, and stops the servers.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/services.sh start)"
trap 'scripts/sentinel.sh stop; scripts/pgbouncer.sh stop; scripts/services.sh stop' EXIT INT TERM
# PgBouncer (transaction mode) in front of it: the pooled-connection tests, and the subset below.
eval "$(scripts/pgbouncer.sh start)"
# A Redis master with two replicas and three sentinels, for the Sentinel tests.
eval "$(scripts/sentinel.sh start)"
# A real Celery 5 client for the interop tests.
scripts/celery/venv.sh >/dev/null
# An S3-compatible server (moto) and boto3 for the object-storage tests.
scripts/s3/venv.sh >/dev/null

if ! python3 -c "import openapi_spec_validator" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check openapi-spec-validator
fi
python3 -m openapi_spec_validator Sources/FlowServer/openapi.json
# The Kubernetes manifests: every overlay rendered and validated (schemas of the two newest
# Kubernetes versions, strict) and their references checked.
scripts/k8s_validate.sh

swift build
# Schemathesis against a live API: no generated request may get a 5xx or hang.
scripts/fuzz.sh .build/debug/flowctl >.flowkit/test/fuzz.log 2>&1 || { tail -60 .flowkit/test/fuzz.log; exit 1; }
tail -3 .flowkit/test/fuzz.log
swift build --build-tests
# The integration suites share one PostgreSQL and Redis: run tests one at a time.
swift test --skip-build --no-parallel 2>&1 | tee .flowkit/test/swift-test.log
# The schedulers' and the API's suites again with every test database behind PgBouncer in
# transaction mode (sessions direct, as FLOWKIT_DATABASE_DIRECT_URL does), and the liveness check
# with the API and two schedulers through it.
FLOWKIT_TEST_VIA_PGBOUNCER=1 swift test --skip-build --no-parallel --filter "$(tr -d ' \n' < scripts/pgbouncer-suites.txt)" 2>&1 \
  | tee .flowkit/test/swift-test-pgbouncer.log | grep -E '✘|Test run'
# Retried as .ci/run retries stress-quick: this two-core VM under 30+ client processes sometimes
# stalls sessions for 20-30 s whatever sits in front of PostgreSQL (.ci/run says what is known).
scripts/stress.py .build/debug/flowctl --quick --pgbouncer \
  || { echo "stress --pgbouncer failed (above); running it again"; scripts/stress.py .build/debug/flowctl --quick --pgbouncer; } \
  || { echo "stress --pgbouncer failed twice (above); running it a third time"; scripts/stress.py .build/debug/flowctl --quick --pgbouncer; }
# The dashboard in a real browser (headless chromium + Selenium); screenshots in .flowkit/screenshots/.
scripts/browser_test.sh .build/debug/flowctl
# Airflow's REST API (/api/v2) driven by Airflow's own Python client, apache-airflow-client.
scripts/airflow_client_test.sh .build/debug/flowctl
# docs/deploying.md step by step on network namespaces (needs root, as the multi-host test does).
if [ "$(id -u)" = 0 ]; then
  scripts/deploy_guide_test.sh .build/debug/flowctl
elif [ "${CI:-}" = true ]; then
  echo "deploy guide: needs root for network namespaces" >&2; exit 1
else
  echo "deploy guide: skipped (needs root for network namespaces; CI runs it)"
fi
