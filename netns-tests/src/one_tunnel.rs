//! The overlayd configuration most two-host tests give host A, built in one
//! place: a workload port `wl`, an uplink `up`, one tunnel, and two rules
//! (rule 10: what arrives on `wl` goes into the tunnel; rule 20: what comes
//! out of the tunnel goes to `wl`), with the XDP tier on or off.

use serde_json::Value;

/// The XDP tier's settings (`xdp_tier`): the interop tests run in both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TierMode {
    Auto,
    Off,
}

impl TierMode {
    pub const BOTH: [TierMode; 2] = [TierMode::Auto, TierMode::Off];

    pub fn name(self) -> &'static str {
        match self {
            TierMode::Auto => "auto",
            TierMode::Off => "off",
        }
    }

    /// Panics unless `status` shows the tier as this mode has it: present
    /// with the tier on, absent with it off.
    pub fn assert_in_status(self, status: &Value) {
        let present = status["io"]["tier"].is_object();
        assert_eq!(
            present,
            self == TierMode::Auto,
            "xdp_tier = \"{}\" but status shows the tier {}: {status:#}",
            self.name(),
            if present { "on" } else { "off" }
        );
    }
}

/// Host A's configuration; `render` writes it.
pub struct OneTunnel<'a> {
    /// The workload port's interface, and more lines of that port.
    pub wl: &'a str,
    pub wl_port: &'a str,
    /// The uplink's interface, and more lines of that port.
    pub up: &'a str,
    pub up_port: &'a str,
    /// The tunnel's name, and its lines after name and uplink (type,
    /// addresses, identifiers, options).
    pub tunnel: &'a str,
    pub tunnel_body: &'a str,
    /// More match fields of rule 10 (`, ethertype = 0x0800`) and rule 20.
    pub encap_match: &'a str,
    pub decap_match: &'a str,
    /// Actions of rule 20 before its output (`{ set_eth_dst = "..." }, `).
    pub decap_actions: &'a str,
    pub tier: TierMode,
    /// Appended: more tables (rules, networks).
    pub extra: &'a str,
}

impl Default for OneTunnel<'_> {
    fn default() -> Self {
        OneTunnel {
            wl: "",
            wl_port: "",
            up: "",
            up_port: "",
            tunnel: "to-peer",
            tunnel_body: "",
            encap_match: "",
            decap_match: "",
            decap_actions: "",
            tier: TierMode::Auto,
            extra: "",
        }
    }
}

impl OneTunnel<'_> {
    pub fn render(&self) -> String {
        let OneTunnel { wl, wl_port, up, up_port, tunnel, tunnel_body, .. } = self;
        let (em, dm, da, extra) =
            (self.encap_match, self.decap_match, self.decap_actions, self.extra);
        // Top-level keys come before the first table.
        format!(
            r#"xdp_tier = "{tier}"

[[ports]]
name = "wl"
kind = "workload"
interface = "{wl}"
{wl_port}

[[ports]]
name = "up"
kind = "uplink"
interface = "{up}"
{up_port}

[[tunnels]]
name = "{tunnel}"
uplink = "up"
{tunnel_body}

[[rules]]
id = 10
match = {{ in_port = "wl"{em} }}
actions = [{{ encap = "{tunnel}" }}]

[[rules]]
id = 20
match = {{ tunnel = "{tunnel}"{dm} }}
actions = [{da}{{ output = "wl" }}]
{extra}
"#,
            tier = self.tier.name(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_configuration_overlayd_reads() {
        let c = OneTunnel {
            wl: "wl0",
            up: "up0",
            up_port: "backend = \"af_packet\"",
            tunnel_body:
                "type = \"vxlan\"\nlocal = \"192.0.2.1\"\nremote = \"192.0.2.2\"\nvni = 42",
            decap_match: ", vni = 42",
            tier: TierMode::Off,
            ..OneTunnel::default()
        }
        .render();
        let cfg = engine::model::Config::from_toml(&c).unwrap_or_else(|e| panic!("{e}\n{c}"));
        assert_eq!(cfg.xdp_tier, engine::model::TierSpec::Off);
        assert_eq!(cfg.rules.len(), 2);
        assert_eq!(cfg.tunnels[0].name, "to-peer");
    }
}
