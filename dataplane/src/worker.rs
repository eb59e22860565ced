//! One worker thread: a loop over the queues it serves, in named phases.
//!
//! ```text
//! loop {
//!     sync              pick up a new rule-set generation and next hops
//!     reclaim_refill    frames the kernel sent come back; fill rings topped up
//!     for each queue {
//!         receive       up to a batch of frames, bounded by TX room
//!         process       the engine: classify, act, encapsulate in place
//!                       (through the capture when one is armed)
//!         offer         flows decided for the first time, to the XDP tier
//!         transmit      each output port's frames onto its queue, one kick
//!     }
//!     publish           queue statistics: every half second, and on going idle
//!     idle              kick pending TX; sleep in poll(2) when nothing moves
//! }
//! drain                 what was queued goes out before the queues close
//! ```
//!
//! A worker is given what it needs ([`WorkerLinks`]: the published rule set,
//! the next hops, where to report) and holds nothing of the control plane.
//! Nothing here allocates or locks per packet: the vectors are sized once,
//! and the report boards are written at most every half second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use encap::{DropReason, PacketBuf, Settled};
use engine::counters::WorkerCounters;
use engine::flow_key::FlowKey;
use engine::model::PortKind;
use engine::next_hop::NextHops;
use engine::pipeline::{Outputs, Published, Worker};
use engine::trace::NoTrace;

use crate::capture::{CaptureTap, WorkerCapture};
use crate::io::doorbell::{Doorbell, Doorbells};
use crate::io::memory::{FrameAddr, Umem, FRAME_SIZE, HEADROOM};
use crate::io::tier::TierLink;
use crate::io::{sys, InputDrop, PortQueue, RxCtx, RxDesc, TxFailure, BATCH};
use crate::report::{CounterBoard, QueueBoard, QueueSlot};

/// Empty polls before a worker sleeps in poll(2) until a packet arrives or
/// its doorbell rings.
const SPINS_BEFORE_SLEEP: u32 = 64;
/// Longest sleep. What a worker must see without a packet (a new
/// generation, a capture, a stop) rings its doorbell; this only bounds the
/// cost of a ring that never came.
const IDLE_POLL_MS: i32 = 1000;
/// Longest sleep of a worker without a doorbell (none could be made): it
/// looks for news this often.
const IDLE_POLL_NO_BELL_MS: i32 = 50;
/// Queue statistics are published this often while busy, and when the worker
/// goes idle (at most every `PUBLISH_IDLE_GAP`: reading an AF_XDP socket's
/// statistics is a system call), so `status` is exact soon after traffic
/// stops.
const PUBLISH_EVERY: Duration = Duration::from_millis(500);
const PUBLISH_IDLE_GAP: Duration = Duration::from_millis(10);
/// How long a stopping worker waits for the kernel to take what it queued.
const DRAIN_FOR: Duration = Duration::from_millis(200);

/// A worker's queues and packet memory, built before its thread starts.
pub struct WorkerIo {
    pub id: usize,
    /// Declared before the packet memory so they close before it is unmapped.
    pub queues: Vec<Box<dyn PortQueue>>,
    pub umem: Umem,
    /// The port name of each queue.
    pub names: Vec<String>,
    /// Port name -> its interface's MAC address (the outer source of tunnel
    /// packets when the configuration gives none).
    pub macs: HashMap<String, [u8; 6]>,
    pub cpu: usize,
    /// The frames nobody uses at start; None: every frame. A worker that
    /// takes over parked queues (upgrade.rs) starts with the parked
    /// worker's list: the other frames are in the rings.
    pub free: Option<Vec<FrameAddr>>,
}

impl WorkerIo {
    /// True if this worker's queue of `port` moves frames without a copy.
    pub fn zero_copy(&self, port: &str) -> bool {
        self.names.iter().zip(&self.queues).any(|(n, q)| n == port && q.zero_copy())
    }
}

/// What the control plane gives a worker, and where the worker reports.
#[derive(Clone)]
pub struct WorkerLinks {
    pub published: Arc<Published>,
    pub hops: Arc<NextHops>,
    pub counters: Arc<CounterBoard>,
    pub queues: Arc<QueueBoard>,
    pub capture: Arc<CaptureTap>,
    pub stop: Arc<AtomicBool>,
    /// The XDP tier's owner, when the tier is on.
    pub tier: Option<TierLink>,
    /// Counts the workers whose fill rings are stocked: a program taking
    /// over a link from a previous overlayd is swapped in after that.
    pub ready: Arc<std::sync::atomic::AtomicUsize>,
    /// MAC learning: this worker gets its own queue.
    pub learning: Arc<crate::learning::Learning>,
    /// Set with `stop` to park: stop at a batch boundary without draining,
    /// and give the queues back with the free list (a planned upgrade).
    pub park: Arc<AtomicBool>,
    /// Each worker registers its doorbell here; whoever sets `stop` or
    /// changes what `sync` reads rings them.
    pub bells: Arc<Doorbells>,
}

/// The thread's body: pins itself, runs the loop until asked to stop,
/// drains; returns its queues and memory, with the free list when parked.
pub fn run(mut io: WorkerIo, links: WorkerLinks) -> WorkerIo {
    sys::pin_to_cpu(io.cpu);
    let free = run_loop(&mut io, &links);
    io.free = free;
    io
}

fn run_loop(io: &mut WorkerIo, links: &WorkerLinks) -> Option<Vec<FrameAddr>> {
    let mut l = WorkerLoop::new(io, links);
    l.reclaim_refill();
    links.ready.fetch_add(1, Ordering::Release);
    while !links.stop.load(Ordering::Acquire) {
        l.sync();
        l.reclaim_refill();
        let mut got = 0;
        for qi in 0..l.queues.len() {
            let n = l.receive(qi);
            if n > 0 {
                got += n;
                let t0 = Instant::now();
                l.process(qi);
                l.offer();
                l.transmit(qi);
                l.counters.busy_ns.add(t0.elapsed().as_nanos() as u64);
                l.queues[qi].after_rx();
            }
        }
        l.publish(got);
        l.idle(got);
    }
    let parked = links.park.load(Ordering::Acquire);
    if parked {
        l.settle_for_handover();
        // No waiting for the kernel to send: what is queued stays in the TX
        // ring, which the next owner takes over with the socket.
        for q in l.queues.iter_mut() {
            q.flush_tx();
        }
    } else {
        l.drain();
    }
    links.counters.retire(l.id);
    parked.then(|| std::mem::take(&mut l.free))
}

/// Maps between the rule set's port numbering and this worker's queues.
struct PortMap {
    /// For each queue, its port's index in the rule set (`u16::MAX`: gone).
    port_of_queue: Vec<u16>,
    /// For each rule-set port, the queue that sends on it.
    queue_of_port: Vec<Option<usize>>,
    /// Largest IP packet a segment of a super-frame may be: the smallest
    /// inner MTU of the tunnels, and what a frame of packet memory holds.
    max_ip: usize,
    /// Each rule-set port's kind.
    kinds: Vec<PortKind>,
}

impl PortMap {
    fn new(engine: &Worker, names: &[String]) -> PortMap {
        let rs = engine.rules();
        let port_of_queue = names.iter().map(|n| rs.port_index(n).unwrap_or(u16::MAX)).collect();
        let queue_of_port =
            rs.ports.iter().map(|p| names.iter().position(|n| *n == p.name)).collect();
        // Two VLAN tags and an Ethernet header in front of the IP packet.
        let frame_limit = FRAME_SIZE - HEADROOM - 22;
        let max_ip =
            engine.smallest_inner_mtu().map_or(frame_limit, |m| m as usize).min(frame_limit);
        let kinds = rs.ports.iter().map(|p| p.kind).collect();
        PortMap { port_of_queue, queue_of_port, max_ip, kinds }
    }

    /// True if frames from port `from` to port `to` are decapsulated frames
    /// on their way to a workload: their checksums are settled, since the
    /// tunnel's other end may have left them partial (`encap::settle`).
    fn settles(&self, from: u16, to: usize) -> bool {
        let kind = |i: usize| self.kinds.get(i).copied();
        kind(from as usize) == Some(PortKind::Uplink) && kind(to) == Some(PortKind::Workload)
    }
}

/// The loop's state: the queues and memory it borrows from its [`WorkerIo`],
/// the engine, and scratch vectors sized once.
struct WorkerLoop<'m> {
    id: usize,
    links: &'m WorkerLinks,
    umem: &'m Umem,
    queues: &'m mut [Box<dyn PortQueue>],
    names: &'m [String],
    /// Each queue's place on the statistics board.
    slots: Vec<QueueSlot>,
    /// Packets moved since the statistics were last published.
    unpublished: bool,
    /// Frames the queues had passed to the kernel at the last look.
    passed: u64,
    macs: &'m HashMap<String, [u8; 6]>,
    engine: Worker,
    /// The engine's counters for its current generation.
    counters: Arc<WorkerCounters>,
    map: PortMap,
    out: Outputs<'m>,
    hops_seen: u64,
    capture: WorkerCapture,
    /// Frames this worker owns and nobody uses.
    free: Vec<FrameAddr>,
    descs: Vec<RxDesc>,
    batch: Vec<PacketBuf<'m>>,
    in_drops: Vec<InputDrop>,
    failed: Vec<TxFailure>,
    /// Flows the tier's full queue refused in this batch.
    refused: Vec<FlowKey>,
    /// The queues' descriptors, then the doorbell's when there is one.
    pollfds: Vec<libc::pollfd>,
    bell: Option<Arc<Doorbell>>,
    start: Instant,
    idle: u32,
    last_publish: Instant,
}

impl<'m> WorkerLoop<'m> {
    fn new(io: &'m mut WorkerIo, links: &'m WorkerLinks) -> WorkerLoop<'m> {
        let mut engine = Worker::new(links.published.current());
        engine.set_learner(links.learning.learner());
        if links.tier.is_some() {
            // A batch decides at most BATCH flows: none is missed.
            engine.record_decided(BATCH);
        }
        let map = PortMap::new(&engine, &io.names);
        let out = Outputs::new(engine.rules().ports.len(), BATCH);
        let bell = links
            .bells
            .register()
            .inspect_err(|e| {
                tracing::warn!(worker = io.id, error = %e, "no doorbell: the idle worker looks for news every {IDLE_POLL_NO_BELL_MS} ms")
            })
            .ok();
        let fds = io.queues.iter().map(|q| q.fd()).chain(bell.as_ref().map(|b| b.fd()));
        let pollfds = fds.map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
        let slots =
            io.names.iter().zip(&io.queues).map(|(n, q)| links.queues.register(n, q.stats()));
        let slots = slots.collect();
        let mut l = WorkerLoop {
            id: io.id,
            links,
            umem: &io.umem,
            free: io.free.take().unwrap_or_else(|| io.umem.frame_addrs().collect()),
            queues: &mut io.queues,
            names: &io.names,
            slots,
            unpublished: false,
            passed: 0,
            macs: &io.macs,
            counters: engine.counters(),
            engine,
            map,
            out,
            hops_seen: links.hops.version(),
            capture: WorkerCapture::default(),
            descs: Vec::with_capacity(BATCH),
            batch: Vec::with_capacity(BATCH),
            in_drops: Vec::new(),
            failed: Vec::new(),
            refused: Vec::with_capacity(BATCH),
            pollfds,
            bell,
            start: Instant::now(),
            idle: 0,
            last_publish: Instant::now(),
        };
        l.adopt_generation();
        l
    }

    /// Reports the engine's counters for its generation and gives it what
    /// the generation does not carry: next hops and interface MACs.
    fn adopt_generation(&mut self) {
        self.counters = self.engine.counters();
        let rules = Arc::clone(self.engine.rules());
        self.links.counters.set_live(self.id, rules, Arc::clone(&self.counters));
        self.engine.apply_next_hops(&self.links.hops.snapshot());
        self.engine.apply_path_mtus(&self.links.hops.mtus());
        self.engine.apply_interface_macs(self.macs);
        self.map = PortMap::new(&self.engine, self.names);
        self.out = Outputs::new(self.engine.rules().ports.len(), BATCH);
    }

    /// Phase: a new generation, new next hops, a capture armed or disarmed.
    fn sync(&mut self) {
        if self.engine.sync(&self.links.published).is_some() {
            self.adopt_generation();
        }
        let v = self.links.hops.version();
        if v != self.hops_seen {
            self.hops_seen = v;
            self.engine.apply_next_hops(&self.links.hops.snapshot());
            self.engine.apply_path_mtus(&self.links.hops.mtus());
            self.map = PortMap::new(&self.engine, self.names);
        }
        self.capture.sync(&self.links.capture, self.engine.rules());
    }

    /// Phase: frames the kernel is done with come back to the free list
    /// (failed sends counted), and fill rings are topped up.
    fn reclaim_refill(&mut self) {
        let c = &self.counters;
        for (qi, q) in self.queues.iter_mut().enumerate() {
            q.reclaim(&mut self.free, &mut self.failed);
            for f in self.failed.drain(..) {
                c.unsend(self.map.port_of_queue[qi], f.len as usize, DropReason::TxFailed);
            }
            q.refill(&mut self.free);
        }
    }

    /// Phase: takes a batch from queue `qi` into `batch`; returns its size.
    #[inline]
    fn receive(&mut self, qi: usize) -> usize {
        // Never take more than every TX ring can queue: backpressure stays
        // in the RX ring (counted by the kernel) instead of becoming drops.
        let room = self.queues.iter_mut().map(|q| q.tx_free()).min().unwrap_or(0).min(BATCH);
        self.descs.clear();
        let mut cx = RxCtx {
            mem: self.umem,
            free: &mut self.free,
            drops: &mut self.in_drops,
            max_ip: self.map.max_ip,
        };
        let n = self.queues[qi].recv(&mut cx, &mut self.descs, room);
        let in_port = self.map.port_of_queue[qi];
        for d in self.in_drops.drain(..) {
            self.counters.input_drop(in_port, d.len as usize, d.reason);
        }
        for d in &self.descs {
            // SAFETY: the kernel (or the queue's copy) handed this frame
            // over; until we queue or free it, nobody else touches it.
            let (frame, off) = unsafe { self.umem.frame(d.addr) };
            let pkt =
                PacketBuf::new(frame, off, d.len as usize).expect("RX descriptor inside its frame");
            self.batch.push(pkt);
        }
        n
    }

    /// Phase: runs the engine over the batch received on queue `qi`.
    #[inline]
    fn process(&mut self, qi: usize) {
        let in_port = self.map.port_of_queue[qi];
        let (umem, free) = (self.umem, &mut self.free);
        let mut pool = || {
            let a = free.pop()?;
            // SAFETY: a frame from the free list belongs to this worker alone.
            let (frame, _) = unsafe { umem.frame(a) };
            PacketBuf::new(frame, HEADROOM, 0)
        };
        let now_ns = self.start.elapsed().as_nanos() as u64;
        // Disarmed, a capture costs this one branch per batch.
        match self.capture.armed() {
            None => self.engine.process(
                in_port,
                &mut self.batch,
                &mut pool,
                &mut self.out,
                now_ns,
                &mut NoTrace,
            ),
            Some(c) => c.process(
                &mut self.engine,
                in_port,
                &mut self.batch,
                &mut pool,
                &mut self.out,
                now_ns,
            ),
        }
    }

    /// Phase: the flows whose first packet the batch decided go to the XDP
    /// tier if the engine says it can handle them exactly (a queue push
    /// each, no system call); the others are counted by reason. A flow the
    /// full queue refused is forgotten by the flow cache, so its next
    /// packet offers it again: otherwise a flow that keeps hitting the cache
    /// (a few thousand of them fit) would stay on AF_XDP for good.
    #[inline]
    fn offer(&mut self) {
        let Some(tier) = &self.links.tier else { return };
        let refused = &mut self.refused;
        self.engine.drain_decided(|engine, key, rule| {
            match engine::tier::decide(engine, key, rule) {
                Ok(e) => {
                    if !tier.offer(e) {
                        refused.push(*key);
                    }
                }
                Err(r) => tier.not_in_tier(r),
            }
        });
        for key in self.refused.drain(..) {
            self.engine.forget_flow(&key);
        }
    }

    /// Phase: queues each output port's frames (of the batch received on
    /// queue `qi`) on the queue that sends on it and kicks it once; frames
    /// that cannot go are counted and freed.
    #[inline]
    fn transmit(&mut self, qi: usize) {
        let (umem, c) = (self.umem, &self.counters);
        let in_port = self.map.port_of_queue[qi];
        for (p, pkts) in self.out.ports.iter_mut().enumerate() {
            if pkts.is_empty() {
                continue;
            }
            let settle = self.map.settles(in_port, p);
            let Some(q) = self.map.queue_of_port[p].map(|t| &mut self.queues[t]) else {
                for pkt in pkts.drain(..) {
                    c.unsend(p as u16, pkt.len(), DropReason::PortNotAttached);
                    self.free.push(umem.addr_of(pkt.buffer_ptr()));
                }
                continue;
            };
            for mut pkt in pkts.drain(..) {
                let frame = umem.addr_of(pkt.buffer_ptr());
                let settled = match settle.then(|| encap::settle(pkt.data_mut())) {
                    Some(Err(r)) => {
                        c.unsend(p as u16, pkt.len(), r);
                        self.free.push(frame);
                        continue;
                    }
                    Some(Ok(s)) => matches!(s, Settled::Valid | Settled::Completed),
                    None => false,
                };
                if !q.send(umem, frame.offset_by(pkt.head()), pkt.len() as u32, settled) {
                    c.unsend(p as u16, pkt.len(), DropReason::TxRingFull);
                    self.free.push(frame);
                }
            }
            q.flush_tx();
        }
        for pkt in self.out.free.drain(..) {
            self.free.push(umem.addr_of(pkt.buffer_ptr()));
        }
    }

    /// Phase: the queues' statistics for `status`, every half second while
    /// busy and once when a burst ends.
    fn publish(&mut self, got: usize) {
        // Frames steered to the kernel reach no worker (`got` is 0), but
        // their counts are news too.
        let passed = self.queues.iter().map(|q| q.passed()).sum::<u64>();
        self.unpublished |= got > 0 || passed != self.passed;
        self.passed = passed;
        let since = self.last_publish.elapsed();
        let burst_ended = got == 0 && self.unpublished && since >= PUBLISH_IDLE_GAP;
        if !burst_ended && since < PUBLISH_EVERY {
            return;
        }
        self.last_publish = Instant::now();
        self.unpublished = false;
        let stats = self.slots.iter().zip(self.queues.iter()).map(|(s, q)| (*s, q.stats()));
        self.links.queues.publish(stats);
    }

    /// Phase: keeps kicking until the kernel has taken everything queued
    /// (AF_XDP in copy mode sends a bounded number of frames per system
    /// call); after a run of empty polls, sleeps until a packet arrives or
    /// the doorbell rings.
    fn idle(&mut self, got: usize) {
        let mut tx_pending = false;
        for q in self.queues.iter_mut() {
            if q.tx_pending() {
                q.flush_tx();
                tx_pending = true;
            }
        }
        if got > 0 {
            self.idle = 0;
        } else if !tx_pending {
            self.idle += 1;
            if self.idle > SPINS_BEFORE_SLEEP {
                self.sleep();
            }
        }
    }

    fn sleep(&mut self) {
        // Statistics not yet published go out once the burst has been over
        // for PUBLISH_IDLE_GAP: wake for that, then sleep long.
        let ms = match (&self.bell, self.unpublished) {
            (_, true) => PUBLISH_IDLE_GAP.as_millis() as i32,
            (Some(_), false) => IDLE_POLL_MS,
            (None, false) => IDLE_POLL_NO_BELL_MS,
        };
        sys::wait_readable(&mut self.pollfds, ms);
        if let (Some(b), Some(p)) = (&self.bell, self.pollfds.last()) {
            if p.revents & libc::POLLIN != 0 {
                b.drain();
            }
        }
    }

    /// Before a handover: queues whose state cannot cross it (io_uring on
    /// a packet socket) stop taking frames from the kernel, and what they
    /// already took is forwarded and sent, so the successor finds every
    /// frame not yet forwarded still in the socket. AF_XDP queues are
    /// always quiet: their rings cross as they are. Bounded: a queue that
    /// will not settle is handed over as it is.
    fn settle_for_handover(&mut self) {
        for q in self.queues.iter_mut() {
            q.quiesce();
        }
        let deadline = Instant::now() + DRAIN_FOR;
        loop {
            let busy: Vec<usize> =
                (0..self.queues.len()).filter(|&qi| !self.queues[qi].quiet()).collect();
            if busy.is_empty() || Instant::now() >= deadline {
                break;
            }
            self.reclaim_refill();
            let mut got = 0;
            for qi in busy {
                let n = self.receive(qi);
                if n > 0 {
                    got += n;
                    self.process(qi);
                    self.offer();
                    self.transmit(qi);
                }
                self.queues[qi].flush_tx();
            }
            self.publish(got);
            if got == 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// After the last batch: what was queued for transmission goes out
    /// before the queues close.
    fn drain(&mut self) {
        let deadline = Instant::now() + DRAIN_FOR;
        for q in self.queues.iter_mut() {
            q.flush_tx();
        }
        while Instant::now() < deadline {
            let outstanding: usize = self.queues.iter_mut().map(|q| q.outstanding()).sum();
            if outstanding == 0 {
                break;
            }
            for q in self.queues.iter_mut() {
                q.reclaim(&mut self.free, &mut self.failed);
                q.flush_tx();
            }
            self.failed.clear();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
