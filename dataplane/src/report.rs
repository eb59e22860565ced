//! What the I/O layer reports to the control plane: the workers' counters
//! (the engine's `CounterBoard`, which the XDP tier's owner also writes),
//! their queues' statistics, and the state of every attached port. Workers
//! write here and never read the control plane's state; the control plane
//! reads here and never reaches into a worker.
//! Both sides take a lock only off the packet path: a worker when it picks
//! up a new generation or every half second, a reader when asked.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub use engine::counters::{CounterBoard, Refresh};
use engine::model::{Backend, PortKind};
use engine::placement::RulePlacement;
use engine::trace::TraceContext;
use serde::{Deserialize, Serialize};

use crate::io::steer::SteerStats;
use crate::io::tap;
use crate::io::tier::{TierProgramStats, TierStatus};
use crate::io::xdp::XdpMode;
use crate::io::QueueStats;
use crate::lock;
use crate::neigh::NeighState;

/// The packet I/O as `status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IoStatus {
    /// False while the datapath is down (it failed to restart after a
    /// change of ports).
    pub running: bool,
    pub workers: usize,
    pub ports: Vec<PortStatus>,
    /// The next hop of every remote VTEP, as the neighbour watcher sees it.
    pub neighbours: Vec<NeighState>,
    /// The XDP fast tier, when it is on (`xdp_tier = "auto"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<TierStatus>,
}

impl IoStatus {
    /// Port name -> the backend it runs on (`auto` resolved).
    pub fn backends(&self) -> HashMap<String, Backend> {
        self.ports.iter().map(|p| (p.port.clone(), p.backend)).collect()
    }
}

/// What the workers run with besides the rule set: the live trace runs with
/// the same.
#[derive(Clone, Debug, Default)]
pub struct LiveInputs {
    /// Next hops learned from the kernel: remote VTEP -> MAC.
    pub next_hops: Arc<HashMap<IpAddr, [u8; 6]>>,
    /// The MTU of the interface each remote VTEP is reached by.
    pub path_mtus: Arc<HashMap<IpAddr, u16>>,
    /// Port name -> its interface's MAC, as the running datapath read them.
    pub interface_macs: HashMap<String, [u8; 6]>,
    /// The neighbour state behind each next hop.
    pub neighbours: Vec<NeighState>,
}

impl LiveInputs {
    /// The trace context of a running daemon: the workers' inputs, what
    /// explains them (neighbour states in words), and where rules run.
    pub fn trace_context(self, placement: Vec<RulePlacement>) -> TraceContext {
        TraceContext {
            live: true,
            next_hops: self.next_hops,
            path_mtus: self.path_mtus,
            interface_macs: self.interface_macs,
            neighbours: self
                .neighbours
                .into_iter()
                .map(|n| {
                    let via = n.via.map(|v| format!(" via {v}")).unwrap_or_default();
                    (n.remote, format!("{}{via} on {}", n.state, n.interface))
                })
                .collect(),
            placement,
            learned: None,
            backends: HashMap::new(),
        }
    }
}

/// What `status` shows about one attached port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PortStatus {
    pub port: String,
    pub interface: String,
    pub kind: PortKind,
    /// The backend the port runs on (never `auto`).
    pub backend: Backend,
    /// The configuration said `backend = "auto"` and `backend` is what
    /// `run` chose for the interface.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backend_auto: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xdp_mode: Option<XdpMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero_copy: Option<bool>,
    /// TAP ports: the virtio-net offloads negotiated with the kernel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offloads: Option<tap::Offloads>,
    pub queues: u32,
    /// The interface's MTU (`null` if it could not be read).
    #[serde(default)]
    pub mtu: Option<u32>,
    pub steering: Option<SteerStats>,
    /// The XDP tier's counts in this port's program, when it looks flows up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<TierProgramStats>,
    pub sockets: Vec<QueueStats>,
    /// What the operator should know about the port's backend (e.g. AF_XDP
    /// on a veth costs the other end its TSO).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advice: Vec<String>,
}

/// The latest statistics of every queue. A queue is registered once, when
/// its worker starts, so publishing allocates nothing.
#[derive(Default)]
pub struct QueueBoard {
    queues: Mutex<Vec<(String, QueueStats)>>,
}

/// A queue's place on the board.
#[derive(Clone, Copy, Debug)]
pub struct QueueSlot(usize);

impl QueueBoard {
    pub fn register(&self, port: &str, stats: QueueStats) -> QueueSlot {
        let mut q = lock(&self.queues);
        q.push((port.to_string(), stats));
        QueueSlot(q.len() - 1)
    }

    pub fn publish(&self, stats: impl Iterator<Item = (QueueSlot, QueueStats)>) {
        let mut q = lock(&self.queues);
        for (slot, s) in stats {
            q[slot.0].1 = s;
        }
    }

    /// The queues of `port`, in queue order.
    pub fn port(&self, port: &str) -> Vec<QueueStats> {
        let mut v: Vec<QueueStats> =
            lock(&self.queues).iter().filter(|(p, _)| p == port).map(|(_, s)| *s).collect();
        v.sort_by_key(|s| s.queue);
        v
    }
}
