#!/usr/bin/env bash
# First packets-per-second figure of overlayd (issue 5), next to its peers in
# the same run: VXLAN encapsulation of 64-byte frames, one flow, one rule, on
# the gen -> dut -> sink topology of ../shared/bench/peers.sh:
#
#   gen --(g0|d0)-- dut --(d1|s1)-- sink
#
# The generator runs an XDP program returning XDP_TX through BPF_PROG_RUN in
# live-frames mode, so the kernel transmits one frame N times into d0 (several
# Mpps, far above the device under test). An XDP program on s1 counts what
# arrives. The device under test is overlayd (AF_XDP on d0 and d1, one worker),
# then, if ../shared/bench/peers.sh is there, the kernel VXLAN device behind a
# bridge and Open vSwitch's AF_XDP userspace datapath.
#
# Usage: benches/pps/first.sh [seconds] [repetitions]   (root)
# Prints one line per run: "<dut> <pps delivered> pps delivered=<n> offered=<n>",
# overlayd's CPU time per delivered packet, and the median of each device.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-5}; REPS=${2:-3}
[ "$(id -u)" -eq 0 ] || { echo "pps: run as root" >&2; exit 1; }
scripts/setup.sh
cargo build --quiet --release -p dataplane --bins
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
W=$(mktemp -d /tmp/pps.XXXX)
cleanup() {
  set +e
  [ -f "$W/dut.pid" ] && kill "$(cat "$W/dut.pid")" 2>/dev/null && sleep 0.5
  for n in pgen pdut psink; do ip netns del $n 2>/dev/null; done
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$W/cnt.c" <<'C'
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u64);} cnt SEC(".maps");
SEC("xdp") int xdp_cnt(struct xdp_md *ctx) { __u32 k=0; __u64 *v = bpf_map_lookup_elem(&cnt,&k); if (v) (*v)++; return XDP_DROP; }
char _license[] SEC("license") = "GPL";
C
cat >"$W/gen.bpf.c" <<'C'
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int xdp_tx(struct xdp_md *ctx) { return XDP_TX; }
char _license[] SEC("license") = "GPL";
C
cat >"$W/gen.c" <<'C'
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
/* gen IFNAME SECONDS OBJ: one 60-byte UDP frame in live-frames mode until SECONDS pass */
int main(int argc, char **argv) {
  int ifindex = if_nametoindex(argv[1]); double secs = atof(argv[2]);
  struct bpf_object *o = bpf_object__open_file(argv[3], NULL);
  if (!o || bpf_object__load(o)) { fprintf(stderr, "gen: cannot load %s\n", argv[3]); return 1; }
  int fd = bpf_program__fd(bpf_object__find_program_by_name(o, "xdp_tx"));
  unsigned char pkt[60] = {2,0,0,0,0,2, 2,0,0,0,0,1, 8,0, 0x45,0,0,46, 0,1,0,0, 64,17,0x26,0x54,
                           198,51,100,1, 198,51,100,2, 4,210, 0,80, 0,26, 0,0};
  struct xdp_md ctx = { .data_end = sizeof(pkt), .ingress_ifindex = ifindex };
  struct timespec a, b; long sent = 0; double el = 0;
  clock_gettime(CLOCK_MONOTONIC, &a);
  while (el < secs) {
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = pkt, .data_size_in = sizeof(pkt), .ctx_in = &ctx,
                .ctx_size_in = sizeof(ctx), .repeat = 100000, .flags = BPF_F_TEST_XDP_LIVE_FRAMES, .batch_size = 64);
    if (bpf_prog_test_run_opts(fd, &opts)) { perror("gen: test_run"); return 1; }
    sent += 100000;
    clock_gettime(CLOCK_MONOTONIC, &b); el = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
  }
  printf("%ld packets outgoing\n", sent); return 0;
}
C
INC=-I/usr/include/$(uname -m)-linux-gnu
clang -O2 -g -target bpf $INC -c "$W/cnt.c" -o "$W/cnt.o"
clang -O2 -g -target bpf $INC -c "$W/gen.bpf.c" -o "$W/gen.bpf.o"
gcc -O2 "$W/gen.c" -o "$W/gen" -lbpf

for n in pgen pdut psink; do ip netns del $n 2>/dev/null || true; ip netns add $n; ip -n $n link set lo up; done
ip link add g0 netns pgen type veth peer name d0 netns pdut
ip link add d1 netns pdut type veth peer name s1 netns psink
for x in "pgen g0" "pdut d0" "pdut d1" "psink s1"; do set -- $x; ip -n $1 link set $2 up; done
ip -n psink addr add 192.0.2.2/24 dev s1
ip -n pdut addr add 192.0.2.1/24 dev d1
ip netns exec psink xdp-loader load -m native -n xdp_cnt s1 "$W/cnt.o" 2>/dev/null
S1MAC=$(ip -n psink -br link show s1 | awk '{print $3}')

cat >"$W/dut.toml" <<EOF
[[ports]]
name = "d0"
kind = "workload"
interface = "d0"
backend = "af_xdp"

[[ports]]
name = "d1"
kind = "uplink"
interface = "d1"
backend = "af_xdp"

[[tunnels]]
name = "to-sink"
type = "vxlan"
uplink = "d1"
local = "192.0.2.1"
remote = "192.0.2.2"
vni = 42
next_hop_mac = "$S1MAC"

[[rules]]
id = 1
match = { in_port = "d0" }
actions = [{ encap = "to-sink" }]
EOF

count() { ip netns exec psink bpftool map dump name cnt 2>/dev/null | grep -oE '"value": [0-9]+' | awk '{s+=$2} END {print s+0}'; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
declare -A RES
run() { # name [pid of the device under test, for its CPU time]
  local a b sent t0 t1 hz pps
  a=$(count)
  [ -n "${2:-}" ] && t0=$(cpu_ticks "$2")
  sent=$(ip netns exec pgen "$W/gen" g0 "$SECS" "$W/gen.bpf.o" | awk '/packets outgoing/{print $1}')
  sleep 0.5; b=$(count)
  pps=$(( (b-a)/SECS ))
  RES[$1]="${RES[$1]:-} $pps"
  echo "$1 $pps pps delivered=$((b-a)) offered=${sent:-0} offered_pps=$(( ${sent:-0}/SECS ))"
  if [ -n "${2:-}" ]; then
    t1=$(cpu_ticks "$2"); hz=$(getconf CLK_TCK)
    awk -v t=$((t1-t0)) -v hz="$hz" -v n=$((b-a)) 'BEGIN { if (n > 0) printf "  overlayd CPU per delivered packet: %.0f ns (%.2f s of CPU)\n", t/hz*1e9/n, t/hz }'
  fi
}

ip netns exec pdut "$BIN/overlayd" run --config "$W/dut.toml" --state-dir "$W/state" \
  --socket "$W/api.sock" --workers 1 2>"$W/dut.log" &
echo $! >"$W/dut.pid"
for _ in $(seq 100); do "$BIN/overlayctl" --socket "$W/api.sock" status >/dev/null 2>&1 && break; sleep 0.1; done
for _ in $(seq "$REPS"); do run overlayd-afxdp-vxlan "$(cat "$W/dut.pid")"; done
"$BIN/overlayctl" --socket "$W/api.sock" counters | head -4
kill "$(cat "$W/dut.pid")"; rm -f "$W/dut.pid"; sleep 1
for n in pgen pdut psink; do ip netns del $n; done

PEERS=../shared/bench/peers.sh
if [ -f "$PEERS" ]; then
  for _ in $(seq "$REPS"); do
    for p in kernel ovs; do
      line=$(bash "$PEERS" "$SECS" "$p" 2>/dev/null | grep -E "^(kernel-vxlan|ovs-afxdp-vxlan) " || true)
      echo "$line"
      set -- $line
      [ -n "${1:-}" ] && RES[$1]="${RES[$1]:-} $2"
    done
  done
else
  echo "($PEERS not found: peers skipped)"
fi

echo "median pps over $REPS runs of $SECS s:"
for k in "${!RES[@]}"; do
  echo "$k $(echo ${RES[$k]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)], "(min", a[1] ", max", a[NR] ")"}')"
done | sort
