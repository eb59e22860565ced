//! The compiler: a validated `Config` becomes an immutable `RuleSet`, the only
//! thing the pipeline reads. Names are resolved to indices, matches to masks
//! and values, tunnels to encapsulation parameters, and the rules to a
//! classifier, so the per-packet path never looks anything up by name.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use encap::{
    DecapConfig, DfMode, DscpMode, EcnMode, EncapOptions, Encapsulation, TtlMode, TunnelId,
    TunnelParams, Underlay,
};

use crate::classifier::{ClassRule, Classifier};
use crate::flow_key::{field, v4_mapped, FlowKey, VLAN_PRESENT};
use crate::model::{self, Config, ConfigError, DfSpec, EcnSpec, OrInherit, PortKind, TunnelType};

/// A port, as the pipeline sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRt {
    pub name: String,
    pub kind: PortKind,
    pub mac: Option<[u8; 6]>,
}

/// A tunnel, as the pipeline sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelRt {
    pub name: String,
    /// Encapsulation parameters; `dst_mac` is the static next hop, if any.
    pub params: TunnelParams,
    /// True when the configuration gives the next hop's MAC address, so no
    /// neighbour resolution applies.
    pub static_next_hop: bool,
    pub uplink: u16,
    pub id: TunnelId,
    pub local: IpAddr,
    pub remote: IpAddr,
    /// Largest inner IP packet the tunnel carries without exceeding the underlay
    /// MTU (what an ICMP "too big" reply announces).
    pub inner_ip_mtu: u16,
    /// The tunnel carries Ethernet frames (VXLAN, gretap, NVGRE) rather than
    /// IP packets (L3 GRE): what a decapsulated payload must be.
    pub ethernet: bool,
}

/// A compiled action: names resolved to indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Encap(u16),
    Output(u16),
    Drop,
    PushVlan(u16),
    PopVlan,
    SetVlan(u16),
    SetEthSrc([u8; 6]),
    SetEthDst([u8; 6]),
    Count,
    ForwardL2(u32),
}

impl Act {
    /// True for actions that send the packet somewhere (and may need a copy).
    pub fn sends(&self) -> bool {
        matches!(self, Act::Encap(_) | Act::Output(_) | Act::ForwardL2(_))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRt {
    pub id: u32,
    pub priority: u16,
    pub actions: Vec<Act>,
    /// False when the rule opts out of the XDP fast tier.
    pub xdp_tier: bool,
}

/// Replication targets for one VNI.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flood {
    pub tunnels: Vec<u16>,
    pub ports: Vec<u16>,
}

/// A fast, deterministic hasher for the small control-built maps the fast
/// path reads (SipHash's DoS resistance is not needed for keys we built).
#[derive(Default)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(5) ^ *b as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = (self.0.rotate_left(5) ^ v as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A network's learning and suppression settings, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkRt {
    pub learning: bool,
    pub ageing_ns: u64,
    pub mac_limit: u32,
    pub suppress: bool,
    /// Static IP -> MAC bindings.
    pub bindings: FastMap<IpAddr, [u8; 6]>,
}

/// The networks of a validated configuration.
pub fn compile_networks(c: &Config) -> FastMap<u32, NetworkRt> {
    c.networks
        .iter()
        .map(|n| {
            let rt = NetworkRt {
                learning: n.learning,
                ageing_ns: n.ageing_secs as u64 * 1_000_000_000,
                mac_limit: n.mac_limit,
                suppress: n.suppress_arp_nd,
                bindings: n.bindings.iter().map(|b| (b.ip, b.mac.0)).collect(),
            };
            (n.vni, rt)
        })
        .collect()
}

/// Everything the pipeline needs for one generation. Immutable once built.
#[derive(Clone, Debug)]
pub struct RuleSet {
    pub generation: u64,
    pub config: Config,
    pub ports: Vec<PortRt>,
    pub tunnels: Vec<TunnelRt>,
    pub rules: Vec<RuleRt>,
    pub classifier: Classifier,
    pub decap: DecapConfig,
    /// (local, remote, VNI/key) -> tunnel index.
    pub decap_index: FastMap<(IpAddr, IpAddr, TunnelId), u16>,
    pub fdb: FastMap<(u32, [u8; 6]), u16>,
    pub flood: FastMap<u32, Flood>,
    /// Networks that learn or suppress (`forward_l2` VNI -> settings).
    pub networks: FastMap<u32, NetworkRt>,
}

impl RuleSet {
    pub fn port_index(&self, name: &str) -> Option<u16> {
        self.ports.iter().position(|p| p.name == name).map(|i| i as u16)
    }

    pub fn tunnel_index(&self, name: &str) -> Option<u16> {
        self.tunnels.iter().position(|t| t.name == name).map(|i| i as u16)
    }
}

fn ip_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => v4_mapped(v.octets()),
        IpAddr::V6(v) => v.octets(),
    }
}

/// The 128-bit mask of a prefix over the key's IPv6 (or IPv4-mapped) layout.
fn prefix_mask(p: &model::Prefix) -> (u64, u64) {
    let bits = if p.addr.is_ipv4() { 96 + p.len as u32 } else { p.len as u32 };
    let m: u128 = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
    ((m >> 64) as u64, m as u64)
}

/// The distinct Geneve options rules match on, in rule order: entry `i` is
/// bit `i` of the flow key's `geneve_options` field.
pub fn geneve_matches(config: &Config) -> Vec<encap::GeneveOptionMatch> {
    let mut out: Vec<encap::GeneveOptionMatch> = Vec::new();
    for o in config.rules.iter().filter_map(|r| r.matches.geneve_option.as_ref()) {
        let m = o.to_match();
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

fn tunnel_params(t: &model::Tunnel, uplink_mac: Option<[u8; 6]>) -> TunnelParams {
    let encap = match t.kind {
        TunnelType::Vxlan => {
            Encapsulation::Vxlan { vni: t.vni.unwrap_or(0), dst_port: t.udp_port() }
        }
        TunnelType::Geneve => Encapsulation::Geneve {
            vni: t.vni.unwrap_or(0),
            dst_port: t.udp_port(),
            options: crate::geneve::encode(&t.options),
        },
        TunnelType::Gretap | TunnelType::Nvgre => {
            Encapsulation::GreTap { key: Config::tunnel_id(t) }
        }
        TunnelType::Gre => Encapsulation::GreL3 { key: t.key },
    };
    let underlay = match (t.local, t.remote) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Underlay::V4 { src: s.octets(), dst: d.octets() },
        (s, d) => Underlay::V6 { src: ip_octets(s), dst: ip_octets(d) },
    };
    TunnelParams {
        encap,
        underlay,
        src_mac: uplink_mac.unwrap_or_default(),
        dst_mac: t.next_hop_mac.map(|m| m.0).unwrap_or_default(),
        outer_vlan: None,
        options: EncapOptions {
            df: match t.df {
                DfSpec::Set => DfMode::Set,
                DfSpec::Unset => DfMode::Unset,
                DfSpec::Inherit => DfMode::Inherit,
            },
            ttl: match t.ttl {
                OrInherit::Value(v) => TtlMode::Fixed(v),
                OrInherit::Word(_) => TtlMode::Inherit,
            },
            dscp: match t.dscp {
                OrInherit::Value(v) => DscpMode::Fixed(v),
                OrInherit::Word(_) => DscpMode::Inherit,
            },
            ecn: match t.ecn {
                EcnSpec::Normal => EcnMode::Normal,
                EcnSpec::Compat => EcnMode::Compat,
            },
            udp_checksum: t.udp_checksum,
            gre_checksum: t.gre_checksum,
            gre_sequence: t.gre_sequence,
            src_port_min: t.src_port_range[0],
            src_port_max: t.src_port_range[1],
            underlay_mtu: t.mtu,
        },
    }
}

/// Compiles a configuration. It is validated first, so a `RuleSet` only ever
/// comes from a valid document.
pub fn compile(config: &Config) -> Result<RuleSet, ConfigError> {
    config.validate()?;
    let ports: Vec<PortRt> = config
        .ports
        .iter()
        .map(|p| PortRt { name: p.name.clone(), kind: p.kind, mac: p.mac.map(|m| m.0) })
        .collect();
    let port_ix: HashMap<&str, u16> =
        config.ports.iter().enumerate().map(|(i, p)| (p.name.as_str(), i as u16)).collect();
    let tun_ix: HashMap<&str, u16> =
        config.tunnels.iter().enumerate().map(|(i, t)| (t.name.as_str(), i as u16)).collect();

    let mut decap = DecapConfig {
        local_v4: Vec::new(),
        local_v6: Vec::new(),
        vxlan_ports: Vec::new(),
        vxlan_strict: config.decap.vxlan_strict,
        verify_udp_checksum_v4: config.decap.verify_udp_checksum,
        accept_zero_checksum_v6: config.decap.accept_zero_checksum_v6,
        verify_gre_checksum: config.decap.verify_gre_checksum,
        geneve_ports: Vec::new(),
        geneve_matches: geneve_matches(config),
    };
    let mut decap_index = FastMap::default();
    let mut tunnels = Vec::new();
    for (i, t) in config.tunnels.iter().enumerate() {
        let uplink = port_ix[t.uplink.as_str()];
        let params = tunnel_params(t, ports[uplink as usize].mac);
        encap::EncapTemplate::new(&params).map_err(|e| ConfigError::Invalid {
            path: format!("tunnels[{i}]"),
            reason: e.to_string(),
        })?;
        let id = match t.kind {
            TunnelType::Vxlan => TunnelId::Vxlan { vni: t.vni.unwrap_or(0) },
            TunnelType::Geneve => TunnelId::Geneve { vni: t.vni.unwrap_or(0) },
            _ => TunnelId::Gre { key: Config::tunnel_id(t) },
        };
        match t.local {
            IpAddr::V4(a) if !decap.local_v4.contains(&a.octets()) => {
                decap.local_v4.push(a.octets())
            }
            IpAddr::V6(a) if !decap.local_v6.contains(&a.octets()) => {
                decap.local_v6.push(a.octets())
            }
            _ => {}
        }
        let port = t.udp_port();
        if t.kind == TunnelType::Vxlan && !decap.vxlan_ports.contains(&port) {
            decap.vxlan_ports.push(port);
        }
        if t.kind == TunnelType::Geneve && !decap.geneve_ports.contains(&port) {
            decap.geneve_ports.push(port);
        }
        decap_index.insert((t.local, t.remote, id), i as u16);
        // Ethernet inside the tunnel counts against the MTU for L2 tunnels.
        let inner_l2 = if t.kind == TunnelType::Gre { 0 } else { 14 };
        let inner_ip_mtu = (t.mtu as usize - params.ip_overhead() - inner_l2) as u16;
        tunnels.push(TunnelRt {
            name: t.name.clone(),
            params,
            static_next_hop: t.next_hop_mac.is_some(),
            uplink,
            id,
            local: t.local,
            remote: t.remote,
            inner_ip_mtu,
            ethernet: t.kind != TunnelType::Gre,
        });
    }

    let mut rules = Vec::with_capacity(config.rules.len());
    let mut class = Vec::with_capacity(config.rules.len());
    for r in &config.rules {
        let (mut mask, mut value) = match_to_mask(&r.matches, &port_ix, &tun_ix);
        if let Some(o) = &r.matches.geneve_option {
            let m = o.to_match();
            let bit = decap.geneve_matches.iter().position(|g| *g == m).expect("collected above");
            mask.0[field::GENEVE_OPTIONS.0] |= 1 << bit;
            value.0[field::GENEVE_OPTIONS.0] |= 1 << bit;
        }
        class.push(ClassRule { mask, value, priority: r.priority, id: r.id });
        let actions = r
            .actions
            .iter()
            .map(|a| match a {
                model::Action::Encap(t) => Act::Encap(tun_ix[t.as_str()]),
                model::Action::Output(p) => Act::Output(port_ix[p.as_str()]),
                model::Action::Drop => Act::Drop,
                model::Action::PushVlan(v) => Act::PushVlan(*v),
                model::Action::PopVlan => Act::PopVlan,
                model::Action::SetVlan(v) => Act::SetVlan(*v),
                model::Action::SetEthSrc(m) => Act::SetEthSrc(m.0),
                model::Action::SetEthDst(m) => Act::SetEthDst(m.0),
                model::Action::Count => Act::Count,
                model::Action::ForwardL2(v) => Act::ForwardL2(*v),
            })
            .collect();
        let xdp_tier = r.xdp_tier == model::TierSpec::Auto;
        rules.push(RuleRt { id: r.id, priority: r.priority, actions, xdp_tier });
    }
    let classifier = Classifier::build(&class);

    let fdb = config.fdb.iter().map(|e| ((e.vni, e.mac.0), tun_ix[e.tunnel.as_str()])).collect();
    let flood = config
        .flood
        .iter()
        .map(|f| {
            let tunnels = f.tunnels.iter().map(|t| tun_ix[t.as_str()]).collect();
            let ports = f.ports.iter().map(|p| port_ix[p.as_str()]).collect();
            (f.vni, Flood { tunnels, ports })
        })
        .collect();

    Ok(RuleSet {
        generation: config.generation,
        config: config.clone(),
        ports,
        tunnels,
        rules,
        classifier,
        decap,
        decap_index,
        fdb,
        flood,
        networks: compile_networks(config),
    })
}

/// A rule's match as a mask and value over the flow key.
pub fn match_to_mask(
    m: &model::Match,
    ports: &HashMap<&str, u16>,
    tunnels: &HashMap<&str, u16>,
) -> (FlowKey, FlowKey) {
    let mut mask = FlowKey::default();
    let mut val = FlowKey::default();
    let mut set = |f: field::Field, v: u64| {
        mask.set(f, u64::MAX);
        val.set(f, v);
    };
    if let Some(p) = &m.in_port {
        set(field::IN_PORT, ports[p.as_str()] as u64);
    }
    if let Some(t) = &m.tunnel {
        set(field::TUNNEL, tunnels[t.as_str()] as u64 + 1);
    }
    if let Some(v) = m.vni {
        set(field::VNI, v as u64);
    }
    let mac =
        |m: &model::Mac| u64::from_be_bytes([0, 0, m.0[0], m.0[1], m.0[2], m.0[3], m.0[4], m.0[5]]);
    if let Some(a) = &m.eth_dst {
        set(field::ETH_DST, mac(a));
    }
    if let Some(a) = &m.eth_src {
        set(field::ETH_SRC, mac(a));
    }
    if let Some(v) = m.vlan {
        set(field::VLAN, if v == 0 { 0 } else { (VLAN_PRESENT | v) as u64 });
    }
    // An IP prefix implies its EtherType, so an IPv4 prefix never matches an
    // IPv6 packet whose address happens to look IPv4-mapped.
    let implied = m.ip_src.or(m.ip_dst).map(|p| if p.addr.is_ipv4() { 0x0800 } else { 0x86dd });
    if let Some(e) = m.ethertype.or(implied) {
        set(field::ETHERTYPE, e as u64);
    }
    if let Some(p) = m.ip_proto {
        set(field::IP_PROTO, p as u64);
    }
    if let Some(p) = m.l4_src {
        set(field::L4_SRC, p as u64);
    }
    if let Some(p) = m.l4_dst {
        set(field::L4_DST, p as u64);
    }
    for (p, w) in [(m.ip_src, 3), (m.ip_dst, 5)] {
        if let Some(p) = p {
            let (hi, lo) = prefix_mask(&p);
            let a = ip_octets(p.addr);
            mask.0[w] = hi;
            mask.0[w + 1] = lo;
            val.0[w] = u64::from_be_bytes(a[..8].try_into().unwrap()) & hi;
            val.0[w + 1] = u64::from_be_bytes(a[8..].try_into().unwrap()) & lo;
        }
    }
    (mask, val)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow_key::extract;

    #[test]
    fn example_compiles_with_indices_resolved() {
        let c = Config::from_toml(crate::model::EXAMPLE_FOR_TESTS).unwrap();
        let rs = compile(&c).unwrap();
        assert_eq!(rs.generation, 3);
        assert_eq!(rs.rules[0].actions, vec![Act::PushVlan(100), Act::Count, Act::Encap(0)]);
        assert_eq!(rs.decap.local_v4, vec![[192, 0, 2, 1]]);
        assert_eq!(rs.decap.vxlan_ports, vec![4789]);
        assert!(rs.tunnels[0].static_next_hop);
        assert_eq!(rs.tunnels[0].inner_ip_mtu, 1500 - 36 - 14);
        assert_eq!(rs.fdb.get(&(42, [2, 0, 0, 0, 0, 2])), Some(&0));
    }

    #[test]
    fn prefixes_match_like_prefixes() {
        let c = Config::from_toml(crate::model::EXAMPLE_FOR_TESTS).unwrap();
        let rs = compile(&c).unwrap();
        let frame = |dst: [u8; 4], proto: u8| {
            let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
            f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 0, 64, proto, 0, 0, 198, 51, 100, 7]);
            f.extend_from_slice(&dst);
            f.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
            f
        };
        let wl0 = rs.port_index("wl0").unwrap();
        let (k, _) = extract(&frame([198, 51, 100, 200], 17), wl0, 0, 0);
        assert_eq!(rs.classifier.lookup(&k).rule, Some(0));
        let (k, _) = extract(&frame([198, 51, 101, 1], 17), wl0, 0, 0);
        assert_eq!(rs.classifier.lookup(&k).rule, None, "outside the /24");
        let (k, _) = extract(&frame([198, 51, 100, 1], 6), wl0, 0, 0);
        assert_eq!(rs.classifier.lookup(&k).rule, None, "wrong protocol");
    }
}
