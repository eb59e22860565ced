//! Explaining a packet's path: the pipeline reports each step to a `Tracer`.
//!
//! The fast path uses `NoTrace`, whose methods are empty and inlined away, and
//! the step descriptions are built inside closures it never calls, so tracing
//! costs nothing when off. `trace` runs the very same pipeline code with a
//! `Recorder`, so what it shows is what the fast path does.

use std::fmt;

use encap::DropReason;

/// One step of a packet's path.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    Received {
        port: String,
        len: usize,
    },
    Parsed {
        summary: String,
    },
    Decapsulated {
        tunnel: String,
        detail: String,
    },
    Lookup {
        tier: String,
        detail: String,
    },
    Matched {
        rule: u32,
        priority: u16,
    },
    /// Where the matched rule runs (added by the control plane when offload
    /// is active).
    Placement {
        rule: u32,
        hardware: bool,
        detail: String,
    },
    Action {
        action: String,
    },
    Encapsulated {
        tunnel: String,
        header: String,
    },
    Output {
        port: String,
        len: usize,
    },
    Replicated {
        copies: usize,
    },
    Dropped {
        stage: String,
        reason: String,
        description: String,
    },
}

impl Step {
    pub fn dropped(stage: &'static str, reason: DropReason) -> Step {
        Step::Dropped {
            stage: stage.to_string(),
            reason: reason.name().to_string(),
            description: reason.description().to_string(),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Received { port, len } => write!(f, "received on port {port}, {len} bytes"),
            Step::Parsed { summary } => write!(f, "parsed: {summary}"),
            Step::Decapsulated { tunnel, detail } => {
                write!(f, "decapsulated from tunnel {tunnel} ({detail})")
            }
            Step::Lookup { tier, detail } => write!(f, "lookup answered by {tier}: {detail}"),
            Step::Matched { rule, priority } => {
                write!(f, "matched rule {rule} (priority {priority})")
            }
            Step::Placement { rule, hardware: true, detail } => write!(
                f,
                "rule {rule} runs in hardware ({detail}): the NIC handles such packets before they reach this path"
            ),
            Step::Placement { rule, hardware: false, detail } => {
                write!(f, "rule {rule} runs in software: {detail}")
            }
            Step::Action { action } => write!(f, "action: {action}"),
            Step::Encapsulated { tunnel, header } => {
                write!(f, "encapsulated into tunnel {tunnel}, outer header {header}")
            }
            Step::Output { port, len } => write!(f, "output to port {port}, {len} bytes"),
            Step::Replicated { copies } => write!(f, "replicated to {copies} copies"),
            Step::Dropped { stage, reason, description } => {
                write!(f, "DROPPED at {stage}: {reason} ({description})")
            }
        }
    }
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

/// Records every step, for `trace`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Recorder {
    pub steps: Vec<Step>,
}

impl Tracer for Recorder {
    const ON: bool = true;
    fn step(&mut self, make: impl FnOnce() -> Step) {
        self.steps.push(make());
    }
}

impl fmt::Display for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(f, "{:>2}. {s}", i + 1)?;
        }
        Ok(())
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
    fn recorder_renders_numbered_steps() {
        let mut r = Recorder::default();
        r.step(|| Step::Received { port: "wl0".into(), len: 98 });
        r.step(|| Step::dropped("classify", DropReason::NoMatchingRule));
        let text = r.to_string();
        assert!(text.contains(" 1. received on port wl0, 98 bytes"));
        assert!(text.contains(" 2. DROPPED at classify: no_matching_rule"));
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""step":"dropped""#), "{json}");
    }
}
