//! Internet checksum (RFC 1071) helpers: ones-complement sums that can be built
//! up in pieces, so a header template can keep a partial sum and patch it per packet.

/// Adds `data` to a running 32-bit ones-complement accumulator, returning the new
/// accumulator (not folded). `data` is read as big-endian 16-bit words; an odd
/// trailing byte is padded with zero, so only the last piece may have odd length.
#[inline]
pub fn add(acc: u32, data: &[u8]) -> u32 {
    // RFC 1071 2(B): the ones-complement sum can be computed in either byte
    // order. Summing native-endian words needs no byte swap per word, so the
    // loop vectorises; the folded result is swapped once at the end. 32-bit
    // halves of 64-bit loads go into a u64, which cannot overflow below 2^31
    // words.
    let mut sum: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let x = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        sum += (x & 0xffff_ffff) + (x >> 32);
    }
    // The tail with fixed-size loads: a variable-length copy into a zeroed
    // buffer costs more than the whole of a 20-byte IPv4 header's sum.
    let rest = chunks.remainder();
    let mut i = 0;
    if rest.len() >= 4 {
        sum += u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as u64;
        i = 4;
    }
    if rest.len() >= i + 2 {
        sum += u16::from_ne_bytes([rest[i], rest[i + 1]]) as u64;
        i += 2;
    }
    if rest.len() > i {
        // An odd last byte is the first of a pair whose second byte is zero.
        sum += u16::from_ne_bytes([rest[i], 0]) as u64;
    }
    // The native-order sum of byte-swapped words is the byte swap of the
    // network-order sum: `from_be` swaps on little-endian targets only.
    let network = u16::from_be(fold(fold64(sum)));
    fold_once(acc as u64 + network as u64)
}

/// Adds one 16-bit word to an accumulator.
#[inline(always)]
pub const fn add_u16(acc: u32, word: u16) -> u32 {
    fold_once(acc as u64 + word as u64)
}

/// Adds a 32-bit value (two words) to an accumulator.
#[inline(always)]
pub const fn add_u32(acc: u32, v: u32) -> u32 {
    fold_once(acc as u64 + (v >> 16) as u64 + (v & 0xffff) as u64)
}

#[inline(always)]
const fn fold_once(s: u64) -> u32 {
    ((s & 0xffff_ffff) + (s >> 32)) as u32
}

#[inline(always)]
const fn fold64(mut s: u64) -> u32 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    s as u32
}

/// Folds an accumulator into a 16-bit ones-complement sum (not yet inverted).
#[inline(always)]
pub const fn fold(acc: u32) -> u16 {
    let mut s = (acc & 0xffff) + (acc >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The checksum field value for data whose accumulator is `acc`.
#[inline(always)]
pub const fn finish(acc: u32) -> u16 {
    !fold(acc)
}

/// Checksum of `data` alone.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(add(0, data))
}

/// True if `data`, which includes its checksum field, sums to all ones.
#[inline]
pub fn verify(acc: u32) -> bool {
    fold(acc) == 0xffff
}

/// Incremental update (RFC 1624, eqn. 3): the new checksum after a 16-bit word
/// changes from `old` to `new`.
#[inline(always)]
pub const fn update16(csum: u16, old: u16, new: u16) -> u16 {
    let acc = (!csum) as u32 + (!old) as u32 + new as u32;
    !fold(acc)
}

/// Partial sum of the IPv4 pseudo-header for `proto` and `len`.
#[inline]
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16) -> u32 {
    let acc = add(0, &src);
    let acc = add(acc, &dst);
    add_u16(add_u16(acc, proto as u16), len)
}

/// Partial sum of the IPv6 pseudo-header for `next_header` and `len`.
#[inline]
pub fn pseudo_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, len: u32) -> u32 {
    let acc = add(0, src);
    let acc = add(acc, dst);
    add_u32(add_u16(acc, next_header as u16), len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(add(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn pieces_sum_like_the_whole_for_even_splits() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1501).collect();
        for split in (0..data.len()).step_by(2) {
            let whole = fold(add(0, &data));
            let parts = fold(add(add(0, &data[..split]), &data[split..]));
            assert_eq!(whole, parts, "split at {split}");
        }
    }

    #[test]
    fn odd_tail_is_zero_padded() {
        assert_eq!(fold(add(0, &[0xab])), 0xab00);
        assert_eq!(fold(add(0, &[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }

    #[test]
    fn incremental_update_matches_recompute() {
        let mut hdr = [
            0x45u8, 0x00, 0x00, 0x54, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0, 0, 192, 0, 2, 1, 192,
            0, 2, 2,
        ];
        let c = checksum(&hdr);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(verify(add(0, &hdr)));
        // change the total length
        let updated = update16(c, 0x0054, 0x05dc);
        hdr[2..4].copy_from_slice(&0x05dcu16.to_be_bytes());
        hdr[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(updated, checksum(&hdr));
    }
}
