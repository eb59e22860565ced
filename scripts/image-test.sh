#!/usr/bin/env bash
# The image test: builds the OCI image (scripts/image.sh) from a package,
# then runs `overlayd --version`, `overlayctl --version` and `overlayd check`
# on the example from the image itself: with podman when it is installed and
# runs, else from the image's root filesystem as umoci unpacks it, under
# chroot (the same files, without a container engine).
#   usage: image-test.sh [DEB]   (default: builds the package)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
fail() { echo "image-test: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "needs root (chroot, file ownership in the image)"
deb=${1:-$(PROFILE=${PROFILE:-dev} scripts/package.sh)}
tar=$(scripts/image.sh "$deb")
layout=$CARGO_TARGET_DIR/oci/overlayd
version=$(dpkg-deb -f "$deb" Version)
echo "== image $tar ($(du -h "$tar" | cut -f1)), tag $version"

# podman runs the image if it can here (in a sandbox whose root lacks
# CAP_SYS_RESOURCE its runtime cannot set the container's rlimits).
podman_id=
if command -v podman >/dev/null; then
  podman_id=$(podman pull -q "oci-archive:$tar" 2>/dev/null || true)
  if [ -n "$podman_id" ] && ! err=$(podman run --rm --network none "$podman_id" --version 2>&1 >/dev/null); then
    echo "== podman cannot run containers here ($err)"
    podman rmi -f "$podman_id" >/dev/null 2>&1 || true
    podman_id=
  fi
fi
if [ -n "$podman_id" ]; then
  echo "== running from the image with podman"
  run() { podman run --rm --network none --entrypoint "$1" "$podman_id" "${@:2}"; }
  trap 'podman rmi -f "$podman_id" >/dev/null 2>&1 || true' EXIT
else
  echo "== running from the unpacked image under chroot"
  bundle=$(mktemp -d)
  trap 'rm -rf "$bundle"' EXIT
  umoci unpack --image "$layout:$version" "$bundle/b" >/dev/null
  rootfs=$bundle/b/rootfs
  entry=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["process"]["args"][0])' "$bundle/b/config.json")
  [ "$entry" = /usr/bin/overlayd ] || fail "the image's entrypoint is $entry"
  for f in bin/sh usr/bin/sh usr/bin/clang usr/bin/gcc usr/bin/apt usr/bin/dpkg; do
    [ ! -e "$rootfs/$f" ] || fail "the image carries /$f"
  done
  run() { chroot "$rootfs" "$@"; }
fi

commit=$(git rev-parse --short=12 HEAD)
for b in overlayd overlayctl; do
  v=$(run /usr/bin/$b --version) || fail "$b --version failed in the image"
  echo "$v"
  [[ $v == "$b "*"(commit $commit)" ]] || fail "$b --version in the image says '$v'"
done
run /usr/bin/overlayd check --config /usr/share/doc/overlayd/examples/vxlan.toml >/dev/null \
  || fail "overlayd check refused the example in the image"
echo "overlayd check: the example is valid"
echo "image-test: ok"
