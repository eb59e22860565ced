// SPDX-License-Identifier: GPL-2.0
/* overlayd's tc uplink (`backend = "tc"` on an uplink, io/tc_port.rs): the
 * uplink's ingress program when the uplink carries no XDP program.
 *
 * Why: on a veth uplink, any XDP program turns off the peer's TSO (the
 * kernel's veth_fix_features), so the peer host segments every VXLAN
 * super-frame before the wire and this host must decapsulate one 1.4 KB
 * segment at a time (docs/decisions.md, issue 21: a quarter of the
 * kernel's own B -> A throughput, whatever overlayd does per packet). Here
 * the peer's GSO skbs arrive whole, about 40 segments each.
 *
 * What it decides, once per skb, as overlayd_steer does for a frame:
 * - not the dataplane's (not IP, not a tunnel protocol, not to a local
 *   VTEP, a fragment): the host's stack (TC_ACT_OK);
 * - VXLAN over IPv4 or IPv6 of a flow with a current decap entry (the
 *   same key, tunnel map and generation check as the XDP decap tier): its
 *   outer headers (50 or 70 bytes) are stripped with bpf_skb_adjust_room
 *   (GSO kept: the segments keep their size) and the inner frame is
 *   redirected into the entry's output interface (a workload veth takes
 *   any skb), counted in the entry's slot as its segments;
 * - every other tunnel packet: the port's punt device, whose AF_PACKET
 *   socket feeds the engine (overlayd_tc_port's misses take the same way).
 *
 * Checksums: the engine settles the inner TCP/UDP checksum of what it sends
 * to a workload (CHECK_SETTLE) and drops a wrong one under its name. A GSO
 * skb's is right by construction: a sender's GSO skb is CHECKSUM_PARTIAL
 * (the kernel completes each segment's), and GRO merges only segments whose
 * checksums it verified (and leaves the result CHECKSUM_PARTIAL too). A
 * single frame is walked as the XDP tier walks it; one whose checksum is
 * partial (a sender's offload) or does not verify goes to the engine, which
 * finishes or drops it.
 *
 * Included after tc/tier.bpf.c (tc_key_at, tc_out, tc_port, TC_NOT_TIER). */

#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV4
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#endif
#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV6
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)
#endif

/* tc_decap's verdict for an entry that drops the flow. */
#define TC_TIER_DROP -2

/* csum_to_end for an skb whose bytes from `off` on are linear (the caller
 * pulled them): the same walk, the same bounds. */
__attribute__((noinline)) int skb_csum_to_end(struct __sk_buff *skb, __u32 off)
{
	void *p = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (off > 128)
		return -1;
	return sum_to_end(p + off, end);
}

/* The inner frame's TCP/UDP checksum as settled() judges it, for a single
 * (not GSO) skb whose inner frame starts at `outer` (VXLAN4_HDR_LEN or
 * VXLAN6_HDR_LEN), its L4 header at `l4off`: SETTLED, PARTIAL or UNSETTLED.
 * `k` gives the addresses and protocol. Pulls the whole skb into its
 * linear part. */
static __always_inline int tc_settled(struct __sk_buff *skb, const struct tier_key *k,
				      __u32 outer, __u32 l4off)
{
	__u32 len = skb->len;
	__u8 proto = k->w[7] >> 56;
	if (len > 4096 || l4off > 128 || len < l4off)
		return UNSETTLED;
	if (bpf_skb_pull_data(skb, len))
		return UNSETTLED;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data + outer;
	if ((void *)(eth + 1) > end)
		return UNSETTLED;
	__u32 l4len = len - l4off;
	__u32 psum = proto + l4len;
	/* The IP packet must end where the skb does (no padding). */
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return UNSETTLED;
		if (bpf_ntohs(ip->tot_len) != len - outer - sizeof(*eth))
			return UNSETTLED;
		__u32 sa = k->w[4], da = k->w[6];
		psum += (sa >> 16) + (sa & 0xffff) + (da >> 16) + (da & 0xffff);
	} else {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return UNSETTLED;
		if (bpf_ntohs(ip6->payload_len) != l4len)
			return UNSETTLED;
#pragma unroll
		for (int i = 3; i < 7; i++) {
			__u64 w = k->w[i];
			psum += (w >> 48) + ((w >> 32) & 0xffff) + ((w >> 16) & 0xffff) +
				(w & 0xffff);
		}
	}
	psum = (psum & 0xffff) + (psum >> 16);
	psum = (psum & 0xffff) + (psum >> 16);
	/* Bounded where it is added, or the verifier forgets the bound. */
	__u64 o = l4off;
	asm volatile("" : "+r"(o));
	if (o > 128)
		return UNSETTLED;
	void *l4 = data + o;
	__u16 *csum = l4 + (proto == IPPROTO_TCP ? 16 : 6);
	if ((void *)(csum + 1) > end)
		return UNSETTLED;
	__u16 field = bpf_ntohs(*csum);
	if (proto == IPPROTO_UDP) {
		struct udphdr *u = l4;
		if ((void *)(u + 1) > end || bpf_ntohs(u->len) != l4len)
			return UNSETTLED;
		if (!field)
			return SETTLED;
	} else if (l4len < 20) {
		return UNSETTLED;
	}
	if (field == psum)
		return PARTIAL;
	int seg = skb_csum_to_end(skb, l4off);
	if (seg < 0)
		return UNSETTLED;
	__u32 sum = psum + seg;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum == 0xffff ? SETTLED : UNSETTLED;
}

/* The outer UDP checksum of a single (not GSO) VXLAN skb whose lengths
 * the caller checked, its UDP header at `l4off`, `addrs` the sum of the
 * pseudo-header's addresses: SETTLED if it verifies, else UNSETTLED.
 * Pulls the whole skb into its linear part. */
static __always_inline int tc_outer_settled(struct __sk_buff *skb, __u32 l4off, __u32 addrs)
{
	__u32 len = skb->len;
	if (len > 4096 || bpf_skb_pull_data(skb, len))
		return UNSETTLED;
	int seg = skb_csum_to_end(skb, l4off);
	if (seg < 0)
		return UNSETTLED;
	__u32 sum = addrs + IPPROTO_UDP + (len - l4off) + seg;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum == 0xffff ? SETTLED : UNSETTLED;
}

/* The outer headers of a VXLAN skb addressed to a local VTEP, as tc_decap
 * reads them. */
struct tc_outer {
	struct tier_tunnel_key tk;
	__u32 l4off; /* the UDP header's offset */
	__u32 addrs; /* the pseudo-header's addresses, summed */
	__u16 ucheck;
	__u8 ecn;
};

/* Reads the outer IPv4 (`v6` = 0) or IPv6 headers, UDP and VXLAN of a
 * linear-enough skb into `o`; 0, or -1 if the packet is not one the tier
 * takes (counted). A canonical packet only, as tier_decap takes: no VLAN
 * tag, no IPv4 options or fragments, no IPv6 extension header, lengths
 * that agree, the IPv4 header checksum right, VXLAN flags exactly I. */
static __always_inline int tc_outer(struct __sk_buff *skb, int v6, struct tc_outer *o)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 len = skb->len;
	__u32 hdr = v6 ? VXLAN6_HDR_LEN : VXLAN4_HDR_LEN;
	struct udphdr *u;
	if (v6) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		u = (void *)(ip6 + 1);
		if ((void *)((__u8 *)u + 16) > end || skb->vlan_present)
			return count(ST_TIER_DECAP_PUNT, -1);
		if (eth->h_proto != bpf_htons(ETH_P_IPV6) || ip6->version != 6 ||
		    ip6->nexthdr != IPPROTO_UDP ||
		    bpf_ntohs(ip6->payload_len) != len - sizeof(*eth) - sizeof(*ip6))
			return count(ST_TIER_DECAP_PUNT, -1);
		__builtin_memcpy(o->tk.local, &ip6->daddr, 16);
		__builtin_memcpy(o->tk.remote, &ip6->saddr, 16);
		o->addrs = sum_words(&ip6->saddr, 16);
		o->ecn = (ip6->flow_lbl[0] >> 4) & 3;
	} else {
		struct iphdr *ip = (void *)(eth + 1);
		u = (void *)(ip + 1);
		/* A tag the driver took out of the frame is one the engine judges. */
		if ((void *)((__u8 *)u + 16) > end || skb->vlan_present)
			return count(ST_TIER_DECAP_PUNT, -1);
		if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->version != 4 || ip->ihl != 5 ||
		    (ip->frag_off & bpf_htons(0x3fff)) || ip->protocol != IPPROTO_UDP ||
		    bpf_ntohs(ip->tot_len) != len - sizeof(*eth))
			return count(ST_TIER_DECAP_PUNT, -1);
		if (!ipv4_header_sum_ok(ip))
			return count(ST_TIER_DECAP_PUNT, -1);
		o->tk.local[10] = o->tk.local[11] = o->tk.remote[10] = o->tk.remote[11] = 0xff;
		__builtin_memcpy(&o->tk.local[12], &ip->daddr, 4);
		__builtin_memcpy(&o->tk.remote[12], &ip->saddr, 4);
		o->addrs = sum_words(&ip->saddr, 4);
		o->ecn = ip->tos & 3;
	}
	__u32 *vx = (void *)(u + 1);
	o->l4off = (__u32)((void *)u - data);
	if (bpf_ntohs(u->len) != len - o->l4off || vx[0] != bpf_htonl(0x08000000) ||
	    (vx[1] & bpf_htonl(0xff)) || len < hdr + sizeof(struct ethhdr))
		return count(ST_TIER_DECAP_PUNT, -1);
	o->tk.vni = bpf_ntohl(vx[1]) >> 8;
	o->tk.port = bpf_ntohs(u->dest);
	o->ucheck = u->check;
	return 0;
}

/* Decapsulates a VXLAN skb over IPv4 (`v6` = 0) or IPv6 addressed to a
 * local VTEP (the caller checked that much) if its inner flow has a
 * current decap entry; returns the output interface to redirect it to,
 * TC_TIER_DROP, or TC_NOT_TIER with the skb unchanged (the engine's).
 * `v6` is a constant where it is called: one body per family, as VPP
 * compiles its IPv4 and IPv6 nodes. */
static __always_inline int tc_decap(struct __sk_buff *skb, const struct steer_cfg *c, int v6)
{
	__u32 zero = 0;
	__u32 outer = v6 ? VXLAN6_HDR_LEN : VXLAN4_HDR_LEN;
	/* Outer and inner headers: linear in a GSO skb already. */
	__u32 want = outer + 14 + 40 + 60;
	bpf_skb_pull_data(skb, skb->len < want ? skb->len : want);
	struct tc_outer o = {};
	if (tc_outer(skb, v6, &o))
		return TC_NOT_TIER;
	__u32 len = skb->len;
	__u32 gso_segs = skb->gso_segs;
	__u32 gso_size = skb->gso_size;
	int gso = gso_segs > 1;

	struct tier_tunnel *t = bpf_map_lookup_elem(&tier_tunnels, &o.tk);
	if (!t)
		return count(ST_TIER_NO_TUNNEL, TC_NOT_TIER);
	__u64 *gen = bpf_map_lookup_elem(&tier_gen, &zero);
	if (!gen || t->generation != *gen)
		return count(ST_TIER_STALE, TC_NOT_TIER);
	/* The UDP checksum as the engine judges it (encap/src/decap.rs): a
	 * zero one over IPv6 only if accepted (RFC 6935/6936), else the
	 * engine's drop; a non-zero one verified over IPv6, and over IPv4
	 * unless configured not to be. A GSO skb's is right by construction,
	 * as its inner one is (see the top): the engine too computes each
	 * segment's when it cuts one (io/gso.rs). A single packet's is walked
	 * as the XDP tier walks it, whatever the skb's checksum state: a veth
	 * peer's single packets are CHECKSUM_NONE or PARTIAL (nothing
	 * verified), and the engine ignores the state too. One that does not
	 * verify (wrong, or computed by the sender for an inner checksum it
	 * left partial) is the engine's. */
	if (!o.ucheck) {
		if (v6 && !(t->flags & TT_V6_ZERO_OK))
			return count(ST_TIER_DECAP_PUNT, TC_NOT_TIER);
	} else if ((v6 || !(t->flags & TT_V4_CSUM_UNCHECKED)) && !gso) {
		/* A field that holds the pseudo-header's sum is what a veth
		 * peer's kernel leaves partial: it would not verify, and the
		 * engine, which reads the skb's state from the virtio-net
		 * header, finishes or refuses it. Punted without the walk,
		 * which would cost a pass over every such segment in the
		 * receiving softirq for the same verdict. */
		__u32 ps = o.addrs + IPPROTO_UDP + (len - o.l4off);
		ps = (ps & 0xffff) + (ps >> 16);
		ps = (ps & 0xffff) + (ps >> 16);
		if (bpf_ntohs(o.ucheck) == ps ||
		    tc_outer_settled(skb, o.l4off, o.addrs) != SETTLED)
			return count(ST_TIER_DECAP_CSUM, TC_NOT_TIER);
	}

	struct tier_key k = {};
	__u32 hdr = 0, l4off = 0;
	__u8 tos = 0, ttl = 0, df = 0;
	__u64 w0 = ((__u64)(c->in_port & 0xffff) << 48) | ((__u64)t->tag << 32) | o.tk.vni;
	if (tc_key_at(skb, outer, w0, &k, &hdr, &l4off, &tos, &ttl, &df))
		return TC_NOT_TIER; /* no flow key the tier holds (ARP, ICMP, ...) */
	struct tier_entry *e = tier_lookup(&k);
	if (!e)
		return count(ST_TIER_MISS, TC_NOT_TIER);
	if (e->generation != *gen)
		return count(ST_TIER_STALE, TC_NOT_TIER);
	/* The engine decapsulates into output and drop entries only. */
	if (e->action != TIER_OUTPUT && e->action != TIER_DROP)
		return TC_NOT_TIER;
	__u32 inner = len - outer;
	__u32 seg_len = gso ? hdr + gso_size : inner;
	if (seg_len > e->max_len)
		return count(ST_TIER_TOO_LONG, TC_NOT_TIER);
	if (ecn_decap(o.ecn, tos & 3) != (tos & 3))
		return count(ST_TIER_ECN, TC_NOT_TIER);
	__u32 slot = e->slot;
	struct tier_count *n = bpf_map_lookup_elem(&tier_counts, &slot);
	if (!n)
		return TC_NOT_TIER;
	__u32 ifindex = 0;
	if (e->action == TIER_OUTPUT) {
		__u32 tx = e->tx_port;
		__u32 *out = bpf_map_lookup_elem(&tc_out, &tx);
		if (!out || !*out)
			return count(ST_TIER_NO_TX, TC_NOT_TIER);
		ifindex = *out;
	}
	/* Everything read from the entry before the skb may move. */
	__u8 flags = e->flags, checks = e->checks;
	__u8 mac_dst[6], mac_src[6];
	copy_mac(mac_dst, e->eth_dst);
	copy_mac(mac_src, e->eth_src);
	__u32 segs = gso ? gso_segs : 1;
	if (e->action == TIER_OUTPUT && (checks & CHECK_SETTLE) && !gso) {
		int st = tc_settled(skb, &k, outer, l4off);
		if (st == PARTIAL)
			return count(ST_TIER_PARTIAL, TC_NOT_TIER);
		if (st == UNSETTLED)
			return count(ST_TIER_UNSETTLED, TC_NOT_TIER);
	}
	if (e->action == TIER_DROP) {
		n->packets += segs;
		n->bytes += inner + (__u64)(segs - 1) * hdr;
		count(ST_TC_HIT, 0);
		return TC_TIER_DROP;
	}

	struct ethhdr ieth;
	if (bpf_skb_load_bytes(skb, outer, &ieth, sizeof(ieth)))
		return count(ST_TIER_DECAP_PUNT, TC_NOT_TIER);
	if (flags & TF_SET_DST)
		copy_mac(ieth.h_dest, mac_dst);
	if (flags & TF_SET_SRC)
		copy_mac(ieth.h_source, mac_src);
	/* skb->protocol follows the inner packet's family where it changes. */
	__u64 adj = BPF_F_ADJ_ROOM_FIXED_GSO;
	if (!v6 && ieth.h_proto == bpf_htons(ETH_P_IPV6))
		adj |= BPF_F_ADJ_ROOM_DECAP_L3_IPV6;
	if (v6 && ieth.h_proto == bpf_htons(ETH_P_IP))
		adj |= BPF_F_ADJ_ROOM_DECAP_L3_IPV4;
	/* Removes the outer IP header, UDP, VXLAN and the inner Ethernet
	 * header after the outer Ethernet header (50 bytes over IPv4, 70 over
	 * IPv6), which the inner one then overwrites. The helper checks
	 * everything before it moves a byte: a refusal leaves the skb as it
	 * was, for the engine. */
	if (bpf_skb_adjust_room(skb, -(int)outer, BPF_ADJ_ROOM_MAC, adj))
		return count(ST_TIER_DECAP_PUNT, TC_NOT_TIER);
	if (bpf_skb_store_bytes(skb, 0, &ieth, sizeof(ieth), 0))
		return count(ST_TC_LOST, TC_DROPPED);
	n->packets += segs;
	n->bytes += inner + (__u64)(segs - 1) * hdr;
	count(ST_TC_HIT, 0);
	return ifindex;
}

/* On the uplink's ingress: the steering decision of overlayd_steer, for an
 * skb, with the decap tier in front of the punt device. */
SEC("classifier")
int overlayd_tc_uplink(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct steer_cfg *c = bpf_map_lookup_elem(&cfg, &zero);
	struct tc_port_cfg *p = bpf_map_lookup_elem(&tc_port, &zero);
	if (!c || !p || !p->punt_ifindex)
		return count(ST_PASS_NO_SOCKET, TC_ACT_OK);
	bpf_skb_pull_data(skb, skb->len < 128 ? skb->len : 128);
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u16 proto;
	void *l3;
	if (!eth_l3(data, end, &proto, &l3))
		return count(ST_PASS_NOT_IP, TC_ACT_OK);
	__u8 l4proto;
	void *l4h;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > end)
			return count(ST_PASS_NOT_IP, TC_ACT_OK);
		if (ip->protocol != IPPROTO_UDP && ip->protocol != IPPROTO_GRE)
			return count(ST_PASS_NOT_TUNNEL, TC_ACT_OK);
		__u32 dst = ip->daddr;
		if (!bpf_map_lookup_elem(&vteps_v4, &dst))
			return count(ST_PASS_NOT_LOCAL_VTEP, TC_ACT_OK);
		if (ip->frag_off & bpf_htons(0x3fff))
			return count(ST_PASS_FRAGMENT, TC_ACT_OK);
		l4proto = ip->protocol;
		if (ip->ihl < 5)
			goto punt; /* malformed, addressed to us: the engine names the drop */
		l4h = l3 + ip->ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > end)
			return count(ST_PASS_NOT_IP, TC_ACT_OK);
		l4h = ip6 + 1;
		int nh = ipv6_upper(ip6->nexthdr, &l4h, end);
		if (nh != IPPROTO_UDP && nh != IPPROTO_GRE)
			return count(ST_PASS_NOT_TUNNEL, TC_ACT_OK);
		struct in6_addr dst = ip6->daddr;
		if (!bpf_map_lookup_elem(&vteps_v6, &dst))
			return count(ST_PASS_NOT_LOCAL_VTEP, TC_ACT_OK);
		l4proto = nh;
	} else {
		return count(ST_PASS_NOT_IP, TC_ACT_OK);
	}
	if (l4proto == IPPROTO_GRE && !c->gre)
		return count(ST_PASS_NOT_TUNNEL, TC_ACT_OK);
	if (l4proto == IPPROTO_UDP) {
		struct udphdr *u = l4h;
		/* Malformed but addressed to us: the engine names the drop. */
		if ((void *)(u + 1) <= end && !vxlan_port(c, u->dest))
			return count(ST_PASS_NOT_TUNNEL, TC_ACT_OK);
		if ((void *)(u + 1) <= end && c->tier) {
			int r = proto == bpf_htons(ETH_P_IP) ? tc_decap(skb, c, 0) : tc_decap(skb, c, 1);
			if (r == TC_TIER_DROP || r == TC_DROPPED)
				return TC_ACT_SHOT;
			if (r != TC_NOT_TIER)
				return bpf_redirect(r, 0);
		}
	}
punt:
	count(ST_REDIRECTED, 0);
	return bpf_redirect(p->punt_ifindex, BPF_F_INGRESS);
}
