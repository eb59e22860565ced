//! The configuration document: ports, tunnels, receive policy, rules, FDB
//! entries and flood lists, with a generation number. Read from TOML (and, by
//! the control plane, from JSON); `Config::validate` refuses a bad document with
//! the path of the offending field and the reason. A `Config` that validated is
//! what the compiler turns into a rule set; nothing is ever half-applied.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use encap::wire::{geneve, vxlan};

pub use crate::config_error::ConfigError;
use crate::geneve::GeneveOption;

/// The schema version this build writes; it reads this one and older ones.
pub const SCHEMA_VERSION: u32 = 1;

/// A MAC address written `02:00:00:00:00:01`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl std::str::FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!("{s:?} is not a MAC address (want aa:bb:cc:dd:ee:ff)"));
        }
        let mut m = [0u8; 6];
        for (o, p) in m.iter_mut().zip(parts) {
            *o = u8::from_str_radix(p, 16)
                .ok()
                .filter(|_| p.len() == 2)
                .ok_or_else(|| format!("{s:?} is not a MAC address (want aa:bb:cc:dd:ee:ff)"))?;
        }
        Ok(Mac(m))
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An address prefix written `198.51.100.0/24` or `2001:db8::/32` (a bare
/// address is a full-length prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl std::str::FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| format!("{a:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("prefix length {l:?} is out of range (0..={max})"))?,
        };
        Ok(Prefix { addr, len })
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    /// Increases by one with every accepted change.
    #[serde(default)]
    pub generation: u64,
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(default)]
    pub tunnels: Vec<Tunnel>,
    #[serde(default)]
    pub decap: DecapPolicy,
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub fdb: Vec<FdbEntry>,
    #[serde(default)]
    pub flood: Vec<FloodList>,
    /// SR-IOV virtual functions and flow offload (docs/offload.md). Absent:
    /// nothing is offloaded and no VF is touched.
    #[serde(default, skip_serializing_if = "is_default")]
    pub offload: Offload,
    /// Whether established flows are handed to the XDP fast tier
    /// (docs/configuration.md, "Top level").
    #[serde(default, skip_serializing_if = "is_default")]
    pub xdp_tier: TierSpec,
    /// Flow entries the XDP tier holds per ingress port.
    #[serde(default = "default_tier_entries", skip_serializing_if = "is_default_tier_entries")]
    pub xdp_tier_entries: u32,
    /// Per-network L2 behaviour: MAC learning, ageing, limits and ARP/ND
    /// suppression (docs/configuration.md, "Networks"). A VNI without an
    /// entry forwards by the static FDB and flood lists only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<Network>,
    /// Whether the tc tier serves the XDP tier's flows on workload ports
    /// whose frames XDP cannot forward exactly (partial checksums):
    /// docs/configuration.md, "Top level".
    #[serde(default, skip_serializing_if = "is_default")]
    pub tc_tier: TierSpec,
}

/// Whether the XDP fast tier may take a flow (top level), or a rule's flows.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TierSpec {
    /// Flows the tier can handle exactly are handed to it.
    #[default]
    Auto,
    /// Every packet goes through AF_XDP and the userspace engine.
    Off,
}

/// Default flow entries of the XDP tier per ingress port.
pub const DEFAULT_TIER_ENTRIES: u32 = 131_072;
/// Bounds of `xdp_tier_entries`.
pub const TIER_ENTRIES_RANGE: std::ops::RangeInclusive<u32> = 16..=1 << 22;

fn default_tier_entries() -> u32 {
    DEFAULT_TIER_ENTRIES
}

fn is_default_tier_entries(n: &u32) -> bool {
    *n == DEFAULT_TIER_ENTRIES
}

fn schema_version() -> u32 {
    SCHEMA_VERSION
}

/// An empty document of the current schema: no ports, no rules.
impl Default for Config {
    fn default() -> Self {
        Config {
            schema_version: SCHEMA_VERSION,
            generation: 0,
            ports: Vec::new(),
            tunnels: Vec::new(),
            decap: DecapPolicy::default(),
            rules: Vec::new(),
            fdb: Vec::new(),
            flood: Vec::new(),
            offload: Offload::default(),
            xdp_tier: TierSpec::default(),
            xdp_tier_entries: DEFAULT_TIER_ENTRIES,
            networks: Vec::new(),
            tc_tier: TierSpec::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    /// Faces workloads: everything it receives goes through the rules.
    Workload,
    /// Faces the underlay: it receives tunnel packets, which are decapsulated.
    Uplink,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub name: String,
    pub kind: PortKind,
    /// The Linux interface (for `run`; `replay` does not need it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The port's MAC address: the outer source of tunnel packets sent from an
    /// uplink. `run` reads it from the interface when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    /// Queues to serve, from 0; all of the interface's RX queues when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<u32>,
    /// Where the XDP program runs.
    #[serde(default, skip_serializing_if = "is_default")]
    pub xdp_mode: XdpModeSpec,
    /// Whether AF_XDP uses the driver's zero-copy mode.
    #[serde(default, skip_serializing_if = "is_default")]
    pub zero_copy: ZeroCopy,
    /// How `run` moves the port's packets.
    #[serde(default, skip_serializing_if = "is_default")]
    pub backend: Backend,
    /// TAP ports: let the workload hand over checksums and TSO/USO
    /// super-frames (virtio-net offloads), done here in software.
    #[serde(default, skip_serializing_if = "is_default")]
    pub offloads: Offloads,
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// `run` chooses when it attaches: `tc` on a veth (any XDP program there
    /// turns the other end's TSO off; docs/decisions.md, "The default
    /// backend on veths") when the XDP tier is on and io_uring works,
    /// `af_xdp` everywhere else and whenever `xdp_mode` or `zero_copy` is
    /// set. `status` shows the backend chosen.
    #[default]
    Auto,
    /// XDP steering and AF_XDP sockets: the fast path.
    AfXdp,
    /// A raw packet socket driven by io_uring: where AF_XDP is missing.
    AfPacket,
    /// A TAP device driven by io_uring, for VMs and containers; `run`
    /// creates it if it does not exist.
    Tap,
    /// Veths: no XDP program on the interface, so the workload (or, on an
    /// uplink, the peer host) keeps its TSO; a tc ingress program
    /// encapsulates (workload) or decapsulates (uplink) the tier's flows
    /// whole and hands the rest to overlayd through a punt device
    /// (AF_PACKET, io_uring). docs/user-guide.md says when to choose it.
    Tc,
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Offloads {
    #[default]
    On,
    Off,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum XdpModeSpec {
    /// In the driver, falling back to the generic (SKB) hook with a warning.
    #[default]
    Auto,
    /// In the driver, or fail.
    Native,
    /// The generic hook: works everywhere, slower.
    Generic,
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ZeroCopy {
    /// Zero-copy if the driver offers it, else copy mode.
    #[default]
    Auto,
    On,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TunnelType {
    Vxlan,
    /// Ethernet over GRE.
    Gretap,
    /// Ethernet over GRE with the NVGRE key layout (VSID + flow id).
    Nvgre,
    /// IP over GRE.
    Gre,
    /// Geneve (RFC 8926): Ethernet in UDP with options.
    Geneve,
}

/// A number, or the word `inherit` (copy from the inner packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum OrInherit {
    Value(u8),
    Word(InheritWord),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InheritWord {
    Inherit,
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DfSpec {
    #[default]
    Set,
    Unset,
    Inherit,
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EcnSpec {
    #[default]
    Normal,
    Compat,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tunnel {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: TunnelType,
    /// The uplink port the tunnel's packets leave and arrive on.
    pub uplink: String,
    pub local: IpAddr,
    pub remote: IpAddr,
    /// VXLAN or Geneve network identifier (vxlan, geneve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// GRE key (gre, gretap; optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<u32>,
    /// NVGRE virtual subnet id (24 bits) and flow id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<u8>,
    /// UDP destination port (vxlan, geneve); `dst_port` is accepted too.
    /// Absent: the type's IANA port. Read it with [`Tunnel::udp_port`].
    #[serde(default, alias = "dst_port", skip_serializing_if = "Option::is_none")]
    pub udp_port: Option<u16>,
    /// Static next-hop MAC address of the remote VTEP; `run` resolves it from
    /// the kernel's neighbour table when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_mac: Option<Mac>,
    #[serde(default)]
    pub df: DfSpec,
    #[serde(default = "default_ttl")]
    pub ttl: OrInherit,
    #[serde(default = "default_dscp")]
    pub dscp: OrInherit,
    #[serde(default)]
    pub ecn: EcnSpec,
    #[serde(default)]
    pub udp_checksum: bool,
    #[serde(default)]
    pub gre_checksum: bool,
    #[serde(default)]
    pub gre_sequence: bool,
    #[serde(default = "default_src_ports")]
    pub src_port_range: [u16; 2],
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// Geneve options sent with every packet (geneve).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<GeneveOption>,
}

impl Tunnel {
    /// The UDP destination port: the configured one, else 4789 (VXLAN) or
    /// 6081 (Geneve).
    pub fn udp_port(&self) -> u16 {
        self.udp_port.unwrap_or(match self.kind {
            TunnelType::Geneve => geneve::IANA_PORT,
            _ => vxlan::IANA_PORT,
        })
    }
}

fn default_ttl() -> OrInherit {
    OrInherit::Value(64)
}
fn default_dscp() -> OrInherit {
    OrInherit::Value(0)
}
fn default_src_ports() -> [u16; 2] {
    [49152, 65535]
}
fn default_mtu() -> u16 {
    1500
}

/// Receive-side policy for all tunnels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DecapPolicy {
    /// Drop VXLAN packets with reserved bits set (RFC 7348 says ignore them).
    pub vxlan_strict: bool,
    /// Verify non-zero UDP checksums over IPv4.
    pub verify_udp_checksum: bool,
    /// Accept zero UDP checksums over IPv6 (RFC 6935/6936).
    pub accept_zero_checksum_v6: bool,
    pub verify_gre_checksum: bool,
}

impl Default for DecapPolicy {
    fn default() -> Self {
        DecapPolicy {
            vxlan_strict: false,
            verify_udp_checksum: true,
            accept_zero_checksum_v6: false,
            verify_gre_checksum: true,
        }
    }
}

/// Match fields; an absent field is a wildcard.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Match {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_port: Option<String>,
    /// The tunnel a decapsulated packet came through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<String>,
    /// VNI or GRE key of a decapsulated packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eth_src: Option<Mac>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eth_dst: Option<Mac>,
    /// Outermost VLAN id; 0 matches untagged frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ethertype: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_src: Option<Prefix>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_dst: Option<Prefix>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_proto: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l4_src: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l4_dst: Option<u16>,
    /// A Geneve option a decapsulated packet carried: class, type and data
    /// all equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geneve_option: Option<GeneveOption>,
}

/// What a rule does. Written in TOML as `"drop"`, `"pop_vlan"`, `"count"`, or a
/// table such as `{ encap = "t1" }`, `{ output = "wl0" }`, `{ push_vlan = 100 }`,
/// `{ set_eth_dst = "02:00:00:00:00:02" }`, `{ forward_l2 = 42 }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Encapsulate into the named tunnel and send it out of its uplink.
    Encap(String),
    /// Send out of the named port.
    Output(String),
    Drop,
    PushVlan(u16),
    PopVlan,
    SetVlan(u16),
    SetEthSrc(Mac),
    SetEthDst(Mac),
    /// Count only (every matched packet is counted per rule anyway; this marks
    /// rules kept for accounting).
    Count,
    /// L2 overlay forwarding in a VNI: a known unicast MAC goes to its FDB
    /// tunnel; broadcast, multicast and unknown unicast are replicated to the
    /// VNI's flood list.
    ForwardL2(u32),
}

impl Action {
    /// True for the actions that decide where the packet goes.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Action::Encap(_) | Action::Output(_) | Action::Drop | Action::ForwardL2(_))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: u32,
    /// Higher wins; between equal priorities, the lower id wins.
    #[serde(default)]
    pub priority: u16,
    #[serde(default, rename = "match")]
    pub matches: Match,
    pub actions: Vec<Action>,
    /// `"off"` keeps the rule's flows out of the XDP fast tier (every packet
    /// through the userspace engine); `"auto"` lets the tier take them.
    #[serde(default = "tier_auto", skip_serializing_if = "is_tier_auto")]
    pub xdp_tier: TierSpec,
}

fn tier_auto() -> TierSpec {
    TierSpec::Auto
}

fn is_tier_auto(t: &TierSpec) -> bool {
    *t == TierSpec::Auto
}

/// A static FDB entry: in `vni`, frames to `mac` go through `tunnel`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FdbEntry {
    pub vni: u32,
    pub mac: Mac,
    pub tunnel: String,
}

/// One L2 network (the VNI of `forward_l2`): whether it learns MAC
/// addresses, how long they live, how many it holds, and whether ARP and
/// neighbour solicitations for known addresses are answered locally.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub vni: u32,
    /// Learn source MACs on workload ports and from decapsulated frames.
    #[serde(default = "yes")]
    pub learning: bool,
    /// Seconds a learned entry lives without being seen again.
    #[serde(default = "default_ageing")]
    pub ageing_secs: u32,
    /// Most learned MACs; beyond it new ones are not learned (counted as
    /// `mac_limit`) and their frames keep flooding.
    #[serde(default = "default_mac_limit")]
    pub mac_limit: u32,
    /// Answer ARP requests and IPv6 neighbour solicitations for known
    /// bindings on the asking workload's port instead of flooding them.
    #[serde(default)]
    pub suppress_arp_nd: bool,
    /// Static IP -> MAC bindings; they win over learned ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<Binding>,
}

/// An IP address of a workload and its MAC address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub ip: IpAddr,
    pub mac: Mac,
}

/// Default lifetime of a learned MAC or binding, seconds.
pub const DEFAULT_AGEING_SECS: u32 = 300;
/// Default most learned MACs per network.
pub const DEFAULT_MAC_LIMIT: u32 = 4096;
/// Bounds of `mac_limit`.
pub const MAC_LIMIT_RANGE: std::ops::RangeInclusive<u32> = 1..=1 << 20;

fn yes() -> bool {
    true
}
fn default_ageing() -> u32 {
    DEFAULT_AGEING_SECS
}
fn default_mac_limit() -> u32 {
    DEFAULT_MAC_LIMIT
}

/// Head-end replication list for broadcast, multicast and unknown unicast.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FloodList {
    pub vni: u32,
    pub tunnels: Vec<String>,
    /// Local workload ports that also receive the flooded frames.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
}

/// Flow offload to the NIC's embedded switch, and the SR-IOV physical
/// functions whose virtual functions the daemon configures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Offload {
    /// Push the rules the hardware can run down to it as tc flower filters
    /// (skip_sw); the rest, and every rule on a device that cannot, stay in
    /// software.
    #[serde(default)]
    pub enabled: bool,
    /// The kernel VXLAN device (`external`, one per UDP port) that tc's
    /// tunnel_key actions encapsulate through and decapsulated packets arrive
    /// on. Without it, no VXLAN rule is offloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_device: Option<String>,
    /// The same for gretap (`external`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gretap_device: Option<String>,
    /// Physical functions and the settings of their virtual functions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pfs: Vec<PhysFn>,
}

/// An SR-IOV physical function.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PhysFn {
    /// The PF's Linux interface.
    pub interface: String,
    /// Number of VFs to create (sysfs `sriov_numvfs`); left as found if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_vfs: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vfs: Vec<VfSettings>,
}

/// Settings of one VF; an absent field is left as the device has it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VfSettings {
    pub vf: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    /// Port VLAN the NIC tags the VF's traffic with; 0 removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// 802.1p priority of the port VLAN (needs `vlan`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spoof_check: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_state: Option<VfLinkState>,
    /// Rate limits in Mbit/s (0 = none); set together (one IFLA_VF_RATE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tx_rate: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tx_rate: Option<u32>,
}

impl VfSettings {
    /// Copies every field `other` sets over this one's.
    pub fn merge(&mut self, other: &VfSettings) {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f; } )* };
        }
        take!(mac, vlan, qos, spoof_check, trust, link_state, min_tx_rate, max_tx_rate);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VfLinkState {
    /// Follows the PF's link.
    Auto,
    Enable,
    Disable,
}

/// Linux interface names: 1 to 15 bytes, no '/', ':' or white space.
fn check_ifname(path: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(bad(
            path,
            format!("{name:?} is not a Linux interface name (1-15 bytes, no '/', ':' or spaces)"),
        ))
    }
}

impl Offload {
    fn validate(&self) -> Result<(), ConfigError> {
        for (f, d) in [("vxlan_device", &self.vxlan_device), ("gretap_device", &self.gretap_device)]
        {
            if let Some(d) = d {
                check_ifname(&format!("offload.{f}"), d)?;
            }
        }
        let mut pfs = HashSet::new();
        for (i, pf) in self.pfs.iter().enumerate() {
            let at = |f: &str| format!("offload.pfs[{i}].{f}");
            check_ifname(&at("interface"), &pf.interface)?;
            if !pfs.insert(pf.interface.as_str()) {
                return Err(bad(
                    at("interface"),
                    format!("duplicate physical function {:?}", pf.interface),
                ));
            }
            let mut vfs = HashSet::new();
            for (j, v) in pf.vfs.iter().enumerate() {
                let at = |f: &str| format!("offload.pfs[{i}].vfs[{j}].{f}");
                if !vfs.insert(v.vf) {
                    return Err(bad(at("vf"), format!("duplicate settings for vf {}", v.vf)));
                }
                if let Some(n) = pf.num_vfs {
                    if v.vf >= n {
                        return Err(bad(
                            at("vf"),
                            format!("vf {} does not exist with num_vfs = {n}", v.vf),
                        ));
                    }
                }
                if let Some(m) = v.mac {
                    if m.0[0] & 1 == 1 {
                        return Err(bad(at("mac"), format!("{m} is a multicast address")));
                    }
                }
                if let Some(vl) = v.vlan {
                    if vl > 4094 {
                        return Err(bad(
                            at("vlan"),
                            format!("{vl} is out of range (0..=4094, 0 = none)"),
                        ));
                    }
                }
                if let Some(q) = v.qos {
                    if q > 7 {
                        return Err(bad(at("qos"), format!("{q} is out of range (0..=7)")));
                    }
                    if v.vlan.is_none() {
                        return Err(bad(
                            at("qos"),
                            "qos is the priority of the port VLAN: give vlan too",
                        ));
                    }
                }
                match (v.min_tx_rate, v.max_tx_rate) {
                    (Some(_), None) => {
                        return Err(bad(
                            at("max_tx_rate"),
                            "min_tx_rate and max_tx_rate are set together",
                        ))
                    }
                    (None, Some(_)) => {
                        return Err(bad(
                            at("min_tx_rate"),
                            "min_tx_rate and max_tx_rate are set together",
                        ))
                    }
                    (Some(lo), Some(hi)) if hi != 0 && lo > hi => {
                        return Err(bad(
                            at("min_tx_rate"),
                            format!("{lo} exceeds max_tx_rate {hi}"),
                        ))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

fn bad(path: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { path: path.into(), reason: reason.into() }
}

impl Config {
    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a Config always serialises")
    }

    /// The VNI (VXLAN) or key (GRE) a tunnel's packets carry.
    pub fn tunnel_id(t: &Tunnel) -> Option<u32> {
        match t.kind {
            TunnelType::Vxlan | TunnelType::Geneve => t.vni,
            TunnelType::Gretap | TunnelType::Gre => t.key,
            TunnelType::Nvgre => {
                Some(encap::wire::gre::nvgre_key(t.vsid.unwrap_or(0), t.flow_id.unwrap_or(0)))
            }
        }
    }

    /// Checks every cross-reference and range; the first problem is returned
    /// with the path of the field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.schema_version > SCHEMA_VERSION || self.schema_version == 0 {
            return Err(bad(
                "schema_version",
                format!(
                    "{} is not supported: this build reads schema versions 1..={SCHEMA_VERSION}",
                    self.schema_version
                ),
            ));
        }
        let mut ports: HashMap<&str, PortKind> = HashMap::new();
        for (i, p) in self.ports.iter().enumerate() {
            check_name(&format!("ports[{i}].name"), &p.name)?;
            if ports.insert(&p.name, p.kind).is_some() {
                return Err(bad(
                    format!("ports[{i}].name"),
                    format!("duplicate port name {:?}", p.name),
                ));
            }
            let only = |field: &str, backend: &str| {
                bad(
                    format!("ports[{i}].{field}"),
                    format!("only applies to backend = \"{backend}\""),
                )
            };
            if !matches!(p.backend, Backend::AfXdp | Backend::Auto) {
                if p.xdp_mode != XdpModeSpec::default() {
                    return Err(only("xdp_mode", "af_xdp"));
                }
                if p.zero_copy != ZeroCopy::default() {
                    return Err(only("zero_copy", "af_xdp"));
                }
            }
            if p.backend != Backend::Tap && p.offloads != Offloads::default() {
                return Err(only("offloads", "tap"));
            }
        }
        if self.ports.len() > u16::MAX as usize - 1 {
            return Err(bad("ports", "too many ports"));
        }
        let mut tunnels: HashMap<&str, &Tunnel> = HashMap::new();
        let mut endpoints = HashSet::new();
        let mut udp_ports: HashMap<u16, TunnelType> = HashMap::new();
        for (i, t) in self.tunnels.iter().enumerate() {
            let at = |f: &str| format!("tunnels[{i}].{f}");
            check_name(&at("name"), &t.name)?;
            if tunnels.insert(&t.name, t).is_some() {
                return Err(bad(at("name"), format!("duplicate tunnel name {:?}", t.name)));
            }
            match ports.get(t.uplink.as_str()) {
                None => return Err(bad(at("uplink"), format!("unknown port {:?}", t.uplink))),
                Some(PortKind::Workload) => {
                    return Err(bad(
                        at("uplink"),
                        format!("port {:?} is a workload port, not an uplink", t.uplink),
                    ))
                }
                Some(PortKind::Uplink) => {}
            }
            if t.local.is_ipv4() != t.remote.is_ipv4() {
                return Err(bad(at("remote"), "local and remote must be the same address family"));
            }
            if t.local.is_unspecified() || t.local.is_multicast() {
                return Err(bad(at("local"), format!("{} cannot be a tunnel endpoint", t.local)));
            }
            if t.remote.is_unspecified() || t.remote.is_multicast() {
                return Err(bad(at("remote"), format!("{} cannot be a tunnel endpoint", t.remote)));
            }
            match t.kind {
                TunnelType::Vxlan | TunnelType::Geneve => {
                    let vni = t.vni.ok_or_else(|| {
                        bad(at("vni"), format!("a {} tunnel needs a vni", kind_name(t.kind)))
                    })?;
                    if vni > vxlan::MAX_VNI {
                        return Err(bad(
                            at("vni"),
                            format!("{vni} is out of range (0..={})", vxlan::MAX_VNI),
                        ));
                    }
                    if t.udp_port() == 0 {
                        return Err(bad(at("udp_port"), "0 is not a valid port"));
                    }
                    for f in [("key", t.key.is_some()), ("vsid", t.vsid.is_some())] {
                        if f.1 {
                            return Err(bad(at(f.0), "only GRE tunnels have this field"));
                        }
                    }
                }
                TunnelType::Nvgre => {
                    let vsid =
                        t.vsid.ok_or_else(|| bad(at("vsid"), "an nvgre tunnel needs a vsid"))?;
                    if vsid > 0x00ff_ffff {
                        return Err(bad(
                            at("vsid"),
                            format!("{vsid} is out of range (0..=16777215)"),
                        ));
                    }
                    if t.key.is_some() {
                        return Err(bad(at("key"), "nvgre derives its key from vsid and flow_id"));
                    }
                }
                TunnelType::Gretap | TunnelType::Gre => {
                    if t.vni.is_some() {
                        return Err(bad(at("vni"), "GRE tunnels have a key, not a vni"));
                    }
                }
            }
            if t.kind == TunnelType::Geneve {
                crate::geneve::check_tunnel_options(&at("options"), &t.options)?;
            } else if !t.options.is_empty() {
                return Err(bad(at("options"), "only geneve tunnels send options"));
            }
            if matches!(t.kind, TunnelType::Vxlan | TunnelType::Geneve) {
                let other = udp_ports.insert(t.udp_port(), t.kind);
                if other.is_some_and(|k| k != t.kind) {
                    return Err(bad(
                        at("udp_port"),
                        format!(
                            "port {} already carries {}: one UDP port carries one encapsulation",
                            t.udp_port(),
                            kind_name(other.unwrap())
                        ),
                    ));
                }
            }
            if let OrInherit::Value(0) = t.ttl {
                return Err(bad(at("ttl"), "0 would be dropped by the first router"));
            }
            if let OrInherit::Value(d) = t.dscp {
                if d > 63 {
                    return Err(bad(at("dscp"), format!("{d} is out of range (0..=63)")));
                }
            }
            if t.src_port_range[0] > t.src_port_range[1] {
                return Err(bad(at("src_port_range"), "the first port must not exceed the second"));
            }
            let min_mtu = if t.local.is_ipv4() { 576 } else { 1280 };
            if t.mtu < min_mtu {
                return Err(bad(at("mtu"), format!("{} is below the minimum {min_mtu}", t.mtu)));
            }
            let family = match t.kind {
                TunnelType::Vxlan => 0,
                TunnelType::Geneve => 1,
                _ => 2,
            };
            let id = (t.local, t.remote, family, Self::tunnel_id(t));
            if !endpoints.insert(id) {
                return Err(bad(
                    at("remote"),
                    "another tunnel has the same endpoints and VNI/key: received packets would be ambiguous",
                ));
            }
        }
        let mut ids = HashSet::new();
        let mut geneve_matches = HashSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let at = |f: &str| format!("rules[{i}].{f}");
            if !ids.insert(r.id) {
                return Err(bad(at("id"), format!("duplicate rule id {}", r.id)));
            }
            let m = &r.matches;
            if let Some(p) = &m.in_port {
                if !ports.contains_key(p.as_str()) {
                    return Err(bad(at("match.in_port"), format!("unknown port {p:?}")));
                }
            }
            if let Some(t) = &m.tunnel {
                if !tunnels.contains_key(t.as_str()) {
                    return Err(bad(at("match.tunnel"), format!("unknown tunnel {t:?}")));
                }
            }
            if let Some(v) = m.vlan {
                if v > 4094 {
                    return Err(bad(
                        at("match.vlan"),
                        format!("{v} is out of range (0..=4094, 0 = untagged)"),
                    ));
                }
            }
            if let (Some(s), Some(d)) = (m.ip_src, m.ip_dst) {
                if s.addr.is_ipv4() != d.addr.is_ipv4() {
                    return Err(bad(
                        at("match.ip_dst"),
                        "ip_src and ip_dst must be the same address family",
                    ));
                }
            }
            if let Some(o) = &m.geneve_option {
                o.check(&at("match.geneve_option"))?;
                geneve_matches.insert(o);
                if geneve_matches.len() > encap::decap::MAX_GENEVE_MATCHES {
                    return Err(bad(
                        at("match.geneve_option"),
                        format!(
                            "more than {} distinct geneve options are matched",
                            encap::decap::MAX_GENEVE_MATCHES
                        ),
                    ));
                }
            }
            if r.actions.is_empty() {
                return Err(bad(at("actions"), "a rule needs at least one action"));
            }
            if !r.actions.iter().any(Action::is_terminal) {
                return Err(bad(
                    at("actions"),
                    "no encap, output, forward_l2 or drop: the packet's fate would be undefined",
                ));
            }
            for (j, a) in r.actions.iter().enumerate() {
                let at = || format!("rules[{i}].actions[{j}]");
                match a {
                    Action::Encap(t) if !tunnels.contains_key(t.as_str()) => {
                        return Err(bad(format!("{}.encap", at()), format!("unknown tunnel {t:?}")))
                    }
                    Action::Output(p) if !ports.contains_key(p.as_str()) => {
                        return Err(bad(format!("{}.output", at()), format!("unknown port {p:?}")))
                    }
                    Action::PushVlan(v) | Action::SetVlan(v) if *v == 0 || *v > 4094 => {
                        return Err(bad(at(), format!("vlan {v} is out of range (1..=4094)")))
                    }
                    Action::ForwardL2(v) if *v > vxlan::MAX_VNI => {
                        return Err(bad(
                            format!("{}.forward_l2", at()),
                            format!("vni {v} is out of range"),
                        ))
                    }
                    _ => {}
                }
            }
        }
        let mut fdb = HashSet::new();
        for (i, e) in self.fdb.iter().enumerate() {
            let t = tunnels.get(e.tunnel.as_str()).ok_or_else(|| {
                bad(format!("fdb[{i}].tunnel"), format!("unknown tunnel {:?}", e.tunnel))
            })?;
            if t.kind == TunnelType::Gre {
                return Err(bad(
                    format!("fdb[{i}].tunnel"),
                    "an L3 GRE tunnel cannot carry Ethernet frames",
                ));
            }
            if !fdb.insert((e.vni, e.mac)) {
                return Err(bad(
                    format!("fdb[{i}]"),
                    format!("duplicate entry for vni {} mac {}", e.vni, e.mac),
                ));
            }
        }
        let mut vnis = HashSet::new();
        for (i, f) in self.flood.iter().enumerate() {
            if !vnis.insert(f.vni) {
                return Err(bad(
                    format!("flood[{i}].vni"),
                    format!("duplicate flood list for vni {}", f.vni),
                ));
            }
            for (j, t) in f.tunnels.iter().enumerate() {
                let tun = tunnels.get(t.as_str()).ok_or_else(|| {
                    bad(format!("flood[{i}].tunnels[{j}]"), format!("unknown tunnel {t:?}"))
                })?;
                if tun.kind == TunnelType::Gre {
                    return Err(bad(
                        format!("flood[{i}].tunnels[{j}]"),
                        "an L3 GRE tunnel cannot carry Ethernet frames",
                    ));
                }
            }
            for (j, p) in f.ports.iter().enumerate() {
                if ports.get(p.as_str()) != Some(&PortKind::Workload) {
                    return Err(bad(
                        format!("flood[{i}].ports[{j}]"),
                        format!("{p:?} is not a workload port"),
                    ));
                }
            }
        }
        self.offload.validate()?;
        self.validate_networks()?;
        if !TIER_ENTRIES_RANGE.contains(&self.xdp_tier_entries) {
            return Err(bad(
                "xdp_tier_entries",
                format!(
                    "{} is out of range ({}..={})",
                    self.xdp_tier_entries,
                    TIER_ENTRIES_RANGE.start(),
                    TIER_ENTRIES_RANGE.end()
                ),
            ));
        }
        Ok(())
    }
}

impl Config {
    fn validate_networks(&self) -> Result<(), ConfigError> {
        let mut vnis = HashSet::new();
        for (i, n) in self.networks.iter().enumerate() {
            let at = |f: &str| format!("networks[{i}].{f}");
            if n.vni > vxlan::MAX_VNI {
                return Err(bad(at("vni"), format!("{} is out of range", n.vni)));
            }
            if !vnis.insert(n.vni) {
                return Err(bad(at("vni"), format!("duplicate network for vni {}", n.vni)));
            }
            if n.ageing_secs < 2 {
                return Err(bad(
                    at("ageing_secs"),
                    "below the minimum 2 (entries are refreshed every half second)",
                ));
            }
            if !MAC_LIMIT_RANGE.contains(&n.mac_limit) {
                return Err(bad(
                    at("mac_limit"),
                    format!(
                        "{} is out of range ({}..={})",
                        n.mac_limit,
                        MAC_LIMIT_RANGE.start(),
                        MAC_LIMIT_RANGE.end()
                    ),
                ));
            }
            let mut ips = HashSet::new();
            for (j, b) in n.bindings.iter().enumerate() {
                let at = |f: &str| format!("networks[{i}].bindings[{j}].{f}");
                if b.mac.0[0] & 1 != 0 || b.mac.0 == [0; 6] {
                    return Err(bad(at("mac"), format!("{} is not a unicast address", b.mac)));
                }
                if b.ip.is_unspecified() || b.ip.is_multicast() {
                    return Err(bad(at("ip"), format!("{} cannot be bound to a workload", b.ip)));
                }
                if !ips.insert(b.ip) {
                    return Err(bad(at("ip"), format!("{} is bound twice", b.ip)));
                }
            }
        }
        Ok(())
    }
}

/// The type's name as the configuration writes it.
fn kind_name(k: TunnelType) -> &'static str {
    match k {
        TunnelType::Vxlan => "vxlan",
        TunnelType::Gretap => "gretap",
        TunnelType::Nvgre => "nvgre",
        TunnelType::Gre => "gre",
        TunnelType::Geneve => "geneve",
    }
}

fn check_name(path: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(bad(path, format!("{name:?} is not a valid name (1-64 of A-Z a-z 0-9 - _ .)")))
    }
}

/// A small valid document used by the tests of several modules.
#[cfg(test)]
pub(crate) const EXAMPLE_FOR_TESTS: &str = r#"
generation = 3

[[ports]]
name = "wl0"
kind = "workload"

[[ports]]
name = "up0"
kind = "uplink"
mac = "02:00:00:00:00:10"

[[tunnels]]
name = "t1"
type = "vxlan"
uplink = "up0"
local = "192.0.2.1"
remote = "192.0.2.2"
vni = 42
next_hop_mac = "02:00:00:00:00:20"
ttl = "inherit"

[[rules]]
id = 1
priority = 10
match = { in_port = "wl0", ip_dst = "198.51.100.0/24", ip_proto = 17 }
actions = [{ push_vlan = 100 }, "count", { encap = "t1" }]

[[rules]]
id = 2
match = { tunnel = "t1", vni = 42 }
actions = [{ output = "wl0" }]

[[fdb]]
vni = 42
mac = "02:00:00:00:00:02"
tunnel = "t1"

[[flood]]
vni = 42
tunnels = ["t1"]
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_loads_and_roundtrips() {
        let c = Config::from_toml(EXAMPLE_FOR_TESTS).unwrap();
        assert_eq!(c.generation, 3);
        assert_eq!(c.tunnels[0].ttl, OrInherit::Word(InheritWord::Inherit));
        assert_eq!(c.rules[0].actions[0], Action::PushVlan(100));
        assert_eq!(c.rules[0].matches.ip_dst.unwrap().len, 24);
        let again = Config::from_toml(&c.to_toml()).unwrap();
        assert_eq!(again, c);
    }

    fn err(edit: impl Fn(&mut Config)) -> ConfigError {
        let mut c = Config::from_toml(EXAMPLE_FOR_TESTS).unwrap();
        edit(&mut c);
        c.validate().unwrap_err()
    }

    #[test]
    fn errors_name_the_field() {
        type Edit = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(Edit, &str, &str)> = vec![
            (Box::new(|c| c.tunnels[0].vni = Some(1 << 24)), "tunnels[0].vni", "out of range"),
            (Box::new(|c| c.rules[1].id = 1), "rules[1].id", "duplicate rule id"),
            (
                Box::new(|c| c.rules[0].actions[2] = Action::Encap("t9".into())),
                "rules[0].actions[2].encap",
                "unknown tunnel \"t9\"",
            ),
            (
                Box::new(|c| c.rules[0].actions = vec![Action::Count]),
                "rules[0].actions",
                "undefined",
            ),
            (
                Box::new(|c| c.tunnels[0].remote = "2001:db8::2".parse().unwrap()),
                "tunnels[0].remote",
                "address family",
            ),
            (
                Box::new(|c| c.tunnels[0].uplink = "wl0".into()),
                "tunnels[0].uplink",
                "workload port",
            ),
            (Box::new(|c| c.ports[1].name = "wl0".into()), "ports[1].name", "duplicate port name"),
            (Box::new(|c| c.fdb[0].tunnel = "nope".into()), "fdb[0].tunnel", "unknown tunnel"),
            (
                Box::new(|c| c.rules[0].actions[0] = Action::PushVlan(4095)),
                "rules[0].actions[0]",
                "out of range",
            ),
            (Box::new(|c| c.schema_version = 99), "schema_version", "not supported"),
            (Box::new(|c| c.tunnels[0].mtu = 100), "tunnels[0].mtu", "below the minimum"),
            (
                Box::new(|c| c.offload.vxlan_device = Some("a/b".into())),
                "offload.vxlan_device",
                "not a Linux interface name",
            ),
            (
                Box::new(|c| {
                    c.offload.pfs = vec![PhysFn {
                        interface: "pf0".into(),
                        num_vfs: Some(2),
                        vfs: vec![VfSettings { vf: 2, ..Default::default() }],
                    }]
                }),
                "offload.pfs[0].vfs[0].vf",
                "does not exist with num_vfs = 2",
            ),
            (
                Box::new(|c| {
                    c.offload.pfs = vec![PhysFn {
                        interface: "pf0".into(),
                        num_vfs: None,
                        vfs: vec![VfSettings { vf: 0, qos: Some(3), ..Default::default() }],
                    }]
                }),
                "offload.pfs[0].vfs[0].qos",
                "give vlan too",
            ),
            (
                Box::new(|c| {
                    c.offload.pfs = vec![PhysFn {
                        interface: "pf0".into(),
                        num_vfs: None,
                        vfs: vec![VfSettings { vf: 0, vlan: Some(4095), ..Default::default() }],
                    }]
                }),
                "offload.pfs[0].vfs[0].vlan",
                "out of range",
            ),
            (
                Box::new(|c| {
                    c.offload.pfs = vec![PhysFn {
                        interface: "pf0".into(),
                        num_vfs: None,
                        vfs: vec![VfSettings {
                            vf: 0,
                            min_tx_rate: Some(10),
                            ..Default::default()
                        }],
                    }]
                }),
                "offload.pfs[0].vfs[0].max_tx_rate",
                "set together",
            ),
            (Box::new(|c| c.xdp_tier_entries = 1), "xdp_tier_entries", "out of range"),
            (
                Box::new(|c| c.offload.pfs = vec![PhysFn::default(), PhysFn::default()]),
                "offload.pfs[0].interface",
                "not a Linux interface name",
            ),
        ];
        for (edit, path, reason) in cases {
            let e = err(edit);
            assert_eq!(e.path(), Some(path), "{e}");
            assert!(e.to_string().contains(reason), "{e} lacks {reason:?}");
        }
    }

    #[test]
    fn the_default_document_is_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn syntax_errors_say_where() {
        let e = Config::from_toml("[[rules]]\nid = 1\nactions = []\nbogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = Config::from_toml(
            "[[rules]]\nid = 1\nmatch = { ip_dst = \"198.51.100.0/33\" }\nactions = [\"drop\"]\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        let e = Config::from_toml("[[ports]]\nname = \"p\"\nkind = \"uplink\"\nmac = \"02:00\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("not a MAC address"), "{e}");
    }
}
