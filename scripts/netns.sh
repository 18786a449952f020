#!/bin/sh
# Two test hosts in network namespaces (fkA 10.77.1.2, fkB 10.77.2.2), each linked by a veth pair
# to the root namespace (10.77.1.1, 10.77.2.1) where PostgreSQL and Redis run. Needs root.
#   scripts/netns.sh up | down | cut A | restore A
set -eu
n() { [ "$1" = A ] && echo 1 || echo 2; }
case "${1:-}" in
up)
  for h in A B; do
    i=$(n $h)
    ip netns del "fk$h" 2>/dev/null || true
    ip link del "fk$h-root" 2>/dev/null || true
    ip netns add "fk$h"
    ip link add "fk$h-root" type veth peer name "fk$h-host"
    ip link set "fk$h-host" netns "fk$h"
    ip addr add "10.77.$i.1/24" dev "fk$h-root"
    ip link set "fk$h-root" up
    ip netns exec "fk$h" ip addr add "10.77.$i.2/24" dev "fk$h-host"
    ip netns exec "fk$h" ip link set "fk$h-host" up
    ip netns exec "fk$h" ip link set lo up
  done
  ;;
down)
  for h in A B; do ip netns del "fk$h" 2>/dev/null || true; ip link del "fk$h-root" 2>/dev/null || true; done
  ;;
cut)     ip link set "fk$2-root" down ;;
restore) ip link set "fk$2-root" up ;;
*) echo "usage: $0 up|down|cut A|B|restore A|B" >&2; exit 2 ;;
esac
