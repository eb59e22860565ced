// SPDX-License-Identifier: GPL-2.0
/* The tier's decapsulation on an uplink: canonical VXLAN and GRE packets
 * of tunnels the tier knows, stripped and looked up as a workload's frame.
 * Part of steer.bpf.c's compilation unit, included there in order: it
 * uses what the headers before it define. */

/* Decapsulation in the tier, for a UDP packet to a VXLAN port of a local
 * VTEP or a GRE packet to one (steering checked that much; `proto` says
 * which): if it is a canonical VXLAN or GRE packet of a tunnel the tier
 * knows, with nothing the engine would check that the tier does not, its
 * outer headers are stripped (over L3 GRE an Ethernet header made of the
 * outer MACs and the GRE protocol put in front, as encap::decap does) and
 * the inner frame is looked up as a workload port's frame is (tier(), with
 * the tunnel in the key). Its action, or TIER_MISS with the frame
 * unchanged. Outer VLAN tags, IPv4 options and fragments, IPv6 extension
 * headers, trailing bytes, reserved VXLAN bits, GRE sequence numbers,
 * reserved GRE bits, a GRE checksum the tunnel does not send (or the
 * reverse), a payload of the other kind, and UDP or GRE checksums that do
 * not verify all miss, so the engine judges them and every drop keeps its
 * named reason. */
static __always_inline int tier_decap(struct xdp_md *ctx, const struct steer_cfg *c, __u8 proto)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct tier_tunnel_key tk = {};
	struct decap d = {};
	void *l4;
	__u32 len = end - data;
	__u32 l4off, l4len;
	__u32 addrs; /* the pseudo-header's addresses, summed */
	int v6;

	if ((void *)(eth + 1) > end)
		return TIER_MISS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return TIER_MISS;
		if (ip->version != 4 || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)) ||
		    ip->protocol != proto || bpf_ntohs(ip->tot_len) != len - sizeof(*eth))
			return count(ST_TIER_DECAP_PUNT, TIER_MISS);
		if (!ipv4_header_sum_ok(ip))
			return count(ST_TIER_DECAP_PUNT, TIER_MISS);
		tk.local[10] = tk.local[11] = tk.remote[10] = tk.remote[11] = 0xff;
		__builtin_memcpy(&tk.local[12], &ip->daddr, 4);
		__builtin_memcpy(&tk.remote[12], &ip->saddr, 4);
		addrs = sum_words(&ip->saddr, 4);
		d.ecn = ip->tos & 3;
		l4len = len - sizeof(*eth) - sizeof(*ip);
		l4 = ip + 1;
		l4off = sizeof(*eth) + sizeof(*ip);
		v6 = 0;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return TIER_MISS;
		if (ip6->version != 6 || ip6->nexthdr != proto ||
		    bpf_ntohs(ip6->payload_len) != len - sizeof(*eth) - sizeof(*ip6))
			return count(ST_TIER_DECAP_PUNT, TIER_MISS);
		__builtin_memcpy(tk.local, &ip6->daddr, 16);
		__builtin_memcpy(tk.remote, &ip6->saddr, 16);
		addrs = sum_words(&ip6->saddr, 16);
		d.ecn = (ip6->flow_lbl[0] >> 4) & 3;
		l4len = len - sizeof(*eth) - sizeof(*ip6);
		l4 = ip6 + 1;
		l4off = sizeof(*eth) + sizeof(*ip6);
		v6 = 1;
	} else {
		return count(ST_TIER_DECAP_PUNT, TIER_MISS); /* tagged: the engine's */
	}
	struct tier_tunnel *t;
	__u32 outer;    /* bytes stripped off the front */
	__be16 l3 = 0;  /* L3 GRE: the EtherType of the Ethernet header made up */
	__u32 zero = 0;
	__u64 *gen = bpf_map_lookup_elem(&tier_gen, &zero);
	if (proto == IPPROTO_UDP) {
		/* UDP, then VXLAN: flags exactly I, every reserved bit zero. */
		struct udphdr *u = l4;
		__u32 *vx = (void *)(u + 1);
		if ((void *)(vx + 2) > end)
			return TIER_MISS;
		outer = v6 ? VXLAN6_HDR_LEN : VXLAN4_HDR_LEN;
		if (bpf_ntohs(u->len) != l4len || vx[0] != bpf_htonl(0x08000000) ||
		    (vx[1] & bpf_htonl(0xff)) || len < outer + sizeof(struct ethhdr))
			return count(ST_TIER_DECAP_PUNT, TIER_MISS);
		tk.vni = bpf_ntohl(vx[1]) >> 8;
		tk.port = bpf_ntohs(u->dest);
		t = bpf_map_lookup_elem(&tier_tunnels, &tk);
		if (!t)
			return count(ST_TIER_NO_TUNNEL, TIER_MISS);
		if (!gen || t->generation != *gen)
			return count(ST_TIER_STALE, TIER_MISS);
		/* The UDP checksum as the engine judges it (encap/src/decap.rs): a
		 * zero one over IPv6 only if accepted, else the engine's drop; a
		 * non-zero one verified over IPv6, and over IPv4 unless configured
		 * not to be. One that does not verify is the engine's: it drops it
		 * under its name, or finishes it first if a peer's offload left it
		 * partial (io/checksums.rs). */
		if (!u->check) {
			if (v6 && !(t->flags & TT_V6_ZERO_OK))
				return count(ST_TIER_DECAP_PUNT, TIER_MISS);
		} else if (v6 || !(t->flags & TT_V4_CSUM_UNCHECKED)) {
			int seg = csum_to_end(ctx, l4off);
			if (seg < 0)
				return count(ST_TIER_DECAP_PUNT, TIER_MISS);
			__u32 sum = addrs + IPPROTO_UDP + l4len + seg;
			sum = (sum & 0xffff) + (sum >> 16);
			sum = (sum & 0xffff) + (sum >> 16);
			if (sum != 0xffff)
				return count(ST_TIER_DECAP_CSUM, TIER_MISS);
		}
	} else {
		/* GRE: version 0, no flag but C and K (S, routing and the bits
		 * RFC 2784 says to ignore are the engine's), then the key. */
		__u16 *g = l4;
		if ((void *)(g + 2) > end)
			return TIER_MISS;
		__u16 fv = bpf_ntohs(g[0]);
		if (fv & GRE_S)
			return count(ST_TIER_GRE_SEQ, TIER_MISS);
		if (fv & ~(GRE_C | GRE_K))
			return count(ST_TIER_DECAP_PUNT, TIER_MISS);
		__u32 ghl = 4 + ((fv & GRE_C) ? 4 : 0) + ((fv & GRE_K) ? 4 : 0);
		if (fv & GRE_K) {
			__u32 *key = l4 + ghl - 4;
			if ((void *)(key + 1) > end)
				return TIER_MISS;
			tk.vni = bpf_ntohl(*key);
			tk.kind = TK_GRE_KEY;
		} else {
			tk.kind = TK_GRE;
		}
		t = bpf_map_lookup_elem(&tier_tunnels, &tk);
		if (!t)
			return count(ST_TIER_NO_TUNNEL, TIER_MISS);
		if (!gen || t->generation != *gen)
			return count(ST_TIER_STALE, TIER_MISS);
		/* The entry's outer length is the tunnel's own: a checksum it
		 * does not send (or none where it does) changes it. */
		if (!(fv & GRE_C) != !(t->flags & TT_GRE_CSUM))
			return count(ST_TIER_DECAP_PUNT, TIER_MISS);
		/* The payload the tunnel carries, else the engine's drop
		 * (gre_payload_mismatch, gre_unknown_protocol). */
		__be16 p = g[1];
		if (t->flags & TT_GRE_L3) {
			if (p != bpf_htons(ETH_P_IP) && p != bpf_htons(ETH_P_IPV6))
				return count(ST_TIER_DECAP_PUNT, TIER_MISS);
			l3 = p;
		} else if (p != bpf_htons(0x6558)) {
			return count(ST_TIER_DECAP_PUNT, TIER_MISS);
		}
		outer = l4off + ghl;
		/* An L3 payload needs its IP header, an Ethernet one its own. */
		if (len < outer + sizeof(struct ethhdr))
			return count(ST_TIER_DECAP_PUNT, TIER_MISS);
		if ((fv & GRE_C) && (t->flags & TT_GRE_VERIFY)) {
			int seg = csum_to_end(ctx, l4off);
			if (seg < 0)
				return count(ST_TIER_DECAP_PUNT, TIER_MISS);
			if (seg != 0xffff)
				return count(ST_TIER_DECAP_CSUM, TIER_MISS);
		}
	}
	d.w0 = ((__u64)(c->in_port & 0xffff) << 48) | ((__u64)t->tag << 32) | tk.vni;
	/* L3 GRE keeps 14 bytes of the outer headers for the Ethernet header
	 * it makes up; what they held is put back if the frame misses. */
	__u32 strip = l3 ? outer - sizeof(struct ethhdr) : outer;
	__u8 macs[12], saved[14];
	if (l3) {
		data = (void *)(long)ctx->data;
		end = (void *)(long)ctx->data_end;
		if (data + sizeof(macs) > end || data + strip + sizeof(saved) > end)
			return TIER_MISS;
		__builtin_memcpy(macs, data, sizeof(macs));
		__builtin_memcpy(saved, data + strip, sizeof(saved));
	}
	if (bpf_xdp_adjust_head(ctx, strip))
		return TIER_MISS;
	if (l3) {
		data = (void *)(long)ctx->data;
		end = (void *)(long)ctx->data_end;
		struct ethhdr *ie = data;
		if ((void *)(ie + 1) > end) {
			bpf_xdp_adjust_head(ctx, -(int)strip); /* cannot happen: checked above */
			return TIER_MISS;
		}
		__builtin_memcpy(ie->h_dest, macs, 6);
		__builtin_memcpy(ie->h_source, macs + 6, 6);
		ie->h_proto = l3;
	}
	int r = tier(ctx, c, &d);
	if (r != TIER_MISS)
		return r;
	if (l3) {
		data = (void *)(long)ctx->data;
		end = (void *)(long)ctx->data_end;
		if (data + sizeof(saved) <= end)
			__builtin_memcpy(data, saved, sizeof(saved));
	}
	/* Moving the start back restores the frame: the rest was not written. */
	if (bpf_xdp_adjust_head(ctx, -(int)strip))
		return XDP_ABORTED; /* cannot happen: the room was just there */
	return TIER_MISS;
}
