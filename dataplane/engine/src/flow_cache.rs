//! The per-worker exact-match flow cache in front of the classifier (Open
//! vSwitch's EMC): a direct-mapped table from a whole flow key to the rule it
//! matched, or to "no rule". Entries carry the rule-set generation they were
//! made under, so a new generation invalidates the whole cache at once without
//! touching it.

use crate::flow_key::FlowKey;

/// Cache entries (a power of two). 8192 entries of 80 bytes: 640 KiB, the
/// order of a core's L2 cache, as in Open vSwitch.
pub const ENTRIES: usize = 8192;

/// Marks a cached miss: the flow matched no rule.
pub const NO_RULE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: FlowKey,
    generation: u64,
    rule: u32,
}

/// One worker's flow cache.
#[derive(Debug)]
pub struct FlowCache {
    entries: Box<[Entry]>,
}

impl Default for FlowCache {
    fn default() -> Self {
        Self::new()
    }
}

impl FlowCache {
    pub fn new() -> FlowCache {
        // Generation 0 is never a live generation, so every entry starts invalid.
        let e = Entry { key: FlowKey::default(), generation: 0, rule: NO_RULE };
        FlowCache { entries: vec![e; ENTRIES].into_boxed_slice() }
    }

    /// The cached rule for `key` under `generation`: `Some(NO_RULE)` for a
    /// cached miss, `None` if the flow is not cached.
    #[inline(always)]
    pub fn get(&self, key: &FlowKey, hash: u64, generation: u64) -> Option<u32> {
        let e = &self.entries[hash as usize & (ENTRIES - 1)];
        (e.generation == generation && e.key == *key).then_some(e.rule)
    }

    /// Drops `key`'s entry, if it has one: its next packet is classified
    /// (and so decided) again.
    pub fn forget(&mut self, key: &FlowKey, hash: u64) {
        let e = &mut self.entries[hash as usize & (ENTRIES - 1)];
        if e.key == *key {
            e.generation = 0;
        }
    }

    #[inline(always)]
    pub fn insert(&mut self, key: &FlowKey, hash: u64, generation: u64, rule: u32) {
        self.entries[hash as usize & (ENTRIES - 1)] = Entry { key: *key, generation, rule };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_miss_and_generation_invalidation() {
        let mut c = FlowCache::new();
        let k = FlowKey([1, 2, 3, 4, 5, 6, 7, 8]);
        let h = k.hash();
        assert_eq!(c.get(&k, h, 1), None);
        c.insert(&k, h, 1, 17);
        assert_eq!(c.get(&k, h, 1), Some(17));
        assert_eq!(c.get(&k, h, 2), None, "a new generation misses");
        let mut other = k;
        other.0[7] = 9;
        assert_eq!(c.get(&other, h, 1), None, "same slot, different key");
        c.insert(&k, h, 2, NO_RULE);
        assert_eq!(c.get(&k, h, 2), Some(NO_RULE));
        c.forget(&other, h);
        assert_eq!(c.get(&k, h, 2), Some(NO_RULE), "another key's forget leaves it");
        c.forget(&k, h);
        assert_eq!(c.get(&k, h, 2), None, "forgotten: the next packet is classified");
    }
}
