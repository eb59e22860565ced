#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then runs formatting and
# lint checks, unit and property tests, the cross-checks against tshark and
# scapy, and the privileged end-to-end tests in network namespaces.
# Privileged tests need root; under CI (CI set) a missing privilege or kernel
# feature fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
  scripts/setup.sh
else
  echo "test: not root; skipping scripts/setup.sh (privileged tests will say what they need)" >&2
fi

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== cargo test"
cargo test --workspace --all-targets --quiet

if [ "$(id -u)" -eq 0 ]; then
  echo "== packaging: the .deb installed, run, purged; the OCI image run"
  scripts/package-test.sh
elif [ -n "${CI:-}" ]; then
  echo "test: the packaging test needs root (dpkg -i, chroot)" >&2
  exit 1
else
  echo "test: not root; skipping scripts/package-test.sh" >&2
fi
