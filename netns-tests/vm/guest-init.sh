#!/bin/sh
# PID 1 of the test guest (netns-tests/vm/run.sh), on the host's root file
# system shared read-only: mounts what a test needs writable or virtual,
# runs the command the host wrote into the results share, writes its exit
# status there, and powers off. The guest never reboots: when this ends,
# QEMU ends.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs shm /dev/shm
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mkdir -p /run/vm /run/netns /tmp/home
mount -t 9p -o trans=virtio,version=9p2000.L vmout /run/vm || {
  echo "vm: cannot mount the results share"; echo o > /proc/sysrq-trigger; }
ip link set lo up
# No fallback tunnel devices (gre0, ip6tnl0, ...) in every new namespace:
# each test makes several, and the emulated CPU pays for each device.
sysctl -qw net.core.fb_tunnels_only_for_init_net=2
hostname overlayd-vm

limit=$(sed -n 's/.*vm\.timeout=\([0-9]*\).*/\1/p' /proc/cmdline)
echo "vm: guest up ($(uname -r)), running the command (limit ${limit:-900} s)"
# Its own session, so a timeout takes down every process it started.
timeout -k 5 "${limit:-900}" setsid sh /run/vm/cmd.sh </dev/null
status=$?
[ $status -ne 124 ] || echo "vm: the command ran out of time (${limit:-900} s)"
echo $status > /run/vm/status
sync
echo o > /proc/sysrq-trigger
# No program can start any more (the root share is going away): spin.
while :; do :; done
