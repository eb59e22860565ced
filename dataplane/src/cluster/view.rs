//! This node's copy of the store's contents under the layout root: built by a
//! full list, kept current by watch events, and read by `derive`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::layout::{ClusterRule, Endpoint, Key, Layout, Network, Node};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct View {
    pub networks: BTreeMap<String, Network>,
    pub nodes: BTreeMap<String, Node>,
    /// By (network, MAC bytes).
    pub endpoints: BTreeMap<(String, [u8; 6]), Endpoint>,
    pub rules: BTreeMap<u32, ClusterRule>,
    /// Records that do not parse, by key: reported, not used.
    pub invalid: BTreeMap<String, String>,
}

/// A record the view could not use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct InvalidRecord {
    pub key: String,
    pub reason: String,
}

impl View {
    /// A key was written.
    pub fn put(&mut self, layout: &Layout, key: &[u8], value: &[u8]) {
        let name = String::from_utf8_lossy(key).into_owned();
        self.invalid.remove(&name);
        let k = match layout.parse(key) {
            Ok(k) => k,
            Err(reason) => {
                self.invalid.insert(name, reason);
                return;
            }
        };
        // A record replaced by one that does not parse is gone: the old
        // value is no longer what the store says.
        self.remove(&k);
        let r = match &k {
            Key::Network(n) => serde_json::from_slice(value).map(|v| {
                self.networks.insert(n.clone(), v);
            }),
            Key::Node(n) => serde_json::from_slice(value).map(|v| {
                self.nodes.insert(n.clone(), v);
            }),
            Key::Endpoint { network, mac } => serde_json::from_slice(value).map(|v| {
                self.endpoints.insert((network.clone(), mac.0), v);
            }),
            Key::Rule(id) => serde_json::from_slice::<ClusterRule>(value).map(|v| {
                self.rules.insert(*id, v);
            }),
        };
        if let Err(e) = r {
            self.invalid.insert(name, e.to_string());
        }
    }

    /// A key was deleted (or its lease expired).
    pub fn delete(&mut self, layout: &Layout, key: &[u8]) {
        self.invalid.remove(&String::from_utf8_lossy(key).into_owned());
        if let Ok(k) = layout.parse(key) {
            self.remove(&k);
        }
    }

    fn remove(&mut self, k: &Key) {
        match k {
            Key::Network(n) => {
                self.networks.remove(n);
            }
            Key::Node(n) => {
                self.nodes.remove(n);
            }
            Key::Endpoint { network, mac } => {
                self.endpoints.remove(&(network.clone(), mac.0));
            }
            Key::Rule(id) => {
                self.rules.remove(id);
            }
        }
    }

    pub fn invalid_records(&self) -> Vec<InvalidRecord> {
        self.invalid
            .iter()
            .map(|(k, r)| InvalidRecord { key: k.clone(), reason: r.clone() })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puts_and_deletes_follow_the_store() {
        let l = Layout::new("/o");
        let mut v = View::default();
        v.put(&l, b"/o/v1/networks/blue", br#"{"vni":42}"#);
        v.put(&l, b"/o/v1/nodes/a", br#"{"vteps":["192.0.2.1"]}"#);
        v.put(&l, b"/o/v1/endpoints/blue/02:00:00:00:00:01", br#"{"node":"a"}"#);
        assert_eq!((v.networks.len(), v.nodes.len(), v.endpoints.len()), (1, 1, 1));
        v.put(&l, b"/o/v1/networks/blue", br#"{"vni":"x"}"#);
        assert!(v.networks.is_empty(), "a record replaced by garbage is gone");
        assert_eq!(v.invalid_records().len(), 1);
        v.delete(&l, b"/o/v1/networks/blue");
        assert!(v.invalid.is_empty());
        v.delete(&l, b"/o/v1/nodes/a");
        assert!(v.nodes.is_empty());
        v.put(&l, b"/o/v1/whatever", b"1");
        assert_eq!(v.invalid_records()[0].key, "/o/v1/whatever");
    }
}
