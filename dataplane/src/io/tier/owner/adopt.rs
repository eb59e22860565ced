//! What crosses a restart or a planned upgrade of the owner: the entries
//! a previous overlayd left in the pinned maps, which a new owner adopts
//! only under the rule set they were decided under (its fingerprint), and
//! where the last harvest left their counters, so that nothing the tier
//! forwarded between the two owners is counted twice or lost.

use std::sync::atomic::Ordering;
use std::time::Instant;

use engine::compile::RuleSet;
use engine::flow_key::{FlowKey, WORDS};
use serde::{Deserialize, Serialize};

use super::{Slot, State};
use crate::io::pin::PinMeta;
use crate::io::tier::key::tier_hash;
use crate::io::tier::layout::TierValue;

/// Where a stopped owner's last harvest left each live entry's counters:
/// per port number, (slot, key, packets, bytes). A successor adopting the
/// entries counts from there, so what the tier forwarded between the two
/// owners is counted once (io/upgrade.rs hands it over).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierBaselines(pub Vec<(u16, Vec<SlotBaseline>)>);

/// A slot, the key of its entry, and its packets and bytes at the harvest.
pub type SlotBaseline = (u32, [u64; WORDS], u64, u64);

impl TierBaselines {
    fn find(&self, port: usize, slot: u32, key: &[u64; WORDS]) -> Option<(u64, u64)> {
        let (_, slots) = self.0.iter().find(|(p, _)| *p as usize == port)?;
        let (_, _, p, b) = slots.iter().find(|(s, k, _, _)| *s == slot && k == key)?;
        Some((*p, *b))
    }
}

/// What the rule set `rs` decides, as one number: two rule sets with the
/// same configuration (whatever their generation) have the same one. A
/// restarted owner adopts pinned entries only under the rule set they were
/// decided under (see [`Tier::start`]).
pub fn fingerprint(rs: &RuleSet) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut c = rs.config.clone();
    c.generation = 0;
    // SipHash with fixed keys: the same in every process of this binary.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&c).unwrap_or_default().hash(&mut h);
    h.finish().max(1)
}

impl State {
    /// Takes over the entries left in the maps by a previous owner (the maps
    /// are pinned and outlive the process). An entry is kept only if it was
    /// decided under the rule set recorded in the port's `meta` map (its
    /// generation) and that rule set had the same content as the current
    /// one (its fingerprint): then the current rule set decides its flow
    /// the same way. Every other entry is deleted now, before the workers
    /// start and before the current generation is written, so no rule the
    /// current rule set does not hold is applied by an adopted entry. Kept
    /// entries are restamped with the current generation and counted from
    /// where `handed` says the previous owner's last harvest left them, or
    /// else from what their counters hold now.
    pub(in crate::io::tier) fn adopt(&mut self, handed: &TierBaselines) {
        let fp = fingerprint(&self.rules);
        let generation = self.rules.generation;
        let now = Instant::now();
        let (mut kept, mut deleted) = (0u64, 0u64);
        for (port, ing) in self.ingress.iter_mut().enumerate() {
            let Some(ing) = ing else { continue };
            let meta = ing.maps.meta.get(&0, 0).unwrap_or_default();
            let trusted = meta.fingerprint == fp;
            ing.maps.clear_tunnels();
            // The predecessor's list is kept as it is: its pinned program
            // is forwarding with it while this one adopts, and a cleared
            // slot would send the kept entries' packets to AF_XDP (lost
            // after a kill -9, counted twice across an upgrade). A mask of
            // an entry deleted here only costs a lookup; the list is
            // cleared at the next rule-set change.
            ing.masks = ing.maps.live_masks();
            let found: Vec<(u64, TierValue)> = ing.maps.all();
            // Taken off the free list in one pass at the end: one pass per
            // entry over a list as long as the tier (131 072 by default)
            // made adopting a few thousand entries take seconds.
            let mut taken = std::collections::HashSet::new();
            for (hash, v) in found {
                let k = v.key;
                let key = FlowKey(k);
                let slot = v.slot as usize;
                let free = ing.slots.get(slot).is_some_and(|s| matches!(s, Slot::Free));
                let entry =
                    (trusted && v.generation == meta.generation && free && hash == tier_hash(&k))
                        .then(|| v.entry(key, &self.rules))
                        .flatten()
                        .filter(|e| e.in_port as usize == port);
                let restamped = TierValue { generation, ..v };
                let tunnel_ok = match entry.as_ref().and_then(|e| e.decap.as_ref()) {
                    Some(d) => ing.maps.write_tunnel(&self.rules, d).is_ok(),
                    None => true,
                };
                let mask_ok = entry.as_ref().is_some_and(|e| ing.add_mask(&e.mask).is_ok());
                let ok = entry.is_some()
                    && tunnel_ok
                    && mask_ok
                    && (v.generation == generation || ing.maps.overwrite(hash, restamped).is_ok());
                let (Some(mut e), true) = (entry, ok) else {
                    ing.maps.delete(hash);
                    deleted += 1;
                    continue;
                };
                e.generation = generation;
                ing.seen[slot] = handed
                    .find(port, slot as u32, &k)
                    .or_else(|| ing.maps.read(slot as u32))
                    .unwrap_or_default();
                taken.insert(slot as u32);
                ing.by_hash.insert(hash, slot as u32);
                ing.high = ing.high.max(slot as u32 + 1);
                ing.slots[slot] = Slot::Live { entry: e, active: now };
                kept += 1;
            }
            if !taken.is_empty() {
                ing.free.retain(|s| !taken.contains(s));
            }
            let m = PinMeta { generation, fingerprint: fp, ..meta };
            if let Err(e) = ing.maps.meta.set(0, m, 0) {
                tracing::error!(error = %e, "XDP tier: cannot record the rule set of its entries");
            }
        }
        self.stats.adopted.fetch_add(kept, Ordering::Relaxed);
        self.stats.invalidations.fetch_add(deleted, Ordering::Relaxed);
        if kept + deleted > 0 {
            tracing::info!(
                adopted = kept,
                invalidated = deleted,
                generation,
                "XDP tier: took over the entries a previous overlayd left"
            );
        }
    }

    /// Records the current rule set in every port's `meta` map: the entries
    /// installed from now on were decided under it.
    pub(super) fn record_rules(&mut self) {
        let fp = fingerprint(&self.rules);
        for ing in self.ingress.iter_mut().flatten() {
            let meta = ing.maps.meta.get(&0, 0).unwrap_or_default();
            let m = PinMeta { generation: self.rules.generation, fingerprint: fp, ..meta };
            if let Err(e) = ing.maps.meta.set(0, m, 0) {
                tracing::error!(error = %e, "XDP tier: cannot record the rule set of its entries");
            }
        }
    }

    /// Where the last harvest left each live entry's counters, for a
    /// successor to count from.
    pub(in crate::io::tier) fn baselines(&self) -> TierBaselines {
        let ports = self.ingress.iter().enumerate().filter_map(|(port, ing)| {
            let ing = ing.as_ref()?;
            let slots = ing
                .by_hash
                .values()
                .filter_map(|&slot| match &ing.slots[slot as usize] {
                    Slot::Live { entry, .. } => {
                        let (p, b) = ing.seen[slot as usize];
                        Some((slot, entry.key.0, p, b))
                    }
                    _ => None,
                })
                .collect();
            Some((port as u16, slots))
        });
        TierBaselines(ports.collect())
    }
}
