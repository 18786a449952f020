#!/bin/sh
# Makes .flowkit/venv-s3 with an S3-compatible server (moto's, from PyPI, `moto[server]`) and boto3,
# the second S3 client the object-storage tests check FlowKit against; prints its python.
set -eu
cd "$(dirname "$0")/../.."
v=.flowkit/venv-s3
if [ ! -x "$v/bin/python" ] || ! "$v/bin/python" -c "import moto.server, boto3, flask_cors" 2>/dev/null; then
  mkdir -p .flowkit
  python3 -m venv "$v" >&2 || { rm -rf "$v"; python3 -m pip install --quiet virtualenv >&2 && python3 -m virtualenv -q "$v" >&2; }
  "$v/bin/pip" install --quiet --disable-pip-version-check "moto[server]>=5.0,<6" "boto3>=1.34,<2" >&2
fi
echo "$PWD/$v/bin/python"
