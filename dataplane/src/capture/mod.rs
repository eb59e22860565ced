//! Live capture: the datapath's packets, with their fate, recorded to pcapng.
//!
//! ```text
//!  API (stream.rs)                 CaptureTap                  workers (worker.rs)
//!  arm(session) ───────────► generation += 1, session ──► seen once per loop: arm
//!                                                         per batch, when armed:
//!  pcapng ◄── drain `full` ◄──────── Session ◄─────────── copy, judge, push (or count lost)
//!             recycle into `free` ──────────────────────► take a buffer
//!  disarm ──────────────────► generation += 1, none ────► seen: disarm
//! ```
//!
//! Disarmed, a worker pays one load and compare per loop and one branch per
//! batch. Armed, it runs the pipeline with a recording tracer (`worker.rs`)
//! and copies the packets the filter selects into buffers from a fixed pool;
//! when the pool is empty the packet is counted as lost, never waited for,
//! and forwarding goes on untouched. The API side drains the records,
//! writes them as pcapng (`stream.rs`) and recycles the buffers.

mod stream;
#[cfg(test)]
mod tests;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use crossbeam_queue::ArrayQueue;
use encap::DropReason;
use engine::compile::RuleSet;
use engine::trace::Stage;

use crate::api_types::{CaptureDirection, CaptureRequest, Verdict};
use crate::io::doorbell::Doorbells;
use crate::io::memory::FRAME_SIZE;
use crate::io::pcapng::Direction;

pub use stream::{stream, Bounds};
pub use worker::{Armed, WorkerCapture};

/// Records in flight between the workers and the API: buffers of a frame
/// each, allocated when a capture is armed.
pub const RING: usize = 2048;

/// Which tier judged a packet. Only the software pipeline exists today; a
/// kernel tier will say so here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Software,
}

impl Tier {
    pub const fn name(self) -> &'static str {
        match self {
            Tier::Software => "software",
        }
    }
}

/// Why a capture was refused.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("no port named {name:?}")]
    UnknownPort { index: usize, name: String },
    #[error("no tunnel named {0:?}")]
    UnknownTunnel(String),
    #[error("no rule with id {0}")]
    UnknownRule(u32),
    #[error("no drop reason named {0:?} (the names are those of `overlayctl counters`)")]
    UnknownReason(String),
    #[error("must be at least 1")]
    Zero { field: &'static str },
    #[error("must be between 64 and 65535")]
    Snaplen,
    #[error("a capture is already running: one at a time")]
    Busy,
    #[error("overlayd is stopping")]
    Closed,
}

impl CaptureError {
    /// The request field at fault.
    pub fn path(&self) -> Option<String> {
        Some(match self {
            CaptureError::UnknownPort { index, .. } => format!("ports[{index}]"),
            CaptureError::UnknownTunnel(_) => "tunnel".into(),
            CaptureError::UnknownRule(_) => "rule".into(),
            CaptureError::UnknownReason(_) => "reason".into(),
            CaptureError::Zero { field } => (*field).into(),
            CaptureError::Snaplen => "snaplen".into(),
            CaptureError::Busy | CaptureError::Closed => return None,
        })
    }
}

/// What a capture selects, by name, checked against the rule set it was
/// armed under; each worker resolves it against its own generation.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Empty: every port.
    pub ports: Vec<String>,
    pub direction: CaptureDirection,
    pub tunnel: Option<String>,
    /// A rule id.
    pub rule: Option<u32>,
    pub verdict: Option<Verdict>,
    pub reason: Option<DropReason>,
}

/// One packet as recorded: its bytes (up to the snapshot length) and fate.
#[derive(Clone, Debug)]
pub struct Captured {
    pub ts_ns: u64,
    /// The session's interface number (its port).
    pub interface: u32,
    pub direction: Direction,
    pub verdict: Verdict,
    /// Why it, or one of its copies, was dropped, and where.
    pub drop: Option<(Stage, DropReason)>,
    /// The id of the rule it matched.
    pub rule: Option<u32>,
    /// The tunnel it came from or was headed into; empty when none.
    pub tunnel: String,
    /// An ICMP "too big" reply the pipeline made for it.
    pub generated: bool,
    pub tier: Tier,
    pub orig_len: u32,
    pub data: Vec<u8>,
}

impl Captured {
    fn empty(capacity: usize) -> Captured {
        Captured {
            ts_ns: 0,
            interface: 0,
            direction: Direction::Inbound,
            verdict: Verdict::Dropped,
            drop: None,
            rule: None,
            tunnel: String::with_capacity(32),
            generated: false,
            tier: Tier::Software,
            orig_len: 0,
            data: Vec::with_capacity(capacity),
        }
    }

    /// The packet comment Wireshark shows (`frame.comment`):
    /// `in verdict=dropped reason=rule_drop stage=action rule=7 tier=software`.
    pub fn comment(&self) -> String {
        let mut s = String::from(match self.direction {
            Direction::Inbound => "in",
            Direction::Outbound => "out",
        });
        s += " verdict=";
        s += self.verdict.name();
        if let Some((stage, reason)) = self.drop {
            s += &format!(" reason={} stage={}", reason.name(), stage.name());
        }
        if let Some(r) = self.rule {
            s += &format!(" rule={r}");
        }
        if !self.tunnel.is_empty() {
            s += &format!(" tunnel={}", self.tunnel);
        }
        if self.generated {
            s += " generated=icmp_too_big";
        }
        s += " tier=";
        s += self.tier.name();
        s
    }
}

/// One armed capture: its filter, the interfaces it records (the ports of
/// the rule set it was armed under), and the buffers in flight.
pub struct Session {
    pub filter: Filter,
    pub snaplen: usize,
    /// Interface number -> port name.
    pub ports: Vec<String>,
    free: ArrayQueue<Box<Captured>>,
    full: ArrayQueue<Box<Captured>>,
    /// Per interface: packets selected but not recorded (no free buffer).
    lost: Vec<AtomicU64>,
}

impl Session {
    /// Checks `req` against `rs` and allocates the buffers.
    pub fn new(rs: &RuleSet, req: &CaptureRequest) -> Result<Session, CaptureError> {
        for (index, name) in req.ports.iter().enumerate() {
            if rs.port_index(name).is_none() {
                return Err(CaptureError::UnknownPort { index, name: name.clone() });
            }
        }
        if let Some(t) = &req.tunnel {
            if !rs.tunnels.iter().any(|x| x.name == *t) {
                return Err(CaptureError::UnknownTunnel(t.clone()));
            }
        }
        if let Some(id) = req.rule {
            if !rs.rules.iter().any(|r| r.id == id) {
                return Err(CaptureError::UnknownRule(id));
            }
        }
        let reason = match &req.reason {
            Some(n) => Some(
                DropReason::from_name(n).ok_or_else(|| CaptureError::UnknownReason(n.clone()))?,
            ),
            None => None,
        };
        if req.count == Some(0) {
            return Err(CaptureError::Zero { field: "count" });
        }
        if req.duration_ms == Some(0) {
            return Err(CaptureError::Zero { field: "duration_ms" });
        }
        let snaplen = req.snaplen.unwrap_or(65535);
        if !(64..=65535).contains(&snaplen) {
            return Err(CaptureError::Snaplen);
        }
        let snaplen = snaplen as usize;
        let filter = Filter {
            ports: req.ports.clone(),
            direction: req.direction,
            tunnel: req.tunnel.clone(),
            rule: req.rule,
            verdict: req.verdict,
            reason,
        };
        let free = ArrayQueue::new(RING);
        for _ in 0..RING {
            let _ = free.push(Box::new(Captured::empty(snaplen.min(FRAME_SIZE))));
        }
        let ports: Vec<String> = rs.ports.iter().map(|p| p.name.clone()).collect();
        let lost = ports.iter().map(|_| AtomicU64::new(0)).collect();
        Ok(Session { filter, snaplen, ports, free, full: ArrayQueue::new(RING), lost })
    }

    /// A buffer to record into, if one is free.
    #[inline]
    fn take(&self) -> Option<Box<Captured>> {
        self.free.pop()
    }

    /// Hands a filled buffer to the API side.
    #[inline]
    fn submit(&self, c: Box<Captured>) {
        let interface = c.interface;
        // Never full: there are as many buffers as places.
        if self.full.push(c).is_err() {
            self.lose(interface);
        }
    }

    /// Gives back a buffer nobody needs.
    #[inline]
    fn recycle(&self, c: Box<Captured>) {
        let _ = self.free.push(c);
    }

    /// Counts a selected packet that could not be recorded.
    #[inline]
    fn lose(&self, interface: u32) {
        if let Some(l) = self.lost.get(interface as usize) {
            l.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Packets selected on `interface` but not recorded.
    pub fn lost(&self, interface: u32) -> u64 {
        self.lost.get(interface as usize).map_or(0, |l| l.load(Ordering::Relaxed))
    }
}

/// Where the control plane arms a capture and the workers find it.
#[derive(Default)]
pub struct CaptureTap {
    /// Bumped on every arm and disarm; workers compare it once per loop.
    generation: AtomicU64,
    session: ArcSwapOption<Session>,
    /// Serialises arming: one capture at a time.
    arming: Mutex<()>,
    /// Set when the daemon stops: captures end, and no new one starts.
    closed: AtomicBool,
    /// Told `true` once a capture is armed and `false` once it is disarmed,
    /// under the arming lock: the XDP tier hands its flows back to the
    /// software path (which the capture sees) for as long as one runs.
    listener: std::sync::OnceLock<Box<dyn Fn(bool) + Send + Sync>>,
    /// Rung on every arm and disarm: idle workers see it at once.
    bells: Arc<Doorbells>,
}

impl CaptureTap {
    /// A tap that wakes the workers registered with `bells` when it changes.
    pub fn ringing(bells: Arc<Doorbells>) -> CaptureTap {
        CaptureTap { bells, ..CaptureTap::default() }
    }

    /// Arms `s`, unless another capture is armed.
    pub fn arm(&self, s: Arc<Session>) -> Result<(), CaptureError> {
        let _g = self.arming.lock().unwrap_or_else(|p| p.into_inner());
        if self.closed.load(Ordering::Acquire) {
            return Err(CaptureError::Closed);
        }
        if self.session.load().is_some() {
            return Err(CaptureError::Busy);
        }
        self.session.store(Some(s));
        self.generation.fetch_add(1, Ordering::Release);
        self.bells.ring();
        if let Some(f) = self.listener.get() {
            f(true);
        }
        Ok(())
    }

    /// Installs the function told when a capture is armed and disarmed.
    pub fn on_arming(&self, f: Box<dyn Fn(bool) + Send + Sync>) {
        let _ = self.listener.set(f);
    }

    /// Disarms `s` if it is the armed capture.
    pub fn disarm(&self, s: &Arc<Session>) {
        let _g = self.arming.lock().unwrap_or_else(|p| p.into_inner());
        if self.session.load().as_ref().is_some_and(|cur| Arc::ptr_eq(cur, s)) {
            self.session.store(None);
            self.generation.fetch_add(1, Ordering::Release);
            self.bells.ring();
            if let Some(f) = self.listener.get() {
                f(false);
            }
        }
    }

    /// Ends the running capture and refuses new ones: the daemon stops.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// True while a capture is armed.
    pub fn armed(&self) -> bool {
        self.session.load().is_some()
    }

    #[inline]
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn session(&self) -> Option<Arc<Session>> {
        self.session.load_full()
    }
}
