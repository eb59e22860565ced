#!/usr/bin/env bash
# Where a device's time goes on the generator's CPU (issue 14): one pps
# measurement of VXLAN encap, 64 B, 1 flow, 10 rules, with `perf record` on
# CPU 1 (the generator, and in its softirq every XDP device's receive path)
# once that CPU is busy, and each function's share turned into nanoseconds
# per delivered packet (share x 1 / delivered rate).
#
#   benches/pps/profile.sh BIN_DIR DUT [DUT...]    e.g. target/release overlayd xdp-null xdp-encap
#
# BIN_DIR holds pps, overlayd and overlayctl (a release build). Prints, per
# device, the rate and the functions above 1 % of the CPU; the perf data
# stay in $OUT (default /tmp/pps-profile). Needs root and perf.
set -euo pipefail
BIN=$1
shift
OUT=${OUT:-/tmp/pps-profile}
SECS=${SECS:-12}
mkdir -p "$OUT"
idle_pct() { # CPU 1's idle share over half a second
	local a b
	a=($(grep '^cpu1 ' /proc/stat))
	sleep 0.5
	b=($(grep '^cpu1 ' /proc/stat))
	local busy=0 idle=$((b[4] - a[4]))
	for i in 1 2 3 6 7 8; do busy=$((busy + b[i] - a[i])); done
	echo $((100 * idle / (busy + idle + 1)))
}
for dut in "$@"; do
	"$BIN/pps" --bin-dir "$BIN" --duts "$dut" --kinds vxlan-encap --sizes 64 --flows 1 \
		--rules 10 --reps 1 --secs "$SECS" --out "$OUT/$dut" >"$OUT/$dut.log" 2>&1 &
	pid=$!
	# The measured window starts when the generator fills CPU 1 (after the
	# device's set-up and warm-up); record 4 s inside it.
	for _ in $(seq 120); do [ "$(idle_pct)" -lt 5 ] && break; done
	sleep 2
	perf record -q -F 999 -C 1 -o "$OUT/$dut.data" -- sleep 4 2>/dev/null
	wait "$pid"
	rate=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['rows'][0]['summary']['delivered_pps']['median'])" "$OUT/$dut/results.json")
	perf report -i "$OUT/$dut.data" --no-children --sort sym -q 2>/dev/null |
		awk -v r="$rate" -v d="$dut" '
			BEGIN { printf "%s: %.2f Mpps delivered, %.1f ns a packet on CPU 1\n", d, r / 1e6, 1e9 / r }
			$1 + 0 >= 1 { sub(/%/, "", $1); s = $NF; sub(/^bpf_prog_[0-9a-f]+_/, "bpf_prog ", s);
				printf "  %5.1f %%  %6.1f ns  %s\n", $1, $1 / 100 * 1e9 / r, s }'
done
