//! Geneve options in the configuration: the options a tunnel sends, and the
//! option a rule matches on. Written in TOML as
//! `{ class = 0x0102, type = 0x80, data = "0000002a" }` (data in hex, a
//! multiple of 4 bytes, at most 124).

use serde::{Deserialize, Serialize};

use encap::tunnel::MAX_GENEVE_OPTIONS;
use encap::wire::geneve;
use encap::{GeneveOptionMatch, GeneveOptions};

use crate::config_error::ConfigError;

/// One Geneve option TLV.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GeneveOption {
    pub class: u16,
    /// The type byte; its high bit (0x80) marks the option critical.
    #[serde(rename = "type")]
    pub kind: u8,
    #[serde(default)]
    pub data: HexBytes,
}

/// Bytes written as a hex string (`"0a0b0c0d"`, an optional `0x` prefix).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct HexBytes(pub Vec<u8>);

impl std::str::FromStr for HexBytes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let h = s.strip_prefix("0x").unwrap_or(s);
        if !h.len().is_multiple_of(2) || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("{s:?} is not hex bytes (want an even number of hex digits)"));
        }
        Ok(HexBytes(
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect(),
        ))
    }
}

impl std::fmt::Display for HexBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl Serialize for HexBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for GeneveOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "class {:#06x} type {:#04x} data {}", self.class, self.kind, self.data)
    }
}

impl GeneveOption {
    /// Checks the option's data length; `path` names it in the error.
    pub fn check(&self, path: &str) -> Result<(), ConfigError> {
        let n = self.data.0.len();
        if !n.is_multiple_of(4) || n > geneve::MAX_OPTION_DATA_LEN {
            return Err(ConfigError::Invalid {
                path: format!("{path}.data"),
                reason: format!(
                    "{n} bytes: option data must be a multiple of 4 bytes, at most {}",
                    geneve::MAX_OPTION_DATA_LEN
                ),
            });
        }
        Ok(())
    }

    pub fn to_match(&self) -> GeneveOptionMatch {
        GeneveOptionMatch { class: self.class, kind: self.kind, data: self.data.0.clone() }
    }
}

/// Checks the options a tunnel sends: each one, and that together they fit
/// the header template.
pub fn check_tunnel_options(path: &str, opts: &[GeneveOption]) -> Result<(), ConfigError> {
    for (i, o) in opts.iter().enumerate() {
        o.check(&format!("{path}[{i}]"))?;
    }
    let total: usize = opts.iter().map(|o| geneve::OPTION_HEADER_LEN + o.data.0.len()).sum();
    if total > MAX_GENEVE_OPTIONS {
        return Err(ConfigError::Invalid {
            path: path.into(),
            reason: format!(
                "the options take {total} bytes on the wire, more than the {MAX_GENEVE_OPTIONS} a tunnel may send"
            ),
        });
    }
    Ok(())
}

/// Encodes a tunnel's options (checked by [`check_tunnel_options`]).
pub fn encode(opts: &[GeneveOption]) -> GeneveOptions {
    let mut out = GeneveOptions::default();
    for o in opts {
        out.push(o.class, o.kind, &o.data.0).expect("options were validated");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Config;

    const PORTS: &str = "[[ports]]\nname = \"wl\"\nkind = \"workload\"\n[[ports]]\nname = \"up\"\nkind = \"uplink\"\n";

    fn tunnel(extra: &str) -> String {
        format!(
            "{PORTS}[[tunnels]]\nname = \"g\"\ntype = \"geneve\"\nuplink = \"up\"\nlocal = \"192.0.2.1\"\nremote = \"192.0.2.2\"\n{extra}\n"
        )
    }

    fn refused(doc: &str) -> (String, String) {
        match Config::from_toml(doc) {
            Err(ConfigError::Invalid { path, reason }) => (path, reason),
            other => panic!("expected a refusal, got {other:?}\n{doc}"),
        }
    }

    #[test]
    fn geneve_tunnels_in_the_configuration() {
        let c = Config::from_toml(&tunnel("vni = 7")).unwrap();
        assert_eq!(c.tunnels[0].udp_port(), geneve::IANA_PORT);
        let c = Config::from_toml(&tunnel("vni = 7\ndst_port = 7000")).unwrap();
        assert_eq!(c.tunnels[0].udp_port(), 7000);
        // Written back, it reads the same.
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
        let with =
            tunnel("vni = 7\noptions = [{ class = 0x0102, type = 0x80, data = \"0000000b\" }]");
        let c = Config::from_toml(&with).unwrap();
        assert_eq!(c.tunnels[0].options[0].data.0, vec![0, 0, 0, 11]);
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);

        assert_eq!(refused(&tunnel("")).0, "tunnels[0].vni");
        assert_eq!(refused(&tunnel("vni = 16777216")).0, "tunnels[0].vni");
        assert_eq!(refused(&tunnel("vni = 1\nudp_port = 0")).0, "tunnels[0].udp_port");
        let bad = tunnel("vni = 1\noptions = [{ class = 1, type = 2, data = \"00\" }]");
        assert_eq!(refused(&bad).0, "tunnels[0].options[0].data");
        let vx = format!("{PORTS}[[tunnels]]\nname = \"v\"\ntype = \"vxlan\"\nuplink = \"up\"\nlocal = \"192.0.2.1\"\nremote = \"192.0.2.3\"\nvni = 1\noptions = [{{ class = 1, type = 2 }}]\n");
        assert_eq!(refused(&vx).0, "tunnels[0].options");
        // One UDP port carries one encapsulation.
        let both = format!(
            "{}[[tunnels]]\nname = \"v\"\ntype = \"vxlan\"\nuplink = \"up\"\nlocal = \"192.0.2.1\"\nremote = \"192.0.2.3\"\nvni = 1\nudp_port = 6081\n",
            tunnel("vni = 1")
        );
        let (path, reason) = refused(&both);
        assert_eq!(path, "tunnels[1].udp_port", "{reason}");
    }

    #[test]
    fn option_matches_become_flow_key_bits() {
        let mut doc = tunnel("vni = 7");
        for (id, data) in [(1, "0000002a"), (2, "0000002b"), (3, "0000002a")] {
            doc.push_str(&format!(
                "[[rules]]\nid = {id}\nmatch = {{ tunnel = \"g\", geneve_option = {{ class = 0x0102, type = 0x80, data = \"{data}\" }} }}\nactions = [{{ output = \"wl\" }}]\n"
            ));
        }
        let rs = crate::compile::compile(&Config::from_toml(&doc).unwrap()).unwrap();
        // Two distinct options: two entries, the repeated one shares bit 0.
        assert_eq!(rs.decap.geneve_matches.len(), 2);
        assert_eq!(rs.decap.geneve_ports, vec![geneve::IANA_PORT]);
        // A packet from the tunnel carrying option match 0 (value 42) takes
        // rule 1; match 1 (value 43), rule 2; none of them, no rule.
        let frame = [2u8, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x88, 0xb5];
        let (mut key, _) = crate::flow_key::extract(&frame, 1, 1, 7);
        let f = crate::flow_key::field::GENEVE_OPTIONS;
        for (bits, want) in [(1, Some(1)), (2, Some(2)), (3, Some(1)), (0, None)] {
            key.set(f, bits);
            let got = rs.classifier.lookup(&key).rule.map(|i| rs.rules[i as usize].id);
            assert_eq!(got, want, "option bits {bits:#b}");
        }
        // More than 24 distinct option matches are refused.
        let mut doc = tunnel("vni = 7");
        for id in 0..25 {
            doc.push_str(&format!(
                "[[rules]]\nid = {id}\nmatch = {{ geneve_option = {{ class = 1, type = 1, data = \"{id:08x}\" }} }}\nactions = [\"drop\"]\n"
            ));
        }
        assert_eq!(refused(&doc).0, "rules[24].match.geneve_option");
    }

    #[test]
    fn hex_bytes_roundtrip_and_refusals() {
        let h: HexBytes = "0x0A0b0c0d".parse().unwrap();
        assert_eq!(h.0, vec![10, 11, 12, 13]);
        assert_eq!(h.to_string(), "0a0b0c0d");
        assert!("abc".parse::<HexBytes>().is_err());
        assert!("zz".parse::<HexBytes>().is_err());
    }

    #[test]
    fn tunnel_options_are_checked_and_encoded() {
        let o = |n: usize| GeneveOption { class: 0x0102, kind: 0x80, data: HexBytes(vec![7; n]) };
        assert!(check_tunnel_options("t", &[o(4), o(8)]).is_ok());
        let e = check_tunnel_options("t", &[o(4), o(6)]).unwrap_err();
        assert_eq!(e.path(), Some("t[1].data"));
        let e = check_tunnel_options("t", &[o(124)]).unwrap_err();
        assert_eq!(e.path(), Some("t"));
        let enc = encode(&[o(4)]);
        assert_eq!(enc.as_bytes(), &[0x01, 0x02, 0x80, 0x01, 7, 7, 7, 7]);
        assert!(enc.has_critical());
    }
}
