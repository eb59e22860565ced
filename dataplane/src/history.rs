//! What the counters did lately, for the control plane: when each tunnel
//! last carried a packet each way, and what moved over the last seconds.
//!
//! The workers keep totals only (a timestamp per packet would cost the fast
//! path a store, and each worker has its own clock). The daemon samples the
//! totals every second (and whenever someone reads them) and notes when a
//! tunnel's count went up: that is its last packet, to within a sample.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use engine::compile::RuleSet;
use engine::counters::Snapshot;

/// How far back "recently" reaches.
pub const RECENT: Duration = Duration::from_secs(10);

/// How often a sample is kept for `recent` (liveness follows every observation).
const KEEP_EVERY: Duration = Duration::from_secs(5);

/// When a tunnel's counters last went up, each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LastSeen {
    pub rx: Option<Instant>,
    pub tx: Option<Instant>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Tunnel {
    encap: u64,
    decap: u64,
    seen: LastSeen,
}

struct Sample {
    at: Instant,
    generation: u64,
    counters: Snapshot,
}

/// The counters moved over a recent window of `secs` seconds.
#[derive(Clone, Debug)]
pub struct Recent {
    pub secs: u64,
    pub moved: Snapshot,
}

#[derive(Default)]
pub struct History {
    samples: VecDeque<Sample>,
    tunnels: HashMap<String, Tunnel>,
    /// Each rule's packets at the last sample, and when they last went up.
    rules: HashMap<u32, (u64, Option<Instant>)>,
}

impl History {
    /// Takes note of the totals `c` (numbered by `rs`) at `now`.
    pub fn observe(&mut self, now: Instant, rs: &RuleSet, c: &Snapshot) {
        for (t, (encap, decap)) in rs.tunnels.iter().zip(&c.tunnels) {
            let e = self.tunnels.entry(t.name.clone()).or_default();
            if encap.packets > e.encap {
                e.seen.tx = Some(now);
            }
            if decap.packets > e.decap {
                e.seen.rx = Some(now);
            }
            (e.encap, e.decap) = (encap.packets, decap.packets);
        }
        self.tunnels.retain(|name, _| rs.tunnel_index(name).is_some());
        // Rebuilt each time: rules removed are forgotten, in one pass.
        let mut rules = HashMap::with_capacity(rs.rules.len());
        for (r, f) in rs.rules.iter().zip(&c.rules) {
            let (packets, hit) = self.rules.get(&r.id).copied().unwrap_or_default();
            rules.insert(r.id, (f.packets, if f.packets > packets { Some(now) } else { hit }));
        }
        self.rules = rules;

        // A new generation gets its first sample at once: the baseline of
        // what moves under it.
        let due = self.samples.back().is_none_or(|s| {
            now.duration_since(s.at) >= KEEP_EVERY || s.generation != rs.generation
        });
        if due {
            self.samples.push_back(Sample {
                at: now,
                generation: rs.generation,
                counters: c.clone(),
            });
        }
        // Keep the newest sample that is at least RECENT old, and all after it.
        while self.samples.get(1).is_some_and(|s| now.duration_since(s.at) >= RECENT) {
            self.samples.pop_front();
        }
    }

    /// When tunnel `name` last carried a packet each way (as observed).
    pub fn last_seen(&self, name: &str) -> LastSeen {
        self.tunnels.get(name).map(|t| t.seen).unwrap_or_default()
    }

    /// When the rule with this id last matched a packet (as observed).
    pub fn rule_last_hit(&self, id: u32) -> Option<Instant> {
        self.rules.get(&id).and_then(|r| r.1)
    }

    /// What moved between the oldest kept sample of `rs`'s generation and
    /// `now`'s totals `c`; `None` when there is no such sample yet (just
    /// started, or the rules changed a moment ago: counters of another
    /// generation are numbered differently).
    pub fn recent(&self, now: Instant, rs: &RuleSet, c: &Snapshot) -> Option<Recent> {
        let base = self.samples.iter().find(|s| s.generation == rs.generation)?;
        let window = now.duration_since(base.at);
        // Whole seconds, rounded up: what moved since is counted.
        let secs = window.as_secs() + (window.subsec_nanos() > 0) as u64;
        (!window.is_zero()).then(|| Recent { secs, moved: c.since(&base.counters) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::counters::FlowSnapshot;

    fn rules(generation: u64) -> RuleSet {
        let doc = format!(
            "generation = {generation}\n[[ports]]\nname = \"up0\"\nkind = \"uplink\"\n\
             [[tunnels]]\nname = \"t1\"\ntype = \"vxlan\"\nuplink = \"up0\"\nlocal = \"192.0.2.1\"\nremote = \"192.0.2.2\"\nvni = 42\n"
        );
        engine::compile::compile(&engine::model::Config::from_toml(&doc).unwrap()).unwrap()
    }

    fn totals(encap: u64, decap: u64, dropped: u64) -> Snapshot {
        let f = |packets| FlowSnapshot { packets, bytes: packets * 100 };
        Snapshot {
            tunnels: vec![(f(encap), f(decap))],
            drops: if dropped > 0 { vec![("no_neighbour", dropped)] } else { vec![] },
            ..Snapshot::default()
        }
    }

    #[test]
    fn a_tunnel_is_seen_when_its_counters_go_up() {
        let rs = rules(1);
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut h = History::default();
        h.observe(at(0), &rs, &totals(0, 0, 0));
        assert_eq!(h.last_seen("t1"), LastSeen::default(), "nothing carried yet");
        h.observe(at(1), &rs, &totals(3, 0, 0));
        assert_eq!(h.last_seen("t1"), LastSeen { rx: None, tx: Some(at(1)) });
        h.observe(at(2), &rs, &totals(3, 5, 0));
        h.observe(at(3), &rs, &totals(3, 5, 0));
        assert_eq!(h.last_seen("t1"), LastSeen { rx: Some(at(2)), tx: Some(at(1)) });
        assert_eq!(h.last_seen("t9"), LastSeen::default());
    }

    #[test]
    fn a_rule_is_hit_when_its_packets_go_up() {
        let doc = "[[ports]]\nname = \"wl0\"\nkind = \"workload\"\n[[rules]]\nid = 7\nactions = [\"drop\"]\n";
        let rs = engine::compile::compile(&engine::model::Config::from_toml(doc).unwrap()).unwrap();
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let hits = |packets| Snapshot {
            rules: vec![FlowSnapshot { packets, bytes: packets * 60 }],
            ..Snapshot::default()
        };
        let mut h = History::default();
        h.observe(at(0), &rs, &hits(0));
        assert_eq!(h.rule_last_hit(7), None, "not hit yet");
        h.observe(at(1), &rs, &hits(2));
        h.observe(at(2), &rs, &hits(2));
        assert_eq!(h.rule_last_hit(7), Some(at(1)));
        assert_eq!(h.rule_last_hit(8), None);
    }

    #[test]
    fn recent_covers_about_the_last_ten_seconds_of_one_generation() {
        let rs = rules(1);
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut h = History::default();
        assert!(h.recent(at(0), &rs, &totals(0, 0, 0)).is_none());
        for s in 0..=30 {
            h.observe(at(s), &rs, &totals(s, 0, s * 2));
        }
        let r = h.recent(at(30), &rs, &totals(30, 0, 60)).unwrap();
        assert!((10..15).contains(&r.secs), "{}", r.secs);
        assert_eq!(r.moved.tunnels[0].0.packets, r.secs);
        assert_eq!(r.moved.drop_count(encap::DropReason::NoNeighbour), r.secs * 2);
        assert!(h.samples.len() <= 4, "bounded: {}", h.samples.len());
        // A new generation has no baseline of its own until it is observed,
        // and one from then on.
        let g2 = rules(2);
        assert!(h.recent(at(30), &g2, &totals(30, 0, 60)).is_none());
        h.observe(at(31), &g2, &totals(31, 0, 62));
        let r = h.recent(at(33), &g2, &totals(33, 0, 70)).unwrap();
        assert_eq!((r.secs, r.moved.tunnels[0].0.packets), (2, 2));
    }
}
