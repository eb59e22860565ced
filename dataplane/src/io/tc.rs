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
//! BPF link, so the kernel detaches it when the daemon exits, however it
//! exits; on older ones through netlink, detached when the object is
//! dropped.

use aya::maps::Array;
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
/// ingress and tells the XDP program to pass it the frames it is for.
/// It stays attached as long as `prog` lives.
pub fn attach(
    prog: &mut SteerProgram,
    ifname: &str,
    outputs: &[(u16, u32)],
) -> Result<(), TcError> {
    set_outputs(prog, ifname, outputs)?;
    attach_program(prog, PROGRAM, ifname)?;
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
/// ingress; it stays attached as long as `prog` lives.
pub(crate) fn attach_program(
    prog: &mut SteerProgram,
    name: &str,
    ifname: &str,
) -> Result<(), TcError> {
    let err = |what: &'static str| {
        move |e: ProgramError| TcError { ifname: ifname.into(), what, reason: chain(&e) }
    };
    let p: &mut SchedClassifier = prog
        .object()
        .program_mut(name)
        .ok_or_else(|| TcError {
            ifname: ifname.into(),
            what: "find",
            reason: format!("the object has no program {name}"),
        })?
        .try_into()
        .map_err(err("find"))?;
    p.load().map_err(err("load"))?;
    // Needed by the netlink attachment only (before TCX); there already if
    // something else put it there.
    let _ = tc::qdisc_add_clsact(ifname);
    p.attach(ifname, TcAttachType::Ingress).map_err(err("attach"))?;
    Ok(())
}

/// The error and its causes on one line, with the verifier's last lines
/// if it refused the program.
fn chain(e: &ProgramError) -> String {
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
