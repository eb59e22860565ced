// SPDX-License-Identifier: GPL-2.0
/* The tier's lookup: a packet's key, under each live mask, in this CPU's
 * copies of entries (tier_cache) or in tier_flows.
 * Part of steer.bpf.c's compilation unit, included there in order: it
 * uses what the headers before it define. */

/* The map key of an entry whose key is `k` under mask `m`: a sum of one
 * multiply-xorshift per word, each word offset by its own constant so that
 * equal values in different words differ. Each term is a bijection of its
 * word, so keys that differ in one word never collide; the words' terms
 * are independent, so the CPU computes them side by side, as it could not
 * a chain of dependent rounds. Not a defence
 * against chosen collisions: a collision costs a flow its place in the
 * tier, never a wrong hit (the entry holds the key, checked on every hit),
 * and the owner refuses the second key (`hash_collision`). Its Rust twin
 * is tier_hash() in io/tier/key.rs. */
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
