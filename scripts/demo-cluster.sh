#!/usr/bin/env bash
# Cluster mode, end to end (docs/cluster.md): three hosts in network
# namespaces converge from one etcd. Nobody configures a tunnel: each host's
# overlayd registers itself, the network and its forwarding rules are written
# once into etcd, each host registers its workload with `overlayctl cluster
# endpoints add`, and every host derives its tunnels, FDB entries and flood
# list. Then all workloads ping each other, and host-c dies: its lease
# expires and the others drop its tunnel.
#
#   wl-X 198.51.100.X --- host-X: overlayd --- ul ---+--- br0 (192.0.2.0/24, also etcd at 192.0.2.100)
#
# Needs root. PROFILE=debug uses a debug build. Everything it creates is
# removed on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "demo-cluster: run as root (namespaces, veth, XDP)" >&2; exit 1; }
scripts/setup.sh
PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then
  cargo build --quiet --release -p dataplane --bins
else
  cargo build --quiet -p dataplane --bins
fi
BIN=${CARGO_TARGET_DIR:-$PWD/target}/$PROFILE
P=dcl$$
W=$(mktemp -d /tmp/overlayd-demo-cluster.XXXX)
HOSTS=(a b c)
NS=("$P-sw" "$P-etcd")
for h in "${HOSTS[@]}"; do NS+=("$P-host-$h" "$P-wl-$h"); done

cleanup() {
  set +e
  for n in "${NS[@]}"; do for p in $(ip netns pids "$n" 2>/dev/null); do kill "$p" 2>/dev/null; done; done
  sleep 0.5
  for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null; done
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
nsx() { local n=$1; shift; ip netns exec "$P-$n" "$@"; }
etcdctl() { nsx etcd /usr/bin/etcdctl --endpoints=http://192.0.2.100:2379 "$@"; }

say "an underlay switch, etcd, and three hosts with one workload each"
for n in "${NS[@]}"; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip -n "$P-sw" link add br0 type bridge
ip -n "$P-sw" link set br0 up
plug() { # namespace device-there switch-port address
  ip link add "$2" netns "$1" type veth peer name "$3" netns "$P-sw"
  ip -n "$1" link set dev "$2" up
  ip -n "$P-sw" link set dev "$3" master br0 up
  ip -n "$1" addr add "$4/24" dev "$2"
}
plug "$P-etcd" eth0 se 192.0.2.100
i=1
for h in "${HOSTS[@]}"; do
  plug "$P-host-$h" ul "s$h" "192.0.2.$i"
  ip link add wl netns "$P-host-$h" type veth peer name eth0 netns "$P-wl-$h"
  ip -n "$P-host-$h" link set dev wl up mtu 1450
  ip -n "$P-wl-$h" link set dev eth0 up mtu 1450 address "02:00:00:00:00:0$i"
  ip -n "$P-wl-$h" addr add "198.51.100.$i/24" dev eth0
  i=$((i + 1))
done
nsx etcd etcd --data-dir "$W/etcd" --listen-client-urls http://192.0.2.100:2379 \
  --advertise-client-urls http://192.0.2.100:2379 --listen-peer-urls http://127.0.0.1:2380 \
  >"$W/etcd.log" 2>&1 &
for _ in $(seq 100); do etcdctl endpoint health >/dev/null 2>&1 && break; sleep 0.1; done

say "the desired state, written once: network blue (VNI 42) and its forwarding rules"
etcdctl put /overlayd/v1/networks/blue '{"vni":42}'
etcdctl put /overlayd/v1/rules/2147483648 \
  '{"rule":{"id":2147483648,"match":{"in_port":"wl0"},"actions":[{"forward_l2":42}]}}'
etcdctl put /overlayd/v1/rules/2147483649 \
  '{"rule":{"id":2147483649,"match":{"vni":42},"actions":[{"forward_l2":42}]}}'

i=1
for h in "${HOSTS[@]}"; do
  cat >"$W/$h.toml" <<EOF
[[ports]]
name = "up0"
kind = "uplink"
interface = "ul"

[[ports]]
name = "wl0"
kind = "workload"
interface = "wl"

[[flood]]
vni = 42
tunnels = []
ports = ["wl0"]

[cluster]
endpoints = ["http://192.0.2.100:2379"]
node = "host-$h"
vteps = ["192.0.2.$i"]
uplink = "up0"
lease_ttl_secs = 3
EOF
  nsx "host-$h" "$BIN/overlayd" run --config "$W/$h.toml" --state-dir "$W/$h.state" \
    --socket "$W/$h.sock" --workers 1 2>"$W/$h.log" &
  i=$((i + 1))
done
ctl() { local h=$1; shift; "$BIN/overlayctl" --socket "$W/$h.sock" "$@"; }
for h in "${HOSTS[@]}"; do
  for _ in $(seq 100); do ctl "$h" status >/dev/null 2>&1 && break; sleep 0.1; done
done

say "each host registers its workload"
i=1
for h in "${HOSTS[@]}"; do
  ctl "$h" cluster endpoints add --network blue --mac "02:00:00:00:00:0$i" --ip "198.51.100.$i"
  i=$((i + 1))
done
for _ in $(seq 100); do
  [ "$(ctl a fdb list | wc -l)" -ge 3 ] && [ "$(ctl c fdb list | wc -l)" -ge 3 ] && break
  sleep 0.1
done
ctl a cluster status
ctl a cluster nodes
ctl a cluster endpoints list
say "what host-a derived: a tunnel per peer, an FDB entry per remote workload, the flood list"
ctl a tunnel list | cut -f1-5
ctl a fdb list
ctl a --json config get | /usr/bin/python3 -c 'import json,sys; print("flood:", json.load(sys.stdin)["flood"])'

say "every workload pings every other"
for from in 1 2 3; do
  for to in 1 2 3; do
    [ $from = $to ] && continue
    h=${HOSTS[$((from - 1))]}
    nsx "wl-$h" ping -c 2 -i 0.2 -W 2 "198.51.100.$to" | tail -1 | sed "s/^/198.51.100.$from -> 198.51.100.$to: /"
  done
done

say "host-c dies: its lease (3 s) expires and host-a drops its tunnel"
for p in $(ip netns pids "$P-host-c"); do kill -9 "$p"; done
start=$(date +%s%N)
for _ in $(seq 100); do ctl a tunnel list | grep -q host-c || break; sleep 0.1; done
echo "host-c gone from host-a after $(( ($(date +%s%N) - start) / 1000000 )) ms"
ctl a tunnel list | cut -f1-5
nsx wl-a ping -c 2 -i 0.2 -W 2 198.51.100.2 | tail -1
