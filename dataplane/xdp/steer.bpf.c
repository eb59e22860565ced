// SPDX-License-Identifier: GPL-2.0
/* overlayd's XDP program: steering, and the fast tier in front of it.
 *
 * Steering decides ownership only: on a workload port every frame belongs to
 * the dataplane; on an uplink, a frame belongs to it when it is VXLAN (UDP to
 * a configured port) or GRE addressed to a local VTEP. Those are redirected
 * to the AF_XDP socket of the receiving queue; everything else (ARP, SSH, the
 * host's own traffic) passes to the kernel. Tunnel headers are NOT validated
 * here: a malformed tunnel packet is still the dataplane's, which drops it
 * under a named reason.
 *
 * The tier (workload ports, when enabled): the userspace engine decides the
 * first packet of every flow and may install an exact-match entry for it
 * (dataplane/src/io/tier/owner.rs owns the tier_* maps). A later frame whose key
 * hits an entry of the current rule-set generation is handled here: output,
 * VXLAN encapsulation or drop, sent through the tier_tx devmap. Everything
 * else, and anything an entry cannot do exactly (a frame too long for the
 * MTU, no headroom, an output port that cannot take redirected frames), goes
 * to the AF_XDP socket unchanged, as without the tier. The key is the
 * engine's flow key (dataplane/engine/src/flow_key.rs) built from exactly
 * the frames whose key the engine would build the same way: untagged
 * Ethernet, IPv4 without options or IPv6 without extension headers, TCP or
 * UDP, not a fragment. Its Rust twin is tier_key() in io/tier/key.rs.
 *
 * This file holds the steering and the program's entry; the headers it
 * includes, in this order, hold the rest: maps.h (the maps and their
 * values), frame.h (unaligned frame access), tier_lookup.h (the per-CPU
 * copies and tier_flows), csum.h (checksum walks), tier_encap.h (VXLAN and
 * GRE encapsulation), tier.h (a frame's key, checks and action) and
 * tier_decap.h (decapsulation on an uplink). */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "maps.h"

static __always_inline int count(enum stat s, int action)
{
	__u32 k = s;
	__u64 *v = bpf_map_lookup_elem(&stats, &k);
	if (v)
		(*v)++;
	return action;
}

static __always_inline int redirect(struct xdp_md *ctx)
{
	__u32 q = ctx->rx_queue_index;
	if (!bpf_map_lookup_elem(&xsks, &q))
		return count(ST_PASS_NO_SOCKET, XDP_PASS);
	count(ST_REDIRECTED, 0);
	return bpf_redirect_map(&xsks, q, XDP_PASS);
}

static __always_inline int vxlan_port(const struct steer_cfg *c, __u16 port)
{
#pragma unroll
	for (int i = 0; i < MAX_VXLAN_PORTS; i++)
		if (c->vxlan_ports[i] && c->vxlan_ports[i] == port)
			return 1;
	return 0;
}

static __always_inline int tier_decap(struct xdp_md *ctx, const struct steer_cfg *c, __u8 proto);

/* Decides for the L4 part once the destination is a local VTEP. */
static __always_inline int l4(struct xdp_md *ctx, const struct steer_cfg *c, __u8 proto,
			      void *l4h, void *end)
{
	if (proto == IPPROTO_GRE && c->gre) {
		if (c->tier) {
			int r = tier_decap(ctx, c, IPPROTO_GRE);
			if (r != TIER_MISS)
				return r;
		}
		return redirect(ctx);
	}
	if (proto == IPPROTO_UDP) {
		struct udphdr *u = l4h;
		if ((void *)(u + 1) > end)
			return count(ST_PASS_NOT_TUNNEL, XDP_PASS);
		if (vxlan_port(c, u->dest)) {
			if (c->tier) {
				int r = tier_decap(ctx, c, IPPROTO_UDP);
				if (r != TIER_MISS)
					return r;
			}
			return redirect(ctx);
		}
	}
	return count(ST_PASS_NOT_TUNNEL, XDP_PASS);
}

#include "frame.h"
#include "tier_lookup.h"
#include "csum.h"
#include "tier_encap.h"
#include "tier.h"
#include "tier_decap.h"

/* Option and routing headers walked before an IPv6 tunnel header. */
#define IPV6_MAX_EXT 4

/* The protocol after an IPv6 packet's Hop-by-Hop, Destination Options and
 * Routing headers (at most IPV6_MAX_EXT of them), and in *l4h where its
 * header starts; -1 if the frame ends inside them. The engine walks and
 * acts on options (RFC 8200: skip, or drop by the option's action bits) and
 * drops a Routing header by name, so a tunnel packet behind them is
 * steered to it like any other. Fragments and anything else (ESP, AH) end
 * the walk: not a tunnel packet of ours, the host's. */
static __always_inline int ipv6_upper(__u8 nh, void **l4h, void *end)
{
	void *p = *l4h;
#pragma unroll
	for (int i = 0; i < IPV6_MAX_EXT; i++) {
		if (nh != 0 && nh != 60 && nh != 43)
			break;
		struct { __u8 nh; __u8 len; } *x = p;
		if ((void *)(x + 1) > end)
			return -1;
		nh = x->nh;
		p += ((__u32)x->len + 1) * 8;
	}
	*l4h = p;
	return nh;
}

/* Past the Ethernet header and at most one 802.1Q tag: the L3 protocol
 * (network order) in `proto` and its start in `l3`; 0 if the frame ends
 * first. Steering and the tc uplink judge outer headers alike. */
static __always_inline int eth_l3(void *data, void *end, __u16 *proto, void **l3)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return 0;
	*proto = eth->h_proto;
	*l3 = eth + 1;
	if (*proto == bpf_htons(ETH_P_8021Q)) {
		struct { __u16 tci; __u16 proto; } *vlan = *l3;
		if ((void *)(vlan + 1) > end)
			return 0;
		*proto = vlan->proto;
		*l3 = vlan + 1;
	}
	return 1;
}

SEC("xdp")
int overlayd_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct steer_cfg *c = bpf_map_lookup_elem(&cfg, &zero);
	if (!c)
		return XDP_PASS;
	if (c->role == ROLE_WORKLOAD) {
		if (c->tier) {
			int r = tier(ctx, c, 0);
			if (r != TIER_MISS)
				return r;
		}
		return redirect(ctx);
	}

	__u16 proto;
	void *l3;
	if (!eth_l3(data, end, &proto, &l3))
		return count(ST_PASS_NOT_IP, XDP_PASS);

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > end)
			return count(ST_PASS_NOT_IP, XDP_PASS);
		__u32 dst = ip->daddr;
		int is_tunnel_proto = ip->protocol == IPPROTO_UDP || ip->protocol == IPPROTO_GRE;
		if (!is_tunnel_proto)
			return count(ST_PASS_NOT_TUNNEL, XDP_PASS);
		if (!bpf_map_lookup_elem(&vteps_v4, &dst))
			return count(ST_PASS_NOT_LOCAL_VTEP, XDP_PASS);
		/* Later fragments have no UDP header to judge by: the kernel's. The
		 * first fragment of a tunnel packet is ours, and dropped as a fragment. */
		if (ip->frag_off & bpf_htons(0x3fff))
			return count(ST_PASS_FRAGMENT, XDP_PASS);
		__u32 ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip))
			return redirect(ctx); /* malformed, addressed to us: drop with a reason */
		void *l4h = l3 + ihl;
		if (l4h > end)
			return redirect(ctx);
		return l4(ctx, c, ip->protocol, l4h, end);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > end)
			return count(ST_PASS_NOT_IP, XDP_PASS);
		void *l4h = ip6 + 1;
		int nh = ipv6_upper(ip6->nexthdr, &l4h, end);
		if (nh != IPPROTO_UDP && nh != IPPROTO_GRE)
			return count(ST_PASS_NOT_TUNNEL, XDP_PASS);
		struct in6_addr dst = ip6->daddr;
		if (!bpf_map_lookup_elem(&vteps_v6, &dst))
			return count(ST_PASS_NOT_LOCAL_VTEP, XDP_PASS);
		return l4(ctx, c, nh, l4h, end);
	}
	return count(ST_PASS_NOT_IP, XDP_PASS);
}

char _license[] SEC("license") = "GPL";
