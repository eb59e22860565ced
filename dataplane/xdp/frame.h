// SPDX-License-Identifier: GPL-2.0
/* Reads and writes of frame bytes at any alignment.
 * Part of steer.bpf.c's compilation unit, included there in order: it
 * uses what the headers before it define. */

/* Reads of the frame, unaligned as copy_to_frame's writes (and for the
 * same reason: one load where clang would make one per byte). */
static __always_inline __u64 mac48(const __u8 *m)
{
	return ((__u64)bpf_ntohl(*(const __u32 *)m) << 16) | bpf_ntohs(*(const __u16 *)(m + 4));
}

static __always_inline __u64 be64(const void *p)
{
	return bpf_be64_to_cpu(*(const __u64 *)p);
}

static __always_inline void copy_mac(__u8 *dst, const __u8 *src)
{
	__builtin_memcpy(dst, src, 6);
}

/* Copies `n` (a constant) bytes from an entry into the frame in 8-, 4-, 2-
 * and 1-byte moves. Told nothing about alignment, clang's memcpy moves one
 * byte at a time, two instructions a byte: the 50-byte VXLAN header alone
 * was 100 of them. Neither side is aligned (the frame starts where
 * bpf_xdp_adjust_head left it; the template at offset 36 of the value); the
 * verifier accepts unaligned packet and map value access where the CPU
 * handles it (x86-64, arm64: no BPF_F_STRICT_ALIGNMENT), and on another the
 * program fails to load, which leaves every port on AF_XDP. Not for the
 * stack, whose accesses the verifier requires aligned. */
static __always_inline void copy_to_frame(void *dst, const void *src, const int n)
{
	int i = 0;
#pragma unroll
	for (; i + 8 <= n; i += 8)
		*(__u64 *)(dst + i) = *(const __u64 *)(src + i);
	if (n - i >= 4) {
		*(__u32 *)(dst + i) = *(const __u32 *)(src + i);
		i += 4;
	}
	if (n - i >= 2) {
		*(__u16 *)(dst + i) = *(const __u16 *)(src + i);
		i += 2;
	}
	if (n - i >= 1)
		*(__u8 *)(dst + i) = *(const __u8 *)(src + i);
}
