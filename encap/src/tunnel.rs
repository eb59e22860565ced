//! What a tunnel is: its encapsulation, its underlay endpoints and the options
//! that shape the outer headers. Control-path types: checked once, when a
//! template is built.

use crate::ecn::EcnMode;
use crate::wire::ethernet::MacAddr;
use crate::wire::{geneve, vxlan};

/// Outer endpoints: local (source) and remote (destination) VTEP addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Underlay {
    V4 { src: [u8; 4], dst: [u8; 4] },
    V6 { src: [u8; 16], dst: [u8; 16] },
}

/// The tunnel protocol and its identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encapsulation {
    /// VXLAN (RFC 7348): Ethernet in UDP, 24-bit VNI.
    Vxlan { vni: u32, dst_port: u16 },
    /// Ethernet over GRE (gretap; NVGRE when the key is `gre::nvgre_key`).
    GreTap { key: Option<u32> },
    /// IP over GRE: only the inner IP packet is carried, its Ethernet header is not.
    GreL3 { key: Option<u32> },
    /// Geneve (RFC 8926): Ethernet in UDP, 24-bit VNI, options sent with
    /// every packet.
    Geneve { vni: u32, dst_port: u16, options: GeneveOptions },
}

/// Most bytes of Geneve options a tunnel sends (encoded TLVs, headers
/// included); RFC 8926 allows 252, Open vSwitch sends at most 252 too, but a
/// template this size keeps the per-worker header copy small.
pub const MAX_GENEVE_OPTIONS: usize = 124;

/// The Geneve options a tunnel adds to every packet, already encoded as
/// TLVs, in a fixed array so tunnel parameters stay `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GeneveOptions {
    len: u8,
    bytes: [u8; MAX_GENEVE_OPTIONS],
}

impl Default for GeneveOptions {
    fn default() -> Self {
        GeneveOptions { len: 0, bytes: [0; MAX_GENEVE_OPTIONS] }
    }
}

impl GeneveOptions {
    /// Appends one option: `data` must be a multiple of 4 bytes, at most 124.
    pub fn push(&mut self, class: u16, kind: u8, data: &[u8]) -> Result<(), ParamsError> {
        if !data.len().is_multiple_of(4) || data.len() > geneve::MAX_OPTION_DATA_LEN {
            return Err(ParamsError::GeneveOptionData(data.len()));
        }
        let need = self.len as usize + geneve::OPTION_HEADER_LEN + data.len();
        if need > MAX_GENEVE_OPTIONS {
            return Err(ParamsError::GeneveOptionsTooLong(need));
        }
        let n = geneve::emit_option(&mut self.bytes[self.len as usize..], class, kind, data);
        self.len += n as u8;
        Ok(())
    }

    /// The encoded TLVs.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// True if an option is marked critical (the header's C bit).
    pub fn has_critical(&self) -> bool {
        geneve::Options::new(self.as_bytes()).any(|o| o.is_ok_and(|o| o.is_critical()))
    }
}

/// Outer IPv4 DF bit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DfMode {
    #[default]
    Set,
    Unset,
    /// Copy the inner IPv4 DF bit; set for inner IPv6, clear for non-IP.
    Inherit,
}

/// Outer TTL / hop limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TtlMode {
    Fixed(u8),
    /// Copy the inner TTL / hop limit; non-IP frames get the default, 64.
    Inherit,
}

impl Default for TtlMode {
    fn default() -> Self {
        TtlMode::Fixed(DEFAULT_TTL)
    }
}

pub const DEFAULT_TTL: u8 = 64;

/// Outer DSCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DscpMode {
    Fixed(u8),
    /// Copy the inner DSCP.
    Inherit,
}

impl Default for DscpMode {
    fn default() -> Self {
        DscpMode::Fixed(0)
    }
}

/// Options that shape the outer headers; `Default` gives the RFC-recommended
/// behaviour: DF set, TTL 64, DSCP 0, ECN normal mode, no UDP checksum over
/// IPv4, no GRE checksum or sequence, source ports 49152-65535, MTU 1500.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EncapOptions {
    pub df: DfMode,
    pub ttl: TtlMode,
    pub dscp: DscpMode,
    pub ecn: EcnMode,
    /// Compute the UDP checksum over IPv4 (always computed over IPv6).
    pub udp_checksum: bool,
    pub gre_checksum: bool,
    pub gre_sequence: bool,
    /// Inclusive range of outer UDP source ports.
    pub src_port_min: u16,
    pub src_port_max: u16,
    /// Largest outer IP packet (header included) the underlay carries.
    pub underlay_mtu: u16,
}

impl Default for EncapOptions {
    fn default() -> Self {
        EncapOptions {
            df: DfMode::Set,
            ttl: TtlMode::default(),
            dscp: DscpMode::default(),
            ecn: EcnMode::Normal,
            udp_checksum: false,
            gre_checksum: false,
            gre_sequence: false,
            src_port_min: 49152,
            src_port_max: 65535,
            underlay_mtu: 1500,
        }
    }
}

/// Everything needed to build a tunnel's header template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TunnelParams {
    pub encap: Encapsulation,
    pub underlay: Underlay,
    /// Outer Ethernet source (the uplink's MAC) and destination (the next hop's).
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    /// 802.1Q tag on the underlay, if the uplink is a VLAN trunk.
    pub outer_vlan: Option<u16>,
    pub options: EncapOptions,
}

/// Why a tunnel's parameters were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamsError {
    VniOutOfRange(u32),
    SrcPortRange { min: u16, max: u16 },
    TtlZero,
    DscpOutOfRange(u8),
    VlanOutOfRange(u16),
    MtuTooSmall { mtu: u16, min: u16 },
    ZeroDstPort,
    GeneveOptionData(usize),
    GeneveOptionsTooLong(usize),
}

impl core::fmt::Display for ParamsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ParamsError::VniOutOfRange(v) => {
                write!(f, "vni {v} is out of range (0..={})", vxlan::MAX_VNI)
            }
            ParamsError::SrcPortRange { min, max } => {
                write!(f, "source port range {min}-{max} is empty (min must be <= max)")
            }
            ParamsError::TtlZero => write!(f, "ttl 0 would be dropped by the first router"),
            ParamsError::DscpOutOfRange(d) => write!(f, "dscp {d} is out of range (0..=63)"),
            ParamsError::VlanOutOfRange(v) => write!(f, "vlan {v} is out of range (1..=4094)"),
            ParamsError::MtuTooSmall { mtu, min } => {
                write!(f, "underlay mtu {mtu} is below the minimum {min} for this tunnel")
            }
            ParamsError::ZeroDstPort => write!(f, "udp destination port 0 is not valid"),
            ParamsError::GeneveOptionData(n) => write!(
                f,
                "geneve option data of {n} bytes: it must be a multiple of 4 bytes, at most {}",
                geneve::MAX_OPTION_DATA_LEN
            ),
            ParamsError::GeneveOptionsTooLong(n) => write!(
                f,
                "geneve options take {n} bytes, more than the {MAX_GENEVE_OPTIONS} a tunnel may send"
            ),
        }
    }
}

impl std::error::Error for ParamsError {}

impl TunnelParams {
    /// Checks every field; the template constructor calls this.
    pub fn validate(&self) -> Result<(), ParamsError> {
        if let Encapsulation::Vxlan { vni, dst_port }
        | Encapsulation::Geneve { vni, dst_port, .. } = self.encap
        {
            if vni > vxlan::MAX_VNI {
                return Err(ParamsError::VniOutOfRange(vni));
            }
            if dst_port == 0 {
                return Err(ParamsError::ZeroDstPort);
            }
        }
        let o = &self.options;
        if o.src_port_min > o.src_port_max {
            return Err(ParamsError::SrcPortRange { min: o.src_port_min, max: o.src_port_max });
        }
        if o.ttl == TtlMode::Fixed(0) {
            return Err(ParamsError::TtlZero);
        }
        if let DscpMode::Fixed(d) = o.dscp {
            if d > 63 {
                return Err(ParamsError::DscpOutOfRange(d));
            }
        }
        if let Some(v) = self.outer_vlan {
            if v == 0 || v > 4094 {
                return Err(ParamsError::VlanOutOfRange(v));
            }
        }
        // IPv6 requires links to carry 1280 bytes; IPv4 68. The tunnel must also fit
        // its own headers plus a minimal inner frame.
        let ip_min = match self.underlay {
            Underlay::V4 { .. } => 68,
            Underlay::V6 { .. } => 1280,
        };
        let min = ip_min.max((self.ip_overhead() + 64) as u16);
        if o.underlay_mtu < min {
            return Err(ParamsError::MtuTooSmall { mtu: o.underlay_mtu, min });
        }
        Ok(())
    }

    /// Bytes of outer IP + UDP/GRE + VXLAN headers (outer Ethernet not included):
    /// what the tunnel adds to what the underlay MTU must carry.
    pub fn ip_overhead(&self) -> usize {
        let ip = match self.underlay {
            Underlay::V4 { .. } => 20,
            Underlay::V6 { .. } => 40,
        };
        let tun = match self.encap {
            Encapsulation::Vxlan { .. } => 16,
            Encapsulation::Geneve { options, .. } => 16 + options.len as usize,
            Encapsulation::GreTap { key } | Encapsulation::GreL3 { key } => {
                4 + 4
                    * (key.is_some() as usize
                        + self.options.gre_checksum as usize
                        + self.options.gre_sequence as usize)
            }
        };
        ip + tun
    }
}
