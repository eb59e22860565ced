#!/usr/bin/env bash
# The main job, shown end to end. Until the daemon exists (issue 5) this is the
# encap crate's demo on built-in frames: encapsulate, decapsulate, and refuse
# malformed packets with named reasons.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] && scripts/setup.sh
cargo run --quiet --release -p encap --example demo
