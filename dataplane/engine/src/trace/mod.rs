//! Explaining a packet's path.
//!
//! The pipeline reports each step to a `Tracer` as a small typed value:
//! indices into the rule set, numbers, a copied flow key, a drop reason.
//! Nothing is formatted on the packet path. The fast path uses `NoTrace`,
//! whose method is empty, inlined away, and never calls the closure that
//! builds the step, so tracing costs nothing when off.
//!
//! `trace_packet` (in `packet`) runs the very same pipeline code with a
//! `Recorder` and the state the workers run with; `view` turns the recorded
//! steps into named ones (text and JSON) only then.

mod packet;
mod view;

use encap::template::MAX_OUTER_LEN;
use encap::{Decapped, DropReason};

use crate::compile::Act;
use crate::flow_key::FlowKey;

pub use packet::{
    trace_packet, trace_steps, CounterMoves, PortMoves, TraceContext, TraceReport, TunnelMoves,
};
pub use view::{describe, describe_act, render, StepView};

/// Where in the pipeline a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Receive,
    Decap,
    Parse,
    Classify,
    Action,
    Forward,
    Replicate,
    Encap,
}

impl Stage {
    pub const fn name(self) -> &'static str {
        match self {
            Stage::Receive => "receive",
            Stage::Decap => "decap",
            Stage::Parse => "parse",
            Stage::Classify => "classify",
            Stage::Action => "action",
            Stage::Forward => "forward",
            Stage::Replicate => "replicate",
            Stage::Encap => "encap",
        }
    }
}

/// The outer header a packet was encapsulated with, copied for the trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OuterHeader {
    len: u8,
    bytes: [u8; MAX_OUTER_LEN],
}

impl OuterHeader {
    /// The first `len` bytes of `frame` (at most `MAX_OUTER_LEN`).
    pub fn copy(frame: &[u8], len: usize) -> OuterHeader {
        let len = len.min(MAX_OUTER_LEN).min(frame.len());
        let mut bytes = [0u8; MAX_OUTER_LEN];
        bytes[..len].copy_from_slice(&frame[..len]);
        OuterHeader { len: len as u8, bytes }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// One step of a packet's path. Ports, tunnels and rules are indices into the
/// rule set the packet was judged by; `render` gives them their names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Received {
        port: u16,
        len: u32,
    },
    /// What decapsulation found; `tunnel` is `None` when no configured tunnel
    /// has these endpoints and VNI/key.
    Decapsulated {
        tunnel: Option<u16>,
        outer: Decapped,
    },
    Parsed {
        key: FlowKey,
    },
    /// The exact-match flow cache answered.
    CacheHit,
    /// The classifier answered: the table that held the rule (probe order)
    /// and how many tables it probed.
    Classified {
        table: Option<u32>,
        probed: u32,
    },
    /// Index of the matched rule.
    Matched {
        rule: u32,
    },
    Action {
        act: Act,
    },
    Replicated {
        copies: u32,
    },
    /// The next hop a tunnel would send to: the MAC in the worker's header
    /// template, or `None` while it is unresolved.
    NextHop {
        tunnel: u16,
        mac: Option<[u8; 6]>,
    },
    Encapsulated {
        tunnel: u16,
        header: OuterHeader,
    },
    Output {
        port: u16,
        len: u32,
    },
    /// An ICMP "too big" reply sent back out of `port`.
    TooBig {
        port: u16,
        mtu: u16,
        len: u32,
    },
    Dropped {
        stage: Stage,
        reason: DropReason,
    },
    /// MAC learning or ARP/ND suppression.
    L2(crate::learn::L2Step),
}

/// Receives the steps of a packet's path.
pub trait Tracer {
    /// Whether steps are recorded; lets callers skip work done only for the trace.
    const ON: bool;
    fn step(&mut self, make: impl FnOnce() -> Step);
}

/// The fast path's tracer: records nothing, costs nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTrace;

impl Tracer for NoTrace {
    const ON: bool = false;
    #[inline(always)]
    fn step(&mut self, _make: impl FnOnce() -> Step) {}
}

/// Records every step, for `trace_packet` and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorder {
    pub steps: Vec<Step>,
}

impl Tracer for Recorder {
    const ON: bool = true;
    fn step(&mut self, make: impl FnOnce() -> Step) {
        self.steps.push(make());
    }
}

/// Lower-case hex, for header dumps in traces.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_trace_never_builds_steps() {
        let mut t = NoTrace;
        t.step(|| panic!("the fast path must not build trace steps"));
    }

    #[test]
    fn steps_are_small_values() {
        // A step is copied into the recorder; nothing in it points anywhere.
        assert!(std::mem::size_of::<Step>() <= 128, "{}", std::mem::size_of::<Step>());
    }

    #[test]
    fn outer_header_keeps_what_fits() {
        let h = OuterHeader::copy(&[1, 2, 3, 4], 3);
        assert_eq!(h.bytes(), &[1, 2, 3]);
        let h = OuterHeader::copy(&[7; 200], 200);
        assert_eq!(h.bytes().len(), MAX_OUTER_LEN);
    }
}
