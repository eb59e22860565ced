#!/usr/bin/env bash
# The packaging test: builds the Debian package (dev profile: quick), installs
# it with dpkg -i on this machine, runs what it installed (--version, check on
# the installed example, a daemon that tells systemd it is ready), checks the
# unit offline (systemd-analyze verify, security score 3.0 or lower), purges
# the package and checks nothing it installed or made is left. Then builds
# the OCI image from Debian packages and runs the same commands from it
# (scripts/image-test.sh). Needs root and cargo-deb (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "package-test: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "needs root (dpkg -i)"
for t in cargo-deb dpkg systemd-analyze help2man python3 man; do
  command -v "$t" >/dev/null || fail "$t is missing: run scripts/setup.sh"
done
if dpkg-query -W -f='${Status}' overlayd 2>/dev/null | grep -q installed; then
  fail "a package named overlayd is installed already; this test would replace it (dpkg --purge overlayd first)"
fi

deb=$(PROFILE=${PROFILE:-dev} scripts/package.sh)
echo "== built $deb ($(du -h "$deb" | cut -f1))"
files=$(mktemp)
work=$(mktemp -d)
cleanup() {
  [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null || true
  [ -n "${ns:-}" ] && ip netns del "$ns" 2>/dev/null || true
  dpkg --purge overlayd >/dev/null 2>&1 || true
  rm -rf "$files" "$work"
}
trap cleanup EXIT

dpkg -i "$deb" >/dev/null
dpkg-query -W -f='${Status}\n' overlayd | grep -q "install ok installed" || fail "dpkg -i did not install overlayd"
dpkg -L overlayd >"$files"

echo "== --version"
commit=$(git rev-parse --short=12 HEAD)
for b in overlayd overlayctl; do
  v=$(/usr/bin/$b --version)
  echo "$v"
  [[ $v == "$b "*"(commit $commit)" ]] || fail "$b --version says '$v', not the commit $commit"
done

echo "== overlayd check on the installed example"
/usr/bin/overlayd check --config /usr/share/doc/overlayd/examples/vxlan.toml >"$work/check" \
  || fail "overlayd check refused the installed example: $(cat "$work/check")"
head -3 "$work/check"

echo "== the DaemonSet example: its configuration passes check, its capabilities are the unit's"
python3 - /usr/share/doc/overlayd/deploy/daemonset.yaml "$work/ds.toml" <<'PY' >"$work/ds-caps"
import sys, yaml
docs = list(yaml.safe_load_all(open(sys.argv[1])))
cm = next(d for d in docs if d["kind"] == "ConfigMap")
open(sys.argv[2], "w").write(cm["data"]["overlayd.toml"])
ds = next(d for d in docs if d["kind"] == "DaemonSet")
c = ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
assert c["drop"] == ["ALL"], c
print(" ".join(sorted(c["add"])))
PY
/usr/bin/overlayd check --config "$work/ds.toml" >/dev/null || fail "the DaemonSet's ConfigMap fails overlayd check"
unit_caps=$(sed -n 's/^AmbientCapabilities=//p' /usr/lib/systemd/system/overlayd.service | tr ' ' '\n' | sed 's/^CAP_//')
want=$( (echo "$unit_caps"; echo IPC_LOCK) | sort | tr '\n' ' ' | sed 's/ $//')
[ "$(cat "$work/ds-caps")" = "$want" ] || fail "DaemonSet capabilities '$(cat "$work/ds-caps")', expected the unit's plus IPC_LOCK: '$want'"
echo "capabilities: $want"

echo "== man pages and the unit's Documentation="
for p in overlayd overlayctl; do
  man -w "$p" >/dev/null || fail "no man page for $p"
  # Completions ship for a binary that can generate them.
  if /usr/bin/$p completions bash >/dev/null 2>&1; then
    for f in /usr/share/bash-completion/completions/$p /usr/share/zsh/vendor-completions/_$p \
      /usr/share/fish/vendor_completions.d/$p.fish; do
      [ -s "$f" ] || fail "$p generates completions but the package lacks $f"
    done
    echo "$p: man page and completions"
  else
    echo "$p: man page (the binary has no completions command)"
  fi
done
unit=/usr/lib/systemd/system/overlayd.service
for doc in $(sed -n 's|^Documentation=.*file://\([^ ]*\).*|\1|p' "$unit"); do
  [ -f "$doc" ] || fail "the unit's Documentation= names $doc, which the package does not install"
done

echo "== systemd-analyze verify and security (offline)"
systemd-analyze verify "$unit" || fail "systemd-analyze verify refused $unit"
score=$(systemd-analyze security --offline=yes "$unit" 2>&1 | sed -n 's/.*Overall exposure level for overlayd.service: \([0-9.]*\).*/\1/p')
echo "exposure $score"
python3 -c "import sys; sys.exit(0 if float('$score') <= 3.0 else 1)" \
  || fail "systemd-analyze security rates the unit $score (more than 3.0)"

echo "== the installed daemon notifies readiness once its API answers"
# As the unit would start it, control-only (no interface needed), with the
# example as its configuration and a notify socket standing in for systemd.
install -d -m 0755 /etc/overlayd
cp /usr/share/doc/overlayd/examples/vxlan.toml /etc/overlayd/overlayd.toml
install -d -m 0700 /var/lib/overlayd
export NOTIFY_SOCKET=$work/notify
python3 - "$NOTIFY_SOCKET" >"$work/notified" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(20)
try:
    while True:
        msg = s.recv(4096).decode()
        print(msg.strip(), flush=True)
        if "STOPPING=1" in msg:
            break
except socket.timeout:
    pass
PY
listener=$!
for _ in $(seq 50); do [ -S "$NOTIFY_SOCKET" ] && break; sleep 0.1; done
/usr/bin/overlayd run --control-only --state-dir /var/lib/overlayd --socket /run/overlayd/api.sock \
  --config /etc/overlayd/overlayd.toml 2>"$work/log" &
daemon=$!
for _ in $(seq 100); do grep -q READY=1 "$work/notified" && break; sleep 0.1; done
unset NOTIFY_SOCKET
grep -q READY=1 "$work/notified" || fail "overlayd never sent READY=1; its log: $(cat "$work/log")"
/usr/bin/overlayctl --socket /run/overlayd/api.sock status >/dev/null \
  || fail "READY=1 was sent but the API does not answer"
kill -TERM "$daemon"
wait "$daemon" || fail "overlayd did not stop cleanly on SIGTERM: $(cat "$work/log")"
daemon=
wait "$listener" || true
grep -q STOPPING=1 "$work/notified" || fail "overlayd did not send STOPPING=1 on SIGTERM"
[ -f /var/lib/overlayd/state.json ] || fail "the daemon kept no state in /var/lib/overlayd"
echo "notified: $(tr '\n' ' ' <"$work/notified")"

echo "== the installed daemon attaches its built-in XDP program"
# The program is compiled into the binary (dataplane/build.rs): nothing is
# read from disk or compiled here. Two veths in a namespace of our own.
ns=pkgtest$$
ip netns add "$ns"
ip -n "$ns" link add pkwl type veth peer name pkwe
ip -n "$ns" link add pkup type veth peer name pkub
for d in lo pkwl pkwe pkup pkub; do ip -n "$ns" link set "$d" up; done
ip -n "$ns" addr add 192.0.2.1/24 dev pkup
# backend = "af_xdp" named: on veths the default (auto) would choose tc.
cat >"$work/dp.toml" <<'TOML'
[[ports]]
name = "wl"
kind = "workload"
interface = "pkwl"
backend = "af_xdp"

[[ports]]
name = "up"
kind = "uplink"
interface = "pkup"
backend = "af_xdp"

[[tunnels]]
name = "to-b"
type = "vxlan"
uplink = "up"
local = "192.0.2.1"
remote = "192.0.2.2"
vni = 42
next_hop_mac = "02:00:00:00:02:00"

[[rules]]
id = 10
match = { in_port = "wl" }
actions = [{ encap = "to-b" }]
TOML
# --remove-on-exit: a clean stop (a plain SIGTERM leaves the programs pinned
# and serving the XDP tier for the next start, docs/operations.md).
ip netns exec "$ns" /usr/bin/overlayd run --config "$work/dp.toml" --state-dir "$work/dp-state" \
  --socket "$work/dp.sock" --remove-on-exit 2>"$work/dp.log" &
daemon=$!
up=
for _ in $(seq 100); do
  /usr/bin/overlayctl --socket "$work/dp.sock" status >/dev/null 2>&1 && { up=1; break; }
  sleep 0.1
done
attached=$(ip -n "$ns" -d link show | grep -c "prog/xdp" || true)
kill -TERM "$daemon" 2>/dev/null || true
wait "$daemon" || true
daemon=
left=$(ip -n "$ns" -d link show | grep -c "prog/xdp" || true)
ip netns del "$ns"
[ -n "$up" ] || fail "the installed overlayd did not start its datapath: $(cat "$work/dp.log")"
[ "$attached" -ge 2 ] || fail "XDP attached to $attached of 2 ports: $(cat "$work/dp.log")"
[ "$left" -eq 0 ] || fail "an XDP program stayed attached after SIGTERM"
echo "XDP program attached to both ports, detached on SIGTERM"

echo "== purge leaves nothing"
dpkg --purge overlayd >/dev/null
dpkg-query -W -f='${Status}\n' overlayd 2>/dev/null | grep -q "installed" && fail "overlayd still installed after purge"
left=()
while read -r f; do
  # Directories the package shares with others (/usr, /usr/share/man/man1) stay.
  if [ -f "$f" ] || [ -L "$f" ] || { [ -d "$f" ] && [[ $f == *overlayd* ]]; }; then left+=("$f"); fi
done <"$files"
for f in /etc/overlayd /var/lib/overlayd /var/lib/private/overlayd /run/overlayd \
  /var/lib/systemd/deb-systemd-helper-enabled/overlayd.service.dsh-also \
  /var/lib/systemd/deb-systemd-helper-masked/overlayd.service; do
  [ -e "$f" ] || [ -L "$f" ] && left+=("$f")
done
[ ${#left[@]} -eq 0 ] || fail "left after purge: ${left[*]}"
echo "package-test: ok"

scripts/image-test.sh "$deb"
