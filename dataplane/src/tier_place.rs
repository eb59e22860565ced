//! Where a rule's flows, or one flow, run after their first packet, as the
//! API reports it (`rule list`, `why`): the configuration and the port's
//! backend first, then the engine's own judgement (`engine::tier_fit`).
//! Hardware placement (SR-IOV) is reported beside it, by the offloader.

use std::collections::HashMap;
use std::sync::Arc;

use engine::compile::RuleSet;
use engine::flow_key::FlowKey;
use engine::model::{Backend, TierSpec};
use engine::pipeline::Worker;
use engine::tier_fit::{self, TierFit};
use engine::trace::TraceContext;

use crate::api_types::TierPlace;

/// Each rule's place by id.
pub fn rules(rs: &Arc<RuleSet>, cx: &TraceContext) -> HashMap<u32, TierPlace> {
    let w = tier_fit::worker(Arc::clone(rs), cx);
    (0..rs.rules.len())
        .map(|i| {
            let port = rs.config.rules[i].matches.in_port.as_deref().and_then(|p| rs.port_index(p));
            let place = off(rs, port).unwrap_or_else(|| fit(tier_fit::rule(&w, i)));
            (rs.rules[i].id, place)
        })
        .collect()
}

/// The place of the flow of `key` arriving on `port`, which matched rule
/// `rule` (index), under `w`'s rule set.
pub fn flow(w: &Worker, port: u16, key: &FlowKey, rule: u32) -> TierPlace {
    off(w.rules(), Some(port)).unwrap_or_else(|| fit(tier_fit::flow(w, key, rule)))
}

fn fit(f: TierFit) -> TierPlace {
    match f {
        TierFit::XdpTier => TierPlace { in_tier: true, reason: None, text: f.text() },
        TierFit::Software(r) => {
            TierPlace { in_tier: false, reason: Some(r.name().into()), text: f.text() }
        }
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
        Backend::AfXdp | Backend::Tc => return None,
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
}
