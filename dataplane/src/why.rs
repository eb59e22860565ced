//! `why`: can A reach B, and if not, what stops it and what to change.
//!
//! A pure function of the rule set, what the daemon observes (the I/O's
//! status, the workers' live inputs, where rules run, the counters that
//! moved lately; nothing of it offline) and the question. It builds a
//! representative packet from the two addresses and runs it through the
//! engine's own trace (the workers' code, so no second classifier decides
//! anything here), then adds what one packet cannot show: the FDB and flood
//! lists, the next hop's neighbour state, the MTU of the sender against the
//! tunnel's, where the packet is handled, and drop counters that moved.
//!
//! The checks come in a fixed order (port and VLAN, FDB and flood list,
//! rule, tunnel, neighbour, MTU, tier, counters); the first one that blocks
//! is the answer. Everything is typed (`api_types::WhyReport`); the words
//! are `render::why`'s.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use encap::DropReason;
use engine::compile::{Act, RuleSet};
use engine::model::{Backend, Config, Mac, PortKind, Prefix, TunnelType};
use engine::placement::RulePlacement;
use engine::trace::{describe, describe_act, trace_steps, Stage, Step, TraceContext};

use crate::api_types::{
    Blocker, Check, Finding, FloodTargets, Hop, NextHopStatus, Outcome, Placement, TraceReport,
    WhyBasis, WhyPath, WhyProto, WhyReport, WhyRequest,
};
use crate::history::Recent;
use crate::report::{IoStatus, LiveInputs};

/// Stand-in MACs for an end given by its IP address only (RFC 7042's
/// documentation range): the packet needs some.
const SRC_MAC: &str = "00:00:5e:00:53:01";
const DST_MAC: &str = "00:00:5e:00:53:02";
/// The outer destination MAC of a packet arriving on an uplink without one.
const UPLINK_MAC: &str = "00:00:5e:00:53:10";
/// The next hop assumed where none can be known (offline, control only).
const ASSUMED_HOP: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x53, 0xff];
/// The sender's MTU where it cannot be read.
const ASSUMED_MTU: u32 = 1500;

/// A question `why` cannot ask.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WhyError {
    #[error("{value:?} is not a MAC address, an IP address, or MAC,IP")]
    BadEndpoint { field: &'static str, value: String },
    #[error("from and to are not of the same address family")]
    Family,
    #[error("no port named {0:?}")]
    UnknownPort(String),
    #[error("vlan {0} is out of range (1..=4094)")]
    Vlan(u16),
}

impl WhyError {
    /// The request field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            WhyError::BadEndpoint { field, .. } => field,
            WhyError::Family => "to",
            WhyError::UnknownPort(_) => "port",
            WhyError::Vlan(_) => "vlan",
        }
    }
}

/// What the daemon knows besides the rules.
pub struct Observed {
    pub basis: WhyBasis,
    /// The packet I/O's status (live only).
    pub io: Option<IoStatus>,
    /// What the workers run with (live only).
    pub live: Option<LiveInputs>,
    /// Where each rule runs (offload active only).
    pub placement: Vec<RulePlacement>,
    /// The counters that moved lately (a daemon only).
    pub recent: Option<Recent>,
}

impl Observed {
    /// Nothing but the configuration: `overlayd why --config`.
    pub fn offline() -> Observed {
        Observed {
            basis: WhyBasis::Offline,
            io: None,
            live: None,
            placement: Vec::new(),
            recent: None,
        }
    }
}

/// The question on the command line, for `overlayctl why` and `overlayd why`.
#[derive(Clone, Debug, clap::Args)]
pub struct WhyArgs {
    /// The sender: a MAC address, an IP address, or both as MAC,IP.
    #[arg(long)]
    pub from: String,
    /// The receiver, the same way.
    #[arg(long)]
    pub to: String,
    /// The VNI both should share.
    #[arg(long)]
    pub vni: Option<u32>,
    /// The sender's port (a workload port, or an uplink for a sender behind a tunnel).
    #[arg(long)]
    pub port: Option<String>,
    /// The VLAN the sender's frames carry.
    #[arg(long)]
    pub vlan: Option<u16>,
    /// The packet to try.
    #[arg(long, value_parser = ["icmp", "udp", "tcp"])]
    pub proto: Option<String>,
    /// Its destination port (udp, tcp).
    #[arg(long)]
    pub dport: Option<u16>,
}

impl WhyArgs {
    pub fn request(&self) -> WhyRequest {
        WhyRequest {
            from: self.from.clone(),
            to: self.to.clone(),
            vni: self.vni,
            port: self.port.clone(),
            vlan: self.vlan,
            proto: self.proto.as_deref().map(|p| match p {
                "udp" => WhyProto::Udp,
                "tcp" => WhyProto::Tcp,
                _ => WhyProto::Icmp,
            }),
            dport: self.dport,
        }
    }
}

/// Where packets arriving on `port` are handled: the fast tier for the
/// established flows it takes (the XDP program on an AF_XDP port, the tc
/// program on a tc port, with `xdp_tier = "auto"`), the software path for
/// the rest. One place, read from the configuration and, live, from the
/// port's backend and the tier's status.
pub fn tier(rs: &RuleSet, port: u16, io: Option<&IoStatus>) -> String {
    let Some(p) = rs.config.ports.get(port as usize) else {
        return "software (AF_XDP)".into();
    };
    // `auto` is resolved when the port is attached: live, the status says
    // which backend it got.
    let live = io.and_then(|io| io.ports.iter().find(|s| s.port == p.name)).map(|s| s.backend);
    let (fast, software) = match live.unwrap_or(p.backend) {
        Backend::AfPacket => return "software (AF_PACKET, io_uring)".into(),
        Backend::Tap => return "software (TAP, io_uring)".into(),
        b => {
            let (fast, software) = engine::tier_fit::tier_words(b);
            (fast, format!("software ({software})"))
        }
    };
    if rs.config.xdp_tier == engine::model::TierSpec::Off {
        return format!("{software}: the XDP tier is off (xdp_tier = \"off\")");
    }
    let tier = io.and_then(|io| io.tier.as_ref());
    match tier.and_then(|t| t.ports.iter().find(|tp| tp.port == p.name)) {
        Some(tp) => match tp.entries {
            Some(n) => format!(
                "{fast} for the established flows it takes ({n} entries on {} now; \
                 `overlayctl status` says why others stay), first packets and the rest in \
                 {software}",
                p.name
            ),
            None => format!("{software}: no {fast} on this port"),
        },
        None if io.is_some() => format!("{software}: the {fast} is not running"),
        None => format!(
            "{fast} for the established flows it can take (xdp_tier = \"auto\"), the rest in \
             {software}"
        ),
    }
}

/// One end of the question.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct End {
    mac: Option<Mac>,
    ip: Option<IpAddr>,
}

impl End {
    fn parse(field: &'static str, s: &str) -> Result<End, WhyError> {
        let bad = || WhyError::BadEndpoint { field, value: s.to_string() };
        let mut e = End::default();
        for part in s.split(',').map(str::trim) {
            if let Ok(m) = part.parse::<Mac>() {
                if e.mac.replace(m).is_some() {
                    return Err(bad());
                }
            } else if let Ok(ip) = part.parse::<IpAddr>() {
                if e.ip.replace(ip).is_some() {
                    return Err(bad());
                }
            } else {
                return Err(bad());
            }
        }
        Ok(e)
    }
}

/// Answers `q` about `rs` with what `o` knows.
pub fn why(rs: Arc<RuleSet>, o: &Observed, q: &WhyRequest) -> Result<WhyReport, WhyError> {
    let from = End::parse("from", &q.from)?;
    let to = End::parse("to", &q.to)?;
    if let (Some(a), Some(b)) = (from.ip, to.ip) {
        if a.is_ipv4() != b.is_ipv4() {
            return Err(WhyError::Family);
        }
    }
    if let Some(v) = q.vlan.filter(|v| *v == 0 || *v > 4094) {
        return Err(WhyError::Vlan(v));
    }
    if let Some(p) = q.port.as_ref().filter(|p| rs.port_index(p).is_none()) {
        return Err(WhyError::UnknownPort(p.clone()));
    }
    let mut w = Walk { rs: Arc::clone(&rs), o, q, from, to, checks: Vec::new(), blocker: None };
    Ok(w.run())
}

/// What the trace of the representative packet showed.
#[derive(Default)]
struct Traced {
    /// Index of the matched rule.
    rule: Option<usize>,
    /// The packet in words, as parsed.
    summary: Option<String>,
    /// Tunnels it was sent towards (next-hop lookups), in order, once each.
    tunnels: Vec<u16>,
    hops: Vec<Hop>,
    /// The first drop, and the tunnel it happened at (encapsulation).
    drop: Option<(Stage, DropReason, Option<u16>)>,
    /// The VNI of a forward_l2 action that ran.
    forward_l2: Option<u32>,
}

impl Traced {
    fn read(rs: &RuleSet, steps: &[Step]) -> Traced {
        let mut t = Traced::default();
        let mut at_tunnel = None;
        let mut after_encap = false;
        for s in steps {
            match *s {
                Step::Parsed { key } => t.summary = Some(describe(&key)),
                Step::Matched { rule } => t.rule = Some(rule as usize),
                Step::Action { act: Act::ForwardL2(v) } => t.forward_l2 = Some(v),
                Step::NextHop { tunnel, .. } => {
                    at_tunnel = Some(tunnel);
                    if !t.tunnels.contains(&tunnel) {
                        t.tunnels.push(tunnel);
                    }
                }
                Step::Encapsulated { tunnel, .. } => {
                    let tun = &rs.tunnels[tunnel as usize];
                    t.hops.push(Hop::Tunnel {
                        tunnel: tun.name.clone(),
                        remote: tun.remote,
                        uplink: rs.ports[tun.uplink as usize].name.clone(),
                        next_hop: None,
                    });
                    after_encap = true;
                    continue;
                }
                Step::Output { port, .. } if !after_encap => {
                    t.hops.push(Hop::Port { port: rs.ports[port as usize].name.clone() })
                }
                Step::Dropped { stage, reason } if t.drop.is_none() => {
                    let tunnel = (stage == Stage::Encap).then_some(at_tunnel).flatten();
                    t.drop = Some((stage, reason, tunnel));
                }
                _ => {}
            }
            after_encap = false;
        }
        t
    }

    fn dropped(&self, stages: &[Stage], reasons: &[DropReason]) -> bool {
        self.drop.is_some_and(|(s, r, _)| stages.contains(&s) && reasons.contains(&r))
    }
}

struct Walk<'a> {
    rs: Arc<RuleSet>,
    o: &'a Observed,
    q: &'a WhyRequest,
    from: End,
    to: End,
    checks: Vec<Finding>,
    blocker: Option<Blocker>,
}

impl Walk<'_> {
    /// Records a check; the first blocker found is the answer.
    fn push(&mut self, verdict: Outcome, check: Check, blocker: Option<Blocker>) {
        let verdict = if blocker.is_some() { Outcome::Blocked } else { verdict };
        if self.blocker.is_none() {
            self.blocker = blocker;
        }
        self.checks.push(Finding { verdict, check });
    }

    fn live(&self) -> bool {
        self.o.basis == WhyBasis::Live
    }

    /// The port's status on the running datapath (live only).
    fn port_status(&self, name: &str) -> Option<&crate::report::PortStatus> {
        self.o.io.as_ref()?.ports.iter().find(|p| p.port == name)
    }

    fn run(&mut self) -> WhyReport {
        let rs = Arc::clone(&self.rs);
        let chosen = self.choose_port();
        let (port, how) = match chosen {
            Ok(p) => p,
            Err(b) => {
                let check = Check::Port {
                    port: None,
                    kind: None,
                    chosen: "not found".into(),
                    vlan: self.q.vlan,
                    attached: None,
                    mtu: None,
                };
                self.push(Outcome::Blocked, check, Some(b));
                return self.report(None, String::new(), None, None);
            }
        };
        let pname = rs.ports[port as usize].name.clone();
        let inbound = rs.ports[port as usize].kind == PortKind::Uplink;
        self.check_port(port, how);

        // A sender behind a tunnel: its packet arrives through one.
        let from_tunnel = if inbound {
            match self.tunnel_into(port) {
                Some(t) => Some(t),
                None => {
                    let b = Blocker::NoTunnelOnUplink { port: pname.clone(), vni: self.q.vni };
                    let with = self.q.vni.map(|v| format!(" with VNI/key {v}")).unwrap_or_default();
                    let why = format!("no tunnel{with} arrives on {pname}");
                    let check = Check::NotChecked { step: "tunnel".into(), why };
                    self.push(Outcome::Blocked, check, Some(b));
                    return self.report(Some(pname), String::new(), None, None);
                }
            }
        } else {
            None
        };
        let packet = self.packet(from_tunnel);
        let frame = engine::packet_spec::build(&packet).expect("why builds valid descriptions");
        let (steps, trace) = trace_steps(Arc::clone(&rs), &self.context(), port, &frame, 0);
        let t = Traced::read(&rs, &steps);

        self.check_fdb(&t);
        self.check_rule(port, from_tunnel, &t);
        if let Some(ft) = from_tunnel {
            self.check_tunnel(ft, &t);
        }
        for &tn in &t.tunnels {
            self.check_tunnel(tn, &t);
        }
        if t.tunnels.is_empty() && from_tunnel.is_none() {
            let why = match t.rule {
                Some(_) => "the path goes into no tunnel".into(),
                None => "no rule matched, so no tunnel is chosen".into(),
            };
            self.push(Outcome::Skipped, Check::NotChecked { step: "tunnel".into(), why }, None);
        }
        for &tn in &t.tunnels {
            self.check_neighbour(tn, &t);
        }
        self.check_mtu(port, inbound, &t);
        self.check_tier(port, from_tunnel, &frame, &t);
        self.check_counters(port, from_tunnel, &t);

        let path = match (&self.blocker, t.rule) {
            (None, Some(r)) => {
                let rule = &rs.rules[r];
                Some(WhyPath {
                    port: pname.clone(),
                    vlan: self.q.vlan,
                    rule: rule.id,
                    priority: rule.priority,
                    actions: rule.actions.iter().map(|a| describe_act(&rs, a)).collect(),
                    hops: self.with_next_hops(t.hops.clone()),
                })
            }
            _ => None,
        };
        self.report(Some(pname), packet, Some(trace), path)
    }

    fn report(
        &mut self,
        port: Option<String>,
        packet: String,
        trace: Option<TraceReport>,
        path: Option<WhyPath>,
    ) -> WhyReport {
        let tier = port
            .as_deref()
            .and_then(|p| self.rs.port_index(p))
            .map_or_else(|| "unknown (no port)".into(), |i| tier(&self.rs, i, self.o.io.as_ref()));
        WhyReport {
            generation: self.rs.generation,
            basis: self.o.basis,
            from: self.q.from.clone(),
            to: self.q.to.clone(),
            packet,
            port,
            checks: std::mem::take(&mut self.checks),
            blocker: self.blocker.take(),
            path,
            tier,
            trace,
        }
    }

    /// The sender's port: given, the only workload port, or the one port a
    /// rule matches the sender on.
    fn choose_port(&self) -> Result<(u16, String), Blocker> {
        let rs = &self.rs;
        if let Some(p) = &self.q.port {
            return Ok((rs.port_index(p).expect("checked by why()"), "given".into()));
        }
        let workloads: Vec<u16> = (0..rs.ports.len() as u16)
            .filter(|i| rs.ports[*i as usize].kind == PortKind::Workload)
            .collect();
        match workloads.as_slice() {
            [] => return Err(Blocker::NoWorkloadPort),
            [only] => return Ok((*only, "the only workload port".into())),
            _ => {}
        }
        let mut hits: BTreeMap<u16, u32> = BTreeMap::new();
        for r in &rs.config.rules {
            let m = &r.matches;
            let Some(p) = m.in_port.as_deref().and_then(|p| rs.port_index(p)) else { continue };
            let names_sender = m.eth_src.is_some() || m.ip_src.is_some();
            let mac_ok = m.eth_src.is_none_or(|s| self.from.mac == Some(s));
            let ip_ok = m.ip_src.is_none_or(|s| self.from.ip.is_some_and(|ip| contains(&s, ip)));
            if workloads.contains(&p) && names_sender && mac_ok && ip_ok {
                hits.entry(p).or_insert(r.id);
            }
        }
        if hits.len() == 1 {
            let (p, id) = hits.into_iter().next().unwrap();
            return Ok((p, format!("rule {id} matches the sender on it")));
        }
        let candidates = if hits.is_empty() { workloads } else { hits.into_keys().collect() };
        Err(Blocker::AmbiguousPort {
            candidates: candidates.iter().map(|i| rs.ports[*i as usize].name.clone()).collect(),
        })
    }

    fn check_port(&mut self, port: u16, chosen: String) {
        let p = &self.rs.ports[port as usize];
        let status = self.port_status(&p.name);
        let attached = self.live().then_some(status.is_some());
        let mtu = status.and_then(|s| s.mtu);
        let running = self.o.io.as_ref().map(|io| io.running);
        let blocker = match (running, attached) {
            (Some(false), _) => Some(Blocker::DatapathDown),
            (_, Some(false)) => Some(Blocker::PortNotAttached { port: p.name.clone() }),
            _ => None,
        };
        let check = Check::Port {
            port: Some(p.name.clone()),
            kind: Some(p.kind),
            chosen,
            vlan: self.q.vlan,
            attached,
            mtu,
        };
        self.push(Outcome::Ok, check, blocker);
    }

    /// The tunnel a sender behind uplink `port` sends through: the first
    /// on that uplink with the VNI or key asked about (any, if none was).
    fn tunnel_into(&self, port: u16) -> Option<u16> {
        let rs = &self.rs;
        (0..rs.tunnels.len() as u16).find(|&i| {
            let t = &rs.tunnels[i as usize];
            t.uplink == port
                && self
                    .q
                    .vni
                    .is_none_or(|v| Config::tunnel_id(&rs.config.tunnels[i as usize]) == Some(v))
        })
    }

    /// The representative packet, as a description.
    fn packet(&self, from_tunnel: Option<u16>) -> String {
        let (from, to) = (self.from, self.to);
        let ips = match (from.ip, to.ip) {
            (None, None) => None,
            (a, b) => {
                let v6 = a.or(b).is_some_and(|x| x.is_ipv6());
                let none = if v6 { "::" } else { "0.0.0.0" };
                let s = a.map_or_else(|| none.to_string(), |x| x.to_string());
                let d = b.map_or_else(|| none.to_string(), |x| x.to_string());
                Some((v6, s, d))
            }
        };
        let l4 = |v6: bool| match self.q.proto.unwrap_or(WhyProto::Icmp) {
            WhyProto::Icmp if v6 => "icmp(type=128)".to_string(),
            WhyProto::Icmp => "icmp(type=8)".to_string(),
            WhyProto::Udp => format!("udp(sport=40000,dport={})", self.q.dport.unwrap_or(53)),
            WhyProto::Tcp => format!("tcp(sport=40000,dport={})", self.q.dport.unwrap_or(80)),
        };
        let ip = |(v6, s, d): &(bool, String, String)| {
            let nh = match (v6, self.q.proto.unwrap_or(WhyProto::Icmp)) {
                (true, WhyProto::Icmp) => ",nh=58",
                _ => "",
            };
            format!("{}(src={s},dst={d}{nh})/{}", if *v6 { "ipv6" } else { "ipv4" }, l4(*v6))
        };
        let mac =
            |m: Option<Mac>, stand_in: &str| m.map_or_else(|| stand_in.into(), |m| m.to_string());
        let mut eth = format!("eth(src={},dst={})", mac(from.mac, SRC_MAC), mac(to.mac, DST_MAC));
        if let Some(v) = self.q.vlan {
            eth += &format!("/vlan(vid={v})");
        }
        let inner = match &ips {
            Some(x) => format!("{eth}/{}", ip(x)),
            None => format!("{eth}/payload(len=46)"),
        };
        let Some(tn) = from_tunnel else { return inner };
        let rs = &self.rs;
        let t = &rs.tunnels[tn as usize];
        let cfg = &rs.config.tunnels[tn as usize];
        let uplink = &rs.ports[t.uplink as usize];
        let up_mac = uplink
            .mac
            .or_else(|| {
                self.o.live.as_ref().and_then(|l| l.interface_macs.get(&uplink.name).copied())
            })
            .map_or_else(|| UPLINK_MAC.to_string(), |m| Mac(m).to_string());
        let outer_ip = if t.remote.is_ipv4() { "ipv4" } else { "ipv6" };
        let outer =
            format!("eth(src={SRC_MAC},dst={up_mac})/{outer_ip}(src={},dst={})", t.remote, t.local);
        let key = Config::tunnel_id(cfg).map(|k| format!("(key={k})")).unwrap_or_default();
        match cfg.kind {
            TunnelType::Vxlan => format!(
                "{outer}/udp(sport=49152,dport={})/vxlan(vni={})/{inner}",
                cfg.udp_port(),
                cfg.vni.unwrap_or(0)
            ),
            TunnelType::Geneve => format!(
                "{outer}/udp(sport=49152,dport={})/geneve(vni={})/{inner}",
                cfg.udp_port(),
                cfg.vni.unwrap_or(0)
            ),
            TunnelType::Gretap | TunnelType::Nvgre => format!("{outer}/gre{key}/{inner}"),
            // IP over GRE: no Ethernet inside.
            TunnelType::Gre => {
                let x = ips.unwrap_or((false, "0.0.0.0".into(), "0.0.0.0".into()));
                format!("{outer}/gre{key}/{}", ip(&x))
            }
        }
    }

    /// The trace's context: the workers' live state, or (offline and
    /// control only) the rules with every learned next hop assumed resolved,
    /// so the walk goes on past what cannot be known here.
    fn context(&self) -> TraceContext {
        let placement = self.o.placement.clone();
        match (&self.o.live, self.live()) {
            (Some(l), true) => {
                let mut cx = l.clone().trace_context(placement);
                cx.backends = self.o.io.as_ref().map(|io| io.backends()).unwrap_or_default();
                cx
            }
            _ => {
                let hops = self
                    .rs
                    .tunnels
                    .iter()
                    .filter(|t| !t.static_next_hop)
                    .map(|t| (t.remote, ASSUMED_HOP))
                    .collect();
                TraceContext { next_hops: Arc::new(hops), placement, ..TraceContext::default() }
            }
        }
    }

    fn check_fdb(&mut self, t: &Traced) {
        let rs = Arc::clone(&self.rs);
        // The VNI of the path: forward_l2's, else the one asked about.
        let vni = match (t.forward_l2, self.q.vni) {
            (Some(used), Some(asked)) if used != asked => {
                let by = format!("forward_l2 of rule {}", rule_id(&rs, t));
                let check = Check::NotChecked {
                    step: "fdb".into(),
                    why: format!("the path forwards in VNI {used}, not {asked}"),
                };
                return self.push(
                    Outcome::Blocked,
                    check,
                    Some(Blocker::VniMismatch { asked, used, by }),
                );
            }
            (Some(v), _) | (None, Some(v)) => v,
            (None, None) => {
                let why = match t.rule {
                    Some(_) => "the matched rule does not forward by MAC (no forward_l2)",
                    None => "no rule matched, and no VNI was given",
                };
                let check = Check::NotChecked { step: "fdb".into(), why: why.into() };
                return self.push(Outcome::Skipped, check, None);
            }
        };
        let mac = self.to.mac;
        let entry =
            mac.and_then(|m| rs.fdb.get(&(vni, m.0))).map(|i| rs.tunnels[*i as usize].name.clone());
        let flood = rs.flood.get(&vni).map(|f| FloodTargets {
            tunnels: f.tunnels.iter().map(|i| rs.tunnels[*i as usize].name.clone()).collect(),
            ports: f.ports.iter().map(|i| rs.ports[*i as usize].name.clone()).collect(),
        });
        let unicast = mac.is_some_and(|m| m.0[0] & 1 == 0);
        let blocker = if t.dropped(&[Stage::Forward], &[DropReason::FloodListEmpty]) {
            Some(match mac {
                Some(m) if unicast && entry.is_none() => Blocker::NoFdbEntry {
                    vni,
                    mac: m.to_string(),
                    tunnels: tunnels_of_vni(&rs, vni),
                },
                _ => Blocker::NoFloodList { vni },
            })
        } else {
            None
        };
        let verdict = match (&entry, &flood) {
            (Some(_), _) => Outcome::Ok,
            // Unknown unicast or broadcast: flooded, if there is a list.
            (None, Some(_)) => Outcome::Note,
            (None, None) => Outcome::Skipped,
        };
        let check = Check::Fdb { vni, mac: mac.map(|m| m.to_string()), entry, flood };
        self.push(verdict, check, blocker);
    }

    fn check_rule(&mut self, port: u16, from_tunnel: Option<u16>, t: &Traced) {
        let rs = Arc::clone(&self.rs);
        let pname = &rs.ports[port as usize].name;
        let tname = from_tunnel.map(|i| rs.tunnels[i as usize].name.clone());
        let rules_on_port: Vec<u32> = rs
            .config
            .rules
            .iter()
            .filter(|r| {
                r.matches.in_port.as_deref() == Some(pname.as_str())
                    || (tname.is_some() && r.matches.tunnel == tname)
            })
            .map(|r| r.id)
            .collect();
        let Some(ri) = t.rule else {
            let check =
                Check::Rule { rule: None, priority: None, actions: Vec::new(), rules_on_port };
            let blocker = Blocker::NoMatchingRule {
                port: pname.clone(),
                packet: t.summary.clone().unwrap_or_default(),
                suggestion: self.suggest_rule(port, tname.as_deref()),
            };
            return self.push(Outcome::Blocked, check, Some(blocker));
        };
        let rule = &rs.rules[ri];
        let blocker = match t.drop {
            Some((Stage::Action, DropReason::RuleDrop, _)) if rule.actions.contains(&Act::Drop) => {
                Some(Blocker::RuleDrops { rule: rule.id, priority: rule.priority })
            }
            Some((Stage::Forward, DropReason::SelfLoop, _)) => {
                Some(Blocker::SelfLoop { rule: rule.id, port: pname.clone() })
            }
            Some((stage @ (Stage::Action | Stage::Replicate | Stage::Parse), reason, _)) => {
                Some(dropped(stage, reason))
            }
            _ => None,
        };
        let check = Check::Rule {
            rule: Some(rule.id),
            priority: Some(rule.priority),
            actions: rule.actions.iter().map(|a| describe_act(&rs, a)).collect(),
            rules_on_port,
        };
        self.push(Outcome::Ok, check, blocker);
    }

    /// A rule that would carry the packet, as `overlayctl rule add` arguments.
    fn suggest_rule(&self, port: u16, from_tunnel: Option<&str>) -> String {
        let rs = &self.rs;
        let id = rs.config.rules.iter().map(|r| r.id).max().map_or(1, |m| m + 1);
        let mut m = match from_tunnel {
            Some(t) => format!("tunnel={t}"),
            None => format!("in_port={}", rs.ports[port as usize].name),
        };
        if let Some(v) = self.q.vlan {
            m += &format!(",vlan={v}");
        }
        match (self.to.ip, self.to.mac) {
            (Some(ip), _) => m += &format!(",ip_dst={ip}"),
            (None, Some(mac)) => m += &format!(",eth_dst={mac}"),
            (None, None) => {}
        }
        let action = match from_tunnel {
            Some(_) => {
                let wl: Vec<&str> = rs
                    .ports
                    .iter()
                    .filter(|p| p.kind == PortKind::Workload)
                    .map(|p| p.name.as_str())
                    .collect();
                format!("output={}", if wl.len() == 1 { wl[0] } else { "<workload port>" })
            }
            None => match rs.tunnels.as_slice() {
                [only] => format!("encap={}", only.name),
                _ => "encap=<tunnel>".into(),
            },
        };
        format!("--id {id} --match {m} --action {action}")
    }

    fn check_tunnel(&mut self, tn: u16, t: &Traced) {
        let rs = Arc::clone(&self.rs);
        let tun = &rs.tunnels[tn as usize];
        let uplink = rs.ports[tun.uplink as usize].name.clone();
        let uplink_attached = self.live().then(|| self.port_status(&uplink).is_some());
        let mut blocker = match uplink_attached {
            Some(false) => Some(Blocker::PortNotAttached { port: uplink.clone() }),
            _ => None,
        };
        // Asked about a VNI, the path must use it.
        let id = Config::tunnel_id(&rs.config.tunnels[tn as usize]);
        if let (Some(asked), Some(used), None) = (self.q.vni, id, t.forward_l2) {
            if asked != used {
                blocker = blocker.or(Some(Blocker::VniMismatch {
                    asked,
                    used,
                    by: format!("tunnel {}", tun.name),
                }));
            }
        }
        if let Some((Stage::Encap, reason, Some(at))) = t.drop {
            let own = matches!(reason, DropReason::NoNeighbour | DropReason::MtuExceeded);
            if at == tn && !own {
                blocker = blocker.or(Some(dropped(Stage::Encap, reason)));
            }
        }
        let check = Check::Tunnel {
            tunnel: tun.name.clone(),
            id: tunnel_words(&rs, tn),
            local: tun.local,
            remote: tun.remote,
            uplink,
            uplink_attached,
        };
        self.push(Outcome::Ok, check, blocker);
    }

    fn check_neighbour(&mut self, tn: u16, t: &Traced) {
        let rs = Arc::clone(&self.rs);
        let tun = &rs.tunnels[tn as usize];
        let neighbours = self.o.io.as_ref().map(|io| io.neighbours.as_slice());
        let next_hop =
            crate::tunnels::next_hop(&rs, tn as usize, neighbours.filter(|_| self.live()));
        let assumed = !self.live() && !tun.static_next_hop;
        let unresolved = self.live() && !next_hop.resolved()
            || t.dropped(&[Stage::Encap], &[DropReason::NoNeighbour])
                && t.drop.unwrap().2 == Some(tn);
        let blocker = unresolved.then(|| {
            let uplink = &rs.ports[tun.uplink as usize].name;
            let (hop, interface, state) = match &next_hop {
                NextHopStatus::Neighbour(n) => {
                    (n.via.unwrap_or(tun.remote), n.interface.clone(), n.state.clone())
                }
                NextHopStatus::Unknown { why } => {
                    (tun.remote, interface_of(&rs, uplink), why.clone())
                }
                NextHopStatus::Static { .. } => {
                    (tun.remote, interface_of(&rs, uplink), "static".into())
                }
            };
            Blocker::NeighbourUnresolved {
                tunnel: tun.name.clone(),
                remote: tun.remote,
                hop,
                interface,
                state,
            }
        });
        let verdict = if assumed { Outcome::Note } else { Outcome::Ok };
        let check =
            Check::Neighbour { tunnel: tun.name.clone(), remote: tun.remote, next_hop, assumed };
        self.push(verdict, check, blocker);
    }

    fn check_mtu(&mut self, port: u16, inbound: bool, t: &Traced) {
        let rs = Arc::clone(&self.rs);
        if inbound || t.tunnels.is_empty() {
            let why = if inbound {
                "the sender is behind a tunnel: its side encapsulates, and checks the MTU"
            } else {
                "the path goes into no tunnel"
            };
            let check = Check::NotChecked { step: "mtu".into(), why: why.into() };
            return self.push(Outcome::Skipped, check, None);
        }
        let pname = rs.ports[port as usize].name.clone();
        let (workload_mtu, assumed) =
            match self.port_status(&pname).and_then(|s| s.mtu).filter(|_| self.live()) {
                Some(m) => (m, false),
                None => (ASSUMED_MTU, true),
            };
        // Tags the frame carries once the rule's actions ran: each takes 4
        // bytes of the tunnel's room.
        let acts = t.rule.map(|r| rs.rules[r].actions.as_slice()).unwrap_or_default();
        let tags = self.q.vlan.is_some() as i32
            + acts.iter().filter(|a| matches!(a, Act::PushVlan(_))).count() as i32
            - acts.iter().filter(|a| matches!(a, Act::PopVlan)).count() as i32;
        for &tn in &t.tunnels {
            let tun = &rs.tunnels[tn as usize];
            let inner_mtu = (tun.inner_ip_mtu as i32 - 4 * tags.max(0)).max(0) as u16;
            let underlay_mtu = tun.params.options.underlay_mtu;
            let uplink = rs.ports[tun.uplink as usize].name.clone();
            let uplink_mtu = self.port_status(&uplink).and_then(|s| s.mtu).filter(|_| self.live());
            // An assumed MTU is worth a note, not a verdict.
            let too_small = workload_mtu > inner_mtu as u32 && !assumed
                || t.dropped(&[Stage::Encap], &[DropReason::MtuExceeded]);
            let blocker = if too_small {
                Some(Blocker::MtuTooSmall {
                    tunnel: tun.name.clone(),
                    inner_mtu,
                    workload_mtu,
                    port: pname.clone(),
                    assumed,
                })
            } else {
                uplink_mtu.filter(|m| *m < underlay_mtu as u32).map(|m| {
                    Blocker::UnderlayMtuTooSmall {
                        tunnel: tun.name.clone(),
                        underlay_mtu,
                        uplink: uplink.clone(),
                        interface_mtu: m,
                    }
                })
            };
            let verdict = if assumed && workload_mtu > inner_mtu as u32 {
                Outcome::Note
            } else {
                Outcome::Ok
            };
            let check = Check::Mtu {
                tunnel: tun.name.clone(),
                inner_mtu,
                workload_mtu,
                workload_mtu_assumed: assumed,
                underlay_mtu,
                uplink_mtu,
            };
            self.push(verdict, check, blocker);
        }
    }

    fn check_tier(&mut self, port: u16, from_tunnel: Option<u16>, frame: &[u8], t: &Traced) {
        // The flow's own judgement, as a worker makes it for its first
        // packet; a tunnel's packets are judged by their rule (the flow the
        // tier would see is the inner one).
        let flow = t.rule.map(|r| {
            let cx = self.context();
            let w = engine::tier_fit::worker(Arc::clone(&self.rs), &cx);
            match from_tunnel {
                None => {
                    let (key, _) = engine::flow_key::extract(frame, port, 0, 0);
                    crate::tier_place::flow(&w, &cx, port, &key, r as u32)
                }
                Some(_) => {
                    let id = self.rs.rules[r].id;
                    let mut all = crate::tier_place::rules(&self.rs, &cx);
                    all.remove(&id).expect("every rule has a place")
                }
            }
        });
        let rs = &self.rs;
        let placement = t.rule.and_then(|r| {
            let id = rs.rules[r].id;
            self.o.placement.iter().find(|p| p.rule == id).map(Placement::from)
        });
        let verdict = match placement {
            Some(Placement::Hardware { .. }) => Outcome::Note,
            _ => Outcome::Ok,
        };
        let tier = tier(rs, port, self.o.io.as_ref());
        self.push(verdict, Check::Tier { tier, placement, flow }, None);
    }

    fn check_counters(&mut self, port: u16, from_tunnel: Option<u16>, t: &Traced) {
        let rs = Arc::clone(&self.rs);
        let Some(r) = &self.o.recent else {
            let why = match self.o.basis {
                WhyBasis::Offline => "offline: no counters".to_string(),
                _ => "no sample of this generation's counters yet (a few seconds after a start or a change)".to_string(),
            };
            return self.push(
                Outcome::Skipped,
                Check::NotChecked { step: "counters".into(), why },
                None,
            );
        };
        let m = &r.moved;
        let mut moved = BTreeMap::new();
        let mut add = |k: String, v: u64| {
            if v > 0 {
                moved.insert(k, v);
            }
        };
        if let Some((rx, _)) = m.ports.get(port as usize) {
            add(format!("port {} rx", rs.ports[port as usize].name), rx.packets);
        }
        if let Some(ri) = t.rule {
            add(format!("rule {}", rs.rules[ri].id), m.rules.get(ri).map_or(0, |f| f.packets));
        }
        if let Some((_, reason, _)) = t.drop {
            add(format!("drop {}", reason.name()), m.drop_count(reason));
        }
        let mut tunnel_drops: Option<(String, BTreeMap<String, u64>)> = None;
        for tn in from_tunnel.iter().chain(&t.tunnels).copied() {
            let name = &rs.tunnels[tn as usize].name;
            let (e, d) = m.tunnels.get(tn as usize).copied().unwrap_or_default();
            add(format!("tunnel {name} sent"), e.packets);
            add(format!("tunnel {name} received"), d.packets);
            let drops: BTreeMap<String, u64> =
                crate::api_types::tunnel_drops(m, tn as usize).into_iter().collect();
            for (reason, n) in &drops {
                add(format!("tunnel {name} drop {reason}"), *n);
            }
            if !drops.is_empty() && tunnel_drops.is_none() {
                tunnel_drops = Some((name.clone(), drops));
            }
        }
        let blocker = tunnel_drops.map(|(tunnel, drops)| Blocker::RecentDrops {
            tunnel,
            drops,
            secs: r.secs,
        });
        let check = Check::Counters { window_secs: Some(r.secs), moved };
        self.push(Outcome::Ok, check, blocker);
    }

    /// Fills in each tunnel hop's next-hop MAC, where known.
    fn with_next_hops(&self, hops: Vec<Hop>) -> Vec<Hop> {
        hops.into_iter()
            .map(|h| match h {
                Hop::Tunnel { tunnel, remote, uplink, .. } => {
                    let i = self.rs.tunnel_index(&tunnel).unwrap_or(0) as usize;
                    let neighbours = self.o.io.as_ref().map(|io| io.neighbours.as_slice());
                    let next_hop = match crate::tunnels::next_hop(&self.rs, i, neighbours) {
                        NextHopStatus::Static { mac } => Some(mac),
                        NextHopStatus::Neighbour(n) => n.mac,
                        NextHopStatus::Unknown { .. } => None,
                    };
                    Hop::Tunnel { tunnel, remote, uplink, next_hop }
                }
                h => h,
            })
            .collect()
    }
}

fn rule_id(rs: &RuleSet, t: &Traced) -> u32 {
    t.rule.map_or(0, |r| rs.rules[r].id)
}

fn dropped(stage: Stage, reason: DropReason) -> Blocker {
    Blocker::Dropped {
        stage: stage.name().into(),
        reason: reason.name().into(),
        description: reason.description().into(),
    }
}

/// The tunnels that carry `vni` (VXLAN VNI or GRE key).
fn tunnels_of_vni(rs: &RuleSet, vni: u32) -> Vec<String> {
    rs.config
        .tunnels
        .iter()
        .filter(|t| t.kind != TunnelType::Gre && Config::tunnel_id(t) == Some(vni))
        .map(|t| t.name.clone())
        .collect()
}

/// A tunnel's kind and VNI or key, in words.
fn tunnel_words(rs: &RuleSet, tn: u16) -> String {
    let t = &rs.config.tunnels[tn as usize];
    match (t.kind, Config::tunnel_id(t)) {
        (TunnelType::Vxlan, id) => format!("VXLAN VNI {}", id.unwrap_or(0)),
        (TunnelType::Geneve, id) => format!("Geneve VNI {}", id.unwrap_or(0)),
        (TunnelType::Nvgre, Some(k)) => format!("NVGRE key {k:#x}"),
        (kind, Some(k)) => format!("{} key {k}", format!("{kind:?}").to_uppercase()),
        (kind, None) => format!("{} without key", format!("{kind:?}").to_uppercase()),
    }
}

/// The Linux interface of port `name`, or the port's name when it has none.
fn interface_of(rs: &RuleSet, name: &str) -> String {
    rs.config
        .ports
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| p.interface.clone())
        .unwrap_or_else(|| name.to_string())
}

/// True if `ip` is inside `p`.
fn contains(p: &Prefix, ip: IpAddr) -> bool {
    let bits = |a: IpAddr| -> (u128, u32) {
        match a {
            IpAddr::V4(v) => (u32::from(v) as u128, 32),
            IpAddr::V6(v) => (u128::from(v), 128),
        }
    };
    let ((net, width), (a, w)) = (bits(p.addr), bits(ip));
    if width != w {
        return false;
    }
    let shift = width - p.len as u32;
    let mask = if p.len == 0 { 0 } else { (u128::MAX >> (128 - width)) >> shift << shift };
    net & mask == a & mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::PortStatus;
    use engine::counters::{FlowSnapshot, Snapshot};

    const DOC: &str = r#"
[[ports]]
name = "wl0"
kind = "workload"
interface = "wl0"
[[ports]]
name = "wl1"
kind = "workload"
interface = "wl1"
[[ports]]
name = "up0"
kind = "uplink"
interface = "up0"
mac = "02:00:00:00:00:10"

[[tunnels]]
name = "t1"
type = "vxlan"
uplink = "up0"
local = "192.0.2.1"
remote = "192.0.2.2"
vni = 42

[[tunnels]]
name = "t2"
type = "vxlan"
uplink = "up0"
local = "192.0.2.1"
remote = "192.0.2.3"
vni = 43
next_hop_mac = "02:00:00:00:00:30"

[[rules]]
id = 1
priority = 10
match = { in_port = "wl0", ip_src = "198.51.100.1/32", ip_dst = "198.51.100.0/24" }
actions = [{ encap = "t1" }]
[[rules]]
id = 2
priority = 20
match = { in_port = "wl0", ip_dst = "198.51.100.66" }
actions = ["count", "drop"]
[[rules]]
id = 3
priority = 10
match = { in_port = "wl1", ip_src = "198.51.100.11" }
actions = [{ forward_l2 = 42 }]
[[rules]]
id = 4
match = { tunnel = "t1" }
actions = [{ output = "wl0" }]
[[rules]]
id = 5
priority = 20
match = { in_port = "wl0", ip_dst = "198.51.100.77" }
actions = [{ output = "wl0" }]
[[rules]]
id = 6
priority = 20
match = { in_port = "wl0", ip_dst = "198.51.100.88" }
actions = ["pop_vlan", { encap = "t1" }]
[[rules]]
id = 7
priority = 10
match = { in_port = "wl1", ip_src = "198.51.100.12" }
actions = [{ forward_l2 = 43 }]

[[fdb]]
vni = 42
mac = "02:00:00:00:00:02"
tunnel = "t1"

[[flood]]
vni = 42
tunnels = ["t1"]
"#;

    const HOP: [u8; 6] = [2, 0, 0, 0, 0, 0x20];

    fn rules() -> Arc<RuleSet> {
        Arc::new(engine::compile::compile(&Config::from_toml(DOC).unwrap()).unwrap())
    }

    fn port(name: &str, kind: PortKind, mtu: u32) -> PortStatus {
        PortStatus {
            port: name.into(),
            interface: name.into(),
            kind,
            backend: Backend::AfXdp,
            backend_auto: false,
            xdp_mode: None,
            zero_copy: Some(false),
            offloads: None,
            queues: 1,
            mtu: Some(mtu),
            steering: None,
            sockets: Vec::new(),
            tier: None,
            advice: Vec::new(),
        }
    }

    fn neighbour(mac: Option<&str>, state: &str) -> crate::neigh::NeighState {
        crate::neigh::NeighState {
            remote: "192.0.2.2".parse().unwrap(),
            interface: "up0".into(),
            via: None,
            mac: mac.map(String::from),
            state: state.into(),
        }
    }

    /// A running daemon whose workloads have MTU 1450: everything works.
    fn live() -> Observed {
        let io = IoStatus {
            running: true,
            workers: 1,
            ports: vec![
                port("wl0", PortKind::Workload, 1450),
                port("wl1", PortKind::Workload, 1450),
                port("up0", PortKind::Uplink, 1500),
            ],
            neighbours: vec![neighbour(Some("02:00:00:00:00:20"), "reachable")],
            tier: None,
        };
        let live = LiveInputs {
            next_hops: Arc::new([("192.0.2.2".parse().unwrap(), HOP)].into()),
            path_mtus: Default::default(),
            interface_macs: Default::default(),
            neighbours: io.neighbours.clone(),
        };
        Observed {
            basis: WhyBasis::Live,
            io: Some(io),
            live: Some(live),
            placement: Vec::new(),
            recent: None,
        }
    }

    fn ask(from: &str, to: &str) -> WhyRequest {
        WhyRequest { from: from.into(), to: to.into(), ..WhyRequest::default() }
    }

    fn blocker(o: &Observed, q: &WhyRequest) -> Blocker {
        let r = why(rules(), o, q).unwrap();
        let text = crate::render::why(&r);
        r.blocker.unwrap_or_else(|| panic!("no blocker:\n{text}"))
    }

    #[test]
    fn a_clear_path_names_rule_tunnel_and_next_hop() {
        let r = why(rules(), &live(), &ask("198.51.100.1", "198.51.100.2")).unwrap();
        let text = crate::render::why(&r);
        assert_eq!(r.blocker, None, "{text}");
        let p = r.path.expect("a path");
        assert_eq!((p.port.as_str(), p.rule), ("wl0", 1));
        assert_eq!(
            p.hops,
            vec![Hop::Tunnel {
                tunnel: "t1".into(),
                remote: "192.0.2.2".parse().unwrap(),
                uplink: "up0".into(),
                next_hop: Some("02:00:00:00:00:20".into()),
            }]
        );
        // Live, with no tier in the I/O status: it is not running.
        assert_eq!(r.tier, "software (AF_XDP): the XDP tier is not running");
        assert!(r.trace.unwrap().live);
        assert!(r.checks.iter().all(|f| f.verdict != Outcome::Blocked), "{text}");
        assert!(text.contains("rule 1 (priority 10) matches: encap into tunnel t1"), "{text}");
        assert!(text.contains("path: port wl0 -> rule 1"), "{text}");
        // The order of the walk.
        let order: Vec<&str> = r
            .checks
            .iter()
            .map(|f| match &f.check {
                Check::Port { .. } => "port",
                Check::Fdb { .. } => "fdb",
                Check::Rule { .. } => "rule",
                Check::Tunnel { .. } => "tunnel",
                Check::Neighbour { .. } => "neighbour",
                Check::Mtu { .. } => "mtu",
                Check::Tier { .. } => "tier",
                Check::Counters { .. } => "counters",
                Check::NotChecked { step, .. } => step.as_str(),
            })
            .collect();
        assert_eq!(
            order,
            ["port", "fdb", "rule", "tunnel", "neighbour", "mtu", "tier", "counters"]
        );
    }

    #[test]
    fn l2_forwarding_through_the_fdb() {
        let q = ask("02:00:00:00:00:11,198.51.100.11", "02:00:00:00:00:02,198.51.100.2");
        let r = why(rules(), &live(), &q).unwrap();
        assert_eq!(r.blocker, None, "{}", crate::render::why(&r));
        assert_eq!(r.port.as_deref(), Some("wl1"), "rule 3 names the sender on wl1");
        assert!(r.checks.iter().any(|f| f.verdict == Outcome::Ok
            && matches!(&f.check, Check::Fdb { vni: 42, entry: Some(t), .. } if t == "t1")));
    }

    #[test]
    fn offline_says_what_it_assumes() {
        let r = why(rules(), &Observed::offline(), &ask("198.51.100.1", "198.51.100.2")).unwrap();
        let text = crate::render::why(&r);
        assert_eq!((r.basis, &r.blocker), (WhyBasis::Offline, &None), "{text}");
        assert!(r.path.is_some());
        assert!(r.checks.iter().any(|f| f.verdict == Outcome::Note
            && matches!(f.check, Check::Neighbour { assumed: true, .. })));
        assert!(r.checks.iter().any(|f| f.verdict == Outcome::Note
            && matches!(f.check, Check::Mtu { workload_mtu_assumed: true, .. })));
        assert!(text.contains("offline: the configuration alone"), "{text}");
        assert!(text.contains("assumed resolved"), "{text}");
    }

    #[test]
    fn blocker_datapath_down() {
        let mut o = live();
        o.io.as_mut().unwrap().running = false;
        assert_eq!(blocker(&o, &ask("198.51.100.1", "198.51.100.2")), Blocker::DatapathDown);
    }

    #[test]
    fn blocker_port_not_attached() {
        let mut o = live();
        o.io.as_mut().unwrap().ports.retain(|p| p.port != "wl0");
        assert_eq!(
            blocker(&o, &ask("198.51.100.1", "198.51.100.2")),
            Blocker::PortNotAttached { port: "wl0".into() }
        );
    }

    #[test]
    fn blocker_no_workload_port() {
        let doc = "[[ports]]\nname = \"up0\"\nkind = \"uplink\"\n";
        let rs = Arc::new(engine::compile::compile(&Config::from_toml(doc).unwrap()).unwrap());
        let r = why(rs, &Observed::offline(), &ask("198.51.100.1", "198.51.100.2")).unwrap();
        assert_eq!(r.blocker, Some(Blocker::NoWorkloadPort));
        assert!(r.trace.is_none());
    }

    #[test]
    fn blocker_ambiguous_port() {
        assert_eq!(
            blocker(&live(), &ask("198.51.100.99", "198.51.100.2")),
            Blocker::AmbiguousPort { candidates: vec!["wl0".into(), "wl1".into()] }
        );
    }

    #[test]
    fn blocker_no_tunnel_on_uplink() {
        let q = WhyRequest {
            port: Some("up0".into()),
            vni: Some(7),
            ..ask("198.51.100.2", "198.51.100.1")
        };
        assert_eq!(
            blocker(&live(), &q),
            Blocker::NoTunnelOnUplink { port: "up0".into(), vni: Some(7) }
        );
    }

    #[test]
    fn blocker_no_fdb_entry() {
        let q = ask("02:00:00:00:00:12,198.51.100.12", "02:00:00:00:00:99,198.51.100.13");
        let b = blocker(&live(), &q);
        assert_eq!(
            b,
            Blocker::NoFdbEntry {
                vni: 43,
                mac: "02:00:00:00:00:99".into(),
                tunnels: vec!["t2".into()]
            }
        );
        let r = why(rules(), &live(), &q).unwrap();
        let text = crate::render::why(&r);
        assert!(
            text.contains("no FDB entry for 02:00:00:00:00:99 in VNI 43")
                && text.contains("overlayctl fdb add --vni 43 --mac 02:00:00:00:00:99 --tunnel t2"),
            "{text}"
        );
    }

    #[test]
    fn blocker_no_flood_list() {
        let q = ask("02:00:00:00:00:12,198.51.100.12", "ff:ff:ff:ff:ff:ff");
        assert_eq!(blocker(&live(), &q), Blocker::NoFloodList { vni: 43 });
    }

    #[test]
    fn blocker_vni_mismatch() {
        let q = WhyRequest { vni: Some(43), ..ask("198.51.100.11", "02:00:00:00:00:02") };
        assert_eq!(
            blocker(&live(), &q),
            Blocker::VniMismatch { asked: 43, used: 42, by: "forward_l2 of rule 3".into() }
        );
        let q = WhyRequest { vni: Some(7), ..ask("198.51.100.1", "198.51.100.2") };
        assert_eq!(
            blocker(&live(), &q),
            Blocker::VniMismatch { asked: 7, used: 42, by: "tunnel t1".into() }
        );
    }

    #[test]
    fn blocker_no_matching_rule() {
        let b = blocker(&live(), &ask("198.51.100.1", "203.0.113.9"));
        let Blocker::NoMatchingRule { port, packet, suggestion } = b else { panic!("{b:?}") };
        assert_eq!(port, "wl0");
        assert!(packet.contains("198.51.100.1 > 203.0.113.9"), "{packet}");
        assert_eq!(
            suggestion,
            "--id 8 --match in_port=wl0,ip_dst=203.0.113.9 --action encap=<tunnel>"
        );
    }

    #[test]
    fn blocker_rule_drops() {
        assert_eq!(
            blocker(&live(), &ask("198.51.100.1", "198.51.100.66")),
            Blocker::RuleDrops { rule: 2, priority: 20 }
        );
    }

    #[test]
    fn blocker_self_loop() {
        assert_eq!(
            blocker(&live(), &ask("198.51.100.1", "198.51.100.77")),
            Blocker::SelfLoop { rule: 5, port: "wl0".into() }
        );
    }

    #[test]
    fn blocker_other_drops_as_the_trace_names_them() {
        let b = blocker(&live(), &ask("198.51.100.1", "198.51.100.88"));
        assert!(
            matches!(&b, Blocker::Dropped { stage, reason, .. } if stage == "action" && reason == "no_vlan_tag"),
            "{b:?}"
        );
    }

    #[test]
    fn blocker_neighbour_unresolved() {
        let mut o = live();
        o.io.as_mut().unwrap().neighbours = vec![neighbour(None, "failed")];
        o.live.as_mut().unwrap().next_hops = Arc::new(Default::default());
        let q = ask("198.51.100.1", "198.51.100.2");
        assert_eq!(
            blocker(&o, &q),
            Blocker::NeighbourUnresolved {
                tunnel: "t1".into(),
                remote: "192.0.2.2".parse().unwrap(),
                hop: "192.0.2.2".parse().unwrap(),
                interface: "up0".into(),
                state: "failed".into(),
            }
        );
        let text = crate::render::why(&why(rules(), &o, &q).unwrap());
        assert!(text.contains("neighbour 192.0.2.2 on up0 is FAILED"), "{text}");
        assert!(text.contains("check the underlay link"), "{text}");
    }

    #[test]
    fn blocker_mtu_too_small() {
        let mut o = live();
        o.io.as_mut().unwrap().ports[0].mtu = Some(1500);
        let q = ask("198.51.100.1", "198.51.100.2");
        assert_eq!(
            blocker(&o, &q),
            Blocker::MtuTooSmall {
                tunnel: "t1".into(),
                inner_mtu: 1450,
                workload_mtu: 1500,
                port: "wl0".into(),
                assumed: false,
            }
        );
        let text = crate::render::why(&why(rules(), &o, &q).unwrap());
        assert!(text.contains("inner MTU 1450 < the workload's 1500"), "{text}");
        // A VLAN tag in the frame takes four bytes of the tunnel's room.
        let mut o = live();
        o.io.as_mut().unwrap().ports[0].mtu = Some(1450);
        let tagged = WhyRequest { vlan: Some(5), ..ask("198.51.100.1", "198.51.100.88") };
        let r = why(rules(), &o, &tagged).unwrap();
        assert!(
            r.checks.iter().any(|f| matches!(f.check, Check::Mtu { inner_mtu: 1450, .. })),
            "rule 6 pops the tag: {}",
            crate::render::why(&r)
        );
    }

    #[test]
    fn blocker_underlay_mtu_too_small() {
        let mut o = live();
        o.io.as_mut().unwrap().ports[2].mtu = Some(1400);
        assert_eq!(
            blocker(&o, &ask("198.51.100.1", "198.51.100.2")),
            Blocker::UnderlayMtuTooSmall {
                tunnel: "t1".into(),
                underlay_mtu: 1500,
                uplink: "up0".into(),
                interface_mtu: 1400,
            }
        );
    }

    #[test]
    fn blocker_recent_drops() {
        let mut o = live();
        let f = FlowSnapshot { packets: 9, bytes: 900 };
        o.recent = Some(Recent {
            secs: 10,
            moved: Snapshot {
                ports: vec![(f, FlowSnapshot::default()); 3],
                tunnels: vec![(f, FlowSnapshot::default()); 2],
                tunnel_drops: vec![vec![("mtu_exceeded", 4)], vec![]],
                rules: vec![f; 7],
                drops: vec![("mtu_exceeded", 4)],
                ..Snapshot::default()
            },
        });
        let q = ask("198.51.100.1", "198.51.100.2");
        assert_eq!(
            blocker(&o, &q),
            Blocker::RecentDrops {
                tunnel: "t1".into(),
                drops: [("mtu_exceeded".to_string(), 4)].into(),
                secs: 10,
            }
        );
        let r = why(rules(), &o, &q).unwrap();
        let moved = r.checks.iter().find_map(|f| match &f.check {
            Check::Counters { moved, .. } => Some(moved.clone()),
            _ => None,
        });
        assert_eq!(
            moved.unwrap(),
            BTreeMap::from([
                ("port wl0 rx".to_string(), 9),
                ("rule 1".to_string(), 9),
                ("tunnel t1 sent".to_string(), 9),
                ("tunnel t1 drop mtu_exceeded".to_string(), 4),
            ])
        );
    }

    #[test]
    fn questions_it_cannot_ask_name_the_field() {
        let o = Observed::offline();
        let e = |q: WhyRequest| why(rules(), &o, &q).unwrap_err();
        assert_eq!(e(ask("nonsense", "198.51.100.2")).field(), "from");
        assert_eq!(e(ask("198.51.100.1", "2001:db8::1")), WhyError::Family);
        assert_eq!(
            e(WhyRequest { port: Some("nope".into()), ..ask("198.51.100.1", "198.51.100.2") }),
            WhyError::UnknownPort("nope".into())
        );
        assert_eq!(
            e(WhyRequest { vlan: Some(4095), ..ask("198.51.100.1", "198.51.100.2") }).field(),
            "vlan"
        );
        assert!(End::parse("to", "02:00:00:00:00:01,198.51.100.1,198.51.100.2").is_err());
    }

    #[test]
    fn prefixes_contain_their_addresses() {
        let p: Prefix = "198.51.100.0/24".parse().unwrap();
        assert!(contains(&p, "198.51.100.200".parse().unwrap()));
        assert!(!contains(&p, "198.51.101.1".parse().unwrap()));
        assert!(!contains(&p, "2001:db8::1".parse().unwrap()));
        assert!(contains(&"0.0.0.0/0".parse().unwrap(), "203.0.113.1".parse().unwrap()));
        assert!(contains(&"2001:db8::/32".parse().unwrap(), "2001:db8:1::1".parse().unwrap()));
    }

    /// The tier line names the tier a port's backend holds and the
    /// software path its other packets take: a tc port (what `auto` picks
    /// on a veth) is served by the tc program and punts to a packet socket,
    /// not AF_XDP.
    #[test]
    fn the_tier_line_follows_the_ports_live_backend() {
        let rs = rules();
        let mut o = live();
        let io = o.io.as_mut().unwrap();
        let entries = |n| crate::io::tier::TierPortStatus {
            port: "wl0".into(),
            entries: Some(n),
            not_output: None,
        };
        io.tier =
            Some(crate::io::tier::TierStatus { ports: vec![entries(3)], ..Default::default() });
        assert_eq!(
            tier(&rs, 0, o.io.as_ref()),
            "XDP tier for the established flows it takes (3 entries on wl0 now; \
             `overlayctl status` says why others stay), first packets and the rest in \
             software (AF_XDP)"
        );
        let io = o.io.as_mut().unwrap();
        io.ports[0].backend = Backend::Tc;
        io.ports[0].backend_auto = true;
        assert_eq!(
            tier(&rs, 0, o.io.as_ref()),
            "tc tier for the established flows it takes (3 entries on wl0 now; \
             `overlayctl status` says why others stay), first packets and the rest in \
             software (a packet socket on the punt device)"
        );
        // Offline, `auto` is not resolved yet: either may hold it.
        assert!(tier(&rs, 0, None).starts_with("XDP or tc tier for the established flows"));
    }
}
