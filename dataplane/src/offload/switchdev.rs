//! Switchdev discovery from sysfs: which interfaces are ports of a NIC's
//! embedded switch (`phys_switch_id`), and what each one is
//! (`phys_port_name`: `p0` an uplink, `pf0vf3` the representor of VF 3 of
//! PF 0, `pf0` the PF's own representor, `c1pf0vf3` on a multi-host NIC).

use std::path::Path;

use engine::placement::PortHw;
use serde::{Deserialize, Serialize};

/// Why a sysfs attribute of an interface could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AttrError {
    #[error("no interface {ifname:?}")]
    NoInterface { ifname: String },
    #[error("{attr} is empty")]
    Empty { attr: &'static str },
    /// The kernel hides the file, or answers EOPNOTSUPP, when the driver
    /// has no switchdev ports.
    #[error("no {attr} ({source})")]
    Unreadable { attr: &'static str, source: std::io::Error },
}

#[derive(Debug, thiserror::Error)]
pub enum SwitchdevError {
    #[error("{ifname}: {reason}: not a switchdev port (a VF representor or uplink of a NIC in switchdev mode)")]
    NotSwitchdev { ifname: String, reason: AttrError },
    #[error("/sys/class/net: {0}")]
    ListInterfaces(std::io::Error),
}

fn read(ifname: &str, attr: &'static str) -> Result<String, AttrError> {
    let p = Path::new("/sys/class/net").join(ifname).join(attr);
    match std::fs::read_to_string(&p) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        Ok(_) => Err(AttrError::Empty { attr }),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && !p.parent().is_some_and(Path::exists) =>
        {
            Err(AttrError::NoInterface { ifname: ifname.into() })
        }
        Err(source) => Err(AttrError::Unreadable { attr, source }),
    }
}

/// The port's switch, or why it is not a switchdev port.
pub fn probe_port(ifname: &str) -> Result<PortHw, SwitchdevError> {
    let switch_id = read(ifname, "phys_switch_id")
        .map_err(|reason| SwitchdevError::NotSwitchdev { ifname: ifname.into(), reason })?;
    Ok(PortHw { ifname: ifname.to_string(), switch_id })
}

/// What a `phys_port_name` says a port is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PortRole {
    Uplink { port: u32 },
    PfRepresentor { pf: u32 },
    VfRepresentor { pf: u32, vf: u32 },
    Other { name: String },
}

pub fn parse_port_name(name: &str) -> PortRole {
    let num = |s: &str| s.parse::<u32>().ok();
    let rest = match name.strip_prefix('c') {
        // Controller prefix (c1pf0vf3): the controller does not change the role.
        Some(r) => r.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => name,
    };
    if let Some(p) = name.strip_prefix('p').and_then(num) {
        return PortRole::Uplink { port: p };
    }
    if let Some(r) = rest.strip_prefix("pf") {
        match r.split_once("vf") {
            Some((pf, vf)) => {
                if let (Some(pf), Some(vf)) = (num(pf), num(vf)) {
                    return PortRole::VfRepresentor { pf, vf };
                }
            }
            None => {
                if let Some(pf) = num(r) {
                    return PortRole::PfRepresentor { pf };
                }
            }
        }
    }
    PortRole::Other { name: name.to_string() }
}

/// A port of the same embedded switch as a PF.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Representor {
    pub interface: String,
    pub port_name: Option<String>,
    pub role: Option<PortRole>,
}

/// Every interface on `pf`'s switch (its representors and uplinks), found
/// by comparing `phys_switch_id`.
pub fn representors(pf: &str) -> Result<(String, Vec<Representor>), SwitchdevError> {
    let id = probe_port(pf)?.switch_id;
    let mut out = Vec::new();
    let dir = std::fs::read_dir("/sys/class/net").map_err(SwitchdevError::ListInterfaces)?;
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == pf || read(&name, "phys_switch_id").ok().as_deref() != Some(id.as_str()) {
            continue;
        }
        let port_name = read(&name, "phys_port_name").ok();
        let role = port_name.as_deref().map(parse_port_name);
        out.push(Representor { interface: name, port_name, role });
    }
    out.sort_by(|a, b| a.interface.cmp(&b.interface));
    Ok((id, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names() {
        assert_eq!(parse_port_name("p0"), PortRole::Uplink { port: 0 });
        assert_eq!(parse_port_name("pf0vf3"), PortRole::VfRepresentor { pf: 0, vf: 3 });
        assert_eq!(parse_port_name("c1pf1vf12"), PortRole::VfRepresentor { pf: 1, vf: 12 });
        assert_eq!(parse_port_name("pf1"), PortRole::PfRepresentor { pf: 1 });
        assert_eq!(parse_port_name("pf0sf88"), PortRole::Other { name: "pf0sf88".into() });
    }

    #[test]
    fn loopback_is_not_a_switchdev_port() {
        let e = probe_port("lo").unwrap_err().to_string();
        assert!(e.contains("lo: no phys_switch_id") && e.contains("not a switchdev port"), "{e}");
        let e = probe_port("of-no-such-if").unwrap_err();
        assert!(
            matches!(
                &e,
                SwitchdevError::NotSwitchdev { reason: AttrError::NoInterface { .. }, .. }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("no interface \"of-no-such-if\""), "{e}");
    }
}
