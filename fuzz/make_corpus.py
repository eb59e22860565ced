#!/usr/bin/python3
"""Writes the seed corpus for every fuzz target into fuzz/corpus/<target>/.
Run with Debian's /usr/bin/python3 (python3-scapy). Documentation addresses only."""
import os
from scapy.all import (Ether, IP, IPv6, UDP, TCP, ICMP, ARP, Dot1Q, Raw, raw, IPv6ExtHdrHopByHop,
                       IPv6ExtHdrDestOpt, IPv6ExtHdrRouting, IPv6ExtHdrFragment, Pad1, PadN,
                       RouterAlert, HBHOptUnknown)

here = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


inner4 = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="198.51.100.1", dst="198.51.100.2", tos=2) / UDP(sport=1234, dport=53) / Raw(b"seed")
inner6 = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(src="2001:db8::a", dst="2001:db8::b") / TCP(sport=1, dport=2)
tagged = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=100) / IP(src="198.51.100.1", dst="198.51.100.2") / ICMP()
arp = Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="198.51.100.1", pdst="198.51.100.2")


def vx(inner, vni=42, v6=False):
    hdr = bytes([8, 0, 0, 0]) + (vni << 8).to_bytes(4, "big")
    ip = IPv6(src="2001:db8::2", dst="2001:db8::1") if v6 else IP(src="192.0.2.2", dst="192.0.2.1", flags="DF")
    return raw(Ether(src="02:00:00:00:00:20", dst="02:00:00:00:00:10") / ip / UDP(sport=50000, dport=4789) / Raw(hdr + raw(inner)))


def gre(inner, flags, proto=0x6558, v6=False):
    h = flags.to_bytes(2, "big") + proto.to_bytes(2, "big")
    if flags & 0x8000:
        h += b"\0\0\0\0"
    if flags & 0x2000:
        h += (7).to_bytes(4, "big")
    if flags & 0x1000:
        h += (1).to_bytes(4, "big")
    ip = IPv6(src="2001:db8::2", dst="2001:db8::1", nh=47) if v6 else IP(src="192.0.2.2", dst="192.0.2.1", proto=47)
    return raw(Ether(src="02:00:00:00:00:20", dst="02:00:00:00:00:10") / ip / Raw(h + raw(inner)))


def gopt(cls, typ, data):
    return cls.to_bytes(2, "big") + bytes([typ, len(data) // 4]) + data


def gv_hdr(vni=42, opts=b"", flags=None, ver=0, proto=0x6558):
    if flags is None:
        flags = 0x40 if opts and opts[2] & 0x80 else 0
    return bytes([ver << 6 | len(opts) // 4, flags]) + proto.to_bytes(2, "big") + (vni << 8).to_bytes(4, "big") + opts


def gv(inner, v6=False, **kw):
    ip = IPv6(src="2001:db8::2", dst="2001:db8::1") if v6 else IP(src="192.0.2.2", dst="192.0.2.1", flags="DF")
    return raw(Ether(src="02:00:00:00:00:20", dst="02:00:00:00:00:10") / ip / UDP(sport=50000, dport=6081) / Raw(gv_hdr(**kw) + raw(inner)))


OVN1 = gopt(0x0102, 0x80, b"\0\0\0\1")
EXP = gopt(0xfff0, 0x01, b"abcdefgh")
geneve_headers = {
    "plain": gv_hdr(), "ovn_critical": gv_hdr(opts=OVN1), "two_options": gv_hdr(opts=EXP + OVN1),
    "unknown_critical": gv_hdr(opts=gopt(0x0103, 0x85, b"zzzz")), "control": gv_hdr(flags=0x80),
    "version1": gv_hdr(ver=1), "ipv4_payload": gv_hdr(proto=0x0800),
    "option_past_area": gv_hdr(opts=EXP[:3] + b"\x03" + EXP[4:]), "empty_option": gv_hdr(opts=gopt(0xfff1, 2, b"")),
    "reserved_bits": gv_hdr(flags=0x3f)[:7] + b"\xee",
}
for name, h in geneve_headers.items():
    put("geneve", name, h + raw(inner4))

frames = {
    "geneve4": gv(inner4), "geneve6_options": gv(inner6, v6=True, opts=EXP + OVN1),
    "geneve_unknown_critical": gv(inner4, opts=gopt(0x0103, 0x85, b"zzzz")),
    "geneve_control": gv(inner4, flags=0x80), "geneve_bad_option": gv(inner4, opts=EXP[:3] + b"\x03" + EXP[4:]),
    "vxlan4": vx(inner4), "vxlan6": vx(inner6, v6=True), "vxlan_tagged_inner": vx(tagged),
    "gre_k": gre(inner4, 0x2000), "gre_cks": gre(inner4, 0xb000), "gre_l3": gre(inner4[IP], 0, 0x0800),
    "gre6": gre(inner6, 0x2000, v6=True),
}
def vx6_ext(ext, nh=None):
    """VXLAN over IPv6 behind the given extension headers (raw bytes or scapy)."""
    ip = IPv6(src="2001:db8::2", dst="2001:db8::1") if nh is None else IPv6(src="2001:db8::2", dst="2001:db8::1", nh=nh)
    hdr = bytes([8, 0, 0, 0]) + (42 << 8).to_bytes(4, "big")
    return raw(Ether(src="02:00:00:00:00:20", dst="02:00:00:00:00:10") / ip / ext / UDP(sport=50000, dport=4789) / Raw(hdr + raw(inner4)))


# RFC 8200 option headers: skipped options, discarded options, malformed ones,
# and the headers that stay dropped (routing, fragment, ESP, AH).
frames.update({
    "v6_hbh_padn": vx6_ext(IPv6ExtHdrHopByHop()),
    "v6_hbh_pad1": vx6_ext(IPv6ExtHdrHopByHop(options=[Pad1()] * 6)),
    "v6_hbh_router_alert": vx6_ext(IPv6ExtHdrHopByHop(options=[RouterAlert(), PadN(optdata=b"")])),
    "v6_hbh_dest": vx6_ext(IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x1e, optdata=b"ab")])),
    "v6_dest_discard": vx6_ext(IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x9e, optdata=b"ab")])),
    "v6_dest_long": vx6_ext(IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0" * 250)] * 8)),
    "v6_opt_past_end": vx6_ext(Raw(bytes([17, 0, 1, 9, 0, 0, 0, 0])), nh=0),
    "v6_routing": vx6_ext(IPv6ExtHdrRouting()),
    "v6_fragment": vx6_ext(IPv6ExtHdrFragment()),
    "v6_esp": raw(Ether(src="02:00:00:00:00:20", dst="02:00:00:00:00:10") / IPv6(src="2001:db8::2", dst="2001:db8::1", nh=50) / Raw(b"\0" * 24)),
    "v6_ah": raw(Ether(src="02:00:00:00:00:20", dst="02:00:00:00:00:10") / IPv6(src="2001:db8::2", dst="2001:db8::1", nh=51) / Raw(b"\x11\x04" + b"\0" * 22)),
    "gretap_carrying_ipv4": gre(inner4[IP], 0x2000, 0x0800),
    "gre_l3_carrying_ethernet": gre(inner4, 0, 0x6558),
})
for name, f in frames.items():
    put("decap", name, f)
    put("ethernet", name, f)
for name, f in {"inner4": raw(inner4), "inner6": raw(inner6), "tagged": raw(tagged), "arp": raw(arp)}.items():
    put("inner_meta", name, f)
    put("ethernet", "inner_" + name, f)
    for sel in (b"\x00\x01\x02\x03", b"\x01\x01\x05\x12", b"\x02\x00\x0f\x70", b"\x00\x00\x01\x00",
                b"\x03\x00\x01\x00", b"\x03\x02\x03\x06"):
        put("encap_roundtrip", name + "_" + sel.hex(), sel + f)
put("ipv4", "udp", raw(inner4[IP]))
put("ipv4", "options", raw(IP(src="192.0.2.1", dst="192.0.2.2", options=b"\x01\x01\x01\x00") / UDP()))
put("ipv6", "tcp", raw(inner6[IPv6]))
put("udp", "vxlan", raw(UDP(sport=1, dport=4789) / Raw(b"\x08\0\0\0\0\0\x2a\0")))
put("udp", "geneve", raw(UDP(sport=1, dport=6081) / Raw(gv_hdr(opts=OVN1))))
put("vxlan", "vni42", b"\x08\0\0\0\0\0\x2a\0" + raw(inner4))
put("vxlan", "reserved", b"\x0c\0\0\x01\0\0\x2a\x01" + raw(inner4))
for flags in (0x0000, 0x8000, 0x2000, 0x1000, 0xb000, 0x4000, 0x0001):
    put("gre", "f%04x" % flags, gre(inner4, flags)[34:])

# capture_file: the capture files replay reads, as scapy and Wireshark's tools
# write them (pcap in both timestamp resolutions, pcapng with one and several
# interfaces). The tools come with tshark (scripts/setup.sh).
import shutil, subprocess, tempfile
from scapy.utils import wrpcap, wrpcapng

packets = [Ether(f) for f in frames.values()] + [inner4, inner6, tagged, arp]
with tempfile.TemporaryDirectory() as tmp:
    def path(n):
        return os.path.join(tmp, n)
    wrpcap(path("scapy.pcap"), packets)
    wrpcap(path("scapy_ns.pcap"), packets, nano=True)
    wrpcapng(path("scapy.pcapng"), packets)
    tools = all(shutil.which(t) for t in ("editcap", "mergecap"))
    if tools:
        subprocess.run(["editcap", path("scapy.pcap"), path("editcap.pcapng")], check=True)
        subprocess.run(["editcap", "-F", "nsecpcap", path("scapy.pcap"), path("editcap_ns.pcap")], check=True)
        subprocess.run(["mergecap", "-I", "none", "-w", path("mergecap.pcapng"), path("scapy.pcapng"), path("editcap.pcapng")], check=True)
    else:
        print("make_corpus: editcap/mergecap missing, capture_file seeds from scapy only")
    for n in sorted(os.listdir(tmp)):
        with open(path(n), "rb") as fh:
            put("capture_file", n.replace(".", "_"), fh.read())
