//! The tc tier (`dataplane/tc/tier.bpf.c`): the skb half of the kernel tier
//! on a workload port, attached to its ingress (clsact) beside the port's
//! XDP program. It is part of the XDP program's object, so it uses that
//! port's tier maps: the entries the owner (io/tier.rs) installs serve both,
//! and its counts land in the same slots, harvested the same way.
//!
//! Which tier handles a frame of a tier flow is the frame's, not the
//! entry's: the XDP tier forwards what it can forward exactly (checksums
//! complete); a frame whose checksum the sender left partial (a container's
//! veth with its default offloads) goes up the stack to this program, whose
//! skb still knows that state and its GSO metadata, instead of to AF_XDP.
//! docs/decisions.md has the measurements behind it.
//!
//! On kernels with TCX (6.6 and later) the program is attached through a
//! BPF link. With the XDP program's state pinned (io/pin.rs), that link is
//! pinned beside the XDP link (`<port dir>/tc-link`): it stays attached
//! after the process exits, so the tc tier's flows go on forwarding while
//! no overlayd runs, and the next overlayd swaps its own program into the
//! same link (`BPF_LINK_UPDATE`) together with the XDP link, once its
//! sockets are registered (io/xdp.rs `swap_in`). Removing the port's pinned
//! directory (`overlayd cleanup`, `--remove-on-exit`) detaches it.
//! Unpinned, the kernel detaches it when the daemon exits, however it
//! exits; on older kernels it is attached through netlink, unpinned, and
//! detached when the object is dropped.

use aya::maps::Array;
use aya::programs::links::{FdLink, LinkOrder};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{tc, ProgramError, SchedClassifier, TcAttachType};

use super::xdp::SteerProgram;

const PROGRAM: &str = "overlayd_tc_encap";

#[derive(Debug, thiserror::Error)]
#[error("{ifname}: cannot {what} the tc tier's program: {reason}")]
pub struct TcError {
    pub ifname: String,
    pub what: &'static str,
    pub reason: String,
}

/// Ports the tc tier may send out of: port number and interface index.
const MAX_OUTPUTS: u16 = 64;

/// Loads the tc tier from `prog`'s object, gives it the interfaces of
/// `outputs` (port number, interface index), attaches it to `ifname`'s
/// ingress (or, if a previous overlayd's pinned link serves the port, has
/// it swapped into that link with the XDP program) and tells the XDP
/// program to pass it the frames it is for. Unpinned, it stays attached as
/// long as `prog` lives.
pub fn attach(
    prog: &mut SteerProgram,
    ifname: &str,
    outputs: &[(u16, u32)],
) -> Result<(), TcError> {
    let err = |what: &'static str| {
        move |e: ProgramError| TcError { ifname: ifname.into(), what, reason: chain(&e) }
    };
    set_outputs(prog, ifname, outputs)?;
    let p = tc_program(prog, PROGRAM, ifname)?;
    p.load().map_err(err("load"))?;
    let pin_path = prog.pins().map(|p| p.tc_link());
    if let Some(link) = prog.take_tc_inherited() {
        // The previous program serves until the XDP link is swapped too;
        // without an XDP link to swap (a new attachment), at once.
        prog.set_tc_pending(link);
        if !prog.swap_pending() {
            swap_in_pending(prog);
        }
    } else {
        let p = tc_program(prog, PROGRAM, ifname)?;
        // Needed by the netlink attachment only (before TCX); there already if
        // something else put it there.
        let _ = tc::qdisc_add_clsact(ifname);
        let tcx = TcAttachOptions::TcxOrder(LinkOrder::default());
        match pin_path {
            // Pinned: TCX, whose link can be pinned; a kernel without it
            // gets the netlink attachment, which goes with the process.
            Some(path) => match p.attach_with_options(ifname, TcAttachType::Ingress, tcx) {
                Ok(id) => {
                    let link = p.take_link(id).map_err(err("take the link of"))?;
                    let fd = FdLink::try_from(link).map_err(|e| TcError {
                        ifname: ifname.into(),
                        what: "pin",
                        reason: e.to_string(),
                    })?;
                    // The pin holds the link; this descriptor may close.
                    fd.pin(&path).map_err(|e| TcError {
                        ifname: ifname.into(),
                        what: "pin",
                        reason: format!("{}: {e}", path.display()),
                    })?;
                }
                Err(e) => {
                    tracing::info!(interface = ifname, reason = %chain(&e), "tc tier attached through netlink (no TCX): not pinned, a restart detaches it");
                    p.attach(ifname, TcAttachType::Ingress).map_err(err("attach"))?;
                }
            },
            None => {
                p.attach(ifname, TcAttachType::Ingress).map_err(err("attach"))?;
            }
        }
    }
    // Last: the XDP program passes nothing up before the program is there.
    prog.set_tc_tier(true).map_err(|e| TcError {
        ifname: ifname.into(),
        what: "enable",
        reason: e.to_string(),
    })
}

/// Gives the object's tc programs the interfaces of `outputs` (port
/// number, interface index); `ifname` names the port in errors.
pub(crate) fn set_outputs(
    prog: &mut SteerProgram,
    ifname: &str,
    outputs: &[(u16, u32)],
) -> Result<(), TcError> {
    let map_err = |e: aya::maps::MapError| TcError {
        ifname: ifname.into(),
        what: "fill the output map of",
        reason: e.to_string(),
    };
    let map = prog.object().map_mut("tc_out").ok_or_else(|| TcError {
        ifname: ifname.into(),
        what: "find the output map of",
        reason: "the object has no map tc_out".into(),
    })?;
    let mut out: Array<&mut aya::maps::MapData, u32> = Array::try_from(map).map_err(map_err)?;
    for &(port, ifindex) in outputs.iter().filter(|(p, _)| *p < MAX_OUTPUTS) {
        out.set(port as u32, ifindex, 0).map_err(map_err)?;
    }
    Ok(())
}

/// Loads program `name` of `prog`'s object and attaches it to `ifname`'s
/// ingress, unpinned: it stays attached as long as `prog` lives.
pub(crate) fn attach_program(
    prog: &mut SteerProgram,
    name: &str,
    ifname: &str,
) -> Result<(), TcError> {
    let err = |what: &'static str| {
        move |e: ProgramError| TcError { ifname: ifname.into(), what, reason: chain(&e) }
    };
    let p = tc_program(prog, name, ifname)?;
    p.load().map_err(err("load"))?;
    // Needed by the netlink attachment only (before TCX); there already if
    // something else put it there.
    let _ = tc::qdisc_add_clsact(ifname);
    p.attach(ifname, TcAttachType::Ingress).map_err(err("attach"))?;
    Ok(())
}

/// Program `name` (a tc program) of `prog`'s object.
pub(crate) fn tc_program<'a>(
    prog: &'a mut SteerProgram,
    name: &str,
    ifname: &str,
) -> Result<&'a mut SchedClassifier, TcError> {
    prog.object()
        .program_mut(name)
        .ok_or_else(|| TcError {
            ifname: ifname.into(),
            what: "find",
            reason: format!("the object has no program {name}"),
        })?
        .try_into()
        .map_err(|e: ProgramError| TcError {
            ifname: ifname.into(),
            what: "find",
            reason: chain(&e),
        })
}

/// The tc tier's part of the XDP program's `swap_in`: the link it
/// inherited gets this object's tc program. Not fatal: the old tc program
/// goes on serving its link (with the maps it was loaded with).
pub(crate) fn swap_in_pending(prog: &mut SteerProgram) {
    if let Some(link) = prog.take_tc_pending() {
        if let Err(e) = swap_in(prog, link) {
            tracing::warn!(error = %e, "the tc tier keeps its previous program");
        }
    }
}

/// Puts `prog`'s (loaded) tc program into `link`, a previous overlayd's
/// pinned TCX link, in one system call: every skb meets the old program or
/// this one.
fn swap_in(prog: &mut SteerProgram, link: FdLink) -> Result<(), TcError> {
    let ifname = prog.ifname().to_string();
    let err = |e: String| TcError { ifname: ifname.clone(), what: "swap in", reason: e };
    let link = SchedClassifierLink::try_from(link).map_err(|e| err(e.to_string()))?;
    let p = tc_program(prog, PROGRAM, &ifname)?;
    p.attach_to_link(link).map_err(|e| err(chain(&e)))?;
    tracing::info!(interface = %ifname, "took over the tc tier's pinned link");
    Ok(())
}

/// The error and its causes on one line, with the verifier's last lines
/// if it refused the program.
pub(crate) fn chain(e: &ProgramError) -> String {
    if let ProgramError::LoadError { io_error, verifier_log } = e {
        let log = verifier_log.to_string();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        return format!(
            "{io_error}; verifier: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
