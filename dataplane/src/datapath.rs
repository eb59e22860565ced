//! The packet path of `overlayd run`: XDP steering on every port's interface,
//! AF_XDP sockets, and one pinned worker thread per queue moving batches
//! between the rings and the engine.
//!
//! Worker `i` serves queue `i` of every port that has one, with one UMEM shared
//! by its sockets, so a frame goes from one port's RX ring through the
//! pipeline (encapsulated or decapsulated in place) to another port's TX ring
//! without a copy. A worker reads the published rule set and the next-hop
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

use encap::{DropReason, PacketBuf};
use engine::compile::RuleSet;
use engine::model::{PortKind, TunnelType, XdpModeSpec};
use engine::next_hop::NextHops;
use engine::pipeline::{Outputs, Worker};
use engine::trace::NoTrace;
use serde::Serialize;

use crate::daemon::Daemon;
use crate::io::afxdp::{self, AfXdpError, Umem, Xsk, XskConfig, XskStats, HEADROOM};
use crate::io::xdp::{SteerProgram, SteerRole, SteerStats, XdpError, XdpMode};

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
    #[error("{0}")]
    Other(String),
}

/// What `status` shows about one attached port.
#[derive(Clone, Debug, Serialize)]
pub struct PortStatus {
    pub port: String,
    pub interface: String,
    pub kind: PortKind,
    pub backend: &'static str,
    pub xdp_mode: XdpMode,
    pub zero_copy: bool,
    pub queues: u32,
    pub steering: Option<SteerStats>,
    pub sockets: Vec<XskStats>,
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
            let queues = p.queues.unwrap_or_else(|| afxdp::rx_queues(&interface) as u32).max(1);
            Ok(PortSpec {
                name: p.name.clone(),
                interface,
                kind: p.kind,
                queues,
                xdp_mode: p.xdp_mode,
                zero_copy: p.zero_copy,
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

/// A worker's sockets, built before its thread starts.
struct WorkerIo {
    id: usize,
    /// Declared before the UMEM so they close before it is unmapped.
    socks: Vec<Xsk>,
    umem: Umem,
    /// The port name of each socket.
    names: Vec<String>,
    /// Port name -> its interface's MAC address (the outer source of tunnel
    /// packets when the configuration gives none).
    macs: std::collections::HashMap<String, [u8; 6]>,
    cpu: usize,
}

pub struct Datapath {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    programs: Mutex<Vec<(PortSpec, SteerProgram)>>,
    specs: Vec<PortSpec>,
    /// Per port: copy or zero-copy, and each worker's socket, for status.
    modes: Vec<bool>,
    sock_stats: Arc<Mutex<BTreeMap<(String, u32), XskStats>>>,
    workers: usize,
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

        // Programs first: a socket is registered in its interface's map.
        let mut programs = Vec::new();
        for p in &specs {
            let role = steer_role(&rs, p);
            let prog = match p.xdp_mode {
                XdpModeSpec::Native => SteerProgram::attach(&p.interface, &role, false)?,
                XdpModeSpec::Auto => SteerProgram::attach(&p.interface, &role, true)?,
                XdpModeSpec::Generic => SteerProgram::attach_generic(&p.interface, &role)?,
            };
            if prog.mode() == XdpMode::Generic && p.xdp_mode == XdpModeSpec::Auto {
                tracing::warn!(port = %p.name, interface = %p.interface, "native XDP refused: using the generic (SKB) hook, which is slower");
            }
            programs.push((p.clone(), prog));
        }

        let mut macs = std::collections::HashMap::new();
        for p in &specs {
            let m = afxdp::mac_address(&p.interface).map_err(|e| {
                DatapathError::Other(format!("{}: cannot read its MAC address: {e}", p.interface))
            })?;
            macs.insert(p.name.clone(), m);
        }
        let mut ios = Vec::new();
        let mut modes = vec![false; specs.len()];
        for w in 0..workers {
            let mine: Vec<&PortSpec> = specs.iter().filter(|p| (w as u32) < p.queues).collect();
            // Fill and TX rings full on every socket, plus room for copies.
            let frames = mine.len() * 2 * opts.ring_size as usize + 2 * BATCH;
            let umem = Umem::new(frames).map_err(|e| {
                DatapathError::Other(format!(
                    "worker {w}: cannot map {frames} frames of packet memory: {e}"
                ))
            })?;
            let mut socks: Vec<Xsk> = Vec::new();
            let mut names = Vec::new();
            for p in mine {
                let cfg = XskConfig { ring_size: opts.ring_size, zero_copy: p.zero_copy };
                let x = Xsk::open(&umem, &p.interface, w as u32, socks.first(), cfg)?;
                let i = specs.iter().position(|s| s.name == p.name).expect("from specs");
                modes[i] = x.zero_copy();
                programs[i].1.register_socket(w as u32, x.fd())?;
                socks.push(x);
                names.push(p.name.clone());
            }
            ios.push(WorkerIo { id: w, umem, socks, names, macs: macs.clone(), cpu: w % cpus });
        }

        let shared = Arc::new(Shared { daemon, hops, stop: AtomicBool::new(false) });
        let sock_stats = Arc::new(Mutex::new(BTreeMap::new()));
        let mut threads = Vec::new();
        for io in ios {
            let (sh, st) = (Arc::clone(&shared), Arc::clone(&sock_stats));
            let t = std::thread::Builder::new()
                .name(format!("overlayd-w{}", io.id))
                .spawn(move || worker_main(io, sh, st))
                .map_err(|e| DatapathError::Other(format!("cannot start a worker thread: {e}")))?;
            threads.push(t);
        }
        for (i, p) in specs.iter().enumerate() {
            tracing::info!(
                port = %p.name,
                interface = %p.interface,
                queues = p.queues,
                xdp_mode = ?programs[i].1.mode(),
                zero_copy = modes[i],
                "attached"
            );
        }
        tracing::info!(workers, "datapath started");
        Ok(Datapath {
            shared,
            threads,
            programs: Mutex::new(programs),
            specs,
            modes,
            sock_stats,
            workers,
        })
    }

    /// True if `rs` has the same ports as this datapath (else it must restart).
    pub fn serves(&self, rs: &RuleSet) -> bool {
        port_specs(rs).map(|s| s == self.specs).unwrap_or(false)
    }

    /// Re-steers the uplinks for `rs`'s tunnels, in place.
    pub fn resteer(&self, rs: &RuleSet) -> Result<(), DatapathError> {
        let mut progs = self.programs.lock().unwrap_or_else(|p| p.into_inner());
        for (spec, prog) in progs.iter_mut() {
            prog.set_role(&steer_role(rs, spec))?;
        }
        Ok(())
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    pub fn status(&self) -> Vec<PortStatus> {
        let progs = self.programs.lock().unwrap_or_else(|p| p.into_inner());
        let socks = self.sock_stats.lock().unwrap_or_else(|p| p.into_inner());
        progs
            .iter()
            .enumerate()
            .map(|(i, (spec, prog))| PortStatus {
                port: spec.name.clone(),
                interface: spec.interface.clone(),
                kind: spec.kind,
                backend: "af_xdp",
                xdp_mode: prog.mode(),
                zero_copy: self.modes[i],
                queues: spec.queues,
                steering: prog.stats().ok(),
                sockets: socks
                    .range((spec.name.clone(), 0)..=(spec.name.clone(), u32::MAX))
                    .map(|(_, s)| *s)
                    .collect(),
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

/// Maps between the rule set's port numbering and this worker's sockets.
struct PortMap {
    /// For each socket, its port's index in the rule set (`u16::MAX`: gone).
    port_of_sock: Vec<u16>,
    /// For each rule-set port, the socket that sends on it.
    sock_of_port: Vec<Option<usize>>,
}

impl PortMap {
    fn new(rs: &RuleSet, names: &[String]) -> PortMap {
        let port_of_sock = names.iter().map(|n| rs.port_index(n).unwrap_or(u16::MAX)).collect();
        let sock_of_port =
            rs.ports.iter().map(|p| names.iter().position(|n| *n == p.name)).collect();
        PortMap { port_of_sock, sock_of_port }
    }
}

fn worker_main(
    mut io: WorkerIo,
    sh: Arc<Shared>,
    stats: Arc<Mutex<BTreeMap<(String, u32), XskStats>>>,
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
    let fill_target = io.socks.first().map_or(0, |s| s.ring_size());
    let mut descs: Vec<(u64, u32)> = Vec::with_capacity(BATCH);
    let mut batch: Vec<PacketBuf<'_>> = Vec::with_capacity(BATCH);
    let mut pollfds: Vec<libc::pollfd> = io
        .socks
        .iter()
        .map(|s| libc::pollfd { fd: s.fd(), events: libc::POLLIN, revents: 0 })
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

        for s in io.socks.iter_mut() {
            s.reclaim(&mut free);
            s.refill(&mut free, fill_target);
        }

        let mut got = 0;
        for si in 0..io.socks.len() {
            // Never take more than every TX ring can queue: backpressure stays
            // in the RX ring (counted by the kernel) instead of becoming drops.
            let room = io.socks.iter_mut().map(|s| s.tx_free()).min().unwrap_or(0).min(BATCH);
            descs.clear();
            let n = io.socks[si].recv(&mut descs, room);
            if n == 0 {
                continue;
            }
            got += n;
            let t0 = Instant::now();
            for &(addr, len) in &descs {
                // SAFETY: the kernel handed this frame back through the RX
                // ring; until we queue or free it, nobody else touches it.
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
            w.process(map.port_of_sock[si], &mut batch, &mut pool, &mut out, now_ns, &mut NoTrace);

            let c = w.counters();
            for (p, pkts) in out.ports.iter_mut().enumerate() {
                if pkts.is_empty() {
                    continue;
                }
                match map.sock_of_port[p] {
                    Some(t) => {
                        for pkt in pkts.drain(..) {
                            let addr = umem.addr_of(pkt.buffer_ptr()) + pkt.head() as u64;
                            if !io.socks[t].send(addr, pkt.len() as u32) {
                                c.unsend(p as u16, pkt.len(), DropReason::TxRingFull);
                                free.push(umem.addr_of(pkt.buffer_ptr()));
                            }
                        }
                        io.socks[t].flush_tx();
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
            if io.socks[si].rx_needs_wakeup() {
                afxdp::wake_rx(io.socks[si].fd());
            }
        }

        if last_stats.elapsed() > Duration::from_millis(500) {
            last_stats = Instant::now();
            let mut st = stats.lock().unwrap_or_else(|p| p.into_inner());
            for (s, name) in io.socks.iter().zip(&io.names) {
                if let Ok(x) = s.stats() {
                    st.insert((name.clone(), s.queue()), x);
                }
            }
        }

        // Keep kicking until the kernel has taken everything queued: it sends
        // a bounded number of frames per system call.
        let mut tx_pending = false;
        for s in io.socks.iter_mut() {
            if s.tx_pending() {
                s.flush_tx();
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

    // Drain: what was queued for transmission goes out before the sockets close.
    let deadline = Instant::now() + Duration::from_millis(200);
    for s in io.socks.iter_mut() {
        s.flush_tx();
    }
    while Instant::now() < deadline {
        let outstanding: usize = io.socks.iter_mut().map(|s| s.ring_size() - s.tx_free()).sum();
        if outstanding == 0 {
            break;
        }
        for s in io.socks.iter_mut() {
            s.reclaim(&mut free);
            s.flush_tx();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    sh.daemon.retire_worker(io.id);
    drop(batch);
    io.socks.clear();
}
