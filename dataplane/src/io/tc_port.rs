//! The TSO-keeping workload port (`backend = "tc"`): no XDP program on the
//! workload's veth, because any XDP program there pins the workload's TSO
//! off (docs/decisions.md measured 12.0 -> 2.27 Gbit/s with a bare
//! `XDP_PASS`). Instead, on the interface's ingress, `overlayd_tc_port`
//! (dataplane/tc/tier.bpf.c) decides every skb once:
//!
//! - a tier flow is encapsulated whole (GSO kept, cut into segments at the
//!   uplink's transmit) and redirected to the uplink, counted in the same
//!   `tier_counts` slots the tier's owner (io/tier.rs) harvests;
//! - everything else is redirected into the ingress of the port's punt
//!   device, one end of a veth pair this module creates and owns (a dummy
//!   device would do, but kernels built without it exist), where an
//!   AF_PACKET socket (virtio-net header: checksum and GSO state) feeds the
//!   engine. A packet socket on the workload's interface would not do:
//!   packet taps run before tc ingress, so it would see the tier's skbs too.
//!
//! Frames towards the workload are sent on the workload's interface by a
//! send-only packet socket. The punt device's own ingress drops what it
//! received after the socket's tap copied it (`overlayd_tc_sink`), so the
//! host's stack never sees the workload's frames.
//!
//! An uplink may be such a port too (`backend = "tc"` on a veth uplink):
//! any XDP program on a veth turns off its peer's TSO, so the peer host
//! would segment every VXLAN super-frame before sending it. There
//! `overlayd_tc_uplink` (dataplane/tc/uplink.bpf.c) leaves what is not the
//! dataplane's to the host's stack, decapsulates the tier's flows whole into
//! their workload's interface and punts the other tunnel packets the same
//! way; the engine's sends to the uplink go out of its packet socket.
//!
//! Pinned (what `overlayd run` does, io/pin.rs), both programs are
//! attached through TCX links pinned in the port's directory, with the
//! object's maps: they outlive the process, and so does the punt device.
//! The next overlayd (a planned upgrade, a restart, or this one resuming
//! after a failed handover) adopts the maps and the punt device as they
//! are, and swaps its own programs into the same links (`BPF_LINK_UPDATE`):
//! the port never goes without a program, the tier's flows never stop, and
//! frames punted meanwhile wait in the punt device's socket, which a
//! planned upgrade hands over (datapath.rs). Only a clean stop or
//! `overlayd cleanup` removes them.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, LinkOrder, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::TcAttachType;

use super::af_packet;
use super::netdev;
use super::pin::{self, PortPins};
use super::steer::SteerRole;
use super::tc::{self, TcError};
use super::xdp::{SteerProgram, XdpError};

const PORT_PROGRAM: &str = "overlayd_tc_port";
const UPLINK_PROGRAM: &str = "overlayd_tc_uplink";
const SINK_PROGRAM: &str = "overlayd_tc_sink";

#[derive(Debug, thiserror::Error)]
pub enum TcPortError {
    #[error(transparent)]
    Load(#[from] XdpError),
    #[error(transparent)]
    Attach(#[from] TcError),
    #[error("{ifname}: cannot {what} its punt device {punt}: {reason}")]
    Punt { ifname: String, punt: String, what: &'static str, reason: String },
    #[error("{ifname}: cannot open a packet socket on {on}: {source}")]
    Socket { ifname: String, on: String, source: std::io::Error },
}

/// A TSO-keeping workload port: its programs (attached while this lives,
/// or, pinned, until unpinned) and its punt device (deleted on drop unless
/// pinned).
pub struct TcPort {
    prog: SteerProgram,
    punt: PuntDevice,
    ifname: String,
    ifindex: u32,
    /// Both programs' links are pinned: the port can be handed over.
    pinned: bool,
    /// Inherited links waiting for [`swap_in`](Self::swap_in): program name
    /// and link.
    pending: Vec<(&'static str, FdLink)>,
}

impl TcPort {
    /// Loads the object for `ifname` in `role` (the tier's maps sized for
    /// `tier` flows, if on), creates the punt device, gives the port
    /// program the interfaces of `outputs` (port number, interface index)
    /// and attaches it: from then on every skb arriving on the port is
    /// decided in tc.
    ///
    /// With `pin`, its maps and links are pinned, and what a predecessor
    /// pinned for the port (programs still attached, maps, punt device) is
    /// taken over: its programs serve until [`swap_in`](Self::swap_in).
    pub fn open(
        ifname: &str,
        role: &SteerRole,
        tier: Option<u32>,
        outputs: &[(u16, u32)],
        pin: bool,
    ) -> Result<TcPort, TcPortError> {
        let program = match role {
            SteerRole::Workload => PORT_PROGRAM,
            SteerRole::Uplink { .. } => UPLINK_PROGRAM,
        };
        let Some(pins) = pin
            .then(|| PortPins::for_interface(ifname))
            .transpose()
            .map_err(|source| XdpError::Pin { ifname: ifname.into(), source })?
        else {
            let mut prog = SteerProgram::load_unattached(ifname, role, tier)?;
            let ifindex = prog.ifindex();
            let punt = PuntDevice::create(ifname, ifindex)?;
            tc::set_outputs(&mut prog, ifname, outputs)?;
            set_punt(&mut prog, ifname, punt.ifindex)?;
            tc::attach_program(&mut prog, SINK_PROGRAM, &punt.name)?;
            tc::attach_program(&mut prog, program, ifname)?;
            let ifname = ifname.into();
            return Ok(TcPort { prog, punt, ifname, ifindex, pinned: false, pending: Vec::new() });
        };
        let ifindex = netdev::ifindex(ifname).map_err(|e| XdpError::Load {
            ifname: ifname.into(),
            reason: format!("no such interface ({e})"),
        })?;
        // An XDP port's programs, if the port was one: their pins go, so
        // the kernel detaches them.
        let _ = std::fs::remove_file(pins.link());
        let _ = std::fs::remove_file(pins.tc_link());
        let port_link = inherited(&pins.tc_port_link(), ifindex);
        let name = punt_name(ifname, ifindex);
        let old_punt = netdev::ifindex(&name).ok().filter(|_| is_punt_device(&name));
        let sink_link = old_punt.and_then(|i| inherited(&pins.tc_sink_link(), i));
        let sink_path = pins.tc_sink_link();
        let port_path = pins.tc_port_link();
        let (mut prog, _adopted) =
            SteerProgram::load_unattached_pinned(ifname, role, tier, pins, port_link.is_some())?;
        // The predecessor's punt device, kept with its sink: frames punted
        // now wait in its socket for whoever reads it next.
        let mut punt = match (&sink_link, old_punt) {
            (Some(_), Some(index)) => PuntDevice { name, ifindex: index, keep: true },
            _ => PuntDevice::create(ifname, ifindex)?,
        };
        punt.keep = true;
        tc::set_outputs(&mut prog, ifname, outputs)?;
        set_punt(&mut prog, ifname, punt.ifindex)?;
        let mut pending = Vec::new();
        let mut pinned = true;
        for (name, dev, path, link) in [
            (SINK_PROGRAM, punt.name.clone(), sink_path, sink_link),
            (program, ifname.to_string(), port_path, port_link),
        ] {
            match link {
                Some(link) => {
                    load_program(&mut prog, name, &dev)?;
                    pending.push((name, link));
                }
                None => pinned &= attach_pinned(&mut prog, name, &dev, &path)?,
            }
        }
        if !pinned {
            // No TCX: the links go with the process, nothing to hand over.
            punt.keep = false;
        }
        Ok(TcPort { prog, punt, ifname: ifname.into(), ifindex, pinned, pending })
    }

    /// Puts this port's programs into the links a predecessor left, if it
    /// did, each in one system call: every skb meets the old program or
    /// this one. Not fatal: the old program goes on serving its link.
    pub fn swap_in(&mut self) {
        for (name, link) in std::mem::take(&mut self.pending) {
            let swapped =
                SchedClassifierLink::try_from(link).map_err(|e| e.to_string()).and_then(|link| {
                    let p = tc::tc_program(&mut self.prog, name, &self.ifname)
                        .map_err(|e| e.to_string())?;
                    p.attach_to_link(link).map(|_| ()).map_err(|e| tc::chain(&e))
                });
            match swapped {
                Ok(()) => {
                    tracing::info!(interface = %self.ifname, program = name, "took over the tc port's pinned link")
                }
                Err(e) => {
                    tracing::warn!(interface = %self.ifname, program = name, error = %e, "the tc port keeps its previous program")
                }
            }
        }
    }

    /// True if its programs, maps and punt device outlive this process (a
    /// successor can take the port over).
    pub fn pinned(&self) -> bool {
        self.pinned
    }

    /// Unpins everything of the port: its programs detach and its punt
    /// device goes when `self` drops (a clean stop).
    pub fn unpin(&mut self) -> Result<(), XdpError> {
        self.pending.clear();
        self.punt.keep = false;
        self.pinned = false;
        self.prog.unpin()
    }

    /// The loaded object: the tier's maps and settings, the statistics.
    pub fn program(&mut self) -> &mut SteerProgram {
        &mut self.prog
    }

    pub fn program_ref(&self) -> &SteerProgram {
        &self.prog
    }

    /// The punt device's name.
    pub fn punt_name(&self) -> &str {
        &self.punt.name
    }

    /// A queue's receiving socket (on the punt device; `fanout` joins a
    /// group when several workers share it) and its sending socket (on the
    /// workload's interface).
    pub fn sockets(&self, fanout: Option<u16>) -> Result<(OwnedFd, OwnedFd), TcPortError> {
        let ifname = &self.ifname;
        let rx = af_packet::open(self.punt.ifindex, fanout).map_err(|source| {
            TcPortError::Socket { ifname: ifname.clone(), on: self.punt.name.clone(), source }
        })?;
        let tx = af_packet::open_tx(self.ifindex).map_err(|source| TcPortError::Socket {
            ifname: ifname.clone(),
            on: ifname.clone(),
            source,
        })?;
        Ok((rx, tx))
    }
}

/// The link pinned at `path`, if it still serves interface `ifindex`; else
/// its pin goes (the kernel detaches whatever it held).
fn inherited(path: &Path, ifindex: u32) -> Option<FdLink> {
    let serves = pin::link_state(path).is_ok_and(|l| l.ifindex == ifindex);
    let link = serves.then(|| PinnedLink::from_pin(path).ok()).flatten();
    if link.is_none() {
        let _ = std::fs::remove_file(path);
    }
    link.map(FdLink::from)
}

/// Loads program `name` of `prog`'s object (for a link it will be swapped into).
fn load_program(prog: &mut SteerProgram, name: &str, ifname: &str) -> Result<(), TcError> {
    let p = tc::tc_program(prog, name, ifname)?;
    p.load().map_err(|e| TcError { ifname: ifname.into(), what: "load", reason: tc::chain(&e) })
}

/// Loads program `name` and attaches it to `ifname`'s ingress through a
/// TCX link pinned at `path`; false if the kernel has no TCX (before 6.6):
/// then it is attached through netlink, unpinned, for as long as `prog`
/// lives.
fn attach_pinned(
    prog: &mut SteerProgram,
    name: &str,
    ifname: &str,
    path: &PathBuf,
) -> Result<bool, TcError> {
    load_program(prog, name, ifname)?;
    let err =
        |what: &'static str| move |reason: String| TcError { ifname: ifname.into(), what, reason };
    let p = tc::tc_program(prog, name, ifname)?;
    let tcx = TcAttachOptions::TcxOrder(LinkOrder::default());
    match p.attach_with_options(ifname, TcAttachType::Ingress, tcx) {
        Ok(id) => {
            let link = p.take_link(id).map_err(|e| err("take the link of")(tc::chain(&e)))?;
            let fd = FdLink::try_from(link).map_err(|e| err("pin")(e.to_string()))?;
            // The pin holds the link; this descriptor may close.
            fd.pin(path).map_err(|e| err("pin")(format!("{}: {e}", path.display())))?;
            Ok(true)
        }
        Err(e) => {
            tracing::info!(interface = ifname, program = name, reason = %tc::chain(&e), "tc port attached through netlink (no TCX): not pinned, an upgrade cannot hand it over");
            let _ = aya::programs::tc::qdisc_add_clsact(ifname);
            p.attach(ifname, TcAttachType::Ingress).map_err(|e| err("attach")(tc::chain(&e)))?;
            Ok(false)
        }
    }
}

/// Writes the punt device's index into the object's `tc_port` map.
fn set_punt(prog: &mut SteerProgram, ifname: &str, punt: u32) -> Result<(), TcError> {
    let map_err = |e: aya::maps::MapError| TcError {
        ifname: ifname.into(),
        what: "set the punt device of",
        reason: e.to_string(),
    };
    let map = prog.object().map_mut("tc_port").ok_or_else(|| TcError {
        ifname: ifname.into(),
        what: "find the port map of",
        reason: "the object has no map tc_port".into(),
    })?;
    let mut m: aya::maps::Array<&mut aya::maps::MapData, u32> =
        aya::maps::Array::try_from(map).map_err(map_err)?;
    m.set(0, punt, 0).map_err(map_err)
}

/// The punt device's name: "ovp-" and the interface's name when that fits
/// in 15 bytes, else "ovp" and its index (unique in the namespace).
pub fn punt_name(ifname: &str, ifindex: u32) -> String {
    let named = format!("ovp-{ifname}");
    if named.len() <= 15 {
        named
    } else {
        format!("ovp{ifindex}")
    }
}

/// The punt devices in this namespace: veth ends named as [`punt_name`]
/// names them whose peer is the matching "ovq" end (so an interface a user
/// happened to call "ovp..." is not one). A running tc port's is among
/// them; one a killed overlayd left behind stays until removed.
pub fn punt_devices() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut found: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| is_punt_device(name))
        .collect();
    found.sort();
    found
}

fn is_punt_device(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("ovp") else {
        return false;
    };
    let Ok(peer) = netdev::ifindex(&format!("ovq{rest}")) else {
        return false;
    };
    // A veth's iflink is its peer's index.
    std::fs::read_to_string(format!("/sys/class/net/{name}/iflink"))
        .is_ok_and(|l| l.trim().parse() == Ok(peer))
}

/// The interface a punt device served, by its name ("ovp-IF" or
/// "ovpINDEX"), if that interface still exists.
pub fn punt_owner(punt: &str) -> Option<String> {
    let rest = punt.strip_prefix("ovp")?;
    match rest.strip_prefix('-') {
        Some(ifname) => netdev::ifindex(ifname).ok().map(|_| ifname.to_string()),
        None => netdev::ifname(rest.parse().ok()?),
    }
}

/// Deletes a punt device (and its peer) a stopped or killed overlayd left.
pub fn remove_punt_device(punt: &str) -> Result<(), TcPortError> {
    let err = |reason: String| TcPortError::Punt {
        ifname: punt_owner(punt).unwrap_or_else(|| "(gone)".into()),
        punt: punt.into(),
        what: "delete the leftover",
        reason,
    };
    let index = netdev::ifindex(punt).map_err(|e| err(e.to_string()))?;
    netlink::delete(index).map_err(err)
}

/// One end of a veth pair, up, with no addresses: the target of the port
/// program's misses (its peer stays down: nothing is ever sent on it).
/// Deleted, with its peer, on drop unless kept for a successor.
struct PuntDevice {
    name: String,
    ifindex: u32,
    /// Pinned port: the device outlives the process with the programs.
    keep: bool,
}

impl PuntDevice {
    fn create(ifname: &str, ifindex: u32) -> Result<PuntDevice, TcPortError> {
        let name = punt_name(ifname, ifindex);
        let err = |what: &'static str| {
            let (ifname, punt) = (ifname.to_string(), name.clone());
            move |reason: String| TcPortError::Punt { ifname, punt, what, reason }
        };
        // One a crashed predecessor left behind would hold the name.
        if let Ok(old) = netdev::ifindex(&name) {
            netlink::delete(old).map_err(err("delete the stale"))?;
        }
        let peer = format!("ovq{}", &name[3..]);
        netlink::create_veth(&name, &peer).map_err(err("create"))?;
        let ifindex = netdev::ifindex(&name).map_err(|e| err("find")(e.to_string()))?;
        Ok(PuntDevice { name, ifindex, keep: false })
    }
}

impl Drop for PuntDevice {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Err(e) = netlink::delete(self.ifindex) {
            tracing::warn!(device = %self.name, error = %e, "cannot delete the punt device");
        }
    }
}

/// The two link requests the punt device needs, through rtnetlink (async)
/// on a thread of their own, so they work from any caller, async or not.
mod netlink {
    use rtnetlink::{new_connection, LinkVeth};

    fn run<F, Fut>(f: F) -> Result<(), String>
    where
        F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), rtnetlink::Error>>,
    {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let (conn, handle, _) = new_connection().map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                f(handle).await.map_err(|e| e.to_string())
            })
        })
        .join()
        .unwrap_or_else(|_| Err("the netlink thread panicked".into()))
    }

    /// A veth pair, `name` up with an MTU no punted frame exceeds (GSO
    /// skbs are forwarded whatever their length; the rest fit 64 KiB).
    pub fn create_veth(name: &str, peer: &str) -> Result<(), String> {
        let (name, peer) = (name.to_string(), peer.to_string());
        run(move |h| async move {
            h.link().add(LinkVeth::new(&name, &peer).mtu(65535).up().build()).execute().await
        })
    }

    pub fn delete(ifindex: u32) -> Result<(), String> {
        run(move |h| async move { h.link().del(ifindex).execute().await })
    }
}

#[cfg(test)]
mod tests {
    use super::punt_name;

    #[test]
    fn a_punt_device_is_named_after_its_interface_when_that_fits() {
        assert_eq!(punt_name("veth12ab", 7), "ovp-veth12ab");
        // 15 bytes is the kernel's limit (IFNAMSIZ - 1).
        assert_eq!(punt_name("abcdefghijk", 7), "ovp-abcdefghijk");
        assert_eq!(punt_name("lxc0123456789ab", 4242), "ovp4242");
    }
}
