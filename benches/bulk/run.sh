#!/usr/bin/env bash
# The bulk-throughput harness (issue 21): iperf3 TCP between two workloads
# across a VXLAN overlay, host A and host B each one of
#   kernel    the kernel's VXLAN device behind a bridge
#   overlayd  overlayd as configured by default: `backend = "auto"`, which
#             on these veths is tc on both ports (no XDP program on either
#             veth, so the workload and host B's uplink keep their TSO), and
#             its default tiers (BULK_TIER picks another: "xdp" for the XDP
#             tier only, "off" for none, which makes `auto` choose AF_XDP)
#   overlayd-afxdp  overlayd with `backend = "af_xdp"` on both ports
#   overlayd-tc  overlayd with backend "tc" on the workload port only,
#             AF_XDP on the uplink
#   ovs       Open vSwitch's userspace datapath, AF_XDP ports (host A only)
# in network namespaces bk-ha, bk-hb (hosts) and bk-wa, bk-wb (workloads):
#
#   bk-wa [eth0] -- [xa] bk-ha [ua] -- [ub] bk-hb [xb] -- [eth0] bk-wb
#
# Workloads at MTU 1450, with their veths' default offloads (tx checksum,
# TSO, GSO on) or `tx off` where a row says so (Open vSwitch's AF_XDP
# documentation requires it). 1 and 4 streams, both directions. For each:
# Gbit/s (iperf3's received bytes) and CPU seconds per GB, two ways: the
# whole VM's busy time (/proc/stat: includes everything else running) and
# the path's own processes (iperf3 client and server, overlayd, ovs-vswitchd).
#
#   benches/bulk/run.sh              every row, 3 x 10 s per point (~15 minutes)
#   benches/bulk/run.sh --quick      every row, 1 x 3 s per point (~3 minutes)
#   benches/bulk/run.sh --publish    as the first, and write docs/bulk/ and
#                                    the table in docs/benchmarks.md
#   benches/bulk/run.sh --quick --rows kernel-kernel,overlayd-kernel
#   benches/bulk/run.sh --quick --streams 1     one stream only
#
# Results: $CARGO_TARGET_DIR/bulk-<mode>/ (raw.jsonl, results.json,
# results.md, bulk.svg). Needs root. Removes everything it made on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "bulk: run as root" >&2; exit 1; }
MODE=full SECS=10 REPS=3 PUBLISH= ROWS= STREAMS="1 4"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) MODE=quick SECS=3 REPS=1 ;;
    --publish) PUBLISH=1 ;;
    --secs) SECS=$2; shift ;;
    --reps) REPS=$2; shift ;;
    --rows) ROWS=$2; shift ;;
    --streams) STREAMS=$2; shift ;;
    *) echo "bulk: unknown option $1 (see the head of $0)" >&2; exit 2 ;;
  esac
  shift
done
scripts/setup.sh >/dev/null
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=${BULK_BIN_DIR:-$TARGET/release}
[ -n "${BULK_BIN_DIR:-}" ] || cargo build --quiet --release -p dataplane --bin overlayd --bin overlayctl
OUT=$TARGET/bulk-$MODE
mkdir -p "$OUT"; : >"$OUT/raw.jsonl"
W=$(mktemp -d /tmp/bulk.XXXX)
NS="bk-ha bk-hb bk-wa bk-wb"
PIDS=()
teardown() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  PIDS=()
  for n in $NS; do ip netns del "$n" 2>/dev/null; done
  set -e
}
trap 'teardown; rm -rf "$W"' EXIT
trap 'exit 130' INT TERM

# Every row: name, host A, host B, workload offloads.
ALL_ROWS="kernel-kernel:kernel:kernel:default
kernel-kernel-txoff:kernel:kernel:tx-off
overlayd-kernel:overlayd:kernel:default
overlayd-kernel-txoff:overlayd:kernel:tx-off
overlayd-afxdp-kernel:overlayd-afxdp:kernel:default
overlayd-afxdp-kernel-txoff:overlayd-afxdp:kernel:tx-off
overlayd-tc-kernel:overlayd-tc:kernel:default
overlayd-overlayd:overlayd:overlayd:default
ovs-kernel-txoff:ovs:kernel:tx-off"

mac() { ip -n "$1" -br link show "$2" | awk '{print $3}'; }

topology() { # offloads
  local off=$1
  for n in $NS; do ip netns add "$n"; ip -n "$n" link set lo up; done
  for n in bk-wa bk-wb; do ip netns exec "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1; done
  ip link add ua netns bk-ha type veth peer name ub netns bk-hb
  ip link add xa netns bk-ha type veth peer name eth0 netns bk-wa
  ip link add xb netns bk-hb type veth peer name eth0 netns bk-wb
  ip -n bk-ha addr add 192.0.2.1/24 dev ua; ip -n bk-hb addr add 192.0.2.2/24 dev ub
  for x in "ha ua" "ha xa" "hb ub" "hb xb"; do set -- $x; ip -n "bk-$1" link set "$2" up; done
  ip -n bk-wa addr add 198.51.100.1/24 dev eth0; ip -n bk-wb addr add 198.51.100.2/24 dev eth0
  for n in bk-wa bk-wb; do
    ip -n "$n" link set eth0 mtu 1450 up
    [ "$off" = tx-off ] && ip netns exec "$n" ethtool -K eth0 tx off >/dev/null
  done
  return 0
}

host_kernel() { # ns local remote
  local side=${1#bk-h}
  ip -n "$1" link add vx0 type vxlan id 42 local "$2" remote "$3" dstport 4789 dev "u$side"
  ip -n "$1" link add br0 type bridge
  ip -n "$1" link set vx0 master br0 up; ip -n "$1" link set "x$side" master br0 up
  ip -n "$1" link set br0 up
}

host_overlayd() { # ns local remote [workload backend] [uplink backend]
  local side=${1#bk-h} wl_backend=${4:-auto} up_backend=${5:-auto}
  # A state directory left by an earlier row would win over this row's file.
  rm -rf "$W/state-$side"
  cat >"$W/$side.toml" <<T
${BULK_TIER:+xdp_tier = \"$BULK_TIER\"}

[[ports]]
name = "wl"
kind = "workload"
interface = "x$side"
backend = "$wl_backend"

[[ports]]
name = "up"
kind = "uplink"
interface = "u$side"
backend = "$up_backend"

[[tunnels]]
name = "peer"
type = "vxlan"
uplink = "up"
local = "$2"
remote = "$3"
vni = 42

[[rules]]
id = 10
match = { in_port = "wl" }
actions = [{ encap = "peer" }]

[[rules]]
id = 20
match = { tunnel = "peer", vni = 42 }
actions = [{ output = "wl" }]
T
  ip netns exec "$1" "$BIN/overlayd" run --config "$W/$side.toml" --state-dir "$W/state-$side" \
    --socket "$W/api-$side.sock" 2>"$W/overlayd-$side.log" &
  PIDS+=($!)
  for _ in $(seq 100); do [ -S "$W/api-$side.sock" ] && return 0; sleep 0.1; done
  echo "bulk: overlayd on host $side did not start:" >&2; cat "$W/overlayd-$side.log" >&2; exit 1
}

host_ovs() { # ns local remote (host A only)
  local d=$W/ovs; rm -rf "$d"; mkdir -p "$d"
  export OVS_RUNDIR=$d OVS_DBDIR=$d OVS_LOGDIR=$d
  ovsdb-tool create "$d/conf.db" /usr/share/openvswitch/vswitch.ovsschema
  ip netns exec "$1" ovsdb-server "$d/conf.db" --remote="punix:$d/db.sock" --unixctl="$d/ovsdb.ctl" \
    >"$d/ovsdb.out" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do [ -S "$d/db.sock" ] && break; sleep 0.1; done
  local vs="ovs-vsctl --db=unix:$d/db.sock"
  $vs --no-wait init
  ip netns exec "$1" ovs-vswitchd "unix:$d/db.sock" --unixctl="$d/vsd.ctl" --log-file="$d/vsd.log" \
    >"$d/vsd.out" 2>&1 &
  PIDS+=($!); OVS_PID=$!
  for _ in $(seq 100); do [ -S "$d/vsd.ctl" ] && break; sleep 0.1; done
  local ua_mac; ua_mac=$(mac "$1" ua)
  ip -n "$1" addr flush dev ua
  $vs add-br br-int -- set bridge br-int datapath_type=netdev
  $vs add-port br-int xa -- set interface xa type=afxdp options:xdp-mode=native
  $vs add-port br-int vxlan0 -- set interface vxlan0 type=vxlan options:remote_ip="$3" \
    options:local_ip="$2" options:key=42
  $vs add-br br-phy -- set bridge br-phy datapath_type=netdev other_config:hwaddr="$ua_mac"
  $vs add-port br-phy ua -- set interface ua type=afxdp options:xdp-mode=native
  ip -n "$1" addr add "$2/24" dev br-phy; ip -n "$1" link set br-phy up
  for _ in $(seq 100); do [ -S "$d/br-int.mgmt" ] && break; sleep 0.1; done
  ovs-ofctl del-flows "unix:$d/br-int.mgmt"
  ovs-ofctl add-flow "unix:$d/br-int.mgmt" "in_port=xa,actions=output:vxlan0"
  ovs-ofctl add-flow "unix:$d/br-int.mgmt" "in_port=vxlan0,actions=output:xa"
  ovs-appctl -t "$d/vsd.ctl" tnl/neigh/set br-phy 192.0.2.2 "$(mac bk-hb ub)" >/dev/null
  ip -n bk-hb neigh replace 192.0.2.1 lladdr "$ua_mac" dev ub nud permanent
  # Its AF_XDP ports take no partial checksum, and host B's kernel leaves the
  # outer UDP checksum partial on a veth with tx on (a NIC would finish it).
  ip netns exec bk-hb ethtool -K ub tx off >/dev/null
}

# Busy CPU jiffies of the whole VM (user nice system irq softirq steal).
vm_busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
# utime + stime (jiffies) of the given processes and their threads.
proc_busy() {
  local t=0 p
  for p in "$@"; do
    t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo $t
}

measure() { # row a b offloads streams dir rep
  local row=$1 a=$2 b=$3 off=$4 streams=$5 dir=$6 rep=$7 rev=()
  [ "$dir" = B-A ] && rev=(-R)
  ip netns exec bk-wb timeout $((SECS + 20)) iperf3 -s -1 >/dev/null 2>&1 &
  local srv=$!
  sleep 0.3
  local dp=("${DP_PIDS[@]}") v0 p0 v1 p1 cli
  v0=$(vm_busy); p0=$(proc_busy "${dp[@]}")
  ip netns exec bk-wa timeout $((SECS + 20)) iperf3 -c 198.51.100.2 -t "$SECS" -P "$streams" \
    "${rev[@]}" -J >"$W/out.json" &
  cli=$!
  # iperf3's own CPU: both ends' processes, read just before they exit.
  local ip1=0 t
  while kill -0 "$cli" 2>/dev/null; do
    t=$(proc_busy $(pgrep -P "$cli"; pgrep -P "$srv")); [ "$t" -gt "$ip1" ] && ip1=$t; sleep 0.2
  done
  wait "$cli" || true; wait "$srv" 2>/dev/null || true
  v1=$(vm_busy); p1=$(proc_busy "${dp[@]}")
  /usr/bin/python3 - "$W/out.json" "$row" "$a" "$b" "$off" "$streams" "$dir" "$rep" \
    $((v1 - v0)) $((p1 - p0 + ip1)) "$(getconf CLK_TCK)" >>"$OUT/raw.jsonl" <<'PY'
import json, sys
out, row, a, b, off, streams, d, rep, vm, proc, hz = sys.argv[1:]
try:
    j = json.load(open(out))
except ValueError:
    j = {"error": "iperf3 wrote no result"}
if "error" in j:  # no result: say why, count nothing
    r = {"error": j["error"]}
else:
    got = j["end"]["sum_received"]
    r = {"gbps": got["bits_per_second"] / 1e9, "bytes": got["bytes"], "secs": got["seconds"]}
base = {"row": row, "a": a, "b": b, "offloads": off, "streams": int(streams), "dir": d, "rep": int(rep)}
if "bytes" in r:
    gb = r["bytes"] / 1e9
    r["vm_cpu_s_per_gb"] = int(vm) / int(hz) / gb if gb else None
    r["path_cpu_s_per_gb"] = int(proc) / int(hz) / gb if gb else None
print(json.dumps({**base, **r}))
PY
  tail -1 "$OUT/raw.jsonl" | /usr/bin/python3 -c 'import json,sys; r=json.load(sys.stdin); print("  %-22s %-7s %d stream(s) %s: %s" % (r["row"], r["offloads"], r["streams"], r["dir"], ("%.2f Gbit/s, %.2f CPU s/GB (VM), %.2f (path)" % (r["gbps"], r["vm_cpu_s_per_gb"], r["path_cpu_s_per_gb"])) if "gbps" in r else "failed: " + r["error"]))'
}

run_row() { # name a b offloads
  local name=$1 a=$2 b=$3 off=$4
  echo "$name: host A $a, host B $b, workloads' offloads $off"
  topology "$off"
  DP_PIDS=()
  for side in a b; do
    local kind=$a ns=bk-ha local=192.0.2.1 remote=192.0.2.2
    [ $side = b ] && kind=$b ns=bk-hb local=192.0.2.2 remote=192.0.2.1
    case $kind in
      kernel) host_kernel $ns $local $remote ;;
      overlayd) host_overlayd $ns $local $remote; DP_PIDS+=("${PIDS[-1]}") ;;
      overlayd-afxdp) host_overlayd $ns $local $remote af_xdp af_xdp; DP_PIDS+=("${PIDS[-1]}") ;;
      overlayd-tc) host_overlayd $ns $local $remote tc af_xdp; DP_PIDS+=("${PIDS[-1]}") ;;
      ovs) host_ovs $ns $local $remote; DP_PIDS+=("$OVS_PID") ;;
    esac
  done
  local ok=
  for _ in $(seq 20); do
    ip netns exec bk-wa ping -c 1 -W 1 -q 198.51.100.2 >/dev/null 2>&1 && { ok=1; break; }
  done
  [ -z "${BULK_HOLD:-}" ] || { echo "  holding for ${BULK_HOLD} s: $W"; sleep "$BULK_HOLD"; }
  if [ -z "$ok" ]; then
    echo "  no connectivity A -> B; skipping the row"
    echo "{\"row\": \"$name\", \"a\": \"$a\", \"b\": \"$b\", \"offloads\": \"$off\", \"error\": \"no connectivity\"}" >>"$OUT/raw.jsonl"
  else
    for rep in $(seq "$REPS"); do
      for streams in $STREAMS; do
        for dir in A-B B-A; do measure "$name" "$a" "$b" "$off" $streams $dir "$rep"; done
      done
    done
  fi
  for s in a b; do
    [ -S "$W/api-$s.sock" ] && [ -x "$BIN/overlayctl" ] &&
      { "$BIN/overlayctl" --socket "$W/api-$s.sock" counters >"$OUT/counters-$name-$s.txt" 2>&1
        "$BIN/overlayctl" --socket "$W/api-$s.sock" --json status >"$OUT/status-$name-$s.json" 2>&1
        cp "$W/overlayd-$s.log" "$OUT/overlayd-$name-$s.log"; } || true
  done
  teardown
}

echo "bulk ($MODE): ${SECS} s per point, $REPS repetition(s); results in $OUT"
while IFS=: read -r name a b off; do
  [ -z "$ROWS" ] || [[ ",$ROWS," == *",$name,"* ]] || continue
  run_row "$name" "$a" "$b" "$off"
done <<<"$ALL_ROWS"
/usr/bin/python3 benches/bulk/report.py "$OUT" --secs "$SECS" --reps "$REPS" --mode "$MODE" \
  ${BULK_TIER:+--tier "$BULK_TIER"} ${PUBLISH:+--publish docs}
