#!/usr/bin/python3
"""Decapsulation cases for the encap crate, built with scapy.

    build.py OUTDIR     writes OUTDIR/cases.json

Each case is one frame as it would arrive on an uplink, the receive-side
configuration changes it needs (relative to the defaults of encap/tests/scapy.rs:
local VTEPs 192.0.2.1, 203.0.113.1 and 2001:db8::1, VXLAN port 4789, every
DecapConfig default otherwise), and either the expected drop reason (its stable
name, see encap/src/drop.rs) or what decap() must hand back: the inner frame,
byte for byte, and the tunnel it came through.

Frames are built with scapy's own layers (Ether, Dot1Q, IP, IPv6, UDP, VXLAN,
GRE): its lengths, checksums and flag layouts are the reference. Expected inner
frames after RFC 6040 processing are rebuilt by scapy with the new ECN value, so
their IPv4 header checksums are scapy's too.

Must run under Debian's /usr/bin/python3, which sees python3-scapy.
Addresses: documentation ranges only.
"""
import json
import os
import sys

from scapy.all import (HBHOptUnknown, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop,
                       IPv6ExtHdrRouting, Jumbo, Pad1, PadN, RouterAlert, ARP, GRE, ICMP, IP, TCP, UDP, Dot1AD, Dot1Q, Ether, IPOption_EOL,
                       IPOption_NOP, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,
                       IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, Raw, raw)
from scapy.contrib.geneve import GENEVE, GeneveOptions
from scapy.layers.vxlan import VXLAN

UP_MAC = "02:00:00:00:00:10"     # our uplink
PEER_MAC = "02:00:00:00:00:20"   # the remote VTEP's next hop
IN_SRC_MAC = "02:00:00:00:00:0a"
IN_DST_MAC = "02:00:00:00:00:0b"

LOCAL4, ALT_LOCAL4, PEER4, OTHER4 = "192.0.2.1", "203.0.113.1", "192.0.2.2", "192.0.2.99"
LOCAL6, PEER6, OTHER6 = "2001:db8::1", "2001:db8::2", "2001:db8::99"
IN4_SRC, IN4_DST = "198.51.100.10", "198.51.100.20"
IN6_SRC, IN6_DST = "2001:db8:100::10", "2001:db8:100::20"

NOT_ECT, ECT1, ECT0, CE = 0, 1, 2, 3

CASES = []


def add(name, frame, config=None, **expect):
    """Records a case; `frame` is a scapy packet or bytes."""
    assert all(c["name"] != name for c in CASES), "duplicate case " + name
    case = {"name": name, "frame": bytes(raw(frame) if not isinstance(frame, bytes) else frame).hex(),
            "config": config or {}}
    if "drop" in expect:
        case["drop"] = expect["drop"]
    else:
        inner = expect["inner"]
        case.update({
            "drop": None,
            "inner": (raw(inner) if not isinstance(inner, bytes) else inner).hex(),
            "tunnel": expect["tunnel"],
            "vni": expect.get("vni"),
            "key": expect.get("key"),
            "seq": expect.get("seq"),
            "payload": expect.get("payload", "eth"),
            "src_port": expect.get("src_port", 0),
            "outer_ecn": expect.get("outer_ecn", 0),
            "nvgre": expect.get("nvgre"),
            "geneve_options": expect.get("geneve_options", 0),
            "local": expect["local"],
            "remote": expect["remote"],
        })
    CASES.append(case)


def drop(name, frame, reason, config=None):
    add(name, frame, config, drop=reason)


# --- inner frames -------------------------------------------------------------

def in_v4(tos=0, sport=40000, size=24):
    return Ether(src=IN_SRC_MAC, dst=IN_DST_MAC) / \
        IP(src=IN4_SRC, dst=IN4_DST, tos=tos, ttl=33, flags="DF") / \
        UDP(sport=sport, dport=9) / Raw(bytes(range(size)))


def in_v6(tc=0):
    return Ether(src=IN_SRC_MAC, dst=IN_DST_MAC) / \
        IPv6(src=IN6_SRC, dst=IN6_DST, tc=tc, fl=0x54321, hlim=44) / \
        TCP(sport=40000, dport=80, flags="S", seq=1000)


def in_arp():
    return Ether(src=IN_SRC_MAC, dst="ff:ff:ff:ff:ff:ff") / \
        ARP(hwsrc=IN_SRC_MAC, psrc=IN4_SRC, pdst=IN4_DST)


def in_vlan_v4(tos=0):
    return Ether(src=IN_SRC_MAC, dst=IN_DST_MAC) / Dot1Q(vlan=7, prio=5) / \
        IP(src=IN4_SRC, dst=IN4_DST, tos=tos) / ICMP(id=0x1234, seq=1) / Raw(b"ping")


INNERS = {"v4udp": in_v4, "v6tcp": in_v6, "arp": in_arp, "vlan_v4icmp": in_vlan_v4}


def ip_only(eth):
    """The IP packet of an inner Ethernet frame (what L3 GRE carries)."""
    return eth.payload


def l3_expected(ip_pkt):
    """What decap hands back for L3 GRE: an Ethernet header synthesised from the
    outer MAC addresses (destination = our uplink, source = the peer)."""
    etype = 0x0800 if isinstance(ip_pkt, IP) else 0x86dd
    return Ether(dst=UP_MAC, src=PEER_MAC, type=etype) / ip_pkt


# --- outer headers ------------------------------------------------------------

def outer_eth(tags=()):
    e = Ether(src=PEER_MAC, dst=UP_MAC)
    for t in tags:
        e = e / t
    return e


def ip4(dst=LOCAL4, tos=0, **kw):
    kw.setdefault("flags", "DF")
    return IP(src=PEER4, dst=dst, tos=tos, ttl=64, id=7, **kw)


def ip6(dst=LOCAL6, tc=0, **kw):
    return IPv6(src=PEER6, dst=dst, tc=tc, fl=0x12345, hlim=64, **kw)


def vxlan(vni, **kw):
    kw.setdefault("flags", 0x08)
    return VXLAN(vni=vni, **kw)


SPORT = 51234


def vx4(inner, vni=42, dst=LOCAL4, tos=0, udp=None, vx=None, ip=None, tags=()):
    return outer_eth(tags) / ip4(dst, tos, **(ip or {})) / \
        UDP(sport=SPORT, dport=4789, **(udp or {})) / vxlan(vni, **(vx or {})) / inner


def vx6(inner, vni=42, dst=LOCAL6, tc=0, udp=None, vx=None):
    return outer_eth() / ip6(dst, tc) / UDP(sport=SPORT, dport=4789, **(udp or {})) / \
        vxlan(vni, **(vx or {})) / inner


def gre(proto, csum=False, key=None, seq=None, **kw):
    g = GRE(proto=proto, chksum_present=int(csum), key_present=int(key is not None),
            seqnum_present=int(seq is not None), **kw)
    if key is not None:
        g.key = key
    if seq is not None:
        g.sequence_number = seq
    return g


def gre_outer(v6, dst=None, ecn=0):
    if v6:
        return outer_eth() / ip6(dst or LOCAL6, ecn)
    return outer_eth() / ip4(dst or LOCAL4, ecn)


def ok_vx(name, frame, inner, vni, v6=False, config=None, outer_ecn=0, local=None):
    add(name, frame, config, inner=inner, tunnel="vxlan", vni=vni, src_port=SPORT,
        outer_ecn=outer_ecn, local=local or (LOCAL6 if v6 else LOCAL4),
        remote=PEER6 if v6 else PEER4)


def ok_gre(name, frame, inner, key=None, seq=None, v6=False, payload="eth", config=None,
           outer_ecn=0, nvgre=None):
    add(name, frame, config, inner=inner, tunnel="gre", key=key, seq=seq, payload=payload,
        outer_ecn=outer_ecn, local=LOCAL6 if v6 else LOCAL4, remote=PEER6 if v6 else PEER4,
        nvgre=nvgre)


def with_chksum(pkt, layer, delta=0x0101):
    """`pkt` rebuilt with `layer`'s checksum field changed from scapy's correct
    value by `delta` (so wrong, but never zero)."""
    built = pkt.__class__(raw(pkt))
    good = built[layer].chksum
    bad = good ^ delta
    if bad == 0:
        bad = 0x1234
    p = pkt.copy()
    p[layer].chksum = bad
    return p


# --- valid VXLAN --------------------------------------------------------------

def valid_vxlan():
    for kind, mk in INNERS.items():
        for vni in (0, 1, 0x123456, 0xFFFFFF):
            ok_vx(f"vxlan4/{kind}/vni{vni:#x}", vx4(mk(), vni), mk(), vni)
        ok_vx(f"vxlan6/{kind}", vx6(mk(), 0xABCDEF), mk(), 0xABCDEF, v6=True)
    ok_vx("vxlan4/udp_checksum_zero", vx4(in_v4(), udp={"chksum": 0}), in_v4(), 42)
    ok_vx("vxlan4/bad_udp_checksum_not_verified", with_chksum(vx4(in_v4()), UDP), in_v4(), 42,
          config={"verify_udp_checksum_v4": False})
    ok_vx("vxlan6/zero_checksum_accepted_when_enabled", vx6(in_v4(), udp={"chksum": 0}),
          in_v4(), 42, v6=True, config={"accept_zero_checksum_v6": True})
    ok_vx("vxlan6/valid_checksum_in_zero_checksum_mode", vx6(in_v4()), in_v4(), 42, v6=True,
          config={"accept_zero_checksum_v6": True})
    for tag, vx in (("flags_0c", {"flags": 0x0C}), ("flags_88", {"flags": 0x88}),
                    ("reserved1", {"reserved1": 0x010203}), ("reserved2", {"reserved2": 0xEE})):
        ok_vx(f"vxlan4/reserved_bits_ignored/{tag}", vx4(in_v4(), 777, vx=vx), in_v4(), 777)
    frame = outer_eth() / ip4() / UDP(sport=SPORT, dport=8472) / vxlan(5) / in_v4()
    ok_vx("vxlan4/linux_port_configured", frame, in_v4(), 5, config={"vxlan_ports": [4789, 8472]})
    ok_vx("vxlan4/second_local_address", vx4(in_v4(), dst=ALT_LOCAL4), in_v4(), 42,
          local=ALT_LOCAL4)
    ok_vx("vxlan4/outer_vlan", vx4(in_v4(), tags=[Dot1Q(vlan=100)]), in_v4(), 42)
    ok_vx("vxlan4/outer_qinq", vx4(in_v4(), tags=[Dot1AD(vlan=10), Dot1Q(vlan=20)]), in_v4(), 42)
    opts = [IPOption_NOP(), IPOption_NOP(), IPOption_NOP(), IPOption_EOL()]
    ok_vx("vxlan4/outer_ipv4_options", vx4(in_v4(), ip={"options": opts}), in_v4(), 42)
    ok_vx("vxlan4/outer_df_clear", vx4(in_v4(), ip={"flags": 0}), in_v4(), 42)
    # Bytes after the IP packet (an Ethernet trailer) are not part of the inner frame.
    ok_vx("vxlan4/ethernet_trailer", raw(vx4(in_v4())) + b"\xde\xad\xbe\xef", in_v4(), 42)
    ok_vx("vxlan6/ethernet_trailer", raw(vx6(in_v4())) + b"\x00" * 6, in_v4(), 42, v6=True)
    # The shortest inner frame: a bare Ethernet header.
    bare = Ether(src=IN_SRC_MAC, dst=IN_DST_MAC, type=0x88B5)
    ok_vx("vxlan4/inner_is_a_bare_ethernet_header", vx4(bare), bare, 42)


# --- valid GRE ----------------------------------------------------------------

def valid_gre():
    for v6 in (False, True):
        fam = "gre6" if v6 else "gre4"
        for combo in range(8):
            csum, has_key, has_seq = bool(combo & 1), bool(combo & 2), bool(combo & 4)
            key = 0x01020300 + combo if has_key else None
            seq = 1000 + combo if has_seq else None
            tag = "C" * csum + "K" * has_key + "S" * has_seq or "none"
            for kind in ("v4udp", "v6tcp", "arp"):
                inner = INNERS[kind]()
                frame = gre_outer(v6) / gre(0x6558, csum, key, seq) / inner
                ok_gre(f"{fam}/tap/{tag}/{kind}", frame, inner, key, seq, v6)
            for kind in ("v4udp", "v6tcp"):
                ip_pkt = ip_only(INNERS[kind]())
                proto = 0x0800 if kind == "v4udp" else 0x86DD
                frame = gre_outer(v6) / gre(proto, csum, key, seq) / ip_pkt
                ok_gre(f"{fam}/l3/{tag}/{kind}", frame, l3_expected(ip_pkt), key, seq, v6,
                       payload="ipv4" if proto == 0x0800 else "ipv6")
        # NVGRE (RFC 7637): key = 24-bit VSID << 8 | 8-bit FlowID.
        for vsid, flow in ((0x000001, 0), (0xABCDEF, 0x5A), (0xFFFFFF, 0xFF)):
            key = vsid << 8 | flow
            frame = gre_outer(v6) / gre(0x6558, key=key) / in_v4()
            ok_gre(f"{fam}/nvgre/vsid{vsid:#x}/flow{flow:#x}", frame, in_v4(), key, None, v6,
                   nvgre=[vsid, flow])
        inner = in_vlan_v4()
        ok_gre(f"{fam}/tap/inner_vlan", gre_outer(v6) / gre(0x6558, True, 9, 9) / inner, inner, 9, 9,
               v6)
    # Bits 6-12 are reserved but ignored on receipt (RFC 2784 2.2).
    for tag, kw in (("recursion_low_bits", {"recursion_control": 3}), ("flags_bits", {"flags": 0x1F})):
        frame = gre_outer(False) / gre(0x6558, key=5, **kw) / in_v4()
        ok_gre(f"gre4/ignored_bits/{tag}", frame, in_v4(), 5)
    frame = with_chksum(gre_outer(False) / gre(0x6558, csum=True) / in_v4(), GRE)
    ok_gre("gre4/bad_checksum_not_verified", frame, in_v4(), config={"verify_gre_checksum": False})
    # A tiny L3 GRE packet, padded to the 60-byte Ethernet minimum.
    tiny = IP(src=IN4_SRC, dst=IN4_DST, proto=253, ttl=9)
    frame = raw(gre_outer(False) / gre(0x0800) / tiny)
    assert len(frame) < 60
    ok_gre("gre4/l3/padded_runt", frame + b"\x00" * (60 - len(frame)), l3_expected(tiny),
           payload="ipv4")


# --- ECN (RFC 6040) -----------------------------------------------------------

def rfc6040(outer, inner):
    """RFC 6040 section 4.2, figure 4: the inner ECN value after decapsulation,
    or None for the drop (CE over Not-ECT)."""
    if inner == NOT_ECT:
        return None if outer == CE else NOT_ECT
    if outer == CE:
        return CE
    if inner == ECT0 and outer == ECT1:
        return ECT1
    return inner


def ecn_cases():
    names = {NOT_ECT: "not_ect", ECT1: "ect1", ECT0: "ect0", CE: "ce"}
    dscp = 46 << 2
    for o in range(4):
        for i in range(4):
            want = rfc6040(o, i)
            tag = f"outer_{names[o]}/inner_{names[i]}"
            # IPv4 inner over VXLAN/IPv4: the inner header checksum must stay valid.
            frame = vx4(in_v4(dscp | i), tos=dscp | o)
            if want is None:
                drop(f"ecn/vxlan4_inner_v4/{tag}", frame, "ecn_ce_not_ect")
            else:
                ok_vx(f"ecn/vxlan4_inner_v4/{tag}", frame, in_v4(dscp | want), 42, outer_ecn=o)
            # IPv6 inner over gretap/IPv6.
            frame = gre_outer(True, ecn=o) / gre(0x6558, key=1) / in_v6(dscp | i)
            if want is None:
                drop(f"ecn/gre6_inner_v6/{tag}", frame, "ecn_ce_not_ect")
            else:
                ok_gre(f"ecn/gre6_inner_v6/{tag}", frame, in_v6(dscp | want), 1, v6=True,
                       outer_ecn=o)
    # VLAN-tagged inner IPv4: the tag is skipped to find the ECN field.
    ok_vx("ecn/inner_vlan/outer_ce/inner_ect0", vx4(in_vlan_v4(ECT0), tos=CE), in_vlan_v4(CE), 42,
          outer_ecn=CE)
    drop("ecn/inner_vlan/outer_ce/inner_not_ect", vx4(in_vlan_v4(NOT_ECT), tos=CE), "ecn_ce_not_ect")
    # Non-IP inner: there is no ECN field, nothing to do.
    ok_vx("ecn/inner_arp/outer_ce", vx4(in_arp(), tos=CE), in_arp(), 42, outer_ecn=CE)
    # L3 GRE: the rewritten IPv4 header behind the synthesised Ethernet header.
    ip_pkt = ip_only(in_v4(ECT1))
    frame = gre_outer(False, ecn=CE) / gre(0x0800) / ip_pkt
    ok_gre("ecn/gre4_l3/outer_ce/inner_ect1", frame, l3_expected(ip_only(in_v4(CE))),
           payload="ipv4", outer_ecn=CE)
    frame = gre_outer(False, ecn=CE) / gre(0x86DD) / ip_only(in_v6(NOT_ECT))
    drop("ecn/gre4_l3/outer_ce/inner_v6_not_ect", frame, "ecn_ce_not_ect")


# --- truncation at every header boundary ---------------------------------------

def truncations():
    full = raw(vx4(in_v4()))
    for n in (0, 1, 13):
        drop(f"trunc/ethernet/{n}", full[:n], "eth_truncated")
    for n in (0, 2, 3):
        drop(f"trunc/vlan/{n}", raw(Ether(src=PEER_MAC, dst=UP_MAC, type=0x8100)) + b"\x00\x64\x08\x00"[:n],
             "vlan_truncated")
    drop("trunc/qinq_second_tag", raw(Ether(src=PEER_MAC, dst=UP_MAC) / Dot1AD(vlan=10, type=0x8100)) +
         b"\x00", "vlan_truncated")
    for v6 in (False, True):
        fam = "ipv6" if v6 else "ipv4"
        ether = Ether(src=PEER_MAC, dst=UP_MAC, type=0x86DD if v6 else 0x0800)
        hdr = raw(ip6() / UDP() if v6 else ip4() / UDP())
        hl = 40 if v6 else 20
        for n in (0, 1, hl - 1):
            drop(f"trunc/{fam}_header/{n}", raw(ether) + hdr[:n], f"{fam}_truncated")
        frame = raw(vx6(in_v4()) if v6 else vx4(in_v4()))
        drop(f"trunc/{fam}_payload_shorter_than_length", frame[:-1],
             "ipv6_bad_payload_len" if v6 else "ipv4_bad_total_len")
        mk = vx6 if v6 else vx4

        def ip(proto=None):
            if v6:
                return ip6() if proto is None else ip6(nh=proto)
            return ip4() if proto is None else ip4(proto=proto)

        # Each layer cut short with every length field in front of it consistent.
        udp_part = raw(UDP(sport=SPORT, dport=4789) / vxlan(42) / in_v4())
        for n in (0, 1, 7):
            drop(f"trunc/{fam}/udp/{n}", outer_eth() / ip(proto=17) / Raw(udp_part[:n]),
                 "udp_truncated")
        vx_part = raw(vxlan(42) / in_v4())
        for n in (0, 1, 7):
            frame = outer_eth() / ip() / UDP(sport=SPORT, dport=4789) / Raw(vx_part[:n])
            drop(f"trunc/{fam}/vxlan/{n}", frame, "vxlan_truncated")
        for n in (0, 1, 13):
            drop(f"trunc/{fam}/vxlan_inner_ethernet/{n}", mk(Raw(raw(in_v4())[:n])),
                 "inner_truncated")
        # GRE: the base header, then every optional field.
        for n in (0, 1, 3):
            frame = outer_eth() / ip(proto=47) / Raw(raw(gre(0x6558))[:n])
            drop(f"trunc/{fam}/gre_base/{n}", frame, "gre_truncated")
        for combo in range(1, 8):
            csum, has_key, has_seq = bool(combo & 1), bool(combo & 2), bool(combo & 4)
            g = raw(gre(0x6558, csum, 7 if has_key else None, 9 if has_seq else None))
            tag = "C" * csum + "K" * has_key + "S" * has_seq
            for n in sorted({4, 5, len(g) - 4, len(g) - 1}):
                frame = outer_eth() / ip(proto=47) / Raw(g[:n])
                drop(f"trunc/{fam}/gre_options_{tag}/{n}", frame, "gre_truncated")
            for n in (0, 13):
                frame = gre_outer(v6) / gre(0x6558, csum, 7 if has_key else None,
                                            9 if has_seq else None) / Raw(raw(in_v4())[:n])
                drop(f"trunc/{fam}/gre_{tag}_inner_ethernet/{n}", frame, "inner_truncated")
        drop(f"trunc/{fam}/gre_inner_ethernet/0", gre_outer(v6) / gre(0x6558), "inner_truncated")
        drop(f"trunc/{fam}/gre_l3_empty", gre_outer(v6) / gre(0x0800, key=3), "inner_truncated")


# --- malformed and unwanted outer headers ---------------------------------------

def malformed():
    inner = in_v4()
    # Ethernet / IP level.
    drop("outer/arp", outer_eth() / in_arp().payload, "not_ip")
    drop("outer/unknown_ethertype", Ether(src=PEER_MAC, dst=UP_MAC, type=0x88B5) / Raw(b"x" * 64),
         "not_ip")
    drop("outer/three_vlan_tags", vx4(inner, tags=[Dot1AD(vlan=1), Dot1Q(vlan=2), Dot1Q(vlan=3)]),
         "not_ip")
    drop("outer/ipv4_version_5", vx4(inner, ip={"version": 5}), "ipv4_bad_version")
    drop("outer/ipv6_in_ipv4_ethertype", Ether(src=PEER_MAC, dst=UP_MAC, type=0x0800) /
         ip6() / UDP(sport=SPORT, dport=4789) / vxlan(42) / inner, "ipv4_bad_version")
    drop("outer/ipv4_ihl_4", vx4(inner, ip={"ihl": 4}), "ipv4_bad_header_len")
    drop("outer/ipv4_ihl_beyond_packet", outer_eth() / IP(src=PEER4, dst=LOCAL4, ihl=15, proto=17) /
         Raw(b"abcd"), "ipv4_bad_header_len")
    drop("outer/ipv4_total_len_too_big", vx4(inner, ip={"len": len(raw(vx4(inner))) - 14 + 1}),
         "ipv4_bad_total_len")
    drop("outer/ipv4_total_len_below_header", vx4(inner, ip={"len": 19}), "ipv4_bad_total_len")
    drop("outer/ipv4_bad_header_checksum", with_chksum(vx4(inner), IP), "ipv4_bad_checksum")
    drop("outer/ipv4_bad_header_checksum_gre", with_chksum(gre_outer(False) / gre(0x6558) / inner, IP),
         "ipv4_bad_checksum")
    drop("outer/ipv4_fragment_first", vx4(inner, ip={"flags": "MF"}), "ipv4_fragment")
    drop("outer/ipv4_fragment_last", vx4(inner, ip={"flags": 0, "frag": 185}), "ipv4_fragment")
    drop("outer/ipv4_fragment_middle", vx4(inner, ip={"flags": "MF", "frag": 1}), "ipv4_fragment")
    drop("outer/ipv6_version_4", Ether(src=PEER_MAC, dst=UP_MAC, type=0x86DD) /
         ip6(version=4) / UDP(sport=SPORT, dport=4789) / vxlan(42) / inner, "ipv6_bad_version")
    full6 = vx6(inner)
    plen = len(raw(full6)) - 54
    drop("outer/ipv6_payload_len_too_big", outer_eth() / ip6(plen=plen + 1) /
         UDP(sport=SPORT, dport=4789) / vxlan(42) / inner, "ipv6_bad_payload_len")
    # RFC 8200 4.2: Hop-by-Hop and Destination Options are walked; options
    # whose two high bits are 00 are skipped (Pad1, PadN, Router Alert, unknown).
    def ext6(name, ext, reason=None, upper=None, nh=None):
        upper = upper if upper is not None else UDP(sport=SPORT, dport=4789) / vxlan(42) / inner
        ip = ip6() if nh is None else ip6(nh=nh)
        frame = outer_eth() / ip / ext / upper
        if reason:
            drop(f"outer/ipv6_ext/{name}", frame, reason)
        elif upper.haslayer(GRE):
            ok_gre(f"ipv6_ext/{name}", frame, inner, v6=True)
        else:
            ok_vx(f"ipv6_ext/{name}", frame, inner, 42, v6=True)

    ext6("hop_by_hop_padn", IPv6ExtHdrHopByHop())
    ext6("hop_by_hop_pad1", IPv6ExtHdrHopByHop(options=[Pad1()] * 6))
    ext6("hop_by_hop_router_alert", IPv6ExtHdrHopByHop(options=[RouterAlert(), PadN(optdata=b"")]))
    ext6("dest_opts_unknown_skip", IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x3e, optdata=b"abcd")]))
    ext6("hop_by_hop_then_dest_opts", IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt(
        options=[PadN(optdata=b"\0" * 12)]))
    ext6("dest_opts_long", IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0" * 250)] * 8))
    ext6("dest_opts_before_gre", IPv6ExtHdrDestOpt(), upper=gre(0x6558) / inner)
    for bits in (0x40, 0x80, 0xc0):
        ext6(f"option_action_{bits >> 6:02b}", IPv6ExtHdrDestOpt(options=[HBHOptUnknown(
            otype=bits | 0x1e, optdata=b"ab")]), "ipv6_option_discard")
    ext6("jumbo_payload", IPv6ExtHdrHopByHop(options=[Jumbo(jumboplen=70000)]), "ipv6_option_discard")
    ext6("option_past_header_end", Raw(bytes([17, 0, 1, 9, 0, 0, 0, 0])), "ipv6_options_malformed",
         upper=Raw(b""), nh=0)
    ext6("header_past_payload", Raw(bytes([17, 9, 1, 4, 0, 0, 0, 0])), "ipv6_options_malformed",
         upper=Raw(b""), nh=60)
    ext6("option_length_cut", Raw(bytes([17, 0, 0, 0, 0, 0, 0, 1])), "ipv6_options_malformed",
         upper=Raw(b""), nh=0)
    ext6("hop_by_hop_not_first", IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop(), "ipv6_extension_header")
    ext6("three_option_headers", IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt(),
         "ipv6_extension_header")
    ext6("routing", IPv6ExtHdrRouting(), "ipv6_routing_header")
    ext6("routing_after_hop_by_hop", IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(), "ipv6_routing_header")
    ext6("fragment", IPv6ExtHdrFragment(), "ipv6_fragment")
    ext6("fragment_after_dest_opts", IPv6ExtHdrDestOpt() / IPv6ExtHdrFragment(), "ipv6_fragment")
    ext6("esp", Raw(b""), "ipv6_esp", upper=Raw(b"\0" * 24), nh=50)
    ext6("ah", Raw(b""), "ipv6_ah", upper=Raw(b"\x11\x04" + b"\0" * 22), nh=51)
    ext6("mobility", Raw(b""), "ipv6_extension_header", upper=Raw(b"\x3b\x00" + b"\0" * 6),
         nh=135)
    drop("outer/not_local_v4", vx4(inner, dst=OTHER4), "not_local_vtep")
    drop("outer/not_local_v6", vx6(inner, dst=OTHER6), "not_local_vtep")
    drop("outer/not_local_gre", gre_outer(False, dst=OTHER4) / gre(0x6558) / inner, "not_local_vtep")
    drop("outer/ip_proto_tcp", outer_eth() / ip4() / TCP(sport=1, dport=4789) / Raw(b"x" * 20),
         "unknown_ip_protocol")
    drop("outer/ip_proto_icmp", outer_eth() / ip4() / ICMP() / Raw(b"x" * 20), "unknown_ip_protocol")
    drop("outer/ipv6_proto_tcp", outer_eth() / ip6() / TCP(sport=1, dport=4789) / Raw(b"x" * 20),
         "unknown_ip_protocol")

    # UDP.
    drop("udp/length_too_big", vx4(inner, udp={"len": len(raw(vx4(inner))) - 34 + 1}),
         "udp_bad_length")
    drop("udp/length_too_small", vx4(inner, udp={"len": len(raw(vx4(inner))) - 34 - 1}),
         "udp_bad_length")
    drop("udp/length_below_header", vx4(inner, udp={"len": 7}), "udp_bad_length")
    drop("udp/length_too_big_v6", vx6(inner, udp={"len": len(raw(vx6(inner))) - 54 + 2}),
         "udp_bad_length")
    for port in (4790, 8472, 53):
        frame = outer_eth() / ip4() / UDP(sport=SPORT, dport=port) / vxlan(42) / inner
        drop(f"udp/wrong_port/{port}", frame, "udp_wrong_port")
    drop("udp/wrong_port/swapped", outer_eth() / ip4() / UDP(sport=4789, dport=SPORT) / vxlan(42) /
         inner, "udp_wrong_port")
    drop("udp/bad_checksum_v4", with_chksum(vx4(inner), UDP), "udp_bad_checksum")
    drop("udp/bad_checksum_v4_off_by_one", with_chksum(vx4(inner), UDP, delta=1), "udp_bad_checksum")
    drop("udp/bad_checksum_v6", with_chksum(vx6(inner), UDP), "udp_bad_checksum")
    drop("udp/bad_checksum_v6_zero_accepted_mode", with_chksum(vx6(inner), UDP), "udp_bad_checksum",
         config={"accept_zero_checksum_v6": True})
    drop("udp/zero_checksum_v6", vx6(inner, udp={"chksum": 0}), "udp_zero_checksum_v6")

    # VXLAN.
    for flags in (0x00, 0x04, 0xF7):
        drop(f"vxlan/no_i_flag/{flags:#04x}", vx4(inner, vx={"flags": flags}), "vxlan_no_i_flag")
        drop(f"vxlan/no_i_flag_strict/{flags:#04x}", vx4(inner, vx={"flags": flags}),
             "vxlan_no_i_flag", config={"vxlan_strict": True})
    drop("vxlan6/no_i_flag", vx6(inner, vx={"flags": 0}), "vxlan_no_i_flag")
    for tag, vx in (("flags_0c", {"flags": 0x0C}), ("flags_88", {"flags": 0x88}),
                    ("flags_09", {"flags": 0x09}), ("reserved1", {"reserved1": 0x000100}),
                    ("reserved2", {"reserved2": 0x01})):
        drop(f"vxlan/reserved_bits_strict/{tag}", vx4(inner, 777, vx=vx), "vxlan_reserved_bits",
             config={"vxlan_strict": True})
    drop("vxlan6/reserved_bits_strict", vx6(inner, vx={"reserved2": 0x80}), "vxlan_reserved_bits",
         config={"vxlan_strict": True})
    ok_vx("vxlan/strict_accepts_a_clean_header", vx4(inner, 777), inner, 777,
          config={"vxlan_strict": True})

    # GRE.
    for v6 in (False, True):
        fam = "gre6" if v6 else "gre4"
        for ver in (1, 7):
            drop(f"{fam}/version_{ver}", gre_outer(v6) / gre(0x6558, key=1, version=ver) / inner,
                 "gre_bad_version")
        for tag, kw in (("routing_0x4000", {"routing_present": 1}),
                        ("strict_source_route_0x0800", {"strict_route_source": 1}),
                        ("recursion_top_bit_0x0400", {"recursion_control": 4})):
            drop(f"{fam}/reserved/{tag}", gre_outer(v6) / gre(0x6558, **kw) / inner, "gre_reserved_bits")
        drop(f"{fam}/reserved/routing_with_checksum",
             gre_outer(v6) / gre(0x6558, csum=True, routing_present=1) / inner, "gre_reserved_bits")
        for proto in (0x8847, 0x88BE, 0x0806, 0x880B):
            drop(f"{fam}/unknown_protocol/{proto:#06x}", gre_outer(v6) / gre(proto, key=1) / Raw(b"z" * 40),
                 "gre_unknown_protocol")
        drop(f"{fam}/bad_checksum", with_chksum(gre_outer(v6) / gre(0x6558, True, 5, 6) / inner, GRE),
             "gre_bad_checksum")
        # A checksum that was right for another payload. (Not in_v4(sport=40001):
        # its inner UDP checksum compensates, and the GRE checksum is the same.)
        other = GRE(raw(gre(0x6558, csum=True) / in_v4(size=25))).chksum
        assert other != GRE(raw(gre(0x6558, csum=True) / inner)).chksum
        g = gre(0x6558, csum=True)
        g.chksum = other
        drop(f"{fam}/checksum_of_another_payload", gre_outer(v6) / g / inner, "gre_bad_checksum")


# --- Geneve (RFC 8926) -------------------------------------------------------

GENEVE_PORT = 6081
# OVN's class and a critical type, and an experimental class (0xfff0-0xffff).
OVN, EXP = 0x0102, 0xFFF0


def gopt(cls, typ, data):
    return GeneveOptions(classid=cls, type=typ, data=data)


def geneve(vni=42, options=(), **kw):
    # scapy leaves the C bit to the caller, as the RFC leaves it to the sender.
    kw.setdefault("critical", int(any(o.type & 0x80 for o in options)))
    kw.setdefault("proto", 0x6558)
    # scapy 2.5 miscounts the option length of long option lists: give it.
    kw.setdefault("optionlen", sum(4 + len(o.data) for o in options) // 4)
    return GENEVE(vni=vni, options=list(options), **kw)


def gv4(inner, g=None, dst=LOCAL4, tos=0, udp=None):
    return outer_eth() / ip4(dst, tos) / UDP(sport=SPORT, dport=GENEVE_PORT, **(udp or {})) / \
        (g if g is not None else geneve()) / inner


def gv6(inner, g=None, tc=0, udp=None):
    return outer_eth() / ip6(LOCAL6, tc) / UDP(sport=SPORT, dport=GENEVE_PORT, **(udp or {})) / \
        (g if g is not None else geneve()) / inner


def ok_gv(name, frame, inner, vni=42, v6=False, config=None, outer_ecn=0, geneve_options=0):
    add(name, frame, config, inner=inner, tunnel="geneve", vni=vni, src_port=SPORT,
        outer_ecn=outer_ecn, local=LOCAL6 if v6 else LOCAL4, remote=PEER6 if v6 else PEER4,
        geneve_options=geneve_options)


# Rules of the receive side that match on two options: entry 0 (bit 0) is a
# critical OVN option, entry 1 (bit 1) a non-critical experimental one.
MATCHES = {"geneve_matches": [[OVN, 0x80, "0000002a"], [EXP, 0x01, "0102030405060708"]]}


def geneve_cases():
    crit = gopt(OVN, 0x80, b"\x00\x00\x00\x2a")
    crit_other_value = gopt(OVN, 0x80, b"\x00\x00\x00\x2b")
    plain = gopt(EXP, 0x01, bytes(range(1, 9)))
    unknown = gopt(0x0103, 0x05, b"\xaa" * 12)
    unknown_crit = gopt(0x0103, 0x85, b"\xbb" * 4)
    for kind, mk in INNERS.items():
        for vni in (0, 1, 0xFFFFFF):
            ok_gv(f"geneve4/{kind}/vni{vni:#x}", gv4(mk(), geneve(vni)), mk(), vni)
        ok_gv(f"geneve6/{kind}", gv6(mk(), geneve(0xABCDEF)), mk(), 0xABCDEF, v6=True)
        ok_gv(f"geneve4/{kind}/options_skipped", gv4(mk(), geneve(7, [unknown, plain])), mk(), 7)
    ok_gv("geneve6/options_skipped", gv6(in_v4(), geneve(7, [unknown, gopt(EXP, 2, b"")])),
          in_v4(), 7, v6=True)
    ok_gv("geneve4/empty_option", gv4(in_v4(), geneve(7, [gopt(EXP, 3, b"")])), in_v4(), 7)
    ok_gv("geneve4/largest_option_area", gv4(in_v4(), geneve(7, [gopt(EXP, 1, b"\x11" * 124),
                                                                 gopt(EXP, 2, b"\x22" * 120)])),
          in_v4(), 7)
    ok_gv("geneve4/known_critical_option", gv4(in_v4(), geneve(9, [crit])), in_v4(), 9,
          config=MATCHES, geneve_options=1)
    ok_gv("geneve4/known_critical_option_other_value", gv4(in_v4(), geneve(9, [crit_other_value])),
          in_v4(), 9, config=MATCHES)
    ok_gv("geneve4/both_matched", gv4(in_v4(), geneve(9, [unknown, plain, crit])), in_v4(), 9,
          config=MATCHES, geneve_options=3)
    ok_gv("geneve6/plain_matched", gv6(in_v6(), geneve(9, [plain])), in_v6(), 9, v6=True,
          config=MATCHES, geneve_options=2)
    ok_gv("geneve4/udp_checksum_zero", gv4(in_v4(), udp={"chksum": 0}), in_v4())
    ok_gv("geneve4/port_configured", outer_eth() / ip4() / UDP(sport=SPORT, dport=6082) /
          geneve() / in_v4(), in_v4(), config={"geneve_ports": [6082]})
    for tag, kw in (("rsvd_flags", {"reserved": 0x3F}), ("reserved2", {"reserved2": 0xEE})):
        ok_gv(f"geneve4/reserved_bits_ignored/{tag}", gv4(in_v4(), geneve(**kw)), in_v4())
    ok_gv("geneve4/ecn_ce_onto_ect0", gv4(in_v4(tos=ECT0), tos=CE), in_v4(tos=CE), outer_ecn=CE)
    ok_gv("geneve6/ecn_ce_onto_ect1", gv6(in_v4(tos=ECT1), tc=CE), in_v4(tos=CE), v6=True,
          outer_ecn=CE)
    # Drops.
    drop("geneve4/ecn_ce_not_ect", gv4(in_v4(tos=NOT_ECT), tos=CE), "ecn_ce_not_ect")
    for ver in (1, 2, 3):
        drop(f"geneve4/version_{ver}", gv4(in_v4(), geneve(version=ver)), "geneve_bad_version")
    drop("geneve4/control_packet", gv4(in_v4(), geneve(oam=1)), "geneve_control")
    drop("geneve6/control_packet_with_options", gv6(in_v4(), geneve(oam=1, options=[plain])),
         "geneve_control")
    drop("geneve4/unknown_critical_option", gv4(in_v4(), geneve(options=[plain, unknown_crit])),
         "geneve_unknown_critical_option")
    drop("geneve4/unknown_critical_option_c_bit_clear",
         gv4(in_v4(), geneve(critical=0, options=[unknown_crit])), "geneve_unknown_critical_option")
    drop("geneve4/critical_option_nothing_understood", gv4(in_v4(), geneve(options=[crit])),
         "geneve_unknown_critical_option")
    drop("geneve6/unknown_critical_option", gv6(in_v4(), geneve(options=[unknown_crit])),
         "geneve_unknown_critical_option", config=MATCHES)
    for proto in (0x0800, 0x86DD, 0x8847):
        drop(f"geneve4/protocol_{proto:#06x}", gv4(Raw(b"z" * 40), geneve(proto=proto)),
             "geneve_unknown_protocol")
    drop("geneve4/not_a_configured_port", outer_eth() / ip4() / UDP(sport=SPORT, dport=6082) /
         geneve() / in_v4(), "udp_wrong_port")
    # An option whose length runs past the option area: the header's length
    # says 3 words, the option claims 4 words of data.
    g = raw(geneve(7, [gopt(EXP, 1, b"\x33" * 8)]))
    bad = bytes([g[0]]) + g[1:11] + bytes([(g[11] & 0xE0) | 4]) + g[12:]
    drop("geneve4/option_runs_past_area", gv4(in_v4(), Raw(bad)), "geneve_bad_option")
    # Option area shorter than an option header (one word, the option needs
    # its 4-byte header plus 4 bytes of data).
    bad = bytes([0x01]) + g[1:8] + g[8:12]
    drop("geneve4/option_area_too_short", gv4(Raw(b"\x00" * 14), Raw(bad)), "geneve_bad_option")
    # Truncated inside the fixed header and inside the option area.
    full = raw(gv4(Raw(b""), geneve(7, [plain])))
    hdr = len(full) - 8 - 12
    for cut in (1, 4, 7, 8, 12, 19):
        frame = outer_eth() / ip4() / UDP(sport=SPORT, dport=GENEVE_PORT) / \
            Raw(full[hdr:hdr + cut])
        drop(f"geneve4/truncated_at_{cut}", frame, "geneve_truncated")
    drop("geneve4/inner_truncated", gv4(Raw(b"\x00" * 13)), "inner_truncated")


def main():
    out = sys.argv[1]
    valid_vxlan()
    geneve_cases()
    valid_gre()
    ecn_cases()
    truncations()
    malformed()
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"cases": CASES}, f, indent=1)
    print(f"{len(CASES)} cases")


if __name__ == "__main__":
    main()
