//! Rules that are valid but cannot be what was meant: rules that can never
//! match (an EtherType and an address family that disagree), rules another
//! rule always wins over (shadowed), and rules with the same match as
//! another. `overlayd check` prints these as warnings with the rule ids.
//!
//! The order is the classifier's: a higher priority wins, and between
//! equal priorities the lower id.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::classifier::rank;
use crate::model::{Config, Match, Prefix, Rule};

const IPV4: u16 = 0x0800;
const IPV6: u16 = 0x86dd;

/// One warning about the rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "warning", rename_all = "snake_case")]
pub enum Warning {
    /// No packet can satisfy the rule's match.
    NeverMatches { rule: u32, why: String },
    /// Every packet the rule matches is taken first by `by`.
    Shadowed { rule: u32, by: u32 },
    /// Same match as `rule`, which wins (same priority, lower id; or higher
    /// priority): `duplicate` never matches.
    DuplicateMatch { rule: u32, duplicate: u32 },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::NeverMatches { rule, why } => write!(f, "rule {rule} can never match: {why}"),
            Warning::Shadowed { rule, by } => write!(
                f,
                "rule {rule} is shadowed by rule {by}: rule {by} matches every packet rule {rule} matches and is preferred"
            ),
            Warning::DuplicateMatch { rule, duplicate } => write!(
                f,
                "rule {duplicate} has the same match as rule {rule}, which is preferred: rule {duplicate} never matches"
            ),
        }
    }
}

/// Every warning about `c`'s rules, ordered by rule.
pub fn lint(c: &Config) -> Vec<Warning> {
    let mut out = Vec::new();
    let mut ranked: Vec<&Rule> = c.rules.iter().collect();
    // Best first: the order the classifier prefers them in.
    ranked.sort_by_key(|r| std::cmp::Reverse(rank(r.priority, r.id)));
    for (i, r) in ranked.iter().enumerate() {
        if let Some(why) = never_matches(&r.matches) {
            out.push(Warning::NeverMatches { rule: r.id, why });
            continue;
        }
        let winner = ranked[..i]
            .iter()
            .find(|w| never_matches(&w.matches).is_none() && covers(&w.matches, &r.matches));
        if let Some(w) = winner {
            out.push(if w.matches == r.matches {
                Warning::DuplicateMatch { rule: w.id, duplicate: r.id }
            } else {
                Warning::Shadowed { rule: r.id, by: w.id }
            });
        }
    }
    out
}

/// Why no packet can satisfy `m`, if none can.
pub fn never_matches(m: &Match) -> Option<String> {
    let fam = |p: &Option<Prefix>| p.map(|p| p.addr.is_ipv4());
    let (src, dst) = (fam(&m.ip_src), fam(&m.ip_dst));
    if let (Some(s), Some(d)) = (src, dst) {
        if s != d {
            return Some("ip_src and ip_dst are of different address families".into());
        }
    }
    let family = src.or(dst);
    let ip_fields = m.ip_src.is_some()
        || m.ip_dst.is_some()
        || m.ip_proto.is_some()
        || m.l4_src.is_some()
        || m.l4_dst.is_some();
    match (m.ethertype, family) {
        (Some(IPV6), Some(true)) => {
            return Some("ethertype 0x86dd (IPv6) with an IPv4 prefix".into());
        }
        (Some(IPV4), Some(false)) => {
            return Some("ethertype 0x0800 (IPv4) with an IPv6 prefix".into());
        }
        (Some(e), _) if e != IPV4 && e != IPV6 && ip_fields => {
            return Some(format!("ethertype {e:#06x} is not IP, but IP fields are matched"));
        }
        _ => {}
    }
    None
}

/// Whether every packet `b` matches is also matched by `a`: each field `a`
/// constrains, `b` constrains to the same value (or a prefix inside `a`'s).
fn covers(a: &Match, b: &Match) -> bool {
    fn eq<T: PartialEq>(a: &Option<T>, b: &Option<T>) -> bool {
        a.is_none() || a == b
    }
    fn within(a: &Option<Prefix>, b: &Option<Prefix>) -> bool {
        match (a, b) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => {
                a.addr.is_ipv4() == b.addr.is_ipv4()
                    && a.len <= b.len
                    && masked(a.addr, a.len) == masked(b.addr, a.len)
            }
        }
    }
    eq(&a.in_port, &b.in_port)
        && eq(&a.tunnel, &b.tunnel)
        && eq(&a.vni, &b.vni)
        && eq(&a.eth_src, &b.eth_src)
        && eq(&a.eth_dst, &b.eth_dst)
        && eq(&a.vlan, &b.vlan)
        && (a.ethertype.is_none() || a.ethertype == b.ethertype || implied(b) == a.ethertype)
        && within(&a.ip_src, &b.ip_src)
        && within(&a.ip_dst, &b.ip_dst)
        && eq(&a.ip_proto, &b.ip_proto)
        && eq(&a.l4_src, &b.l4_src)
        && eq(&a.l4_dst, &b.l4_dst)
}

/// The EtherType a match's prefixes imply.
fn implied(m: &Match) -> Option<u16> {
    m.ip_src.or(m.ip_dst).map(|p| if p.addr.is_ipv4() { IPV4 } else { IPV6 })
}

/// `addr` with all but its first `len` bits cleared, as an integer.
fn masked(addr: IpAddr, len: u8) -> u128 {
    let (bits, width) = match addr {
        IpAddr::V4(a) => (u32::from(a) as u128, 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    };
    let len = u32::from(len).min(width);
    if len == 0 {
        return 0;
    }
    let keep = (u128::MAX << (128 - len)) >> (128 - width);
    bits & keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rules: &str) -> Config {
        let doc = format!(
            "[[ports]]\nname = \"wl0\"\nkind = \"workload\"\n[[ports]]\nname = \"wl1\"\nkind = \"workload\"\n{rules}"
        );
        Config::from_toml(&doc).unwrap()
    }

    #[test]
    fn a_family_the_ethertype_excludes_never_matches() {
        let c = config(
            "[[rules]]\nid = 1\nmatch = { ethertype = 0x86dd, ip_dst = \"198.51.100.0/24\" }\nactions = [\"drop\"]\n\
             [[rules]]\nid = 2\nmatch = { ethertype = 0x0806, ip_proto = 6 }\nactions = [\"drop\"]\n\
             [[rules]]\nid = 3\nmatch = { ethertype = 0x86dd, ip_dst = \"2001:db8::/32\" }\nactions = [\"drop\"]\n",
        );
        let w = lint(&c);
        assert!(
            w.contains(&Warning::NeverMatches {
                rule: 1,
                why: "ethertype 0x86dd (IPv6) with an IPv4 prefix".into()
            }),
            "{w:?}"
        );
        assert!(w.iter().any(|w| matches!(w, Warning::NeverMatches { rule: 2, .. })), "{w:?}");
        assert_eq!(w.len(), 2, "rule 3 is fine: {w:?}");
    }

    #[test]
    fn same_match_under_another_id_is_a_duplicate() {
        let c = config(
            "[[rules]]\nid = 5\npriority = 10\nmatch = { in_port = \"wl0\" }\nactions = [{ output = \"wl1\" }]\n\
             [[rules]]\nid = 9\npriority = 10\nmatch = { in_port = \"wl0\" }\nactions = [\"drop\"]\n",
        );
        assert_eq!(lint(&c), vec![Warning::DuplicateMatch { rule: 5, duplicate: 9 }]);
    }

    #[test]
    fn a_broader_preferred_rule_shadows_a_narrower_one() {
        let c = config(
            "[[rules]]\nid = 1\npriority = 100\nmatch = { in_port = \"wl0\", ip_dst = \"198.51.100.0/24\" }\nactions = [\"drop\"]\n\
             [[rules]]\nid = 2\npriority = 50\nmatch = { in_port = \"wl0\", ip_dst = \"198.51.100.200\", ip_proto = 6 }\nactions = [{ output = \"wl1\" }]\n\
             [[rules]]\nid = 3\npriority = 50\nmatch = { in_port = \"wl0\", ip_dst = \"203.0.113.0/24\" }\nactions = [{ output = \"wl1\" }]\n\
             [[rules]]\nid = 4\npriority = 200\nmatch = { in_port = \"wl0\", ip_dst = \"198.51.100.0/25\" }\nactions = [{ output = \"wl1\" }]\n",
        );
        // 4 is narrower than 1 but preferred: neither shadows the other.
        assert_eq!(lint(&c), vec![Warning::Shadowed { rule: 2, by: 1 }]);
    }

    #[test]
    fn prefixes_nest_by_their_leading_bits() {
        let p = |s: &str| Some(s.parse::<Prefix>().unwrap());
        let m = |dst| Match { ip_dst: dst, ..Match::default() };
        assert!(covers(&m(p("198.51.100.0/24")), &m(p("198.51.100.128/25"))));
        assert!(!covers(&m(p("198.51.100.128/25")), &m(p("198.51.100.0/24"))));
        assert!(covers(&m(p("0.0.0.0/0")), &m(p("203.0.113.1"))));
        assert!(covers(&m(p("2001:db8::/32")), &m(p("2001:db8:1::/48"))));
        assert!(!covers(&m(p("2001:db8::/32")), &m(p("2001:db9::/32"))));
        assert!(!covers(&m(p("0.0.0.0/0")), &m(p("2001:db8::1"))));
    }
}
