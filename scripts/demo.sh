#!/usr/bin/env bash
# The main job, end to end: two hosts in network namespaces, each with a
# workload namespace, joined by an underlay link. Host A runs overlayd; host B
# runs the Linux kernel's own VXLAN device (DEMO_PEER=overlayd runs overlayd
# on both). Pings and a TCP transfer cross the VXLAN overlay (VNI 42), then
# overlayd shows its counters, its I/O and the path of a forwarded and of a
# dropped packet.
#
#   wl-a 198.51.100.1          host-a                 host-b                 wl-b 198.51.100.2
#   eth0 ---veth--- wa  [overlayd: tc, auto] ua ==== ub  [vxlan0 + br0]  wb ---veth--- eth0
#                              192.0.2.1  underlay  192.0.2.2
#
# Needs root. Everything it creates is removed on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (namespaces, veth, XDP)" >&2; exit 1; }
scripts/setup.sh
cargo build --quiet --release -p dataplane --bins
BIN=$PWD/target/release
PEER=${DEMO_PEER:-kernel}
P=demo$$
W=$(mktemp -d /tmp/overlayd-demo.XXXX)
NS=("$P-host-a" "$P-host-b" "$P-wl-a" "$P-wl-b")

cleanup() {
  set +e
  for f in "$W"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
  sleep 0.3
  for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
nsx() { local n=$1; shift; ip netns exec "$P-$n" "$@"; }

say "building host-a, host-b and their workloads"
for n in "${NS[@]}"; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip link add ua netns "$P-host-a" type veth peer name ub netns "$P-host-b"
ip link add wa netns "$P-host-a" type veth peer name eth0 netns "$P-wl-a"
ip link add wb netns "$P-host-b" type veth peer name eth0 netns "$P-wl-b"
for x in "host-a ua" "host-a wa" "host-b ub" "host-b wb" "wl-a eth0" "wl-b eth0"; do
  set -- $x; ip -n "$P-$1" link set "$2" up
done
ip -n "$P-host-a" addr add 192.0.2.1/24 dev ua
ip -n "$P-host-b" addr add 192.0.2.2/24 dev ub
for x in "wl-a 198.51.100.1" "wl-b 198.51.100.2"; do
  set -- $x
  # Room for the 50 bytes of VXLAN over IPv4. Offloads stay as a container's
  # veth has them: the workloads leave TCP/UDP checksums partial, and
  # overlayd finishes them.
  ip -n "$P-$1" link set eth0 mtu 1450
  ip -n "$P-$1" addr add "$2/24" dev eth0
  echo "$1 eth0 $(nsx "$1" ethtool -k eth0 | grep '^tx-checksumming')"
done
# The hosts' ends of the workload links too: `why` reads the port's MTU there.
ip -n "$P-host-a" link set wa mtu 1450
ip -n "$P-host-b" link set wb mtu 1450

config() { # local remote workload-if uplink-if
  cat <<EOF
[[ports]]
name = "wl0"
kind = "workload"
interface = "$3"

[[ports]]
name = "up0"
kind = "uplink"
interface = "$4"

[[tunnels]]
name = "vni42"
type = "vxlan"
uplink = "up0"
local = "$1"
remote = "$2"
vni = 42

[[rules]]
id = 10
priority = 100
match = { in_port = "wl0" }
actions = [{ encap = "vni42" }]

[[rules]]
id = 20
priority = 100
match = { tunnel = "vni42", vni = 42 }
actions = [{ output = "wl0" }]

[[rules]]
id = 30
priority = 200
match = { in_port = "wl0", ip_proto = 6, l4_dst = 23 }   # no telnet across the overlay
actions = ["count", "drop"]
EOF
}

start_overlayd() { # host local remote workload-if uplink-if
  config "$2" "$3" "$4" "$5" >"$W/$1.toml"
  ip netns exec "$P-$1" "$BIN/overlayd" run --config "$W/$1.toml" --state-dir "$W/$1.state" \
    --socket "$W/$1.sock" 2>"$W/$1.log" &
  echo $! >"$W/$1.pid"
  for _ in $(seq 100); do
    "$BIN/overlayctl" --socket "$W/$1.sock" status >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "overlayd on $1 did not start:"; cat "$W/$1.log"; exit 1
}

say "host-a: starting overlayd (its default backend: tc on these veths, so the workloads keep TSO)"
start_overlayd host-a 192.0.2.1 192.0.2.2 wa ua
if [ "$PEER" = overlayd ]; then
  say "host-b: starting overlayd"
  start_overlayd host-b 192.0.2.2 192.0.2.1 wb ub
else
  say "host-b: the kernel's VXLAN device (VNI 42) bridged to its workload"
  ip -n "$P-host-b" link add vxlan0 type vxlan id 42 local 192.0.2.2 remote 192.0.2.1 dstport 4789 dev ub
  ip -n "$P-host-b" link add br0 type bridge
  ip -n "$P-host-b" link set vxlan0 master br0 up
  ip -n "$P-host-b" link set wb master br0 up
  ip -n "$P-host-b" link set br0 up
fi
CTL="$BIN/overlayctl --socket $W/host-a.sock"
for _ in $(seq 50); do $CTL --json status | grep -q '"mac": "' && break; sleep 0.1; done
$CTL status

say "ping wl-a -> wl-b across the overlay"
nsx wl-a ping -c 4 -i 0.2 198.51.100.2
say "ping wl-b -> wl-a"
nsx wl-b ping -c 4 -i 0.2 198.51.100.1

say "TCP: 20 MB from wl-a to wl-b, checked by SHA-256 at both ends"
head -c 20000000 /dev/urandom >"$W/blob"
nsx wl-b timeout 30 nc -l -p 5001 >"$W/received" &
listener=$!
sleep 0.3
start=$(date +%s.%N)
nsx wl-a timeout 30 nc -N 198.51.100.2 5001 <"$W/blob"
wait $listener
end=$(date +%s.%N)
sha_sent=$(sha256sum <"$W/blob" | cut -c1-16)
sha_got=$(sha256sum <"$W/received" | cut -c1-16)
echo "sent $sha_sent..., received $sha_got..., $(awk "BEGIN {printf \"%.0f\", 160/($end-$start)}") Mbit/s"
[ "$sha_sent" = "$sha_got" ] || { echo "the transfer was corrupted"; exit 1; }

say "telnet is dropped by rule 30, and counted"
nsx wl-a timeout 2 nc -z -w 1 198.51.100.2 23 || echo "(refused, as the rule says)"

say "host-a: counters (every packet forwarded or dropped under a named reason)"
sleep 0.3
$CTL counters

say "host-a: the path of a web packet from wl-a, traced live (the workers' code, rules, learned next hops and MACs)"
MAC_A=$(ip -n "$P-wl-a" -br link show eth0 | awk '{print $3}')
MAC_B=$(ip -n "$P-wl-b" -br link show eth0 | awk '{print $3}')
web=$($CTL trace --in-port wl0 --packet \
  "eth(src=$MAC_A,dst=$MAC_B)/ipv4(src=198.51.100.1,dst=198.51.100.2)/tcp(sport=40000,dport=80)")
echo "$web"
if grep -q "DROPPED" <<<"$web" || ! grep -q "^result: frame to up0" <<<"$web"; then
  echo "the live trace does not forward traffic that crosses the overlay"; exit 1
fi
echo "(forwarded: encapsulated towards host-b and sent out of up0, as the pings and TCP above were)"

say "host-a: why would a telnet packet from wl-a go where it goes?"
$CTL trace --in-port wl0 --packet \
  "eth(src=02:00:00:00:00:01,dst=02:00:00:00:00:02)/ipv4(src=198.51.100.1,dst=198.51.100.2)/tcp(sport=40000,dport=23)" || true

say "host-a: why can't wl-a telnet to wl-b, when the web gets through?"
$CTL why --from 198.51.100.1 --to 198.51.100.2 --proto tcp --dport 23
$CTL why --from 198.51.100.1 --to 198.51.100.2 --proto tcp --dport 80

say "host-a: tunnels: traffic each way, drops, last packet, next hop"
$CTL tunnel list

say "stopping overlayd (SIGTERM drains the workers and detaches XDP)"
for f in "$W"/*.pid; do kill "$(cat "$f")"; done
for _ in $(seq 50); do pgrep -f "$W/host-a.toml" >/dev/null || break; sleep 0.1; done
if ip -n "$P-host-a" -d link show | grep -q prog/xdp; then echo "XDP program left attached"; exit 1; fi
echo "done: no XDP program left attached; namespaces are removed on exit"
