//! The packet path of `overlayd run`: every port attached through its backend
//! (XDP steering and AF_XDP sockets; or io_uring on a packet socket or a TAP
//! queue), and one pinned worker thread per queue moving batches between the
//! queues and the engine.
//!
//! Worker `i` serves queue `i` of every port that has one, with one packet
//! memory (the UMEM) shared by all its queues, so a frame goes from one port's
//! queue through the pipeline (encapsulated or decapsulated in place) to
//! another port's queue without a copy; the io_uring backends copy once on
//! receive, from their buffers into that memory. A worker reads the published rule set and the next-hop
//! table between batches and never takes a lock on the packet path.
//!
//! The set of ports decides which sockets and programs exist, so a change to
//! the ports restarts the workers (counters carry over through the ledger);
//! changes to tunnels re-steer the uplinks' programs in place; rules only
//! need the workers to pick up the new generation.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use encap::{DropReason, PacketBuf};
use engine::compile::RuleSet;
use engine::model::{Backend, Offloads, PortKind, TunnelType, XdpModeSpec};
use engine::next_hop::NextHops;
use engine::pipeline::{Outputs, Worker};
use engine::trace::NoTrace;
use serde::Serialize;

use crate::daemon::Daemon;
use crate::io::afxdp::{self, AfXdpError, Umem, Xsk, XskConfig, FRAME_SIZE, HEADROOM};
use crate::io::checksums::RxChecksums;
use crate::io::packet::{self, KernelSink};
use crate::io::tap::{self, TapQueue};
use crate::io::uring::{self, Kind, UringError, UringQueue};
use crate::io::xdp::{SteerProgram, SteerRole, SteerStats, XdpError, XdpMode};
use crate::io::{PortQueue, QueueStats, RxCtx};

/// Most packets taken from one RX ring per batch (VPP's vector size).
pub const BATCH: usize = 256;

/// Empty polls before a worker sleeps in poll(2) until a packet arrives.
const SPINS_BEFORE_SLEEP: u32 = 64;

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("port {port}: no interface is configured (`interface = \"...\"`), so `run` cannot attach it")]
    NoInterface { port: String },
    #[error(transparent)]
    Xdp(#[from] XdpError),
    #[error(transparent)]
    AfXdp(#[from] AfXdpError),
    #[error(transparent)]
    Uring(#[from] UringError),
    #[error("{0}")]
    Other(String),
}

/// What `status` shows about one attached port.
#[derive(Clone, Debug, Serialize)]
pub struct PortStatus {
    pub port: String,
    pub interface: String,
    pub kind: PortKind,
    pub backend: Backend,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xdp_mode: Option<XdpMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero_copy: Option<bool>,
    /// TAP ports: the virtio-net offloads negotiated with the kernel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offloads: Option<tap::Offloads>,
    pub queues: u32,
    pub steering: Option<SteerStats>,
    pub sockets: Vec<QueueStats>,
}

/// Options of the datapath as a whole.
#[derive(Clone, Copy, Debug)]
pub struct DatapathOptions {
    /// Worker threads; by default one per queue of the port with most queues,
    /// at most one per CPU.
    pub workers: Option<usize>,
    pub ring_size: u32,
}

impl Default for DatapathOptions {
    fn default() -> Self {
        DatapathOptions { workers: None, ring_size: 2048 }
    }
}

/// The port set a running datapath was built for: a change restarts it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PortSpec {
    name: String,
    interface: String,
    kind: PortKind,
    queues: u32,
    xdp_mode: XdpModeSpec,
    zero_copy: engine::model::ZeroCopy,
    backend: Backend,
    offloads: Offloads,
}

fn port_specs(rs: &RuleSet) -> Result<Vec<PortSpec>, DatapathError> {
    rs.config
        .ports
        .iter()
        .map(|p| {
            let interface = p
                .interface
                .clone()
                .ok_or_else(|| DatapathError::NoInterface { port: p.name.clone() })?;
            let queues = match p.backend {
                // A TAP device has the queues we open; one unless asked.
                Backend::Tap => p.queues.unwrap_or(1),
                _ => p.queues.unwrap_or_else(|| afxdp::rx_queues(&interface) as u32),
            }
            .max(1);
            Ok(PortSpec {
                name: p.name.clone(),
                interface,
                kind: p.kind,
                queues,
                xdp_mode: p.xdp_mode,
                zero_copy: p.zero_copy,
                backend: p.backend,
                offloads: p.offloads,
            })
        })
        .collect()
}

/// What the steering program of an uplink must redirect: tunnel traffic to
/// the local VTEPs of the tunnels that leave by it.
fn steer_role(rs: &RuleSet, port: &PortSpec) -> SteerRole {
    if port.kind == PortKind::Workload {
        return SteerRole::Workload;
    }
    let mut vteps = Vec::new();
    let mut vxlan_ports = Vec::new();
    let mut gre = false;
    for t in rs.config.tunnels.iter().filter(|t| t.uplink == port.name) {
        if !vteps.contains(&t.local) {
            vteps.push(t.local);
        }
        match t.kind {
            TunnelType::Vxlan if !vxlan_ports.contains(&t.udp_port) => vxlan_ports.push(t.udp_port),
            TunnelType::Vxlan => {}
            _ => gre = true,
        }
    }
    SteerRole::Uplink { vteps, vxlan_ports, gre }
}

/// Remote VTEPs to resolve: (remote, uplink interface), without static next hops.
pub fn neighbour_targets(rs: &RuleSet) -> Vec<(IpAddr, String)> {
    let mut v: Vec<(IpAddr, String)> = rs
        .config
        .tunnels
        .iter()
        .filter(|t| t.next_hop_mac.is_none())
        .filter_map(|t| {
            let port = rs.config.ports.iter().find(|p| p.name == t.uplink)?;
            Some((t.remote, port.interface.clone()?))
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Shared by the workers of one datapath.
struct Shared {
    daemon: Arc<Daemon>,
    hops: Arc<NextHops>,
    stop: AtomicBool,
}

/// A worker's queues, built before its thread starts.
struct WorkerIo {
    id: usize,
    /// Declared before the packet memory so they close before it is unmapped.
    queues: Vec<Box<dyn PortQueue>>,
    umem: Umem,
    /// The port name of each queue.
    names: Vec<String>,
    /// Port name -> its interface's MAC address (the outer source of tunnel
    /// packets when the configuration gives none).
    macs: std::collections::HashMap<String, [u8; 6]>,
    cpu: usize,
}

/// How a port decides what is the dataplane's, kept so tunnels can change.
enum Steering {
    /// The XDP program in front of the AF_XDP sockets.
    Xdp(Box<SteerProgram>),
    /// The same decision taken on what a packet socket received, and the
    /// sockets that keep the kernel from answering tunnel packets.
    Socket { role: Arc<ArcSwap<SteerRole>>, _sink: KernelSink },
    /// TAP: everything the workload sends is ours.
    Tap(tap::Offloads),
}

impl Steering {
    fn for_port(rs: &RuleSet, p: &PortSpec) -> Result<Steering, DatapathError> {
        let role = steer_role(rs, p);
        Ok(match p.backend {
            Backend::AfXdp => {
                let prog = match p.xdp_mode {
                    XdpModeSpec::Native => SteerProgram::attach(&p.interface, &role, false)?,
                    XdpModeSpec::Auto => SteerProgram::attach(&p.interface, &role, true)?,
                    XdpModeSpec::Generic => SteerProgram::attach_generic(&p.interface, &role)?,
                };
                if prog.mode() == XdpMode::Generic && p.xdp_mode == XdpModeSpec::Auto {
                    tracing::warn!(port = %p.name, interface = %p.interface, "native XDP refused: using the generic (SKB) hook, which is slower");
                }
                Steering::Xdp(Box::new(prog))
            }
            Backend::AfPacket => {
                let sink = KernelSink::bind(&role).map_err(|e| {
                    DatapathError::Other(format!("port {} ({}): {e}", p.name, p.interface))
                })?;
                Steering::Socket { role: Arc::new(ArcSwap::from_pointee(role)), _sink: sink }
            }
            Backend::Tap => Steering::Tap(tap::Offloads::default()),
        })
    }

    fn resteer(&mut self, rs: &RuleSet, p: &PortSpec) -> Result<(), DatapathError> {
        match self {
            Steering::Xdp(prog) => prog.set_role(&steer_role(rs, p))?,
            Steering::Socket { role, _sink } => {
                let new = steer_role(rs, p);
                *_sink = KernelSink::bind(&new).map_err(|e| {
                    DatapathError::Other(format!("port {} ({}): {e}", p.name, p.interface))
                })?;
                role.store(Arc::new(new));
            }
            Steering::Tap(_) => {}
        }
        Ok(())
    }
}

pub struct Datapath {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    steering: Mutex<Vec<(PortSpec, Steering)>>,
    specs: Vec<PortSpec>,
    /// Per port, AF_XDP only: zero-copy or copy.
    modes: Vec<Option<bool>>,
    queue_stats: Arc<Mutex<BTreeMap<(String, u32), QueueStats>>>,
    workers: usize,
}

/// Opens queue `w` of port `p` into worker memory `umem`.
fn open_queue(
    p: &PortSpec,
    w: u32,
    umem: &Umem,
    primary: Option<std::os::fd::RawFd>,
    steering: &mut Steering,
    opts: &DatapathOptions,
) -> Result<Box<dyn PortQueue>, DatapathError> {
    let io_err = |what: &str, e: std::io::Error| {
        DatapathError::Other(format!("port {} ({}): {what}: {e}", p.name, p.interface))
    };
    Ok(match steering {
        Steering::Xdp(prog) => {
            let checksums = RxChecksums::for_bare_frames(p.kind);
            let cfg = XskConfig { ring_size: opts.ring_size, zero_copy: p.zero_copy, checksums };
            let x = Xsk::open(umem, &p.interface, w, primary, cfg)?;
            prog.register_socket(w, x.fd())?;
            Box::new(x)
        }
        Steering::Socket { role, .. } => {
            let index = afxdp::ifindex(&p.interface).map_err(|e| io_err("no such interface", e))?;
            // Workers share the interface through a fanout group that keeps
            // each flow on one worker.
            let fanout = (p.queues > 1).then(|| (index ^ std::process::id()) as u16);
            let fd =
                packet::open(index, fanout).map_err(|e| io_err("opening a packet socket", e))?;
            let kind = Kind::Packet { role: Arc::clone(role) };
            Box::new(UringQueue::new(fd, &p.interface, w, kind, umem)?)
        }
        Steering::Tap(offloads) => {
            let q = TapQueue::open(&p.interface, p.queues > 1)
                .map_err(|e| io_err("opening the TAP device", e))?;
            if w == 0 {
                *offloads = q.negotiate(p.offloads == Offloads::On);
                if !offloads.refused.is_empty() {
                    tracing::warn!(port = %p.name, refused = ?offloads.refused, "TAP offloads refused by the kernel: the workload does that work itself");
                }
            }
            let kind = Kind::Tap { mark_valid: p.offloads == Offloads::On };
            Box::new(UringQueue::new(q.into_fd(), &p.interface, w, kind, umem)?)
        }
    })
}

impl Datapath {
    /// Attaches every configured port and starts the workers.
    pub fn start(
        daemon: Arc<Daemon>,
        hops: Arc<NextHops>,
        opts: DatapathOptions,
    ) -> Result<Datapath, DatapathError> {
        let rs = daemon.rules();
        let specs = port_specs(&rs)?;
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let most_queues = specs.iter().map(|p| p.queues as usize).max().unwrap_or(1);
        let workers = opts.workers.unwrap_or(most_queues.min(cpus)).max(1);
        if specs.iter().any(|p| p.backend != Backend::AfXdp) {
            uring::probe()?;
        }

        // Steering first: an AF_XDP socket is registered in its program's map.
        let mut steering = Vec::new();
        for p in &specs {
            steering.push((p.clone(), Steering::for_port(&rs, p)?));
        }

        let mut macs = std::collections::HashMap::new();
        for p in specs.iter().filter(|p| p.backend != Backend::Tap) {
            let m = afxdp::mac_address(&p.interface).map_err(|e| {
                DatapathError::Other(format!("{}: cannot read its MAC address: {e}", p.interface))
            })?;
            macs.insert(p.name.clone(), m);
        }
        let mut ios = Vec::new();
        let mut modes = vec![None; specs.len()];
        for w in 0..workers {
            let mine: Vec<usize> =
                (0..specs.len()).filter(|&i| (w as u32) < specs[i].queues).collect();
            // Fill and TX rings full on every queue, plus room for copies.
            let frames = mine.len() * 2 * opts.ring_size as usize + 2 * BATCH;
            let umem = Umem::new(frames).map_err(|e| {
                DatapathError::Other(format!(
                    "worker {w}: cannot map {frames} frames of packet memory: {e}"
                ))
            })?;
            let mut queues: Vec<Box<dyn PortQueue>> = Vec::new();
            let mut names = Vec::new();
            let mut primary = None;
            for i in mine {
                let (p, st) = &mut steering[i];
                let q = open_queue(p, w as u32, &umem, primary, st, &opts)?;
                if p.backend == Backend::AfXdp {
                    primary = primary.or(Some(q.fd()));
                }
                queues.push(q);
                names.push(p.name.clone());
            }
            ios.push(WorkerIo { id: w, umem, queues, names, macs: macs.clone(), cpu: w % cpus });
        }
        for (i, (_, st)) in steering.iter().enumerate() {
            if let Steering::Xdp(_) = st {
                modes[i] = Some(ios.iter().any(|io| io.zero_copy(&specs[i].name)));
            }
        }

        let shared = Arc::new(Shared { daemon, hops, stop: AtomicBool::new(false) });
        let queue_stats = Arc::new(Mutex::new(BTreeMap::new()));
        let mut threads = Vec::new();
        for io in ios {
            let (sh, st) = (Arc::clone(&shared), Arc::clone(&queue_stats));
            let t = std::thread::Builder::new()
                .name(format!("overlayd-w{}", io.id))
                .spawn(move || worker_main(io, sh, st))
                .map_err(|e| DatapathError::Other(format!("cannot start a worker thread: {e}")))?;
            threads.push(t);
        }
        for (i, (p, st)) in steering.iter().enumerate() {
            match st {
                Steering::Xdp(prog) => {
                    tracing::info!(port = %p.name, interface = %p.interface, queues = p.queues, backend = "af_xdp", xdp_mode = ?prog.mode(), zero_copy = ?modes[i], "attached")
                }
                Steering::Socket { .. } => {
                    tracing::info!(port = %p.name, interface = %p.interface, queues = p.queues, backend = "af_packet", "attached")
                }
                Steering::Tap(o) => {
                    tracing::info!(port = %p.name, interface = %p.interface, queues = p.queues, backend = "tap", offloads = ?o.enabled, "attached")
                }
            }
        }
        tracing::info!(workers, "datapath started");
        Ok(Datapath {
            shared,
            threads,
            steering: Mutex::new(steering),
            specs,
            modes,
            queue_stats,
            workers,
        })
    }

    /// True if `rs` has the same ports as this datapath (else it must restart).
    pub fn serves(&self, rs: &RuleSet) -> bool {
        port_specs(rs).map(|s| s == self.specs).unwrap_or(false)
    }

    /// Re-steers the uplinks for `rs`'s tunnels, in place.
    pub fn resteer(&self, rs: &RuleSet) -> Result<(), DatapathError> {
        let mut st = self.steering.lock().unwrap_or_else(|p| p.into_inner());
        for (spec, s) in st.iter_mut() {
            s.resteer(rs, spec)?;
        }
        Ok(())
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    pub fn status(&self) -> Vec<PortStatus> {
        let steering = self.steering.lock().unwrap_or_else(|p| p.into_inner());
        let queues = self.queue_stats.lock().unwrap_or_else(|p| p.into_inner());
        steering
            .iter()
            .enumerate()
            .map(|(i, (spec, st))| {
                let sockets: Vec<QueueStats> = queues
                    .range((spec.name.clone(), 0)..=(spec.name.clone(), u32::MAX))
                    .map(|(_, s)| *s)
                    .collect();
                let (xdp_mode, steer, offloads) = match st {
                    Steering::Xdp(prog) => (Some(prog.mode()), prog.stats().ok(), None),
                    Steering::Socket { .. } => (None, Some(sum_steering(&sockets)), None),
                    Steering::Tap(o) => (None, None, Some(o.clone())),
                };
                PortStatus {
                    port: spec.name.clone(),
                    interface: spec.interface.clone(),
                    kind: spec.kind,
                    backend: spec.backend,
                    xdp_mode,
                    zero_copy: self.modes[i],
                    offloads,
                    queues: spec.queues,
                    steering: steer,
                    sockets,
                }
            })
            .collect()
    }

    /// Stops the workers after they finish their batch and flush what they
    /// queued, then detaches the programs (when `self` drops).
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        tracing::info!("datapath stopped");
    }
}

/// A packet-socket port's steering counts, summed over its queues.
fn sum_steering(queues: &[QueueStats]) -> SteerStats {
    let mut t = SteerStats::default();
    for q in queues {
        if let QueueStats::Uring(u) = q {
            if let Some(s) = u.steering {
                t.redirected += s.redirected;
                t.pass_not_ip += s.pass_not_ip;
                t.pass_not_tunnel += s.pass_not_tunnel;
                t.pass_not_local_vtep += s.pass_not_local_vtep;
                t.pass_no_socket += s.pass_no_socket;
                t.pass_fragment += s.pass_fragment;
            }
        }
    }
    t
}

impl WorkerIo {
    fn zero_copy(&self, port: &str) -> bool {
        self.names.iter().zip(&self.queues).any(|(n, q)| n == port && q.zero_copy())
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it,
    // and sched_setaffinity reads exactly its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
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
    fn new(rs: &RuleSet, names: &[String]) -> PortMap {
        let port_of_queue = names.iter().map(|n| rs.port_index(n).unwrap_or(u16::MAX)).collect();
        let queue_of_port =
            rs.ports.iter().map(|p| names.iter().position(|n| *n == p.name)).collect();
        // Two VLAN tags and an Ethernet header in front of the IP packet.
        let frame_limit = FRAME_SIZE - HEADROOM - 22;
        let max_ip = rs
            .tunnels
            .iter()
            .map(|t| t.inner_ip_mtu as usize)
            .min()
            .unwrap_or(frame_limit)
            .min(frame_limit);
        let kinds = rs.ports.iter().map(|p| p.kind).collect();
        PortMap { port_of_queue, queue_of_port, max_ip, kinds }
    }

    /// True if frames from port `from` to port `to` are decapsulated frames
    /// on their way to a workload: their checksums are settled, since the
    /// tunnel's other end may have left them partial.
    fn settles(&self, from: u16, to: usize) -> bool {
        let kind = |i: usize| self.kinds.get(i).copied();
        kind(from as usize) == Some(PortKind::Uplink) && kind(to) == Some(PortKind::Workload)
    }
}

fn worker_main(
    mut io: WorkerIo,
    sh: Arc<Shared>,
    stats: Arc<Mutex<BTreeMap<(String, u32), QueueStats>>>,
) {
    pin_to(io.cpu);
    let published = sh.daemon.published();
    let mut w = Worker::new(published.current());
    sh.daemon.set_worker_counters(io.id, Arc::clone(w.rules()), w.counters());
    let mut hops_seen = sh.hops.version();
    w.apply_next_hops(&sh.hops.snapshot());
    w.apply_interface_macs(&io.macs);
    let mut map = PortMap::new(w.rules(), &io.names);
    let mut out = Outputs::new(w.rules().ports.len(), BATCH);

    let mut free: Vec<u64> = io.umem.frame_addrs().collect();
    let mut descs: Vec<(u64, u32)> = Vec::with_capacity(BATCH);
    let mut batch: Vec<PacketBuf<'_>> = Vec::with_capacity(BATCH);
    let mut in_drops: Vec<(DropReason, u32)> = Vec::new();
    let mut failed: Vec<u32> = Vec::new();
    let mut pollfds: Vec<libc::pollfd> = io
        .queues
        .iter()
        .map(|q| libc::pollfd { fd: q.fd(), events: libc::POLLIN, revents: 0 })
        .collect();
    let start = Instant::now();
    let mut idle = 0u32;
    let mut last_stats = Instant::now();
    let umem = &io.umem;

    while !sh.stop.load(Ordering::Acquire) {
        // Control: a new generation, new next hops.
        if w.sync(&published).is_some() {
            sh.daemon.set_worker_counters(io.id, Arc::clone(w.rules()), w.counters());
            w.apply_next_hops(&sh.hops.snapshot());
            w.apply_interface_macs(&io.macs);
            map = PortMap::new(w.rules(), &io.names);
            out = Outputs::new(w.rules().ports.len(), BATCH);
        }
        let v = sh.hops.version();
        if v != hops_seen {
            hops_seen = v;
            w.apply_next_hops(&sh.hops.snapshot());
        }

        let c = w.counters();
        for (qi, q) in io.queues.iter_mut().enumerate() {
            q.reclaim(&mut free, &mut failed);
            for len in failed.drain(..) {
                c.unsend(map.port_of_queue[qi], len as usize, DropReason::TxFailed);
            }
            q.refill(&mut free);
        }

        let mut got = 0;
        for qi in 0..io.queues.len() {
            // Never take more than every TX ring can queue: backpressure stays
            // in the RX ring (counted by the kernel) instead of becoming drops.
            let room = io.queues.iter_mut().map(|q| q.tx_free()).min().unwrap_or(0).min(BATCH);
            descs.clear();
            let mut cx =
                RxCtx { mem: umem, free: &mut free, drops: &mut in_drops, max_ip: map.max_ip };
            let n = io.queues[qi].recv(&mut cx, &mut descs, room);
            let in_port = map.port_of_queue[qi];
            for (reason, len) in in_drops.drain(..) {
                c.input_drop(in_port, len as usize, reason);
            }
            if n == 0 {
                continue;
            }
            got += n;
            let t0 = Instant::now();
            for &(addr, len) in &descs {
                // SAFETY: the kernel (or the queue's copy) handed this frame
                // over; until we queue or free it, nobody else touches it.
                let (frame, off) = unsafe { umem.frame(addr) };
                batch.push(
                    PacketBuf::new(frame, off, len as usize)
                        .expect("RX descriptor inside its frame"),
                );
            }
            let mut pool = || {
                let a = free.pop()?;
                // SAFETY: a frame from the free list belongs to this worker alone.
                let (frame, _) = unsafe { umem.frame(a) };
                PacketBuf::new(frame, HEADROOM, 0)
            };
            let now_ns = start.elapsed().as_nanos() as u64;
            w.process(in_port, &mut batch, &mut pool, &mut out, now_ns, &mut NoTrace);

            for (p, pkts) in out.ports.iter_mut().enumerate() {
                if pkts.is_empty() {
                    continue;
                }
                let settle = map.settles(in_port, p);
                match map.queue_of_port[p] {
                    Some(t) => {
                        for mut pkt in pkts.drain(..) {
                            if settle {
                                if let Err(r) = encap::settle(pkt.data_mut()) {
                                    c.unsend(p as u16, pkt.len(), r);
                                    free.push(umem.addr_of(pkt.buffer_ptr()));
                                    continue;
                                }
                            }
                            let addr = umem.addr_of(pkt.buffer_ptr()) + pkt.head() as u64;
                            if !io.queues[t].send(umem, addr, pkt.len() as u32) {
                                c.unsend(p as u16, pkt.len(), DropReason::TxRingFull);
                                free.push(umem.addr_of(pkt.buffer_ptr()));
                            }
                        }
                        io.queues[t].flush_tx();
                    }
                    None => {
                        for pkt in pkts.drain(..) {
                            c.unsend(p as u16, pkt.len(), DropReason::PortNotAttached);
                            free.push(umem.addr_of(pkt.buffer_ptr()));
                        }
                    }
                }
            }
            for pkt in out.free.drain(..) {
                free.push(umem.addr_of(pkt.buffer_ptr()));
            }
            c.busy_ns.add(t0.elapsed().as_nanos() as u64);
            io.queues[qi].after_rx();
        }

        if last_stats.elapsed() > Duration::from_millis(500) {
            last_stats = Instant::now();
            let mut st = stats.lock().unwrap_or_else(|p| p.into_inner());
            for (q, name) in io.queues.iter().zip(&io.names) {
                st.insert((name.clone(), q.queue()), q.stats());
            }
        }

        // Keep kicking until the kernel has taken everything queued: AF_XDP
        // in copy mode sends a bounded number of frames per system call.
        let mut tx_pending = false;
        for q in io.queues.iter_mut() {
            if q.tx_pending() {
                q.flush_tx();
                tx_pending = true;
            }
        }

        if got == 0 && !tx_pending {
            idle += 1;
            if idle > SPINS_BEFORE_SLEEP {
                // Sleeps until a packet arrives; the timeout bounds how late a
                // stop request or a new generation is seen while idle.
                afxdp::wait_readable(&mut pollfds, 50);
            }
        } else if got > 0 {
            idle = 0;
        }
    }

    // Drain: what was queued for transmission goes out before the queues close.
    let deadline = Instant::now() + Duration::from_millis(200);
    for q in io.queues.iter_mut() {
        q.flush_tx();
    }
    while Instant::now() < deadline {
        let outstanding: usize = io.queues.iter_mut().map(|q| q.outstanding()).sum();
        if outstanding == 0 {
            break;
        }
        for q in io.queues.iter_mut() {
            q.reclaim(&mut free, &mut failed);
            q.flush_tx();
        }
        failed.clear();
        std::thread::sleep(Duration::from_millis(1));
    }
    sh.daemon.retire_worker(io.id);
    drop(batch);
    io.queues.clear();
}
