#!/usr/bin/env bash
# Regenerates dataplane/tests/fixtures/netlink/*.txt: the netlink request that
# iproute2 (`ip`, `tc`) sends for each command below, captured with strace.
# The kernel may refuse a request (no SR-IOV, no tc flower): the bytes are
# sent anyway, and they are what our encoder must produce for the same
# request (dataplane/tests/netlink_iproute2.rs). Needs root, strace, iproute2.
#
# Every fixture records the exact command and the interface indices it ran
# with (fixed here with `index N`, so the bytes do not depend on the host).
set -euo pipefail

OUT="$(cd "$(dirname "$0")/.." && pwd)/dataplane/tests/fixtures/netlink"
NS="of-cap$$"
mkdir -p "$OUT"
ip netns add "$NS"
trap 'ip netns del "$NS"' EXIT
ip -n "$NS" link add pf0 index 10 type veth peer name pf0p index 11
ip -n "$NS" link add rep0 index 12 type veth peer name rep0p index 13
ip -n "$NS" link add rep1 index 14 type veth peer name rep1p index 15
ip -n "$NS" link add vx0 index 16 type veth peer name vx0p index 17
ip -n "$NS" link add gt0 index 18 type veth peer name gt0p index 19
IFACES="pf0=10 rep0=12 rep1=14 vx0=16 gt0=18"

# capture NAME NLMSG_TYPE COMMAND...: keeps the last request of that type.
capture() {
  local name=$1 type=$2
  shift 2
  local log
  log=$(ip netns exec "$NS" strace -f -e trace=sendmsg -e write=all -x -s 4096 "$@" 2>&1 >/dev/null || true)
  local hex
  hex=$(printf '%s\n' "$log" | awk -v t="nlmsg_type=$type," '
    /^sendmsg\(/ || /^\[pid +[0-9]+\] sendmsg\(/ { keep = index($0, t) > 0; if (keep) buf = ""; next }
    keep && /^ \| [0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]  / { line = substr($0, 11, 49); gsub(/ /, "", line); buf = buf line }
    END { print buf }')
  if [ -z "$hex" ]; then
    echo "capture-netlink: $name: no $type request seen" >&2
    printf '%s\n' "$log" >&2
    exit 1
  fi
  {
    echo "# command: $*"
    echo "# interfaces: $IFACES"
    echo "# captured with: strace -f -e trace=sendmsg -e write=all -x -s 4096 ($(strace -V | head -1); $(ip -V))"
    echo "$hex"
  } >"$OUT/$name.txt"
  echo "capture-netlink: $name (${#hex} hex digits)"
}

capture vf_mac RTM_NEWLINK ip link set dev pf0 vf 0 mac 02:00:00:00:00:01
capture vf_vlan RTM_NEWLINK ip link set dev pf0 vf 1 vlan 100
capture vf_vlan_qos RTM_NEWLINK ip link set dev pf0 vf 2 vlan 100 qos 3
capture vf_vlan_clear RTM_NEWLINK ip link set dev pf0 vf 0 vlan 0
capture vf_spoofchk_on RTM_NEWLINK ip link set dev pf0 vf 0 spoofchk on
capture vf_spoofchk_off RTM_NEWLINK ip link set dev pf0 vf 5 spoofchk off
capture vf_trust_on RTM_NEWLINK ip link set dev pf0 vf 0 trust on
capture vf_trust_off RTM_NEWLINK ip link set dev pf0 vf 7 trust off
capture vf_state_auto RTM_NEWLINK ip link set dev pf0 vf 0 state auto
capture vf_state_enable RTM_NEWLINK ip link set dev pf0 vf 1 state enable
capture vf_state_disable RTM_NEWLINK ip link set dev pf0 vf 2 state disable
capture vf_rate RTM_NEWLINK ip link set dev pf0 vf 3 min_tx_rate 10 max_tx_rate 1000
capture vf_mac_vlan_qos RTM_NEWLINK ip link set dev pf0 vf 4 mac 02:00:00:00:00:04 vlan 4094 qos 7

capture qdisc_clsact RTM_NEWQDISC tc qdisc add dev rep0 clsact
capture flower_redirect RTM_NEWTFILTER tc filter add dev rep0 ingress protocol ip pref 10 handle 5 flower skip_sw dst_ip 198.51.100.1 action mirred egress redirect dev rep1
capture flower_drop_all RTM_NEWTFILTER tc filter add dev rep0 ingress protocol all pref 1 handle 1 flower skip_sw src_mac 02:00:00:00:00:01 action drop
capture flower_l2_macs RTM_NEWTFILTER tc filter add dev rep1 ingress protocol all pref 65000 handle 100 flower skip_sw dst_mac 02:00:00:00:00:02 src_mac 02:00:00:00:00:01 action mirred egress redirect dev rep0
capture flower_encap_vxlan_v4 RTM_NEWTFILTER tc filter add dev rep0 ingress protocol ip pref 100 handle 7 flower skip_sw dst_mac 02:00:00:00:00:02 src_ip 198.51.100.0/24 ip_proto udp dst_port 53 action vlan push id 100 action tunnel_key set src_ip 192.0.2.1 dst_ip 192.0.2.2 id 42 dst_port 4789 tos 0 ttl 64 nocsum action mirred egress redirect dev vx0
capture flower_encap_vxlan_v6_csum RTM_NEWTFILTER tc filter add dev rep0 ingress protocol ipv6 pref 200 handle 8 flower skip_sw dst_ip 2001:db8:1::/48 ip_proto tcp src_port 1000 action tunnel_key set src_ip 2001:db8::1 dst_ip 2001:db8::2 id 16777215 dst_port 8472 tos 184 ttl 255 csum action mirred egress redirect dev vx0
capture flower_encap_gretap RTM_NEWTFILTER tc filter add dev rep1 ingress protocol 802.1Q pref 300 handle 9 flower skip_sw vlan_id 10 action vlan modify id 20 action tunnel_key set src_ip 203.0.113.1 dst_ip 203.0.113.2 id 7 tos 0 ttl 64 nocsum action mirred egress redirect dev gt0
capture flower_decap_vxlan_v6 RTM_NEWTFILTER tc filter add dev vx0 ingress protocol 802.1Q pref 5 handle 11 flower skip_sw vlan_id 100 vlan_ethtype ipv6 enc_src_ip 2001:db8::2 enc_dst_ip 2001:db8::1 enc_key_id 42 enc_dst_port 4789 action tunnel_key unset action vlan pop action mirred egress redirect dev rep1
capture flower_decap_gretap_v4 RTM_NEWTFILTER tc filter add dev gt0 ingress protocol all pref 65535 handle 12 flower skip_sw enc_src_ip 192.0.2.2 enc_dst_ip 192.0.2.1 enc_key_id 7 action tunnel_key unset action mirred egress redirect dev rep0
capture flower_del RTM_DELTFILTER tc filter del dev rep0 ingress protocol ip pref 100 handle 7 flower
capture flower_get RTM_GETTFILTER tc filter get dev rep0 ingress protocol ip pref 100 handle 7 flower
