// SPDX-License-Identifier: GPL-2.0
/* The tier's decision for a frame: its key, the entry found, the checks
 * that leave a frame to the engine, and the entry's action.
 * Part of steer.bpf.c's compilation unit, included there in order: it
 * uses what the headers before it define. */

/* What the outer headers of a decapsulated frame give the tier. */
struct decap {
	__u64 w0;   /* key word 0: uplink, tunnel tag, VNI */
	__u8 ecn;   /* the outer ECN field */
};

/* RFC 6040 as encap::ecn::decap: the inner ECN field after
 * decapsulation, or 4 where the engine drops (CE over Not-ECT). */
static __always_inline __u8 ecn_decap(__u8 outer, __u8 inner)
{
	if (inner == 0)
		return outer == 3 ? 4 : 0;
	if (outer == 3)
		return 3;
	if (inner == 2 && outer == 1)
		return 1;
	return inner;
}

/* True if the tc tier (tc/tier.bpf.c) can do what entry `e` does to an skb:
 * VXLAN over IPv4 without a UDP checksum. */
static __always_inline int tc_takes(const struct tier_entry *e)
{
	return e->action == TIER_ENCAP && e->kind == KIND_VXLAN &&
	       e->hdr_len == VXLAN4_HDR_LEN && !(e->flags & TF_UDP_CSUM);
}

/* What the software path's checksum settling (encap::settle) makes of a
 * frame the tier would pass on.
 * With `exact`, the IP packet ends where the frame does. */
#define SETTLED 0   /* a TCP/UDP checksum that verifies, or UDP without one */
#define PARTIAL 1   /* the field holds the pseudo-header's sum (an offload's) */
#define UNSETTLED 2 /* wrong, or lengths the tier does not walk (padding) */
static __always_inline int settled(struct xdp_md *ctx, __u8 proto, void *l4, __u32 l4off,
				   __u32 len, int exact, __u16 field, __u16 psum)
{
	__u32 l4len = len - l4off;
	if (!exact)
		return UNSETTLED;
	if (proto == IPPROTO_UDP) {
		struct udphdr *u = l4;
		if (bpf_ntohs(u->len) != l4len)
			return UNSETTLED;
		if (!field)
			return SETTLED;
	} else if (l4len < 20) {
		return UNSETTLED; /* the engine's l4_truncated */
	}
	/* Partial without the walk: a complete checksum equal to the sum is
	 * judged so too, at the cost of the slow path (or the tc tier, which
	 * leaves a complete checksum alone). */
	if (field == psum)
		return PARTIAL;
	int seg = csum_to_end(ctx, l4off);
	if (seg < 0)
		return UNSETTLED;
	__u32 sum = (__u32)psum + seg;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum == 0xffff ? SETTLED : UNSETTLED;
}

/* The checksum a partial field (the pseudo-header's sum `psum`, as an
 * offload leaves it) finishes to, or -1 if the tier leaves the frame to the
 * software path: lengths it does not walk (padding, a UDP length short of
 * the datagram, over 4 KiB). A field that already verifies as complete (a
 * 1 in 65536 coincidence) stays as it is, as encap::settle, which verifies
 * before it finishes, leaves it. The field holds the pseudo-header's sum,
 * so the segment's sum, field included, is the sum the checksum
 * completes. */
static __always_inline int finish(struct xdp_md *ctx, __u8 proto, void *l4, __u32 l4off,
				  __u32 len, int exact, __u16 psum)
{
	void *end = (void *)(long)ctx->data_end;
	if (!exact)
		return -1;
	if (proto == IPPROTO_UDP) {
		struct udphdr *u = l4;
		if ((void *)(u + 1) > end || bpf_ntohs(u->len) != len - l4off)
			return -1;
	} else if (len - l4off < 20) {
		return -1;
	}
	int seg = csum_to_end(ctx, l4off);
	if (seg < 0)
		return -1;
	__u32 sum = (__u32)psum + seg;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	if (sum == 0xffff)
		return psum;
	__u16 c = ~(__u16)seg;
	/* A computed zero goes out as all ones: for UDP zero means none. */
	return c ? c : 0xffff;
}

/* The tier: the frame's action if an entry of the current generation has
 * its key, else TIER_MISS with the frame unchanged. `d`: the frame was
 * decapsulated (its outer headers are gone), NULL on a workload port. */
static __always_inline int tier(struct xdp_md *ctx, const struct steer_cfg *c,
				const struct decap *d)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct tier_key k = {};
	__u8 proto, tos, ttl, df;
	__u32 psum; /* the L4 pseudo-header's sum, without the protocol */
	void *l4;
	__u32 flen = end - data, l4off;
	int exact; /* the IP packet ends where the frame does */

	if ((void *)(eth + 1) > end)
		return TIER_MISS;
	k.w[0] = d ? d->w0 : (__u64)(c->in_port & 0xffff) << 48;
	k.w[1] = mac48(eth->h_dest) << 16; /* untagged: VLAN field 0 */
	k.w[2] = (mac48(eth->h_source) << 16) | bpf_ntohs(eth->h_proto);
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return TIER_MISS;
		/* Options and fragments: the engine's key would differ (or its
		 * ports be absent); they stay with the engine. */
		if (ip->version != 4 || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)))
			return TIER_MISS;
		proto = ip->protocol;
		/* IPv4 as ::ffff:a.b.c.d, as the engine's key holds it. */
		k.w[4] = 0x0000ffff00000000ULL | bpf_ntohl(ip->saddr);
		k.w[6] = 0x0000ffff00000000ULL | bpf_ntohl(ip->daddr);
		tos = ip->tos;
		ttl = ip->ttl;
		df = (ip->frag_off & bpf_htons(0x4000)) != 0;
		__u32 sa = bpf_ntohl(ip->saddr), da = bpf_ntohl(ip->daddr);
		psum = (sa >> 16) + (sa & 0xffff) + (da >> 16) + (da & 0xffff) +
		       (__u16)(bpf_ntohs(ip->tot_len) - sizeof(*ip));
		l4 = ip + 1;
		l4off = sizeof(*eth) + sizeof(*ip);
		exact = bpf_ntohs(ip->tot_len) == flen - sizeof(*eth);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return TIER_MISS;
		if (ip6->version != 6)
			return TIER_MISS;
		/* An extension header is a next header other than TCP or UDP. */
		proto = ip6->nexthdr;
		k.w[3] = be64(&ip6->saddr.s6_addr[0]);
		k.w[4] = be64(&ip6->saddr.s6_addr[8]);
		k.w[5] = be64(&ip6->daddr.s6_addr[0]);
		k.w[6] = be64(&ip6->daddr.s6_addr[8]);
		tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
		ttl = ip6->hop_limit;
		df = 1; /* the engine's inherit rule: routers never fragment IPv6 */
		psum = bpf_ntohs(ip6->payload_len);
		l4off = sizeof(*eth) + sizeof(*ip6);
		exact = bpf_ntohs(ip6->payload_len) == flen - l4off;
#pragma unroll
		for (int i = 0; i < 8; i++)
			psum += bpf_ntohs(ip6->saddr.in6_u.u6_addr16[i]) +
				bpf_ntohs(ip6->daddr.in6_u.u6_addr16[i]);
		l4 = ip6 + 1;
	} else {
		return TIER_MISS; /* VLAN tags, ARP, ...: the engine's */
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return TIER_MISS;
	__be16 *ports = l4;
	if ((void *)(ports + 2) > end)
		return TIER_MISS;
	/* The checksum field is part of what a tier frame must have (see below). */
	__u16 *csum = l4 + (proto == IPPROTO_TCP ? 16 : 6);
	if ((void *)(csum + 1) > end)
		return TIER_MISS;
	k.w[7] = ((__u64)proto << 56) | ((__u64)bpf_ntohs(ports[0]) << 40) |
		 ((__u64)bpf_ntohs(ports[1]) << 24);

	struct tier_entry *e = tier_lookup(&k);
	if (!e)
		return count(ST_TIER_MISS, TIER_MISS);
	__u32 zero = 0;
	__u64 *gen = bpf_map_lookup_elem(&tier_gen, &zero);
	if (!gen || e->generation != *gen)
		return count(ST_TIER_STALE, TIER_MISS);
	__u32 len = end - data;
	if (len > e->max_len)
		return count(ST_TIER_TOO_LONG, TIER_MISS);
	/* A sender with checksum offload (a container's veth, by default) leaves
	 * the checksum partial: the field holds the pseudo-header's folded sum,
	 * for hardware to finish. XDP does not see that state, and forwarding
	 * the frame as it is would deliver a bad checksum; the software path
	 * finishes it (io/checksums.rs). The software path also drops a wrong
	 * checksum, and lengths that contradict each other, under their names
	 * (encap::settle): on a workload port for every frame, and on the way
	 * from a tunnel to a workload. Where it would settle, the tier verifies
	 * the checksum (a walk of the segment) and leaves every frame it cannot
	 * vouch for to it; elsewhere a field equal to the pseudo-header's sum
	 * is taken for partial (a full checksum equal to it is a 1 in 65536
	 * coincidence that only costs the slow path). */
	psum += proto;
	psum = (psum & 0xffff) + (psum >> 16);
	psum = (psum & 0xffff) + (psum >> 16);
	__u16 field = bpf_ntohs(*csum);
	int st = field == psum ? PARTIAL : SETTLED;
	if (!d || (e->action == TIER_OUTPUT && (e->checks & CHECK_SETTLE)))
		st = settled(ctx, proto, l4, l4off, len, exact, field, psum);
	int finished = -1; /* the finished checksum, written once the frame is sent */
	if (st == PARTIAL) {
		/* The tier finishes it, as the software path would (one walk of
		 * the segment, far cheaper than AF_XDP's copies). One it cannot
		 * sum goes to the tc tier, where the skb still knows its checksum
		 * state, or to AF_XDP. */
		finished = finish(ctx, proto, l4, l4off, len, exact, psum);
		if (finished < 0) {
			if (c->tc_tier && tc_takes(e))
				return count(ST_TIER_TO_TC, XDP_PASS);
			return count(ST_TIER_PARTIAL, TIER_MISS);
		}
	}
	if (st == UNSETTLED)
		return count(ST_TIER_UNSETTLED, TIER_MISS);
	if (d) {
		/* The engine decapsulates into output and drop entries only. */
		if (e->action == TIER_ENCAP)
			return TIER_MISS;
		/* A CE mark to carry into the inner header, or one to drop for:
		 * the engine's (rare; it rewrites or names the drop). */
		if (ecn_decap(d->ecn, tos & 3) != (tos & 3))
			return count(ST_TIER_ECN, TIER_MISS);
	}
	__u32 slot = e->slot;
	struct tier_count *n = bpf_map_lookup_elem(&tier_counts, &slot);
	if (!n)
		return TIER_MISS;
	if (e->action == TIER_DROP) {
		n->packets++;
		n->bytes += len;
		count(ST_TIER_HIT, 0);
		return XDP_DROP;
	}
	/* The output's check and the redirect's target in one lookup: a port
	 * not in tier_tx gives the fallback action (XDP_ABORTED), no target.
	 * A later miss sends the frame to AF_XDP, whose bpf_redirect_map
	 * replaces this target; one that passes it to the stack or drops it
	 * leaves the target unread (only XDP_REDIRECT reads it). */
	if (bpf_redirect_map(&tier_tx, e->tx_port, XDP_ABORTED) != XDP_REDIRECT) {
		/* The tc tier sends skbs, which any interface takes (a veth whose
		 * peer has no NAPI refuses XDP frames): far cheaper than AF_XDP. */
		if (c->tc_tier && tc_takes(e))
			return count(ST_TIER_TO_TC, XDP_PASS);
		return count(ST_TIER_NO_TX, TIER_MISS);
	}
	/* Past the last miss that must leave the frame unchanged (a decapsulated
	 * one is restored by moving its start back, so nothing may be written
	 * before this point): the finished checksum goes in. An encapsulation
	 * that then finds no headroom leaves a frame whose checksum verifies,
	 * which the software path passes as it is. */
	if (finished >= 0) {
		__u16 *f = (void *)(long)ctx->data + l4off + (proto == IPPROTO_TCP ? 16 : 6);
		if ((void *)(f + 1) > (void *)(long)ctx->data_end)
			return TIER_MISS;
		*f = bpf_htons((__u16)finished);
		count(ST_TIER_FINISHED, 0);
	}
	if (e->action == TIER_OUTPUT) {
		if (e->flags & TF_SET_DST)
			copy_to_frame(eth->h_dest, e->eth_dst, 6);
		if (e->flags & TF_SET_SRC)
			copy_to_frame(eth->h_source, e->eth_src, 6);
		return tier_send(n, len);
	}
	if (e->action != TIER_ENCAP)
		return TIER_MISS;

	/* Everything the outer header needs, taken before the frame moves. */
	struct outer o;
	o.tos = (e->flags & TF_DSCP_INHERIT) ? (tos & 0xfc) : (__u8)(e->dscp << 2);
	if (e->flags & TF_ECN_COPY)
		o.tos |= tos & 3;
	o.ttl = (e->flags & TF_TTL_INHERIT) ? ttl : e->ttl;
	o.df = (e->flags & TF_DF_INHERIT) ? df : (e->flags & TF_DF_SET) != 0;
	o.len = len;
	o.hash = flow_hash(&k);
	o.proto = eth->h_proto;
	o.sum = 0;
	if (e->flags & TF_UDP_CSUM) {
		/* What follows the header: the frame, or L3 GRE's IP packet. */
		int sum = e->kind == KIND_GRE_L3 ? csum_to_end(ctx, sizeof(struct ethhdr))
						 : frame_sum(ctx, data, end, e);
		if (sum < 0)
			return count(ST_TIER_TOO_LONG, TIER_MISS);
		o.sum = sum;
	}
	int r;
	if (e->kind != KIND_VXLAN)
		r = encap_gre(ctx, e, &o);
	else if (e->hdr_len == VXLAN6_HDR_LEN)
		r = encap_vxlan6(ctx, e, &o);
	else
		r = encap_vxlan4(ctx, e, &o);
	if (r != TIER_SENT)
		return r;
	return tier_send(n, len);
}
