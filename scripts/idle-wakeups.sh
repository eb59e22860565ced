#!/usr/bin/env bash
# How often an idle overlayd wakes: one daemon with a workload port and an
# uplink (veth pairs in a namespace of its own, AF_XDP, the XDP tier on),
# the tunnel's remote answering ARP from a second namespace, no traffic;
# the context switches of each of its threads over SECS seconds
# (/proc/PID/task/*/status). Root. Usage: scripts/idle-wakeups.sh [BIN_DIR] [SECS]
set -euo pipefail
BIN=${1:-target/release}
SECS=${2:-10}
NS=iw-$$
W=$(mktemp -d)
cleanup() {
  [ -f "$W/pid" ] && kill "$(cat "$W/pid")" 2>/dev/null && sleep 0.5
  ip netns del "$NS" 2>/dev/null || true
  ip netns del "$NS-peer" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
ip netns add "$NS"
ip netns add "$NS-peer"
for n in "$NS" "$NS-peer"; do # no IPv6 chatter: nothing at all is sent
  ip netns exec "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done
ip -n "$NS" link add wa type veth peer name wb
ip -n "$NS" link add ua type veth peer name ub netns "$NS-peer"
for i in wa wb ua lo; do ip -n "$NS" link set "$i" up; done
ip -n "$NS-peer" link set ub up
ip -n "$NS" addr add 192.0.2.1/24 dev ua
ip -n "$NS-peer" addr add 192.0.2.2/24 dev ub
cat >"$W/c.toml" <<EOF
[[ports]]
name = "wl0"
kind = "workload"
interface = "wa"

[[ports]]
name = "up0"
kind = "uplink"
interface = "ua"

[[tunnels]]
name = "vni42"
type = "vxlan"
uplink = "up0"
local = "192.0.2.1"
remote = "192.0.2.2"
vni = 42

[[rules]]
id = 10
priority = 100
match = { in_port = "wl0" }
actions = [{ encap = "vni42" }]
EOF
ip netns exec "$NS" "$BIN/overlayd" run --config "$W/c.toml" --state-dir "$W/state" \
  --socket "$W/sock" 2>"$W/log" &
echo $! >"$W/pid"
for _ in $(seq 100); do
  "$BIN/overlayctl" --socket "$W/sock" status >/dev/null 2>&1 && break
  sleep 0.1
done
"$BIN/overlayctl" --socket "$W/sock" status >/dev/null || { cat "$W/log"; exit 1; }
sleep "${SETTLE:-2}" # start-up settles
PID=$(cat "$W/pid")
snap() {
  for t in /proc/"$PID"/task/*; do
    printf '%s %s %s\n' "${t##*/}" "$(cat "$t/comm")" \
      "$(awk '/ctxt_switches/ {s += $2} END {print s}' "$t/status")"
  done | sort
}
mtime() { stat -c %.3Y "$W/state/counters.json" 2>/dev/null || echo none; }
snap >"$W/a"
m0=$(mtime)
sleep "$SECS"
snap >"$W/b"
m1=$(mtime)
join "$W/a" "$W/b" | awk -v secs="$SECS" '
  { d = $5 - $3; if (d > 0) printf "  %-16s %7.1f a second\n", $2, d / secs; total += d }
  END { printf "overlayd, idle: %.1f wakeups a second (context switches of all its threads over %d s)\n", total / secs, secs }'
if [ "$m0" = "$m1" ]; then
  echo "counters.json: not written in those $SECS s"
else
  echo "counters.json: written in those $SECS s (modified at $m0, then $m1)"
fi
