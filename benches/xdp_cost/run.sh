#!/usr/bin/env bash
# The XDP program's own time per packet (issue 14): the pps harness's
# topology and frame (VXLAN encap, 64 B, 1 flow), under namespaces of its
# own (xf-gen, xf-dut, xf-sink), with `kernel.bpf_stats_enabled`: the
# run_time_ns / run_cnt of the program on d0 over a measured window, for
# overlayd's steering program (tier auto) or the null redirect forwarder.
#
#   benches/xdp_cost/run.sh overlayd BIN_DIR [SECS [REPS]]
#   benches/xdp_cost/run.sh null     -       [SECS [REPS]]
#
# prints one line per repetition: ns/packet, packets, and the sink's count.
# PERF=FILE profiles the generator's CPU during the last repetition.
# Needs root, clang, bpftool. Removes everything it made on exit.
set -euo pipefail
DUT=$1 BIN=$2 SECS=${3:-3} REPS=${4:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
BPF=$HERE/../pps/bpf
W=/tmp/xf-cost-$$ # no dot: libbpf rewrites dots in pin paths
PINS=$W/bpf # a bpf file system of its own
OVL_PID=
STATS_WAS=$(sysctl -n kernel.bpf_stats_enabled)
cleanup() {
	[ -n "$OVL_PID" ] && kill "$OVL_PID" 2>/dev/null && wait "$OVL_PID" 2>/dev/null || true
	for n in xf-gen xf-dut xf-sink; do ip netns del "$n" 2>/dev/null || true; done
	umount "$PINS" 2>/dev/null || true
	rm -rf "$W"
	sysctl -qw kernel.bpf_stats_enabled="$STATS_WAS"
}
trap cleanup EXIT
mkdir -p "$W" "$PINS"
mount -t bpf bpf "$PINS"
arch=$(uname -m)
for p in gen sink; do
	clang -O2 -g -target bpf -Wall -I/usr/include/$arch-linux-gnu -c "$BPF/$p.bpf.c" -o "$W/$p.o"
done

for n in xf-gen xf-dut xf-sink; do
	ip netns del "$n" 2>/dev/null || true
	ip netns add "$n"
	ip netns exec "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
	ip -n "$n" link set lo up
done
ip link add g0 netns xf-gen address 02:00:00:00:0a:01 type veth peer name d0 netns xf-dut address 02:00:00:00:0a:02
ip link add d1 netns xf-dut address 02:00:00:00:0b:01 type veth peer name s1 netns xf-sink address 02:00:00:00:0b:02
for x in xf-gen:g0 xf-dut:d0 xf-dut:d1 xf-sink:s1; do ip -n "${x%%:*}" link set "${x#*:}" up; done

# The sink: a program that drops (a veth takes redirected frames only with
# a program on its peer).
bpftool prog loadall "$W/sink.o" "$PINS/sink" type xdp
ip -n xf-sink link set s1 xdpdrv pinned "$PINS/sink/pb_sink"
bpftool prog load "$W/gen.o" "$PINS/gen" type xdp
# Attached where it never runs (the generator namespace's idle loopback), so
# it stays in the kernel's XDP dispatcher: otherwise each BPF_PROG_RUN call
# adds it and takes it out again, an RCU grace period each (the pps
# harness's Gen::run has the story).
ip -n xf-gen link set lo xdpgeneric pinned "$PINS/gen"

case $DUT in
null)
	mkdir "$PINS/null_maps"
	bpftool prog loadall "$W/sink.o" "$PINS/null" type xdp pinmaps "$PINS/null_maps"
	ifx=$(ip netns exec xf-dut cat /sys/class/net/d1/ifindex)
	# The devmap resolves the index in the writer's namespace.
	ip netns exec xf-dut bpftool map update pinned "$PINS/null_maps/pb_null_tx" key 0 0 0 0 \
		value $((ifx & 255)) $(((ifx >> 8) & 255)) 0 0 0 0 0 0
	ip -n xf-dut link set d0 xdpdrv pinned "$PINS/null/pb_null"
	;;
overlayd)
	cat >"$W/dut.toml" <<TOML
generation = 1
xdp_tier = "auto"

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
name = "t"
type = "vxlan"
uplink = "d1"
local = "192.0.2.1"
remote = "192.0.2.2"
vni = 42
next_hop_mac = "02:00:00:00:0b:02"

[[rules]]
id = 0
priority = 1
match = { in_port = "d0" }
actions = [{ encap = "t" }]
TOML
	ip netns exec xf-dut "$BIN/overlayd" run --config "$W/dut.toml" --state-dir "$W/state" \
		--socket "$W/api.sock" --workers 1 >"$W/overlayd.log" 2>&1 &
	OVL_PID=$!
	for _ in $(seq 100); do
		"$BIN/overlayctl" --socket "$W/api.sock" status >/dev/null 2>&1 && break
		sleep 0.2
	done
	;;
*) echo "run.sh: DUT is overlayd or null" >&2; exit 2 ;;
esac
prog=$(ip -n xf-dut -j link show d0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["xdp"]["prog"]["id"])')
sink=$(ip -n xf-sink -j link show s1 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["xdp"]["prog"]["id"])')
stats() { bpftool prog show id "$1" -j | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j.get("run_time_ns",0), j.get("run_cnt",0))'; }
sysctl -qw kernel.bpf_stats_enabled=1
gen() { ip netns exec xf-gen taskset -c 1 python3 "$HERE/gen.py" "$PINS/gen" g0 "$1"; }
gen 1 >/dev/null # warm-up: the flow's first packets install its tier entry
for r in $(seq "$REPS"); do
	read -r t0 c0 < <(stats "$prog")
	read -r _ s0 < <(stats "$sink")
	# PERF=FILE: a profile of the generator's CPU (where d0's NAPI runs) during the last repetition
	if [ -n "${PERF:-}" ] && [ "$r" = "$REPS" ]; then
		perf record -q -C 1 -o "$PERF" -- sleep "$SECS" 2>/dev/null &
		PERF_PID=$!
	fi
	out=$(gen "$SECS")
	[ -n "${PERF_PID:-}" ] && wait "$PERF_PID"
	read -r t1 c1 < <(stats "$prog")
	read -r _ s1 < <(stats "$sink")
	awk -v t=$((t1 - t0)) -v c=$((c1 - c0)) -v s=$((s1 - s0)) -v o="$out" -v l="$(cut -d' ' -f1 /proc/loadavg)" \
		'BEGIN { printf "%s rep %d: %.1f ns/packet over %d packets, sink %d, generator %s, load %s\n", "'"$DUT"'", '"$r"', t / c, c, s, o, l }'
done
if [ -n "$OVL_PID" ]; then
	"$BIN/overlayctl" --socket "$W/api.sock" status 2>/dev/null | grep -i -E 'tier|entries|hit' | head -8 || true
fi
