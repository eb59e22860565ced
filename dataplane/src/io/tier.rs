//! The XDP fast tier's maps and their one owner.
//!
//! The engine decides the first packet of every flow; a worker hands the
//! entries the engine says the tier can take ([`engine::tier::decide`]) to
//! the owner through a bounded queue ([`TierLink`]: no system call, lock or
//! allocation in the worker). The owner ([`Tier`], one thread per datapath)
//! installs them in the ingress port's program, each in a slot of its own
//! (its entry in `tier_entries`, its counters in `tier_counts`, per CPU)
//! found through `tier_flows`, a hash table from [`tier_hash`] of the
//! entry's masked key to the slot; harvests those counters into the engine's
//! counters where the pipeline would have counted the same packets, and
//! retires entries: when the rule set changes, when a tunnel's next hop
//! changes, when an output port stops taking redirected frames, and when a
//! flow has been idle for [`IDLE`]. Whatever it cannot install is left on
//! AF_XDP and counted under a named reason; nothing is dropped because of
//! the tier.
//!
//! **Generations.** Every entry carries the generation of the rule set it
//! was decided under; the program ignores an entry whose generation is not
//! the one in `tier_gen`. The daemon's commit path publishes a new rule set
//! and then, before the API answers, writes its generation into every
//! program's `tier_gen` ([`TierGenerations::publish`], called through the
//! daemon's publish hook). That write is atomic: the value is one aligned
//! 64-bit word of an array map, which the kernel updates in place with a
//! single store, and the program reads it with a single load, so a packet
//! sees either the old generation or the new one, never a mix; once the
//! system call returns, every lookup that starts sees the new one. So after
//! the 2xx, no frame that arrives is forwarded by an entry of an older rule
//! set (a frame the program judged a moment before the write may still be
//! on its way out of the same NAPI poll, as a frame in a worker's batch may
//! be). A worker that is still on the old rule set may install an entry of
//! the old generation afterwards: the program ignores it.
//!
//! **Per-CPU copies.** Each program keeps per-CPU copies of the entries it
//! hits (`tier_cache`), each stamped with `tier_epoch` as it was when the
//! program read it, before looking in `tier_flows`. The owner moves
//! `tier_epoch` on after every delete and overwrite
//! ([`TierMaps::delete`], [`TierMaps::overwrite`]), so a copy stops being
//! used as the entry does: a run that read the epoch before the write may
//! still use it, as a run that found the entry before the delete may.
//!
//! **Room.** Only the owner removes entries (idle or retired): the table
//! is a plain hash the size of the owner's slots, so an entry it installed
//! stays until it deletes it. (An LRU map evicted live entries before it
//! was full, and could not tell busy ones, whose hits the per-CPU copies
//! serve.)
//!
//! **Slots.** The entries live in an array by slot, not in the hash table:
//! the kernel reuses a hash element as soon as it is deleted or replaced,
//! so a program run that found an entry there just before the owner
//! removed it could read it half overwritten by the next. A slot is
//! written only once it has been free for [`GRACE`] (as its counters are
//! reused), or in place with nothing but a new generation (adoption), so a
//! run reads either the entry it found or, past a deleted hash, another
//! flow's entry that its own key check refuses.
//!
//! **Counting.** An entry's counters live apart from the entry, in the
//! slot the owner gave it. A retired entry is deleted first and harvested
//! for the last time after [`GRACE`], longer than any program run that
//! found the entry before the delete takes (one NAPI poll, microseconds);
//! only then is its slot reused. Counters are harvested every [`TICK`] and
//! whenever someone reads the counters (the counter board's refresh), so
//! `counters` is exact once traffic stops, and the conservation identity
//! holds across both tiers.
//!
//! **Output ports.** The owner asks the kernel every [`PROBE_EVERY`]
//! whether each output port's driver takes redirected frames
//! (`ndo_xdp_xmit`). A veth takes them only while its peer has NAPI (an XDP
//! program, or GRO on); if the peer loses it, frames the tier redirects
//! there are dropped by the kernel until the next probe retires the port's
//! entries: a window of at most a second, on veths whose far end changes
//! its settings. A port whose MTU changes has its entries retired likewise.
//!
//! **Where it is.** `layout`: the programs' map values, field for field;
//! `key`: the program's flow key and map key, in Rust; `maps`: one
//! program's maps as the owner writes them; `generation`: the generation
//! maps the commit path writes; `owner`: the owner's state, what it
//! installs, harvests and retires; `status`: what it reports. This file:
//! the worker's end ([`TierLink`]) and the handle that starts and stops
//! the owner's thread ([`Tier`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use engine::tier::{NotInTier, TierEntry};

mod generation;
mod key;
mod layout;
mod maps;
mod owner;
mod status;

pub use generation::{TierGenError, TierGenerations, PAUSED};
pub use key::{tier_hash, tier_key};
pub use layout::{
    tunnel_entries, TierCount, TierMask, TierValue, TunnelKey, TunnelValue, TIER_MASKS,
};
pub use maps::{TierGen, TierMapError, TierMaps};
pub use owner::{
    fingerprint, settles, SlotBaseline, TierBaselines, TierLinks, TierPort, GRACE, IDLE, TICK,
};
pub use status::{InstallFailure, TierPortStatus, TierProgramStats, TierStatus};

use crate::lock;
use owner::{Offer, State};
use status::Stats;

/// Entries waiting for the owner; beyond, offers are refused (and counted).
pub const QUEUE: usize = 4096;

/// A worker's end: offers entries to the owner and counts the flows the
/// engine kept for itself.
#[derive(Clone)]
pub struct TierLink {
    tx: SyncSender<Offer>,
    stats: Arc<Stats>,
}

impl TierLink {
    /// Hands `e` to the owner; never blocks. False if the queue was full
    /// (counted): the flow stays on AF_XDP until it is offered again.
    #[inline]
    pub fn offer(&self, e: TierEntry) -> bool {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send(Offer::Entry(e))
        {
            self.stats.fail(InstallFailure::QueueFull);
            return false;
        }
        true
    }

    #[inline]
    pub fn not_in_tier(&self, r: NotInTier) {
        self.stats.not_in_tier[r as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// The owner: a thread and the state it shares with status readers.
pub struct Tier {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    /// Wakes the owner's thread to see `stop` (it may sleep a `REST_TICK`).
    wake: SyncSender<Offer>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    stats: Arc<Stats>,
}

impl Tier {
    /// Starts the owner over `ports` (indexed by port number), adopting the
    /// entries their maps hold (pinned by a previous overlayd) that the
    /// current rule set would decide the same way, and deleting the others
    /// before any worker runs ([`State::adopt`]).
    ///
    /// `handed`: where the previous owner's last harvest left the entries
    /// (a planned upgrade); entries it does not name are counted from what
    /// their counters hold now.
    pub fn start(
        ports: Vec<TierPort>,
        links: TierLinks,
        handed: &TierBaselines,
    ) -> std::io::Result<(Tier, TierLink)> {
        let stats = Arc::new(Stats::default());
        let mut st = State::new(ports, links, Arc::clone(&stats));
        st.adopt(handed);
        st.probe_outputs(true);
        let shared = Arc::new(Shared { state: Mutex::new(st), stats: Arc::clone(&stats) });
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, stop2) = (Arc::clone(&shared), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("overlayd-tier".into())
            .spawn(move || owner::run(&s2.state, rx, &stop2))?;
        let wake = tx.clone();
        Ok((Tier { shared, stop, wake, thread: Some(thread) }, TierLink { tx, stats }))
    }

    /// What the counter board runs before each snapshot: every entry's
    /// counters harvested, so `counters` is exact.
    pub fn refresher(&self) -> engine::counters::Refresh {
        let s = Arc::clone(&self.shared);
        Arc::new(move || lock(&s.state).harvest())
    }

    pub fn status(&self) -> TierStatus {
        lock(&self.shared.state).status(&self.shared.stats)
    }

    /// Stops the owner, harvests for the last time and folds the tier's
    /// counters into the totals: where that harvest left each live entry.
    /// The programs' tier lookups must be off, or their entries handed on.
    pub fn stop(mut self) -> TierBaselines {
        self.stop_thread();
        let mut st = lock(&self.shared.state);
        std::thread::sleep(GRACE);
        st.harvest();
        st.retire_from_board();
        st.baselines()
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Release);
        // A full queue means the thread is awake already.
        let _ = self.wake.try_send(Offer::Wake);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Tier {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

#[cfg(test)]
mod tests;
