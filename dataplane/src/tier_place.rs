//! Where a rule's flows, or one flow, run after their first packet, as the
//! API reports it (`rule list`, `why`): the configuration and the port's
//! backend first, then the engine's own judgement (`engine::tier_fit`).
//! Hardware placement (SR-IOV) is reported beside it, by the offloader.
//! A live trace gets the same answer for its packet's flow as one step.

use std::collections::HashMap;
use std::sync::Arc;

use engine::compile::RuleSet;
use engine::flow_key::FlowKey;
use engine::model::{Backend, PortKind, TierSpec};
use engine::pipeline::Worker;
use engine::tier::NotInTier;
use engine::tier_fit::{self, TierFit};
use engine::trace::{Step, StepView, TraceContext, TraceReport};

use crate::api_types::TierPlace;

/// Each rule's place by id.
pub fn rules(rs: &Arc<RuleSet>, cx: &TraceContext) -> HashMap<u32, TierPlace> {
    let w = tier_fit::worker(Arc::clone(rs), cx);
    (0..rs.rules.len())
        .map(|i| {
            let port = rs.config.rules[i].matches.in_port.as_deref().and_then(|p| rs.port_index(p));
            let backend = backend(rs, cx, port);
            let place = off(rs, port).unwrap_or_else(|| fit(tier_fit::rule(&w, i), backend));
            (rs.rules[i].id, place)
        })
        .collect()
}

/// The place of the flow of `key` arriving on `port`, which matched rule
/// `rule` (index), under `w`'s rule set (`cx` says what backend the port
/// runs on).
pub fn flow(w: &Worker, cx: &TraceContext, port: u16, key: &FlowKey, rule: u32) -> TierPlace {
    let backend = backend(w.rules(), cx, Some(port));
    off(w.rules(), Some(port)).unwrap_or_else(|| fit(tier_fit::flow(w, key, rule), backend))
}

/// The backend of `port` (a rule's without one: the workload port its flows
/// are judged on, as `tier_fit::rule` judges them): the one it was
/// attached on when live, else the configuration's.
fn backend(rs: &RuleSet, cx: &TraceContext, port: Option<u16>) -> Backend {
    let workload = || rs.ports.iter().position(|p| p.kind == PortKind::Workload);
    let Some(p) = port.map(usize::from).or_else(workload).and_then(|i| rs.config.ports.get(i))
    else {
        return Backend::Auto;
    };
    cx.backends.get(&p.name).copied().unwrap_or(p.backend)
}

/// Adds to a live trace of a packet that arrived on `port` (its recorded
/// `steps` and `report`) where the packet's flow runs after it: in hardware
/// when its rule is offloaded, else what the workers will do with the flow.
/// The step follows the matched rule (and its hardware placement); a packet
/// that matched no rule gets none.
pub fn add_to_trace(
    rs: &Arc<RuleSet>,
    cx: &TraceContext,
    port: u16,
    steps: &[Step],
    report: &mut TraceReport,
) {
    let key = steps.iter().find_map(|s| match s {
        Step::Parsed { key } => Some(*key),
        _ => None,
    });
    let rule = steps.iter().find_map(|s| match s {
        Step::Matched { rule } => Some(*rule),
        _ => None,
    });
    let (Some(key), Some(rule)) = (key, rule) else { return };
    let Some(at) = report.steps.iter().position(|s| matches!(s, StepView::Matched { .. })) else {
        return;
    };
    let at = match report.steps.get(at + 1) {
        Some(StepView::Placement { .. }) => at + 2,
        _ => at + 1,
    };
    // A GRE sequence number is the packet's, not its flow's: the tier
    // leaves every such packet to the engine, whatever its flow's place.
    let sequenced =
        steps.iter().any(|s| matches!(s, Step::Decapsulated { outer, .. } if outer.seq.is_some()));
    let mut step = flow_step(rs, cx, port, &key, rule);
    if sequenced && matches!(&step, StepView::FlowRunsIn { place, .. } if place == "xdp_tier") {
        let p = fit(TierFit::Software(NotInTier::GreSequenceReceived), backend(rs, cx, Some(port)));
        step = StepView::FlowRunsIn { place: "userspace".into(), reason: p.reason, text: p.text };
    }
    report.steps.insert(at, step);
}

fn flow_step(
    rs: &Arc<RuleSet>,
    cx: &TraceContext,
    port: u16,
    key: &FlowKey,
    rule: u32,
) -> StepView {
    let id = rs.rules[rule as usize].id;
    let hw = cx.placement.iter().find(|p| p.rule == id).and_then(|p| p.hardware.as_ref());
    if let Some(f) = hw {
        let text = format!("hardware on {} (pref {}, handle {})", f.dev, f.pref, f.handle);
        return StepView::FlowRunsIn { place: "hardware".into(), reason: None, text };
    }
    let p = flow(&tier_fit::worker(Arc::clone(rs), cx), cx, port, key, rule);
    let place = if p.in_tier { "xdp_tier" } else { "userspace" };
    StepView::FlowRunsIn { place: place.into(), reason: p.reason, text: p.text }
}

fn fit(f: TierFit, backend: Backend) -> TierPlace {
    let text = f.text(backend);
    match f {
        TierFit::XdpTier => TierPlace { in_tier: true, reason: None, text },
        TierFit::Software(r) => TierPlace { in_tier: false, reason: Some(r.name().into()), text },
    }
}

/// The reasons that hold before the engine is asked: the tier is off, or
/// the ingress port is not an AF_XDP port.
fn off(rs: &RuleSet, port: Option<u16>) -> Option<TierPlace> {
    let place = |reason: &str, text: String| {
        Some(TierPlace { in_tier: false, reason: Some(reason.into()), text })
    };
    if rs.config.xdp_tier == TierSpec::Off {
        return place("tier_off", "AF_XDP: the XDP tier is off (xdp_tier = \"off\")".into());
    }
    let p = rs.config.ports.get(port? as usize)?;
    let backend = match p.backend {
        // `auto` runs on AF_XDP or tc, both of which the tier serves.
        Backend::AfXdp | Backend::Tc | Backend::Auto => return None,
        Backend::AfPacket => "AF_PACKET",
        Backend::Tap => "TAP",
    };
    place(
        "port_backend",
        format!("{backend} (io_uring): port {} has no XDP program to hold a tier", p.name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::compile::compile;
    use engine::model::Config;

    const CONF: &str = r#"
[[ports]]
name = "wl0"
kind = "workload"

[[ports]]
name = "tap0"
kind = "workload"
backend = "tap"

[[ports]]
name = "up0"
kind = "uplink"
mac = "02:00:00:00:00:10"

[[tunnels]]
name = "vx"
type = "vxlan"
uplink = "up0"
local = "192.0.2.1"
remote = "192.0.2.2"
vni = 42

[[rules]]
id = 1
match = { in_port = "wl0" }
actions = [{ encap = "vx" }]

[[rules]]
id = 2
match = { in_port = "tap0" }
actions = [{ encap = "vx" }]

[[rules]]
id = 3
priority = 200
match = { in_port = "wl0", ip_dst = "203.0.113.1" }
actions = [{ encap = "vx" }]
xdp_tier = "off"
"#;

    fn rules_of(top: &str, cx: &TraceContext) -> HashMap<u32, TierPlace> {
        let rs = Arc::new(compile(&Config::from_toml(&format!("{top}{CONF}")).unwrap()).unwrap());
        rules(&rs, cx)
    }

    #[test]
    fn configuration_port_and_engine_reasons() {
        // Live next hop of the tunnel known: rule 1 is the tier's.
        let remote = "192.0.2.2".parse().unwrap();
        let hops = [(remote, [2, 0, 0, 0, 0, 0x20])].into_iter().collect();
        let cx = TraceContext { next_hops: Arc::new(hops), ..TraceContext::default() };
        let p = rules_of("", &cx);
        assert!(p[&1].in_tier, "{:?}", p[&1]);
        assert_eq!(p[&2].reason.as_deref(), Some("port_backend"));
        assert_eq!(p[&3].reason.as_deref(), Some("rule_opt_out"));
        // Not resolved: the engine says so.
        let p = rules_of("", &TraceContext::default());
        assert_eq!(p[&1].reason.as_deref(), Some("no_next_hop"), "{:?}", p[&1]);
        // The tier off overrides everything.
        let p = rules_of("xdp_tier = \"off\"\n", &cx);
        assert!(p.values().all(|t| t.reason.as_deref() == Some("tier_off")), "{p:?}");
    }

    /// A live trace names the place of its packet's flow right after the
    /// rule it matched, in `rule list`'s words.
    #[test]
    fn a_trace_says_where_its_flow_runs() {
        let remote = "192.0.2.2".parse().unwrap();
        let hops = [(remote, [2, 0, 0, 0, 0, 0x20])].into_iter().collect();
        let cx = TraceContext { next_hops: Arc::new(hops), ..TraceContext::default() };
        let rs = Arc::new(compile(&Config::from_toml(CONF).unwrap()).unwrap());
        let traced_in = |cx: &TraceContext, port: u16, dst: &str| {
            let spec = format!("eth/ipv4(src=198.51.100.1,dst={dst})/udp(sport=1,dport=2)");
            let frame = engine::packet_spec::build(&spec).unwrap();
            let (steps, mut report) =
                engine::trace::trace_steps(Arc::clone(&rs), cx, port, &frame, 0);
            add_to_trace(&rs, cx, port, &steps, &mut report);
            let at = report.steps.iter().position(|s| matches!(s, StepView::Matched { .. }));
            report.steps.get(at.expect("a rule matched") + 1).cloned()
        };
        let traced = |port: u16, dst: &str| traced_in(&cx, port, dst);
        // Live: in the words of the backend the port was attached on.
        let live = |b: Backend| TraceContext {
            backends: [("wl0".to_string(), b)].into_iter().collect(),
            ..cx.clone()
        };
        let step = |place: &str, reason: Option<&str>, text: &str| {
            Some(StepView::FlowRunsIn {
                place: place.into(),
                reason: reason.map(Into::into),
                text: text.into(),
            })
        };
        assert_eq!(
            traced_in(&live(Backend::AfXdp), 0, "198.51.100.2"),
            step("xdp_tier", None, "XDP tier after the first packet")
        );
        assert_eq!(
            traced_in(&live(Backend::AfXdp), 0, "203.0.113.1"),
            step(
                "userspace",
                Some("rule_opt_out"),
                "AF_XDP: the rule opts out (xdp_tier = \"off\") (rule_opt_out)"
            )
        );
        assert_eq!(
            traced_in(&live(Backend::Tc), 0, "198.51.100.2"),
            step("xdp_tier", None, "tc tier after the first packet")
        );
        assert_eq!(
            traced_in(&live(Backend::Tc), 0, "203.0.113.1"),
            step(
                "userspace",
                Some("rule_opt_out"),
                "a packet socket on the punt device: the rule opts out (xdp_tier = \"off\") \
                 (rule_opt_out)"
            )
        );
        // Offline, `backend = "auto"` is not resolved yet.
        assert_eq!(
            traced(0, "198.51.100.2"),
            step("xdp_tier", None, "XDP or tc tier after the first packet")
        );
        let tap = traced(1, "198.51.100.2");
        assert!(
            matches!(&tap, Some(StepView::FlowRunsIn { reason: Some(r), .. }) if r == "port_backend"),
            "{tap:?}"
        );
        assert_eq!(
            tap.unwrap().to_string(),
            "after this packet the flow runs in: TAP (io_uring): port tap0 has no XDP program to hold a tier"
        );
    }

    /// A GRE-decapsulated flow runs in the tier, but a packet of it that
    /// carries a sequence number is left to the engine, and its trace says so.
    #[test]
    fn a_trace_of_a_sequenced_gre_packet_says_it_stays_in_userspace() {
        let conf = r#"
[[ports]]
name = "wl0"
kind = "workload"

[[ports]]
name = "up0"
kind = "uplink"
mac = "02:00:00:00:00:10"

[[tunnels]]
name = "g"
type = "gretap"
key = 7
uplink = "up0"
local = "192.0.2.1"
remote = "192.0.2.2"
next_hop_mac = "02:00:00:00:00:20"

[[rules]]
id = 1
match = { tunnel = "g" }
actions = [{ output = "wl0" }]
"#;
        let rs = Arc::new(compile(&Config::from_toml(conf).unwrap()).unwrap());
        let cx = TraceContext::default();
        let traced = |gre: &str| {
            let spec = format!(
                "eth/ipv4(src=192.0.2.2,dst=192.0.2.1)/gre({gre})/eth/ipv4/udp(sport=1,dport=2)"
            );
            let frame = engine::packet_spec::build(&spec).unwrap();
            let (steps, mut report) =
                engine::trace::trace_steps(Arc::clone(&rs), &cx, 1, &frame, 0);
            add_to_trace(&rs, &cx, 1, &steps, &mut report);
            report.steps.into_iter().find(|s| matches!(s, StepView::FlowRunsIn { .. }))
        };
        let Some(StepView::FlowRunsIn { place, reason, .. }) = traced("key=7") else {
            panic!("no place step")
        };
        assert_eq!((place.as_str(), reason), ("xdp_tier", None));
        let Some(StepView::FlowRunsIn { place, reason, text }) = traced("key=7,seq=3") else {
            panic!("no place step")
        };
        assert_eq!(place, "userspace");
        assert_eq!(reason.as_deref(), Some("gre_sequence_received"));
        assert!(text.contains("sequence number"), "{text}");
    }
}
