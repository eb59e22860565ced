//! The programs' generation maps: the daemon's commit path writes the
//! rule set's generation into each before it answers (see the module docs
//! of [`super`]: why that is atomic), and a capture pauses the tier.

use std::sync::Mutex;

use super::maps::TierGen;
use crate::lock;

#[derive(Debug, thiserror::Error)]
#[error("setting the XDP tier's generation on {ifname}: {reason}")]
pub struct TierGenError {
    ifname: String,
    reason: String,
}

/// The generation maps of the running datapath's programs, written by the
/// daemon's commit path (see the module docs: why it is atomic).
#[derive(Default)]
pub struct TierGenerations {
    maps: Mutex<Vec<(String, TierGen)>>,
    /// The rule set's generation last published, and whether the tier is
    /// paused (a live capture runs): then the programs hold [`PAUSED`],
    /// which no entry carries, so every packet misses and takes the AF_XDP
    /// path where the capture sees it.
    state: Mutex<(u64, bool)>,
}

/// The generation programs hold while the tier is paused.
pub const PAUSED: u64 = u64::MAX;

impl TierGenerations {
    /// Writes `generation` into every program's generation map (or keeps
    /// them paused, remembering it).
    pub fn publish(&self, generation: u64) -> Result<(), TierGenError> {
        let mut st = lock(&self.state);
        st.0 = generation;
        self.write(if st.1 { PAUSED } else { generation })
    }

    /// Pauses the tier (every entry inert) or resumes it (the entries of the
    /// current rule set live again), before returning.
    pub fn pause(&self, paused: bool) -> Result<(), TierGenError> {
        let mut st = lock(&self.state);
        st.1 = paused;
        self.write(if paused { PAUSED } else { st.0 })
    }

    pub(super) fn write(&self, value: u64) -> Result<(), TierGenError> {
        let mut maps = lock(&self.maps);
        let mut first_err = None;
        for (ifname, g) in maps.iter_mut() {
            if let Err(e) = g.0.set(0, value, 0) {
                first_err
                    .get_or_insert(TierGenError { ifname: ifname.clone(), reason: e.to_string() });
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Makes `maps` the ones to write, each set to the current generation
    /// (read under the same lock as `publish` writes, so a commit running
    /// meanwhile cannot be overtaken by an older value).
    pub fn replace(
        &self,
        maps: Vec<(String, TierGen)>,
        current: impl Fn() -> u64,
    ) -> Result<(), TierGenError> {
        let mut st = lock(&self.state);
        let mut g = lock(&self.maps);
        *g = maps;
        st.0 = current();
        let generation = if st.1 { PAUSED } else { st.0 };
        for (ifname, m) in g.iter_mut() {
            m.0.set(0, generation, 0)
                .map_err(|e| TierGenError { ifname: ifname.clone(), reason: e.to_string() })?;
        }
        Ok(())
    }

    /// Forgets the maps (their datapath stopped).
    pub fn clear(&self) {
        lock(&self.maps).clear();
    }
}
