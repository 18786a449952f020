#!/bin/bash
# `make test`: starts PostgreSQL and Redis for the tests, runs every test, stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/services.sh start)"
trap 'scripts/services.sh stop' EXIT INT TERM
swift build --build-tests
# Integration suites share one PostgreSQL and Redis: run tests one at a time.
swift test --skip-build --no-parallel 2>&1 | tee .flowkit/test/swift-test.log
