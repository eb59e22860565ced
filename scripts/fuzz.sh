#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each).
#   scripts/fuzz.sh [seconds] [target...]
# Needs cargo-fuzz (`cargo install cargo-fuzz`); RUSTC_BOOTSTRAP lets the stable
# toolchain accept the sanitizer flags cargo-fuzz passes. New inputs that
# increase coverage land in fuzz/work/<target>/ (not committed); crashes in
# fuzz/artifacts/<target>/. The committed seeds are in fuzz/corpus/ (make_corpus.py).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECS=${1:-60}; shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(ethernet ipv4 ipv6 udp vxlan geneve gre inner_meta decap encap_roundtrip capture_file config ops)
command -v cargo-fuzz >/dev/null || { echo "fuzz: cargo-fuzz is missing: cargo install cargo-fuzz" >&2; exit 1; }
for t in "${TARGETS[@]}"; do
  echo "== $t (${SECS}s)"
  mkdir -p "work/$t"
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "work/$t" "corpus/$t" -- -max_total_time="$SECS" -print_final_stats=1 2>&1 \
    | grep -E "^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+[[:space:]]+DONE)|ERROR|panicked" || true
  [ -z "$(ls -A artifacts/$t 2>/dev/null)" ] || { echo "fuzz: $t found a crash: fuzz/artifacts/$t" >&2; exit 1; }
done
echo "fuzz: no crash"
