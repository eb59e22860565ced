// SPDX-License-Identifier: GPL-2.0
/* The flood generator of the restart and upgrade tests (src/bin/flood.rs).
 *
 * Userspace runs this program through BPF_PROG_RUN in live-frames mode
 * (BPF_F_TEST_XDP_LIVE_FRAMES) over one pre-built UDP datagram and it returns
 * XDP_TX, so the kernel transmits the frame out of the workload's veth in
 * batches, with no system call per datagram: a userspace sender on a busy
 * 2-core VM did not reach 100,000 datagrams a second.
 *
 * Each transmission gets the next sequence number (big-endian, at byte 8 of
 * the UDP payload, after the 8-byte magic) from `flood_seq`; the UDP
 * checksum is zero (allowed over IPv4), so nothing else changes. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* Ethernet (14) + IPv4 without options (20) + UDP (8), then the magic. */
#define SEQ_OFF (14 + 20 + 8 + 8)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} flood_seq SEC(".maps");

SEC("xdp")
int flood_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 *p = data + SEQ_OFF;
	__u32 k = 0;
	__u64 *seq = bpf_map_lookup_elem(&flood_seq, &k);
	if (!seq || (void *)(p + 8) > end)
		return XDP_ABORTED;
	/* One userspace thread runs the program, one frame at a time. */
	__u64 s = *seq;
	*seq = s + 1;
#pragma unroll
	for (int i = 0; i < 8; i++)
		p[i] = s >> (56 - 8 * i);
	return XDP_TX;
}

char _license[] SEC("license") = "GPL";
