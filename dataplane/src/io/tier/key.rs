//! The program's flow key and map key, in Rust: twins of steer.bpf.c's
//! key building and `tier_hash`, kept bit for bit (the tests hold them to
//! the program).

use engine::flow_key::{v4_mapped, FlowKey, WORDS};

/// The key `tier_flows` holds the entry of (masked) key `key` under: the
/// program's `tier_hash` (steer.bpf.c), word for word. A sum of one
/// multiply-xorshift per word, each a bijection of its word: keys that
/// differ in one word never collide. Two keys of one hash cost the second
/// its place in the tier (`hash_collision`), never a wrong hit: the entry
/// holds its key, which the program checks on every hit.
pub fn tier_hash(key: &[u64; WORDS]) -> u64 {
    const MUL: u64 = 0x9e37_79b9_7f4a_7c15;
    const STEP: u64 = 0x5851_f42d_4c95_7f2d;
    key.iter().enumerate().fold(0u64, |h, (j, &w)| {
        let x = w.wrapping_add((j as u64 + 1).wrapping_mul(STEP)).wrapping_mul(MUL);
        h.wrapping_add(x ^ (x >> 32))
    })
}

/// The Rust twin of the program's key: the engine's flow key of `frame`
/// arriving on `in_port`, for exactly the frames the program builds a key
/// of (untagged Ethernet; IPv4 without options and not a fragment, or IPv6
/// whose next header is TCP or UDP; TCP or UDP with both ports present);
/// `None` for every other frame, which the program leaves to AF_XDP.
pub fn tier_key(frame: &[u8], in_port: u16) -> Option<FlowKey> {
    let eth = frame.get(..14)?;
    let et = u16::from_be_bytes([eth[12], eth[13]]);
    let mac = |b: &[u8]| u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]]);
    let mut k = FlowKey::default();
    k.0[0] = (in_port as u64) << 48;
    k.0[1] = mac(&eth[0..6]) << 16;
    k.0[2] = (mac(&eth[6..12]) << 16) | et as u64;
    let (proto, l4) = match et {
        0x0800 => {
            let ip = frame.get(14..34)?;
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
            if ip[0] != 0x45 || frag {
                return None;
            }
            k.set_ip_src(v4_mapped(ip[12..16].try_into().unwrap()));
            k.set_ip_dst(v4_mapped(ip[16..20].try_into().unwrap()));
            (ip[9], 34)
        }
        0x86dd => {
            let ip = frame.get(14..54)?;
            if ip[0] >> 4 != 6 {
                return None;
            }
            k.set_ip_src(ip[8..24].try_into().unwrap());
            k.set_ip_dst(ip[24..40].try_into().unwrap());
            (ip[6], 54)
        }
        _ => return None,
    };
    if proto != 6 && proto != 17 {
        return None;
    }
    // Through the checksum field, which the program must read (a partial
    // checksum stays with the software path).
    let csum_end = l4 + if proto == 6 { 18 } else { 8 };
    frame.get(..csum_end)?;
    let p = frame.get(l4..l4 + 4)?;
    k.0[7] = ((proto as u64) << 56)
        | ((u16::from_be_bytes([p[0], p[1]]) as u64) << 40)
        | ((u16::from_be_bytes([p[2], p[3]]) as u64) << 24);
    Some(k)
}
