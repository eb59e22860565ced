//! The XDP program (`dataplane/xdp/steer.bpf.c`): steering, and the fast
//! tier in front of it; loaded with aya and attached to each port's
//! interface. The tier's maps are handed to their owner (`io/tier.rs`).
//!
//! It is attached through a BPF link. Pinned (the default for `run`, see
//! io/pin.rs), the link and the maps outlive the process: a restarted
//! overlayd finds them, loads its own program over the same maps when
//! their layout is its own, and swaps it into the link in one step
//! (`BPF_LINK_UPDATE`), so the interface is never without a program; when
//! the layout differs it creates new maps and swaps likewise. Unpinned, the
//! kernel detaches the program when the last descriptor closes. A program
//! attached by other means (for example `ip link set ... xdp`) is never
//! removed silently: attaching fails and says so.

use std::net::IpAddr;
use std::os::fd::RawFd;

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, XskMap};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::{Xdp, XdpMode as AyaMode};
use aya::{Ebpf, EbpfLoader};
use serde::{Deserialize, Serialize};

use super::netdev;
use super::pin::{self, PinError, PinMeta, PortPins, LAYOUT};
use super::steer::{SteerRole, SteerStats};
use super::tier::{TierGen, TierMaps, TierProgramStats};

static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/steer.bpf.o"));

const MAX_VXLAN_PORTS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum XdpMode {
    Native,
    Generic,
}

#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("{ifname}: cannot load the XDP steering program: {reason}")]
    Load { ifname: String, reason: String },
    #[error("{ifname}: cannot attach the XDP program in {mode} mode: {reason}")]
    Attach { ifname: String, mode: &'static str, reason: String },
    #[error("{ifname}: {what}: {reason}")]
    Map { ifname: String, what: &'static str, reason: String },
    #[error("{ifname}: at most {MAX_VXLAN_PORTS} VXLAN ports per uplink (got {count})")]
    TooManyPorts { ifname: String, count: usize },
    #[error("{ifname}: pinning the XDP program: {source}")]
    Pin { ifname: String, source: PinError },
    #[error("{ifname}: pinning the XDP program's link at {path}: {reason}")]
    PinLink { ifname: String, path: String, reason: String },
}

/// Every map of the program: all are pinned together.
const MAPS: [&str; 15] = [
    "meta",
    "xsks",
    "cfg",
    "vteps_v4",
    "vteps_v6",
    "stats",
    "tier_flows",
    "tier_entries",
    "tier_counts",
    "tier_gen",
    "tier_epoch",
    "tier_tx",
    "tier_ident",
    "tier_tunnels",
    "tier_masks",
];

/// What a port's program found of its predecessor's pinned state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inherited {
    /// Nothing (or pinning is off): a new attachment and new maps.
    Nothing,
    /// The link and maps of this layout: the program was swapped in over them.
    Adopted,
    /// A link, with maps of another layout or size: the program was
    /// swapped in with new maps, the old ones removed.
    Replaced,
}

/// `struct steer_cfg` of the C program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct SteerCfg {
    role: u32,
    /// Network byte order; 0 = unused.
    vxlan_ports: [u16; MAX_VXLAN_PORTS],
    gre: u32,
    /// 1: look established flows up in the tier.
    tier: u32,
    /// The port's number in the rule set (the tier key's first word).
    in_port: u32,
    /// 1: the tc tier (io/tc.rs) is attached to this port.
    tc_tier: u32,
}

// SAFETY: plain integers with the C layout, no padding that matters to BPF
// (the kernel copies the value's bytes as they are).
unsafe impl aya::Pod for SteerCfg {}

/// The steering program attached to one interface; detached on drop.
pub struct SteerProgram {
    ifname: String,
    ifindex: u32,
    mode: XdpMode,
    xsks: XskMap<MapData>,
    cfg: Array<MapData, SteerCfg>,
    v4: HashMap<MapData, u32, u8>,
    v6: HashMap<MapData, [u8; 16], u8>,
    stats: PerCpuArray<MapData, u64>,
    /// The tier's setting in the configuration map: its port number when on.
    tier_port: Option<u16>,
    /// The tier's maps, until their owner takes them.
    tier: Option<(TierMaps, TierGen)>,
    /// Loaded with the tier's maps sized for use.
    tier_loaded: bool,
    /// The tc tier's setting in the configuration map.
    tc_tier: bool,
    /// The `meta` map (layout, generation of the tier's entries).
    meta: Array<MapData, PinMeta>,
    /// Where its state is pinned, when it is.
    pins: Option<PortPins>,
    inherited: Inherited,
    /// The inherited link, until [`swap_in`](Self::swap_in) puts this program in it.
    pending: Option<FdLink>,
    /// The tc tier's inherited (pinned) link, until io/tc.rs takes it:
    /// swapped to this object's tc program with the XDP link.
    tc_inherited: Option<FdLink>,
    /// The tc tier's link to swap in with the XDP link (set by io/tc.rs).
    tc_pending: Option<FdLink>,
    /// The link, pinned: it stays attached when this closes.
    _link: Option<PinnedLink>,
    /// Owns the program and, unpinned, its link: dropping it detaches.
    _ebpf: Ebpf,
}

impl SteerProgram {
    /// Loads the program and attaches it to `ifname` in the driver, falling
    /// back to the generic hook when `allow_generic` is set and the driver
    /// refuses. With `tier`, the tier's maps hold that many flows (else the
    /// tier stays off and its maps minimal).
    /// With `pin`, the program and its maps are pinned (io/pin.rs), and
    /// what a previous overlayd pinned for the interface is taken over.
    pub fn attach(
        ifname: &str,
        role: &SteerRole,
        allow_generic: bool,
        tier: Option<u32>,
        pin: bool,
    ) -> Result<Self, XdpError> {
        let modes: &[XdpMode] =
            if allow_generic { &[XdpMode::Native, XdpMode::Generic] } else { &[XdpMode::Native] };
        match Self::attach_mode(ifname, role, XdpMode::Native, tier, pin, modes) {
            Err(XdpError::Attach { .. }) if allow_generic => {
                Self::attach_mode(ifname, role, XdpMode::Generic, tier, pin, modes)
            }
            r => r,
        }
    }

    /// Attaches in the generic (SKB) hook only.
    pub fn attach_generic(
        ifname: &str,
        role: &SteerRole,
        tier: Option<u32>,
        pin: bool,
    ) -> Result<Self, XdpError> {
        Self::attach_mode(ifname, role, XdpMode::Generic, tier, pin, &[XdpMode::Generic])
    }

    /// `accept`: the modes an inherited attachment may be in to be kept.
    fn attach_mode(
        ifname: &str,
        role: &SteerRole,
        mode: XdpMode,
        tier: Option<u32>,
        pin: bool,
        accept: &[XdpMode],
    ) -> Result<Self, XdpError> {
        let load = |reason: String| XdpError::Load { ifname: ifname.into(), reason };
        let ifindex =
            netdev::ifindex(ifname).map_err(|e| load(format!("no such interface ({e})")))?;
        let pin_err = |source| XdpError::Pin { ifname: ifname.into(), source };
        let pins = if pin { Some(PortPins::for_interface(ifname).map_err(pin_err)?) } else { None };
        let capacity = tier.unwrap_or(0);
        // The predecessor's attachment, if it serves this interface in a
        // mode we accept, and whether its maps are ours to adopt.
        let mut old_link = None;
        let mut adopt = false;
        if let Some(pins) = &pins {
            let (link, meta) = inherited(pins, ifindex, capacity);
            if let Some((link, old_mode)) = link.filter(|(_, m)| accept.contains(m)) {
                adopt = meta.is_some_and(|m| m.layout == LAYOUT && m.tier_capacity == capacity);
                old_link = Some((link, old_mode));
            } else if pins.link().exists() {
                // Another interface's (gone or renamed), or a mode we may not
                // keep: removing the pin lets the kernel detach it.
                let _ = std::fs::remove_file(pins.link());
            }
            if !adopt {
                let _ = std::fs::remove_dir_all(pins.maps_dir(capacity));
            }
        }
        let maps_dir = match &pins {
            Some(p) => {
                let d = p.maps_dir(capacity);
                std::fs::create_dir_all(&d)
                    .map_err(|source| pin_err(PinError::Io { path: d.clone(), source }))?;
                Some(d)
            }
            None => None,
        };
        // The tc tier's pinned link, if it still serves this interface
        // (else its pin goes: the kernel detaches it).
        let tc_inherited = pins.as_ref().and_then(|pins| {
            let path = pins.tc_link();
            let serves = pin::link_state(&path).is_ok_and(|l| l.ifindex == ifindex);
            let link = serves.then(|| PinnedLink::from_pin(&path).ok()).flatten();
            if link.is_none() {
                let _ = std::fs::remove_file(&path);
            }
            link.map(FdLink::from)
        });
        if let Some(pins) = &pins {
            // A tc port's links (the port served by `backend = "tc"` before):
            // removing their pins detaches its programs.
            let _ = std::fs::remove_file(pins.tc_port_link());
            let _ = std::fs::remove_file(pins.tc_sink_link());
        }
        let keep_tc = tc_inherited.is_some();
        let mut p = Self::load_in(ifname, role, tier, maps_dir.as_deref(), adopt, keep_tc)?;
        p.tc_inherited = tc_inherited;
        p.ifindex = ifindex;
        p.mode = mode;
        match old_link {
            Some((link, old_mode)) => {
                // Swapped in by `swap_in`, once the sockets are in this
                // program's maps: until then the old program serves.
                p.mode = old_mode;
                p.pending = Some(link);
                p.inherited = if adopt { Inherited::Adopted } else { Inherited::Replaced };
            }
            None => {
                let (aya_mode, name) = match mode {
                    XdpMode::Native => (AyaMode::Driver, "native"),
                    XdpMode::Generic => (AyaMode::Skb, "generic"),
                };
                let id = p.program()?.attach_to_if_index(ifindex, aya_mode).map_err(|e| {
                    let mut reason = error_chain(&e);
                    if reason.contains("Device or resource busy") || reason.contains("File exists")
                    {
                        reason.push_str(
                            " (another XDP program is attached; detach it with `ip link set dev IF xdp off`, or `overlayd cleanup` if it is a stale overlayd's)",
                        );
                    }
                    XdpError::Attach { ifname: ifname.into(), mode: name, reason }
                })?;
                if let Some(pins) = &pins {
                    let path = pins.link();
                    let link_err = |reason: String| XdpError::PinLink {
                        ifname: ifname.into(),
                        path: path.display().to_string(),
                        reason,
                    };
                    let link = p.program()?.take_link(id).map_err(|e| link_err(error_chain(&e)))?;
                    let fd = FdLink::try_from(link).map_err(|e| link_err(error_chain(&e)))?;
                    p._link = Some(fd.pin(&path).map_err(|e| link_err(error_chain(&e)))?);
                }
            }
        }
        if let Some(pins) = &pins {
            let keep = pins.maps_dir(capacity);
            for d in pins.other_maps_dirs(&keep) {
                tracing::info!(interface = ifname, dir = %d.display(), "removing pinned maps of another layout");
                let _ = std::fs::remove_dir_all(d);
            }
            let mut m = if adopt { p.meta().unwrap_or_default() } else { PinMeta::default() };
            m.layout = LAYOUT;
            m.tier_capacity = capacity;
            m.mode = match p.mode {
                XdpMode::Native => 1,
                XdpMode::Generic => 2,
            };
            p.set_meta(m)?;
        }
        p.pins = pins;
        Ok(p)
    }

    /// Puts the program into the link it inherited, if it did, in one
    /// system call (`BPF_LINK_UPDATE`): every frame meets the old program or
    /// this one. Called once its AF_XDP sockets are registered, so with new
    /// maps (`Inherited::Replaced`) no frame meets a program without them.
    pub fn swap_in(&mut self) -> Result<(), XdpError> {
        let Some(link) = self.pending.take() else { return Ok(()) };
        let ifname = self.ifname.clone();
        let err =
            |reason: String| XdpError::Attach { ifname: ifname.clone(), mode: "inherited", reason };
        let link = XdpLink::try_from(link).map_err(|e| err(error_chain(&e)))?;
        self.program()?.attach_to_link(link).map_err(|e| err(error_chain(&e)))?;
        Ok(())
    }

    /// Whether the XDP program still waits for [`swap_in`](Self::swap_in).
    pub(crate) fn swap_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The tc tier's pinned link a previous overlayd left serving this
    /// port, for io/tc.rs (once).
    pub(crate) fn take_tc_inherited(&mut self) -> Option<FdLink> {
        self.tc_inherited.take()
    }

    /// Keeps `link`, the tc tier's inherited link, until the XDP program
    /// is swapped in (io/tc.rs `swap_in_pending` then swaps the tc one).
    pub(crate) fn set_tc_pending(&mut self, link: FdLink) {
        self.tc_pending = Some(link);
    }

    pub(crate) fn take_tc_pending(&mut self) -> Option<FdLink> {
        self.tc_pending.take()
    }

    pub(crate) fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Where this port's state is pinned, when it is.
    pub(crate) fn pins(&self) -> Option<&PortPins> {
        self.pins.as_ref()
    }

    /// The tc tier is not used on this port (any more): its pinned link
    /// goes (the kernel detaches it once nobody holds it) and the program
    /// stops passing frames up to it.
    pub(crate) fn drop_tc_tier(&mut self) -> Result<(), XdpError> {
        self.tc_inherited = None;
        self.tc_pending = None;
        if let Some(p) = &self.pins {
            let _ = std::fs::remove_file(p.tc_link());
        }
        if self.tc_tier {
            self.set_tc_tier(false)?;
        }
        Ok(())
    }

    /// What the program found of its predecessor's pinned state.
    pub fn inherited(&self) -> Inherited {
        self.inherited
    }

    /// True if its state is pinned (outlives the process).
    pub fn pinned(&self) -> bool {
        self.pins.is_some()
    }

    /// Unpins everything of this port: the program detaches when `self`
    /// drops (a clean stop, or a port no longer configured).
    pub fn unpin(&mut self) -> Result<(), XdpError> {
        if let Some(p) = self.pins.take() {
            p.remove().map_err(|source| XdpError::Pin { ifname: self.ifname.clone(), source })?;
        }
        Ok(())
    }

    fn meta(&self) -> Option<PinMeta> {
        self.meta.get(&0, 0).ok()
    }

    fn set_meta(&mut self, m: PinMeta) -> Result<(), XdpError> {
        self.meta.set(0, m, 0).map_err(|e| XdpError::Map {
            ifname: self.ifname.clone(),
            what: "writing the layout",
            reason: e.to_string(),
        })
    }

    /// Loads the object for a port without an XDP program (io/tc_port.rs):
    /// its maps and tc programs, the XDP program verified and never
    /// attached, nothing pinned.
    pub(crate) fn load_unattached(
        ifname: &str,
        role: &SteerRole,
        tier: Option<u32>,
    ) -> Result<Self, XdpError> {
        let mut p = Self::load_in(ifname, role, tier, None, false, false)?;
        p.ifindex = netdev::ifindex(ifname).map_err(|e| XdpError::Load {
            ifname: ifname.into(),
            reason: format!("no such interface ({e})"),
        })?;
        Ok(p)
    }

    /// As [`load_unattached`](Self::load_unattached), with the maps pinned
    /// in `pins` (a tc port whose programs outlive the process): the maps a
    /// predecessor left are adopted, their tier's settings kept, when
    /// `inherited` (its program still serves the port) and their layout
    /// and size are this binary's; else they are created anew. Returns
    /// whether they were adopted.
    pub(crate) fn load_unattached_pinned(
        ifname: &str,
        role: &SteerRole,
        tier: Option<u32>,
        pins: PortPins,
        inherited: bool,
    ) -> Result<(Self, bool), XdpError> {
        let pin_err = |source| XdpError::Pin { ifname: ifname.into(), source };
        let capacity = tier.unwrap_or(0);
        let dir = pins.maps_dir(capacity);
        let adopt = inherited
            && pin::read_meta(&dir)
                .is_some_and(|m| m.layout == LAYOUT && m.tier_capacity == capacity);
        if !adopt {
            let _ = std::fs::remove_dir_all(&dir);
        }
        for d in pins.other_maps_dirs(&dir) {
            let _ = std::fs::remove_dir_all(d);
        }
        std::fs::create_dir_all(&dir)
            .map_err(|source| pin_err(PinError::Io { path: dir.clone(), source }))?;
        let mut p = Self::load_in(ifname, role, tier, Some(&dir), adopt, false)?;
        p.ifindex = netdev::ifindex(ifname).map_err(|e| XdpError::Load {
            ifname: ifname.into(),
            reason: format!("no such interface ({e})"),
        })?;
        let mut m = if adopt { p.meta().unwrap_or_default() } else { PinMeta::default() };
        m.layout = LAYOUT;
        m.tier_capacity = capacity;
        p.set_meta(m)?;
        p.inherited = if adopt { Inherited::Adopted } else { Inherited::Nothing };
        p.pins = Some(pins);
        Ok((p, adopt))
    }

    /// Loads the program (verified, not attached) with its maps set for
    /// `role`; `ifname` names it in errors.
    #[cfg(test)]
    pub(crate) fn load(
        ifname: &str,
        role: &SteerRole,
        tier: Option<u32>,
    ) -> Result<Self, XdpError> {
        Self::load_in(ifname, role, tier, None, false, false)
    }

    /// As [`load`](Self::load), with the maps pinned in `maps_dir` (those
    /// already there are used as they are; `adopt` says they are this
    /// layout's, and the tier's settings in them are kept; `keep_tc` that
    /// a pinned tc tier link serves the port, so its setting is kept too).
    fn load_in(
        ifname: &str,
        role: &SteerRole,
        tier: Option<u32>,
        maps_dir: Option<&std::path::Path>,
        adopt: bool,
        keep_tc: bool,
    ) -> Result<Self, XdpError> {
        let load = |reason: String| XdpError::Load { ifname: ifname.into(), reason };
        let mut loader = EbpfLoader::new();
        if let Some(n) = tier {
            loader
                .map_max_entries("tier_flows", n)
                .map_max_entries("tier_entries", n)
                .map_max_entries("tier_counts", n);
        }
        let paths: Vec<(&str, std::path::PathBuf)> = match maps_dir {
            Some(d) => MAPS.iter().map(|m| (*m, d.join(m))).collect(),
            None => Vec::new(),
        };
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(PROGRAM).map_err(|e| load(e.to_string()))?;
        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name).ok_or_else(|| load(format!("the object has no map {name:?}")))
        };
        let map_err = |what: &'static str| {
            move |e: aya::maps::MapError| XdpError::Map {
                ifname: ifname.into(),
                what,
                reason: e.to_string(),
            }
        };
        let xsks = XskMap::try_from(take(&mut ebpf, "xsks")?).map_err(map_err("the socket map"))?;
        let cfg =
            Array::try_from(take(&mut ebpf, "cfg")?).map_err(map_err("the configuration map"))?;
        let v4 = HashMap::try_from(take(&mut ebpf, "vteps_v4")?)
            .map_err(map_err("the IPv4 VTEP map"))?;
        let v6 = HashMap::try_from(take(&mut ebpf, "vteps_v6")?)
            .map_err(map_err("the IPv6 VTEP map"))?;
        let stats = PerCpuArray::try_from(take(&mut ebpf, "stats")?)
            .map_err(map_err("the statistics map"))?;
        // The tier's owner gets its own descriptor of the map.
        let meta_dup = match ebpf.map("meta") {
            Some(Map::Array(d)) => {
                use std::os::fd::AsFd;
                d.fd().as_fd().try_clone_to_owned().map_err(|e| load(e.to_string()))?
            }
            _ => return Err(load("the object has no array map \"meta\"".into())),
        };
        let meta = Array::try_from(take(&mut ebpf, "meta")?).map_err(map_err("the meta map"))?;
        let tier = match tier {
            Some(n) => Some(TierMaps::take(&mut ebpf, n, meta_dup).map_err(|e| XdpError::Map {
                ifname: ifname.into(),
                what: "the tier's maps",
                reason: e.to_string(),
            })?),
            None => None,
        };
        let mut p = SteerProgram {
            ifname: ifname.into(),
            ifindex: 0,
            mode: XdpMode::Native,
            xsks,
            cfg,
            v4,
            v6,
            stats,
            tier_port: None,
            tier_loaded: tier.is_some(),
            tc_tier: false,
            tier,
            meta,
            pins: None,
            inherited: Inherited::Nothing,
            pending: None,
            tc_inherited: None,
            tc_pending: None,
            _link: None,
            _ebpf: ebpf,
        };
        if adopt {
            // The tier goes on serving as it did: the role rewrite below
            // keeps its setting, and the tc tier's while its pinned link
            // runs (the running program reads this map).
            if let Ok(c) = p.cfg.get(&0, 0) {
                p.tier_port = (c.tier != 0).then_some(c.in_port as u16);
                p.tc_tier = keep_tc && c.tc_tier != 0;
            }
        }
        // The role is in place before the program sees a packet.
        p.set_role(role)?;
        p.program()?.load().map_err(|e| load(verifier_summary(&e)))?;
        Ok(p)
    }

    fn program(&mut self) -> Result<&mut Xdp, XdpError> {
        let ifname = &self.ifname;
        let load = |reason: String| XdpError::Load { ifname: ifname.clone(), reason };
        self._ebpf
            .program_mut("overlayd_steer")
            .ok_or_else(|| load("the object has no program overlayd_steer".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| load(e.to_string()))
    }

    /// Hands the tier's maps over to their owner (once).
    pub fn take_tier(&mut self) -> Option<(TierMaps, TierGen)> {
        self.tier.take()
    }

    /// True if the program was loaded with the tier's maps sized for use.
    pub fn tier_loaded(&self) -> bool {
        self.tier_loaded
    }

    /// True while the tier's lookups are on.
    pub fn tier_on(&self) -> bool {
        self.tier_port.is_some()
    }

    /// Turns the tier's lookups on, as port `port` of the rule set, or off:
    /// after `None`, no frame is handled by a tier entry once this returns.
    pub fn set_tier(&mut self, port: Option<u16>) -> Result<(), XdpError> {
        let mut c = self.cfg.get(&0, 0).map_err(|e| XdpError::Map {
            ifname: self.ifname.clone(),
            what: "reading the configuration",
            reason: e.to_string(),
        })?;
        c.tier = port.is_some() as u32;
        c.in_port = port.unwrap_or(0) as u32;
        self.cfg.set(0, c, 0).map_err(|e| XdpError::Map {
            ifname: self.ifname.clone(),
            what: "setting the tier",
            reason: e.to_string(),
        })?;
        self.tier_port = port;
        Ok(())
    }

    /// The loaded object, whose tc tier program (io/tc.rs) shares the tier's
    /// maps with this one.
    pub(crate) fn object(&mut self) -> &mut Ebpf {
        &mut self._ebpf
    }

    /// Tells the program whether the tc tier is attached to its port.
    pub(crate) fn set_tc_tier(&mut self, on: bool) -> Result<(), XdpError> {
        let map_err = |what: &'static str| {
            let ifname = self.ifname.clone();
            move |e: aya::maps::MapError| XdpError::Map { ifname, what, reason: e.to_string() }
        };
        let mut c = self.cfg.get(&0, 0).map_err(map_err("reading the configuration"))?;
        c.tc_tier = on as u32;
        self.cfg.set(0, c, 0).map_err(map_err("setting the tc tier"))?;
        self.tc_tier = on;
        Ok(())
    }

    /// The tier's counts in the program, summed over CPUs.
    pub fn tier_stats(&self) -> Result<TierProgramStats, XdpError> {
        let sum = |i: u32| self.stat(i);
        Ok(TierProgramStats {
            hit: sum(6)?,
            miss: sum(7)?,
            stale: sum(8)?,
            too_long: sum(9)?,
            no_tx: sum(10)?,
            no_headroom: sum(11)?,
            partial_checksum: sum(12)?,
            to_tc: sum(13)?,
            tc_hit: sum(14)?,
            tc_lost: sum(15)?,
            decap_punt: sum(16)?,
            decap_no_tunnel: sum(17)?,
            decap_ecn: sum(18)?,
            decap_bad_checksum: sum(19)?,
            unsettled: sum(20)?,
            decap_gre_sequence: sum(21)?,
            finished_checksum: sum(22)?,
        })
    }

    fn stat(&self, i: u32) -> Result<u64, XdpError> {
        let v = self.stats.get(&i, 0).map_err(|e| XdpError::Map {
            ifname: self.ifname.clone(),
            what: "reading statistics",
            reason: e.to_string(),
        })?;
        Ok(v.iter().sum())
    }

    /// Runs the loaded program on `frame` (BPF_PROG_TEST_RUN): its return
    /// value and the frame as it left.
    #[cfg(test)]
    pub(crate) fn test_run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        use aya::programs::{TestRun, TestRunOptions};
        let mut out = vec![0u8; frame.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        let r = self.program().unwrap().test_run(opts).expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    /// How many instructions the verifier walked to accept the program.
    #[cfg(test)]
    pub(crate) fn verified_insns(&mut self) -> Option<u32> {
        self.program().ok()?.info().ok()?.verified_instruction_count()
    }

    /// Runs the loaded program on `frame` `repeat` times in the kernel
    /// (BPF_PROG_TEST_RUN): the last return value and the mean time of a
    /// run.
    #[cfg(test)]
    pub(crate) fn test_run_repeat(
        &mut self,
        frame: &[u8],
        repeat: u32,
    ) -> (u32, std::time::Duration) {
        use aya::programs::{TestRun, TestRunOptions};
        let mut out = vec![0u8; frame.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        opts.repeat = repeat;
        let r = self.program().unwrap().test_run(opts).expect("BPF_PROG_TEST_RUN");
        (r.return_value, r.duration)
    }

    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Registers the AF_XDP socket bound to `queue`.
    pub fn register_socket(&mut self, queue: u32, fd: RawFd) -> Result<(), XdpError> {
        self.xsks.set(queue, fd, 0).map_err(|e| XdpError::Map {
            ifname: self.ifname.clone(),
            what: "registering an AF_XDP socket",
            reason: e.to_string(),
        })
    }

    /// Changes what the program redirects, in place (no detach).
    pub fn set_role(&mut self, role: &SteerRole) -> Result<(), XdpError> {
        let map_err = |what: &'static str| {
            let ifname = self.ifname.clone();
            move |e: aya::maps::MapError| XdpError::Map { ifname, what, reason: e.to_string() }
        };
        let mut c = SteerCfg {
            tier: self.tier_port.is_some() as u32,
            in_port: self.tier_port.unwrap_or(0) as u32,
            tc_tier: self.tc_tier as u32,
            ..SteerCfg::default()
        };
        let (mut want4, mut want6) = (Vec::new(), Vec::new());
        if let SteerRole::Uplink { vteps, vxlan_ports, gre } = role {
            if vxlan_ports.len() > MAX_VXLAN_PORTS {
                return Err(XdpError::TooManyPorts {
                    ifname: self.ifname.clone(),
                    count: vxlan_ports.len(),
                });
            }
            c.role = 1;
            for (slot, p) in c.vxlan_ports.iter_mut().zip(vxlan_ports) {
                *slot = p.to_be();
            }
            c.gre = *gre as u32;
            for a in vteps {
                match a {
                    IpAddr::V4(a) => want4.push(u32::from_ne_bytes(a.octets())),
                    IpAddr::V6(a) => want6.push(a.octets()),
                }
            }
        }
        // Addresses first, then the role: a packet sees the old or the new
        // state, never an uplink with no VTEP.
        for a in &want4 {
            self.v4.insert(a, 1, 0).map_err(map_err("adding a VTEP address"))?;
        }
        for a in &want6 {
            self.v6.insert(a, 1, 0).map_err(map_err("adding a VTEP address"))?;
        }
        let stale4: Vec<u32> =
            self.v4.keys().filter_map(Result::ok).filter(|k| !want4.contains(k)).collect();
        let stale6: Vec<[u8; 16]> =
            self.v6.keys().filter_map(Result::ok).filter(|k| !want6.contains(k)).collect();
        self.cfg.set(0, c, 0).map_err(map_err("setting the role"))?;
        for k in stale4 {
            self.v4.remove(&k).map_err(map_err("removing a VTEP address"))?;
        }
        for k in stale6 {
            self.v6.remove(&k).map_err(map_err("removing a VTEP address"))?;
        }
        Ok(())
    }

    pub fn stats(&self) -> Result<SteerStats, XdpError> {
        let sum = |i: u32| self.stat(i);
        Ok(SteerStats {
            redirected: sum(0)?,
            pass_not_ip: sum(1)?,
            pass_not_tunnel: sum(2)?,
            pass_not_local_vtep: sum(3)?,
            pass_no_socket: sum(4)?,
            pass_fragment: sum(5)?,
        })
    }
}

/// The link pinned for `pins`, if it is attached to `ifindex`, with the
/// mode it was attached in; and the meta of the maps a program with a tier
/// of `capacity` would use, if they exist.
fn inherited(
    pins: &PortPins,
    ifindex: u32,
    capacity: u32,
) -> (Option<(FdLink, XdpMode)>, Option<PinMeta>) {
    let meta = pin::read_meta(&pins.maps_dir(capacity));
    let path = pins.link();
    let serves = pin::link_state(&path).is_ok_and(|l| l.ifindex == ifindex);
    if !serves {
        return (None, meta);
    }
    let Ok(link) = PinnedLink::from_pin(&path) else { return (None, meta) };
    // The mode is only recorded in the meta map of the maps it used; any
    // meta of this port's says it (the mode of a link never changes).
    let mode = meta
        .or_else(|| {
            pins.other_maps_dirs(std::path::Path::new("")).iter().find_map(|d| pin::read_meta(d))
        })
        .map(|m| m.mode);
    let mode = match mode {
        Some(2) => XdpMode::Generic,
        _ => XdpMode::Native,
    };
    (Some((FdLink::from(link), mode)), meta)
}

/// The error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A load error with the verifier's last lines, which say what it refused.
fn verifier_summary(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError { io_error, verifier_log } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            format!(
                "{io_error}; verifier: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        }
        other => error_chain(other),
    }
}
