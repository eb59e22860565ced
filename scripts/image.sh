#!/usr/bin/env bash
# Builds the OCI image of overlayd without a registry or a container engine:
# its root filesystem is the overlayd Debian package (scripts/package.sh)
# and the Debian packages it depends on, unpacked (no shell, no package
# manager, no compiler); umoci writes it as an OCI image layout.
#   usage: image.sh [DEB]   (default: builds the package)
# Output: $CARGO_TARGET_DIR/oci/overlayd (layout, tag = package version) and
# $CARGO_TARGET_DIR/oci/overlayd.tar (the same as an oci-archive, which
# `podman load` or `skopeo copy oci-archive:` take). Prints the tar's path.
# The dependencies are fetched once with apt-get download (the versions
# installed here, which the binaries were linked against) and kept in
# $CARGO_TARGET_DIR/oci/debs. Needs root (file ownership in the image).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
fail() { echo "image: $*" >&2; exit 1; }
command -v umoci >/dev/null || fail "umoci is missing: run scripts/setup.sh"
deb=${1:-$(scripts/package.sh)}
[ -f "$deb" ] || fail "no package at $deb"
top=$CARGO_TARGET_DIR/oci
debs=$top/debs
mkdir -p "$debs"

# The closure of the package's dependencies (libc6 and what it needs).
direct=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/(.*)//; s/|.*//; s/ //g' | grep -v '^$')
closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
  --no-breaks --no-replaces --no-enhances $direct | grep -v '^ ' | grep -v '^<' | sort -u)
for p in $closure; do
  v=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || apt-cache policy "$p" | sed -n 's/ *Candidate: //p')
  file=$(ls "$debs/${p}_"*.deb 2>/dev/null | grep -F "_$(echo "$v" | sed 's/:/%3a/')_" || true)
  if [ -z "$file" ]; then
    cached=$(ls /var/cache/apt/archives/"${p}_$(echo "$v" | sed 's/:/%3a/')_"*.deb 2>/dev/null | head -1 || true)
    if [ -n "$cached" ]; then cp "$cached" "$debs/"; else (cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root "$p=$v"); fi
  fi
done

# The root filesystem: each package unpacked, as dpkg would place its files.
rootfs=$top/rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs"
for p in $closure; do
  dpkg-deb -x "$(ls "$debs/${p}_"*.deb | tail -1)" "$rootfs"
done
dpkg-deb -x "$deb" "$rootfs"
# Documentation, man pages and completions serve no one in the image; the
# example configurations stay (overlayd check can be tried on them).
find "$rootfs/usr/share" -mindepth 1 -maxdepth 1 ! -name doc -exec rm -rf {} +
find "$rootfs/usr/share/doc" -mindepth 1 -maxdepth 1 ! -name overlayd -exec rm -rf {} +
find "$rootfs/usr/share/doc/overlayd" -mindepth 1 -maxdepth 1 ! -name examples ! -name copyright -exec rm -rf {} +
rm -rf "$rootfs/usr/lib/systemd"
# What a process expects to find: who root and nobody are, a /tmp, the
# daemon's state and socket directories (volumes in docs/deploy/).
mkdir -p "$rootfs"/{etc/overlayd,tmp,run/overlayd,var/lib/overlayd,sys/fs/bpf,proc,dev}
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/var/lib/overlayd"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"

# The OCI image: one layer, the daemon as entrypoint.
version=$(dpkg-deb -f "$deb" Version)
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
layout=$top/overlayd
rm -rf "$layout" "$top/overlayd.tar"
umoci init --layout "$layout"
umoci new --image "$layout:$version"
umoci insert --image "$layout:$version" --history.created_by "scripts/image.sh" "$rootfs" /
umoci config --image "$layout:$version" \
  --config.entrypoint /usr/bin/overlayd \
  --config.cmd run --config.cmd --state-dir --config.cmd /var/lib/overlayd \
  --config.cmd --socket --config.cmd /run/overlayd/api.sock \
  --config.cmd --config --config.cmd /etc/overlayd/overlayd.toml \
  --config.volume /var/lib/overlayd --config.volume /run/overlayd \
  --config.label "org.opencontainers.image.title=overlayd" \
  --config.label "org.opencontainers.image.version=$version" \
  --config.label "org.opencontainers.image.revision=$commit" \
  --config.label "org.opencontainers.image.licenses=Apache-2.0" \
  --config.label "org.opencontainers.image.description=overlayd and overlayctl from Debian packages" \
  --history.created_by "scripts/image.sh (entrypoint, volumes, labels)"
umoci gc --layout "$layout"
tar -C "$layout" -cf "$top/overlayd.tar" .
echo "$top/overlayd.tar"
