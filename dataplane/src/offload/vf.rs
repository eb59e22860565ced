//! SR-IOV virtual functions of a physical function: their number (sysfs
//! `sriov_numvfs`) and each VF's settings through rtnetlink (`RTM_NEWLINK`
//! with IFLA_VFINFO_LIST), as `ip link set dev PF vf N ...` does.
//!
//! Settings are sent one attribute per request: the kernel applies the
//! attributes of one request in turn and stops at the first it refuses,
//! leaving the earlier ones applied. One at a time, the manager knows
//! exactly what changed and puts it back when a later one fails.

use std::path::PathBuf;

use engine::model::{Mac, VfLinkState, VfSettings};
use serde::{Deserialize, Serialize};

use super::nl::{self, Msg};

const IFLA_NUM_VF: u16 = 21;
const IFLA_VFINFO_LIST: u16 = 22;
const IFLA_EXT_MASK: u16 = 29;
const RTEXT_FILTER_VF: u32 = 1;
const IFLA_VF_INFO: u16 = 1;
const IFLA_VF_MAC: u16 = 1;
const IFLA_VF_VLAN: u16 = 2;
const IFLA_VF_SPOOFCHK: u16 = 4;
const IFLA_VF_LINK_STATE: u16 = 5;
const IFLA_VF_RATE: u16 = 6;
const IFLA_VF_TRUST: u16 = 9;

/// One VF setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VfAttr {
    Mac([u8; 6]),
    Vlan { vlan: u16, qos: u8 },
    SpoofChk(bool),
    Trust(bool),
    LinkState(VfLinkState),
    Rate { min: u32, max: u32 },
}

impl VfAttr {
    /// The netlink attribute, for error messages.
    pub fn attribute(&self) -> &'static str {
        match self {
            VfAttr::Mac(_) => "IFLA_VF_MAC",
            VfAttr::Vlan { .. } => "IFLA_VF_VLAN",
            VfAttr::SpoofChk(_) => "IFLA_VF_SPOOFCHK",
            VfAttr::Trust(_) => "IFLA_VF_TRUST",
            VfAttr::LinkState(_) => "IFLA_VF_LINK_STATE",
            VfAttr::Rate { .. } => "IFLA_VF_RATE",
        }
    }

    /// The configuration field it comes from.
    pub fn field(&self) -> &'static str {
        match self {
            VfAttr::Mac(_) => "mac",
            VfAttr::Vlan { .. } => "vlan",
            VfAttr::SpoofChk(_) => "spoof_check",
            VfAttr::Trust(_) => "trust",
            VfAttr::LinkState(_) => "link_state",
            VfAttr::Rate { .. } => "max_tx_rate",
        }
    }

    fn encode(&self, m: &mut Msg, vf: u32) {
        let mut b = vf.to_ne_bytes().to_vec();
        let ty = match *self {
            VfAttr::Mac(mac) => {
                // struct ifla_vf_mac { __u32 vf; __u8 mac[32]; }
                b.extend_from_slice(&mac);
                b.extend_from_slice(&[0; 26]);
                IFLA_VF_MAC
            }
            VfAttr::Vlan { vlan, qos } => {
                b.extend_from_slice(&(vlan as u32).to_ne_bytes());
                b.extend_from_slice(&(qos as u32).to_ne_bytes());
                IFLA_VF_VLAN
            }
            VfAttr::SpoofChk(on) => {
                b.extend_from_slice(&(on as u32).to_ne_bytes());
                IFLA_VF_SPOOFCHK
            }
            VfAttr::Trust(on) => {
                b.extend_from_slice(&(on as u32).to_ne_bytes());
                IFLA_VF_TRUST
            }
            VfAttr::LinkState(s) => {
                let v: u32 = match s {
                    VfLinkState::Auto => 0,
                    VfLinkState::Enable => 1,
                    VfLinkState::Disable => 2,
                };
                b.extend_from_slice(&v.to_ne_bytes());
                IFLA_VF_LINK_STATE
            }
            VfAttr::Rate { min, max } => {
                b.extend_from_slice(&min.to_ne_bytes());
                b.extend_from_slice(&max.to_ne_bytes());
                IFLA_VF_RATE
            }
        };
        m.attr(ty, &b);
    }
}

/// The attributes a configured VF asks for, in a fixed order.
pub fn attrs_of(s: &VfSettings) -> Vec<VfAttr> {
    let mut v = Vec::new();
    if let Some(m) = s.mac {
        v.push(VfAttr::Mac(m.0));
    }
    if let Some(vlan) = s.vlan {
        v.push(VfAttr::Vlan { vlan, qos: s.qos.unwrap_or(0) });
    }
    if let (Some(min), Some(max)) = (s.min_tx_rate, s.max_tx_rate) {
        v.push(VfAttr::Rate { min, max });
    }
    if let Some(on) = s.spoof_check {
        v.push(VfAttr::SpoofChk(on));
    }
    if let Some(on) = s.trust {
        v.push(VfAttr::Trust(on));
    }
    if let Some(st) = s.link_state {
        v.push(VfAttr::LinkState(st));
    }
    v
}

/// RTM_NEWLINK setting `attrs` on VF `vf` of the PF `ifindex`, as
/// `ip link set dev PF vf N ...` sends it (one IFLA_VF_INFO with the
/// attributes in the order given).
pub fn set_msg(ifindex: u32, vf: u32, attrs: &[VfAttr], seq: u32) -> Vec<u8> {
    let mut m = Msg::new(nl::RTM_NEWLINK, nl::NLM_F_REQUEST | nl::NLM_F_ACK, seq);
    ifinfomsg(&mut m, ifindex);
    let list = m.begin(IFLA_VFINFO_LIST);
    let info = m.begin(IFLA_VF_INFO);
    for a in attrs {
        a.encode(&mut m, vf);
    }
    m.end(info);
    m.end(list);
    m.finish()
}

/// struct ifinfomsg for `ifindex`, everything else zero.
fn ifinfomsg(m: &mut Msg, ifindex: u32) {
    m.put(&[0, 0, 0, 0]);
    m.put(&(ifindex as i32).to_ne_bytes());
    m.put(&[0; 8]);
}

/// RTM_GETLINK for one interface with its VF table.
pub fn get_msg(ifindex: u32, seq: u32) -> Vec<u8> {
    let mut m = Msg::new(nl::RTM_GETLINK, nl::NLM_F_REQUEST, seq);
    ifinfomsg(&mut m, ifindex);
    m.u32(IFLA_EXT_MASK, RTEXT_FILTER_VF);
    m.finish()
}

/// What the device reports about one VF.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VfState {
    pub vf: u32,
    pub mac: Option<Mac>,
    pub vlan: Option<u16>,
    pub qos: Option<u8>,
    pub spoof_check: Option<bool>,
    pub trust: Option<bool>,
    pub link_state: Option<VfLinkState>,
    pub min_tx_rate: Option<u32>,
    pub max_tx_rate: Option<u32>,
}

impl VfState {
    /// The current value of the setting `a` changes, to put it back.
    pub fn current(&self, a: &VfAttr) -> Option<VfAttr> {
        Some(match a {
            VfAttr::Mac(_) => VfAttr::Mac(self.mac?.0),
            VfAttr::Vlan { .. } => VfAttr::Vlan { vlan: self.vlan?, qos: self.qos.unwrap_or(0) },
            VfAttr::SpoofChk(_) => VfAttr::SpoofChk(self.spoof_check?),
            VfAttr::Trust(_) => VfAttr::Trust(self.trust?),
            VfAttr::LinkState(_) => VfAttr::LinkState(self.link_state?),
            VfAttr::Rate { .. } => VfAttr::Rate { min: self.min_tx_rate?, max: self.max_tx_rate? },
        })
    }
}

/// The number of VFs and their state, from an RTM_NEWLINK answer.
pub fn parse_link(msg: &[u8]) -> (u32, Vec<VfState>) {
    let Some(attrs) = msg.get(nl::HEADER_LEN + 16..) else { return (0, Vec::new()) };
    let num = nl::find(attrs, IFLA_NUM_VF)
        .and_then(|b| b.get(0..4))
        .map_or(0, |b| u32::from_ne_bytes(b.try_into().unwrap()));
    let mut out = Vec::new();
    if let Some(list) = nl::find(attrs, IFLA_VFINFO_LIST) {
        for (_, info) in nl::attrs(list) {
            let mut s = VfState::default();
            let word = |b: &[u8], i: usize| {
                b.get(i * 4..i * 4 + 4).map(|w| u32::from_ne_bytes(w.try_into().unwrap()))
            };
            for (ty, b) in nl::attrs(info) {
                if let Some(vf) = word(b, 0) {
                    s.vf = vf;
                }
                // Drivers report u32::MAX ("-1") for settings they lack.
                let flag = |i| word(b, i).filter(|v| *v != u32::MAX).map(|v| v != 0);
                match ty {
                    IFLA_VF_MAC => {
                        s.mac = b.get(4..10).map(|m| Mac(m.try_into().unwrap()));
                    }
                    IFLA_VF_VLAN => {
                        s.vlan = word(b, 1).map(|v| v as u16);
                        s.qos = word(b, 2).map(|v| v as u8);
                    }
                    IFLA_VF_SPOOFCHK => s.spoof_check = flag(1),
                    IFLA_VF_TRUST => s.trust = flag(1),
                    IFLA_VF_LINK_STATE => {
                        s.link_state = match word(b, 1) {
                            Some(0) => Some(VfLinkState::Auto),
                            Some(1) => Some(VfLinkState::Enable),
                            Some(2) => Some(VfLinkState::Disable),
                            _ => None,
                        }
                    }
                    IFLA_VF_RATE => {
                        s.min_tx_rate = word(b, 1);
                        s.max_tx_rate = word(b, 2);
                    }
                    _ => {}
                }
            }
            out.push(s);
        }
    }
    (num, out)
}

/// sysfs files of a PF's SR-IOV capability.
fn sriov_file(pf: &str, name: &str) -> PathBuf {
    PathBuf::from(format!("/sys/class/net/{pf}/device/{name}"))
}

/// Why the number of VFs could not be read or set.
#[derive(Debug, thiserror::Error)]
pub enum SriovError {
    #[error("not an SR-IOV physical function (no {})", path.display())]
    NotPf { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: unexpected contents {contents:?}", path.display())]
    Unreadable { path: PathBuf, contents: String },
    #[error("{asked} VFs asked, the device offers at most {total} (sriov_totalvfs)")]
    TooMany { asked: u32, total: u32 },
}

/// (current, total) number of VFs of `pf`, or why it has none.
pub fn read_num_vfs(pf: &str) -> Result<(u32, u32), SriovError> {
    let read = |name: &str| -> Result<u32, SriovError> {
        let path = sriov_file(pf, name);
        let t = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SriovError::NotPf { path })
            }
            Err(source) => return Err(SriovError::Io { path, source }),
        };
        t.trim()
            .parse()
            .map_err(|_| SriovError::Unreadable { contents: t.trim().to_string(), path })
    };
    Ok((read("sriov_numvfs")?, read("sriov_totalvfs")?))
}

/// Sets the number of VFs. The kernel refuses to change a non-zero count to
/// another non-zero one, so it goes through 0 (which removes every VF).
pub fn write_num_vfs(pf: &str, n: u32) -> Result<(), SriovError> {
    let (cur, total) = read_num_vfs(pf)?;
    if n > total {
        return Err(SriovError::TooMany { asked: n, total });
    }
    if cur == n {
        return Ok(());
    }
    let path = sriov_file(pf, "sriov_numvfs");
    let write = |v: u32| {
        std::fs::write(&path, format!("{v}\n"))
            .map_err(|source| SriovError::Io { path: path.clone(), source })
    };
    if cur != 0 && n != 0 {
        write(0)?;
    }
    write(n)
}
