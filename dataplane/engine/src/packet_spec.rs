//! Packets from short descriptions, for `trace` and for tests:
//!
//! ```text
//! eth(src=02:00:00:00:00:01,dst=02:00:00:00:00:02)/ipv4(src=198.51.100.1,dst=198.51.100.2)/udp(sport=1234,dport=53)
//! eth/ipv4(src=192.0.2.2,dst=192.0.2.1)/udp(dport=4789)/vxlan(vni=42)/eth/ipv6(src=2001:db8::1,dst=2001:db8::2)/tcp
//! ```
//!
//! Layers: `eth(src,dst,type)`, `vlan(vid,pcp)`, `arp(spa,tpa,op)`,
//! `ipv4(src,dst,proto,ttl,tos,df,id)`, `ipv6(src,dst,nh,hlim,tc)`,
//! `udp(sport,dport,csum=0|auto)`, `tcp(sport,dport)`, `icmp(type,code)`,
//! `vxlan(vni,flags)`, `geneve(vni,flags,opts,ver,proto)` (`opts`: the encoded
//! option TLVs in hex; the C flag is set when one is critical, unless `flags`
//! is given), `gre(key,seq,csum,proto)`, `payload(len)` and `hex(data)`.
//! Every field has a default; lengths, checksums, EtherTypes and protocol
//! numbers are filled in from the layers that follow.

use std::collections::HashMap;
use std::net::IpAddr;

use encap::wire::checksum;

use crate::model::Mac;

/// Why a description could not be built, with the layer it is about.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("layer {index} ({layer}): {reason}")]
pub struct SpecError {
    pub index: usize,
    pub layer: String,
    pub reason: String,
}

struct Layer {
    name: String,
    args: HashMap<String, String>,
}

/// Builds the frame a description describes.
pub fn build(spec: &str) -> Result<Vec<u8>, SpecError> {
    let layers = parse(spec)?;
    let mut ctx = Vec::new();
    emit(&layers, 0, &mut ctx)
}

fn parse(spec: &str) -> Result<Vec<Layer>, SpecError> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    let bytes = spec.as_bytes();
    let mut parts = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b'/' if depth == 0 => {
                parts.push(&spec[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&spec[start..]);
    for (index, p) in parts.iter().enumerate() {
        let p = p.trim();
        let err = |reason: &str| SpecError { index, layer: p.to_string(), reason: reason.into() };
        let (name, args) = match p.find('(') {
            Some(i) if p.ends_with(')') => (&p[..i], &p[i + 1..p.len() - 1]),
            Some(_) => return Err(err("missing closing parenthesis")),
            None => (p, ""),
        };
        let mut map = HashMap::new();
        for kv in args.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) =
                kv.split_once('=').ok_or_else(|| err(&format!("{kv:?} is not key=value")))?;
            map.insert(k.trim().to_string(), v.trim().to_string());
        }
        if name.is_empty() {
            return Err(err("empty layer"));
        }
        out.push(Layer { name: name.to_string(), args: map });
    }
    Ok(out)
}

/// IP addresses of the enclosing IP layer, for pseudo-header checksums.
type Ctx = Vec<(IpAddr, IpAddr)>;

fn emit(layers: &[Layer], i: usize, ctx: &mut Ctx) -> Result<Vec<u8>, SpecError> {
    let Some(l) = layers.get(i) else { return Ok(Vec::new()) };
    let next = layers.get(i + 1).map(|n| n.name.as_str());
    let err = |reason: String| SpecError { index: i, layer: l.name.clone(), reason };
    let known: &[&str] = match l.name.as_str() {
        "eth" => &["src", "dst", "type"],
        "vlan" => &["vid", "pcp", "type"],
        "arp" => &["spa", "tpa", "op", "sha", "tha"],
        "ipv4" => &["src", "dst", "proto", "ttl", "tos", "df", "id"],
        "ipv6" => &["src", "dst", "nh", "hlim", "tc"],
        "udp" => &["sport", "dport", "csum"],
        "tcp" => &["sport", "dport"],
        "icmp" => &["type", "code"],
        "vxlan" => &["vni", "flags"],
        "geneve" => &["vni", "flags", "opts", "ver", "proto"],
        "gre" => &["key", "seq", "csum", "proto"],
        "payload" => &["len"],
        "hex" => &["data"],
        other => return Err(err(format!("unknown layer {other:?}"))),
    };
    if let Some(k) = l.args.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(err(format!("unknown field {k:?} (known: {})", known.join(", "))));
    }
    let num = |k: &str, default: u64, max: u64| -> Result<u64, SpecError> {
        match l.args.get(k) {
            None => Ok(default),
            Some(v) => {
                let parsed = match v.strip_prefix("0x") {
                    Some(h) => u64::from_str_radix(h, 16).ok(),
                    None => v.parse().ok(),
                };
                parsed
                    .filter(|n| *n <= max)
                    .ok_or_else(|| err(format!("{k}={v} is not a number in 0..={max}")))
            }
        }
    };
    let ip = |k: &str, default: &str| -> Result<IpAddr, SpecError> {
        let v = l.args.get(k).map(String::as_str).unwrap_or(default);
        v.parse().map_err(|_| err(format!("{k}={v} is not an IP address")))
    };
    let mac = |k: &str, default: &str| -> Result<[u8; 6], SpecError> {
        let v = l.args.get(k).map(String::as_str).unwrap_or(default);
        v.parse::<Mac>().map(|m| m.0).map_err(|e| err(format!("{k}: {e}")))
    };
    let ethertype_of_next = || match next {
        Some("ipv4") => 0x0800,
        Some("ipv6") => 0x86dd,
        Some("vlan") => 0x8100,
        Some("arp") => 0x0806,
        _ => 0x88b5, // local experimental
    };
    let proto_of_next = || match next {
        Some("udp") => 17,
        Some("tcp") => 6,
        Some("icmp") => 1,
        Some("gre") => 47,
        Some("ipv4") => 4,
        Some("ipv6") => 41,
        _ => 253, // experimentation
    };
    let mut out = Vec::new();
    match l.name.as_str() {
        "eth" => {
            out.extend_from_slice(&mac("dst", "02:00:00:00:00:02")?);
            out.extend_from_slice(&mac("src", "02:00:00:00:00:01")?);
            out.extend_from_slice(
                &(num("type", ethertype_of_next(), 0xffff)? as u16).to_be_bytes(),
            );
            out.extend(emit(layers, i + 1, ctx)?);
        }
        "vlan" => {
            let tci = ((num("pcp", 0, 7)? as u16) << 13) | num("vid", 1, 4095)? as u16;
            out.extend_from_slice(&tci.to_be_bytes());
            out.extend_from_slice(
                &(num("type", ethertype_of_next(), 0xffff)? as u16).to_be_bytes(),
            );
            out.extend(emit(layers, i + 1, ctx)?);
        }
        "arp" => {
            let (IpAddr::V4(spa), IpAddr::V4(tpa)) =
                (ip("spa", "198.51.100.1")?, ip("tpa", "198.51.100.2")?)
            else {
                return Err(err("arp addresses are IPv4".into()));
            };
            out.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, num("op", 1, 2)? as u8]);
            out.extend_from_slice(&mac("sha", "02:00:00:00:00:01")?);
            out.extend_from_slice(&spa.octets());
            out.extend_from_slice(&mac("tha", "00:00:00:00:00:00")?);
            out.extend_from_slice(&tpa.octets());
        }
        "ipv4" => {
            let (IpAddr::V4(src), IpAddr::V4(dst)) =
                (ip("src", "198.51.100.1")?, ip("dst", "198.51.100.2")?)
            else {
                return Err(err("ipv4 addresses must be IPv4".into()));
            };
            ctx.push((IpAddr::V4(src), IpAddr::V4(dst)));
            let payload = emit(layers, i + 1, ctx)?;
            ctx.pop();
            let total = 20 + payload.len();
            if total > 0xffff {
                return Err(err("packet too long for IPv4".into()));
            }
            let df = num("df", 1, 1)? == 1;
            out.extend_from_slice(&[0x45, num("tos", 0, 255)? as u8]);
            out.extend_from_slice(&(total as u16).to_be_bytes());
            out.extend_from_slice(&(num("id", 0, 0xffff)? as u16).to_be_bytes());
            out.extend_from_slice(&[if df { 0x40 } else { 0 }, 0, num("ttl", 64, 255)? as u8]);
            out.push(num("proto", proto_of_next(), 255)? as u8);
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
            let c = checksum::checksum(&out[..20]);
            out[10..12].copy_from_slice(&c.to_be_bytes());
            out.extend(payload);
        }
        "ipv6" => {
            let (IpAddr::V6(src), IpAddr::V6(dst)) =
                (ip("src", "2001:db8::1")?, ip("dst", "2001:db8::2")?)
            else {
                return Err(err("ipv6 addresses must be IPv6".into()));
            };
            ctx.push((IpAddr::V6(src), IpAddr::V6(dst)));
            let payload = emit(layers, i + 1, ctx)?;
            ctx.pop();
            let w0 = (6u32 << 28) | ((num("tc", 0, 255)? as u32) << 20);
            out.extend_from_slice(&w0.to_be_bytes());
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            out.push(num("nh", proto_of_next(), 255)? as u8);
            out.push(num("hlim", 64, 255)? as u8);
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
            out.extend(payload);
        }
        "udp" | "tcp" => {
            let udp = l.name == "udp";
            let default_dport = match next {
                Some("vxlan") => 4789,
                Some("geneve") => 6081,
                _ => 80,
            };
            let payload = emit(layers, i + 1, ctx)?;
            let hl = if udp { 8 } else { 20 };
            let len = hl + payload.len();
            out.extend_from_slice(&(num("sport", 49152, 0xffff)? as u16).to_be_bytes());
            out.extend_from_slice(&(num("dport", default_dport, 0xffff)? as u16).to_be_bytes());
            if udp {
                out.extend_from_slice(&(len as u16).to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            } else {
                out.extend_from_slice(&[
                    0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
                ]);
            }
            out.extend(payload);
            let want = l.args.get("csum").map(String::as_str) != Some("0");
            if want {
                if let Some((s, d)) = ctx.last() {
                    let proto = if udp { 17 } else { 6 };
                    let acc = match (s, d) {
                        (IpAddr::V4(s), IpAddr::V4(d)) => {
                            checksum::pseudo_v4(s.octets(), d.octets(), proto, len as u16)
                        }
                        (s, d) => checksum::pseudo_v6(&v6(s), &v6(d), proto, len as u32),
                    };
                    let c = match checksum::finish(checksum::add(acc, &out)) {
                        0 if udp => 0xffff,
                        c => c,
                    };
                    let at = if udp { 6 } else { 16 };
                    out[at..at + 2].copy_from_slice(&c.to_be_bytes());
                }
            }
        }
        "icmp" => {
            out.extend_from_slice(&[
                num("type", 8, 255)? as u8,
                num("code", 0, 255)? as u8,
                0,
                0,
                0,
                1,
                0,
                1,
            ]);
            out.extend(emit(layers, i + 1, ctx)?);
            let c = checksum::checksum(&out);
            out[2..4].copy_from_slice(&c.to_be_bytes());
        }
        "vxlan" => {
            out.extend_from_slice(&[num("flags", 0x08, 255)? as u8, 0, 0, 0]);
            out.extend_from_slice(&((num("vni", 0, 0xff_ffff)? as u32) << 8).to_be_bytes());
            out.extend(emit(layers, i + 1, ctx)?);
        }
        "geneve" => {
            let opts =
                parse_hex(l.args.get("opts").map(String::as_str).unwrap_or("")).map_err(err)?;
            if !opts.len().is_multiple_of(4) || opts.len() > 252 {
                return Err(err("opts must be a multiple of 4 bytes, at most 252".into()));
            }
            let critical =
                encap::wire::geneve::Options::new(&opts).any(|o| o.is_ok_and(|o| o.is_critical()));
            let flags = num("flags", if critical { 0x40 } else { 0 }, 255)? as u8;
            out.push(((num("ver", 0, 3)? as u8) << 6) | (opts.len() / 4) as u8);
            out.push(flags);
            out.extend_from_slice(&(num("proto", 0x6558, 0xffff)? as u16).to_be_bytes());
            out.extend_from_slice(&((num("vni", 0, 0xff_ffff)? as u32) << 8).to_be_bytes());
            out.extend(opts);
            out.extend(emit(layers, i + 1, ctx)?);
        }
        "gre" => {
            let key =
                l.args.contains_key("key").then(|| num("key", 0, u32::MAX as u64)).transpose()?;
            let seq =
                l.args.contains_key("seq").then(|| num("seq", 0, u32::MAX as u64)).transpose()?;
            let csum = num("csum", 0, 1)? == 1;
            let proto = match next {
                Some("eth") => 0x6558,
                _ => ethertype_of_next(),
            };
            let flags = (if csum { 0x8000u16 } else { 0 })
                | (if key.is_some() { 0x2000 } else { 0 })
                | (if seq.is_some() { 0x1000 } else { 0 });
            out.extend_from_slice(&flags.to_be_bytes());
            out.extend_from_slice(&(num("proto", proto, 0xffff)? as u16).to_be_bytes());
            if csum {
                out.extend_from_slice(&[0, 0, 0, 0]);
            }
            if let Some(k) = key {
                out.extend_from_slice(&(k as u32).to_be_bytes());
            }
            if let Some(s) = seq {
                out.extend_from_slice(&(s as u32).to_be_bytes());
            }
            out.extend(emit(layers, i + 1, ctx)?);
            if csum {
                let c = checksum::checksum(&out);
                out[4..6].copy_from_slice(&c.to_be_bytes());
            }
        }
        "payload" => {
            out.extend(std::iter::repeat_n(0x61, num("len", 18, 9000)? as usize));
            out.extend(emit(layers, i + 1, ctx)?);
        }
        "hex" => {
            let h = l.args.get("data").map(String::as_str).unwrap_or("");
            out.extend(parse_hex(h).map_err(err)?);
            out.extend(emit(layers, i + 1, ctx)?);
        }
        _ => unreachable!("checked above"),
    }
    Ok(out)
}

fn v6(a: &IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(v) => v.octets(),
        IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
    }
}

/// Parses hex digits, ignoring spaces and colons.
pub fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b" :\n\t".contains(b)).collect();
    if !digits.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    digits
        .chunks(2)
        .map(|p| {
            let s = std::str::from_utf8(p).map_err(|_| "not hex".to_string())?;
            u8::from_str_radix(s, 16).map_err(|_| format!("{s:?} is not hex"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use encap::{decap, DecapConfig, PacketBuf, TunnelId};

    #[test]
    fn geneve_with_an_option_decapsulates() {
        let f = build("eth/ipv4(src=192.0.2.2,dst=192.0.2.1)/udp/geneve(vni=42,opts=01028001deadbeef)/eth/ipv4/icmp")
            .unwrap();
        let cfg = DecapConfig {
            local_v4: vec![[192, 0, 2, 1]],
            geneve_matches: vec![encap::GeneveOptionMatch {
                class: 0x0102,
                kind: 0x80,
                data: vec![0xde, 0xad, 0xbe, 0xef],
            }],
            ..Default::default()
        };
        let mut buf = f.clone();
        let mut p = PacketBuf::new(&mut buf, 0, f.len()).unwrap();
        let d = decap(&cfg, &mut p).unwrap();
        assert_eq!((d.tunnel, d.geneve_options), (TunnelId::Geneve { vni: 42 }, 1));
    }

    #[test]
    fn udp_over_ipv4_is_well_formed() {
        let f = build("eth/ipv4(src=198.51.100.1,dst=198.51.100.2,ttl=9)/udp(sport=1234,dport=53)/payload(len=4)")
            .unwrap();
        assert_eq!(f.len(), 14 + 20 + 8 + 4);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        let ip = encap::wire::ipv4::Packet::new_checked(&f[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.ttl(), ip.total_len()), (9, 32));
        let acc = checksum::pseudo_v4(ip.src_addr(), ip.dst_addr(), 17, 12);
        assert!(checksum::verify(checksum::add(acc, ip.payload())));
    }

    #[test]
    fn tunnel_packets_decapsulate() {
        let f = build("eth/ipv6(src=2001:db8::2,dst=2001:db8::1)/udp/vxlan(vni=42)/eth/ipv4/icmp")
            .unwrap();
        let mut b = f.clone();
        let len = b.len();
        let mut p = PacketBuf::new(&mut b, 0, len).unwrap();
        let cfg = DecapConfig {
            local_v6: vec!["2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets()],
            ..Default::default()
        };
        let d = decap(&cfg, &mut p).unwrap();
        assert_eq!(d.tunnel, TunnelId::Vxlan { vni: 42 });
        assert_eq!(p.data(), &build("eth/ipv4/icmp").unwrap()[..]);

        let f =
            build("eth/ipv4(src=192.0.2.2,dst=192.0.2.1)/gre(key=7,seq=1,csum=1)/eth/arp").unwrap();
        let mut b = f.clone();
        let len = b.len();
        let mut p = PacketBuf::new(&mut b, 0, len).unwrap();
        let cfg = DecapConfig { local_v4: vec![[192, 0, 2, 1]], ..Default::default() };
        assert_eq!(decap(&cfg, &mut p).unwrap().tunnel, TunnelId::Gre { key: Some(7) });
    }

    #[test]
    fn errors_name_the_layer() {
        let e = build("eth/ipv4(dst=300.1.1.1)").unwrap_err();
        assert_eq!(e.index, 1);
        assert!(e.reason.contains("not an IP address"), "{e}");
        assert!(build("eth/ipx").unwrap_err().reason.contains("unknown layer"));
        assert!(build("eth/udp(port=1)").unwrap_err().reason.contains("unknown field \"port\""));
        assert!(build("eth/vlan(vid=5000)").unwrap_err().reason.contains("0..=4095"));
        assert!(build("eth(src=zz)").is_err());
    }
}
