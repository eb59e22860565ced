//! The control side of MAC learning (`engine::learn`): the thread that
//! applies the workers' sightings and publishes the learned FDB, and the
//! clock both it and the API read ages by.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engine::learn::{L2State, L2View, Learner};
use engine::pipeline::Published;

/// How often sightings are applied: how long a new MAC floods, and a move
/// seen by another worker takes, at most (one worker sees its own moves at
/// once).
pub const APPLY_EVERY: Duration = Duration::from_millis(5);

/// Learned state and its clock.
pub struct Learning {
    state: Arc<L2State>,
    epoch: Instant,
}

impl Default for Learning {
    fn default() -> Self {
        Learning { state: L2State::new(), epoch: Instant::now() }
    }
}

impl Learning {
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// A worker's side, with its own queue.
    pub fn learner(&self) -> Learner {
        self.state.learner()
    }

    /// What the workers read now.
    pub fn snapshot(&self) -> Arc<engine::learn::L2Snapshot> {
        self.state.snapshot()
    }

    /// Learned MACs and bindings with their ages, and the counters.
    pub fn view(&self) -> L2View {
        self.state.view(self.now_ns())
    }

    /// Starts the thread that applies sightings every `APPLY_EVERY` under the
    /// rule set published at the time, until `stop`.
    pub fn spawn(
        self: &Arc<Self>,
        published: Arc<Published>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<JoinHandle<()>> {
        let me = Arc::clone(self);
        std::thread::Builder::new().name("overlayd-learn".into()).spawn(move || {
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(APPLY_EVERY);
                me.state.apply(&published.current(), me.now_ns());
            }
        })
    }
}
