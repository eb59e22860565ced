//! The key layout under the cluster prefix, version 1 (docs/cluster.md):
//!
//! ```text
//! <prefix>/v1/networks/<name>          {"vni":42,"encap":"vxlan","udp_port":4789,"mtu":1500}
//! <prefix>/v1/nodes/<node>             {"vteps":["192.0.2.1"],"labels":{},"networks":[]}   (under the node's lease)
//! <prefix>/v1/endpoints/<network>/<mac> {"node":"host-a","ip":"198.51.100.1"}
//! <prefix>/v1/rules/<id>               {"selector":{"rack":"r1"},"rule":{...}}
//! ```
//!
//! Values are JSON. A later layout lives under `v2/` beside this one, so
//! nodes of both versions can share a store during an upgrade. A record that
//! does not parse is kept aside and reported, never guessed at.

use std::collections::BTreeMap;
use std::net::IpAddr;

use engine::model::{Mac, Rule};
use serde::{Deserialize, Serialize};

/// The layout version this build reads and writes.
pub const LAYOUT: &str = "v1";

/// Rule ids from here up belong to the cluster: a cluster-wide rule keeps its
/// id from the store, and the local configuration's rules stay below.
pub const CLUSTER_RULE_BASE: u32 = 0x8000_0000;

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Encap {
    #[default]
    Vxlan,
    /// Ethernet over GRE; the network's `vni` is the GRE key.
    Gretap,
}

/// A network: one VNI of the overlay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub vni: u32,
    #[serde(default)]
    pub encap: Encap,
    #[serde(default = "vxlan_port")]
    pub udp_port: u16,
    /// The underlay MTU of the network's tunnels.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
}

fn vxlan_port() -> u16 {
    4789
}
fn default_mtu() -> u16 {
    1500
}

/// A node's registration; it lives as long as the node's lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub vteps: Vec<IpAddr>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Networks the node joins; empty: all.
    #[serde(default)]
    pub networks: Vec<String>,
}

impl Node {
    pub fn joins(&self, network: &str) -> bool {
        self.networks.is_empty() || self.networks.iter().any(|n| n == network)
    }
}

/// A workload's address in a network, owned by the node it runs on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
}

/// A rule for every node, or for the nodes whose labels include `selector`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterRule {
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    pub rule: Rule,
}

impl ClusterRule {
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// What a key under the prefix names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    Network(String),
    Node(String),
    Endpoint { network: String, mac: Mac },
    Rule(u32),
}

/// The keys of one prefix.
#[derive(Clone, Debug)]
pub struct Layout {
    /// `<prefix>/v1/`
    root: String,
}

impl Layout {
    pub fn new(prefix: &str) -> Layout {
        Layout { root: format!("{prefix}/{LAYOUT}/") }
    }

    /// Everything this layout version holds (watched and listed as one range).
    pub fn root(&self) -> &str {
        &self.root
    }

    pub fn key(&self, k: &Key) -> String {
        match k {
            Key::Network(n) => format!("{}networks/{n}", self.root),
            Key::Node(n) => format!("{}nodes/{n}", self.root),
            Key::Endpoint { network, mac } => format!("{}endpoints/{network}/{mac}", self.root),
            Key::Rule(id) => format!("{}rules/{id}", self.root),
        }
    }

    /// What `key` names; `Err` with the reason for a key this version does
    /// not know.
    pub fn parse(&self, key: &[u8]) -> Result<Key, String> {
        let k = std::str::from_utf8(key).map_err(|_| "key is not UTF-8".to_string())?;
        let rest =
            k.strip_prefix(&self.root).ok_or_else(|| format!("{k}: outside {}", self.root))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let name = |s: &str| -> Result<String, String> {
            super::settings::check_name(s, 64)?;
            Ok(s.to_string())
        };
        match parts.as_slice() {
            ["networks", n] => Ok(Key::Network(name(n)?)),
            ["nodes", n] => Ok(Key::Node(name(n)?)),
            ["endpoints", n, mac] => Ok(Key::Endpoint { network: name(n)?, mac: mac.parse()? }),
            ["rules", id] => {
                Ok(Key::Rule(id.parse().map_err(|_| format!("{id:?} is not a rule id"))?))
            }
            _ => Err(format!("{rest}: not a key of layout {LAYOUT}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_roundtrip() {
        let l = Layout::new("/overlayd");
        let keys = [
            Key::Network("blue".into()),
            Key::Node("host-a".into()),
            Key::Endpoint { network: "blue".into(), mac: "02:00:00:00:00:01".parse().unwrap() },
            Key::Rule(CLUSTER_RULE_BASE + 1),
        ];
        for k in keys {
            let s = l.key(&k);
            assert!(s.starts_with("/overlayd/v1/"), "{s}");
            assert_eq!(l.parse(s.as_bytes()).unwrap(), k);
        }
        assert!(l.parse(b"/overlayd/v1/nodes/a/b").is_err());
        assert!(l.parse(b"/overlayd/v2/nodes/a").is_err());
        assert!(l.parse(b"/overlayd/v1/endpoints/blue/zz").is_err());
    }

    #[test]
    fn records_read_with_defaults() {
        let n: Network = serde_json::from_str(r#"{"vni":42}"#).unwrap();
        assert_eq!((n.encap, n.udp_port, n.mtu), (Encap::Vxlan, 4789, 1500));
        let r: ClusterRule = serde_json::from_str(
            r#"{"selector":{"rack":"r1"},"rule":{"id":2147483649,"actions":["drop"]}}"#,
        )
        .unwrap();
        let mut labels = BTreeMap::new();
        assert!(!r.selects(&labels));
        labels.insert("rack".to_string(), "r1".to_string());
        assert!(r.selects(&labels));
    }
}
