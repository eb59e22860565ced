//! Shared helpers for the cross-check tests (`tshark.rs`, `scapy.rs`): a classic
//! pcap writer, self-removing temporary directories, checks that the external
//! tools are installed, hex, hand-built inner frames with checksums computed by a
//! ones-complement sum written here (not the crate's), and tunnel parameters.
//!
//! Every address is from the documentation ranges (192.0.2.0/24,
//! 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use encap::{
    DropReason, EncapOptions, EncapTemplate, Encapsulation, PacketBuf, TunnelParams, Underlay,
};

pub const SETUP_HINT: &str = "run scripts/setup.sh (as root) to install it";

/// Debian's interpreter: the only one that sees the python3-scapy package.
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// Panics (fails the test) unless `tshark` runs: these tests never pass silently.
pub fn require_tshark() {
    let out = Command::new("tshark").arg("-v").output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "tshark -v failed ({}): {}; {SETUP_HINT}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("tshark is not installed ({e}); {SETUP_HINT}"),
    }
}

/// Panics unless `/usr/bin/python3` can import scapy.
pub fn require_scapy() {
    let out = Command::new(SYSTEM_PYTHON)
        .args(["-c", "import scapy.all, scapy.layers.vxlan; print(scapy.VERSION)"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "{SYSTEM_PYTHON} cannot import scapy: {}; python3-scapy is missing, {SETUP_HINT}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("{SYSTEM_PYTHON} is missing ({e}); {SETUP_HINT}"),
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "encap-xcheck-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a classic pcap file (magic a1b2c3d4, version 2.4, link type 1 =
/// Ethernet), one record per frame, timestamps one second apart.
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut b = Vec::with_capacity(24 + frames.iter().map(|f| f.len() + 16).sum::<usize>());
    b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes()); // magic
    b.extend_from_slice(&2u16.to_le_bytes()); // version major
    b.extend_from_slice(&4u16.to_le_bytes()); // version minor
    b.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    b.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    b.extend_from_slice(&65535u32.to_le_bytes()); // snaplen
    b.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    for (i, f) in frames.iter().enumerate() {
        b.extend_from_slice(&(1_700_000_000 + i as u32).to_le_bytes()); // ts_sec
        b.extend_from_slice(&0u32.to_le_bytes()); // ts_usec
        b.extend_from_slice(&(f.len() as u32).to_le_bytes()); // incl_len
        b.extend_from_slice(&(f.len() as u32).to_le_bytes()); // orig_len
        b.extend_from_slice(f);
    }
    std::fs::write(path, b).unwrap();
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    s.as_bytes()
        .chunks(2)
        .map(|c| {
            assert_eq!(c.len(), 2, "odd-length hex string");
            u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap()
        })
        .collect()
}

/// RFC 1071 Internet checksum of the concatenation of `parts`, written here so
/// that frames the tests build do not depend on the crate's checksum code.
pub fn inet_checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u64 = 0;
    for c in bytes.chunks(2) {
        let w = if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { (c[0] as u16) << 8 };
        sum += w as u64;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub const V4_LOCAL: [u8; 4] = [192, 0, 2, 1];
pub const V4_REMOTE: [u8; 4] = [192, 0, 2, 2];

pub fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

pub const OUTER_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const OUTER_DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const INNER_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const INNER_DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

fn eth(ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&INNER_DST_MAC);
    f.extend_from_slice(&INNER_SRC_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An IPv4 header (no options) with a valid checksum.
fn ipv4_header(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    tos: u8,
    ttl: u8,
    df: bool,
    payload_len: usize,
) -> [u8; 20] {
    let total = (20 + payload_len) as u16;
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[1] = tos;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    h[6] = if df { 0x40 } else { 0 };
    h[8] = ttl;
    h[9] = proto;
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&dst);
    let c = inet_checksum(&[&h]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

/// Ethernet / IPv4 / UDP with `payload_len` bytes of payload and valid
/// IPv4 and UDP checksums.
#[allow(clippy::too_many_arguments)]
pub fn ipv4_udp(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    tos: u8,
    ttl: u8,
    df: bool,
    payload_len: usize,
) -> Vec<u8> {
    let payload: Vec<u8> = (0..payload_len).map(|i| b'a' + (i % 26) as u8).collect();
    let ulen = (8 + payload_len) as u16;
    let mut udp = Vec::with_capacity(ulen as usize);
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&ulen.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&ulen.to_be_bytes());
    let c = match inet_checksum(&[&pseudo, &udp]) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    let mut f = eth(0x0800);
    f.extend_from_slice(&ipv4_header(src, dst, 17, tos, ttl, df, udp.len()));
    f.extend_from_slice(&udp);
    f
}

/// Ethernet / IPv6 / TCP (SYN with a 20-byte header) with a valid TCP checksum.
pub fn ipv6_tcp(
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    tclass: u8,
    hlim: u8,
) -> Vec<u8> {
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&1000u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&(tcp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 6]);
    let c = inet_checksum(&[&pseudo, &tcp]);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    let mut f = eth(0x86dd);
    let w0 = (6u32 << 28) | ((tclass as u32) << 20) | 0x5_4321;
    f.extend_from_slice(&w0.to_be_bytes());
    f.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    f.push(6);
    f.push(hlim);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&tcp);
    f
}

/// Ethernet / IPv4 / ICMP echo request with valid checksums.
pub fn ipv4_icmp_echo(src: [u8; 4], dst: [u8; 4], tos: u8, ttl: u8, df: bool) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0x00, 0x01];
    icmp.extend_from_slice(b"encap-xcheck-ping");
    let c = inet_checksum(&[&icmp]);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = eth(0x0800);
    f.extend_from_slice(&ipv4_header(src, dst, 1, tos, ttl, df, icmp.len()));
    f.extend_from_slice(&icmp);
    f
}

/// A broadcast ARP request from `spa` for `tpa`.
pub fn arp_request(spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&INNER_SRC_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&INNER_SRC_MAC);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa);
    f
}

/// Inserts an 802.1Q tag with VLAN `vid` after the MAC addresses.
pub fn vlan_tagged(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&[0x81, 0x00]);
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

pub fn underlay(v6_outer: bool) -> Underlay {
    if v6_outer {
        Underlay::V6 { src: v6("2001:db8::1"), dst: v6("2001:db8::2") }
    } else {
        Underlay::V4 { src: V4_LOCAL, dst: V4_REMOTE }
    }
}

pub fn params(encap: Encapsulation, v6_outer: bool, options: EncapOptions) -> TunnelParams {
    TunnelParams {
        encap,
        underlay: underlay(v6_outer),
        src_mac: OUTER_SRC_MAC,
        dst_mac: OUTER_DST_MAC,
        outer_vlan: None,
        options,
    }
}

pub const HEADROOM: usize = 128;

/// Encapsulates a copy of `inner` with `tpl`, returning the outer frame.
pub fn encap_one(tpl: &mut EncapTemplate, inner: &[u8]) -> Result<Vec<u8>, DropReason> {
    let mut b = vec![0u8; HEADROOM + inner.len()];
    b[HEADROOM..].copy_from_slice(inner);
    let mut pkt = PacketBuf::new(&mut b, HEADROOM, inner.len()).unwrap();
    tpl.encap(&mut pkt)?;
    Ok(pkt.data().to_vec())
}
