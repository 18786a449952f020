#!/bin/sh
# Makes .flowkit/venv-celery with a real Celery 5 (from PyPI) for the interop tests; prints its python.
set -eu
cd "$(dirname "$0")/../.."
v=.flowkit/venv-celery
if [ ! -x "$v/bin/python" ] || ! "$v/bin/python" -c "import celery, redis" 2>/dev/null; then
  python3 -m venv "$v" >&2 || { rm -rf "$v"; python3 -m pip install --quiet virtualenv >&2 && python3 -m virtualenv -q "$v" >&2; }
  "$v/bin/pip" install --quiet --disable-pip-version-check "celery[redis]>=5.3,<6" >&2
fi
echo "$PWD/$v/bin/python"
