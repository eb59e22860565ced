//! The control side of MAC learning (`engine::learn`): the thread that
//! applies the workers' sightings and publishes the learned FDB, and the
//! clock both it and the API read ages by.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engine::learn::{L2State, L2View, Learner};
use engine::pipeline::Published;

/// The shortest time between two applies: a burst of new MACs is applied
/// in batches (each apply publishes a new snapshot), so under a burst a new
/// MAC floods, and a move seen by another worker takes, at most this long
/// (one worker sees its own moves at once). A lone one is applied as soon
/// as the thread wakes.
pub const APPLY_EVERY: Duration = Duration::from_millis(5);

/// How long the thread sleeps while the table holds entries and nothing
/// wakes it: their ageing walk, and the refreshes that wait for it.
const AGE_EVERY: Duration = Duration::from_nanos(engine::learn::AGE_EVERY_NS);

/// Learned state and its clock.
pub struct Learning {
    state: Arc<L2State>,
    epoch: Instant,
    applies: AtomicU64,
}

impl Default for Learning {
    fn default() -> Self {
        Learning { state: L2State::new(), epoch: Instant::now(), applies: AtomicU64::new(0) }
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

    /// Wakes the thread: a new rule set to carry the table over to.
    pub fn wake(&self) {
        self.state.wake();
    }

    /// How many times the thread has applied sightings.
    pub fn applies(&self) -> u64 {
        self.applies.load(Ordering::Relaxed)
    }

    /// Starts the thread that applies sightings under the rule set
    /// published at the time, until `stop` (whoever sets it unparks the
    /// thread). It sleeps until woken ([`L2State::wake`]: news from a
    /// worker, a new rule set, the stop) or, while the table holds entries,
    /// until their next ageing walk: an idle daemon's learning costs no
    /// wake-ups (it used to wake every 5 ms, 200 times a second).
    pub fn spawn(
        self: &Arc<Self>,
        published: Arc<Published>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<JoinHandle<()>> {
        let me = Arc::clone(self);
        std::thread::Builder::new().name("overlayd-learn".into()).spawn(move || {
            me.state.set_waker(std::thread::current());
            let mut last: Option<Instant> = None;
            while !stop.load(Ordering::Acquire) {
                if let Some(gap) = last.and_then(|l| APPLY_EVERY.checked_sub(l.elapsed())) {
                    std::thread::sleep(gap);
                }
                me.state.apply(&published.current(), me.now_ns());
                me.applies.fetch_add(1, Ordering::Relaxed);
                last = Some(Instant::now());
                if stop.load(Ordering::Acquire) {
                    break;
                }
                if me.state.holds_entries() {
                    std::thread::park_timeout(AGE_EVERY);
                } else {
                    std::thread::park();
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::compile::compile;
    use engine::learn::Loc;
    use engine::model::Config;

    const CONF: &str = r#"
generation = 1

[[ports]]
name = "wl0"
kind = "workload"

[[rules]]
id = 1
match = { in_port = "wl0" }
actions = [{ forward_l2 = 42 }]

[[networks]]
vni = 42
ageing_secs = 60
"#;

    /// Waits up to a second for `f`.
    fn soon(f: impl Fn() -> bool) -> bool {
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        f()
    }

    /// Idle, the thread sleeps (it woke 200 times a second); a new address
    /// from a worker, a new rule set and the stop each wake it at once.
    #[test]
    fn the_learning_thread_sleeps_until_something_needs_it() {
        let rs = compile(&Config::from_toml(CONF).unwrap()).unwrap();
        let generation = rs.generation;
        let published = Arc::new(Published::new(rs));
        let learning = Arc::new(Learning::default());
        let mut worker = learning.learner();
        let stop = Arc::new(AtomicBool::new(false));
        let t = learning.spawn(Arc::clone(&published), Arc::clone(&stop)).unwrap();

        assert!(soon(|| learning.applies() >= 1), "no first apply");
        std::thread::sleep(Duration::from_millis(300));
        let idle = learning.applies();
        assert!(idle <= 2, "an idle thread applied {idle} times in 300 ms");

        // A new MAC: applied long before any timer would have woken it
        // (with an empty table there is none).
        let mac = [2, 0, 0, 0, 0, 0x0a];
        assert!(worker.saw_mac(generation, 42, mac, Loc::Port(0), learning.now_ns()));
        assert!(
            soon(|| learning.snapshot().mac(42, mac) == Some(Loc::Port(0))),
            "the new MAC was not applied"
        );

        // The same MAC at the same place again is no news: no event.
        assert!(!worker.saw_mac(generation, 42, mac, Loc::Port(0), learning.now_ns()));

        // A new rule set.
        let before = learning.applies();
        learning.wake();
        assert!(soon(|| learning.applies() > before), "not woken by wake()");

        // The stop: whoever sets it unparks the thread, which ends.
        stop.store(true, Ordering::Release);
        t.thread().unpark();
        assert!(soon(|| t.is_finished()), "the thread did not end after the stop");
        t.join().unwrap();
    }
}
