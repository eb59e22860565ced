// SPDX-License-Identifier: GPL-2.0
/* overlayd's XDP steering program.
 *
 * It decides ownership only: on a workload port every frame belongs to the
 * dataplane; on an uplink, a frame belongs to it when it is VXLAN (UDP to a
 * configured port) or GRE addressed to a local VTEP. Those are redirected to
 * the AF_XDP socket of the receiving queue; everything else (ARP, SSH, the
 * host's own traffic) passes to the kernel. Tunnel headers are NOT validated
 * here: a malformed tunnel packet is still the dataplane's, which drops it
 * under a named reason. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ROLE_WORKLOAD 0
#define ROLE_UPLINK 1
#define MAX_VXLAN_PORTS 4

struct steer_cfg {
	__u32 role;
	__u16 vxlan_ports[MAX_VXLAN_PORTS]; /* network byte order; 0 = unused */
	__u32 gre;
};

enum stat {
	ST_REDIRECTED,
	ST_PASS_NOT_IP,
	ST_PASS_NOT_TUNNEL,
	ST_PASS_NOT_LOCAL_VTEP,
	ST_PASS_NO_SOCKET,
	ST_PASS_FRAGMENT,
	ST_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct steer_cfg);
} cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u8);
} vteps_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct in6_addr);
	__type(value, __u8);
} vteps_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ST_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

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

/* Decides for the L4 part once the destination is a local VTEP. */
static __always_inline int l4(struct xdp_md *ctx, const struct steer_cfg *c, __u8 proto,
			      void *l4h, void *end)
{
	if (proto == IPPROTO_GRE && c->gre)
		return redirect(ctx);
	if (proto == IPPROTO_UDP) {
		struct udphdr *u = l4h;
		if ((void *)(u + 1) > end)
			return count(ST_PASS_NOT_TUNNEL, XDP_PASS);
		if (vxlan_port(c, u->dest))
			return redirect(ctx);
	}
	return count(ST_PASS_NOT_TUNNEL, XDP_PASS);
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
	if (c->role == ROLE_WORKLOAD)
		return redirect(ctx);

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return count(ST_PASS_NOT_IP, XDP_PASS);
	__u16 proto = eth->h_proto;
	void *l3 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q)) {
		struct { __u16 tci; __u16 proto; } *vlan = l3;
		if ((void *)(vlan + 1) > end)
			return count(ST_PASS_NOT_IP, XDP_PASS);
		proto = vlan->proto;
		l3 = vlan + 1;
	}

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
		if (ip->frag_off & bpf_htons(0x1fff))
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
		if (ip6->nexthdr != IPPROTO_UDP && ip6->nexthdr != IPPROTO_GRE)
			return count(ST_PASS_NOT_TUNNEL, XDP_PASS);
		struct in6_addr dst = ip6->daddr;
		if (!bpf_map_lookup_elem(&vteps_v6, &dst))
			return count(ST_PASS_NOT_LOCAL_VTEP, XDP_PASS);
		return l4(ctx, c, ip6->nexthdr, ip6 + 1, end);
	}
	return count(ST_PASS_NOT_IP, XDP_PASS);
}

char _license[] SEC("license") = "GPL";
