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
 * (dataplane/src/io/tier.rs owns the tier_* maps). A later frame whose key
 * hits an entry of the current rule-set generation is handled here: output,
 * VXLAN encapsulation or drop, sent through the tier_tx devmap. Everything
 * else, and anything an entry cannot do exactly (a frame too long for the
 * MTU, no headroom, an output port that cannot take redirected frames), goes
 * to the AF_XDP socket unchanged, as without the tier. The key is the
 * engine's flow key (dataplane/engine/src/flow_key.rs) built from exactly
 * the frames whose key the engine would build the same way: untagged
 * Ethernet, IPv4 without options or IPv6 without extension headers, TCP or
 * UDP, not a fragment. Its Rust twin is tier_key() in io/tier.rs. */
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
	__u32 tier;    /* 1: look established flows up in tier_flows */
	__u32 in_port; /* this port's number in the rule set: key word 0 */
	__u32 tc_tier; /* 1: dataplane/tc/tier.bpf.c is attached to this port */
};

enum stat {
	ST_REDIRECTED,
	ST_PASS_NOT_IP,
	ST_PASS_NOT_TUNNEL,
	ST_PASS_NOT_LOCAL_VTEP,
	ST_PASS_NO_SOCKET,
	ST_PASS_FRAGMENT,
	ST_TIER_HIT,       /* handled by a tier entry */
	ST_TIER_MISS,      /* a tier key, no entry */
	ST_TIER_STALE,     /* an entry of an older generation */
	ST_TIER_TOO_LONG,  /* longer than the entry handles (MTU) */
	ST_TIER_NO_TX,     /* the output port is not in tier_tx */
	ST_TIER_NO_ROOM,   /* no headroom for the outer header */
	ST_TIER_PARTIAL,   /* a partial TCP/UDP checksum, left for an offload */
	ST_TIER_TO_TC,     /* passed up the stack for the tc tier */
	ST_TC_HIT,         /* skbs the tc tier encapsulated */
	ST_TC_LOST,        /* skbs the tc tier had to drop */
	ST_TIER_DECAP_PUNT, /* a tunnel packet the decap tier does not take */
	ST_TIER_NO_TUNNEL, /* its outer addresses and VNI: no current tunnel */
	ST_TIER_ECN,       /* RFC 6040 would change or drop it: the engine's */
	ST_TIER_DECAP_CSUM, /* a UDP checksum that does not verify (or is partial) */
	ST_TIER_UNSETTLED, /* a TCP/UDP checksum or length the software path would not pass */
	ST_TIER_GRE_SEQ,   /* a GRE packet with a sequence number: the engine's */
	ST_TIER_FINISHED,  /* a partial TCP/UDP checksum the tier finished (and sent) */
	ST_MAX,
};

/* Tier entry actions and flags: the layout of struct tier_entry is mirrored
 * by TierValue in dataplane/src/io/tier.rs. */
#define TIER_OUTPUT 1
#define TIER_ENCAP 2
#define TIER_DROP 3

#define TF_SET_SRC 0x01
#define TF_SET_DST 0x02
#define TF_DF_SET 0x04
#define TF_DF_INHERIT 0x08
#define TF_TTL_INHERIT 0x10
#define TF_DSCP_INHERIT 0x20
#define TF_ECN_COPY 0x40
#define TF_UDP_CSUM 0x80 /* send the tunnel header's checksum (UDP: always over IPv6; GRE) */

/* Tunnel protocols of struct tier_entry. */
#define KIND_VXLAN 0
#define KIND_GRETAP 1 /* Ethernet over GRE (gretap, NVGRE) */
#define KIND_GRE_L3 2 /* IP over GRE: the frame's Ethernet header is not sent */

/* Checks of struct tier_entry: a decapsulated flow's output goes to a
 * workload, where the software path settles its TCP/UDP checksum. */
#define CHECK_SETTLE 0x01

/* The outer headers the tier builds and strips: Ethernet + IPv4 or IPv6 +
 * UDP + VXLAN. */
#define VXLAN4_HDR_LEN 50
#define VXLAN6_HDR_LEN 70
#define TIER_MISS -1

/* The engine's FlowKey: eight words in host order. */
struct tier_key {
	__u64 w[8];
};

struct tier_entry {
	__u64 generation; /* the rule set it was decided under */
	__u32 slot;       /* its counters in tier_counts */
	__u32 tx_port;    /* its output interface in tier_tx */
	__u16 max_len;    /* longest frame it handles: longer ones go to AF_XDP */
	__u8 action;
	__u8 flags;
	__u8 ttl;         /* outer TTL unless TF_TTL_INHERIT */
	__u8 dscp;        /* outer DSCP unless TF_DSCP_INHERIT */
	__u16 ip_sum;     /* folded sum of the outer IPv4 header's constant words */
	__u8 eth_dst[6];
	__u8 eth_src[6];
	/* The outer header (hdr_len bytes); the UDP source port, IPv6 flow
	 * label, TOS or traffic class, lengths, identification, flags, TTL or
	 * hop limit and checksums zero, patched per packet. */
	__u8 hdr[VXLAN6_HDR_LEN];
	/* Not read here: what the owner needs to adopt the entry after a
	 * restart (its tunnel and rule in the rule set it was decided under). */
	__u16 tunnel;
	__u32 rule;
	/* TF_UDP_CSUM: folded sum of the UDP checksum's constant words (the
	 * pseudo-header's addresses and protocol, destination port, VXLAN
	 * header; the source port is added per packet). */
	__u16 udp_sum;
	__u8 hdr_len;     /* VXLAN4_HDR_LEN or VXLAN6_HDR_LEN */
	__u8 checks;      /* CHECK_SETTLE */
	__u8 kind;        /* KIND_*: the tunnel protocol of an encapsulation */
	__u8 pad2;
	/* VXLAN: the UDP source port range the flow hash maps into. */
	__u16 sport_min;
	__u16 sport_max;
	__u8 pad3[6];
	/* The bits of the key the engine's decision depended on: the entry
	 * serves a packet only if the packet's key under this mask is the
	 * entry's key (checked on every hit, whatever mask found it). */
	__u64 mask[8];
	/* Its key, which tier_flows finds it by only as tier_hash(key). */
	__u64 key[8];
};

/* The masks entries are keyed under, tried in order (the owner appends one
 * when an entry needs it): a packet's key ANDed with each live one is
 * looked up in tier_flows. Mirrored by TierMask in io/tier.rs. */
#define TIER_MASKS 16
struct tier_mask {
	__u64 w[8];
	__u64 live; /* 0: this slot and every later one are unused */
};

/* The layout of everything pinned beside the program (bumped whenever a
 * map's key, value or meaning changes): a starting overlayd adopts pinned
 * maps only when it is its own (dataplane/src/io/pin.rs). */
#define LAYOUT_VERSION 10

/* Written by the owner, never read here: what a starting overlayd needs to
 * judge the pinned maps it finds (mirrored by PinMeta in io/pin.rs). */
struct pin_meta {
	__u32 layout;        /* LAYOUT_VERSION of whoever created the maps */
	__u32 tier_capacity; /* max_entries of tier_flows, tier_entries and tier_counts */
	__u64 generation;    /* the rule set every live entry was decided under... */
	__u64 fingerprint;   /* ...and its content (0: none yet) */
	__u32 mode;          /* how the program is attached: 1 native, 2 generic */
	__u32 pad;
};

struct tier_count {
	__u64 packets;
	__u64 bytes; /* as received, before encapsulation */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pin_meta);
} meta SEC(".maps");

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

/* Where each entry is: its slot in tier_entries (and tier_counts). Sized by
 * the loader (the configured capacity). A plain hash, not an LRU: the owner
 * decides what leaves it (idle and retired entries) and never holds more
 * entries than it has slots; an LRU evicted live entries before it was
 * full, and could not see hits served from tier_cache (docs/decisions.md,
 * "The tier's flow table: the owner's, not an LRU's").
 * Keyed by tier_hash() of the entry's key, which the entry holds: the
 * kernel's jhash and compare of the 64-byte key were half the tier's own
 * time per packet (docs/decisions.md, "The tier's flow table keyed by a
 * 64-bit hash"). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u64);
	__type(value, __u32);
} tier_flows SEC(".maps");

/* The entries, by slot. Not in tier_flows itself: the kernel reuses a hash
 * element the moment it is deleted or replaced, so a run that found an
 * entry just before the owner removed it could copy a mix of it and the
 * next one. The owner writes a slot only once it has been free for its
 * grace period, as for the slot's counters, or in place with nothing but
 * a new generation (which a torn read turns into a stale entry, a miss). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct tier_entry);
} tier_entries SEC(".maps");

/* Per-entry counters, apart from the entries: an entry the LRU evicts takes
 * nothing with it, so the owner's harvest stays exact. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct tier_count);
} tier_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TIER_MASKS);
	__type(key, __u32);
	__type(value, struct tier_mask);
} tier_masks SEC(".maps");

/* Moved on (by the owner, io/tier.rs) after every delete or overwrite in
 * tier_flows: a copy in tier_cache made under another value is not used. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} tier_epoch SEC(".maps");

/* Each CPU's copies of the entries it hits, by the top bits of their hash:
 * the kernel's hash-table lookup was about a sixth of the program's time
 * per packet (docs/decisions.md, "A per-CPU cache of tier entries"). Only
 * this CPU's program runs write its copies, one run at a time (softirq), so
 * a copy is never read half-written. A copy is used only while tier_epoch
 * holds the value it was made under, so it never outlives the entry by
 * more than the one run that was using it when the owner deleted the
 * entry (the owner's grace period covers that run, as it covers a lookup
 * in tier_flows). Not pinned: each loaded program starts with an empty
 * one. */
#define TIER_CACHE_BITS 6
#define TIER_CACHE_SLOTS (1 << TIER_CACHE_BITS)
struct tier_cached {
	__u64 hash;  /* tier_hash of the copy's key */
	__u64 stamp; /* 1 + tier_epoch when it was copied; 0: no copy */
	struct tier_entry e;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TIER_CACHE_SLOTS);
	__type(key, __u32);
	__type(value, struct tier_cached);
} tier_cache SEC(".maps");

/* The current rule-set generation: entries of any other one are ignored. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} tier_gen SEC(".maps");

/* Decapsulation: the tunnels whose flows have entries on an uplink, keyed
 * by what the engine's decap table looks a tunnel up by (encap/src/decap.rs,
 * RuleSet::decap_index) plus the UDP port, so that only VXLAN ports match
 * (the steering's vxlan_ports include Geneve's), or for GRE whether the
 * packet has a key. Written by the owner with each decap entry it
 * installs; a value of another generation is ignored, as an entry is.
 * Mirrored by TunnelKey/TunnelValue in io/tier.rs. */
struct tier_tunnel_key {
	__u8 local[16];  /* IPv6, or IPv4 as ::ffff:a.b.c.d */
	__u8 remote[16];
	__u32 vni;       /* VXLAN: the VNI; GRE: the key (0 without one) */
	__u16 port;      /* VXLAN: UDP destination, host order; GRE: 0 */
	__u16 kind;      /* TK_* */
};

#define TK_VXLAN 0
#define TK_GRE 1     /* GRE without a key */
#define TK_GRE_KEY 2 /* GRE with a key */

#define TT_V4_CSUM_UNCHECKED 0x01 /* the engine ignores non-zero UDP checksums over IPv4 */
#define TT_V6_ZERO_OK 0x02        /* the engine accepts zero UDP checksums over IPv6 */
#define TT_GRE_CSUM 0x04   /* the tunnel's GRE packets carry a checksum (its own setting) */
#define TT_GRE_VERIFY 0x08 /* the engine verifies GRE checksums */
#define TT_GRE_L3 0x10     /* IP over GRE: the payload is IPv4 or IPv6, not Ethernet */

/* GRE flags (RFC 2784, 2890). */
#define GRE_C 0x8000
#define GRE_K 0x2000
#define GRE_S 0x1000

struct tier_tunnel {
	__u64 generation;
	__u16 tag;   /* the flow key's tunnel field: index + 1 */
	__u16 flags;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct tier_tunnel_key);
	__type(value, struct tier_tunnel);
} tier_tunnels SEC(".maps");

/* Output interfaces, by port number: only those that take redirected frames
 * (ndo_xdp_xmit) are present. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} tier_tx SEC(".maps");

/* Outer IPv4 identification, counted per CPU as the engine counts per worker. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tier_ident SEC(".maps");

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

/* Reads of the frame, unaligned as copy_to_frame's writes (and for the
 * same reason: one load where clang would make one per byte). */
static __always_inline __u64 mac48(const __u8 *m)
{
	return ((__u64)bpf_ntohl(*(const __u32 *)m) << 16) | bpf_ntohs(*(const __u16 *)(m + 4));
}

static __always_inline __u64 be64(const void *p)
{
	return bpf_be64_to_cpu(*(const __u64 *)p);
}

static __always_inline void copy_mac(__u8 *dst, const __u8 *src)
{
	__builtin_memcpy(dst, src, 6);
}

/* Copies `n` (a constant) bytes from an entry into the frame in 8-, 4-, 2-
 * and 1-byte moves. Told nothing about alignment, clang's memcpy moves one
 * byte at a time, two instructions a byte: the 50-byte VXLAN header alone
 * was 100 of them. Neither side is aligned (the frame starts where
 * bpf_xdp_adjust_head left it; the template at offset 36 of the value); the
 * verifier accepts unaligned packet and map value access where the CPU
 * handles it (x86-64, arm64: no BPF_F_STRICT_ALIGNMENT), and on another the
 * program fails to load, which leaves every port on AF_XDP. Not for the
 * stack, whose accesses the verifier requires aligned. */
static __always_inline void copy_to_frame(void *dst, const void *src, const int n)
{
	int i = 0;
#pragma unroll
	for (; i + 8 <= n; i += 8)
		*(__u64 *)(dst + i) = *(const __u64 *)(src + i);
	if (n - i >= 4) {
		*(__u32 *)(dst + i) = *(const __u32 *)(src + i);
		i += 4;
	}
	if (n - i >= 2) {
		*(__u16 *)(dst + i) = *(const __u16 *)(src + i);
		i += 2;
	}
	if (n - i >= 1)
		*(__u8 *)(dst + i) = *(const __u8 *)(src + i);
}

/* The map key of an entry whose key is `k` under mask `m`: a sum of one
 * multiply-xorshift per word, each word offset by its own constant so that
 * equal values in different words differ. Each term is a bijection of its
 * word, so keys that differ in one word never collide; the words' terms
 * are independent, so the CPU computes them side by side, as it could not
 * a chain of dependent rounds. Not a defence
 * against chosen collisions: a collision costs a flow its place in the
 * tier, never a wrong hit (the entry holds the key, checked on every hit),
 * and the owner refuses the second key (`hash_collision`). Its Rust twin
 * is tier_hash() in io/tier.rs. */
#define KEY_MUL 0x9e3779b97f4a7c15ULL
static __always_inline __u64 tier_hash(const struct tier_key *k, const struct tier_mask *m)
{
	__u64 h = 0;
#pragma unroll
	for (int j = 0; j < 8; j++) {
		__u64 x = ((k->w[j] & m->w[j]) + (__u64)(j + 1) * 0x5851f42d4c957f2dULL) * KEY_MUL;
		h += x ^ (x >> 32);
	}
	return h;
}

/* True if the packet's key `k`, under the entry's own mask, is the entry's key. */
static __always_inline int tier_matches(const struct tier_key *k, const struct tier_entry *e)
{
	__u64 diff = 0;
#pragma unroll
	for (int j = 0; j < 8; j++)
		diff |= (k->w[j] & e->mask[j]) ^ e->key[j];
	return !diff;
}

/* What tier_try() needs and finds. */
struct tier_try {
	const struct tier_key *k; /* on the caller's stack */
	__u64 stamp; /* 1 + tier_epoch, read before any lookup in tier_flows */
	__u32 slot;  /* the tier_cache slot of the entry found */
	__u32 found;
};

/* Mask `i`'s try: 1 to stop (an entry found, or no more live masks), 0 to
 * go on to the next. An entry found in tier_flows is copied into its slot
 * of tier_cache and served from the copy, as every later hit is. */
static __always_inline long tier_try(__u32 i, struct tier_try *t)
{
	struct tier_mask *m = bpf_map_lookup_elem(&tier_masks, &i);
	if (!m || !m->live)
		return 1;
	__u64 h = tier_hash(t->k, m);
	__u32 ci = h >> (64 - TIER_CACHE_BITS);
	struct tier_cached *c = bpf_map_lookup_elem(&tier_cache, &ci);
	if (!c)
		return 1;
	if (c->hash == h && c->stamp == t->stamp) {
		if (!tier_matches(t->k, &c->e))
			return 0;
	} else {
		__u32 *at = bpf_map_lookup_elem(&tier_flows, &h);
		if (!at)
			return 0;
		__u32 slot = *at;
		struct tier_entry *f = bpf_map_lookup_elem(&tier_entries, &slot);
		if (!f || !tier_matches(t->k, f))
			return 0;
		__builtin_memcpy(&c->e, f, sizeof(*f));
		c->hash = h;
		c->stamp = t->stamp;
	}
	t->slot = ci;
	t->found = 1;
	return 1;
}

/* Masks 1 and on, through bpf_loop: the verifier walks this once, where an
 * unrolled loop of 16 tries cost it 546,638 instructions and half a second
 * a load (161,184 and a quarter of a second this way; docs/decisions.md,
 * "A per-CPU cache of tier entries"). */
static long tier_try_next(__u64 i, struct tier_try *t)
{
	return tier_try(i + 1, t);
}

/* The entry for key `k`: the first found under a live mask of tier_masks
 * whose own mask gives its key. That check, not the mask list or the hash,
 * is what makes a hit right: an entry decided for a flow whose key under
 * mask M was V serves exactly the packets whose key under M is V (the
 * engine decides them all alike), so a mask slot read while the owner
 * rewrites it, or two keys of one hash, can cost a miss, never a wrong
 * hit. Found in this CPU's tier_cache if a current copy is there, else in
 * tier_flows. */
static __always_inline struct tier_entry *tier_lookup(const struct tier_key *k)
{
	__u32 zero = 0;
	__u64 *ep = bpf_map_lookup_elem(&tier_epoch, &zero);
	if (!ep)
		return NULL;
	struct tier_try t = { .k = k, .stamp = *(volatile __u64 *)ep + 1 };
	/* The first mask inline: most packets stop there, and every try
	 * through bpf_loop cost about 5-10 ns a packet more. */
	if (!tier_try(0, &t))
		bpf_loop(TIER_MASKS - 1, tier_try_next, &t, 0);
	if (!t.found)
		return NULL;
	struct tier_cached *cc = bpf_map_lookup_elem(&tier_cache, &t.slot);
	return cc ? &cc->e : NULL;
}

/* Sends the frame out of the entry's output interface, counted against the
 * entry. The target was set by the bpf_redirect_map in tier() that checked
 * the output before the frame was changed: one devmap lookup a packet, not
 * two (issue 14's per-packet cost; the target stays set until the program
 * returns). */
static __always_inline int tier_send(struct tier_count *n, __u32 len)
{
	n->packets++;
	n->bytes += len;
	count(ST_TIER_HIT, 0);
	return XDP_REDIRECT;
}

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

/* The checksum walk's bounds: 16 chunks of 256 bytes take any frame up to
 * 4 KiB, more than XDP sees of a frame without fragments (this program
 * takes no multi-buffer frames). Longer ones go to AF_XDP. */
#define CSUM_CHUNK 256
#define CSUM_CHUNKS 16

/* The Internet checksum's sum (RFC 1071) of the packet bytes from `p` to
 * `end`, folded to 16 bits, in host order; -1 if there are more than the
 * walk takes. `p` is an even number of bytes from where the checksummed
 * data starts. bpf_csum_diff sums whole 32-bit words in memory order; a sum
 * is the same in either byte order (RFC 1071 2(B)), so it is swapped once
 * at the end. The walk of csum_to_end (XDP) and skb_csum_to_end (the tc
 * uplink, tc/uplink.bpf.c). */
static __always_inline int sum_to_end(void *p, void *end)
{
	__u64 sum = 0;
	for (int i = 0; i < CSUM_CHUNKS; i++) {
		if (p + CSUM_CHUNK > end)
			break;
		sum = (__u32)bpf_csum_diff(0, 0, p, CSUM_CHUNK, (__u32)sum);
		p += CSUM_CHUNK;
	}
	if (p + CSUM_CHUNK <= end)
		return -1;
	/* The rest, in pieces of fixed size (the verifier bounds each). */
#define CSUM_PIECE(n)                                                              \
	if (p + (n) <= end) {                                                      \
		sum = (__u32)bpf_csum_diff(0, 0, p, (n), (__u32)sum);              \
		p += (n);                                                          \
	}
	CSUM_PIECE(128)
	CSUM_PIECE(64)
	CSUM_PIECE(32)
	CSUM_PIECE(16)
	CSUM_PIECE(8)
	CSUM_PIECE(4)
#undef CSUM_PIECE
	if (p + 2 <= end) {
		sum += *(__u16 *)p;
		p += 2;
	}
	/* An odd last byte is the first of a word whose second byte is zero. */
	if (p + 1 <= end)
		sum += bpf_htons((__u16)(*(__u8 *)p) << 8);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return bpf_ntohs((__u16)sum);
}

/* The sum of the frame's bytes from offset `off` to its end.
 * A global function: the verifier checks it once, on its own, rather than
 * once for every path that reaches a call (which exceeds its limit). */
__attribute__((noinline)) int csum_to_end(struct xdp_md *ctx, __u32 off)
{
	void *p = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (off > VXLAN6_HDR_LEN)
		return -1;
	return sum_to_end(p + off, end);
}

/* Sum of `n` 16-bit big-endian words at `p`, in host order, unfolded. */
static __always_inline __u32 sum_words(const void *p, int n)
{
	const __u16 *w = p;
	__u32 s = 0;
#pragma unroll
	for (int i = 0; i < n; i++)
		s += bpf_ntohs(w[i]);
	return s;
}

/* The sum of the frame as entry `e` sends it inside the tunnel (its MAC
 * rewrites applied), taken before anything is changed so that a frame the
 * walk cannot take leaves unchanged; -1 if it cannot. */
static __always_inline int frame_sum(struct xdp_md *ctx, void *data, void *end,
				     const struct tier_entry *e)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return -1;
	int rest = csum_to_end(ctx, 12);
	if (rest < 0)
		return -1;
	__u32 s = rest;
	s += sum_words((e->flags & TF_SET_DST) ? (const void *)e->eth_dst : eth->h_dest, 3);
	s += sum_words((e->flags & TF_SET_SRC) ? (const void *)e->eth_src : eth->h_source, 3);
	return s; /* unfolded: at most 7 * 0xffff */
}

/* The UDP checksum field of a datagram of `l4_len` bytes whose constant
 * words (pseudo-header addresses and protocol, ports, tunnel header) sum
 * to `constant` and whose payload after them sums to `payload`: the length
 * counts twice (pseudo-header and UDP header). A computed zero is sent as
 * all ones (RFC 768, RFC 8200 8.1), as the engine's template does. */
static __always_inline __u16 udp_csum(__u16 constant, __u16 l4_len, __u32 payload)
{
	__u32 s = (__u32)constant + l4_len + l4_len + payload;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	__u16 c = ~s;
	return c ? c : 0xffff;
}

static __always_inline void rewrite_macs(struct ethhdr *eth, const struct tier_entry *e)
{
	if (e->flags & TF_SET_DST)
		copy_to_frame(eth->h_dest, e->eth_dst, 6);
	if (e->flags & TF_SET_SRC)
		copy_to_frame(eth->h_source, e->eth_src, 6);
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
	if (bpf_xdp_adjust_head(ctx, -VXLAN4_HDR_LEN))
		return count(ST_TIER_NO_ROOM, TIER_MISS); /* the frame is unchanged */
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (data + VXLAN4_HDR_LEN + sizeof(struct ethhdr) > end) {
		/* Cannot happen (the frame was at least an Ethernet header), but
		 * the verifier wants the bound: put the frame back as it was. */
		bpf_xdp_adjust_head(ctx, VXLAN4_HDR_LEN);
		return TIER_MISS;
	}
	rewrite_macs(data + VXLAN4_HDR_LEN, e);
	copy_to_frame(data, e->hdr, VXLAN4_HDR_LEN);
	__u16 id = ++*ident;
	__u16 frag = o->df ? 0x4000 : 0;
	struct iphdr *oip = data + sizeof(struct ethhdr);
	oip->tos = o->tos;
	oip->tot_len = bpf_htons(total);
	oip->id = bpf_htons(id);
	oip->frag_off = bpf_htons(frag);
	oip->ttl = o->ttl;
	/* Incremental from the constant words' sum: the words patched above
	 * (TOS is the low byte of its word, TTL the high byte of its own). */
	__u32 sum = (__u32)e->ip_sum + o->tos + total + id + frag + ((__u32)o->ttl << 8);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	oip->check = bpf_htons((__u16)~sum);
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
	if (bpf_xdp_adjust_head(ctx, -VXLAN6_HDR_LEN))
		return count(ST_TIER_NO_ROOM, TIER_MISS);
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (data + VXLAN6_HDR_LEN + sizeof(struct ethhdr) > end) {
		bpf_xdp_adjust_head(ctx, VXLAN6_HDR_LEN);
		return TIER_MISS;
	}
	rewrite_macs(data + VXLAN6_HDR_LEN, e);
	copy_to_frame(data, e->hdr, VXLAN6_HDR_LEN);
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
		__u16 id = ++*ident;
		__u16 frag = o->df ? 0x4000 : 0;
		struct iphdr *oip = data + sizeof(struct ethhdr);
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
		/* The header checksum, as the engine verifies it. */
		__u16 *w = (void *)ip;
		__u32 sum = 0;
#pragma unroll
		for (int i = 0; i < 10; i++)
			sum += w[i];
		sum = (sum & 0xffff) + (sum >> 16);
		sum = (sum & 0xffff) + (sum >> 16);
		if (sum != 0xffff)
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
