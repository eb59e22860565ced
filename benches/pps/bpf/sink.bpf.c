// SPDX-License-Identifier: GPL-2.0
/* The pps harness's sink (benches/src/bin/pps): counts every frame that
 * reaches the sink's interface and checks one in `sample_mask + 1` of them
 * against what the device under test should have delivered: the outer
 * Ethernet/IPv4 headers, the tunnel header (VXLAN port, I flag and VNI, or
 * GRE flags, protocol 0x6558 and key) and the inner frame (IPv4/UDP to the
 * expected address and port, and its length). Everything is dropped here.
 *
 * `pb_pass` is the XDP_PASS program the harness puts on the kernel device
 * under test's input veth: frames sent with XDP_TX enter a veth only through
 * its NAPI path, which an XDP program turns on.
 *
 * `pb_null` is the `xdp-null` device: every frame redirected unchanged
 * through a devmap out of the other port, the physical limit of the path.
 *
 * `pb_encap` is the `xdp-encap` device: the least a VXLAN encapsulation in
 * XDP does (one fixed header in front of every frame, its lengths, IPv4
 * checksum and UDP source port patched, then pb_null's redirect), with no
 * lookup, policy or counting: the floor under any XDP tier's encapsulation
 * on this path.
 *
 * With the harness's --xdp-cpumap, `pb_null_hop` and `pb_encap_hop` do the
 * same on the input veth's CPU but hand each frame through a cpumap to the
 * device's CPU, where `pb_out` redirects it out of the other port: the
 * transmit and everything after it (the sink's receive) leave the
 * generator's CPU, as they do for a userspace device whose packet thread
 * sends from its own CPU. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MODE_VXLAN 1
#define MODE_GRETAP 2
#define MODE_PLAIN 3
#define MODE_GENEVE 4

struct sink_cfg {
	__u32 mode;
	__u32 vni;         /* VNI (VXLAN, Geneve) or key (GRE) */
	__u32 outer_src;   /* network byte order */
	__u32 outer_dst;
	__u32 inner_dst;
	__u32 inner_len;   /* bytes of the inner Ethernet frame */
	__u32 udp_port;    /* VXLAN or Geneve destination port */
	__u32 sample_mask; /* check frames whose sequence number & mask == 0 */
};

enum {
	S_RECEIVED,
	S_SAMPLED,
	S_OK,
	S_BAD_OUTER,
	S_BAD_TUNNEL,
	S_BAD_INNER,
	S_BAD_LENGTH,
	S_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sink_cfg);
} pb_sink_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, S_MAX);
	__type(key, __u32);
	__type(value, __u64);
} pb_sink_stats SEC(".maps");

/* The first wrong frame since the harness last cleared `taken`: its reason
 * (an S_BAD_* slot), its length and its first bytes, so a wrong frame can
 * be looked at, not only counted. Two CPUs may race to fill it; either
 * frame is a wrong one. */
#define WRONG_BYTES 256
struct sink_wrong {
	__u32 taken;
	__u32 reason;
	__u32 len;
	__u32 pad;
	__u8 bytes[WRONG_BYTES];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sink_wrong);
} pb_sink_wrong SEC(".maps");

static __always_inline void bump(__u32 k)
{
	__u64 *v = bpf_map_lookup_elem(&pb_sink_stats, &k);
	if (v)
		*v += 1;
}

/* Counts a wrong frame under `reason` and keeps it if it is the first. */
static __always_inline int wrong(struct xdp_md *ctx, __u32 reason)
{
	bump(reason);
	__u32 zero = 0;
	struct sink_wrong *w = bpf_map_lookup_elem(&pb_sink_wrong, &zero);
	if (!w || w->taken)
		return XDP_DROP;
	w->taken = 1;
	w->reason = reason;
	__u32 len = ctx->data_end - ctx->data;
	w->len = len;
	/* All of a shorter frame: a bounded variable size, which the verifier
	 * takes (it once kept 60 bytes or none, and a 54-byte frame was
	 * reported as zeros). */
	__u64 n = len < WRONG_BYTES ? len : WRONG_BYTES;
	/* So that clang checks and passes the same register (else it passes
	 * `len`, whose bound the verifier does not know). */
	asm volatile("" : "+r"(n));
	if (n > 0 && n <= WRONG_BYTES)
		bpf_xdp_load_bytes(ctx, 0, w->bytes, n);
	return XDP_DROP;
}

static __always_inline __u32 be32(const __u8 *p)
{
	return ((__u32)p[0] << 24) | ((__u32)p[1] << 16) | ((__u32)p[2] << 8) | p[3];
}

SEC("xdp")
int pb_sink(struct xdp_md *ctx)
{
	__u32 k = S_RECEIVED, zero = 0;
	__u64 *n = bpf_map_lookup_elem(&pb_sink_stats, &k);
	if (!n)
		return XDP_DROP;
	__u64 seq = *n;
	*n = seq + 1;
	struct sink_cfg *c = bpf_map_lookup_elem(&pb_sink_cfg, &zero);
	if (!c || c->mode == 0 || (seq & c->sample_mask))
		return XDP_DROP;
	bump(S_SAMPLED);
	__u8 *d = (void *)(long)ctx->data;
	__u8 *end = (void *)(long)ctx->data_end;
	__u8 *in = d;
	if (c->mode == MODE_VXLAN || c->mode == MODE_GRETAP || c->mode == MODE_GENEVE) {
		if (d + 50 > end)
			goto outer;
		if (d[12] != 0x08 || d[13] != 0x00 || d[14] != 0x45 ||
		    *(__u32 *)(d + 26) != c->outer_src || *(__u32 *)(d + 30) != c->outer_dst)
			goto outer;
		if (c->mode == MODE_VXLAN) {
			if (d[23] != 17 || (((__u32)d[36] << 8) | d[37]) != c->udp_port)
				goto outer;
			if (d[42] != 0x08 || (be32(d + 46) >> 8) != c->vni)
				goto tunnel;
			in = d + 50;
		} else if (c->mode == MODE_GENEVE) {
			if (d[23] != 17 || (((__u32)d[36] << 8) | d[37]) != c->udp_port)
				goto outer;
			/* version 0, no options, O and C clear, protocol 0x6558, the VNI */
			if (d[42] != 0x00 || d[43] != 0x00 || d[44] != 0x65 || d[45] != 0x58 ||
			    (be32(d + 46) >> 8) != c->vni)
				goto tunnel;
			in = d + 50;
		} else {
			if (d[23] != 47)
				goto outer;
			/* K flag only, version 0, protocol 0x6558, then the key */
			if (d[34] != 0x20 || d[35] != 0x00 || d[36] != 0x65 || d[37] != 0x58 ||
			    be32(d + 38) != c->vni)
				goto tunnel;
			in = d + 42;
		}
	}
	if (in + 38 > end)
		goto inner;
	if (in[12] != 0x08 || in[13] != 0x00 || in[14] != 0x45 || in[23] != 17 ||
	    *(__u32 *)(in + 30) != c->inner_dst || in[36] != 0x00 || in[37] != 80)
		goto inner;
	if ((__u32)(end - in) != c->inner_len)
		return wrong(ctx, S_BAD_LENGTH);
	bump(S_OK);
	return XDP_DROP;
outer:
	return wrong(ctx, S_BAD_OUTER);
tunnel:
	return wrong(ctx, S_BAD_TUNNEL);
inner:
	return wrong(ctx, S_BAD_INNER);
}

SEC("xdp")
int pb_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} pb_null_tx SEC(".maps");

SEC("xdp")
int pb_null(struct xdp_md *ctx)
{
	return bpf_redirect_map(&pb_null_tx, 0, 0);
}

/* What pb_encap puts in front of every frame: Ethernet, IPv4 (total length
 * and checksum zero), UDP (source port, length zero), VXLAN. */
#define ENCAP_LEN 50
struct encap_hdr {
	__u8 b[56];     /* ENCAP_LEN bytes used */
	__u32 ip_sum;   /* folded sum of the IPv4 header's constant words */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct encap_hdr);
} pb_encap_hdr SEC(".maps");

static __always_inline int encap(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct encap_hdr *h = bpf_map_lookup_elem(&pb_encap_hdr, &zero);
	if (!h)
		return XDP_ABORTED;
	__u8 *d = (void *)(long)ctx->data;
	__u8 *end = (void *)(long)ctx->data_end;
	if (d + 38 > end)
		return XDP_DROP;
	__u32 len = end - d;
	/* Source-port entropy: the inner addresses and ports. */
	__u32 x = *(__u32 *)(d + 26) ^ *(__u32 *)(d + 30) ^ *(__u32 *)(d + 34);
	x ^= x >> 16;
	if (bpf_xdp_adjust_head(ctx, -ENCAP_LEN))
		return XDP_DROP;
	d = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (d + ENCAP_LEN > end)
		return XDP_DROP;
	/* Eight-byte moves (neither side is aligned; x86-64 takes it). */
#pragma unroll
	for (int i = 0; i < 48; i += 8)
		*(__u64 *)(d + i) = *(__u64 *)(h->b + i);
	*(__u16 *)(d + 48) = *(__u16 *)(h->b + 48);
	__u16 total = len + ENCAP_LEN - 14;
	*(__u16 *)(d + 16) = bpf_htons(total);
	__u32 sum = h->ip_sum + total;
	sum = (sum & 0xffff) + (sum >> 16);
	*(__u16 *)(d + 24) = bpf_htons((__u16)~sum);
	*(__u16 *)(d + 34) = bpf_htons(49152 | (x & 0x3fff));
	*(__u16 *)(d + 38) = bpf_htons(total - 20);
	return bpf_redirect_map(&pb_null_tx, 0, 0);
}

SEC("xdp")
int pb_encap(struct xdp_md *ctx)
{
	return encap(ctx);
}

/* --xdp-cpumap: entry 0 is the device's CPU, its program pb_out. */
struct {
	__uint(type, BPF_MAP_TYPE_CPUMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct bpf_cpumap_val);
} pb_cpu SEC(".maps");

const volatile __u32 pb_out_cpu = 0;

SEC("xdp")
int pb_null_hop(struct xdp_md *ctx)
{
	return bpf_redirect_map(&pb_cpu, pb_out_cpu, 0);
}

SEC("xdp")
int pb_encap_hop(struct xdp_md *ctx)
{
	int r = encap(ctx);
	return r == XDP_REDIRECT ? bpf_redirect_map(&pb_cpu, pb_out_cpu, 0) : r;
}

SEC("xdp/cpumap")
int pb_out(struct xdp_md *ctx)
{
	return bpf_redirect_map(&pb_null_tx, 0, 0);
}

char _license[] SEC("license") = "GPL";
