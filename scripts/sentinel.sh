#!/bin/bash
# Starts (or stops) a Redis master with two replicas and three sentinels (Debian's redis-server and
# redis-sentinel) on loopback, master name `flowkit`: what the Sentinel tests and `make faults`
# fail over. `start` prints FLOWKIT_TEST_SENTINEL_URL (redis+sentinel://…/flowkit/0).
#
#   scripts/sentinel.sh start|stop|master|in-sync
#
# FLOWKIT_TEST_SENTINEL_PORT: the first port (26700): the master is there, the replicas on the
# next two ports, the sentinels 100 above (26800-26802). `master` prints the master's port now;
# `in-sync` waits until both replicas follow it with its data.
set -euo pipefail
[ -n "${FLOWKIT_TEST_HOME:-}" ] || cd "$(dirname "$0")/.."
base="${FLOWKIT_TEST_SENTINEL_PORT:-26700}"
dir="${FLOWKIT_TEST_HOME:-$PWD/.flowkit/test}/sentinel-$base"
command -v redis-sentinel >/dev/null 2>&1 || { echo "redis-sentinel is not installed: run \`make deps\` (apt-get install redis-sentinel)" >&2; exit 1; }

stop() {
  for f in "$dir"/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null || true)
    [ -z "$pid" ] || kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  done
  # Whatever still listens on the group's ports (a run that died before writing its pid files):
  # a leftover server in a deleted directory would join the next group and never resync.
  for port in $base $((base + 1)) $((base + 2)) $((base + 100)) $((base + 101)) $((base + 102)); do
    for pid in $(ss -ltnpH "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do kill -9 "$pid" 2>/dev/null || true; done
  done
}

case "${1:-}" in
start)
  stop
  rm -rf "$dir"; mkdir -p "$dir"
  for i in 0 1 2; do
    port=$((base + i))
    args=(--port "$port" --bind 127.0.0.1 --daemonize yes --pidfile "$dir/redis-$i.pid" --logfile "$dir/redis-$i.log"
          --dir "$dir" --dbfilename "dump-$i.rdb" --appendonly yes --appendfilename "aof-$i.aof" --appenddirname "aof-$i" --save "")
    [ $i = 0 ] || args+=(--replicaof 127.0.0.1 "$base")
    redis-server "${args[@]}"
  done
  for i in 0 1 2; do
    port=$((base + 100 + i))
    cat >"$dir/sentinel-$i.conf" <<CONF
port $port
bind 127.0.0.1
daemonize yes
pidfile $dir/sentinel-$i.pid
logfile $dir/sentinel-$i.log
dir $dir
sentinel monitor flowkit 127.0.0.1 $base 2
sentinel down-after-milliseconds flowkit 1000
sentinel failover-timeout flowkit 6000
sentinel parallel-syncs flowkit 2
CONF
    redis-sentinel "$dir/sentinel-$i.conf"
  done
  # Ready when every sentinel sees both replicas and the two other sentinels (hellos go every 2 s).
  for _ in $(seq 1 600); do
    ok=1
    for i in 0 1 2; do
      p=$((base + 100 + i))
      [ "$(redis-cli -p "$p" SENTINEL replicas flowkit 2>/dev/null | grep -c '^name$' || true)" = 2 ] || ok=0
      [ "$(redis-cli -p "$p" SENTINEL sentinels flowkit 2>/dev/null | grep -c '^name$' || true)" = 2 ] || ok=0
    done
    [ $ok = 1 ] && break
    sleep 0.1
  done
  [ $ok = 1 ] || { echo "sentinel: the sentinels did not see each other and both replicas in 60 s; logs in $dir" >&2; stop; exit 1; }
  echo "export FLOWKIT_TEST_SENTINEL_URL=redis+sentinel://127.0.0.1:$((base + 100)),127.0.0.1:$((base + 101)),127.0.0.1:$((base + 102))/flowkit/0"
  ;;
master)
  redis-cli -p $((base + 100)) SENTINEL get-master-addr-by-name flowkit | tail -1 ;;
in-sync)
  # Waits (up to 60 s) until the group has converged: every sentinel names the same master, the
  # two other servers are its replicas (ROLE slave, link up, following it) and have its
  # replication offset of a moment ago. Prints the seconds it took. A failover's promoted
  # replica and the reconfigured one take seconds to sync under load; a master lost before
  # then fails over to a replica without its data — no client can make up for that.
  t0=$(date +%s.%N)
  for _ in $(seq 1 600); do
    m=$(redis-cli -p $((base + 100)) SENTINEL get-master-addr-by-name flowkit 2>/dev/null | tail -1)
    ok=1
    for i in 1 2; do
      [ "$(redis-cli -p $((base + 100 + i)) SENTINEL get-master-addr-by-name flowkit 2>/dev/null | tail -1)" = "$m" ] || ok=0
    done
    target=$(redis-cli -p "$m" INFO replication 2>/dev/null | tr -d '\r' | sed -n 's/^master_repl_offset://p')
    for i in 0 1 2; do
      p=$((base + i)); [ "$p" = "$m" ] && continue
      info=$(redis-cli -p "$p" INFO replication 2>/dev/null | tr -d '\r')
      echo "$info" | grep -q "^role:slave" && echo "$info" | grep -q "^master_port:$m$" && echo "$info" | grep -q "^master_link_status:up" || ok=0
      off=$(echo "$info" | sed -n 's/^slave_repl_offset://p')
      [ -n "$target" ] && [ -n "$off" ] && [ "$off" -ge "$target" ] || ok=0
    done
    [ $ok = 1 ] && { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f\n", b - a }'; exit 0; }
    sleep 0.1
  done
  echo "sentinel: the group did not converge in 60 s (master :$m); logs in $dir" >&2; exit 1 ;;
stop)
  stop ;;
*)
  echo "usage: $0 start|stop|master|in-sync" >&2; exit 2 ;;
esac
