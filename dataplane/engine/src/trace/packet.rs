//! `trace_packet`: one packet through a worker that has the state the live
//! workers have, with a recorder; and the report it makes.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use encap::{DropReason, PacketBuf};
use serde::{Deserialize, Serialize};

use crate::compile::RuleSet;
use crate::counters::{FlowSnapshot, Snapshot};
use crate::pipeline::{max_copies, Outputs, Worker};
use crate::placement::RulePlacement;

use super::{hex, render, Recorder, Stage, Step, StepView, Tracer};

/// What a trace runs and explains a packet with besides the rule set. On a
/// running daemon it is what the datapath workers are given (next hops,
/// interface MACs) and what explains their choices (neighbour states, where
/// each rule runs); the default is what an offline trace knows: nothing.
#[derive(Clone, Debug, Default)]
pub struct TraceContext {
    /// True when this is a running daemon's state.
    pub live: bool,
    /// Next hops learned from the kernel: remote VTEP -> MAC.
    pub next_hops: Arc<HashMap<IpAddr, [u8; 6]>>,
    /// The MTU of the interface each remote VTEP is reached by.
    pub path_mtus: Arc<HashMap<IpAddr, u16>>,
    /// Port name -> its interface's MAC (the outer source when the port's
    /// configuration gives none).
    pub interface_macs: HashMap<String, [u8; 6]>,
    /// Remote VTEP -> its neighbour state in words ("reachable on up0").
    pub neighbours: HashMap<IpAddr, String>,
    /// Where each rule runs (empty when offload is off).
    pub placement: Vec<RulePlacement>,
    /// Learned MACs and bindings (a running daemon's), read, never written.
    pub learned: Option<Arc<crate::learn::L2Snapshot>>,
    /// Port name -> the backend the running datapath attached it on
    /// (`auto` resolved); empty offline, where the configuration's stands.
    pub backends: HashMap<String, crate::model::Backend>,
}

/// Packets and bytes a port counted each way.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct PortMoves {
    pub rx: FlowSnapshot,
    pub tx: FlowSnapshot,
}

/// Packets and bytes a tunnel counted each way, and the drops counted
/// under it (by reason).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TunnelMoves {
    pub encap: FlowSnapshot,
    pub decap: FlowSnapshot,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drops: BTreeMap<String, u64>,
}

/// The counters a packet moves, by name; ports, tunnels, rules and drop
/// reasons that did not move are left out. Flow-cache and batch counters are
/// not included: they depend on what the worker saw before.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CounterMoves {
    pub rx: u64,
    pub tx: u64,
    pub replicas: u64,
    pub generated: u64,
    pub drops: BTreeMap<String, u64>,
    pub ports: BTreeMap<String, PortMoves>,
    pub tunnels: BTreeMap<String, TunnelMoves>,
    /// By rule id.
    pub rules: BTreeMap<u32, FlowSnapshot>,
}

impl CounterMoves {
    /// Names what moved in `s`, a snapshot numbered by `rs`.
    pub fn named(rs: &RuleSet, s: &Snapshot) -> CounterMoves {
        let moved = |f: &FlowSnapshot| f.packets != 0 || f.bytes != 0;
        CounterMoves {
            rx: s.rx,
            tx: s.tx,
            replicas: s.replicas,
            generated: s.generated,
            drops: s.drops.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
            ports: rs
                .ports
                .iter()
                .zip(&s.ports)
                .filter(|(_, (rx, tx))| moved(rx) || moved(tx))
                .map(|(p, (rx, tx))| (p.name.clone(), PortMoves { rx: *rx, tx: *tx }))
                .collect(),
            tunnels: rs
                .tunnels
                .iter()
                .enumerate()
                .zip(&s.tunnels)
                .map(|((i, t), (e, d))| {
                    let drops = s.tunnel_drops.get(i).into_iter().flatten();
                    let drops = drops.map(|(n, c)| (n.to_string(), *c)).collect();
                    (t.name.clone(), TunnelMoves { encap: *e, decap: *d, drops })
                })
                .filter(|(_, m)| moved(&m.encap) || moved(&m.decap) || !m.drops.is_empty())
                .collect(),
            rules: rs
                .rules
                .iter()
                .zip(&s.rules)
                .filter(|(_, f)| moved(f))
                .map(|(r, f)| (r.id, *f))
                .collect(),
        }
    }
}

impl fmt::Display for CounterMoves {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flow = |what: &str, x: &FlowSnapshot| {
            (x.packets > 0).then(|| format!("{what} +{} ({} bytes)", x.packets, x.bytes))
        };
        let mut parts = vec![format!("rx +{}", self.rx), format!("tx +{}", self.tx)];
        if self.replicas > 0 {
            parts.push(format!("replicas +{}", self.replicas));
        }
        if self.generated > 0 {
            parts.push(format!("generated +{}", self.generated));
        }
        parts.extend(self.drops.iter().map(|(r, n)| format!("drop {r} +{n}")));
        for (name, p) in &self.ports {
            parts.extend(flow(&format!("port {name} rx"), &p.rx));
            parts.extend(flow(&format!("port {name} tx"), &p.tx));
        }
        for (name, t) in &self.tunnels {
            parts.extend(flow(&format!("tunnel {name} encap"), &t.encap));
            parts.extend(flow(&format!("tunnel {name} decap"), &t.decap));
            parts.extend(t.drops.iter().map(|(r, n)| format!("tunnel {name} drop {r} +{n}")));
        }
        for (id, r) in &self.rules {
            parts.extend(flow(&format!("rule {id}"), r));
        }
        f.write_str(&parts.join(", "))
    }
}

/// What `trace_packet` saw: each step, the frames that would be sent and
/// the counters the packet moves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TraceReport {
    pub generation: u64,
    /// True when traced with a running daemon's state.
    #[serde(default)]
    pub live: bool,
    pub steps: Vec<StepView>,
    /// (port name, frame as hex) for every frame the packet produced.
    pub outputs: Vec<(String, String)>,
    #[serde(default)]
    pub counters: CounterMoves,
}

impl fmt::Display for TraceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.live {
            "with the datapath's live state"
        } else {
            "rules only: no learned next hops or interface MACs"
        };
        writeln!(f, "generation {} ({state})", self.generation)?;
        for (i, st) in self.steps.iter().enumerate() {
            writeln!(f, "{:>3}. {st}", i + 1)?;
        }
        if self.outputs.is_empty() {
            writeln!(f, "result: no frame sent")?;
        }
        for (port, hex) in &self.outputs {
            writeln!(f, "result: frame to {port} ({} bytes): {hex}", hex.len() / 2)?;
        }
        writeln!(f, "counters: {}", self.counters)
    }
}

/// Runs one packet arriving on `in_port` through the pipeline with a
/// recorder. The worker is a scratch one, so live counters and caches are
/// untouched, but it is set up as the datapath sets up its own: the rule
/// set, then `cx`'s next hops and interface MACs. Same code as the fast path.
pub fn trace_packet(
    rules: Arc<RuleSet>,
    cx: &TraceContext,
    in_port: u16,
    frame: &[u8],
    now_ns: u64,
) -> TraceReport {
    trace_steps(rules, cx, in_port, frame, now_ns).1
}

/// `trace_packet`, also returning the recorded steps themselves (indices
/// into the rule set), for callers that reason about the path.
pub fn trace_steps(
    rules: Arc<RuleSet>,
    cx: &TraceContext,
    in_port: u16,
    frame: &[u8],
    now_ns: u64,
) -> (Vec<Step>, TraceReport) {
    const HEAD: usize = 256;
    let mut w = Worker::new(Arc::clone(&rules));
    w.apply_next_hops(&cx.next_hops);
    w.apply_path_mtus(&cx.path_mtus);
    w.apply_interface_macs(&cx.interface_macs);
    if let Some(l) = &cx.learned {
        w.set_learner(crate::learn::Learner::reading(Arc::clone(l)));
    }
    let mut rx = vec![0u8; HEAD + frame.len().max(2048)];
    rx[HEAD..HEAD + frame.len()].copy_from_slice(frame);
    let copies = max_copies(&rules) + 2;
    let mut spare: Vec<Vec<u8>> = (0..copies).map(|_| vec![0u8; HEAD + 2048]).collect();
    let mut spare_iter = spare.iter_mut();
    let mut pool = || spare_iter.next().and_then(|b| PacketBuf::new(b, HEAD, 0));
    let mut out = Outputs::new(rules.ports.len(), copies);
    let mut rec = Recorder::default();
    match PacketBuf::new(&mut rx, HEAD, frame.len()) {
        Some(p) => w.process(in_port, &mut vec![p], &mut pool, &mut out, now_ns, &mut rec),
        None => {
            rec.step(|| Step::Dropped { stage: Stage::Receive, reason: DropReason::NoFreeFrame })
        }
    }
    let outputs = out
        .ports
        .iter()
        .enumerate()
        .flat_map(|(i, v)| v.iter().map(move |p| (i, hex(p.data()))))
        .map(|(i, h)| (rules.ports[i].name.clone(), h))
        .collect();
    let counters = CounterMoves::named(&rules, &Snapshot::sum([&*w.counters()]));
    let report = TraceReport {
        generation: rules.generation,
        live: cx.live,
        steps: render(&rec.steps, &rules, cx),
        outputs,
        counters,
    };
    (rec.steps, report)
}
