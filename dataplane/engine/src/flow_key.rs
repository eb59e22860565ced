//! The fields rules match on, extracted from a packet into eight 64-bit words
//! so that masking, comparing and hashing are word operations.
//!
//! ```text
//! w0  in_port (16) | tunnel index + 1, 0 = none (16) | VNI or GRE key (32)
//! w1  eth_dst (48) | VLAN: 0x1000 | vid, 0 = untagged (16)
//! w2  eth_src (48) | EtherType after VLAN tags (16)
//! w3  ip_src high  \  IPv6, or IPv4 as ::ffff:a.b.c.d
//! w4  ip_src low   /
//! w5  ip_dst high
//! w6  ip_dst low
//! w7  ip_proto (8) | l4_src (16) | l4_dst (16) | Geneve option matches (24)
//! ```

use encap::wire::ethernet;
use encap::wire::l2::{self, L2Header};

pub const WORDS: usize = 8;

/// A packet's match fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey(pub [u64; WORDS]);

/// A VLAN field value meaning "tagged with this id".
pub const VLAN_PRESENT: u16 = 0x1000;

/// Offsets of the fields; shared by the key builder, masks and the trace.
pub mod field {
    /// (word, shift, width in bits)
    pub type Field = (usize, u32, u32);
    pub const IN_PORT: Field = (0, 48, 16);
    pub const TUNNEL: Field = (0, 32, 16);
    pub const VNI: Field = (0, 0, 32);
    pub const ETH_DST: Field = (1, 16, 48);
    pub const VLAN: Field = (1, 0, 16);
    pub const ETH_SRC: Field = (2, 16, 48);
    pub const ETHERTYPE: Field = (2, 0, 16);
    pub const IP_PROTO: Field = (7, 56, 8);
    pub const L4_SRC: Field = (7, 40, 16);
    pub const L4_DST: Field = (7, 24, 16);
    /// Bit `i`: the packet carried the rule set's Geneve option match `i`
    /// (`DecapConfig::geneve_matches`).
    pub const GENEVE_OPTIONS: Field = (7, 0, 24);
}

impl FlowKey {
    #[inline(always)]
    pub fn set(&mut self, (w, shift, width): field::Field, v: u64) {
        let m = if width == 64 { u64::MAX } else { (1u64 << width) - 1 };
        self.0[w] = (self.0[w] & !(m << shift)) | ((v & m) << shift);
    }

    #[inline(always)]
    pub fn get(&self, (w, shift, width): field::Field) -> u64 {
        let m = if width == 64 { u64::MAX } else { (1u64 << width) - 1 };
        (self.0[w] >> shift) & m
    }

    pub fn set_ip_src(&mut self, a: [u8; 16]) {
        self.0[3] = u64::from_be_bytes(a[..8].try_into().unwrap());
        self.0[4] = u64::from_be_bytes(a[8..].try_into().unwrap());
    }

    pub fn set_ip_dst(&mut self, a: [u8; 16]) {
        self.0[5] = u64::from_be_bytes(a[..8].try_into().unwrap());
        self.0[6] = u64::from_be_bytes(a[8..].try_into().unwrap());
    }

    pub fn ip_src(&self) -> [u8; 16] {
        words_to_addr(self.0[3], self.0[4])
    }

    pub fn ip_dst(&self) -> [u8; 16] {
        words_to_addr(self.0[5], self.0[6])
    }

    /// A stable 64-bit hash of the key, for tables and the flow cache.
    #[inline(always)]
    pub fn hash(&self) -> u64 {
        hash_words(&self.0)
    }

    /// The key with only the bits of `mask` kept.
    #[inline(always)]
    pub fn masked(&self, mask: &FlowKey) -> FlowKey {
        let mut out = [0u64; WORDS];
        for (o, (k, m)) in out.iter_mut().zip(self.0.iter().zip(mask.0.iter())) {
            *o = k & m;
        }
        FlowKey(out)
    }
}

fn words_to_addr(hi: u64, lo: u64) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&hi.to_be_bytes());
    a[8..].copy_from_slice(&lo.to_be_bytes());
    a
}

/// IPv4 address as an IPv4-mapped IPv6 address.
pub fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[10] = 0xff;
    m[11] = 0xff;
    m[12..].copy_from_slice(&a);
    m
}

/// One folded 64x64->128-bit multiply: every input bit reaches every output
/// bit (the mixing step of wyhash), so masked keys that differ in a few high
/// bits still land in different table slots.
#[inline(always)]
pub fn fold_mul(a: u64, b: u64) -> u64 {
    let r = (a as u128).wrapping_mul(b as u128);
    (r as u64) ^ ((r >> 64) as u64)
}

const SECRET: [u64; WORDS] = [
    0xa076_1d64_78bd_642f,
    0xe703_7ed1_a0b4_28db,
    0x8ebc_6af0_9c88_c6e3,
    0x5899_65cc_7537_4cc3,
    0x1d8e_4e27_c47d_124f,
    0x9e37_79b9_7f4a_7c15,
    0xbf58_476d_1ce4_e5b9,
    0x94d0_49bb_1331_11eb,
];

/// Hash of eight words as four independent folded multiplies of word pairs
/// (wyhash's layout): short dependency chains, so a lookup that hashes many
/// masked keys overlaps their latencies.
#[inline(always)]
pub fn hash_words(w: &[u64; WORDS]) -> u64 {
    let a = fold_mul(w[0] ^ SECRET[0], w[1] ^ SECRET[1]);
    let b = fold_mul(w[2] ^ SECRET[2], w[3] ^ SECRET[3]);
    let c = fold_mul(w[4] ^ SECRET[4], w[5] ^ SECRET[5]);
    let d = fold_mul(w[6] ^ SECRET[6], w[7] ^ SECRET[7]);
    fold_mul(a ^ c, b ^ d)
}

/// The names of the fields a mask covers (`ip_dst/24` for prefixes).
pub fn mask_fields(m: &FlowKey) -> Vec<String> {
    let mut out = Vec::new();
    let named = [
        ("in_port", field::IN_PORT),
        ("tunnel", field::TUNNEL),
        ("vni", field::VNI),
        ("eth_dst", field::ETH_DST),
        ("vlan", field::VLAN),
        ("eth_src", field::ETH_SRC),
        ("ethertype", field::ETHERTYPE),
        ("ip_proto", field::IP_PROTO),
        ("l4_src", field::L4_SRC),
        ("l4_dst", field::L4_DST),
        ("geneve_option", field::GENEVE_OPTIONS),
    ];
    for (name, f) in named {
        if m.get(f) != 0 {
            out.push(name.to_string());
        }
    }
    for (name, w) in [("ip_src", 3), ("ip_dst", 5)] {
        let bits = m.0[w].count_ones() + m.0[w + 1].count_ones();
        if bits > 0 {
            // IPv4 prefixes live in the low 32 bits of the IPv4-mapped form.
            let len = if bits > 96 && m.0[w] == u64::MAX { bits - 96 } else { bits };
            out.push(format!("{name}/{len}"));
        }
    }
    if out.is_empty() {
        out.push("(catch-all)".into());
    }
    out
}

/// Layer-2 facts the actions need, found while building the key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L2Info {
    /// Number of VLAN tags (0-2).
    pub vlan_tags: u8,
}

/// Builds the key of an Ethernet frame that arrived on `in_port` (decapsulated
/// from `tunnel` with `vni` when `tunnel` is non-zero). Never fails and never
/// panics: fields the frame does not have stay zero. Frames shorter than an
/// Ethernet header must be refused by the caller. VLAN tags are skipped under
/// the dataplane's rule (`encap::wire::l2`); a frame cut inside its tags is
/// keyed as untagged, its outer TPID as the EtherType.
#[inline]
pub fn extract(frame: &[u8], in_port: u16, tunnel: u16, vni: u32) -> (FlowKey, L2Info) {
    let mut k = FlowKey::default();
    k.0[0] = ((in_port as u64) << 48) | ((tunnel as u64) << 32) | vni as u64;
    if frame.len() < ethernet::HEADER_LEN {
        return (k, L2Info::default());
    }
    let mac = |b: &[u8]| u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]]);
    let h = l2::walk(frame).unwrap_or(L2Header {
        ethertype: u16::from_be_bytes([frame[12], frame[13]]),
        l3_offset: ethernet::HEADER_LEN,
        ..L2Header::default()
    });
    let et = h.ethertype;
    let vlan = if h.tags > 0 { VLAN_PRESENT | h.outer_vid() } else { 0 };
    k.0[1] = (mac(&frame[ethernet::field::DST]) << 16) | vlan as u64;
    k.0[2] = (mac(&frame[ethernet::field::SRC]) << 16) | et as u64;
    let l3 = &frame[h.l3_offset..];
    let (proto, l4): (u8, &[u8]) = match et {
        0x0800 if l3.len() >= 20 && l3[0] >> 4 == 4 => {
            k.set_ip_src(v4_mapped(l3[12..16].try_into().unwrap()));
            k.set_ip_dst(v4_mapped(l3[16..20].try_into().unwrap()));
            let hl = ((l3[0] & 0x0f) as usize) * 4;
            let frag = u16::from_be_bytes([l3[6], l3[7]]) & 0x1fff != 0;
            let l4 = if frag || hl < 20 || hl > l3.len() { &[][..] } else { &l3[hl..] };
            (l3[9], l4)
        }
        0x86dd if l3.len() >= 40 && l3[0] >> 4 == 6 => {
            k.set_ip_src(l3[8..24].try_into().unwrap());
            k.set_ip_dst(l3[24..40].try_into().unwrap());
            (l3[6], &l3[40..])
        }
        _ => (0, &[][..]),
    };
    let ports = if matches!(proto, 6 | 17 | 132 | 136) && l4.len() >= 4 {
        ((u16::from_be_bytes([l4[0], l4[1]]) as u64) << 40)
            | ((u16::from_be_bytes([l4[2], l4[3]]) as u64) << 24)
    } else {
        0
    };
    k.0[7] = ((proto as u64) << 56) | ports;
    (k, L2Info { vlan_tags: h.tags })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_v4() -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x81, 0x00, 0x00, 0x64, 0x08, 0x00];
        f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&[198, 51, 100, 1, 203, 0, 113, 9]);
        f.extend_from_slice(&[0x04, 0xd2, 0x00, 0x35, 0, 8, 0, 0]);
        f
    }

    #[test]
    fn fields_land_where_the_layout_says() {
        let (k, l2) = extract(&udp_v4(), 3, 2, 42);
        assert_eq!(k.get(field::IN_PORT), 3);
        assert_eq!(k.get(field::TUNNEL), 2);
        assert_eq!(k.get(field::VNI), 42);
        assert_eq!(k.get(field::ETH_DST), 0x0200_0000_0002);
        assert_eq!(k.get(field::ETH_SRC), 0x0200_0000_0001);
        assert_eq!(k.get(field::VLAN), (VLAN_PRESENT | 100) as u64);
        assert_eq!(k.get(field::ETHERTYPE), 0x0800);
        assert_eq!(k.ip_src(), v4_mapped([198, 51, 100, 1]));
        assert_eq!(k.ip_dst(), v4_mapped([203, 0, 113, 9]));
        assert_eq!(k.get(field::IP_PROTO), 17);
        assert_eq!((k.get(field::L4_SRC), k.get(field::L4_DST)), (1234, 53));
        assert_eq!(l2.vlan_tags, 1);
    }

    #[test]
    fn truncated_frames_leave_fields_zero() {
        let f = udp_v4();
        for len in 0..f.len() {
            let (k, _) = extract(&f[..len], 1, 0, 0);
            if len < 38 {
                assert_eq!(k.get(field::IP_PROTO), 0, "len {len}");
            }
        }
    }

    #[test]
    fn two_tags_keyed_on_the_outer_vid_a_third_is_the_ethertype() {
        let mut f = udp_v4();
        f.splice(12..12, [0x88, 0xa8, 0x00, 0x0a]);
        let (k, l2) = extract(&f, 1, 0, 0);
        assert_eq!(k.get(field::VLAN), (VLAN_PRESENT | 10) as u64);
        assert_eq!((k.get(field::ETHERTYPE), k.get(field::L4_DST)), (0x0800, 53));
        assert_eq!(l2.vlan_tags, 2);
        f.splice(12..12, [0x81, 0x00, 0x00, 0x0b]);
        let (k, l2) = extract(&f, 1, 0, 0);
        assert_eq!(k.get(field::VLAN), (VLAN_PRESENT | 11) as u64);
        assert_eq!((k.get(field::ETHERTYPE), k.get(field::IP_PROTO)), (0x8100, 0));
        assert_eq!(l2.vlan_tags, 2);
    }

    /// A frame cut inside its tags is keyed as untagged with its outer TPID
    /// as EtherType. Before the walk moved to `encap::wire::l2`, a frame cut
    /// inside its second tag kept the first tag's VLAN and the second TPID;
    /// now every cut frame is keyed the same way.
    #[test]
    fn cut_inside_the_tags_is_keyed_as_untagged() {
        let mut f = udp_v4();
        f.splice(12..12, [0x88, 0xa8, 0x00, 0x0a]);
        for len in 14..22 {
            let (k, l2) = extract(&f[..len], 1, 0, 0);
            assert_eq!(k.get(field::VLAN), 0, "len {len}");
            assert_eq!(k.get(field::ETHERTYPE), 0x88a8, "len {len}");
            assert_eq!(l2.vlan_tags, 0, "len {len}");
        }
    }

    #[test]
    fn set_and_get_roundtrip() {
        let mut k = FlowKey::default();
        k.set(field::L4_DST, 0xffff);
        k.set(field::IP_PROTO, 6);
        assert_eq!(k.get(field::L4_DST), 0xffff);
        assert_eq!(k.get(field::IP_PROTO), 6);
        assert_eq!(k.get(field::L4_SRC), 0);
    }
}
