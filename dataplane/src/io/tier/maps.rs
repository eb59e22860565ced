//! One program's tier maps, as its owner writes them: entries by slot and
//! their slots by hash, masks, tunnels, counters, outputs, the epoch that
//! retires per-CPU copies, and what a successor judges pinned maps by.

use aya::maps::{Array, DevMap, HashMap, MapData, PerCpuArray};
use aya::Ebpf;
use engine::compile::RuleSet;
use engine::flow_key::FlowKey;
use engine::tier::TierDecap;

use super::layout::{
    tunnel_entries, TierCount, TierMask, TierValue, TunnelKey, TunnelValue, TIER_MASKS,
};
use crate::io::map_batch::PerCpuPairs;
use crate::io::pin::PinMeta;

/// One program's flow, counter and output maps: the owner's.
pub struct TierMaps {
    /// Entries' slots by [`tier_hash`] of their key.
    pub(super) flows: HashMap<MapData, u64, u32>,
    /// Entries by slot: a slot is written only once it has been free for
    /// [`GRACE`](super::GRACE) (the kernel would reuse a hash element at once), or in
    /// place with a new generation alone.
    pub(super) entries: Array<MapData, TierValue>,
    /// The tunnels of decapsulated flows (uplinks).
    pub(super) tunnels: HashMap<MapData, TunnelKey, TunnelValue>,
    /// The masks the program tries, in order.
    pub(super) masks: Array<MapData, TierMask>,
    pub(super) counts: PerCpuArray<MapData, TierCount>,
    pub(super) tx: DevMap<MapData>,
    /// Where the generation and content of the entries' rule set is
    /// recorded, for a successor to judge them by.
    pub(super) meta: Array<MapData, PinMeta>,
    /// Moved on after every delete or overwrite in `flows`: the programs'
    /// per-CPU copies of entries are used only under the value they were
    /// made under (steer.bpf.c, `tier_cache`).
    pub(super) epoch: Array<MapData, u64>,
    pub(super) capacity: u32,
}

/// One program's generation map: the daemon's commit path writes it.
pub struct TierGen(pub(super) Array<MapData, u64>);

impl TierMaps {
    /// Takes the tier's maps out of a loaded object whose flow and counter
    /// maps hold `capacity` entries.
    /// `meta`: a descriptor of the program's `meta` map.
    pub fn take(
        ebpf: &mut Ebpf,
        capacity: u32,
        meta: std::os::fd::OwnedFd,
    ) -> Result<(TierMaps, TierGen), TierMapError> {
        let mut take = |name: &'static str| {
            ebpf.take_map(name)
                .ok_or(TierMapError { map: name, reason: "the object has no such map".into() })
        };
        let e = |map: &'static str| {
            move |e: aya::maps::MapError| TierMapError { map, reason: e.to_string() }
        };
        let flows = HashMap::try_from(take("tier_flows")?).map_err(e("tier_flows"))?;
        let entries = Array::try_from(take("tier_entries")?).map_err(e("tier_entries"))?;
        let tunnels = HashMap::try_from(take("tier_tunnels")?).map_err(e("tier_tunnels"))?;
        let counts = PerCpuArray::try_from(take("tier_counts")?).map_err(e("tier_counts"))?;
        let masks = Array::try_from(take("tier_masks")?).map_err(e("tier_masks"))?;
        let tx = DevMap::try_from(take("tier_tx")?).map_err(e("tier_tx"))?;
        let gen = Array::try_from(take("tier_gen")?).map_err(e("tier_gen"))?;
        let epoch = Array::try_from(take("tier_epoch")?).map_err(e("tier_epoch"))?;
        let meta = MapData::from_fd(meta).map_err(e("meta"))?;
        let meta = Array::try_from(aya::maps::Map::Array(meta)).map_err(e("meta"))?;
        let maps = TierMaps { flows, entries, tunnels, masks, counts, tx, meta, epoch, capacity };
        Ok((maps, TierGen(gen)))
    }

    /// Deletes the entry under `hash`, then retires every program's copy
    /// of it: from the next program run on, no packet takes its action.
    /// Gone already is not an error.
    pub(super) fn delete(&mut self, hash: u64) {
        let _ = self.flows.remove(&hash);
        self.next_epoch();
    }

    /// Writes entry `v` into its slot, then makes `hash` find it there.
    /// The slot must be free for [`GRACE`](super::GRACE) or hold the same entry (a new
    /// generation is the only change a run may see half made).
    pub(super) fn put(&mut self, hash: u64, v: TierValue) -> Result<(), aya::maps::MapError> {
        self.entries.set(v.slot, v, 0)?;
        self.flows.insert(hash, v.slot, 0)
    }

    /// Puts `v` under `hash` in place of the entry there, then retires
    /// every program's copy of the one it replaces.
    pub(super) fn overwrite(&mut self, hash: u64, v: TierValue) -> Result<(), aya::maps::MapError> {
        let r = self.put(hash, v);
        self.next_epoch();
        r
    }

    /// Every entry `tier_flows` finds, with its hash (a slot the map names
    /// that cannot be read, or holds an entry of another slot, is left out).
    pub(super) fn all(&self) -> Vec<(u64, TierValue)> {
        self.flows
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(h, slot)| self.entries.get(&slot, 0).ok().map(|v| (h, slot, v)))
            .filter(|(_, slot, v)| v.slot == *slot)
            .map(|(h, _, v)| (h, v))
            .collect()
    }

    /// Moves `tier_epoch` on. A failed write would leave copies in use
    /// that should not be; it is a map the program owns, so it cannot
    /// fail but for a kernel out of memory, which is logged.
    pub(super) fn next_epoch(&mut self) {
        let now = self.epoch.get(&0, 0).unwrap_or(0);
        if let Err(e) = self.epoch.set(0, now.wrapping_add(1), 0) {
            tracing::error!(error = %e, "XDP tier: cannot retire the programs' copies of entries");
        }
    }

    /// Makes the tunnel of decapsulated entry `d` current (generation of
    /// `rs`) in the program's tunnel map.
    pub(super) fn write_tunnel(
        &mut self,
        rs: &RuleSet,
        d: &TierDecap,
    ) -> Result<(), aya::maps::MapError> {
        for (k, v) in tunnel_entries(rs, d) {
            self.tunnels.insert(k, v, 0)?;
        }
        Ok(())
    }

    /// The masks in use, in slot order (up to the first unused slot, where
    /// the program stops).
    pub(super) fn live_masks(&self) -> Vec<FlowKey> {
        (0..TIER_MASKS)
            .map_while(|i| self.masks.get(&i, 0).ok().filter(|m| m.live != 0))
            .map(|m| FlowKey(m.w))
            .collect()
    }

    /// Marks every mask slot unused, the first one first (the program stops
    /// at the first unused slot).
    pub(super) fn clear_masks(&mut self) {
        for i in 0..TIER_MASKS {
            let _ = self.masks.set(i, TierMask::default(), 0);
        }
    }

    /// Empties the tunnel map (its values are of an older rule set).
    pub(super) fn clear_tunnels(&mut self) {
        let keys: Vec<TunnelKey> = self.tunnels.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = self.tunnels.remove(&k);
        }
    }

    /// Cumulative packets and bytes of slots `0..n` into `out`, in a few
    /// system calls; false if the kernel refused.
    pub(super) fn read_batch(
        &self,
        b: &mut PerCpuPairs,
        n: u32,
        out: &mut Vec<(u64, u64)>,
    ) -> bool {
        use aya::maps::IterableMap;
        use std::os::fd::AsFd;
        let fd = self.counts.map().fd().as_fd();
        match b.read(fd, n, out) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "batch read of the tier's counters");
                false
            }
        }
    }

    /// Cumulative packets and bytes of `slot`, summed over CPUs.
    pub(super) fn read(&self, slot: u32) -> Option<(u64, u64)> {
        let v = self.counts.get(&slot, 0).ok()?;
        Some(v.iter().fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes)))
    }
}

/// A map of the tier that the loaded object lacks or that has the wrong type.
#[derive(Debug, thiserror::Error)]
#[error("the tier's map {map}: {reason}")]
pub struct TierMapError {
    pub map: &'static str,
    pub reason: String,
}
