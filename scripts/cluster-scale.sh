#!/usr/bin/env bash
# Cluster mode at scale, by simulation (docs/cluster.md, "Scale"): one real
# etcd and one real overlayd (control only: the numbers are the control
# plane's), NODES simulated nodes and ENDPOINTS endpoints written straight into
# etcd (10,000 puts per transaction). Measures overlayd's full relist (list +
# merge + one commit), its memory and CPU, and the time of incremental updates
# (one endpoint write to the commit that carries it).
#
#   scripts/cluster-scale.sh [NODES] [ENDPOINTS]     # default 1000 100000
#   PROFILE=debug scripts/cluster-scale.sh 10000 100000
#
# Not run in CI: it takes minutes. Needs root (a private network namespace
# for etcd's ports). Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "cluster-scale: run as root" >&2; exit 1; }
NODES=${1:-1000}
EPS=${2:-100000}
PROFILE=${PROFILE:-release}
UPDATES=${UPDATES:-20}
scripts/setup.sh
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
if [ "$PROFILE" = release ]; then
  cargo build --quiet --release -p dataplane --bins
else
  cargo build --quiet -p dataplane --bins
fi
BIN=$TARGET/$PROFILE
NS=clscale$$
W=$(mktemp -d /tmp/overlayd-cluster-scale.XXXX)

cleanup() {
  set +e
  [ -f "$W/overlayd.log" ] && grep -E "WARN|ERROR" "$W/overlayd.log" | tail -5
  for p in $(ip netns pids "$NS" 2>/dev/null); do kill "$p" 2>/dev/null; done
  sleep 0.5
  ip netns del "$NS" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
nsx() { ip netns exec "$NS" "$@"; }
ctl() { nsx etcdctl --endpoints=http://127.0.0.1:2379 --command-timeout=60s "$@"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

ip netns add "$NS"
ip -n "$NS" link set lo up
nsx etcd --data-dir "$W/etcd" --listen-client-urls http://127.0.0.1:2379 \
  --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
  --max-txn-ops 10000 --max-request-bytes 33554432 --quota-backend-bytes 8589934592 \
  >"$W/etcd.log" 2>&1 &
for _ in $(seq 100); do ctl endpoint health >/dev/null 2>&1 && break; sleep 0.1; done

echo "== writing $NODES simulated nodes and $EPS endpoints into etcd"
t=$(now_ms)
/usr/bin/python3 - "$NODES" "$EPS" "$W" <<'EOF'
import json, sys
nodes, eps, w = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
P = "/overlayd/v1/"
# etcdctl txn reads each value as a Go quoted string.
q = lambda v: json.dumps(json.dumps(v, separators=(",", ":")))
lines = [f"put {P}networks/blue {q({'vni': 42})}"]
for n in range(nodes):
    lines.append(f"put {P}nodes/sim-{n} {q({'vteps': [f'2001:db8::1:{n:x}']})}")
for e in range(eps):
    mac = "02:00:%02x:%02x:%02x:%02x" % ((e >> 24) & 255, (e >> 16) & 255, (e >> 8) & 255, e & 255)
    lines.append(f"put {P}endpoints/blue/{mac} {q({'node': f'sim-{e % nodes}'})}")
for i in range(0, len(lines), 10000):
    with open(f"{w}/txn.{i // 10000:04d}", "w") as f:
        f.write("\n" + "\n".join(lines[i:i + 10000]) + "\n\n\n")
EOF
for f in "$W"/txn.*; do ctl txn <"$f" >/dev/null; done
echo "written in $(( $(now_ms) - t )) ms"

cat >"$W/overlayd.toml" <<EOF
[[ports]]
name = "up0"
kind = "uplink"
mac = "02:00:00:00:00:01"

[cluster]
endpoints = ["http://127.0.0.1:2379"]
node = "bench"
vteps = ["2001:db8::ffff"]
uplink = "up0"
lease_ttl_secs = 10
EOF
echo "== starting overlayd ($PROFILE build, control only)"
t=$(now_ms)
nsx "$BIN/overlayd" run --control-only --config "$W/overlayd.toml" --state-dir "$W/state" \
  --socket "$W/api.sock" 2>"$W/overlayd.log" &
sleep 0.2
# `ip netns exec` waits for its command: the daemon is its child.
PID=$(pgrep -P $! -x overlayd || echo $!)
OCTL="$BIN/overlayctl --socket $W/api.sock"
for _ in $(seq 6000); do grep -q "cluster state listed and applied" "$W/overlayd.log" && break; sleep 0.05; done
wall=$(( $(now_ms) - t ))
line=$(grep "cluster state listed and applied" "$W/overlayd.log")
ticks=$(getconf CLK_TCK)
cpu() { awk -v t="$ticks" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$PID/stat"; }
mem() { awk '/VmRSS|VmHWM/ { printf "%s %d MB  ", $1, $2 / 1024 }' "/proc/$PID/status"; }
echo "full relist: ${line##*records=} (list + merge + one commit); $wall ms from process start"
echo "after the relist: $(mem) cpu $(cpu) s; state.json $(( $(stat -c %s "$W/state/state.json") / 1024 )) KiB"
$OCTL cluster status
$OCTL fdb list | wc -l | awk '{ print "FDB entries: " $1 - 1 }'
$OCTL tunnel list | wc -l | awk '{ print "tunnels: " $1 - 1 }'

echo "== $UPDATES incremental updates (endpoint write through the API -> the commit that carries it)"
c0=$(cpu)
/usr/bin/python3 - "$W/api.sock" "$UPDATES" <<'EOF2'
import json, socket, sys, time
sock, n = sys.argv[1], int(sys.argv[2])
def call(method, path, body=None):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    b = json.dumps(body).encode() if body is not None else b""
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: o\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {len(b)}\r\n\r\n".encode() + b)
    raw = b""
    while chunk := s.recv(1 << 16):
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], raw[:300]
    return json.loads(body)
ms = []
for i in range(n):
    before = call("GET", "/v1/cluster/status")["batches"]
    t = time.monotonic()
    call("POST", "/v1/cluster/endpoints", {"network": "blue", "mac": "02:ff:00:00:00:%02x" % i, "node": "sim-1"})
    while call("GET", "/v1/cluster/status")["batches"] == before:
        time.sleep(0.002)
    ms.append((time.monotonic() - t) * 1000)
ms.sort()
print("update ms: p50 %.0f max %.0f min %.0f" % (ms[len(ms) // 2], ms[-1], ms[0]))
EOF2
echo "cpu for the $UPDATES updates: $(awk -v a="$c0" -v b="$(cpu)" 'BEGIN { printf "%.2f", b - a }') s; $(mem)"
c0=$(cpu); sleep 5
echo "idle cpu over 5 s: $(awk -v a="$c0" -v b="$(cpu)" 'BEGIN { printf "%.2f", b - a }') s"
kill "$PID"; wait "$PID" 2>/dev/null || true
