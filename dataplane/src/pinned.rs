//! `overlayd pinned` and `overlayd cleanup`: what overlayd left in the BPF
//! filesystem (io/pin.rs), and the punt devices of its tc ports
//! (io/tc_port.rs) a killed overlayd left, seen and removed without a
//! running daemon.

use crate::io::pin::{self, PinError, PinnedPort};
use crate::io::tc_port::{self, TcPortError};

#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error(transparent)]
    Punt(#[from] TcPortError),
}

/// Everything pinned on the host.
pub fn list() -> Vec<PinnedPort> {
    pin::list()
}

/// One line per port: namespace, interface, what serves it, its maps.
pub fn render(list: &[PinnedPort]) -> String {
    if list.is_empty() {
        return format!("nothing pinned under {}\n", pin::root().display());
    }
    let here = pin::this_netns();
    let mut s = String::new();
    for p in list {
        let ns = if p.netns == here {
            format!("net{} (this one)", p.netns)
        } else {
            format!("net{}", p.netns)
        };
        let link = match p.link {
            Some(l) if l.ifindex != 0 => {
                format!("attached (program {}, ifindex {})", l.program_id, l.ifindex)
            }
            Some(l) => format!("defunct: its interface is gone (program {})", l.program_id),
            None if p.tc_port_link.is_some() => "a tc port (no XDP program)".to_string(),
            None => "no link".to_string(),
        };
        s.push_str(&format!("{ns} {}: {link}\n", p.interface));
        match p.tc_link {
            Some(l) if l.ifindex != 0 => s.push_str(&format!(
                "  tc tier link: attached (program {}, ifindex {})\n",
                l.program_id, l.ifindex
            )),
            Some(l) => s.push_str(&format!(
                "  tc tier link: defunct, its interface is gone (program {})\n",
                l.program_id
            )),
            None => {}
        }
        for (what, l) in [("tc port link", p.tc_port_link), ("punt sink link", p.tc_sink_link)] {
            match l {
                Some(l) if l.ifindex != 0 => s.push_str(&format!(
                    "  {what}: attached (program {}, ifindex {})\n",
                    l.program_id, l.ifindex
                )),
                Some(l) => s.push_str(&format!(
                    "  {what}: defunct, its interface is gone (program {})\n",
                    l.program_id
                )),
                None => {}
            }
        }
        for (name, meta) in &p.maps {
            match meta {
                Some(m) => s.push_str(&format!(
                    "  {name}: layout {}, tier capacity {}, entries of generation {}\n",
                    m.layout, m.tier_capacity, m.generation
                )),
                None => s.push_str(&format!("  {name}: unreadable (another layout)\n")),
            }
        }
    }
    s.push_str("remove with `overlayd cleanup` (in the namespace) once no overlayd runs there\n");
    s
}

/// One line per punt device in this namespace (those are not pinned: they
/// are network devices, which a killed overlayd leaves behind).
pub fn render_punt_devices(punts: &[String]) -> String {
    let mut s = String::new();
    for p in punts {
        let owner = match tc_port::punt_owner(p) {
            Some(i) => format!("of the tc port on {i}"),
            None => "of a tc port whose interface is gone".into(),
        };
        s.push_str(&format!("punt device {p} (this namespace), {owner}\n"));
    }
    if !punts.is_empty() {
        s.push_str("an overlayd serving the port uses it; else remove with `overlayd cleanup`\n");
    }
    s
}

/// Removes this namespace's pinned state (only `interface`'s, if given) and
/// everything pinned for interfaces that are gone, and likewise the punt
/// devices of tc ports; says what it removed.
pub fn cleanup(interface: Option<&str>) -> Result<Vec<String>, CleanupError> {
    let here = pin::this_netns();
    let mut said = Vec::new();
    for p in pin::list() {
        let ours = p.netns == here && interface.is_none_or(|i| i == p.interface);
        if ours || p.defunct() {
            pin::remove(&p)?;
            said.push(format!("removed {} (net{} {})", p.dir.display(), p.netns, p.interface));
        }
    }
    pin::remove_empty_namespaces();
    for punt in tc_port::punt_devices() {
        let owner = tc_port::punt_owner(&punt);
        if interface.is_none() || owner.is_none() || owner.as_deref() == interface {
            tc_port::remove_punt_device(&punt)?;
            said.push(format!("removed the punt device {punt} and its peer"));
        }
    }
    if said.is_empty() {
        said.push("nothing to remove".into());
    }
    Ok(said)
}
