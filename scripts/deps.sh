#!/bin/sh
# Installs the Debian packages FlowKit needs, when they are missing (or always, with --update,
# as CI does on a fresh machine). Needs root or sudo.
set -eu
pkgs="libpq-dev libhiredis-dev libcurl4-openssl-dev openssl postgresql postgresql-client redis-server redis-tools curl iproute2 chromium chromium-driver python3 python3-venv pgbouncer redis-sentinel wrk"
missing=""
for p in $pkgs; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -z "$missing" ] && [ "${1:-}" != "--update" ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing:${missing:- (refreshing package lists)}"
$SUDO apt-get update -q
if [ -n "$missing" ]; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
fi
# Debian starts the packaged servers; FlowKit runs its own on other ports, so stop those.
if command -v service >/dev/null 2>&1; then
  $SUDO service redis-server stop >/dev/null 2>&1 || true
  $SUDO service postgresql stop >/dev/null 2>&1 || true
fi
