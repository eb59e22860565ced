// SPDX-License-Identifier: GPL-2.0
/* The pps harness's generator (benches/src/bin/pps).
 *
 * Userspace runs this program through BPF_PROG_RUN in live-frames mode
 * (BPF_F_TEST_XDP_LIVE_FRAMES) with one pre-built frame; it returns XDP_TX, so
 * the kernel transmits the frame out of the generator's veth into the device
 * under test, in batches, without a system call per packet.
 *
 * Before each transmission it turns the frame into flow number
 * `counter % flows`: the inner IPv4 source address's last byte and the inner
 * UDP source port carry the flow number (40,000 ports from 20,000: clear of the
 * source ports the harness's non-matching rules name), the inner
 * IPv4 header checksum is recomputed, and for a tunnel frame (decapsulation
 * scenarios) the outer UDP source port follows the flow as a real VTEP's
 * would. Live frames keep their contents between runs, so every field that
 * varies is written every time. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct gen_cfg {
	__u32 flows;     /* 1 = no rewriting */
	__u32 inner_ip;  /* offset of the inner IPv4 header */
	__u32 outer_udp; /* offset of the outer UDP header; 0 = none */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_cfg);
} pb_gen_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} pb_gen_seq SEC(".maps");

SEC("xdp")
int pb_gen(struct xdp_md *ctx)
{
	__u32 k = 0;
	struct gen_cfg *c = bpf_map_lookup_elem(&pb_gen_cfg, &k);
	__u64 *seq = bpf_map_lookup_elem(&pb_gen_seq, &k);
	if (!c || !seq || c->flows <= 1)
		return XDP_TX;
	__u32 flow = (__u32)(*seq % c->flows);
	*seq += 1;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 off = c->inner_ip & 0x7f;
	__u8 *ip = data + off;
	if ((void *)(ip + 28) > end)
		return XDP_TX;
	/* flow -> (source address byte, source port) */
	__u16 sport = 20000 + flow % 40000;
	ip[15] = 1 + flow / 40000;
	ip[20] = sport >> 8;
	ip[21] = sport & 0xff;
	/* IPv4 header checksum over the 20-byte header (no options) */
	ip[10] = 0;
	ip[11] = 0;
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < 20; i += 2)
		sum += ((__u32)ip[i] << 8) | ip[i + 1];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = ~sum & 0xffff;
	ip[10] = sum >> 8;
	ip[11] = sum & 0xff;
	__u32 uoff = c->outer_udp & 0x7f;
	if (uoff) {
		__u8 *u = data + uoff;
		if ((void *)(u + 2) > end)
			return XDP_TX;
		__u16 p = 49152 + flow % 16384;
		u[0] = p >> 8;
		u[1] = p & 0xff;
	}
	return XDP_TX;
}

char _license[] SEC("license") = "GPL";
