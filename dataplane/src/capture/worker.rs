//! The worker's side of a capture: it notices arming once per loop, and
//! while armed runs each batch through the pipeline with a tracer that
//! notes every packet's fate, then records the packets the filter selects.
//!
//! The tracer sees a batch's steps in packet order: a packet's steps begin
//! with `Received` (or, for an unknown input port, `Dropped` at `receive`),
//! and each `Output` or `TooBig` step is one frame pushed, in order, onto its
//! port's output batch. That is how fates are matched to the frames.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use encap::{DropReason, PacketBuf};
use engine::compile::RuleSet;
use engine::pipeline::{FramePool, Outputs, Worker};
use engine::trace::{Stage, Step, Tracer};

use super::{CaptureTap, Captured, Session, Tier};
use crate::api_types::{CaptureDirection, Verdict};
use crate::io::pcapng::Direction;

/// A worker's view of the capture tap.
#[derive(Default)]
pub struct WorkerCapture {
    seen: u64,
    armed: Option<Box<Armed>>,
}

impl WorkerCapture {
    /// Arms or disarms when the tap changed; re-resolves the filter when the
    /// worker's rule set did.
    #[inline]
    pub fn sync(&mut self, tap: &CaptureTap, rules: &Arc<RuleSet>) {
        let g = tap.generation();
        if g != self.seen {
            self.seen = g;
            self.armed = tap.session().map(|s| Box::new(Armed::new(s, rules)));
        }
        if let Some(a) = &mut self.armed {
            if !Arc::ptr_eq(&a.rules, rules) {
                a.resolve(rules);
            }
        }
    }

    /// The armed capture, if any.
    #[inline]
    pub fn armed(&mut self) -> Option<&mut Armed> {
        self.armed.as_deref_mut()
    }
}

/// The filter, resolved against one rule set's numbering.
struct Resolved {
    /// Port index -> the session's interface, or `None` when the port is
    /// not recorded (filtered out, or added after the capture began).
    interface: Vec<Option<u32>>,
    /// The filter's tunnel: `Some(None)` when it is not in this rule set.
    tunnel: Option<Option<u16>>,
    /// The filter's rule (an index): `Some(None)` when not in this rule set.
    rule: Option<Option<u32>>,
}

impl Resolved {
    fn new(s: &Session, rs: &RuleSet) -> Resolved {
        let f = &s.filter;
        let interface = rs
            .ports
            .iter()
            .map(|p| {
                let wanted = f.ports.is_empty() || f.ports.contains(&p.name);
                let i = s.ports.iter().position(|n| *n == p.name)?;
                wanted.then_some(i as u32)
            })
            .collect();
        let tunnel = f
            .tunnel
            .as_ref()
            .map(|t| rs.tunnels.iter().position(|x| x.name == *t).map(|i| i as u16));
        let rule = f.rule.map(|id| rs.rules.iter().position(|r| r.id == id).map(|i| i as u32));
        Resolved { interface, tunnel, rule }
    }

    fn interface(&self, port: u16) -> Option<u32> {
        self.interface.get(port as usize).copied().flatten()
    }
}

/// What happened to one packet of the batch.
#[derive(Clone, Copy, Debug, Default)]
struct Fate {
    /// The first tunnel it came from or was headed into.
    tunnel: Option<u16>,
    /// It touched the filter's tunnel.
    tunnel_hit: bool,
    /// Index of the matched rule.
    rule: Option<u32>,
    drop: Option<(Stage, DropReason)>,
    forwarded: bool,
}

/// One frame pushed onto an output batch.
#[derive(Clone, Copy, Debug)]
struct Sent {
    /// Which packet of the batch it came from.
    packet: usize,
    port: u16,
    /// The tunnel it was encapsulated into.
    tunnel: Option<u16>,
    /// An ICMP "too big" reply.
    generated: bool,
}

/// The recording tracer: every packet's fate and every frame sent.
#[derive(Default)]
struct Fates {
    packets: Vec<Fate>,
    sent: Vec<Sent>,
    /// The filter's tunnel in this rule set.
    watch: Option<u16>,
    /// The tunnel of the packet being encapsulated, for its `Output` step.
    encapsulated: Option<u16>,
}

impl Fates {
    fn clear(&mut self) {
        self.packets.clear();
        self.sent.clear();
        self.encapsulated = None;
    }

    fn touch(&mut self, t: u16) {
        let watch = self.watch;
        if let Some(f) = self.packets.last_mut() {
            f.tunnel.get_or_insert(t);
            f.tunnel_hit |= watch == Some(t);
        }
    }

    fn send(&mut self, port: u16, generated: bool) {
        let Some(packet) = self.packets.len().checked_sub(1) else { return };
        let tunnel = if generated { None } else { self.encapsulated.take() };
        self.sent.push(Sent { packet, port, tunnel, generated });
        self.packets[packet].forwarded |= !generated;
    }
}

impl Tracer for Fates {
    const ON: bool = true;

    fn step(&mut self, make: impl FnOnce() -> Step) {
        match make() {
            Step::Received { .. } => self.packets.push(Fate::default()),
            Step::Dropped { stage: Stage::Receive, reason } => {
                self.packets.push(Fate { drop: Some((Stage::Receive, reason)), ..Fate::default() })
            }
            Step::Decapsulated { tunnel: Some(t), .. } => self.touch(t),
            Step::NextHop { tunnel, .. } => self.touch(tunnel),
            Step::Encapsulated { tunnel, .. } => self.encapsulated = Some(tunnel),
            Step::Matched { rule } => {
                if let Some(f) = self.packets.last_mut() {
                    f.rule = Some(rule);
                }
            }
            Step::Output { port, .. } => self.send(port, false),
            Step::TooBig { port, .. } => self.send(port, true),
            Step::Dropped { stage, reason } => {
                if let Some(f) = self.packets.last_mut() {
                    f.drop = Some((stage, reason));
                }
            }
            _ => {}
        }
    }
}

/// An armed capture, as one worker runs it.
pub struct Armed {
    session: Arc<Session>,
    pub(super) rules: Arc<RuleSet>,
    resolved: Resolved,
    fates: Fates,
    /// Each packet's input bytes, copied before the pipeline changes them
    /// (`None`: no buffer was free).
    inputs: Vec<Option<Box<Captured>>>,
    /// Each port's output batch length before the pipeline ran.
    starts: Vec<usize>,
}

impl Armed {
    pub(super) fn new(session: Arc<Session>, rules: &Arc<RuleSet>) -> Armed {
        let resolved = Resolved::new(&session, rules);
        let mut a = Armed {
            session,
            rules: Arc::clone(rules),
            resolved,
            fates: Fates::default(),
            inputs: Vec::with_capacity(crate::io::BATCH),
            starts: Vec::new(),
        };
        a.fates.watch = a.resolved.tunnel.flatten();
        a
    }

    fn resolve(&mut self, rules: &Arc<RuleSet>) {
        self.resolved = Resolved::new(&self.session, rules);
        self.fates.watch = self.resolved.tunnel.flatten();
        self.rules = Arc::clone(rules);
    }

    /// Whether a packet's fate passes the filter.
    fn selects(&self, f: &Fate) -> bool {
        let flt = &self.session.filter;
        let verdict = if f.forwarded { Verdict::Forwarded } else { Verdict::Dropped };
        flt.verdict.is_none_or(|v| v == verdict)
            && flt.reason.is_none_or(|r| f.drop.is_some_and(|(_, d)| d == r))
            && self.resolved.rule.is_none_or(|r| r.is_some() && f.rule == r)
            && self.resolved.tunnel.is_none_or(|t| t.is_some() && f.tunnel_hit)
    }

    /// Runs the engine over one batch and records what the filter selects.
    pub fn process<'a>(
        &mut self,
        engine: &mut Worker,
        in_port: u16,
        batch: &mut Vec<PacketBuf<'a>>,
        pool: &mut impl FramePool<'a>,
        out: &mut Outputs<'a>,
        now_ns: u64,
    ) {
        let ts_ns = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let dir = self.session.filter.direction;
        let snaplen = self.session.snaplen;
        let in_interface =
            self.resolved.interface(in_port).filter(|_| dir != CaptureDirection::Out);
        // Inputs first: the pipeline rewrites packets in place.
        self.inputs.clear();
        if in_interface.is_some() {
            for pkt in batch.iter() {
                let c = self.session.take().map(|mut c| {
                    let d = pkt.data();
                    c.data.clear();
                    c.data.extend_from_slice(&d[..d.len().min(snaplen)]);
                    c.orig_len = d.len() as u32;
                    c
                });
                self.inputs.push(c);
            }
        }
        self.starts.clear();
        self.starts.extend(out.ports.iter().map(Vec::len));
        self.fates.clear();

        engine.process(in_port, batch, pool, out, now_ns, &mut self.fates);

        let mut inputs = std::mem::take(&mut self.inputs);
        if let Some(interface) = in_interface {
            for (i, slot) in inputs.iter_mut().enumerate() {
                let buf = slot.take();
                match self.fates.packets.get(i).filter(|f| self.selects(f)) {
                    Some(f) => {
                        self.record(buf, interface, Direction::Inbound, ts_ns, f, f.tunnel, false)
                    }
                    None => {
                        if let Some(c) = buf {
                            self.session.recycle(c);
                        }
                    }
                }
            }
        }
        self.inputs = inputs;
        if dir == CaptureDirection::In {
            return;
        }
        for k in 0..self.fates.sent.len() {
            let s = self.fates.sent[k];
            let p = s.port as usize;
            let Some(start) = self.starts.get_mut(p) else { continue };
            let at = *start;
            *start += 1;
            let (Some(interface), Some(f)) =
                (self.resolved.interface(s.port), self.fates.packets.get(s.packet).copied())
            else {
                continue;
            };
            if !self.selects(&f) {
                continue;
            }
            let Some(frame) = out.ports[p].get(at) else { continue };
            let buf = self.session.take().map(|mut c| {
                let d = frame.data();
                c.data.clear();
                c.data.extend_from_slice(&d[..d.len().min(snaplen)]);
                c.orig_len = d.len() as u32;
                c
            });
            let tunnel = s.tunnel.or(f.tunnel);
            self.record(buf, interface, Direction::Outbound, ts_ns, &f, tunnel, s.generated);
        }
    }

    /// Fills in a recorded packet's fate and hands it over, or counts it
    /// lost when there was no buffer for it.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        buf: Option<Box<Captured>>,
        interface: u32,
        direction: Direction,
        ts_ns: u64,
        f: &Fate,
        tunnel: Option<u16>,
        generated: bool,
    ) {
        let Some(mut c) = buf else {
            self.session.lose(interface);
            return;
        };
        c.ts_ns = ts_ns;
        c.interface = interface;
        c.direction = direction;
        c.verdict = if f.forwarded { Verdict::Forwarded } else { Verdict::Dropped };
        c.drop = f.drop;
        c.rule = f.rule.and_then(|i| self.rules.rules.get(i as usize)).map(|r| r.id);
        c.tunnel.clear();
        if let Some(t) = tunnel.and_then(|t| self.rules.tunnels.get(t as usize)) {
            c.tunnel.push_str(&t.name);
        }
        c.generated = generated;
        c.tier = Tier::Software;
        self.session.submit(c);
    }
}
