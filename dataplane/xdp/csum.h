// SPDX-License-Identifier: GPL-2.0
/* Internet checksums (RFC 1071) over packet bytes: the walk of a
 * segment, and the sums a tunnel header's checksum is made of.
 * Part of steer.bpf.c's compilation unit, included there in order: it
 * uses what the headers before it define. */

/* The checksum walk's bounds: 16 chunks of 256 bytes take any frame up to
 * 4 KiB, more than XDP sees of a frame without fragments (this program
 * takes no multi-buffer frames). Longer ones go to AF_XDP. */
#define CSUM_CHUNK 256
#define CSUM_CHUNKS 16

/* The Internet checksum's sum (RFC 1071) of the packet bytes from `p` to
 * `end`, folded to 16 bits, in host order; -1 if there are more than the
 * walk takes. `p` is an even number of bytes from where the checksummed
 * data starts. bpf_csum_diff sums whole 32-bit words in memory order; a sum
 * is the same in either byte order (RFC 1071 2(B)), so it is swapped once
 * at the end. The walk of csum_to_end (XDP) and skb_csum_to_end (the tc
 * uplink, tc/uplink.bpf.c). */
static __always_inline int sum_to_end(void *p, void *end)
{
	__u64 sum = 0;
	for (int i = 0; i < CSUM_CHUNKS; i++) {
		if (p + CSUM_CHUNK > end)
			break;
		sum = (__u32)bpf_csum_diff(0, 0, p, CSUM_CHUNK, (__u32)sum);
		p += CSUM_CHUNK;
	}
	if (p + CSUM_CHUNK <= end)
		return -1;
	/* The rest, in pieces of fixed size (the verifier bounds each). */
#define CSUM_PIECE(n)                                                              \
	if (p + (n) <= end) {                                                      \
		sum = (__u32)bpf_csum_diff(0, 0, p, (n), (__u32)sum);              \
		p += (n);                                                          \
	}
	CSUM_PIECE(128)
	CSUM_PIECE(64)
	CSUM_PIECE(32)
	CSUM_PIECE(16)
	CSUM_PIECE(8)
	CSUM_PIECE(4)
#undef CSUM_PIECE
	if (p + 2 <= end) {
		sum += *(__u16 *)p;
		p += 2;
	}
	/* An odd last byte is the first of a word whose second byte is zero. */
	if (p + 1 <= end)
		sum += bpf_htons((__u16)(*(__u8 *)p) << 8);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return bpf_ntohs((__u16)sum);
}

/* The sum of the frame's bytes from offset `off` to its end.
 * A global function: the verifier checks it once, on its own, rather than
 * once for every path that reaches a call (which exceeds its limit). */
__attribute__((noinline)) int csum_to_end(struct xdp_md *ctx, __u32 off)
{
	void *p = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (off > VXLAN6_HDR_LEN)
		return -1;
	return sum_to_end(p + off, end);
}

/* Sum of `n` 16-bit big-endian words at `p`, in host order, unfolded. */
static __always_inline __u32 sum_words(const void *p, int n)
{
	const __u16 *w = p;
	__u32 s = 0;
#pragma unroll
	for (int i = 0; i < n; i++)
		s += bpf_ntohs(w[i]);
	return s;
}

/* The sum of the frame as entry `e` sends it inside the tunnel (its MAC
 * rewrites applied), taken before anything is changed so that a frame the
 * walk cannot take leaves unchanged; -1 if it cannot. */
static __always_inline int frame_sum(struct xdp_md *ctx, void *data, void *end,
				     const struct tier_entry *e)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return -1;
	int rest = csum_to_end(ctx, 12);
	if (rest < 0)
		return -1;
	__u32 s = rest;
	s += sum_words((e->flags & TF_SET_DST) ? (const void *)e->eth_dst : eth->h_dest, 3);
	s += sum_words((e->flags & TF_SET_SRC) ? (const void *)e->eth_src : eth->h_source, 3);
	return s; /* unfolded: at most 7 * 0xffff */
}

/* The UDP checksum field of a datagram of `l4_len` bytes whose constant
 * words (pseudo-header addresses and protocol, ports, tunnel header) sum
 * to `constant` and whose payload after them sums to `payload`: the length
 * counts twice (pseudo-header and UDP header). A computed zero is sent as
 * all ones (RFC 768, RFC 8200 8.1), as the engine's template does. */
static __always_inline __u16 udp_csum(__u16 constant, __u16 l4_len, __u32 payload)
{
	__u32 s = (__u32)constant + l4_len + l4_len + payload;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	__u16 c = ~s;
	return c ? c : 0xffff;
}

/* True if IPv4 header `ip` (20 bytes, no options: the caller checked)
 * has a checksum that verifies, as the engine verifies it. */
static __always_inline int ipv4_header_sum_ok(const struct iphdr *ip)
{
	const __u16 *w = (const void *)ip;
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum == 0xffff;
}
