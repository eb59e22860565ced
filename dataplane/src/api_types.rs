//! The documents the control API answers with, shared by the daemon (which
//! builds them) and `overlayctl` (which reads them): a field renamed here is
//! renamed for both, or the build fails. docs/api.md describes the same
//! shapes, and the OpenAPI document is generated from them (crate::openapi).
//!
//! `overlayd check --json` and `overlayd replay --json` print documents from
//! here too (`Summary`, `Counters`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use engine::compile::{RuleSet, TunnelRt};
use engine::counters::{FlowSnapshot, Snapshot};
use engine::flow_key::mask_fields;
use engine::model::{PortKind, Rule, TunnelType};
use engine::placement::RulePlacement;
use serde::{Deserialize, Serialize};

pub use crate::io::QueueStats;
pub use crate::neigh::NeighState;
pub use crate::offload::switchdev::{PortRole, Representor};
pub use crate::offload::vf::VfState;
pub use crate::report::{IoStatus, PortStatus};
pub use engine::trace::TraceReport;

/// Every refusal: what was wrong and, where it applies, the field at fault
/// (`rules[1].actions[0].encap`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorBody {
    pub error: String,
    pub path: Option<String>,
}

/// The answer to an accepted write: the generation it created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Applied {
    pub generation: u64,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Status {
    pub version: String,
    pub api: String,
    pub uptime_secs: u64,
    pub generation: u64,
    /// The packet I/O, `null` with `--control-only`.
    pub io: Option<IoStatus>,
    pub offload: OffloadStatus,
    /// Each tunnel's traffic, drops and liveness.
    #[serde(default)]
    pub tunnels: Vec<TunnelStatus>,
    /// Cluster mode only, while the store cannot be reached:
    /// `degraded: store unreachable since <time> (<n> s)` (forwarding runs
    /// on the last-known state; `GET /v1/cluster/status` has the rest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Resident memory read right after the daemon last gave its free heap
    /// pages back (absent from daemons before it; zeros until the first purge).
    #[serde(default)]
    pub memory: MemoryStatus,
}

/// What the daemon holds after giving free heap pages back: read right
/// after the once-a-second purge, so it is not inflated by the scratch of
/// the last change or answer. `purges` counts purges since start (each
/// followed by a reading), `at_ms` is when the last reading was taken, in
/// milliseconds since the daemon started. A reader that must see memory
/// free of its own requests waits until `purges` has gone up by two.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct MemoryStatus {
    /// The resident set (VmRSS), KiB; 0 if it could not be read.
    #[serde(default)]
    pub resident_kib: u64,
    /// Its anonymous part (RssAnon: heap and stacks), KiB.
    #[serde(default)]
    pub anon_kib: u64,
    #[serde(default)]
    pub purges: u64,
    #[serde(default)]
    pub at_ms: u64,
}

/// The offloader's state, in `status` and `GET /v1/offload`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OffloadStatus {
    /// Whether an offloader runs (not with `--control-only`).
    pub active: bool,
    /// Why it does not, when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// What the configuration asks for (`offload.enabled`).
    pub enabled: bool,
    /// The generation last placed.
    pub generation: Option<u64>,
    pub hardware_rules: usize,
    pub software_rules: usize,
    /// Each probed interface: its switch, or why it is not a switchdev port.
    pub ports: BTreeMap<String, PortProbe>,
    /// Each device holding filters, or that last failed an update.
    pub devices: BTreeMap<String, DeviceStatus>,
    /// The configuration's VF settings the devices refused at start.
    pub vf_error: Option<String>,
}

/// What probing an interface found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum PortProbe {
    Switchdev { switch_id: String },
    NotSwitchdev { error: String },
}

/// A device's filters, and the error of its last update if it failed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeviceStatus {
    pub filters: usize,
    pub error: Option<String>,
}

/// Where a rule runs: a tc flower filter in a device, or the software path
/// and why (`code` is stable for scripts, docs/offload.md; `reason` is for people).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "runs_in", rename_all = "snake_case")]
pub enum Placement {
    Hardware { device: String, pref: u16, handle: u32 },
    Software { code: String, reason: String },
}

impl Placement {
    pub fn software(code: &str, reason: impl Into<String>) -> Placement {
        Placement::Software { code: code.into(), reason: reason.into() }
    }
}

impl From<&RulePlacement> for Placement {
    fn from(p: &RulePlacement) -> Placement {
        match (&p.hardware, &p.software) {
            (Some(f), _) => {
                Placement::Hardware { device: f.dev.clone(), pref: f.pref, handle: f.handle }
            }
            (None, Some(w)) => Placement::software(w.code, w.text.clone()),
            // `placement::place` decides every rule; this is a rule it was not given.
            (None, None) => Placement::software("unplaced", "not placed by the offloader"),
        }
    }
}

/// One rule of `GET /v1/rules`: the rule as configured, and where it runs
/// (`null` for a rule the offloader has not placed yet, between a change
/// and its placement).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RuleView {
    #[serde(flatten)]
    pub rule: Rule,
    pub placement: Option<Placement>,
    /// Where the rule's flows run in software after their first packet:
    /// the XDP tier, or AF_XDP and why (absent from older daemons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<TierPlace>,
}

/// Whether a rule's (or a flow's) packets after the first are handled by
/// the XDP tier, and if not, why (`engine::tier_fit`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TierPlace {
    /// True: in the XDP tier (while it has room and the output port takes
    /// redirected frames: `status` counts what was refused).
    pub in_tier: bool,
    /// Why not: a `not_in_tier` reason, `tier_off` or `port_backend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The same in words.
    pub text: String,
}

/// `GET /v1/offload`: the status and where each rule runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OffloadView {
    #[serde(flatten)]
    pub status: OffloadStatus,
    pub rules: Vec<PlacedRule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PlacedRule {
    pub id: u32,
    pub priority: u16,
    #[serde(flatten)]
    pub placement: Placement,
}

/// `GET /v1/offload/vfs?pf=IF`: a physical function as the device reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VfView {
    pub pf: String,
    pub sriov: Sriov,
    /// IFLA_NUM_VF: the VFs the driver reports.
    pub num_vf: u32,
    pub vfs: Vec<VfState>,
    /// The PF's embedded switch, when it is a switchdev port.
    pub switch_id: Option<String>,
    pub representors: Representors,
}

/// The PF's SR-IOV capability (sysfs), or why it cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Sriov {
    Counts { num_vfs: u32, total_vfs: u32 },
    Unavailable { error: String },
}

/// The other ports of the PF's switch, or why there are none to show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Representors {
    Found(Vec<Representor>),
    Unavailable { error: String },
}

/// Packets and bytes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

impl From<FlowSnapshot> for Traffic {
    fn from(f: FlowSnapshot) -> Traffic {
        Traffic { packets: f.packets, bytes: f.bytes }
    }
}

/// `GET /v1/counters` (and `overlayd replay --json`): every worker's
/// counters summed, numbered by the rule set of `generation`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Counters {
    pub generation: u64,
    pub rx: u64,
    pub tx: u64,
    pub replicas: u64,
    pub generated: u64,
    pub dropped: u64,
    /// rx + replicas + generated = tx + dropped.
    pub conserved: bool,
    /// Non-zero drop counters by reason.
    pub drops: BTreeMap<String, u64>,
    pub ports: Vec<PortCounters>,
    pub tunnels: Vec<TunnelCounters>,
    pub rules: Vec<RuleCounters>,
    pub cache: CacheCounters,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PortCounters {
    pub name: String,
    pub rx: Traffic,
    pub tx: Traffic,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TunnelCounters {
    pub name: String,
    pub encap: Traffic,
    pub decap: Traffic,
    /// Non-zero drops of packets going into the tunnel or coming out of it,
    /// by reason (each also counts in `drops`).
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RuleCounters {
    pub id: u32,
    pub priority: u16,
    pub packets: u64,
    pub bytes: u64,
    /// Seconds since the rule last matched a packet, as sampled every
    /// second; `null` when it has not since the daemon started (and always
    /// in `overlayd replay`).
    #[serde(default)]
    pub last_hit_secs: Option<u64>,
}

/// Lookups: flow cache hits and misses, and the classifier tables the
/// misses probed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CacheCounters {
    pub hit: u64,
    pub miss: u64,
    pub tuples_probed: u64,
}

impl Counters {
    pub fn new(rs: &RuleSet, c: &Snapshot) -> Counters {
        Counters {
            generation: rs.generation,
            rx: c.rx,
            tx: c.tx,
            replicas: c.replicas,
            generated: c.generated,
            dropped: c.dropped(),
            conserved: c.conserved(),
            drops: c.drops.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
            ports: rs
                .ports
                .iter()
                .zip(&c.ports)
                .map(|(p, (rx, tx))| PortCounters {
                    name: p.name.clone(),
                    rx: (*rx).into(),
                    tx: (*tx).into(),
                })
                .collect(),
            tunnels: rs
                .tunnels
                .iter()
                .enumerate()
                .zip(&c.tunnels)
                .map(|((i, t), (e, d))| TunnelCounters {
                    name: t.name.clone(),
                    encap: (*e).into(),
                    decap: (*d).into(),
                    drops: tunnel_drops(c, i),
                })
                .collect(),
            rules: rs
                .rules
                .iter()
                .zip(&c.rules)
                .map(|(r, f)| RuleCounters {
                    id: r.id,
                    priority: r.priority,
                    packets: f.packets,
                    bytes: f.bytes,
                    last_hit_secs: None,
                })
                .collect(),
            cache: CacheCounters {
                hit: c.cache_hit,
                miss: c.cache_miss,
                tuples_probed: c.tuples_probed,
            },
        }
    }
}

/// Tunnel `i`'s drops in `c`, by reason name.
pub fn tunnel_drops(c: &Snapshot, i: usize) -> BTreeMap<String, u64> {
    c.tunnel_drops.get(i).into_iter().flatten().map(|(n, v)| (n.to_string(), *v)).collect()
}

/// One tunnel's traffic, drops and liveness: in `status` (`tunnels`),
/// `GET /v1/tunnels/status` and `overlayctl tunnel list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TunnelStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: TunnelType,
    /// VXLAN: the VNI; GRE: the key (NVGRE: from the VSID and flow id).
    pub vni_or_key: Option<u32>,
    pub uplink: String,
    pub local: IpAddr,
    pub remote: IpAddr,
    /// Packets and bytes encapsulated into the tunnel (sent).
    pub encap: Traffic,
    /// Packets and bytes decapsulated from it (received).
    pub decap: Traffic,
    /// Non-zero drops counted under the tunnel, by reason.
    pub drops: BTreeMap<String, u64>,
    /// Seconds since a packet last came out of the tunnel; `null` when none
    /// has since the daemon started. Sampled every second.
    pub last_rx_secs: Option<u64>,
    /// Seconds since a packet was last sent into it; `null` likewise.
    pub last_tx_secs: Option<u64>,
    /// Where the outer destination MAC comes from, and its state.
    pub next_hop: NextHopStatus,
}

/// A tunnel's next hop: configured, learned from the kernel (with the
/// neighbour state), or unknown and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum NextHopStatus {
    /// `next_hop_mac` in the configuration.
    Static {
        mac: String,
    },
    /// The kernel's neighbour entry, as the neighbour watcher last read it.
    Neighbour(NeighState),
    Unknown {
        why: String,
    },
}

impl NextHopStatus {
    /// True when the tunnel has a MAC to send to.
    pub fn resolved(&self) -> bool {
        match self {
            NextHopStatus::Static { .. } => true,
            NextHopStatus::Neighbour(n) => n.mac.is_some(),
            NextHopStatus::Unknown { .. } => false,
        }
    }
}

/// `overlayd check --json`: what a configuration compiles to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Summary {
    pub generation: u64,
    pub schema_version: u32,
    pub ports: Vec<PortSummary>,
    pub tunnels: Vec<TunnelSummary>,
    /// The number of rules.
    pub rules: usize,
    /// The classifier's tables, best first.
    pub tables: Vec<TableSummary>,
    pub fdb_entries: usize,
    pub flood_lists: usize,
    /// Rules that can never match, are shadowed, or repeat another's match.
    #[serde(default)]
    pub warnings: Vec<engine::lint::Warning>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PortSummary {
    pub name: String,
    pub kind: PortKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TunnelSummary {
    pub name: String,
    /// The compiled tunnel in one line (as `overlayd check` prints it).
    pub summary: String,
    pub static_next_hop: bool,
    pub inner_ip_mtu: u16,
    #[serde(rename = "type")]
    pub kind: TunnelType,
    /// VXLAN VNI; GRE key (gretap, gre); NVGRE: the key made of VSID and flow id.
    pub vni_or_key: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<u8>,
    pub local: IpAddr,
    pub remote: IpAddr,
    pub uplink: String,
    /// VXLAN: the UDP destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_port: Option<u16>,
    pub underlay_mtu: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TableSummary {
    /// The fields the table's entries match on.
    pub fields: Vec<String>,
    pub entries: usize,
}

impl Summary {
    pub fn new(rs: &RuleSet) -> Summary {
        Summary {
            generation: rs.generation,
            schema_version: rs.config.schema_version,
            ports: rs
                .ports
                .iter()
                .map(|p| PortSummary { name: p.name.clone(), kind: p.kind })
                .collect(),
            tunnels: rs
                .tunnels
                .iter()
                .map(|t| {
                    let c = rs.config.tunnels.iter().find(|c| c.name == t.name);
                    TunnelSummary {
                        name: t.name.clone(),
                        summary: tunnel_line(t, rs),
                        static_next_hop: t.static_next_hop,
                        inner_ip_mtu: t.inner_ip_mtu,
                        kind: c.map_or(TunnelType::Vxlan, |c| c.kind),
                        vni_or_key: tunnel_number(t),
                        vsid: c.and_then(|c| c.vsid),
                        flow_id: c.and_then(|c| c.flow_id),
                        local: t.local,
                        remote: t.remote,
                        uplink: rs.ports[t.uplink as usize].name.clone(),
                        udp_port: c
                            .filter(|c| matches!(c.kind, TunnelType::Vxlan | TunnelType::Geneve))
                            .map(|c| c.udp_port()),
                        underlay_mtu: t.params.options.underlay_mtu,
                    }
                })
                .collect(),
            rules: rs.rules.len(),
            tables: rs
                .classifier
                .tuple_summary()
                .iter()
                .map(|(m, n)| TableSummary { fields: mask_fields(m), entries: *n })
                .collect(),
            fdb_entries: rs.fdb.len(),
            flood_lists: rs.flood.len(),
            warnings: engine::lint::lint(&rs.config),
        }
    }
}

// --- why: the path from one address to another, or what blocks it ---

/// `POST /v1/why` (and `overlayd why --config`): from where to where.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WhyRequest {
    /// The sender: a MAC address, an IP address, or both (`MAC,IP`).
    pub from: String,
    /// The receiver, the same way.
    pub to: String,
    /// The VNI both should share (checked against the path's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// The port the sender is behind: a workload port, or an uplink for a
    /// sender behind a tunnel. Found from the rules when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// The VLAN the sender's frames carry (untagged when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// The packet to try: `icmp` (an echo request, the default), `udp` or `tcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<WhyProto>,
    /// Destination port for `udp` and `tcp` (default 53 and 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WhyProto {
    Icmp,
    Udp,
    Tcp,
}

/// What an answer of `why` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhyBasis {
    /// A running daemon with its datapath: live next hops, MTUs, counters.
    Live,
    /// A daemon run with `--control-only`: the rules and counters, no I/O.
    ControlOnly,
    /// `overlayd why --config`: the configuration alone.
    Offline,
}

/// The answer of `why`: the checks made in order, then the path, or the
/// first check that blocks it and what to change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WhyReport {
    pub generation: u64,
    pub basis: WhyBasis,
    pub from: String,
    pub to: String,
    /// The packet traced, as a description `overlayctl trace --packet` takes.
    pub packet: String,
    /// The port it was traced from (`null` when none could be chosen).
    pub port: Option<String>,
    pub checks: Vec<Finding>,
    /// The first blocker, `null` when the path is clear.
    pub blocker: Option<Blocker>,
    /// The path, when nothing blocks it.
    pub path: Option<WhyPath>,
    /// Where such packets are handled: `software (AF_XDP)` and the like.
    pub tier: String,
    /// The packet's full trace (`null` when no port could be chosen).
    pub trace: Option<TraceReport>,
}

/// One check and how it came out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Finding {
    pub verdict: Outcome,
    pub check: Check,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Blocked,
    /// Not a blocker, but worth knowing (an assumption, a flood).
    Note,
    /// Does not apply to this path, or cannot be told from what is known.
    Skipped,
}

/// What one check looked at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum Check {
    /// The sender's port and VLAN.
    Port {
        port: Option<String>,
        kind: Option<PortKind>,
        /// How the port was chosen.
        chosen: String,
        vlan: Option<u16>,
        /// Live: whether the running datapath has a socket on it.
        attached: Option<bool>,
        /// Live: its interface's MTU.
        mtu: Option<u32>,
    },
    /// The FDB entry of the receiver's MAC and the flood list of the VNI.
    Fdb {
        vni: u32,
        mac: Option<String>,
        /// The tunnel the FDB sends the MAC to.
        entry: Option<String>,
        /// `null` when the VNI has no flood list.
        flood: Option<FloodTargets>,
    },
    /// The rule that matched, and what it does.
    Rule {
        rule: Option<u32>,
        priority: Option<u16>,
        actions: Vec<String>,
        /// Ids of the rules that match on the sender's port.
        rules_on_port: Vec<u32>,
    },
    /// A tunnel the packet goes into or came out of.
    Tunnel {
        tunnel: String,
        /// VXLAN VNI or GRE key, in words.
        id: String,
        local: IpAddr,
        remote: IpAddr,
        uplink: String,
        /// Live: whether the uplink has a socket on the running datapath.
        uplink_attached: Option<bool>,
    },
    /// The next hop a tunnel sends to.
    Neighbour {
        tunnel: String,
        remote: IpAddr,
        next_hop: NextHopStatus,
        /// True when not known here and assumed resolved (offline).
        assumed: bool,
    },
    /// The tunnel's inner MTU against the sender's, and the underlay's.
    Mtu {
        tunnel: String,
        /// Largest inner IP packet the tunnel carries, VLAN tags counted.
        inner_mtu: u16,
        workload_mtu: u32,
        /// True when the sender's MTU is not known here and 1500 is assumed.
        workload_mtu_assumed: bool,
        /// What the tunnel's `mtu` says of the underlay.
        underlay_mtu: u16,
        /// Live: the uplink interface's own MTU.
        uplink_mtu: Option<u32>,
    },
    /// Where the packet is handled.
    Tier {
        tier: String,
        /// Where the matched rule runs, with offload active.
        placement: Option<Placement>,
        /// Where this flow's packets after the first run in software: the
        /// XDP tier, or AF_XDP and why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flow: Option<TierPlace>,
    },
    /// Counters of this path that moved lately.
    Counters {
        /// The window, in seconds (`null`: no recent sample to compare with).
        window_secs: Option<u64>,
        moved: BTreeMap<String, u64>,
    },
    /// A step the path does not take, or that cannot be told, and why.
    NotChecked { step: String, why: String },
}

/// A flood list's targets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FloodTargets {
    pub tunnels: Vec<String>,
    pub ports: Vec<String>,
}

/// The first thing that keeps the packet from its destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "blocker", rename_all = "snake_case")]
pub enum Blocker {
    /// The datapath failed to start after a change of ports.
    DatapathDown,
    /// The port has no socket on the running datapath.
    PortNotAttached {
        port: String,
    },
    NoWorkloadPort,
    /// Several ports could be the sender's.
    AmbiguousPort {
        candidates: Vec<String>,
    },
    /// No tunnel arrives on the uplink given as the sender's port.
    NoTunnelOnUplink {
        port: String,
        vni: Option<u32>,
    },
    /// Unicast to a MAC the FDB does not know, in a VNI without flood list.
    NoFdbEntry {
        vni: u32,
        mac: String,
        tunnels: Vec<String>,
    },
    /// Broadcast, multicast or unknown unicast in a VNI without flood list.
    NoFloodList {
        vni: u32,
    },
    /// The path uses another VNI than the one asked about.
    VniMismatch {
        asked: u32,
        used: u32,
        by: String,
    },
    NoMatchingRule {
        port: String,
        /// The packet, in words.
        packet: String,
        /// A rule that would match, for the fix.
        suggestion: String,
    },
    RuleDrops {
        rule: u32,
        priority: u16,
    },
    /// The rule sends the packet back out of the port it came from.
    SelfLoop {
        rule: u32,
        port: String,
    },
    /// Any other drop, as the trace names it.
    Dropped {
        stage: String,
        reason: String,
        description: String,
    },
    /// The tunnel's next hop has no MAC address.
    NeighbourUnresolved {
        tunnel: String,
        remote: IpAddr,
        /// The neighbour asked about: the gateway, or the remote itself.
        hop: IpAddr,
        interface: String,
        state: String,
    },
    MtuTooSmall {
        tunnel: String,
        inner_mtu: u16,
        workload_mtu: u32,
        port: String,
        assumed: bool,
    },
    /// The uplink's interface MTU is below what the tunnel assumes.
    UnderlayMtuTooSmall {
        tunnel: String,
        underlay_mtu: u16,
        uplink: String,
        interface_mtu: u32,
    },
    /// The path looks clear, but a tunnel on it dropped packets lately.
    RecentDrops {
        tunnel: String,
        drops: BTreeMap<String, u64>,
        secs: u64,
    },
}

/// The path of a packet nothing blocks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WhyPath {
    pub port: String,
    pub vlan: Option<u16>,
    pub rule: u32,
    pub priority: u16,
    pub actions: Vec<String>,
    pub hops: Vec<Hop>,
}

/// Where a packet leaves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum Hop {
    Tunnel { tunnel: String, remote: IpAddr, uplink: String, next_hop: Option<String> },
    Port { port: String },
}

// --- end of why ---

/// The VNI or GRE key a compiled tunnel carries.
pub fn tunnel_number(t: &TunnelRt) -> Option<u32> {
    match t.id {
        encap::TunnelId::Vxlan { vni } => Some(vni),
        encap::TunnelId::Gre { key } => key,
        encap::TunnelId::Geneve { vni } => Some(vni),
    }
}

/// A tunnel's kind by name, with its VNI or key: `vxlan vni 42`,
/// `gretap key 7`, `gre (IP) no key`, `nvgre vsid 100 flow 0`.
pub fn tunnel_kind(t: &engine::model::Tunnel) -> String {
    let key = |k: Option<u32>| k.map_or_else(|| "no key".into(), |k| format!("key {k}"));
    match t.kind {
        TunnelType::Vxlan => {
            format!("vxlan vni {}", t.vni.map_or_else(|| "?".into(), |v| v.to_string()))
        }
        TunnelType::Gretap => format!("gretap {}", key(t.key)),
        TunnelType::Gre => format!("gre (IP) {}", key(t.key)),
        TunnelType::Nvgre => format!(
            "nvgre vsid {} flow {}",
            t.vsid.map_or_else(|| "?".into(), |v| v.to_string()),
            t.flow_id.unwrap_or(0)
        ),
        TunnelType::Geneve => {
            let opts = t.options.iter().map(|o| format!(" option {o}")).collect::<String>();
            format!(
                "geneve vni {} port {}{opts}",
                t.vni.map_or_else(|| "?".into(), |v| v.to_string()),
                t.udp_port()
            )
        }
    }
}

/// One compiled tunnel in one line: its kind by name, its VNI or key, its
/// endpoints and next hop.
pub fn tunnel_line(t: &TunnelRt, rs: &RuleSet) -> String {
    let hop = if t.static_next_hop {
        format!("{} (static)", engine::model::Mac(t.params.dst_mac))
    } else {
        "from the neighbour table".into()
    };
    let kind = rs.config.tunnels.iter().find(|c| c.name == t.name);
    format!(
        "{} {} -> {} via {}, next hop {hop}, underlay mtu {} (inner IP {})",
        kind.map_or_else(|| "?".into(), tunnel_kind),
        t.local,
        t.remote,
        rs.ports[t.uplink as usize].name,
        t.params.options.underlay_mtu,
        t.inner_ip_mtu
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Reads `doc` as a `T` and checks it writes back unchanged.
    fn same<T: serde::de::DeserializeOwned + Serialize>(doc: serde_json::Value) -> T {
        let t: T = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(serde_json::to_value(&t).unwrap(), doc);
        t
    }

    #[test]
    fn placements_are_tagged_by_where_they_run() {
        let hw: Placement =
            same(json!({ "runs_in": "hardware", "device": "rep0", "pref": 65525, "handle": 2 }));
        assert_eq!(hw, Placement::Hardware { device: "rep0".into(), pref: 65525, handle: 2 });
        let sw: Placement =
            same(json!({ "runs_in": "software", "code": "device", "reason": "why" }));
        assert_eq!(sw, Placement::software("device", "why"));
        let rule: PlacedRule = same(
            json!({ "id": 7, "priority": 3, "runs_in": "software", "code": "disabled", "reason": "off" }),
        );
        assert_eq!((rule.id, rule.priority), (7, 3));
        let view: RuleView = same(
            json!({ "id": 7, "priority": 3, "match": {}, "actions": ["drop"], "placement": null }),
        );
        assert_eq!(view.rule.id, 7);
    }

    #[test]
    fn offload_and_vf_documents() {
        let o: OffloadView = same(json!({
            "active": true, "enabled": true, "generation": 4,
            "hardware_rules": 1, "software_rules": 0,
            "ports": { "rep0": { "switch_id": "aabb" }, "veth1": { "error": "not a switchdev port" } },
            "devices": { "rep0": { "filters": 1, "error": null } },
            "vf_error": null,
            "rules": [{ "id": 1, "priority": 0, "runs_in": "hardware", "device": "rep0", "pref": 65535, "handle": 2 }],
        }));
        assert_eq!(o.status.ports["rep0"], PortProbe::Switchdev { switch_id: "aabb".into() });
        assert!(matches!(&o.status.ports["veth1"], PortProbe::NotSwitchdev { .. }));
        let inactive: OffloadStatus = same(json!({
            "active": false, "why": "control only", "enabled": false, "generation": null,
            "hardware_rules": 0, "software_rules": 2, "ports": {}, "devices": {}, "vf_error": null,
        }));
        assert_eq!(inactive.why.as_deref(), Some("control only"));

        let v: VfView = same(json!({
            "pf": "eth1", "sriov": { "num_vfs": 2, "total_vfs": 8 }, "num_vf": 2,
            "vfs": [{ "vf": 0, "mac": "02:00:00:00:00:aa", "vlan": null, "qos": null,
                      "spoof_check": true, "trust": false, "link_state": "auto",
                      "min_tx_rate": 0, "max_tx_rate": 0 }],
            "switch_id": "aabb",
            "representors": [{ "interface": "eth1_0", "port_name": "pf0vf0",
                               "role": { "kind": "vf_representor", "pf": 0, "vf": 0 } }],
        }));
        assert_eq!(v.sriov, Sriov::Counts { num_vfs: 2, total_vfs: 8 });
        assert!(matches!(&v.representors, Representors::Found(r) if r.len() == 1));
        let v: VfView = same(json!({
            "pf": "veth0", "sriov": { "error": "veth0: sriov_numvfs: not an SR-IOV physical function" },
            "num_vf": 0, "vfs": [], "switch_id": null,
            "representors": { "error": "veth0: no phys_switch_id: not a switchdev port" },
        }));
        assert!(matches!(v.sriov, Sriov::Unavailable { .. }));
        assert!(matches!(v.representors, Representors::Unavailable { .. }));
    }
}

/// `POST /v1/capture`: which packets to record, and until when. Every
/// filter given must hold; none given records everything. The answer is a
/// pcapng stream (docs/api.md).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    /// Record only packets received or sent on these ports (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// Packets as received (`in`), as sent (`out`), or both (the default).
    #[serde(default)]
    pub direction: CaptureDirection,
    /// Packets decapsulated from, or headed into, this tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<String>,
    /// Packets that matched the rule with this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Packets dropped (wholly, or one of their copies) with this reason
    /// (a name from `GET /v1/counters`' drops, such as `rule_drop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Stop after this many packets are written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Stop after this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Bytes kept of each packet (64 to 65535; all of it by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snaplen: Option<u32>,
}

/// Which side of a port a capture records.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CaptureDirection {
    In,
    Out,
    #[default]
    Both,
}

/// A packet's fate: sent somewhere (at least one copy), or dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Forwarded,
    Dropped,
}

impl Verdict {
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Forwarded => "forwarded",
            Verdict::Dropped => "dropped",
        }
    }
}

/// `POST /v1/trace`: the port a packet arrives on, and the packet as a
/// description or as hex (exactly one of them).
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceRequest {
    pub in_port: String,
    #[serde(default)]
    pub packet: Option<String>,
    #[serde(default)]
    pub hex: Option<String>,
}
