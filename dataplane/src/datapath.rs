//! The packet path of `overlayd run`, as a whole: every port attached through
//! its backend (XDP steering and AF_XDP sockets; or io_uring on an AF_PACKET
//! socket or a TAP queue), and one pinned worker thread per queue
//! (worker.rs) moving batches between the queues and the engine.
//!
//! Worker `i` serves queue `i` of every port that has one, with one packet
//! memory shared by all its queues, so a frame goes from one port's queue
//! through the pipeline (encapsulated or decapsulated in place) to another
//! port's queue without a copy; the io_uring backends copy once on receive,
//! from their buffers into that memory.
//!
//! The set of ports decides which sockets and programs exist, so a change to
//! the ports restarts the workers (counters carry over through the ledger);
//! changes to tunnels re-steer the uplinks' programs in place; rules only
//! need the workers to pick up the new generation.
//!
//! With `pin` (what `overlayd run` does), each AF_XDP port's program and
//! maps are pinned and outlive the datapath (io/pin.rs): a stop leaves them
//! serving the tier's flows, and the next start, in this process or the
//! next, takes them over (io/xdp.rs, io/tier.rs). Only
//! [`Datapath::stop_and_remove`] (a clean stop) and the start of a datapath
//! that no longer has a port remove a port's pinned state.
//!
//! With `xdp_tier = "auto"`, each AF_XDP workload port's program also looks
//! established flows up in its tier maps, which one owner thread fills with
//! the entries the workers offer (io/tier.rs); any AF_XDP port whose driver
//! takes redirected frames can be a tier output.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use arc_swap::ArcSwap;
use engine::compile::RuleSet;
use engine::model::{Backend, Offloads, PortKind, TierSpec, TunnelType, XdpModeSpec};
use engine::next_hop::NextHops;
use engine::pipeline::Published;

use crate::capture::CaptureTap;
use crate::handed::{HandedState, HandedWorker, HandoverError, TakeOver};
use crate::io::af_packet::{self, KernelSink};
use crate::io::afxdp::{AfXdpError, Xsk, XskConfig};
use crate::io::checksums::RxChecksums;
use crate::io::doorbell::Doorbells;
use crate::io::memory::{FrameAddr, Umem, FRAME_SIZE};
use crate::io::steer::{SteerRole, SteerStats};
use crate::io::tap::{self, TapQueue};
use crate::io::tc_port::{TcPort, TcPortError};
use crate::io::tier::{Tier, TierBaselines, TierGenerations, TierLinks, TierPort, TierStatus};
use crate::io::uring::{self, Kind, UringError, UringQueue};
use crate::io::xdp::{Inherited, SteerProgram, XdpError, XdpMode};
use crate::io::BATCH;
use crate::io::{netdev, PortQueue, QueueStats};
use crate::report::{CounterBoard, PortStatus, QueueBoard};
use crate::worker::{self, WorkerIo, WorkerLinks};
use std::os::fd::OwnedFd;

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
    #[error(transparent)]
    TcPort(#[from] TcPortError),
    #[error("port {port} ({interface}): {what}: {source}")]
    Port { port: String, interface: String, what: &'static str, source: std::io::Error },
    #[error("worker {worker}: cannot map {frames} frames of packet memory: {source}")]
    Memory { worker: usize, frames: usize, source: std::io::Error },
    #[error("cannot start a worker thread: {0}")]
    Thread(std::io::Error),
    #[error(transparent)]
    TierGeneration(#[from] crate::io::tier::TierGenError),
    #[error(transparent)]
    Pin(#[from] crate::io::pin::PinError),
    #[error(transparent)]
    Handover(#[from] crate::handed::HandoverError),
}

impl DatapathError {
    fn port<'a>(
        p: &'a PortSpec,
        what: &'static str,
    ) -> impl FnOnce(std::io::Error) -> DatapathError + 'a {
        move |source| DatapathError::Port {
            port: p.name.clone(),
            interface: p.interface.clone(),
            what,
            source,
        }
    }
}

/// Options of the datapath as a whole.
#[derive(Clone, Copy, Debug)]
pub struct DatapathOptions {
    /// Worker threads; by default one per queue of the port with most queues,
    /// at most one per CPU.
    pub workers: Option<usize>,
    pub ring_size: u32,
    /// Pin the XDP programs and their maps, so they outlive the process.
    pub pin: bool,
    /// Fail if they cannot be pinned (else run unpinned, with a warning).
    pub pin_required: bool,
}

impl Default for DatapathOptions {
    fn default() -> Self {
        DatapathOptions { workers: None, ring_size: 2048, pin: false, pin_required: false }
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
    /// Never `Auto`: what `chosen_backend` made of it.
    backend: Backend,
    /// The configuration left the choice to `run` (`backend = "auto"`).
    auto: bool,
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
            let backend = chosen_backend(p, &interface, rs.config.xdp_tier);
            let queues = match backend {
                // A TAP device has the queues we open; one unless asked.
                Backend::Tap => p.queues.unwrap_or(1),
                _ => p.queues.unwrap_or_else(|| netdev::rx_queues(&interface) as u32),
            }
            .max(1);
            Ok(PortSpec {
                name: p.name.clone(),
                interface,
                kind: p.kind,
                queues,
                xdp_mode: p.xdp_mode,
                zero_copy: p.zero_copy,
                backend,
                auto: p.backend == Backend::Auto,
                offloads: p.offloads,
            })
        })
        .collect()
}

/// The backend a port runs on. `auto` takes `tc` on a veth: any XDP
/// program there turns the other end's TSO and GSO off (the kernel's
/// veth_fix_features), and a container's bulk TCP falls to a quarter of the
/// kernel's own rate, while a tc port keeps its super-frames whole
/// (docs/decisions.md, "The default backend on veths"). It needs the XDP
/// tier (without it a tc port sends every packet through overlayd) and
/// io_uring (its punt device's socket); AF_XDP-only settings ask for
/// AF_XDP. Everywhere else, a NIC's driver included, `af_xdp`: an XDP
/// program on a NIC costs the sender nothing.
fn chosen_backend(p: &engine::model::Port, interface: &str, tier: TierSpec) -> Backend {
    if p.backend != Backend::Auto {
        return p.backend;
    }
    let af_xdp_settings =
        p.xdp_mode != XdpModeSpec::default() || p.zero_copy != engine::model::ZeroCopy::default();
    let veth = netdev::driver(interface).is_ok_and(|d| d == "veth");
    if veth && tier == TierSpec::Auto && !af_xdp_settings && uring::probe().is_ok() {
        Backend::Tc
    } else {
        Backend::AfXdp
    }
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
            // The steering program only needs the UDP ports that carry
            // tunnels: Geneve's are steered like VXLAN's.
            TunnelType::Vxlan | TunnelType::Geneve => {
                if !vxlan_ports.contains(&t.udp_port()) {
                    vxlan_ports.push(t.udp_port())
                }
            }
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

/// How a port decides what is the dataplane's, kept so tunnels can change.
enum Steering {
    /// The XDP program in front of the AF_XDP sockets.
    Xdp(Box<SteerProgram>),
    /// The same decision taken on what an AF_PACKET socket received, and
    /// the sockets that keep the kernel from answering tunnel packets.
    AfPacket { role: Arc<ArcSwap<SteerRole>>, _sink: KernelSink },
    /// TAP: everything the workload sends is ours.
    Tap(tap::Offloads),
    /// A TSO-keeping workload port: tc decides, misses reach AF_PACKET
    /// through the punt device.
    TcPort(Box<TcPort>),
}

impl Steering {
    /// `tier`: the XDP tier's capacity, when it is on.
    fn for_port(
        rs: &RuleSet,
        p: &PortSpec,
        tier: Option<u32>,
        pin: bool,
    ) -> Result<Steering, DatapathError> {
        let role = steer_role(rs, p);
        // Uplinks look flows up too: VXLAN packets are decapsulated in the
        // tier when their inner flow has an entry.
        Ok(match p.backend {
            // port_specs has resolved `auto`.
            Backend::AfXdp | Backend::Auto => {
                let prog = match p.xdp_mode {
                    XdpModeSpec::Native => {
                        SteerProgram::attach(&p.interface, &role, false, tier, pin)?
                    }
                    XdpModeSpec::Auto => {
                        SteerProgram::attach(&p.interface, &role, true, tier, pin)?
                    }
                    XdpModeSpec::Generic => {
                        SteerProgram::attach_generic(&p.interface, &role, tier, pin)?
                    }
                };
                if prog.inherited() != Inherited::Nothing {
                    tracing::info!(port = %p.name, interface = %p.interface, inherited = ?prog.inherited(), "took over the XDP program a previous overlayd left attached");
                }
                if prog.mode() == XdpMode::Generic && p.xdp_mode == XdpModeSpec::Auto {
                    tracing::warn!(port = %p.name, interface = %p.interface, "native XDP refused: using the generic (SKB) hook, which is slower");
                }
                Steering::Xdp(Box::new(prog))
            }
            Backend::AfPacket => {
                let sink = KernelSink::bind(&role)
                    .map_err(DatapathError::port(p, "holding the tunnel ports"))?;
                Steering::AfPacket { role: Arc::new(ArcSwap::from_pointee(role)), _sink: sink }
            }
            Backend::Tap => Steering::Tap(tap::Offloads::default()),
            Backend::Tc => {
                // The tc tier sends out of any port (a tc program cannot
                // read the XDP tier's devmap): every port's interface.
                let outputs: Vec<(u16, u32)> = rs
                    .config
                    .ports
                    .iter()
                    .enumerate()
                    .filter_map(|(i, q)| {
                        Some((i as u16, netdev::ifindex(q.interface.as_deref()?).ok()?))
                    })
                    .collect();
                Steering::TcPort(Box::new(TcPort::open(&p.interface, &role, tier, &outputs, pin)?))
            }
        })
    }

    fn resteer(&mut self, rs: &RuleSet, p: &PortSpec) -> Result<(), DatapathError> {
        match self {
            Steering::Xdp(prog) => prog.set_role(&steer_role(rs, p))?,
            Steering::AfPacket { role, _sink } => {
                let new = steer_role(rs, p);
                *_sink = KernelSink::bind(&new)
                    .map_err(DatapathError::port(p, "holding the tunnel ports"))?;
                role.store(Arc::new(new));
            }
            // A tc uplink's program steers by the tunnels' VTEPs and ports.
            Steering::TcPort(t) if p.kind != PortKind::Workload => {
                t.program().set_role(&steer_role(rs, p))?
            }
            Steering::Tap(_) | Steering::TcPort(_) => {}
        }
        Ok(())
    }
}

/// What the control plane gives the datapath: the rule sets it publishes,
/// the next hops the neighbour watcher learns, and where workers report.
#[derive(Clone)]
pub struct DatapathLinks {
    pub published: Arc<Published>,
    pub hops: Arc<NextHops>,
    pub counters: Arc<CounterBoard>,
    /// Where the daemon's commit path writes the XDP tier's generation.
    pub tier_gens: Arc<TierGenerations>,
    /// Where a live capture is armed.
    pub capture: Arc<CaptureTap>,
    /// MAC learning: the workers' queues and the learned FDB.
    pub learning: Arc<crate::learning::Learning>,
    /// Wakes idle workers: rung by the commit path, captures and stops.
    pub bells: Arc<Doorbells>,
}

pub struct Datapath {
    stop: Arc<AtomicBool>,
    /// Rung with `stop`: a sleeping worker sees it at once.
    bells: Arc<Doorbells>,
    threads: Vec<JoinHandle<()>>,
    /// The workers' threads, which give their queues back when they end.
    worker_threads: Vec<JoinHandle<WorkerIo>>,
    /// Set with `stop` to park the workers for a planned upgrade.
    park: Arc<AtomicBool>,
    /// The parked workers' queues and memory, until handed over.
    parked: Vec<WorkerIo>,
    ring_size: u32,
    steering: Mutex<Vec<(PortSpec, Steering)>>,
    specs: Vec<PortSpec>,
    /// Per port, AF_XDP only: zero-copy or copy.
    modes: Vec<Option<bool>>,
    /// Per port: what status tells its operator about the backend chosen.
    advice: Vec<Vec<String>>,
    queues: Arc<QueueBoard>,
    workers: usize,
    /// Port name -> interface MAC, as the workers were given them.
    interface_macs: HashMap<String, [u8; 6]>,
    /// The XDP tier's owner, when the tier is on.
    tier: Option<Tier>,
    /// The tier settings the datapath was built for: a change restarts it.
    tier_spec: (TierSpec, u32),
    /// The tc tier setting it started with.
    tc_tier: TierSpec,
    counters: Arc<CounterBoard>,
    tier_gens: Arc<TierGenerations>,
}

/// What an operator should know about the backend port `p` runs on. An XDP
/// program on a veth turns its peer's TSO and GSO off (the kernel's
/// veth_fix_features): a container behind it hands TCP over in MTU-sized
/// segments, and bulk TCP through the port runs at a fraction of the
/// kernel's own rate (docs/benchmarks.md, "Bulk throughput").
fn backend_advice(p: &PortSpec) -> Vec<String> {
    let veth = p.backend == Backend::AfXdp
        && crate::io::netdev::driver(&p.interface).is_ok_and(|d| d == "veth");
    if !veth {
        return Vec::new();
    }
    let peer = match p.kind {
        PortKind::Workload => "the workload",
        _ => "the peer host",
    };
    vec![format!(
        "AF_XDP on a veth: the XDP program turns TSO and GSO off on the other end, so {peer} sends TCP in MTU-sized segments (bulk TCP about a quarter of the kernel's rate); backend = \"tc\" keeps them (docs/user-guide.md)"
    )]
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
    Ok(match steering {
        Steering::Xdp(prog) => {
            let checksums = RxChecksums::for_bare_frames(p.kind);
            let cfg = XskConfig { ring_size: opts.ring_size, zero_copy: p.zero_copy, checksums };
            let x = Xsk::open(umem, &p.interface, w, primary, cfg)?;
            prog.register_socket(w, x.fd())?;
            Box::new(x)
        }
        Steering::AfPacket { role, .. } => {
            let index = netdev::ifindex(&p.interface)
                .map_err(DatapathError::port(p, "no such interface"))?;
            // Workers share the interface through a fanout group that keeps
            // each flow on one worker.
            let fanout = (p.queues > 1).then(|| (index ^ std::process::id()) as u16);
            let fd = af_packet::open(index, fanout)
                .map_err(DatapathError::port(p, "opening an AF_PACKET socket"))?;
            let kind = Kind::AfPacket { role: Arc::clone(role) };
            Box::new(UringQueue::new(fd, &p.interface, w, kind, umem)?)
        }
        Steering::Tap(offloads) => {
            let q = TapQueue::open(&p.interface, p.queues > 1)
                .map_err(DatapathError::port(p, "opening the TAP device"))?;
            if w == 0 {
                *offloads = q.negotiate(p.offloads == Offloads::On);
                if !offloads.refused.is_empty() {
                    tracing::warn!(port = %p.name, refused = ?offloads.refused, "TAP offloads refused by the kernel: the workload does that work itself");
                }
            }
            let kind = Kind::Tap { mark_valid: p.offloads == Offloads::On };
            Box::new(UringQueue::new(q.into_fd(), &p.interface, w, kind, umem)?)
        }
        Steering::TcPort(port) => {
            let fanout =
                (p.queues > 1).then(|| (port.program_ref().ifindex() ^ std::process::id()) as u16);
            let (rx, tx) = port.sockets(fanout)?;
            // Everything punted is the engine's: the workload role.
            let kind =
                Kind::AfPacket { role: Arc::new(ArcSwap::from_pointee(SteerRole::Workload)) };
            Box::new(UringQueue::new(rx, &p.interface, w, kind, umem)?.sending_on(tx))
        }
    })
}

/// Each port's interface MAC address (the outer source of tunnel packets
/// when the configuration gives none); TAP devices have none of interest.
fn interface_macs(specs: &[PortSpec]) -> Result<HashMap<String, [u8; 6]>, DatapathError> {
    let mut macs = HashMap::new();
    for p in specs.iter().filter(|p| p.backend != Backend::Tap) {
        let m = netdev::mac_address(&p.interface)
            .map_err(DatapathError::port(p, "reading its MAC address"))?;
        macs.insert(p.name.clone(), m);
    }
    Ok(macs)
}

/// Worker `w`'s packet memory and its queue of every port that has a queue `w`.
fn open_worker(
    w: usize,
    steering: &mut [(PortSpec, Steering)],
    macs: &HashMap<String, [u8; 6]>,
    opts: &DatapathOptions,
    cpu: usize,
) -> Result<WorkerIo, DatapathError> {
    let mine: Vec<usize> =
        (0..steering.len()).filter(|&i| (w as u32) < steering[i].0.queues).collect();
    // Fill and TX rings full on every queue, plus room for copies.
    let frames = mine.len() * 2 * opts.ring_size as usize + 2 * BATCH;
    let umem =
        Umem::new(frames).map_err(|source| DatapathError::Memory { worker: w, frames, source })?;
    let mut queues: Vec<Box<dyn PortQueue>> = Vec::new();
    let mut names = Vec::new();
    let mut primary = None;
    for i in mine {
        let (p, st) = &mut steering[i];
        let q = open_queue(p, w as u32, &umem, primary, st, opts)?;
        if p.backend == Backend::AfXdp {
            primary = primary.or(Some(q.fd()));
        }
        queues.push(q);
        names.push(p.name.clone());
    }
    Ok(WorkerIo { id: w, umem, queues, names, macs: macs.clone(), cpu, free: None })
}

/// The workers a previous owner parked (upgrade.rs), their sockets
/// registered in this datapath's programs. They must serve the same ports
/// with the same queues as this configuration gives them.
fn adopt_workers(
    state: HandedState,
    fds: Vec<OwnedFd>,
    steering: &mut [(PortSpec, Steering)],
    macs: &HashMap<String, [u8; 6]>,
    workers: usize,
    cpus: usize,
) -> Result<Vec<WorkerIo>, DatapathError> {
    let mismatch = |why: String| DatapathError::Handover(HandoverError::Mismatch(why));
    if state.workers.len() != workers {
        return Err(mismatch(format!(
            "{} workers handed over, this configuration runs {workers}",
            state.workers.len()
        )));
    }
    let mut fds = fds.into_iter();
    let mut ios = Vec::new();
    for (w, hw) in state.workers.into_iter().enumerate() {
        let mine: Vec<usize> =
            (0..steering.len()).filter(|&i| (w as u32) < steering[i].0.queues).collect();
        let names: Vec<String> = mine.iter().map(|&i| steering[i].0.name.clone()).collect();
        if hw.id != w || hw.ports != names {
            return Err(mismatch(format!(
                "worker {w} served {:?}, this configuration gives it {names:?}",
                hw.ports
            )));
        }
        let memfd = fds.next().ok_or_else(|| mismatch("too few descriptors".into()))?;
        let umem = Umem::from_memfd(memfd, hw.frames).map_err(|source| DatapathError::Memory {
            worker: w,
            frames: hw.frames,
            source,
        })?;
        let mut queues: Vec<Box<dyn PortQueue>> = Vec::new();
        for i in mine {
            let fd = fds.next().ok_or_else(|| mismatch("too few descriptors".into()))?;
            let (p, st) = &mut steering[i];
            if let Steering::TcPort(_) = st {
                // The punt device's socket and the sending one.
                let tx = fds.next().ok_or_else(|| mismatch("too few descriptors".into()))?;
                queues.push(adopt_tc_queue(p, w as u32, fd, tx, &umem)?);
                continue;
            }
            let Steering::Xdp(prog) = st else {
                return Err(mismatch(format!("port {} cannot be taken over", p.name)));
            };
            let checksums = RxChecksums::for_bare_frames(p.kind);
            let x = Xsk::adopt(fd, &p.interface, w as u32, state.ring_size, checksums)?;
            prog.register_socket(w as u32, x.fd())?;
            queues.push(Box::new(x));
        }
        let free = hw.free.iter().map(|&f| FrameAddr(f as u64 * FRAME_SIZE as u64)).collect();
        ios.push(WorkerIo {
            id: w,
            umem,
            queues,
            names,
            macs: macs.clone(),
            cpu: w % cpus,
            free: Some(free),
        });
    }
    Ok(ios)
}

/// A tc port's queue `w` from a predecessor's sockets: `rx` on the punt
/// device (what it holds and what is punted from now on is this process's),
/// `tx` on the port's interface.
fn adopt_tc_queue(
    p: &PortSpec,
    w: u32,
    rx: OwnedFd,
    tx: OwnedFd,
    umem: &Umem,
) -> Result<Box<dyn PortQueue>, DatapathError> {
    let kind = Kind::AfPacket { role: Arc::new(ArcSwap::from_pointee(SteerRole::Workload)) };
    Ok(Box::new(UringQueue::new(rx, &p.interface, w, kind, umem)?.sending_on(tx)))
}

fn log_attached(p: &PortSpec, st: &Steering, zero_copy: Option<bool>) {
    let (name, iface, queues) = (&p.name, &p.interface, p.queues);
    match st {
        Steering::Xdp(prog) => {
            tracing::info!(port = %name, interface = %iface, queues, backend = "af_xdp", auto = p.auto, xdp_mode = ?prog.mode(), zero_copy = ?zero_copy, "attached")
        }
        Steering::AfPacket { .. } => {
            tracing::info!(port = %name, interface = %iface, queues, backend = "af_packet", "attached")
        }
        Steering::Tap(o) => {
            tracing::info!(port = %name, interface = %iface, queues, backend = "tap", offloads = ?o.enabled, "attached")
        }
        Steering::TcPort(t) => {
            tracing::info!(port = %name, interface = %iface, queues, backend = "tc", auto = p.auto, punt = %t.punt_name(), "attached")
        }
    }
}

impl Datapath {
    /// Attaches every configured port and starts the workers.
    pub fn start(links: DatapathLinks, opts: DatapathOptions) -> Result<Datapath, DatapathError> {
        Self::start_with(links, opts, None)
    }

    /// As [`start`](Self::start), with the workers' queues and memory
    /// taken from `from` (a planned upgrade: upgrade.rs) instead of opened:
    /// the programs are attached (adopting the pinned ones) before asking
    /// for them, so the time no worker runs is only mapping the rings.
    pub fn start_taking_over(
        links: DatapathLinks,
        opts: DatapathOptions,
        from: &mut dyn TakeOver,
    ) -> Result<Datapath, DatapathError> {
        Self::start_with(links, opts, Some(from))
    }

    fn start_with(
        links: DatapathLinks,
        opts: DatapathOptions,
        from: Option<&mut dyn TakeOver>,
    ) -> Result<Datapath, DatapathError> {
        let rs = links.published.current();
        let specs = port_specs(&rs)?;
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let most_queues = specs.iter().map(|p| p.queues as usize).max().unwrap_or(1);
        let workers = opts.workers.unwrap_or(most_queues.min(cpus)).max(1);
        if specs.iter().any(|p| p.backend != Backend::AfXdp) {
            uring::probe()?;
        }
        let tier_spec = (rs.config.xdp_tier, rs.config.xdp_tier_entries);
        let tier_capacity = (tier_spec.0 == TierSpec::Auto).then_some(tier_spec.1);
        let mut opts = opts;
        if opts.pin {
            if let Err(e) = crate::io::pin::prepare() {
                if opts.pin_required {
                    return Err(e.into());
                }
                // A sandbox without the BPF filesystem (or the right to
                // write in it): serve anyway, as before restarts kept state.
                tracing::warn!(error = %e, "XDP programs not pinned: a restart or stop detaches them and the XDP tier's flows are lost meanwhile");
                opts.pin = false;
            }
        }
        if opts.pin {
            // What earlier datapaths pinned for ports this one does not
            // have, and for interfaces that are gone, goes.
            let keep: Vec<String> = specs
                .iter()
                .filter(|p| matches!(p.backend, Backend::AfXdp | Backend::Tc))
                .map(|p| p.interface.clone())
                .collect();
            for gone in crate::io::pin::sweep(&keep) {
                tracing::info!(interface = %gone.interface, netns = gone.netns, "removed the pinned XDP program of a port no longer served");
            }
        }
        // Steering first: an AF_XDP socket is registered in its program's
        // map. One thread per port: loading and verifying a program is most
        // of a start's time (and of a restart's outage).
        let mut steering = std::thread::scope(|s| {
            let loads: Vec<_> = specs
                .iter()
                .map(|p| s.spawn(|| Steering::for_port(&rs, p, tier_capacity, opts.pin)))
                .collect();
            loads
                .into_iter()
                .zip(&specs)
                .map(|(l, p)| {
                    let st = l.join().unwrap_or_else(|e| std::panic::resume_unwind(e))?;
                    Ok((p.clone(), st))
                })
                .collect::<Result<Vec<_>, DatapathError>>()
        })?;
        let macs = interface_macs(&specs)?;
        // The tc tier before the queues: loading its program takes a while,
        // and a successor must not take it out of the time no worker runs.
        let tc = match tier_capacity {
            Some(_) => attach_tc(&mut steering, rs.config.tc_tier),
            None => {
                drop_tc(&mut steering, &[]);
                Vec::new()
            }
        };
        let mut ring_size = opts.ring_size;
        let start_tier = |steering: &mut Vec<(PortSpec, Steering)>, handed: &TierBaselines| {
            match tier_capacity {
                Some(_) => {
                    let (t, l) = start_tier(steering, &links, workers, tc.clone(), handed)?;
                    Ok::<_, DatapathError>((Some(t), Some(l)))
                }
                None => Ok((None, None)),
            }
        };
        let ((tier, tier_link), ios) = match from {
            None => {
                let ios = (0..workers)
                    .map(|w| open_worker(w, &mut steering, &macs, &opts, w % cpus))
                    .collect::<Result<Vec<_>, _>>()?;
                (start_tier(&mut steering, &TierBaselines::default())?, ios)
            }
            Some(from) => {
                // The predecessor's tier owner stops first, then ours adopts
                // the entries; its workers serve meanwhile.
                let handed = from.prepare()?;
                let tier = start_tier(&mut steering, &handed)?;
                let (state, fds) = from.take()?;
                let t0 = std::time::Instant::now();
                ring_size = state.ring_size;
                let ios = adopt_workers(state, fds, &mut steering, &macs, workers, cpus)?;
                from.commit()?;
                tracing::info!(
                    mapped_ms = t0.elapsed().as_secs_f64() * 1e3,
                    "upgrade: the parked queues are mapped"
                );
                (tier, ios)
            }
        };
        let modes: Vec<Option<bool>> = steering
            .iter()
            .map(|(p, st)| {
                matches!(st, Steering::Xdp(_)).then(|| ios.iter().any(|io| io.zero_copy(&p.name)))
            })
            .collect();
        let advice: Vec<Vec<String>> = steering.iter().map(|(p, _)| backend_advice(p)).collect();
        for (a, (p, _)) in advice.iter().zip(&steering) {
            for line in a {
                tracing::warn!(port = %p.name, interface = %p.interface, "{line}");
            }
        }

        let stop = Arc::new(AtomicBool::new(false));
        let park = Arc::new(AtomicBool::new(false));
        let queues = Arc::new(QueueBoard::default());
        let wl = WorkerLinks {
            published: links.published,
            hops: links.hops,
            counters: Arc::clone(&links.counters),
            capture: links.capture,
            queues: Arc::clone(&queues),
            stop: Arc::clone(&stop),
            tier: tier_link,
            ready: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            learning: Arc::clone(&links.learning),
            park: Arc::clone(&park),
            bells: Arc::clone(&links.bells),
        };
        let ready = Arc::clone(&wl.ready);
        let mut threads = Vec::new();
        let published = Arc::clone(&wl.published);
        let learn = links.learning.spawn(published, Arc::clone(&stop));
        threads.push(learn.map_err(DatapathError::Thread)?);
        let mut worker_threads = Vec::new();
        for io in ios {
            let wl = wl.clone();
            let t = std::thread::Builder::new()
                .name(format!("overlayd-w{}", io.id))
                .spawn(move || worker::run(io, wl))
                .map_err(DatapathError::Thread)?;
            worker_threads.push(t);
        }
        // Inherited programs last: their sockets are registered, the tier's
        // inherited entries judged and the workers' fill rings stocked, so
        // the first frame the swapped-in program hands to a socket has a
        // buffer to land in. (A worker that cannot start in a second does
        // not hold the swap back.)
        let t0 = std::time::Instant::now();
        while ready.load(Ordering::Acquire) < workers && t0.elapsed().as_secs() < 1 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        for (_, st) in steering.iter_mut() {
            if let Steering::TcPort(t) = st {
                t.swap_in();
            }
            if let Steering::Xdp(prog) = st {
                let swapped = prog.swap_in();
                if swapped.is_ok() {
                    crate::io::tc::swap_in_pending(prog);
                }
                if let Err(e) = swapped {
                    stop.store(true, Ordering::Release);
                    links.bells.ring();
                    for t in threads.drain(..) {
                        t.thread().unpark(); // the learning thread sleeps until woken
                        let _ = t.join();
                    }
                    for t in worker_threads.drain(..) {
                        let _ = t.join();
                    }
                    return Err(e.into());
                }
            }
        }
        for ((p, st), zero_copy) in steering.iter().zip(&modes) {
            log_attached(p, st, *zero_copy);
        }
        tracing::info!(workers, xdp_tier = tier.is_some(), "datapath started");
        let steering = Mutex::new(steering);
        Ok(Datapath {
            stop,
            bells: links.bells,
            threads,
            worker_threads,
            park,
            parked: Vec::new(),
            ring_size,
            steering,
            specs,
            modes,
            advice,
            queues,
            workers,
            interface_macs: macs,
            tier,
            tier_spec,
            tc_tier: rs.config.tc_tier,
            counters: links.counters,
            tier_gens: links.tier_gens,
        })
    }

    /// True if `rs` has the same ports and tier settings as this datapath
    /// (else it must restart).
    pub fn serves(&self, rs: &RuleSet) -> bool {
        let tier = (rs.config.xdp_tier, rs.config.xdp_tier_entries);
        tier == self.tier_spec
            && rs.config.tc_tier == self.tc_tier
            && port_specs(rs).map(|s| s == self.specs).unwrap_or(false)
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

    /// The interface MACs the workers use as the outer source of tunnel
    /// packets whose uplink has no configured MAC.
    pub fn interface_macs(&self) -> &HashMap<String, [u8; 6]> {
        &self.interface_macs
    }

    pub fn status(&self) -> Vec<PortStatus> {
        let steering = self.steering.lock().unwrap_or_else(|p| p.into_inner());
        steering
            .iter()
            .enumerate()
            .map(|(i, (spec, st))| {
                let sockets = self.queues.port(&spec.name);
                let (xdp_mode, steer, offloads) = match st {
                    Steering::Xdp(prog) => (Some(prog.mode()), prog.stats().ok(), None),
                    Steering::AfPacket { .. } => (None, Some(sum_steering(&sockets)), None),
                    Steering::Tap(o) => (None, None, Some(o.clone())),
                    Steering::TcPort(t) => (None, t.program_ref().stats().ok(), None),
                };
                let tier = match st {
                    Steering::Xdp(prog) if prog.tier_on() => prog.tier_stats().ok(),
                    Steering::TcPort(t) if t.program_ref().tier_on() => {
                        t.program_ref().tier_stats().ok()
                    }
                    _ => None,
                };
                PortStatus {
                    port: spec.name.clone(),
                    interface: spec.interface.clone(),
                    kind: spec.kind,
                    backend: spec.backend,
                    backend_auto: spec.auto,
                    xdp_mode,
                    zero_copy: self.modes[i],
                    offloads,
                    queues: spec.queues,
                    mtu: netdev::mtu(&spec.interface).ok(),
                    steering: steer,
                    tier,
                    sockets,
                    advice: self.advice.get(i).cloned().unwrap_or_default(),
                }
            })
            .collect()
    }

    /// What `status` shows of the XDP tier, when it is on.
    pub fn tier_status(&self) -> Option<TierStatus> {
        self.tier.as_ref().map(Tier::status)
    }

    /// Stops the workers after they finish their batch and flush what they
    /// queued. Pinned programs stay attached, the tier's flows still
    /// forwarded, for the next start to take over; the others detach (when
    /// `self` drops).
    pub fn stop(mut self) {
        self.shut_down(false);
        tracing::info!("datapath stopped");
    }

    /// Stops as [`stop`](Self::stop) and removes every pinned program and
    /// map: nothing of the datapath is left in the kernel.
    pub fn stop_and_remove(mut self) {
        self.shut_down(true);
        tracing::info!("datapath stopped, its XDP programs removed");
    }

    /// Why this datapath cannot be handed over, if it cannot: only AF_XDP
    /// and tc ports whose programs are pinned outlive this process.
    pub fn handover_refusal(&self) -> Option<String> {
        let st = self.steering.lock().unwrap_or_else(|p| p.into_inner());
        st.iter().find_map(|(spec, s)| match s {
            Steering::Xdp(prog) if prog.pinned() => None,
            Steering::Xdp(_) => Some(format!("port {}: its XDP program is not pinned", spec.name)),
            Steering::TcPort(t) if t.pinned() => None,
            Steering::TcPort(_) => {
                Some(format!("port {}: its tc programs are not pinned", spec.name))
            }
            _ => Some(format!(
                "port {}: backend {:?} cannot be handed over",
                spec.name, spec.backend
            )),
        })
    }

    /// Stops the XDP tier's owner (its last harvest), the workers running
    /// on: a successor adopts the tier's entries before the workers park,
    /// so that is not part of the time no worker runs. Pinned programs keep
    /// their lookups on.
    pub fn stop_tier(&mut self) -> TierBaselines {
        self.stop_tier_owner(false)
    }

    fn stop_tier_owner(&mut self, remove: bool) -> TierBaselines {
        let Some(tier) = self.tier.take() else { return TierBaselines::default() };
        let mut st = self.steering.lock().unwrap_or_else(|p| p.into_inner());
        for (spec, s) in st.iter_mut() {
            let prog = match s {
                Steering::Xdp(prog) if !prog.pinned() || remove => prog,
                Steering::TcPort(t) if !t.pinned() || remove => t.program(),
                _ => continue,
            };
            if let Err(e) = prog.set_tier(None) {
                tracing::error!(port = %spec.name, error = %e, "cannot turn the XDP tier off");
            }
        }
        self.counters.set_refresh(None);
        self.tier_gens.clear();
        tier.stop()
    }

    /// Stops the workers at a batch boundary, keeping their sockets and
    /// memory open, after the tier's owner (its last harvest); returns what
    /// a successor needs (upgrade.rs), its descriptors duplicated: this
    /// process's copies close when the datapath drops, the sockets stay
    /// open through the successor's. The pinned programs stay attached
    /// when it drops.
    pub fn park(&mut self) -> (HandedState, Vec<OwnedFd>) {
        self.stop_tier_owner(false);
        self.park.store(true, Ordering::Release);
        self.stop.store(true, Ordering::Release);
        self.bells.ring();
        // Only the workers: the other threads (learning) end when the
        // datapath drops, after the successor has what it needs.
        for t in self.worker_threads.drain(..) {
            if let Ok(io) = t.join() {
                self.parked.push(io);
            }
        }
        let ios: Vec<WorkerIo> = std::mem::take(&mut self.parked);
        let mut workers = Vec::new();
        let mut fds = Vec::new();
        for io in ios {
            match io.umem.memfd().try_clone_to_owned() {
                Ok(fd) => fds.push(fd),
                Err(e) => {
                    tracing::error!(worker = io.id, error = %e, "cannot duplicate the packet memory")
                }
            }
            for fd in io.queues.iter().flat_map(|q| q.handover_fds()) {
                match crate::io::sys::dup(fd) {
                    Ok(fd) => fds.push(fd),
                    Err(e) => {
                        tracing::error!(worker = io.id, error = %e, "cannot duplicate a socket")
                    }
                }
            }
            let free = io.free.as_deref().unwrap_or_default();
            workers.push(HandedWorker {
                id: io.id,
                frames: io.umem.frames(),
                free: free.iter().map(|a| (a.0 / FRAME_SIZE as u64) as u32).collect(),
                ports: io.names.clone(),
                port_fds: io.queues.iter().map(|q| q.handover_fds().len()).collect(),
            });
        }
        let counters = self.counters.carried();
        tracing::info!(workers = workers.len(), "datapath parked for a successor");
        (HandedState { ring_size: self.ring_size, workers, counters }, fds)
    }

    /// The tier first: its counters harvested for the last time, and, when
    /// the programs go, its lookups off (frames go to the still running
    /// workers); then the workers. Pinned programs that stay keep their
    /// lookups on: the tier forwards its flows while no overlayd runs.
    fn shut_down(&mut self, remove: bool) {
        self.stop_tier_owner(remove);
        let mut st = self.steering.lock().unwrap_or_else(|p| p.into_inner());
        self.stop.store(true, Ordering::Release);
        self.bells.ring();
        let park = self.park.load(Ordering::Acquire);
        for t in self.worker_threads.drain(..) {
            match t.join() {
                Ok(io) if park => self.parked.push(io),
                _ => {}
            }
        }
        for t in self.threads.drain(..) {
            t.thread().unpark(); // the learning thread sleeps until woken
            let _ = t.join();
        }
        if remove {
            for (spec, s) in st.iter_mut() {
                let unpinned = match s {
                    Steering::Xdp(prog) => prog.unpin(),
                    Steering::TcPort(t) => t.unpin(),
                    _ => Ok(()),
                };
                if let Err(e) = unpinned {
                    tracing::error!(port = %spec.name, error = %e, "cannot remove the pinned programs");
                }
            }
        }
    }
}

/// Starts the XDP tier's owner over the ports' programs (`tc`: the ports
/// the tc tier serves) and turns the workload ports' lookups on; returns
/// the owner and the workers' link.
fn start_tier(
    steering: &mut [(PortSpec, Steering)],
    links: &DatapathLinks,
    workers: usize,
    tc: Vec<usize>,
    handed: &TierBaselines,
) -> Result<(Tier, crate::io::tier::TierLink), DatapathError> {
    let mut ports = Vec::new();
    let mut gens = Vec::new();
    for (i, (spec, st)) in steering.iter_mut().enumerate() {
        let ifindex = netdev::ifindex(&spec.interface)
            .map_err(DatapathError::port(spec, "no such interface"))?;
        let (ingress, not_output) = match st {
            Steering::Xdp(prog) => match prog.take_tier() {
                Some((maps, gen)) => {
                    gens.push((spec.interface.clone(), gen));
                    (Some(maps), None)
                }
                None => (None, None),
            },
            // Frames may still be redirected into it (by an uplink's decap
            // tier), if its peer takes them: the probe says.
            Steering::TcPort(t) => match t.program().take_tier() {
                Some((maps, gen)) => {
                    gens.push((spec.interface.clone(), gen));
                    (Some(maps), None)
                }
                None => (None, None),
            },
            _ => (None, Some(format!("backend {:?} is not an XDP port", spec.backend))),
        };
        ports.push(TierPort {
            port: i as u16,
            name: spec.name.clone(),
            ifindex,
            tc: tc.contains(&i) || matches!(st, Steering::TcPort(_)),
            tc_only: matches!(st, Steering::TcPort(_)),
            ingress,
            not_output,
        });
    }
    let tl = TierLinks {
        published: Arc::clone(&links.published),
        hops: Arc::clone(&links.hops),
        board: Arc::clone(&links.counters),
        board_id: workers,
    };
    // The owner first: it deletes the inherited entries the current rule
    // set does not decide the same way, before the generation is written.
    let (tier, link) = Tier::start(ports, tl, handed).map_err(DatapathError::Thread)?;
    let published = Arc::clone(&links.published);
    links.tier_gens.replace(gens, || published.current().generation)?;
    links.counters.set_refresh(Some(tier.refresher()));
    // Lookups last: the generation is in place and the owner is running.
    for (i, (_, st)) in steering.iter_mut().enumerate() {
        let prog = match st {
            Steering::Xdp(prog) => prog.as_mut(),
            Steering::TcPort(t) => t.program(),
            _ => continue,
        };
        if prog.tier_loaded() {
            prog.set_tier(Some(i as u16))?;
        }
    }
    Ok((tier, link))
}

/// Attaches the tc tier to every AF_XDP workload port whose program has the
/// tier's maps (before the tier's lookups are on, so nothing is passed to it
/// early); returns the ports it serves. A port where it cannot attach keeps
/// frames with partial checksums on AF_XDP, and says why in the log.
fn attach_tc(steering: &mut [(PortSpec, Steering)], spec: TierSpec) -> Vec<usize> {
    if spec != TierSpec::Auto {
        drop_tc(steering, &[]);
        return Vec::new();
    }
    let outputs: Vec<(u16, u32)> = steering
        .iter()
        .enumerate()
        .filter_map(|(i, (p, _))| Some((i as u16, netdev::ifindex(&p.interface).ok()?)))
        .collect();
    let mut served = Vec::new();
    for (i, (spec, st)) in steering.iter_mut().enumerate() {
        let Steering::Xdp(prog) = st else { continue };
        if spec.kind != PortKind::Workload || !prog.tier_loaded() {
            continue;
        }
        match crate::io::tc::attach(prog, &spec.interface, &outputs) {
            Ok(()) => {
                tracing::info!(port = %spec.name, "tc tier attached");
                served.push(i);
            }
            Err(e) => tracing::warn!(port = %spec.name, error = %e, "no tc tier"),
        }
    }
    drop_tc(steering, &served);
    served
}

/// Ports without the tc tier (not in `served`) lose what a previous
/// overlayd left of it: its pinned link (io/tc.rs).
fn drop_tc(steering: &mut [(PortSpec, Steering)], served: &[usize]) {
    for (i, (spec, st)) in steering.iter_mut().enumerate() {
        if let Steering::Xdp(prog) = st {
            if !served.contains(&i) {
                if let Err(e) = prog.drop_tc_tier() {
                    tracing::warn!(port = %spec.name, error = %e, "the tc tier's setting was not cleared");
                }
            }
        }
    }
}

/// An AF_PACKET port's steering counts, summed over its queues.
fn sum_steering(queues: &[QueueStats]) -> SteerStats {
    queues.iter().filter_map(|q| q.steering).fold(SteerStats::default(), |t, s| t + s)
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.shut_down(false);
    }
}
