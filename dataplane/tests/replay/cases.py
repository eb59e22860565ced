#!/usr/bin/python3
"""Replay cases for overlayd, built and checked with scapy.

  cases.py gen OUTDIR            write OUTDIR/<case>.pcap and OUTDIR/cases.json
  cases.py check OUTDIR CASE     check overlayd's outputs for CASE field by field
                                 (reads OUTDIR/CASE.result.json and OUTDIR/CASE.out.<port>.pcap)

Must run under Debian's /usr/bin/python3, which sees python3-scapy.
Addresses: documentation ranges only.
"""
import json
import os
import sys

from scapy.all import (ARP, ICMP, IP, IPv6, TCP, UDP, Ether, Raw, Dot1Q, rdpcap,
                       wrpcap, raw, checksum, IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt,
                       IPv6ExtHdrRouting, IPv6ExtHdrFragment, RouterAlert, PadN, Pad1,
                       HBHOptUnknown)

WL = "02:00:00:00:00:01"       # the workload behind wl0
UP_MAC = "02:00:00:00:00:10"   # our uplink
PEER_MAC = "02:00:00:00:00:20"


def inner_udp(dst="198.51.100.2", size=32, src="198.51.100.1", tos=0, dmac="02:00:00:00:00:02"):
    return Ether(src=WL, dst=dmac) / IP(src=src, dst=dst, tos=tos, flags="DF") / \
        UDP(sport=40000, dport=53) / Raw(b"q" * size)


def vxlan_hdr(vni, flags=0x08, rsv=b"\x00\x00\x00", rsv2=0):
    return Raw(bytes([flags]) + rsv + (vni << 8 | rsv2).to_bytes(4, "big"))


def vxlan_pkt(inner, vni=42, src="192.0.2.2", dst="192.0.2.1", sport=50000, dport=4789,
              tos=0, flags=0x08, rsv=b"\x00\x00\x00", frag=0, ipflags="DF"):
    return Ether(src=PEER_MAC, dst=UP_MAC) / \
        IP(src=src, dst=dst, tos=tos, flags=ipflags, frag=frag) / \
        UDP(sport=sport, dport=dport) / vxlan_hdr(vni, flags, rsv) / Raw(raw(inner))


def gre_hdr(payload, proto=0x6558, key=None, seq=None, csum=False, extra_flags=0, version=0):
    flags = (0x8000 if csum else 0) | (0x2000 if key is not None else 0) | \
        (0x1000 if seq is not None else 0) | extra_flags | version
    h = flags.to_bytes(2, "big") + proto.to_bytes(2, "big")
    if csum:
        h += b"\x00\x00\x00\x00"
    if key is not None:
        h += key.to_bytes(4, "big")
    if seq is not None:
        h += seq.to_bytes(4, "big")
    if csum:
        c = checksum(h + payload)
        h = h[:4] + c.to_bytes(2, "big") + h[6:]
    return h + payload


def gre_pkt(inner, src="192.0.2.4", **kw):
    return Ether(src=PEER_MAC, dst=UP_MAC) / IP(src=src, dst="192.0.2.1", proto=47) / \
        Raw(gre_hdr(raw(inner), **kw))


def v6_vxlan(inner, zero_csum=False, ext=None):
    udp = UDP(sport=50000, dport=4789)
    if zero_csum:
        udp.chksum = 0
    ip6 = IPv6(src="2001:db8::2", dst="2001:db8::1")
    if ext is not None:
        ip6 = ip6 / ext
    return Ether(src=PEER_MAC, dst=UP_MAC) / ip6 / udp / vxlan_hdr(60) / Raw(raw(inner))


def gopt(cls, typ, data):
    """One Geneve option TLV."""
    return cls.to_bytes(2, "big") + bytes([typ, len(data) // 4]) + data


OVN_42 = gopt(0x0102, 0x80, b"\x00\x00\x00\x2a")


def geneve_hdr(vni, opts=b"", flags=None, ver=0, proto=0x6558):
    if flags is None:
        flags = 0x40 if opts and opts[2] & 0x80 else 0
    return bytes([ver << 6 | len(opts) // 4, flags]) + proto.to_bytes(2, "big") + \
        (vni << 8).to_bytes(4, "big") + opts


def geneve_pkt(inner, vni=5000, opts=b"", src="192.0.2.6", dport=6081, tos=0, **kw):
    return Ether(src=PEER_MAC, dst=UP_MAC) / IP(src=src, dst="192.0.2.1", flags="DF", tos=tos) / \
        UDP(sport=50001, dport=dport) / Raw(geneve_hdr(vni, opts, **kw) + raw(inner))


def v6_geneve(inner, vni=5001, opts=b""):
    return Ether(src=PEER_MAC, dst=UP_MAC) / IPv6(src="2001:db8::6", dst="2001:db8::1") / \
        UDP(sport=50001, dport=6081) / Raw(geneve_hdr(vni, opts) + raw(inner))


def corrupt(pkt, offset, value):
    b = bytearray(raw(pkt))
    b[offset] = value
    return bytes(b)


def cut(pkt, n):
    return raw(pkt)[:n]


def cases():
    """(name, port, [frames], expected drops {reason: n}, expected outputs {port: n})"""
    inner = inner_udp()
    ce_not_ect = vxlan_pkt(inner_udp(tos=0), tos=3)
    ce_ect0 = vxlan_pkt(inner_udp(tos=2), tos=3)
    v = vxlan_pkt(inner)
    eth_ip = 14 + 20  # offset of the outer UDP header in an untagged IPv4 frame
    c = [
        # --- forwarding ---
        ("encap_vxlan", "wl0", [inner_udp(dst="198.51.100.%d" % i) for i in range(2, 12)], {}, {"up0": 10}),
        ("priority_longer_prefix_wins", "wl0", [inner_udp(dst="198.51.100.200")], {}, {"up0": 1}),
        ("encap_gretap", "wl0", [inner_udp(dst="203.0.113.7")] * 3, {}, {"up0": 3}),
        ("encap_vxlan_v6", "wl0", [Ether(src=WL, dst="02:00:00:00:00:02") / IPv6(src="2001:db8:42::1", dst="2001:db8:42::2") /
                                   UDP(sport=1, dport=2) / Raw(b"six")], {}, {"up0": 1}),
        ("encap_gre_l3", "wl0", [inner_udp(dst="192.0.2.200")], {}, {"up0": 1}),
        ("decap_vxlan", "up0", [vxlan_pkt(inner_udp(dmac=WL, src="198.51.100.2", dst="198.51.100.1"))], {}, {"wl0": 1}),
        ("decap_gretap", "up0", [gre_pkt(inner, key=7, seq=5, csum=True)], {}, {"wl1": 1}),
        ("decap_gre_l3", "up0", [Ether(src=PEER_MAC, dst=UP_MAC) / IP(src="192.0.2.5", dst="192.0.2.1", proto=47) /
                                 Raw(gre_hdr(raw(IP(src="198.51.100.9", dst="198.51.100.1") / ICMP()), proto=0x0800))],
         {}, {"wl0": 1}),
        ("decap_vxlan_v6", "up0", [v6_vxlan(inner)], {}, {"wl0": 1}),
        ("decap_ecn_ce_over_ect0", "up0", [ce_ect0], {}, {"wl0": 1}),
        ("fdb_known_unicast", "wl0", [inner_udp(dmac="02:00:00:00:bb:01", dst="198.51.100.77")], {}, {"up0": 1}),
        ("flood_broadcast", "wl0", [Ether(src=WL, dst="ff:ff:ff:ff:ff:ff") / IP(src="198.51.100.1", dst="198.51.100.255") /
                                    UDP(sport=68, dport=67) / Raw(b"dhcp")], {}, {"up0": 2, "wl1": 1}),
        ("flood_unknown_unicast", "wl0", [inner_udp(dmac="02:00:00:00:cc:02", dst="10.0.0.1".replace("10.0.0.1", "203.0.114.1"))],
         {}, {"up0": 2, "wl1": 1}),
        ("vlan_push", "wl1", [inner_udp()], {}, {"wl0": 1}),
        ("vlan_set", "wl1", [Ether(src=WL, dst="02:00:00:00:00:02") / Dot1Q(vlan=200, prio=5) / IP(src="198.51.100.1", dst="198.51.100.2") / UDP() / Raw(b"x")], {}, {"wl0": 1}),
        ("vlan_pop", "wl1", [Ether(src=WL, dst="02:00:00:00:00:02") / Dot1Q(vlan=400) / IP(src="198.51.100.1", dst="198.51.100.2") / UDP() / Raw(b"x")], {}, {"wl0": 1}),
        ("mtu_exceeded_sends_icmp", "wl0", [inner_udp(dst="198.51.100.5", size=1000)], {"mtu_exceeded": 1}, {"wl0": 1}),
        # --- drops from rules and the engine ---
        ("no_matching_rule", "wl0", [Ether(src=WL, dst="02:00:00:00:00:02") / IPv6(src="2001:db8:99::1", dst="2001:db8:99::2") / UDP()], {"no_matching_rule": 1}, {}),
        ("rule_drop", "wl0", [Ether(src=WL, dst="02:00:00:00:00:02") / IP(src="198.51.100.1", dst="198.51.100.2") / TCP(dport=23)], {"rule_drop": 1}, {}),
        ("no_neighbour", "wl0", [inner_udp(dst="192.0.2.70")], {"no_neighbour": 1}, {}),
        ("vlan_tag_full", "wl1", [Ether(src=WL, dst="02:00:00:00:00:02") / Dot1Q(vlan=500) / IP(src="198.51.100.1", dst="198.51.100.2") / UDP()], {"vlan_tag_full": 1}, {}),
        ("no_vlan_tag", "wl1", [Ether(src=WL, dst="02:00:00:00:00:02") / IPv6(src="2001:db8::5", dst="2001:db8::6") / UDP()], {"no_vlan_tag": 1}, {}),
        ("flood_list_empty", "wl0", [inner_udp(dmac="02:00:00:00:bb:02", dst="203.0.114.2")], {"flood_list_empty": 1}, {}),
        ("self_loop", "wl0", [inner_udp(dmac="02:00:00:00:cc:01", dst="203.0.114.3")], {"self_loop": 1}, {}),
        ("inner_not_ip", "wl0", [Ether(src=WL, dst="02:00:00:00:00:02") / ARP(psrc="198.51.100.1", pdst="198.51.100.2")], {"inner_not_ip": 1}, {}),
        ("inner_malformed", "wl0", [raw(Ether(src=WL, dst="02:00:00:00:00:02", type=0x0800)) + b"\x45\x00\x00\x14\x00\x00"], {"inner_malformed": 1}, {}),
        ("eth_truncated_workload", "wl0", [raw(inner)[:10]], {"eth_truncated": 1}, {}),
        # --- drops on decapsulation ---
        ("eth_truncated", "up0", [cut(v, 13)], {"eth_truncated": 1}, {}),
        ("vlan_truncated", "up0", [raw(Ether(src=PEER_MAC, dst=UP_MAC, type=0x8100)) + b"\x00"], {"vlan_truncated": 1}, {}),
        ("not_ip", "up0", [Ether(src=PEER_MAC, dst=UP_MAC) / ARP()], {"not_ip": 1}, {}),
        ("ipv4_truncated", "up0", [cut(v, 14 + 19)], {"ipv4_truncated": 1}, {}),
        ("ipv4_bad_version", "up0", [corrupt(v, 14, 0x55)], {"ipv4_bad_version": 1}, {}),
        ("ipv4_bad_header_len", "up0", [corrupt(v, 14, 0x44)], {"ipv4_bad_header_len": 1}, {}),
        ("ipv4_bad_checksum", "up0", [corrupt(v, 14 + 10, raw(v)[14 + 10] ^ 0xff)], {"ipv4_bad_checksum": 1}, {}),
        ("ipv4_bad_total_len", "up0", [cut(v, len(raw(v)) - 1)], {"ipv4_bad_total_len": 1}, {}),
        ("ipv4_fragment", "up0", [vxlan_pkt(inner, ipflags="MF")], {"ipv4_fragment": 1}, {}),
        ("ipv6_truncated", "up0", [cut(v6_vxlan(inner), 14 + 39)], {"ipv6_truncated": 1}, {}),
        ("ipv6_bad_version", "up0", [corrupt(v6_vxlan(inner), 14, 0x40)], {"ipv6_bad_version": 1}, {}),
        ("ipv6_bad_payload_len", "up0", [cut(v6_vxlan(inner), len(raw(v6_vxlan(inner))) - 1)], {"ipv6_bad_payload_len": 1}, {}),
        # RFC 8200: option headers are walked, options with action bits 00 skipped.
        ("decap_vxlan_v6_hop_by_hop", "up0", [v6_vxlan(inner, ext=IPv6ExtHdrHopByHop(options=[RouterAlert(), PadN(optdata=b"")]))], {}, {"wl0": 1}),
        ("decap_vxlan_v6_dest_opts", "up0", [v6_vxlan(inner, ext=IPv6ExtHdrHopByHop(options=[Pad1()] * 6) /
                                                        IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x1e, optdata=b"ab")]))], {}, {"wl0": 1}),
        ("ipv6_option_discard", "up0", [v6_vxlan(inner, ext=IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x5e, optdata=b"ab")])),
                                        v6_vxlan(inner, ext=IPv6ExtHdrHopByHop(options=[HBHOptUnknown(otype=0xc3, optdata=b"ab")]))],
         {"ipv6_option_discard": 2}, {}),
        ("ipv6_options_malformed", "up0", [Ether(src=PEER_MAC, dst=UP_MAC) / IPv6(src="2001:db8::2", dst="2001:db8::1", nh=0) / Raw(bytes([17, 0, 1, 9, 0, 0, 0, 0]))], {"ipv6_options_malformed": 1}, {}),
        ("ipv6_extension_header", "up0", [v6_vxlan(inner, ext=IPv6ExtHdrDestOpt(nh=0) / IPv6ExtHdrHopByHop())], {"ipv6_extension_header": 1}, {}),
        ("ipv6_routing_header", "up0", [v6_vxlan(inner, ext=IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting())], {"ipv6_routing_header": 1}, {}),
        ("ipv6_fragment", "up0", [v6_vxlan(inner, ext=IPv6ExtHdrFragment())], {"ipv6_fragment": 1}, {}),
        ("ipv6_esp", "up0", [Ether(src=PEER_MAC, dst=UP_MAC) / IPv6(src="2001:db8::2", dst="2001:db8::1", nh=50) / Raw(b"\0" * 24)], {"ipv6_esp": 1}, {}),
        ("ipv6_ah", "up0", [Ether(src=PEER_MAC, dst=UP_MAC) / IPv6(src="2001:db8::2", dst="2001:db8::1", nh=51) / Raw(b"\x11\x04" + b"\0" * 22)], {"ipv6_ah": 1}, {}),
        ("not_local_vtep", "up0", [vxlan_pkt(inner, dst="192.0.2.250")], {"not_local_vtep": 1}, {}),
        ("unknown_ip_protocol", "up0", [Ether(src=PEER_MAC, dst=UP_MAC) / IP(src="192.0.2.2", dst="192.0.2.1") / TCP()], {"unknown_ip_protocol": 1}, {}),
        ("udp_truncated", "up0", [Ether(src=PEER_MAC, dst=UP_MAC) / IP(src="192.0.2.2", dst="192.0.2.1", proto=17) / Raw(b"\x00\x01\x12")], {"udp_truncated": 1}, {}),
        ("udp_bad_length", "up0", [Ether(src=PEER_MAC, dst=UP_MAC) / IP(src="192.0.2.2", dst="192.0.2.1") / UDP(sport=1, dport=4789, len=9) / vxlan_hdr(42) / Raw(raw(inner))], {"udp_bad_length": 1}, {}),
        ("udp_wrong_port", "up0", [vxlan_pkt(inner, dport=4790)], {"udp_wrong_port": 1}, {}),
        ("udp_bad_checksum", "up0", [corrupt(v, eth_ip + 6, raw(v)[eth_ip + 6] ^ 0x01)], {"udp_bad_checksum": 1}, {}),
        ("udp_zero_checksum_v6", "up0", [v6_vxlan(inner, zero_csum=True)], {"udp_zero_checksum_v6": 1}, {}),
        ("vxlan_truncated", "up0", [Ether(src=PEER_MAC, dst=UP_MAC) / IP(src="192.0.2.2", dst="192.0.2.1") / UDP(sport=1, dport=4789) / Raw(b"\x08\x00\x00")], {"vxlan_truncated": 1}, {}),
        ("vxlan_no_i_flag", "up0", [vxlan_pkt(inner, flags=0x00)], {"vxlan_no_i_flag": 1}, {}),
        ("vxlan_reserved_bits_strict", "up0", [vxlan_pkt(inner, rsv=b"\x00\x00\x01")], {"vxlan_reserved_bits": 1}, {}),
        ("gre_truncated", "up0", [Ether(src=PEER_MAC, dst=UP_MAC) / IP(src="192.0.2.4", dst="192.0.2.1", proto=47) / Raw(b"\x20\x00\x65\x58\x00")], {"gre_truncated": 1}, {}),
        ("gre_bad_version", "up0", [gre_pkt(inner, key=7, version=1)], {"gre_bad_version": 1}, {}),
        ("gre_routing_bit", "up0", [gre_pkt(inner, key=7, extra_flags=0x4000)], {"gre_reserved_bits": 1}, {}),
        ("gre_bad_checksum", "up0", [corrupt(gre_pkt(inner, key=7, csum=True), 14 + 20 + 4, 0x00)], {"gre_bad_checksum": 1}, {}),
        ("gre_unknown_protocol", "up0", [gre_pkt(inner, key=7, proto=0x8847)], {"gre_unknown_protocol": 1}, {}),
        # The payload type must match the tunnel: IPv4 on gretap g1, Ethernet on L3 GRE l3.
        ("gre_payload_mismatch", "up0", [gre_pkt(inner_udp()[IP], key=7, seq=5, csum=True, proto=0x0800),
                                         gre_pkt(inner, src="192.0.2.5")],
         {"gre_payload_mismatch": 2}, {}),
        ("inner_truncated", "up0", [Ether(src=PEER_MAC, dst=UP_MAC) / IP(src="192.0.2.2", dst="192.0.2.1") / UDP(sport=1, dport=4789) / vxlan_hdr(42) / Raw(b"short")], {"inner_truncated": 1}, {}),
        ("ecn_ce_not_ect", "up0", [ce_not_ect], {"ecn_ce_not_ect": 1}, {}),
        ("unknown_tunnel", "up0", [vxlan_pkt(inner, vni=43)], {"unknown_tunnel": 1}, {}),
        # --- Geneve ---
        ("encap_geneve", "wl0", [inner_udp(dst="192.0.2.%d" % i) for i in range(33, 41)], {}, {"up0": 8}),
        ("encap_geneve_v6", "wl0", [Ether(src=WL, dst="02:00:00:00:00:02") / IPv6(src="2001:db8:43::1", dst="2001:db8:43::2") /
                                    UDP(sport=1, dport=2) / Raw(b"six")], {}, {"up0": 1}),
        ("decap_geneve", "up0", [geneve_pkt(inner)], {}, {"wl0": 1}),
        ("decap_geneve_option_match", "up0", [geneve_pkt(inner, opts=gopt(0xfff0, 1, b"abcd") + OVN_42)], {}, {"wl1": 1}),
        ("decap_geneve_option_other_value", "up0", [geneve_pkt(inner, opts=gopt(0x0102, 0x80, b"\x00\x00\x00\x2b"))],
         {}, {"wl0": 1}),
        ("decap_geneve_v6_unknown_option_skipped", "up0", [v6_geneve(inner, opts=gopt(0x0103, 0x05, b"x" * 8))], {}, {"wl0": 1}),
        ("decap_geneve_ecn_ce_over_ect0", "up0", [geneve_pkt(inner_udp(tos=2), tos=3)],
         {}, {"wl0": 1}),
        ("geneve_truncated", "up0", [Ether(src=PEER_MAC, dst=UP_MAC) / IP(src="192.0.2.6", dst="192.0.2.1") /
                                     UDP(sport=1, dport=6081) / Raw(geneve_hdr(5000, OVN_42)[:12])], {"geneve_truncated": 1}, {}),
        ("geneve_bad_version", "up0", [geneve_pkt(inner, ver=1)], {"geneve_bad_version": 1}, {}),
        ("geneve_control", "up0", [geneve_pkt(inner, flags=0x80), geneve_pkt(inner, opts=OVN_42, flags=0xc0)],
         {"geneve_control": 2}, {}),
        ("geneve_unknown_critical_option", "up0", [geneve_pkt(inner, opts=gopt(0x0103, 0x85, b"zzzz")),
                                                   geneve_pkt(inner, opts=gopt(0x0103, 0x85, b"zzzz"), flags=0)],
         {"geneve_unknown_critical_option": 2}, {}),
        ("geneve_bad_option", "up0", [geneve_pkt(inner, opts=gopt(0xfff0, 1, b"abcd")[:3] + b"\x02" + b"abcd")],
         {"geneve_bad_option": 1}, {}),
        ("geneve_unknown_protocol", "up0", [geneve_pkt(inner_udp()[IP], proto=0x0800)], {"geneve_unknown_protocol": 1}, {}),
        ("geneve_unknown_vni", "up0", [geneve_pkt(inner, vni=5999)], {"unknown_tunnel": 1}, {}),
    ]
    # GRE with every combination of checksum and sequence around the key.
    for csum in (False, True):
        for seq in (None, 9):
            c.append(("decap_gretap_c%d_s%d" % (csum, seq is not None), "up0",
                      [gre_pkt(inner, key=7, seq=seq, csum=csum)], {}, {"wl1": 1}))
    return c


def gen(outdir):
    os.makedirs(outdir, exist_ok=True)
    index = []
    for name, port, frames, drops, outputs in cases():
        wrpcap(os.path.join(outdir, name + ".pcap"), [Ether(raw(f)) if not isinstance(f, bytes) else Raw(f) for f in frames],
               linktype=1)
        # keep the exact input bytes for field-by-field comparison
        with open(os.path.join(outdir, name + ".in.json"), "w") as fh:
            json.dump([raw(f).hex() if not isinstance(f, bytes) else f.hex() for f in frames], fh)
        index.append({"name": name, "port": port, "drops": drops, "outputs": outputs, "count": len(frames)})
    with open(os.path.join(outdir, "cases.json"), "w") as fh:
        json.dump(index, fh, indent=1)


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def expect(cond, msg):
    if not cond:
        fail(msg)


def udp_checksum_ok(p):
    q = p.copy()
    got = q[UDP].chksum
    del q[UDP].chksum
    return Ether(raw(q))[UDP].chksum == got


def ip_checksum_ok(p):
    q = p.copy()
    got = q[IP].chksum
    del q[IP].chksum
    return Ether(raw(q))[IP].chksum == got


def outer_vxlan(p):
    """(vni, inner bytes) of a VXLAN packet, read from the raw UDP payload."""
    payload = raw(p[UDP].payload)
    expect(payload[0] == 0x08 and payload[1:4] == b"\x00\x00\x00" and payload[7] == 0, "VXLAN flags/reserved")
    return int.from_bytes(payload[4:7], "big"), payload[8:]


def outer_geneve(p):
    """(vni, flags byte, options, inner bytes) of a Geneve packet, from the raw UDP payload."""
    g = raw(p[UDP].payload)
    expect(g[0] >> 6 == 0 and g[2:4] == b"\x65\x58" and g[7] == 0, "Geneve version/protocol/reserved")
    hl = 8 + (g[0] & 0x3f) * 4
    return int.from_bytes(g[4:7], "big"), g[1], g[8:hl], g[hl:]


def check(outdir, name):
    res = json.load(open(os.path.join(outdir, name + ".result.json")))
    case = [c for c in json.load(open(os.path.join(outdir, "cases.json"))) if c["name"] == name][0]
    inputs = [bytes.fromhex(h) for h in json.load(open(os.path.join(outdir, name + ".in.json")))]

    def out(port):
        path = os.path.join(outdir, "%s.out.%s.pcap" % (name, port))
        return [Ether(raw(p)) for p in rdpcap(path)] if os.path.exists(path) and os.path.getsize(path) > 24 else []

    expect(res["conserved"], "counters must add up: %s" % res)
    expect(res["rx"] == case["count"], "rx %d != %d" % (res["rx"], case["count"]))
    expect(res["drops"] == case["drops"], "drops %s, want %s" % (res["drops"], case["drops"]))
    for port in ("wl0", "wl1", "up0"):
        n = len(out(port))
        expect(n == case["outputs"].get(port, 0), "%s got %d frames, want %d" % (port, n, case["outputs"].get(port, 0)))

    if name == "encap_vxlan":
        sports = set()
        for i, p in enumerate(out("up0")):
            expect(p.src == UP_MAC and p.dst == PEER_MAC, "outer MACs")
            expect(p[IP].src == "192.0.2.1" and p[IP].dst == "192.0.2.2", "outer IPs")
            expect(p[IP].flags.DF and p[IP].ttl == 64 and ip_checksum_ok(p), "outer IPv4 DF/TTL/checksum")
            expect(p[UDP].dport == 4789 and 49152 <= p[UDP].sport <= 65535, "UDP ports")
            expect(p[UDP].chksum != 0 and udp_checksum_ok(p), "UDP checksum (t1 computes it)")
            vni, inner = outer_vxlan(p)
            expect(vni == 42 and inner == inputs[i], "VNI and inner frame")
            sports.add(p[UDP].sport)
        expect(len(sports) > 1, "source port varies across flows")
    elif name == "priority_longer_prefix_wins":
        p = out("up0")[0]
        expect(p[IP].dst == "192.0.2.3", "the /25 rule (priority 20, tunnel t2) wins over the /24")
        expect(p[UDP].chksum == 0, "t2 sends no UDP checksum over IPv4")
    elif name == "encap_gretap":
        seqs = []
        for p in out("up0"):
            expect(p[IP].proto == 47 and p[IP].dst == "192.0.2.4", "GRE to 192.0.2.4")
            g = raw(p[IP].payload)
            expect(int.from_bytes(g[0:2], "big") == 0xb000 and g[2:4] == b"\x65\x58", "GRE flags C|K|S, proto 0x6558")
            expect(checksum(g) == 0, "GRE checksum valid")
            expect(int.from_bytes(g[8:12], "big") == 7, "GRE key 7")
            seqs.append(int.from_bytes(g[12:16], "big"))
            expect(g[16:] == inputs[0], "inner frame")
        expect(seqs == sorted(seqs) and len(set(seqs)) == 3, "sequence numbers increase: %s" % seqs)
    elif name == "encap_geneve":
        sports = set()
        for i, p in enumerate(out("up0")):
            expect(p.src == UP_MAC and p.dst == "02:00:00:00:00:70", "outer MACs")
            expect(p[IP].src == "192.0.2.1" and p[IP].dst == "192.0.2.6", "outer IPs")
            expect(p[IP].flags.DF and p[IP].ttl == 64 and ip_checksum_ok(p), "outer IPv4 DF/TTL/checksum")
            expect(p[UDP].dport == 6081 and 49152 <= p[UDP].sport <= 65535, "UDP ports")
            expect(p[UDP].chksum == 0, "no UDP checksum over IPv4 by default")
            vni, flags, opts, inner = outer_geneve(p)
            expect(vni == 5000 and flags == 0x40, "VNI 5000, C bit (critical option), O clear: %#x" % flags)
            expect(opts == gopt(0x0102, 0x80, b"\x00\x00\x00\x0b"), "configured option sent: %s" % opts.hex())
            expect(inner == inputs[i], "inner frame")
            sports.add(p[UDP].sport)
        expect(len(sports) > 1, "source port varies across flows")
    elif name == "encap_geneve_v6":
        p = out("up0")[0]
        expect(p[IPv6].src == "2001:db8::1" and p[IPv6].dst == "2001:db8::6", "outer IPv6")
        expect(p[UDP].chksum != 0 and udp_checksum_ok(p), "UDP checksum mandatory over IPv6")
        vni, flags, opts, inner = outer_geneve(p)
        expect(vni == 5001 and flags == 0 and opts == b"" and inner == inputs[0], "VNI 5001, no options, inner frame")
    elif name in ("decap_geneve", "decap_geneve_option_match", "decap_geneve_option_other_value",
                  "decap_geneve_v6_unknown_option_skipped"):
        port = "wl1" if name == "decap_geneve_option_match" else "wl0"
        expect(raw(out(port)[0]) == raw(inner_udp()), "inner frame delivered unchanged past the options")
    elif name == "decap_geneve_ecn_ce_over_ect0":
        p = out("wl0")[0]
        expect(p[IP].tos & 3 == 3 and ip_checksum_ok(p), "inner ECT(0) becomes CE (RFC 6040)")
    elif name == "encap_vxlan_v6":
        p = out("up0")[0]
        expect(p[IPv6].src == "2001:db8::1" and p[IPv6].dst == "2001:db8::2", "outer IPv6")
        expect(p[UDP].chksum != 0 and udp_checksum_ok(p), "UDP checksum mandatory over IPv6")
        vni, inner = outer_vxlan(p)
        expect(vni == 60 and inner == inputs[0], "VNI 60, inner frame")
    elif name == "encap_gre_l3":
        p = out("up0")[0]
        g = raw(p[IP].payload)
        expect(g[0:4] == b"\x00\x00\x08\x00", "L3 GRE, no key, protocol IPv4")
        expect(g[4:] == inputs[0][14:], "only the inner IP packet is carried")
    elif name in ("decap_vxlan_v6_hop_by_hop", "decap_vxlan_v6_dest_opts"):
        expect(raw(out("wl0")[0]) == raw(inner_udp()), "inner frame delivered unchanged past the options")
    elif name in ("decap_vxlan", "decap_vxlan_v6"):
        expect(raw(out("wl0")[0]) == raw(inner_udp(dmac=WL, src="198.51.100.2", dst="198.51.100.1")) if name == "decap_vxlan"
               else raw(out("wl0")[0]) == raw(inner_udp()), "inner frame delivered unchanged")
    elif name.startswith("decap_gretap"):
        expect(raw(out("wl1")[0]) == raw(inner_udp()), "inner frame delivered to wl1")
    elif name == "decap_gre_l3":
        p = out("wl0")[0]
        expect(p.dst == "02:00:00:00:aa:01" and p.type == 0x0800, "synthesised Ethernet header, rewritten destination")
        expect(p[IP].src == "198.51.100.9" and p[ICMP].type == 8, "inner IP packet")
    elif name == "decap_ecn_ce_over_ect0":
        p = out("wl0")[0]
        expect(p[IP].tos & 3 == 3 and ip_checksum_ok(p), "inner ECT(0) becomes CE, checksum updated (RFC 6040)")
    elif name == "fdb_known_unicast":
        expect(out("up0")[0][IP].dst == "192.0.2.3", "FDB sends 02:00:00:00:bb:01 to t2")
    elif name in ("flood_broadcast", "flood_unknown_unicast"):
        dsts = sorted(p[IP].dst for p in out("up0"))
        expect(dsts == ["192.0.2.2", "192.0.2.3"], "head-end replication to t1 and t2: %s" % dsts)
        for p in out("up0"):
            expect(outer_vxlan(p)[1] == inputs[0], "each copy carries the frame")
        expect(raw(out("wl1")[0]) == inputs[0], "local flood port gets the frame")
        expect(res["replicas"] == 2, "two replicas")
    elif name == "vlan_push":
        p = out("wl0")[0]
        expect(p.type == 0x8100 and p[Dot1Q].vlan == 100 and raw(p[Dot1Q].payload) == raw(inner_udp()[IP]), "tag 100 pushed")
    elif name == "vlan_set":
        p = out("wl0")[0]
        expect(p[Dot1Q].vlan == 300 and p[Dot1Q].prio == 5, "vid rewritten to 300, priority kept")
    elif name == "vlan_pop":
        p = out("wl0")[0]
        expect(p.type == 0x0800 and Dot1Q not in p, "tag removed")
    elif name == "mtu_exceeded_sends_icmp":
        p = out("wl0")[0]
        expect(p[IP].dst == "198.51.100.1" and p[IP].src == "198.51.100.5", "reply to the sender, from the destination")
        expect(p[ICMP].type == 3 and p[ICMP].code == 4, "ICMP fragmentation needed")
        expect(p[ICMP].nexthopmtu == 1000 - 36 - 14, "next-hop MTU %d" % p[ICMP].nexthopmtu)
        expect(res["generated"] == 1, "one generated packet")
    print("ok " + name)


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        gen(sys.argv[2])
    elif sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        fail("usage: cases.py gen OUTDIR | check OUTDIR CASE")
