// SPDX-License-Identifier: GPL-2.0
/* The tier's encapsulations: VXLAN over IPv4 and IPv6, GRE (gretap,
 * NVGRE, L3 GRE), each the entry's header in front of the frame with its
 * per-packet fields patched.
 * Part of steer.bpf.c's compilation unit, included there in order: it
 * uses what the headers before it define. */

/* encap::inner's flow hash (InnerMeta::hash), bit for bit: one round of
 * its multiply-xorshift mix, and its finish. */
#define FLOW_SEED 0x9e3779b97f4a7c15ULL
static __always_inline __u64 flow_mix(__u64 h, __u64 v)
{
	__u64 x = (h ^ v) * FLOW_SEED;
	return x ^ (x >> 29);
}

/* The hash InnerMeta gives the frame of key `k` (an untagged IPv4 or IPv6
 * TCP or UDP frame, not a fragment): its addresses, protocol and ports,
 * read from the unmasked key. Computed per packet, so that one entry can
 * serve many flows and each still leaves with its own source port. */
static __always_inline __u32 flow_hash(const struct tier_key *k)
{
	__u64 h;
	if ((k->w[2] & 0xffff) == ETH_P_IPV6)
		h = flow_mix(flow_mix(flow_mix(flow_mix(0, k->w[3]), k->w[4]), k->w[5]), k->w[6]);
	else
		h = flow_mix(0, (k->w[4] << 32) | (k->w[6] & 0xffffffffULL));
	h = flow_mix(flow_mix(h, k->w[7] >> 56), (k->w[7] >> 24) & 0xffffffffULL);
	h = (h ^ (h >> 32)) * FLOW_SEED;
	return h >> 32;
}

/* encap::inner::port_in_range: the hash mapped into [lo, hi]. */
static __always_inline __u16 port_in_range(__u32 hash, __u16 lo, __u16 hi)
{
	__u64 span = (__u64)(hi - lo) + 1;
	return lo + (__u16)(((__u64)hash * span) >> 32);
}

/* Writes the flow label `hash` gives (its low 20 bits, as the engine's
 * template sets it) into an IPv6 header's version/class/label bytes,
 * keeping the traffic class's low nibble already in vtf[1]'s high half. */
static __always_inline void set_flow_label(__u8 *vtf, __u32 hash)
{
	vtf[1] = (vtf[1] & 0xf0) | ((hash >> 16) & 0x0f);
	vtf[2] = hash >> 8;
	vtf[3] = hash;
}

/* What an encapsulation takes from the frame: everything else is the entry's. */
struct outer {
	__u32 hash; /* the inner flow's hash (flow_hash) */
	__u32 len; /* the frame's length before encapsulation */
	__u16 proto; /* its EtherType, network order (the protocol of L3 GRE) */
	__u32 sum; /* TF_UDP_CSUM: the frame's sum as sent (frame_sum) */
	__u8 tos;  /* outer TOS or traffic class */
	__u8 ttl;  /* outer TTL or hop limit */
	__u8 df;
};

/* An encapsulation's result when the frame is ready to send. */
#define TIER_SENT -2

static __always_inline void rewrite_macs(struct ethhdr *eth, const struct tier_entry *e)
{
	if (e->flags & TF_SET_DST)
		copy_to_frame(eth->h_dest, e->eth_dst, 6);
	if (e->flags & TF_SET_SRC)
		copy_to_frame(eth->h_source, e->eth_src, 6);
}

/* The per-packet fields of an outer IPv4 header copied from entry `e`:
 * TOS, total length, identification (this CPU's next), DF and TTL, and
 * the header checksum, incremental from the sum of the constant words the
 * entry holds (TOS is the low byte of its word, TTL the high byte of its
 * own). */
static __always_inline void patch_ipv4(struct iphdr *oip, const struct tier_entry *e,
				       const struct outer *o, __u16 total, __u32 *ident)
{
	__u16 id = ++*ident;
	__u16 frag = o->df ? 0x4000 : 0;
	oip->tos = o->tos;
	oip->tot_len = bpf_htons(total);
	oip->id = bpf_htons(id);
	oip->frag_off = bpf_htons(frag);
	oip->ttl = o->ttl;
	__u32 sum = (__u32)e->ip_sum + o->tos + total + id + frag + ((__u32)o->ttl << 8);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	oip->check = bpf_htons((__u16)~sum);
}

/* Moves the frame's start back by `len` (a constant) and writes the
 * entry's outer header there, the inner MACs rewritten as the entry says:
 * the new start, bounded for `len` bytes and an inner Ethernet header; NULL
 * with the frame unchanged if there is no room (counted). */
static __always_inline void *push_header(struct xdp_md *ctx, const struct tier_entry *e,
					 const int len)
{
	if (bpf_xdp_adjust_head(ctx, -len)) {
		count(ST_TIER_NO_ROOM, 0);
		return NULL;
	}
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (data + len + sizeof(struct ethhdr) > end) {
		/* Cannot happen (the frame was at least an Ethernet header), but
		 * the verifier wants the bound: put the frame back as it was. */
		bpf_xdp_adjust_head(ctx, len);
		return NULL;
	}
	rewrite_macs(data + len, e);
	copy_to_frame(data, e->hdr, len);
	return data;
}

/* VXLAN over IPv4: the entry's header in front of the frame, its per-packet
 * fields patched (the IPv4 header checksum incremental from the constant
 * words' sum; the UDP checksum if the tunnel sends one). TIER_SENT, or
 * TIER_MISS with the frame unchanged. */
static __always_inline int encap_vxlan4(struct xdp_md *ctx, const struct tier_entry *e,
					const struct outer *o)
{
	__u32 zero = 0;
	__u16 total = o->len + VXLAN4_HDR_LEN - sizeof(struct ethhdr);
	__u32 *ident = bpf_map_lookup_elem(&tier_ident, &zero);
	if (!ident)
		return TIER_MISS;
	void *data = push_header(ctx, e, VXLAN4_HDR_LEN);
	if (!data)
		return TIER_MISS;
	struct iphdr *oip = data + sizeof(struct ethhdr);
	patch_ipv4(oip, e, o, total, ident);
	struct udphdr *udp = (void *)(oip + 1);
	__u16 l4_len = total - sizeof(struct iphdr);
	__u16 sport = port_in_range(o->hash, e->sport_min, e->sport_max);
	udp->source = bpf_htons(sport);
	udp->len = bpf_htons(l4_len);
	if (e->flags & TF_UDP_CSUM)
		udp->check = bpf_htons(udp_csum(e->udp_sum, l4_len, o->sum + sport));
	return TIER_SENT;
}

/* VXLAN over IPv6: as encap_vxlan4, with the traffic class (DSCP, ECN) and
 * hop limit patched beside the flow's label, and the UDP checksum IPv6
 * requires. */
static __always_inline int encap_vxlan6(struct xdp_md *ctx, const struct tier_entry *e,
					const struct outer *o)
{
	__u16 l4_len = o->len + VXLAN6_HDR_LEN - sizeof(struct ethhdr) - sizeof(struct ipv6hdr);
	void *data = push_header(ctx, e, VXLAN6_HDR_LEN);
	if (!data)
		return TIER_MISS;
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	__u8 *vtf = (void *)ip6; /* version, traffic class, flow label */
	vtf[0] = 0x60 | (o->tos >> 4);
	vtf[1] = (__u8)(o->tos << 4);
	set_flow_label(vtf, o->hash);
	ip6->payload_len = bpf_htons(l4_len);
	ip6->hop_limit = o->ttl;
	struct udphdr *udp = (void *)(ip6 + 1);
	__u16 sport = port_in_range(o->hash, e->sport_min, e->sport_max);
	udp->source = bpf_htons(sport);
	udp->len = bpf_htons(l4_len);
	udp->check = bpf_htons(udp_csum(e->udp_sum, l4_len, o->sum + sport));
	return TIER_SENT;
}

/* Copies the entry's outer header (`len` bytes, one of the lengths a GRE
 * header over IPv4 or IPv6 has: without options, with a key or a checksum,
 * with both) to the start of the frame; 0, or -1 if it cannot. */
static __always_inline int copy_gre_hdr(void *data, void *end, const struct tier_entry *e,
					__u32 len)
{
#define GRE_HDR_CASE(n)                                                            \
	case n:                                                                    \
		if (data + (n) > end)                                              \
			return -1;                                                 \
		copy_to_frame(data, e->hdr, (n));                                  \
		return 0;
	switch (len) {
		GRE_HDR_CASE(38)
		GRE_HDR_CASE(42)
		GRE_HDR_CASE(46)
		GRE_HDR_CASE(58)
		GRE_HDR_CASE(62)
		GRE_HDR_CASE(66)
	}
#undef GRE_HDR_CASE
	return -1;
}

/* GRE over IPv4 or IPv6 (RFC 2784, 2890 without sequence numbers): gretap
 * and NVGRE carry the frame, L3 GRE its IP packet with the protocol set
 * from its EtherType. The outer IP header is patched as VXLAN's is; the GRE
 * checksum, if sent, is its constant words' sum plus the payload's (no
 * zero-to-ones rule: that is UDP's). TIER_SENT, or TIER_MISS with the frame
 * unchanged. */
static __always_inline int encap_gre(struct xdp_md *ctx, const struct tier_entry *e,
				     const struct outer *o)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	int l3 = e->kind == KIND_GRE_L3;
	int v6 = e->hdr[12] == 0x86;
	__u32 hl = e->hdr_len;
	__u32 plen = o->len - (l3 ? sizeof(struct ethhdr) : 0); /* what follows the header */
	int grow = hl - (l3 ? sizeof(struct ethhdr) : 0);
	__u8 macs[12];
	__u32 zero = 0;
	__u32 *ident = bpf_map_lookup_elem(&tier_ident, &zero);
	if (!ident || grow < 0 || grow > VXLAN6_HDR_LEN || data + 12 > end)
		return TIER_MISS;
	/* The frame's MACs are rewritten in place (its start moves below);
	 * put back if the frame must leave unchanged. */
	__builtin_memcpy(macs, data, 12);
	if (!l3)
		rewrite_macs(data, e);
	int moved = !bpf_xdp_adjust_head(ctx, -grow);
	/* (The helper invalidates every packet pointer, whatever it returns.) */
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (!moved) {
		if (data + 12 <= end)
			__builtin_memcpy(data, macs, 12);
		return count(ST_TIER_NO_ROOM, TIER_MISS);
	}
	__u32 l4 = v6 ? sizeof(struct ethhdr) + sizeof(struct ipv6hdr)
		      : sizeof(struct ethhdr) + sizeof(struct iphdr);
	/* Cannot fail (a tier frame is longer than any of these), but the
	 * verifier wants the bounds. */
	if (copy_gre_hdr(data, end, e, hl) || data + VXLAN6_HDR_LEN > end)
		goto back;
	if (v6) {
		struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
		__u8 *vtf = (void *)ip6;
		vtf[0] = 0x60 | (o->tos >> 4);
		vtf[1] = (__u8)(o->tos << 4);
		set_flow_label(vtf, o->hash);
		ip6->payload_len = bpf_htons(plen + hl - l4);
		ip6->hop_limit = o->ttl;
	} else {
		__u16 total = plen + hl - sizeof(struct ethhdr);
		patch_ipv4(data + sizeof(struct ethhdr), e, o, total, ident);
	}
	__u16 *gre = data + l4; /* flags, protocol, [checksum, reserved], ... */
	if (l3)
		gre[1] = o->proto;
	if (e->flags & TF_UDP_CSUM) {
		__u32 sum = (__u32)e->udp_sum + (l3 ? bpf_ntohs(o->proto) : 0) + o->sum;
		sum = (sum & 0xffff) + (sum >> 16);
		sum = (sum & 0xffff) + (sum >> 16);
		gre[2] = bpf_htons((__u16)~sum);
	}
	return TIER_SENT;
back:
	bpf_xdp_adjust_head(ctx, grow);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + 12 <= end)
		__builtin_memcpy(data, macs, 12);
	return TIER_MISS;
}
