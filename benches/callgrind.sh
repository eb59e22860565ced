#!/usr/bin/env bash
# Instructions per packet, counted by callgrind: stable on noisy machines.
# Each case runs twice (LO and HI batches of 256 packets); the difference of
# the two totals divided by the extra packets is the per-packet cost, with
# process start-up and set-up cancelled out.
#   benches/callgrind.sh [case...]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "callgrind: valgrind is missing: run scripts/setup.sh" >&2; exit 1; }
cargo build --quiet --release -p benches --bin instr_count
BIN=${CARGO_TARGET_DIR:-target}/release/instr_count
LO=20; HI=120
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(
  encap-vxlan4-64 decap-vxlan4-64 encap-vxlan4-1400 decap-vxlan4-1400
  encap-vxlan6-64 decap-vxlan6-64 encap-vxlan6-1400 decap-vxlan6-1400
  encap-gretap4-64 decap-gretap4-64 encap-gretap4-1400 decap-gretap4-1400
  pipeline-1flow pipeline-100kflows pipeline-l2static pipeline-l2learn classify-miss-10000)
count() { # case batches -> total instructions
  local out; out=$(mktemp)
  valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" "$1" "$2" >/dev/null 2>&1
  awk '/^summary:/ {print $2}' "$out"; rm -f "$out"
}
printf '%-22s %12s\n' case "instr/packet"
for c in "${CASES[@]}"; do
  a=$(count "$c" $LO); b=$(count "$c" $HI)
  awk -v a="$a" -v b="$b" -v n=$(( (HI - LO) * 256 )) -v c="$c" 'BEGIN { printf "%-22s %12.1f\n", c, (b - a) / n }'
done
