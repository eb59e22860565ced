//! What is measured: scenarios (tunnel and direction, frame size, flows,
//! rules) and devices under test.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Inner frames into the workload side, VXLAN out of the uplink.
    VxlanEncap,
    /// VXLAN into the uplink, inner frames out of the workload side.
    VxlanDecap,
    /// Inner frames into the workload side, gretap (key 42) out of the uplink.
    GretapEncap,
    /// Inner frames into the workload side, Geneve (VNI 42, no options) out
    /// of the uplink.
    GeneveEncap,
}

impl Kind {
    pub const ALL: [Kind; 4] =
        [Kind::VxlanEncap, Kind::VxlanDecap, Kind::GretapEncap, Kind::GeneveEncap];

    pub fn name(self) -> &'static str {
        match self {
            Kind::VxlanEncap => "vxlan-encap",
            Kind::VxlanDecap => "vxlan-decap",
            Kind::GretapEncap => "gretap-encap",
            Kind::GeneveEncap => "geneve-encap",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    pub fn decap(self) -> bool {
        self == Kind::VxlanDecap
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Scenario {
    pub kind: Kind,
    /// Ethernet frame size on the wire, FCS included (inner frame for decap).
    pub size: usize,
    pub flows: u32,
    pub rules: usize,
}

impl Scenario {
    pub fn label(&self) -> String {
        format!(
            "{} {}B {} flow{} {} rules",
            self.kind.name(),
            self.size,
            thousands(self.flows as u64),
            if self.flows == 1 { "" } else { "s" },
            thousands(self.rules as u64)
        )
    }
}

pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DutKind {
    /// `overlayd run`, AF_XDP on both ports, one worker, the XDP tier on
    /// (the default).
    Overlayd,
    /// `overlayd run`, AF_XDP on both ports, one worker, the XDP tier off.
    #[serde(rename = "overlayd-afxdp-only", alias = "overlayd-afxdp")]
    OverlaydAfxdp,
    /// `overlayd run` with the io_uring backend on both ports.
    OverlaydUring,
    /// Open vSwitch userspace datapath (netdev), AF_XDP ports, one PMD thread.
    OvsAfxdp,
    /// The kernel's VXLAN device behind a Linux bridge.
    Kernel,
    /// A null XDP forwarder: d0 -> d1 through a devmap, no encapsulation;
    /// the physical limit of the path.
    XdpNull,
    /// A fixed-header VXLAN encapsulation in XDP, d0 -> d1 through a devmap:
    /// the least any XDP tier's encapsulation costs on the path.
    XdpEncap,
}

impl DutKind {
    pub const ALL: [DutKind; 7] = [
        DutKind::Overlayd,
        DutKind::OverlaydAfxdp,
        DutKind::OverlaydUring,
        DutKind::OvsAfxdp,
        DutKind::Kernel,
        DutKind::XdpNull,
        DutKind::XdpEncap,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DutKind::Overlayd => "overlayd",
            DutKind::OverlaydAfxdp => "overlayd-afxdp-only",
            DutKind::OverlaydUring => "overlayd-uring",
            DutKind::OvsAfxdp => "ovs-afxdp",
            DutKind::Kernel => "kernel",
            DutKind::XdpNull => "xdp-null",
            DutKind::XdpEncap => "xdp-encap",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            DutKind::Overlayd => "overlayd (XDP tier + AF_XDP)",
            DutKind::OverlaydAfxdp => "overlayd AF_XDP only",
            DutKind::OverlaydUring => "overlayd io_uring",
            DutKind::OvsAfxdp => "OVS 3.1 AF_XDP",
            DutKind::Kernel => "kernel VXLAN + bridge",
            DutKind::XdpNull => "null XDP redirect (no encap)",
            DutKind::XdpEncap => "fixed-header XDP VXLAN encap",
        }
    }

    pub fn parse(s: &str) -> Option<DutKind> {
        DutKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// Every combination of the given dimensions, grouped so that scenarios that
/// share a device configuration (tunnel, direction, rules) are adjacent.
pub fn scenarios(kinds: &[Kind], sizes: &[usize], flows: &[u32], rules: &[usize]) -> Vec<Scenario> {
    let mut v = Vec::new();
    for &kind in kinds {
        for &rules in rules {
            for &size in sizes {
                for &flows in flows {
                    v.push(Scenario { kind, size, flows, rules });
                }
            }
        }
    }
    v
}
