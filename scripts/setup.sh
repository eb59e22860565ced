#!/usr/bin/env bash
# Installs the system packages the demo, the tests and the benchmarks need.
# Idempotent: packages already present are not fetched again. Needs root.
set -euo pipefail

PKGS=(
  tshark            # dissects what we emit (cross-check against Wireshark's dissectors)
  python3-scapy     # builds reference and malformed frames (seen by /usr/bin/python3)
  iproute2 ethtool  # namespaces, veth, kernel VXLAN device
  clang llvm libbpf-dev libelf-dev zlib1g-dev pkg-config m4  # XDP programs
  make gcc  # jemalloc (tikv-jemalloc-sys) is built from C by overlayd's build
  bpftool xdp-tools
  openvswitch-switch   # peer: OVS userspace datapath tunnels
  valgrind          # callgrind instruction counts
  iperf3 netcat-openbsd iputils-ping  # traffic across the overlay
  util-linux        # setpriv: API tests act as another uid; taskset
  strace            # scripts/capture-netlink.sh: what iproute2 sends, for the netlink fixtures
  procps            # sysctl (the pps harness turns IPv6 off in its namespaces)
  linux-perf        # perf record: where the time goes (docs/benchmarks.md)
  help2man umoci    # packaging: man pages, the OCI image (scripts/package.sh, image.sh)
  systemd           # packaging test: systemd-analyze verify and security, offline
  python3-yaml man-db  # packaging test: reads the DaemonSet example, finds the man pages
  qemu-system-x86 linux-image-amd64 busybox-static  # the VM lane: Debian's kernel as a guest (netns-tests/vm/run.sh)
  etcd-server etcd-client  # cluster mode: the shared store (docs/cluster.md) and etcdctl
  protobuf-compiler libprotobuf-dev  # protoc and its well-known types: the etcd-client crate generates its gRPC code at build time
  openssl           # cluster tests: a throwaway CA and member/client certificates
  gnuplot-nox       # benches/bulk: the throughput plot
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # OVS's package starts its services; the tests run their own private instances.
  systemctl disable --now openvswitch-switch >/dev/null 2>&1 || true
  # Nor does etcd's: the cluster tests start their own members.
  systemctl disable --now etcd >/dev/null 2>&1 || true
fi

# cargo-deb builds the Debian package (scripts/package.sh).
if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "setup: installing cargo-deb"
  cargo install cargo-deb --locked --quiet
fi
