//! The `[cluster]` section of overlayd's configuration file: where the store
//! is, who this node is, and how it authenticates. It is a setting of the
//! daemon, not part of the desired state: it is never stored in state.json
//! nor changed through the API. Without the section overlayd runs exactly as
//! it does without cluster mode.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use engine::model::{Config, ConfigError};
use serde::{Deserialize, Serialize};

/// Longest node name: it becomes part of tunnel names (`cl.<vni>.<node>`,
/// at most 64 bytes).
pub const MAX_NODE_NAME: usize = 48;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// etcd client URLs, `https://192.0.2.11:2379` (or `http://` without TLS).
    pub endpoints: Vec<String>,
    /// Every key of this overlay lives under this prefix (docs/cluster.md).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// This node's name in the store: 1-48 of A-Z a-z 0-9 - _
    pub node: String,
    /// This node's tunnel endpoint addresses, preferred first.
    pub vteps: Vec<IpAddr>,
    /// The uplink port (of the local configuration) tunnels to peers use.
    pub uplink: String,
    /// Labels cluster-wide rules select nodes by.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Networks this node joins; empty: all of them.
    #[serde(default)]
    pub networks: Vec<String>,
    /// Lifetime of this node's registration when it stops renewing it.
    #[serde(default = "default_ttl")]
    pub lease_ttl_secs: u32,
    /// CA certificate (PEM) the members' certificates are checked against.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM); with etcd's client-cert-auth the
    /// certificate's CN is the etcd user.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The name the members' certificates carry, when it is not the host of
    /// the endpoint URLs.
    #[serde(default)]
    pub tls_domain: Option<String>,
    /// etcd user (password authentication), with `password_file`.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// How long the agent waits for more changes before applying a batch.
    #[serde(default = "default_settle")]
    pub settle_ms: u64,
}

fn default_prefix() -> String {
    "/overlayd".into()
}
fn default_ttl() -> u32 {
    10
}
fn default_settle() -> u64 {
    20
}

/// Why a `[cluster]` section was refused.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cluster.{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn bad(field: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError::Invalid { field, reason: reason.into() }
}

/// A node or network name: it ends up in keys and tunnel names.
pub fn check_name(name: &str, max: usize) -> Result<(), String> {
    if name.is_empty()
        || name.len() > max
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!("{name:?} is not a valid name (1-{max} of A-Z a-z 0-9 - _)"));
    }
    Ok(())
}

impl ClusterSettings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.endpoints.is_empty() {
            return Err(bad("endpoints", "give at least one etcd client URL"));
        }
        for e in &self.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(bad("endpoints", format!("{e:?} is not an http:// or https:// URL")));
            }
        }
        if !self.prefix.starts_with('/') || self.prefix.ends_with('/') || self.prefix.len() < 2 {
            return Err(bad("prefix", "a key prefix such as \"/overlayd\" (no trailing '/')"));
        }
        check_name(&self.node, MAX_NODE_NAME).map_err(|r| bad("node", r))?;
        if self.vteps.is_empty() {
            return Err(bad("vteps", "give this node's tunnel endpoint address"));
        }
        if self.vteps.iter().any(|a| a.is_unspecified() || a.is_multicast()) {
            return Err(bad("vteps", "a VTEP must be a unicast address"));
        }
        if self.lease_ttl_secs < 2 {
            return Err(bad("lease_ttl_secs", "at least 2 seconds"));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(bad("cert_file", "cert_file and key_file go together"));
        }
        let tls = self.endpoints.iter().any(|e| e.starts_with("https://"));
        if !tls && (self.ca_file.is_some() || self.cert_file.is_some()) {
            return Err(bad("endpoints", "TLS files are given: use https:// endpoints"));
        }
        if self.user.is_some() != self.password_file.is_some() {
            return Err(bad("user", "user and password_file go together"));
        }
        for n in &self.networks {
            check_name(n, 64).map_err(|r| bad("networks", r))?;
        }
        Ok(())
    }
}

/// Why overlayd's configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Cluster(#[from] SettingsError),
}

/// Reads overlayd's configuration file: the desired local state, and the
/// `[cluster]` section if there is one. A file without the section is read
/// exactly as before cluster mode existed.
pub fn read_file_text(text: &str) -> Result<(Config, Option<ClusterSettings>), FileError> {
    let mut table: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        // The configuration parser says where the syntax error is.
        Err(_) => {
            return Err(Config::from_toml(text).err().map(FileError::from).unwrap_or_else(|| {
                FileError::Config(ConfigError::Syntax("not a TOML document".into()))
            }))
        }
    };
    let Some(section) = table.remove("cluster") else {
        return Ok((Config::from_toml(text)?, None));
    };
    let settings: ClusterSettings =
        section.try_into().map_err(|e: toml::de::Error| bad("section", e.message().to_string()))?;
    settings.validate()?;
    let rest = toml::to_string(&table).map_err(|e| ConfigError::Syntax(e.to_string()))?;
    Ok((Config::from_toml(&rest)?, Some(settings)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECTION: &str = r#"
[[ports]]
name = "up0"
kind = "uplink"

[cluster]
endpoints = ["https://192.0.2.11:2379"]
node = "host-a"
vteps = ["192.0.2.1"]
uplink = "up0"
ca_file = "/etc/overlayd/ca.pem"
cert_file = "/etc/overlayd/node.pem"
key_file = "/etc/overlayd/node.key"
labels = { rack = "r1" }
"#;

    #[test]
    fn the_section_is_split_from_the_document() {
        let (c, s) = read_file_text(SECTION).unwrap();
        assert_eq!(c.ports.len(), 1);
        let s = s.unwrap();
        assert_eq!(s.prefix, "/overlayd");
        assert_eq!(s.lease_ttl_secs, 10);
        assert_eq!(s.labels["rack"], "r1");
    }

    #[test]
    fn without_the_section_nothing_changes() {
        let text = "[[ports]]\nname = \"wl0\"\nkind = \"workload\"\n";
        let (c, s) = read_file_text(text).unwrap();
        assert!(s.is_none());
        assert_eq!(c, Config::from_toml(text).unwrap());
        // Errors keep the configuration parser's words.
        let e = read_file_text("[[ports]]\nname = \"wl0\"\nbogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn bad_settings_name_the_field() {
        let cases = [
            ("node = \"host-a\"", "node = \"a/b\"", "cluster.node"),
            ("vteps = [\"192.0.2.1\"]", "vteps = []", "cluster.vteps"),
            ("key_file = \"/etc/overlayd/node.key\"", "", "cluster.cert_file"),
            ("https://", "ftp://", "cluster.endpoints"),
        ];
        for (from, to, field) in cases {
            let e = read_file_text(&SECTION.replace(from, to)).unwrap_err();
            assert!(e.to_string().starts_with(field), "{e}");
        }
    }
}
