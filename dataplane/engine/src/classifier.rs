//! Tuple-space search: rules are grouped by their mask ("tuple"); each tuple is
//! an exact-match hash table from masked key to the best rule with that masked
//! value. A lookup probes tuples in order of the best rule each holds and stops
//! as soon as no remaining tuple can beat what it found.
//!
//! A rule whose mask covers every field is just a tuple with a full mask: the
//! exact-match table is the same structure, probed like any other.
//!
//! Order: a higher priority wins; between equal priorities, the lower rule id
//! wins. The pair is folded into one `rank` that is unique per rule, so the
//! early exit is exact.
//!
//! Built once per rule set and immutable afterwards; lookups never allocate.

use std::collections::HashMap;

use crate::flow_key::{field, hash_words, FlowKey, WORDS};

/// A rule as the classifier sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassRule {
    pub mask: FlowKey,
    /// Match value; bits outside `mask` are ignored.
    pub value: FlowKey,
    pub priority: u16,
    pub id: u32,
}

/// Unique, totally ordered preference: priority first, then lower id.
#[inline(always)]
pub const fn rank(priority: u16, id: u32) -> u64 {
    ((priority as u64) << 32) | (u32::MAX - id) as u64
}

const EMPTY: u32 = u32::MAX;

#[derive(Clone, Debug)]
struct Slot {
    key: FlowKey,
    rank: u64,
    rule: u32,
}

#[derive(Clone, Debug)]
struct Tuple {
    mask: FlowKey,
    max_rank: u64,
    slots: Vec<Slot>,
    /// For [`Classifier::wildcards`]: each field the mask covers, with the
    /// sorted distinct values its rules have there.
    fields: Vec<FieldValues>,
}

/// One field of a tuple's mask (within word `word`, bits `mask`) and the
/// values (masked words) its rules hold, sorted.
#[derive(Clone, Debug)]
struct FieldValues {
    word: usize,
    mask: u64,
    values: Vec<u64>,
}

/// The fields a miss may be explained by, as (word, bits): the key's named
/// fields, and the address words whole (a prefix is a run of their top bits).
fn field_bits() -> [(usize, u64); 15] {
    let f = |(w, shift, width): field::Field| (w, ((1u64 << width) - 1) << shift);
    [
        f(field::IN_PORT),
        f(field::TUNNEL),
        f(field::VNI),
        f(field::ETH_DST),
        f(field::VLAN),
        f(field::ETH_SRC),
        f(field::ETHERTYPE),
        (3, u64::MAX),
        (4, u64::MAX),
        (5, u64::MAX),
        (6, u64::MAX),
        f(field::IP_PROTO),
        f(field::L4_SRC),
        f(field::L4_DST),
        f(field::GENEVE_OPTIONS),
    ]
}

impl Tuple {
    /// The bits of `key` that prove it matches no rule here: the fewest
    /// top bits of one field on which `key` differs from every rule (the
    /// nearest values in sorted order share the longest prefix with it),
    /// rounded up to whole nibbles so that few distinct masks arise; the
    /// whole mask when no single field rules every rule out.
    fn miss_bits(&self, key: &FlowKey) -> FlowKey {
        let mut best: Option<(u32, usize, u64)> = None;
        for f in &self.fields {
            let x = key.0[f.word] & f.mask;
            let i = match f.values.binary_search(&x) {
                Ok(_) => continue,
                Err(i) => i,
            };
            let near = [i.checked_sub(1).map(|j| f.values[j]), f.values.get(i).copied()];
            let common = near.iter().flatten().map(|v| (v ^ x).leading_zeros()).max().unwrap_or(0);
            // The first differing bit is below `common` top bits: keep them
            // and it, in whole nibbles.
            let keep = ((common + 1).div_ceil(4) * 4).min(64);
            let bits = f.mask & (u64::MAX << (64 - keep));
            let cost = bits.count_ones();
            if best.is_none_or(|(c, _, _)| cost < c) {
                best = Some((cost, f.word, bits));
            }
        }
        match best {
            Some((_, w, bits)) => {
                let mut m = FlowKey::default();
                m.0[w] = bits;
                m
            }
            None => self.mask,
        }
    }
}

impl Tuple {
    // Straight-line over all eight words: the masking and the comparison
    // vectorise, and masked-out words are simply zero.
    #[inline(always)]
    fn hash(&self, masked: &FlowKey) -> u64 {
        hash_words(&masked.0)
    }

    #[inline(always)]
    fn mask_key(&self, key: &FlowKey) -> FlowKey {
        key.masked(&self.mask)
    }

    #[inline(always)]
    fn same(&self, a: &FlowKey, b: &FlowKey) -> bool {
        a == b
    }

    fn insert(&mut self, masked: FlowKey, rank: u64, rule: u32) {
        let cap = self.slots.len() - 1;
        let mut i = self.hash(&masked) as usize & cap;
        loop {
            let s = &mut self.slots[i];
            if s.rule == EMPTY {
                *s = Slot { key: masked, rank, rule };
                return;
            }
            if s.key == masked {
                if rank > s.rank {
                    s.rank = rank;
                    s.rule = rule;
                }
                return;
            }
            i = (i + 1) & cap;
        }
    }

    /// The best rule in this tuple for `key`, with its rank.
    #[inline(always)]
    fn find(&self, key: &FlowKey) -> Option<(u64, u32)> {
        let masked = self.mask_key(key);
        let cap = self.slots.len() - 1;
        let mut i = self.hash(&masked) as usize & cap;
        loop {
            let s = &self.slots[i];
            if s.rule == EMPTY {
                return None;
            }
            if self.same(&s.key, &masked) {
                return Some((s.rank, s.rule));
            }
            i = (i + 1) & cap;
        }
    }
}

/// What a lookup found, and what it cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    /// Index of the winning rule in the slice the classifier was built from.
    pub rule: Option<u32>,
    /// Which table (in probe order) held it.
    pub table: Option<u32>,
    pub tuples_probed: u32,
}

/// The compiled classifier.
#[derive(Clone, Debug, Default)]
pub struct Classifier {
    tuples: Vec<Tuple>,
}

impl Classifier {
    /// Builds the classifier for `rules`; `Found::rule` indexes this slice.
    pub fn build(rules: &[ClassRule]) -> Classifier {
        let mut groups: HashMap<FlowKey, Vec<u32>> = HashMap::new();
        for (i, r) in rules.iter().enumerate() {
            groups.entry(r.mask).or_default().push(i as u32);
        }
        let mut tuples: Vec<Tuple> = groups
            .into_iter()
            .map(|(mask, members)| {
                // A load factor of at most a quarter: most lookups, hits and
                // misses alike, touch a single slot.
                let cap = (members.len() * 4).next_power_of_two().max(4);
                let empty = Slot { key: FlowKey::default(), rank: 0, rule: EMPTY };
                let fields = field_bits()
                    .into_iter()
                    .filter(|&(w, bits)| mask.0[w] & bits != 0)
                    .map(|(word, bits)| {
                        let fm = mask.0[word] & bits;
                        let mut values: Vec<u64> =
                            members.iter().map(|&i| rules[i as usize].value.0[word] & fm).collect();
                        values.sort_unstable();
                        values.dedup();
                        FieldValues { word, mask: fm, values }
                    })
                    .collect();
                let mut t = Tuple { mask, max_rank: 0, slots: vec![empty; cap], fields };
                for i in members {
                    let r = &rules[i as usize];
                    let rk = rank(r.priority, r.id);
                    t.max_rank = t.max_rank.max(rk);
                    t.insert(r.value.masked(&mask), rk, i);
                }
                t
            })
            .collect();
        tuples.sort_by_key(|t| std::cmp::Reverse(t.max_rank));
        Classifier { tuples }
    }

    /// Finds the best rule matching `key`.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Found {
        let mut best: Option<(u64, u32, u32)> = None;
        let mut probed = 0;
        for (i, t) in self.tuples.iter().enumerate() {
            if let Some((r, _, _)) = best {
                if r > t.max_rank {
                    break;
                }
            }
            probed += 1;
            if let Some((r, rule)) = t.find(key) {
                if best.is_none_or(|(b, _, _)| r > b) {
                    best = Some((r, rule, i as u32));
                }
            }
        }
        Found { rule: best.map(|b| b.1), table: best.map(|b| b.2), tuples_probed: probed }
    }

    /// The bits of `key` its lookup depended on (a "megaflow" mask, as Open
    /// vSwitch derives them): every key equal to `key` on them gets the
    /// same answer from [`Classifier::lookup`]. The lookup's own walk, with
    /// the same early exit; each tuple that holds a rule for the key adds
    /// its whole mask, each tuple that misses the bits that prove the miss
    /// ([`Tuple::miss_bits`]). Off the fast path: for first packets only.
    pub fn wildcards(&self, key: &FlowKey) -> FlowKey {
        let mut best: Option<u64> = None;
        let mut out = [0u64; WORDS];
        for t in &self.tuples {
            if best.is_some_and(|r| r > t.max_rank) {
                break;
            }
            let bits = match t.find(key) {
                Some((r, _)) => {
                    best = Some(best.map_or(r, |b| b.max(r)));
                    t.mask
                }
                None => t.miss_bits(key),
            };
            for (o, b) in out.iter_mut().zip(bits.0) {
                *o |= b;
            }
        }
        FlowKey(out)
    }

    /// Number of tuples (distinct masks).
    pub fn tuple_count(&self) -> usize {
        self.tuples.len()
    }

    /// The mask of table `i` (probe order).
    pub fn table_mask(&self, i: u32) -> Option<FlowKey> {
        self.tuples.get(i as usize).map(|t| t.mask)
    }

    /// Each tuple's mask and number of distinct masked values, best tuple first.
    pub fn tuple_summary(&self) -> Vec<(FlowKey, usize)> {
        self.tuples
            .iter()
            .map(|t| (t.mask, t.slots.iter().filter(|s| s.rule != EMPTY).count()))
            .collect()
    }
}

/// The reference: every rule checked in turn. Slow and obviously right.
pub fn linear_lookup(rules: &[ClassRule], key: &FlowKey) -> Option<u32> {
    rules
        .iter()
        .enumerate()
        .filter(|(_, r)| key.masked(&r.mask) == r.value.masked(&r.mask))
        .max_by_key(|(_, r)| rank(r.priority, r.id))
        .map(|(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow_key::{field, WORDS};
    use proptest::prelude::*;

    fn mask_of(fields: &[field::Field]) -> FlowKey {
        let mut m = FlowKey::default();
        for f in fields {
            m.set(*f, u64::MAX);
        }
        m
    }

    #[test]
    fn priority_then_lower_id_wins() {
        let m = mask_of(&[field::L4_DST]);
        let mut v = FlowKey::default();
        v.set(field::L4_DST, 53);
        let wild = FlowKey::default();
        let rules = [
            ClassRule { mask: wild, value: wild, priority: 1, id: 1 },
            ClassRule { mask: m, value: v, priority: 10, id: 7 },
            ClassRule { mask: m, value: v, priority: 10, id: 3 },
        ];
        let c = Classifier::build(&rules);
        assert_eq!(c.lookup(&v).rule, Some(2), "equal priority: lower id");
        let mut other = FlowKey::default();
        other.set(field::L4_DST, 80);
        assert_eq!(c.lookup(&other).rule, Some(0), "falls through to the catch-all");
        assert_eq!(Classifier::build(&rules[1..]).lookup(&other).rule, None);
    }

    #[test]
    fn early_exit_skips_hopeless_tuples() {
        let m1 = mask_of(&[field::L4_DST]);
        let m2 = mask_of(&[field::L4_SRC]);
        let mut v = FlowKey::default();
        v.set(field::L4_DST, 53);
        let rules = [
            ClassRule { mask: m1, value: v, priority: 100, id: 1 },
            ClassRule { mask: m2, value: FlowKey::default(), priority: 5, id: 2 },
        ];
        let c = Classifier::build(&rules);
        let f = c.lookup(&v);
        assert_eq!((f.rule, f.tuples_probed), (Some(0), 1));
    }

    /// Sixteen mask shapes, like a real rule set: ports, prefixes, protocols.
    fn shapes() -> Vec<FlowKey> {
        use field::*;
        let mut out = Vec::new();
        let sets: [&[Field]; 16] = [
            &[],
            &[IN_PORT],
            &[ETH_DST],
            &[ETH_SRC, ETH_DST],
            &[VLAN],
            &[ETHERTYPE],
            &[IP_PROTO],
            &[IP_PROTO, L4_DST],
            &[IP_PROTO, L4_SRC, L4_DST],
            &[IN_PORT, IP_PROTO, L4_DST],
            &[TUNNEL, VNI],
            &[TUNNEL, VNI, ETH_DST],
            &[IN_PORT, VLAN, ETH_DST],
            &[ETHERTYPE, IP_PROTO],
            &[VNI],
            &[IN_PORT, ETHERTYPE, IP_PROTO, L4_SRC],
        ];
        for s in sets {
            out.push(mask_of(s));
        }
        // IP prefixes: /24 on destination, /16 on source.
        out[5].0[6] = 0xffff_ff00;
        out[13].0[4] = 0xffff_0000;
        out
    }

    /// Keys drawn from a small value space so rules and packets collide often.
    fn small_key() -> impl Strategy<Value = FlowKey> {
        proptest::collection::vec(0u64..4, WORDS).prop_map(|v| {
            let mut k = FlowKey::default();
            for (i, x) in v.into_iter().enumerate() {
                // spread the small values over the fields of each word
                k.0[i] = x | (x << 16) | (x << 24) | (x << 32) | (x << 40) | (x << 48) | (x << 56);
            }
            k
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Any key that agrees with `k` on its wildcards' bits gets the rule
        /// `k` gets.
        #[test]
        fn keys_equal_on_the_wildcards_get_the_same_rule(
            specs in proptest::collection::vec((0usize..16, small_key(), 0u16..8, 0u32..1000), 0..60),
            keys in proptest::collection::vec((small_key(), small_key()), 1..40),
        ) {
            let shapes = shapes();
            let mut seen = std::collections::HashSet::new();
            let rules: Vec<ClassRule> = specs
                .into_iter()
                .filter(|s| seen.insert(s.3))
                .map(|(s, v, p, id)| ClassRule { mask: shapes[s], value: v, priority: p, id })
                .collect();
            let c = Classifier::build(&rules);
            for (k, noise) in keys.iter().map(|(k, n)| (k, n)).chain(rules.iter().map(|r| (&r.value, &r.value))) {
                let w = c.wildcards(k);
                let mut other = FlowKey::default();
                for i in 0..WORDS {
                    other.0[i] = (k.0[i] & w.0[i]) | (noise.0[i] & !w.0[i]);
                }
                prop_assert_eq!(linear_lookup(&rules, &other), linear_lookup(&rules, k));
            }
        }

        #[test]
        fn tuple_space_agrees_with_linear(
            specs in proptest::collection::vec((0usize..16, small_key(), 0u16..8, 0u32..1000), 0..60),
            keys in proptest::collection::vec(small_key(), 1..40),
        ) {
            let shapes = shapes();
            let mut seen = std::collections::HashSet::new();
            let rules: Vec<ClassRule> = specs
                .into_iter()
                .filter(|s| seen.insert(s.3)) // rule ids are unique
                .map(|(s, v, p, id)| ClassRule { mask: shapes[s], value: v, priority: p, id })
                .collect();
            let c = Classifier::build(&rules);
            // Through the flow cache as the pipeline uses it: misses fill the
            // cache; on the second pass most keys hit (a direct-mapped cache may
            // evict on a slot collision) and every answer must agree.
            let mut cache = crate::flow_cache::FlowCache::new();
            let mut hits = 0;
            for _pass in 0..2 {
                for k in keys.iter().chain(rules.iter().map(|r| &r.value)) {
                    let want = linear_lookup(&rules, k).unwrap_or(crate::flow_cache::NO_RULE);
                    let got = match cache.get(k, k.hash(), 1) {
                        Some(r) => {
                            hits += 1;
                            r
                        }
                        None => {
                            let r = c.lookup(k).rule.unwrap_or(crate::flow_cache::NO_RULE);
                            cache.insert(k, k.hash(), 1, r);
                            r
                        }
                    };
                    prop_assert_eq!(got, want);
                }
            }
            prop_assert!(hits > 0);
        }
    }
}
