#!/bin/sh
# Makes .flowkit/venv-test with the Python test peers from PyPI (an SMTP server, aiosmtpd; Selenium,
# which drives Debian's chromium through its chromedriver; Airflow's official REST client,
# apache-airflow-client, pinned, which drives FlowKit's /api/v2);
# prints its python. Tests call it when the venv is missing.
set -eu
cd "$(dirname "$0")/.."
v=.flowkit/venv-test
if [ ! -x "$v/bin/python" ] || ! "$v/bin/python" -c "import aiosmtpd, selenium, airflow_client.client" 2>/dev/null; then
  mkdir -p .flowkit
  python3 -m venv "$v" >&2 || { rm -rf "$v"; python3 -m pip install --quiet virtualenv >&2 && python3 -m virtualenv -q "$v" >&2; }
  "$v/bin/pip" install --quiet --disable-pip-version-check "aiosmtpd>=1.4,<2" "selenium>=4.20,<5" "apache-airflow-client==3.3.2" >&2
fi
echo "$PWD/$v/bin/python"
