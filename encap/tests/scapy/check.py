#!/usr/bin/python3
"""Parses frames the encap crate emitted with scapy and reports what it sees.

    check.py INPUT.json OUTPUT.json

INPUT: {"frames": [{"name": ..., "frame": hex}, ...]}. For each frame, OUTPUT
holds the outer fields scapy dissected and `rebuilt`: the frame after scapy
recomputed every outer length and checksum (IPv4 total length and header
checksum, IPv6 payload length, UDP length and checksum unless it was zero, the
GRE checksum when present). encap/tests/scapy.rs asserts on the report.

Must run under Debian's /usr/bin/python3, which sees python3-scapy.
"""
import json
import sys

from scapy.all import GRE, IP, UDP, Dot1AD, Dot1Q, Ether, IPv6, raw
from scapy.contrib.geneve import GENEVE, GeneveOptions
from scapy.layers.vxlan import VXLAN


def geneve_options(opts):
    """[class, type, data hex] of each option. scapy 2.5's GeneveOptions has
    no extract_padding, so every option after the first is parsed as the
    previous one's payload: walk that chain."""
    out = []
    for o in opts:
        while o is not None:
            out.append([o.classid, o.type, bytes(o.data).hex()])
            rest = bytes(o.payload)
            o = GeneveOptions(rest) if rest else None
    return out


def inspect(frame):
    p = Ether(frame)
    r = {"vlan": None, "ipv4": None, "ipv6": None, "tunnel": None}
    l3 = p.payload
    while isinstance(l3, (Dot1Q, Dot1AD)):
        r["vlan"] = l3.vlan
        l3 = l3.payload
    if isinstance(l3, IP):
        r["ipv4"] = {"len": l3.len, "chksum": l3.chksum, "df": bool(l3.flags.DF), "ttl": l3.ttl,
                     "tos": l3.tos, "id": l3.id, "proto": l3.proto}
        del l3.len
        del l3.chksum
    elif isinstance(l3, IPv6):
        r["ipv6"] = {"plen": l3.plen, "nh": l3.nh, "hlim": l3.hlim, "tc": l3.tc, "fl": l3.fl}
        del l3.plen
    else:
        raise SystemExit(f"no outer IP layer: {p.summary()}")
    l4 = l3.payload
    if isinstance(l4, UDP):
        r["sport"], r["dport"], r["udp_len"], r["udp_chksum"] = l4.sport, l4.dport, l4.len, l4.chksum
        del l4.len
        if l4.chksum != 0:
            del l4.chksum
        vx = l4.payload
        if isinstance(vx, GENEVE):
            r["tunnel"] = "geneve"
            r["vni"] = vx.vni
            r["geneve_version"] = vx.version
            r["geneve_oam"] = vx.oam
            r["geneve_critical"] = vx.critical
            r["geneve_reserved"] = [vx.reserved, vx.reserved2]
            r["geneve_proto"] = vx.proto
            r["geneve_options"] = geneve_options(vx.options)
            del vx.optionlen
            inner = vx.payload
        elif isinstance(vx, VXLAN):
            r["tunnel"] = "vxlan"
            r["vni"] = vx.vni
            r["vxlan_flags"] = int(vx.flags)
            r["vxlan_reserved"] = [vx.reserved1, vx.reserved2]
            inner = vx.payload
        else:
            raise SystemExit(f"UDP payload is neither VXLAN nor Geneve: {p.summary()}")
    elif isinstance(l4, GRE):
        r["tunnel"] = "gre"
        r["gre_chksum_present"] = bool(l4.chksum_present)
        r["key"] = l4.key if l4.key_present else None
        r["seq"] = l4.sequence_number if l4.seqnum_present else None
        r["gre_proto"] = l4.proto
        r["gre_version"] = l4.version
        r["gre_reserved"] = (l4.routing_present << 4 | l4.strict_route_source << 3 |
                             l4.recursion_control) << 5 | l4.flags
        if l4.chksum_present:
            r["gre_chksum"] = l4.chksum
            del l4.chksum
        inner = l4.payload
    else:
        raise SystemExit(f"outer payload is neither UDP nor GRE: {p.summary()}")
    r["inner_layers"] = inner.summary()
    r["payload"] = raw(inner).hex()
    r["rebuilt"] = raw(p).hex()
    return r


def main():
    with open(sys.argv[1]) as f:
        frames = json.load(f)["frames"]
    out = []
    for fr in frames:
        r = inspect(bytes.fromhex(fr["frame"]))
        r["name"] = fr["name"]
        out.append(r)
    with open(sys.argv[2], "w") as f:
        json.dump({"frames": out}, f, indent=1)


if __name__ == "__main__":
    main()
