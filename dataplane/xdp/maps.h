// SPDX-License-Identifier: GPL-2.0
/* overlayd's XDP program: its maps, and the layouts of their values
 * (mirrored in Rust by dataplane/src/io/steer.rs, io/pin.rs and
 * io/tier/layout.rs).
 * Part of steer.bpf.c's compilation unit, included there in order: it
 * uses what the headers before it define. */

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
 * by TierValue in dataplane/src/io/tier/layout.rs. */
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
 * looked up in tier_flows. Mirrored by TierMask in io/tier/layout.rs. */
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

/* Moved on (by the owner, io/tier/maps.rs) after every delete or overwrite in
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
 * Mirrored by TunnelKey/TunnelValue in io/tier/layout.rs. */
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
