#!/usr/bin/env bash
# TCP throughput of a workload behind a TAP port, with and without virtio-net
# offloads, across overlayd (VXLAN, uplink on AF_XDP or AF_PACKET) to the
# kernel VXLAN device on a second host, all in namespaces:
#
#   wa [tap] ── ha: overlayd ── veth ── hb: vx0 + br0 ── veth ── wb
#
# Usage: benches/tap/tcp.sh [seconds] [repetitions]   (root)
# Prints one line per run: "<uplink backend> offloads=<on|off> <Gbit/s>",
# then the median of each.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-5}; REPS=${2:-3}
[ "$(id -u)" -eq 0 ] || { echo "tap-tcp: run as root" >&2; exit 1; }
scripts/setup.sh >/dev/null
cargo build --quiet --release -p dataplane --bins
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
W=$(mktemp -d /tmp/taptcp.XXXX)
NS="tt-ha tt-hb tt-wa tt-wb"
cleanup() {
  set +e
  [ -f "$W/pid" ] && kill "$(cat "$W/pid")" 2>/dev/null && sleep 0.5
  for n in $NS; do ip netns del "$n" 2>/dev/null; done
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

run_one() { # backend offloads -> prints Gbit/s
  local backend=$1 off=$2
  for n in $NS; do ip netns add "$n"; done
  ip link add upl netns tt-ha type veth peer name ubl netns tt-hb
  ip link add bw netns tt-hb type veth peer name we netns tt-wb
  ip -n tt-ha link set upl up; ip -n tt-hb link set ubl up; ip -n tt-hb link set bw up
  ip -n tt-wb link set we up
  ip -n tt-ha addr add 192.0.2.1/24 dev upl
  ip -n tt-hb addr add 192.0.2.2/24 dev ubl
  ip netns exec tt-hb ethtool -K ubl tx off >/dev/null
  ip -n tt-hb link add vx0 type vxlan id 42 local 192.0.2.2 remote 192.0.2.1 dstport 4789 dev ubl udpcsum
  ip -n tt-hb link add br0 type bridge
  ip -n tt-hb link set vx0 master br0 up; ip -n tt-hb link set bw master br0; ip -n tt-hb link set br0 up
  ip -n tt-wb link set we mtu 1450; ip -n tt-wb addr add 198.51.100.2/24 dev we
  ip netns exec tt-wb ethtool -K we tx off >/dev/null
  cat >"$W/c.toml" <<T
[[ports]]
name = "wl"
kind = "workload"
interface = "tap0"
backend = "tap"
offloads = "$off"

[[ports]]
name = "up"
kind = "uplink"
interface = "upl"
backend = "$backend"

[[tunnels]]
name = "to-b"
type = "vxlan"
uplink = "up"
local = "192.0.2.1"
remote = "192.0.2.2"
vni = 42
udp_checksum = true

[[rules]]
id = 10
match = { in_port = "wl" }
actions = [{ encap = "to-b" }]

[[rules]]
id = 20
match = { tunnel = "to-b", vni = 42 }
actions = [{ output = "wl" }]
T
  rm -rf "$W/state"
  ip netns exec tt-ha "$BIN/overlayd" run --config "$W/c.toml" --state-dir "$W/state" \
    --socket "$W/api.sock" --workers 1 2>"$W/log" & echo $! >"$W/pid"
  for _ in $(seq 100); do [ -S "$W/api.sock" ] && break; sleep 0.1; done
  [ -S "$W/api.sock" ] || { echo "overlayd did not start:" >&2; cat "$W/log" >&2; exit 1; }
  ip -n tt-ha link set tap0 netns tt-wa
  ip -n tt-wa link set tap0 mtu 1450 up
  ip -n tt-wa addr add 198.51.100.1/24 dev tap0
  ip netns exec tt-wa ping -c 3 -i 0.2 -W 2 198.51.100.2 >/dev/null
  ip netns exec tt-wb timeout $((SECS + 10)) iperf3 -s -1 >/dev/null 2>&1 &
  sleep 0.3
  ip netns exec tt-wa timeout $((SECS + 10)) iperf3 -c 198.51.100.2 -t "$SECS" -J >"$W/out.json"
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(round(d['end']['sum_received']['bits_per_second']/1e9, 3))" "$W/out.json"
  kill "$(cat "$W/pid")"; wait "$(cat "$W/pid")" 2>/dev/null || true; rm -f "$W/pid"
  for n in $NS; do ip netns del "$n"; done
}

declare -A all
for r in $(seq "$REPS"); do
  for backend in af_xdp af_packet; do
    for off in on off; do
      g=$(run_one "$backend" "$off")
      echo "$backend offloads=$off $g Gbit/s (run $r)"
      all["$backend $off"]+="$g "
    done
  done
done
echo "median over $REPS runs of ${SECS} s, workload A (TAP) -> B:"
for k in "af_xdp on" "af_xdp off" "af_packet on" "af_packet off"; do
  m=$(echo ${all[$k]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "  uplink ${k% *}, offloads ${k#* }: $m Gbit/s"
done
