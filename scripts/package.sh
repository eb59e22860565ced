#!/usr/bin/env bash
# Builds the Debian package of overlayd and overlayctl into target/debian/.
#   PROFILE=release (default) or dev: the cargo profile the binaries are
#   built with (the packaging test uses dev: a release build takes minutes).
# Needs cargo-deb (scripts/setup.sh installs it). Prints the .deb's path.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
case "$PROFILE" in dev) dir=debug ;; *) dir=$PROFILE ;; esac

cargo build --quiet --locked --profile "$PROFILE" -p dataplane --bins
bin=$CARGO_TARGET_DIR/$dir

# Completions and man pages, from each binary's own clap definition.
out=packaging/out/share
rm -rf packaging/out
mkdir -p "$out"
packaging/generate-docs.sh "$bin" "$out"

cargo deb --quiet --locked --no-build --profile "$PROFILE" -p dataplane \
  --fast --no-dbgsym --output "$CARGO_TARGET_DIR/debian/" \
  | tail -1
