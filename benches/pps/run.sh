#!/usr/bin/env bash
# The packets-per-second harness (issue 7): overlayd next to Open vSwitch's
# AF_XDP userspace datapath and the kernel's VXLAN device, on one
# gen -> dut -> sink topology of network namespaces (pb-gen, pb-dut, pb-sink).
#
#   benches/pps/run.sh            the quick check (same as --quick), under two minutes
#   benches/pps/run.sh --full     every scenario (about 30 minutes); writes
#                                 docs/pps/ and the table in docs/benchmarks.md
#   benches/pps/run.sh --quick --duts overlayd-afxdp,ovs-afxdp --secs 3
#   benches/pps/run.sh --soak 600 [--publish docs]
#                                 overlayd alone at maximum rate with 100k flows,
#                                 10k rules and a rule change every second,
#                                 sampled every 10 s (soak.json, soak.md)
#
# Other options are passed to the `pps` binary (benches/src/bin/pps; `--help`).
# Results go to $CARGO_TARGET_DIR/pps-<mode>/ (results.json, results.md, pps.svg).
# Needs root. Everything the run creates is removed on exit, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "pps: run as root" >&2; exit 1; }
MODE=quick
for a in "$@"; do [ "$a" = --full ] && MODE=full; done
scripts/setup.sh
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --quiet --release -p dataplane --bins
cargo build --quiet --release -p benches --bin pps
cleanup() { for n in pb-gen pb-dut pb-sink; do ip netns del "$n" 2>/dev/null || true; done; }
trap cleanup EXIT
EXTRA=()
[ "$MODE" = full ] && EXTRA+=(--publish docs)
case " $* " in *" --quick "*|*" --full "*|*" --soak "*) ;; *) EXTRA+=(--quick) ;; esac
case " $* " in *" --soak "*) MODE=soak ;; esac
"$TARGET/release/pps" --out "$TARGET/pps-$MODE" "${EXTRA[@]}" "$@"
