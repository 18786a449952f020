#!/bin/bash
# The local stack, as `make start|stop|status|logs|reset`: flowctl standalone in the background
# (the dashboard and API, a scheduler, two workers, its own PostgreSQL and Redis), with every
# bit of state under $FLOWKIT_HOME (.flowkit/), so that `make stop && make start` keeps all runs.
#   scripts/local.sh start|stop|status|logs|reset      env: FLOWCTL, FLOWKIT_HOME, PORT, FORCE=1
set -uo pipefail
cd "$(dirname "$0")/.."
flowctl="${FLOWCTL:-.build/debug/flowctl}"
home="${FLOWKIT_HOME:-.flowkit}"
port="${PORT:-8080}"
pidfile="$home/standalone.pid"
log="$home/standalone.log"
export FLOWKIT_HOME="$home"

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
url() { cat "$home/standalone.url" 2>/dev/null || echo "http://127.0.0.1:$port"; }

case "${1:-}" in
  start)
    if running; then echo "FlowKit is already running (pid $(cat "$pidfile")) on $(url)"; exit 0; fi
    mkdir -p "$home"
    nohup "$flowctl" standalone --port "$port" >>"$log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    echo "http://127.0.0.1:$port" >"$home/standalone.url"
    for i in $(seq 1 600); do
      if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
        echo "FlowKit is up: the dashboard at http://127.0.0.1:$port/ (admin token in $home/admin-token)"
        echo "  export FLOWKIT_API_URL=http://127.0.0.1:$port FLOWKIT_API_TOKEN=\$(cat $home/admin-token)"
        echo "  make logs · make status · make stop"
        exit 0
      fi
      if ! running; then echo "FlowKit did not start; the end of $log:" >&2; tail -20 "$log" >&2; rm -f "$pidfile"; exit 1; fi
      sleep 0.2
    done
    echo "FlowKit is not healthy after 120 s; see $log (make logs)" >&2; exit 1 ;;
  stop)
    if ! running; then echo "FlowKit is not running"; rm -f "$pidfile"; exit 0; fi
    pid=$(cat "$pidfile")
    kill -TERM "$pid"
    for i in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then echo "FlowKit (pid $pid) did not stop in 30 s; sending SIGKILL" >&2; kill -KILL "$pid"; fi
    rm -f "$pidfile"
    echo "FlowKit stopped; its data stays in $home (make start brings it back, make reset wipes it)" ;;
  status)
    if running; then
      echo "FlowKit is running (pid $(cat "$pidfile")) on $(url)"
      curl -s "$(url)/health"; echo
    else
      echo "FlowKit is not running (make start)"; exit 3
    fi ;;
  logs)
    touch "$log"; exec tail -n 50 -f "$log" ;;
  reset)
    if [ "${FORCE:-}" != "1" ]; then
      read -r -p "Delete every run, log and setting of the local FlowKit in $home? [y/N] " answer
      case "$answer" in y|Y|yes) ;; *) echo "nothing deleted"; exit 1 ;; esac
    fi
    "$0" stop >/dev/null
    rm -rf "$home/postgres" "$home/redis" "$home/data" "$home/admin-token" "$home/ports" "$home/initdb.log" "$home/standalone.log" "$home/standalone.url" "$home/services.sh" "$home/secrets" "$home/standalone.lock"
    echo "local FlowKit state deleted (the test and bench tools under $home are kept)" ;;
  *)
    echo "usage: scripts/local.sh start|stop|status|logs|reset" >&2; exit 2 ;;
esac
