// SPDX-License-Identifier: GPL-2.0
/* overlayd's tc tier: the skb half of the kernel tier, on a workload port's
 * ingress (clsact).
 *
 * XDP sees bare frames: a frame whose TCP/UDP checksum the sender left
 * partial (a container's veth with checksum offload, the default) cannot be
 * forwarded by the XDP tier exactly. When this program is attached, the XDP
 * program passes such a frame of a tier flow up the stack (XDP_PASS,
 * ST_TIER_TO_TC) instead of sending it to AF_XDP; the veth's GRO coalesces
 * the flow's frames into one skb, which keeps its checksum state
 * (CHECKSUM_PARTIAL) and GSO metadata; this program encapsulates it with the
 * same entry (tier_flows, shared: both programs are one object, see
 * dataplane/build.rs) in one step (bpf_skb_adjust_room with the ENCAP flags,
 * so the kernel finishes the inner checksum and cuts the segments on the
 * way out, to the size they had) and redirects it to the entry's uplink.
 *
 * Counting: into the entry's slot of tier_counts, as the XDP tier counts, so
 * the owner's harvest (io/tier/owner.rs) adds both tiers' work to the engine's
 * counters alike: a GSO skb counts as the segments it was made of, and the
 * bytes those frames had. A frame this program cannot handle although the
 * XDP program passed it (its entry retired in between, a window of one
 * NAPI poll, as for the XDP tier's own redirects) is dropped and counted
 * under ST_TC_LOST.
 *
 * Included after xdp/steer.bpf.c (its maps, structs and count()). */
#include <linux/pkt_cls.h>
#include <linux/tcp.h>

/* Output interfaces by port number (0: none), written by io/tc.rs: a tc
 * program may not read tier_tx (a devmap), and the tc tier also sends out
 * of ports that take no redirected frames. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} tc_out SEC(".maps");

#ifndef BPF_F_ADJ_ROOM_ENCAP_L2_ETH
#define BPF_F_ADJ_ROOM_ENCAP_L2_ETH (1ULL << 6)
#endif

/* The flow key of the frame at offset `off` of an skb whose headers are in
 * its linear part, as tier() builds it for a frame (`w0`: key word 0); the
 * header length in *hdr (Ethernet to the end of the L4 header), the L4
 * header's offset in the skb in *l4off and the inner TOS, TTL and DF in
 * *tos, *ttl, *df. */
static __always_inline int tc_key_at(struct __sk_buff *skb, __u32 off, __u64 w0,
				     struct tier_key *k, __u32 *hdr, __u32 *l4off, __u8 *tos,
				     __u8 *ttl, __u8 *df)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data + off;
	__u8 proto;
	void *l4;

	if ((void *)(eth + 1) > end)
		return -1;
	k->w[0] = w0;
	k->w[1] = mac48(eth->h_dest) << 16;
	k->w[2] = (mac48(eth->h_source) << 16) | bpf_ntohs(eth->h_proto);
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return -1;
		if (ip->version != 4 || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)))
			return -1;
		proto = ip->protocol;
		k->w[4] = 0x0000ffff00000000ULL | bpf_ntohl(ip->saddr);
		k->w[6] = 0x0000ffff00000000ULL | bpf_ntohl(ip->daddr);
		*tos = ip->tos;
		*ttl = ip->ttl;
		*df = (ip->frag_off & bpf_htons(0x4000)) != 0;
		l4 = ip + 1;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return -1;
		if (ip6->version != 6)
			return -1;
		proto = ip6->nexthdr;
		k->w[3] = be64(&ip6->saddr.s6_addr[0]);
		k->w[4] = be64(&ip6->saddr.s6_addr[8]);
		k->w[5] = be64(&ip6->daddr.s6_addr[0]);
		k->w[6] = be64(&ip6->daddr.s6_addr[8]);
		*tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
		*ttl = ip6->hop_limit;
		*df = 1;
		l4 = ip6 + 1;
	} else {
		return -1;
	}
	__u32 l4len;
	if (proto == IPPROTO_TCP) {
		struct tcphdr *t = l4;
		if ((void *)(t + 1) > end)
			return -1;
		l4len = t->doff * 4;
	} else if (proto == IPPROTO_UDP) {
		l4len = sizeof(struct udphdr);
	} else {
		return -1;
	}
	__be16 *ports = l4;
	if ((void *)(ports + 2) > end)
		return -1;
	k->w[7] = ((__u64)proto << 56) | ((__u64)bpf_ntohs(ports[0]) << 40) |
		  ((__u64)bpf_ntohs(ports[1]) << 24);
	*l4off = (__u32)(l4 - data);
	*hdr = *l4off - off + l4len;
	return 0;
}

/* tc_key_at for a workload port's own frame, at the skb's start. */
static __always_inline int tc_key(struct __sk_buff *skb, const struct steer_cfg *c,
				  struct tier_key *k, __u32 *hdr, __u8 *tos, __u8 *ttl, __u8 *df)
{
	__u32 l4off;
	return tc_key_at(skb, 0, (__u64)(c->in_port & 0xffff) << 48, k, hdr, &l4off, tos, ttl,
			 df);
}

/* The punt device of a TSO-keeping workload port (io/tc_port.rs): where
 * overlayd_tc_port sends what the tier does not handle, for overlayd's
 * AF_PACKET socket on it. Written by io/tc_port.rs. */
struct tc_port_cfg {
	__u32 punt_ifindex;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tc_port_cfg);
} tc_port SEC(".maps");

/* tc_encap's verdict when the skb is not the tier's (no entry, not an
 * encapsulation, ...): the caller decides where it goes. */
#define TC_NOT_TIER 0
/* ...and when it was dropped (counted under ST_TC_LOST). */
#define TC_DROPPED -1

/* Encapsulates `skb` with its tier entry; returns the uplink's interface
 * index to redirect it to, TC_NOT_TIER or TC_DROPPED. `own`: this program
 * alone decides the skb (a TSO-keeping port), so an entry that cannot take
 * it (stale, too long) leaves it to the engine, counted as the XDP tier
 * counts such frames; otherwise the XDP program passed it here because an
 * entry took it, and one that no longer does means the skb is lost. */
static __always_inline int tc_encap(struct __sk_buff *skb, const struct steer_cfg *c, int own)
{
	__u32 zero = 0;
	/* Headers of a GRO or GSO skb are linear already; of a short frame,
	 * whatever there is. */
	bpf_skb_pull_data(skb, 14 + 40 + 60);
	struct tier_key k = {};
	__u32 hdr = 0;
	__u8 tos = 0, ttl = 0, df = 0;
	if (tc_key(skb, c, &k, &hdr, &tos, &ttl, &df))
		return TC_NOT_TIER;
	struct tier_entry *e = tier_lookup(&k);
	if (!e)
		return own ? count(ST_TIER_MISS, TC_NOT_TIER) : TC_NOT_TIER;
	__u64 *gen = bpf_map_lookup_elem(&tier_gen, &zero);
	__u32 slot = e->slot;
	struct tier_count *n = bpf_map_lookup_elem(&tier_counts, &slot);
	__u32 *ident = bpf_map_lookup_elem(&tier_ident, &zero);
	if (!gen || e->generation != *gen)
		return own ? count(ST_TIER_STALE, TC_NOT_TIER) : count(ST_TC_LOST, TC_DROPPED);
	if (!n || !ident || !tc_takes(e))
		return own ? TC_NOT_TIER : count(ST_TC_LOST, TC_DROPPED);
	__u32 tx = e->tx_port;
	__u32 *out = bpf_map_lookup_elem(&tc_out, &tx);
	if (!out || !*out)
		return own ? count(ST_TIER_NO_TX, TC_NOT_TIER) : count(ST_TC_LOST, TC_DROPPED);
	__u32 ifindex = *out;
	__u32 len = skb->len;
	__u32 segs = 1, seg_len = len;
	if (skb->gso_segs > 1) {
		segs = skb->gso_segs;
		seg_len = hdr + skb->gso_size;
	}
	/* Each segment as the workload sent it must fit the entry, as each
	 * frame the XDP tier forwards must. */
	if (seg_len > e->max_len)
		return own ? count(ST_TIER_TOO_LONG, TC_NOT_TIER) : count(ST_TC_LOST, TC_DROPPED);

	unsigned char buf[VXLAN4_HDR_LEN + sizeof(struct ethhdr)];
	if (bpf_skb_load_bytes(skb, 0, buf + VXLAN4_HDR_LEN, sizeof(struct ethhdr)))
		return count(ST_TC_LOST, TC_DROPPED);
	struct ethhdr *inner = (void *)(buf + VXLAN4_HDR_LEN);
	if (e->flags & TF_SET_DST)
		copy_mac(inner->h_dest, e->eth_dst);
	if (e->flags & TF_SET_SRC)
		copy_mac(inner->h_source, e->eth_src);
	__builtin_memcpy(buf, e->hdr, VXLAN4_HDR_LEN);

	__u8 otos = (e->flags & TF_DSCP_INHERIT) ? (tos & 0xfc) : (__u8)(e->dscp << 2);
	if (e->flags & TF_ECN_COPY)
		otos |= tos & 3;
	__u8 ottl = (e->flags & TF_TTL_INHERIT) ? ttl : e->ttl;
	__u8 odf = (e->flags & TF_DF_INHERIT) ? df : (e->flags & TF_DF_SET) != 0;
	/* The whole skb's lengths: segmentation on the way out rewrites the
	 * outer lengths, identification and checksum of each segment, but a
	 * GSO skb may also reach a stack whole (a veth uplink's peer), whose
	 * IP receive trims it to the total length it finds. A workload with
	 * BIG TCP can send more than an IPv4 length holds: the engine's. */
	__u32 outer = len + VXLAN4_HDR_LEN - sizeof(struct ethhdr);
	if (outer > 0xffff)
		return own ? count(ST_TIER_TOO_LONG, TC_NOT_TIER) : count(ST_TC_LOST, TC_DROPPED);
	__u16 total = outer;
	__u16 id = ++*ident;
	if (segs > 1)
		*ident += segs - 1;
	__u16 frag = odf ? 0x4000 : 0;
	struct iphdr *oip = (void *)(buf + sizeof(struct ethhdr));
	oip->tos = otos;
	oip->tot_len = bpf_htons(total);
	oip->id = bpf_htons(id);
	oip->frag_off = bpf_htons(frag);
	oip->ttl = ottl;
	__u32 sum = (__u32)e->ip_sum + otos + total + id + frag + ((__u32)ottl << 8);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	oip->check = bpf_htons((__u16)~sum);
	struct udphdr *udp = (void *)(oip + 1);
	/* Per packet, as the XDP tier does: the entry may serve many flows. */
	udp->source = bpf_htons(port_in_range(flow_hash(&k), e->sport_min, e->sport_max));
	udp->len = bpf_htons(total - sizeof(struct iphdr));

	/* The segments keep their size: the entry's max_len leaves room for
	 * the outer header on the uplink. */
	__u64 flags = BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
		      BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(sizeof(struct ethhdr)) |
		      BPF_F_ADJ_ROOM_FIXED_GSO;
	if (bpf_skb_adjust_room(skb, VXLAN4_HDR_LEN, BPF_ADJ_ROOM_MAC, flags))
		return count(ST_TC_LOST, TC_DROPPED);
	if (bpf_skb_store_bytes(skb, 0, buf, sizeof(buf), 0))
		return count(ST_TC_LOST, TC_DROPPED);
	n->packets += segs;
	n->bytes += len + (__u64)(segs - 1) * hdr;
	count(ST_TC_HIT, 0);
	return ifindex;
}

SEC("classifier") /* aya's name for a tc (sched_cls) program */
int overlayd_tc_encap(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct steer_cfg *c = bpf_map_lookup_elem(&cfg, &zero);
	/* Off, or not a tier flow: what XDP passed without the tier (no
	 * AF_XDP socket on the queue) goes on as before. */
	if (!c || !c->tier || !c->tc_tier)
		return TC_ACT_OK;
	int r = tc_encap(skb, c, 0);
	if (r == TC_NOT_TIER)
		return TC_ACT_OK;
	if (r < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(r, 0);
}

/* A TSO-keeping workload port (io/tc_port.rs): no XDP program on the
 * interface, so the workload keeps its TSO and this program sees its GSO
 * skbs whole. It decides every skb once: the tier's encapsulates and goes
 * to the uplink, segmented at the uplink's transmit; everything else goes
 * to the port's punt device, whose AF_PACKET socket feeds the engine (a
 * packet socket on this interface would see every skb, the tier's too:
 * packet taps run before tc ingress). */
SEC("classifier")
int overlayd_tc_port(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct steer_cfg *c = bpf_map_lookup_elem(&cfg, &zero);
	struct tc_port_cfg *p = bpf_map_lookup_elem(&tc_port, &zero);
	if (!p || !p->punt_ifindex)
		return count(ST_PASS_NO_SOCKET, TC_ACT_SHOT);
	if (c && c->tier) {
		int r = tc_encap(skb, c, 1);
		if (r < 0)
			return TC_ACT_SHOT;
		if (r != TC_NOT_TIER)
			return bpf_redirect(r, 0);
	}
	count(ST_REDIRECTED, 0);
	return bpf_redirect(p->punt_ifindex, BPF_F_INGRESS);
}

/* On the punt device's ingress: its frames were for the AF_PACKET socket
 * (whose tap saw them before this hook), not for the host's stack. */
SEC("classifier")
int overlayd_tc_sink(struct __sk_buff *skb)
{
	return TC_ACT_SHOT;
}
