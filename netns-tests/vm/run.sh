#!/usr/bin/env bash
# Boots a throwaway guest with Debian's stock kernel under QEMU (TCG) and
# runs the project's guest tests, or a given command, inside it. The guest
# sees the host's root file system read-only over virtio-9p (so the
# project's binaries and test binaries, tshark, ovs-vswitchd, ip ... are all
# there), with tmpfs on /tmp and /run; a writable 9p share carries the exit
# status back, and the console streams the output here.
#
#   netns-tests/vm/run.sh                 build and run the guest lane (vm_kernel_peers)
#   netns-tests/vm/run.sh --tests 'F ...' the same, only tests whose name contains one of the words
#   netns-tests/vm/run.sh -- CMD ARGS...  run CMD in the guest (in the current directory)
#
# Options: --timeout SECS (whole run, default 900), --mem MB (default 2048),
# --cpus N (default: host CPUs, at most 2). Exit status: the command's; 124
# when the time ran out; 2 when the guest cannot be started (and why).
# Environment: OVERLAYD_VM_KERNEL (a vmlinuz to boot instead of the newest
# Debian one), OVERLAYD_VM_CACHE (where the initramfs is kept).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
timeout_s=900
mem=2048
cpus=$(( $(nproc) < 2 ? $(nproc) : 2 ))
mode=lane
filter=
cmd=()
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) timeout_s=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --tests) filter=$2; shift 2 ;;
    --) shift; mode=cmd; cmd=("$@"); break ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "vm: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$mode" = cmd ] && [ ${#cmd[@]} -eq 0 ]; then
  echo "vm: -- needs a command" >&2; exit 2
fi

die() { echo "vm: $*" >&2; exit 2; }

# What the guest needs comes from the project's set-up script (as root).
if ! command -v qemu-system-x86_64 >/dev/null || [ ! -x /bin/busybox ] \
  || ! ls /boot/vmlinuz-* >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    "$repo/scripts/setup.sh"
  fi
fi
qemu=$(command -v qemu-system-x86_64 || true)
[ -n "$qemu" ] || die "qemu-system-x86_64 is not installed: run scripts/setup.sh as root (package qemu-system-x86)"
# The initramfs has no libraries: busybox must be the static one.
busybox=/bin/busybox
[ -x "$busybox" ] && ! ldd "$busybox" >/dev/null 2>&1 \
  || die "no static busybox: run scripts/setup.sh as root (package busybox-static)"

# The newest Debian kernel whose modules are installed (the host's own
# kernel may have none: the guest needs ip_gre, geneve, cls_flower...).
kernel=${OVERLAYD_VM_KERNEL:-}
if [ -z "$kernel" ]; then
  for k in $(ls -1v /boot/vmlinuz-* 2>/dev/null | sort -rV); do
    v=${k#/boot/vmlinuz-}
    if [ -f "/lib/modules/$v/modules.dep" ]; then kernel=$k; break; fi
  done
fi
if [ -n "${OVERLAYD_VM_KERNEL:-}" ]; then
  [ -r "$kernel" ] || die "OVERLAYD_VM_KERNEL=$kernel: no such readable kernel image"
fi
[ -n "$kernel" ] && [ -r "$kernel" ] \
  || die "no kernel image with modules in /boot and /lib/modules: run scripts/setup.sh as root (package linux-image-amd64)"
kver=${kernel#/boot/vmlinuz-}
moddir=/lib/modules/$kver
[ -f "$moddir/modules.dep" ] || die "$kernel has no modules in $moddir"

# The initramfs: static busybox and the modules that reach the 9p root,
# built once per kernel (and per version of this script) into a cache.
cache=${OVERLAYD_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/overlayd-vm}
stamp=$(cat "$0" "$kernel" "$busybox" | sha256sum | cut -c1-16)
initrd=$cache/initrd-$kver-$stamp.cpio.gz
if [ ! -f "$initrd" ]; then
  mkdir -p "$cache"
  build=$(mktemp -d)
  mkdir -p "$build"/{bin,dev,proc,sys,newroot,lib/modules}
  cp "$busybox" "$build/bin/busybox"
  # Each module after what it depends on (modules.dep lists dependencies
  # in reverse load order).
  order=()
  add_module() {
    local line deps d
    line=$(grep -E "^kernel/.*/$1\.ko(\.[a-z]+)?:" "$moddir/modules.dep") || return 0
    deps=${line#*:}
    for d in $(echo "$deps" | tr ' ' '\n' | tac); do
      [[ " ${order[*]} " == *" $d "* ]] || order+=("$d")
    done
    d=${line%%:*}
    [[ " ${order[*]} " == *" $d "* ]] || order+=("$d")
  }
  for m in virtio_pci 9pnet_virtio 9p; do add_module "$m"; done
  for m in "${order[@]}"; do
    case "$m" in
      *.xz) xz -dc "$moddir/$m" > "$build/lib/modules/$(basename "${m%.xz}")" ;;
      *.zst) zstd -qdc "$moddir/$m" > "$build/lib/modules/$(basename "${m%.zst}")" ;;
      *) cp "$moddir/$m" "$build/lib/modules/" ;;
    esac
    basename "${m%.*}" | sed 's/\.ko$//' >> "$build/modules"
  done
  cat > "$build/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
for m in $(cat /modules); do insmod /lib/modules/$m.ko || echo "vm: insmod $m failed"; done
init=$(sed -n 's/.*vm\.init=\([^ ]*\).*/\1/p' /proc/cmdline)
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /newroot; then
  echo "vm: cannot mount the host's root over 9p"; echo o > /proc/sysrq-trigger
fi
umount /proc /dev
exec switch_root /newroot "$init"
INIT
  chmod +x "$build/init"
  (cd "$build" && find . | cpio -o -H newc --quiet | gzip -1) > "$initrd.tmp"
  mv "$initrd.tmp" "$initrd"
  rm -rf "$build"
fi

# The lane: the guest test binaries (and overlayd, overlayctl), prebuilt
# here and run in the guest without cargo (its view of the target dir is
# read-only).
lane_tests=(vm_kernel_peers vm_tc_flower)
if [ "$mode" = lane ]; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
  (cd "$repo" && cargo build -q -p dataplane --bins)
  targets=()
  for t in "${lane_tests[@]}"; do targets+=(--test "$t"); done
  # Only the test targets: cargo also builds (and lists) the package's
  # binaries for its integration tests.
  mapfile -t bins < <(cd "$repo" && cargo test -q -p netns-tests "${targets[@]}" --no-run --message-format=json \
    | grep '"kind":\["test"\]' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
  [ ${#bins[@]} -eq ${#lane_tests[@]} ] || die "building the guest test binaries (${lane_tests[*]}) failed"
  # Every binary runs, and the lane fails if any failed.
  cmd=(env "OVERLAYD_BIN_DIR=$CARGO_TARGET_DIR/debug" OVERLAYD_IN_VM=1 sh -c \
    'st=0; f=$1; shift; for b; do "$b" --test-threads=2 --nocapture $f || st=1; done; exit $st' \
    sh "$filter" "${bins[@]}")
fi

out=$(mktemp -d /tmp/overlayd-vm.XXXXXX)
qemu_pid=
cleanup() {
  local pid
  pid=$(cat "$out/qemu.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    sleep 1
    kill -KILL "$pid" 2>/dev/null || true
  fi
  [ -z "$qemu_pid" ] || wait "$qemu_pid" 2>/dev/null || true
  rm -rf "$out"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# What the guest runs: the same directory, PATH and test settings as here.
{
  echo "cd $(printf '%q' "$PWD")"
  for v in PATH HOME CI RUST_BACKTRACE RUST_LOG OVERLAYD_TEST_VETH_GRO; do
    [ -z "${!v+x}" ] || echo "export $v=$(printf '%q' "${!v}")"
  done
  printf '%q ' "${cmd[@]}"; echo
} > "$out/cmd.sh"
: > "$out/console.log"

start=$(date +%s)
"$qemu" -machine q35,accel=tcg -cpu "${OVERLAYD_VM_CPU:-max}" -smp "$cpus" -m "$mem" \
  -kernel "$kernel" -initrd "$initrd" \
  -append "console=ttyS0 quiet loglevel=4 panic=-1 vm.init=$repo/netns-tests/vm/guest-init.sh vm.timeout=$timeout_s" \
  -fsdev local,id=root,path=/,readonly=on,security_model=none,multidevs=remap \
  -device virtio-9p-pci,fsdev=root,mount_tag=hostroot \
  -fsdev local,id=out,path="$out",security_model=none \
  -device virtio-9p-pci,fsdev=out,mount_tag=vmout \
  -nic none -display none -no-reboot -monitor none \
  -serial "file:$out/console.log" -pidfile "$out/qemu.pid" &
qemu_pid=$!
tail -n +1 -f --pid="$qemu_pid" "$out/console.log" 2>/dev/null &
tail_pid=$!

# Hard limit: the guest's own timeout (in guest-init.sh) plus its boot.
deadline=$((start + timeout_s + 60))
while kill -0 "$qemu_pid" 2>/dev/null; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "vm: no answer from the guest after $((timeout_s + 60)) s: stopping QEMU" >&2
    kill -KILL "$qemu_pid" 2>/dev/null || true
    break
  fi
  sleep 1
done
wait "$qemu_pid" 2>/dev/null || true
qemu_pid=
wait "$tail_pid" 2>/dev/null || true

if [ ! -f "$out/status" ]; then
  echo "vm: the guest ended without an exit status after $(( $(date +%s) - start )) s (see the console above)" >&2
  exit 124
fi
status=$(cat "$out/status")
echo "vm: guest finished in $(( $(date +%s) - start )) s, exit status $status" >&2
exit "$status"
