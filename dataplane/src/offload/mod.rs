//! Offload: SR-IOV VF configuration and flow offload to the NIC's embedded
//! switch, with the software path always serving what the hardware does not.
//!
//! The `Offloader` follows the published rule sets. For each generation it
//! probes the ports it has not seen (switchdev or not), asks
//! `engine::placement` which rules go to hardware, and changes each device
//! by the difference with what it holds, in an order that keeps every
//! intermediate state correct (docs/offload.md, "Updates"):
//!
//! 1. remove filters that are gone or changed, and the unchanged ones that
//!    sit below both a departing and an arriving filter they overlap,
//!    lowest precedence first;
//! 2. add the new ones (and those re-installed), highest precedence first.
//!
//! A failure on a device undoes that device's additions and completes its
//! removals, so it holds only filters the previous and the new generation
//! agree on; the rules meant for it run in software, with the error as
//! their reason. Other devices are not affected: no packet meets the
//! filters of two devices.
//!
//! All kernel access goes through `Backend`, so the sequencing, rollback
//! and counting are tested with a scripted backend (tests below).

pub mod flower;
pub mod nl;
pub mod switchdev;
pub mod vf;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use engine::compile::RuleSet;
use engine::counters::{FlowSnapshot, Snapshot};
use engine::model::{Config, ConfigError};
use engine::placement::{self, Account, Caps, HwFilter, PortHw, RulePlacement, TunnelDevHw, Why};

use crate::api_types::{DeviceStatus, OffloadStatus, PortProbe, Representors, Sriov, VfView};
use nl::{IfindexError, NlError};
use switchdev::SwitchdevError;
use vf::SriovError;

/// Everything the offloader asks of the kernel.
pub trait Backend: Send {
    fn ifindex(&mut self, ifname: &str) -> Result<u32, IfindexError>;
    /// The port's embedded switch, or why it is not a switchdev port.
    fn probe_port(&mut self, ifname: &str) -> Result<PortHw, SwitchdevError>;
    /// Sends one rtnetlink request; returns the answer's data messages.
    fn request(&mut self, msg: Vec<u8>) -> Result<Vec<Vec<u8>>, NlError>;
    /// (current, total) VFs of a PF.
    fn num_vfs(&mut self, pf: &str) -> Result<(u32, u32), SriovError>;
    fn set_num_vfs(&mut self, pf: &str, n: u32) -> Result<(), SriovError>;
}

/// Why the offloader could not change, or read, a device.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    #[error(transparent)]
    NoDevice(#[from] IfindexError),
    #[error("adding the clsact qdisc: {0}")]
    Clsact(NlError),
    #[error("adding rule {rule}'s filter: {source}")]
    RedirectTarget { rule: u32, source: IfindexError },
    #[error("adding rule {rule}'s filter: {source}")]
    Encode { rule: u32, source: flower::FilterError },
    #[error("adding rule {rule}'s filter: {source}")]
    Add { rule: u32, source: NlError },
    #[error("removing rule {rule}'s filter: {source}")]
    Remove { rule: u32, source: NlError },
    /// The update failed, and undoing it left filters behind.
    #[error("{cause}; and these filters could not be removed: {}", joined(.stuck))]
    RollbackIncomplete { cause: Box<OffloadError>, stuck: Vec<StuckFilter> },
    #[error("{pf}: reading its VFs (RTM_GETLINK): {source}")]
    ReadVfs { pf: String, source: NlError },
}

/// A filter a rollback could not remove: one this update added, or one of
/// the previous generation that the new one no longer has.
#[derive(Debug, thiserror::Error)]
pub enum StuckFilter {
    #[error("rule {rule}: {source}")]
    Added { rule: u32, source: NlError },
    #[error("rule {rule} (previous generation): {source}")]
    Previous { rule: u32, source: NlError },
}

fn joined(stuck: &[StuckFilter]) -> String {
    stuck.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// The real kernel: sysfs and one rtnetlink socket.
#[derive(Default)]
pub struct Kernel {
    sock: Option<nl::Socket>,
}

impl Backend for Kernel {
    fn ifindex(&mut self, ifname: &str) -> Result<u32, IfindexError> {
        nl::ifindex(ifname)
    }
    fn probe_port(&mut self, ifname: &str) -> Result<PortHw, SwitchdevError> {
        switchdev::probe_port(ifname)
    }
    fn request(&mut self, msg: Vec<u8>) -> Result<Vec<Vec<u8>>, NlError> {
        if self.sock.is_none() {
            self.sock = Some(nl::Socket::open().map_err(NlError::io)?);
        }
        let r = self.sock.as_mut().expect("just opened").request(msg);
        if matches!(&r, Err(e) if e.errno.is_none() || e.errno == Some(libc::EAGAIN)) {
            // A socket that timed out may hold a late answer: start afresh.
            self.sock = None;
        }
        r
    }
    fn num_vfs(&mut self, pf: &str) -> Result<(u32, u32), SriovError> {
        vf::read_num_vfs(pf)
    }
    fn set_num_vfs(&mut self, pf: &str, n: u32) -> Result<(), SriovError> {
        vf::write_num_vfs(pf, n)
    }
}

struct Installed {
    f: HwFilter,
    ifindex: u32,
    /// Last counters read, kept if a later read fails.
    last: FlowSnapshot,
}

struct State {
    backend: Box<dyn Backend>,
    installed: Vec<Installed>,
    /// Final counters of removed filters, by rule and where they count.
    retired: HashMap<(u32, Account), FlowSnapshot>,
    /// Port probes by interface name: done once per interface.
    probed: HashMap<String, Result<PortHw, SwitchdevError>>,
    placement: Vec<RulePlacement>,
    devices: BTreeMap<String, DeviceStatus>,
    generation: Option<u64>,
    enabled: bool,
    vf_error: Option<String>,
}

/// Undo information of a VF change, for when a later step fails.
#[derive(Debug, Default)]
pub struct VfUndo {
    steps: Vec<UndoStep>,
}

#[derive(Debug)]
enum UndoStep {
    NumVfs { pf: String, n: u32 },
    Attr { pf: String, ifindex: u32, vf: u32, attr: vf::VfAttr },
}

pub struct Offloader {
    st: Mutex<State>,
}

fn sw(code: &'static str, text: String) -> Why {
    Why { code, text }
}

impl Offloader {
    pub fn new(backend: Box<dyn Backend>) -> Offloader {
        Offloader {
            st: Mutex::new(State {
                backend,
                installed: Vec::new(),
                retired: HashMap::new(),
                probed: HashMap::new(),
                placement: Vec::new(),
                devices: BTreeMap::new(),
                generation: None,
                enabled: false,
                vf_error: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings the hardware in line with `rs`. Never fails: whatever the
    /// hardware refuses stays in software, and says why.
    pub fn sync(&self, rs: &RuleSet) {
        let mut st = self.lock();
        let st = &mut *st;
        st.enabled = rs.config.offload.enabled;
        let caps = if st.enabled { probe(st, rs) } else { Caps::disabled(rs.ports.len()) };
        let mut plan = placement::place(rs, &caps);
        let want: Vec<HwFilter> = plan.iter().filter_map(|p| p.hardware.clone()).collect();
        let mut devs: Vec<String> = st.installed.iter().map(|i| i.f.dev.clone()).collect();
        devs.extend(want.iter().map(|f| f.dev.clone()));
        devs.sort();
        devs.dedup();
        st.devices.retain(|d, _| devs.contains(d));
        for dev in devs {
            let new: Vec<&HwFilter> = want.iter().filter(|f| f.dev == dev).collect();
            let result = update_device(st, &dev, &new);
            let filters = st.installed.iter().filter(|i| i.f.dev == dev).count();
            let error = result.err();
            if let Some(e) = &error {
                tracing::warn!(generation = rs.generation, device = %dev, error = %e, "hardware update failed: the device keeps the filters both generations agree on, its other rules run in software");
                for p in plan.iter_mut() {
                    let on_dev = p.hardware.as_ref().is_some_and(|f| f.dev == dev);
                    let kept =
                        on_dev && st.installed.iter().any(|i| Some(&i.f) == p.hardware.as_ref());
                    if on_dev && !kept {
                        p.hardware = None;
                        p.software = Some(sw(
                            "update_failed",
                            format!("the hardware update of {dev} failed ({e}); the device was rolled back"),
                        ));
                    }
                }
            }
            st.devices.insert(dev, DeviceStatus { filters, error: error.map(|e| e.to_string()) });
        }
        let hw = plan.iter().filter(|p| p.hardware.is_some()).count();
        if st.enabled || hw > 0 || !st.installed.is_empty() {
            tracing::info!(
                generation = rs.generation,
                hardware = hw,
                software = plan.len() - hw,
                "offload placement"
            );
        }
        st.placement = plan;
        st.generation = Some(rs.generation);
    }

    /// Each rule's placement, in the order of the last synced rule set.
    pub fn placement(&self) -> Vec<RulePlacement> {
        self.lock().placement.clone()
    }

    /// Adds the hardware's counters to a snapshot numbered by `rs`.
    pub fn add_counters(&self, s: &mut Snapshot, rs: &RuleSet) {
        let mut st = self.lock();
        let st = &mut *st;
        for i in st.installed.iter_mut() {
            let msg = flower::get(&i.f, 0, i.ifindex);
            if let Some(f) =
                st.backend.request(msg).ok().and_then(|m| m.first().and_then(|m| flower::stats(m)))
            {
                i.last = f;
            }
            placement::add_hardware(s, rs, i.f.rule, &i.f.account, i.last);
        }
        for ((rule, acct), f) in &st.retired {
            placement::add_hardware(s, rs, *rule, acct, *f);
        }
    }

    /// What `GET /v1/offload` and `status` show.
    pub fn status(&self) -> OffloadStatus {
        let st = self.lock();
        let hw = st.placement.iter().filter(|p| p.hardware.is_some()).count();
        OffloadStatus {
            active: true,
            why: None,
            enabled: st.enabled,
            generation: st.generation,
            hardware_rules: hw,
            software_rules: st.placement.len() - hw,
            ports: st
                .probed
                .iter()
                .map(|(k, v)| {
                    let probe = match v {
                        Ok(p) => PortProbe::Switchdev { switch_id: p.switch_id.clone() },
                        Err(e) => PortProbe::NotSwitchdev { error: e.to_string() },
                    };
                    (k.clone(), probe)
                })
                .collect(),
            devices: st.devices.clone(),
            vf_error: st.vf_error.clone(),
        }
    }

    /// Applies the VF settings `new` asks for that `old` did not (all of
    /// them when `old` is None), one attribute at a time. On the first
    /// refusal everything done is put back and the error names the field,
    /// the device and the attribute.
    pub fn apply_vfs(&self, old: Option<&Config>, new: &Config) -> Result<VfUndo, ConfigError> {
        let mut st = self.lock();
        let mut undo = VfUndo::default();
        let r = apply_vfs(&mut *st.backend, old, new, &mut undo);
        match r {
            Ok(()) => {
                st.vf_error = None;
                Ok(undo)
            }
            Err(e) => {
                undo_vfs(&mut *st.backend, undo);
                tracing::warn!(error = %e, "VF settings refused; nothing changed");
                Err(e)
            }
        }
    }

    /// Puts back what an `apply_vfs` changed (a later step of the same
    /// change failed).
    pub fn undo_vfs(&self, undo: VfUndo) {
        let mut st = self.lock();
        undo_vfs(&mut *st.backend, undo);
    }

    /// Records a VF failure found at start (shown by `status`).
    pub fn set_vf_error(&self, e: String) {
        self.lock().vf_error = Some(e);
    }

    /// A PF's VFs as the device reports them, and its switch's ports.
    pub fn vf_show(&self, pf: &str) -> Result<VfView, OffloadError> {
        let mut st = self.lock();
        let ifindex = st.backend.ifindex(pf)?;
        let sriov = match st.backend.num_vfs(pf) {
            Ok((num_vfs, total_vfs)) => Sriov::Counts { num_vfs, total_vfs },
            Err(e) => Sriov::Unavailable { error: format!("{pf}: sriov_numvfs: {e}") },
        };
        let link = st
            .backend
            .request(vf::get_msg(ifindex, 0))
            .map_err(|source| OffloadError::ReadVfs { pf: pf.into(), source })?;
        let (num_vf, vfs) = link.first().map(|m| vf::parse_link(m)).unwrap_or_default();
        let (switch_id, representors) = match switchdev::representors(pf) {
            Ok((id, r)) => (Some(id), Representors::Found(r)),
            Err(e) => (None, Representors::Unavailable { error: e.to_string() }),
        };
        Ok(VfView { pf: pf.into(), sriov, num_vf, vfs, switch_id, representors })
    }
}

/// Port capabilities for `rs`: each interface is probed the first time a
/// port names it (at start, and when ports are added).
fn probe(st: &mut State, rs: &RuleSet) -> Caps {
    let mut ports = Vec::with_capacity(rs.ports.len());
    for p in &rs.config.ports {
        let r = match &p.interface {
            None => Err("the port has no interface".to_string()),
            Some(ifname) => {
                if !st.probed.contains_key(ifname) {
                    let r = st.backend.probe_port(ifname);
                    match &r {
                        Ok(p) => {
                            tracing::info!(interface = %ifname, switch_id = %p.switch_id, "offload: probed port")
                        }
                        Err(e) => {
                            tracing::info!(interface = %ifname, error = %e, "offload: probed port")
                        }
                    }
                    st.probed.insert(ifname.clone(), r);
                }
                match &st.probed[ifname] {
                    Ok(p) => Ok(p.clone()),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        ports.push(r);
    }
    let mut tunnel_dev = |name: &Option<String>, field: &str| match name {
        None => Err(format!("offload.{field} is not set")),
        Some(n) => st
            .backend
            .ifindex(n)
            .map(|_| TunnelDevHw { ifname: n.clone() })
            .map_err(|e| e.to_string()),
    };
    let vxlan = tunnel_dev(&rs.config.offload.vxlan_device, "vxlan_device");
    let gretap = tunnel_dev(&rs.config.offload.gretap_device, "gretap_device");
    Caps { enabled: true, ports, vxlan, gretap }
}

/// Precedence order: lower pref first, then lower rule id.
fn rank(f: &HwFilter) -> (u16, u32) {
    (f.pref, f.rule)
}

/// Moves one device from what it holds to `new`. On failure the device
/// holds only unchanged filters, and the error is returned.
fn update_device(st: &mut State, dev: &str, new: &[&HwFilter]) -> Result<(), OffloadError> {
    let old: Vec<HwFilter> =
        st.installed.iter().filter(|i| i.f.dev == dev).map(|i| i.f.clone()).collect();
    let added: Vec<&HwFilter> = new.iter().copied().filter(|f| !old.contains(f)).collect();
    let removed: Vec<&HwFilter> = old.iter().filter(|f| !new.contains(f)).collect();
    // An unchanged filter k is only at risk when something above it that it
    // overlaps leaves AND something above it that it overlaps arrives: in
    // between, k would answer for packets that belong to neither k in the
    // old generation nor k in the new one. (Only an arrival above it: until
    // the arrival, k gives the old answer. Only a departure: after it, k
    // gives the new answer.) Such a k goes out before and comes back after.
    let above =
        |set: &[&HwFilter], k: &HwFilter| set.iter().any(|x| x.pref < k.pref && x.overlaps(k));
    let at_risk: Vec<&HwFilter> = old
        .iter()
        .filter(|k| new.contains(k))
        .filter(|k| above(&added, k) && above(&removed, k))
        .collect();
    let mut to_del: Vec<HwFilter> = removed.iter().chain(&at_risk).map(|f| (*f).clone()).collect();
    to_del.sort_by_key(|f| std::cmp::Reverse(rank(f)));
    let mut to_add: Vec<HwFilter> = added.iter().chain(&at_risk).map(|f| (*f).clone()).collect();
    to_add.sort_by_key(rank);
    if to_del.is_empty() && to_add.is_empty() {
        return Ok(());
    }
    let mut failure = None;
    for f in &to_del {
        if let Err(source) = remove(st, f) {
            failure = Some(OffloadError::Remove { rule: f.rule, source });
            break;
        }
    }
    let mut done: Vec<HwFilter> = Vec::new();
    if failure.is_none() {
        match st.backend.ifindex(dev) {
            Err(e) => failure = Some(e.into()),
            Ok(ifindex) => {
                if !to_add.is_empty() {
                    if let Err(e) = clsact(st, ifindex) {
                        failure = Some(OffloadError::Clsact(e));
                    }
                }
                for f in &to_add {
                    if failure.is_some() {
                        break;
                    }
                    match install(st, f, ifindex) {
                        Ok(()) => done.push(f.clone()),
                        Err(e) => failure = Some(e),
                    }
                }
            }
        }
    }
    let Some(e) = failure else { return Ok(()) };
    // Undo: take out what this update added (lowest first), then finish
    // taking out what the new generation no longer has. What a device
    // refuses to remove is left, and said.
    let mut stuck = Vec::new();
    for f in done.iter().rev() {
        if let Err(source) = remove(st, f) {
            stuck.push(StuckFilter::Added { rule: f.rule, source });
        }
    }
    for f in removed {
        if st.installed.iter().any(|i| i.f == *f) {
            if let Err(source) = remove(st, f) {
                stuck.push(StuckFilter::Previous { rule: f.rule, source });
            }
        }
    }
    if stuck.is_empty() {
        Err(e)
    } else {
        Err(OffloadError::RollbackIncomplete { cause: Box::new(e), stuck })
    }
}

fn clsact(st: &mut State, ifindex: u32) -> Result<(), NlError> {
    match st.backend.request(flower::add_clsact(ifindex, 0)) {
        Err(e) if e.errno == Some(libc::EEXIST) => Ok(()),
        r => r.map(|_| ()),
    }
}

fn install(st: &mut State, f: &HwFilter, ifindex: u32) -> Result<(), OffloadError> {
    let rule = f.rule;
    let mut index = HashMap::new();
    for a in &f.actions {
        if let placement::HwAction::Redirect(n) = a {
            let i = st
                .backend
                .ifindex(n)
                .map_err(|source| OffloadError::RedirectTarget { rule, source })?;
            index.insert(n.clone(), i);
        }
    }
    index.insert(f.dev.clone(), ifindex);
    let resolve = |n: &str| index.get(n).copied();
    let msg =
        flower::add(f, 0, &resolve).map_err(|source| OffloadError::Encode { rule, source })?;
    st.backend.request(msg).map_err(|source| OffloadError::Add { rule, source })?;
    st.installed.push(Installed { f: f.clone(), ifindex, last: FlowSnapshot::default() });
    Ok(())
}

/// Removes an installed filter, folding its final counters (from the
/// kernel's echo of the removal) into the totals.
fn remove(st: &mut State, f: &HwFilter) -> Result<(), NlError> {
    let Some(at) = st.installed.iter().position(|i| i.f == *f) else { return Ok(()) };
    let ifindex = st.installed[at].ifindex;
    let flags = nl::NLM_F_REQUEST | nl::NLM_F_ACK | nl::NLM_F_ECHO;
    let answer = st.backend.request(flower::del(f, 0, ifindex, flags));
    if let Err(e) = &answer {
        // Already gone (the device was removed, or someone else deleted it).
        if !matches!(e.errno, Some(libc::ENOENT) | Some(libc::ENODEV)) {
            return Err(e.clone());
        }
    }
    let i = st.installed.remove(at);
    let last = answer
        .ok()
        .and_then(|m| m.iter().find_map(|m| flower::stats(m)))
        .map_or(i.last, |s| if s.packets >= i.last.packets { s } else { i.last });
    *st.retired.entry((i.f.rule, i.f.account.clone())).or_default() += last;
    Ok(())
}

fn vf_err(path: String, reason: String) -> ConfigError {
    ConfigError::Invalid { path, reason }
}

fn apply_vfs(
    b: &mut dyn Backend,
    old: Option<&Config>,
    new: &Config,
    undo: &mut VfUndo,
) -> Result<(), ConfigError> {
    for (i, pf) in new.offload.pfs.iter().enumerate() {
        let old_pf = old.and_then(|c| c.offload.pfs.iter().find(|p| p.interface == pf.interface));
        let name = &pf.interface;
        if let Some(n) = pf.num_vfs {
            if old_pf.and_then(|p| p.num_vfs) != Some(n) {
                let path = format!("offload.pfs[{i}].num_vfs");
                let (cur, _) = b
                    .num_vfs(name)
                    .map_err(|e| vf_err(path.clone(), format!("{name}: sriov_numvfs: {e}")))?;
                if cur != n {
                    b.set_num_vfs(name, n)
                        .map_err(|e| vf_err(path, format!("{name}: sriov_numvfs: {e}")))?;
                    undo.steps.push(UndoStep::NumVfs { pf: name.clone(), n: cur });
                }
            }
        }
        for (j, s) in pf.vfs.iter().enumerate() {
            let before = old_pf.and_then(|p| p.vfs.iter().find(|v| v.vf == s.vf));
            let had = before.map(vf::attrs_of).unwrap_or_default();
            let attrs: Vec<vf::VfAttr> =
                vf::attrs_of(s).into_iter().filter(|a| !had.contains(a)).collect();
            if attrs.is_empty() {
                continue;
            }
            let ifindex = b.ifindex(name).map_err(|e| {
                vf_err(format!("offload.pfs[{i}].interface"), format!("{name}: {e}"))
            })?;
            // The current values, to put back if a later step fails. A
            // device that reports none cannot have its VFs set either.
            let state = b
                .request(vf::get_msg(ifindex, 0))
                .ok()
                .and_then(|m| m.first().map(|m| vf::parse_link(m)))
                .and_then(|(_, vfs)| vfs.into_iter().find(|v| v.vf == s.vf));
            for a in attrs {
                let path = format!("offload.pfs[{i}].vfs[{j}].{}", a.field());
                b.request(vf::set_msg(ifindex, s.vf, &[a], 0)).map_err(|e| {
                    let hint = if e.errno == Some(libc::EOPNOTSUPP) {
                        " (the device has no SR-IOV support for this setting)"
                    } else {
                        ""
                    };
                    vf_err(path, format!("{name}: vf {}: {}: {e}{hint}", s.vf, a.attribute()))
                })?;
                match state.as_ref().and_then(|st| st.current(&a)) {
                    Some(prev) => undo.steps.push(UndoStep::Attr {
                        pf: name.clone(),
                        ifindex,
                        vf: s.vf,
                        attr: prev,
                    }),
                    None => {
                        tracing::warn!(pf = %name, vf = s.vf, attribute = a.attribute(), "previous value unknown: cannot be put back if a later step fails")
                    }
                }
            }
        }
    }
    Ok(())
}

fn undo_vfs(b: &mut dyn Backend, undo: VfUndo) {
    for step in undo.steps.into_iter().rev() {
        match &step {
            UndoStep::NumVfs { pf, n } => {
                if let Err(e) = b.set_num_vfs(pf, *n) {
                    tracing::error!(pf = %pf, error = %e, "could not put the number of VFs back");
                }
            }
            UndoStep::Attr { pf, ifindex, vf, attr } => {
                if let Err(e) = b.request(vf::set_msg(*ifindex, *vf, &[*attr], 0)) {
                    tracing::error!(pf = %pf, vf, attribute = attr.attribute(), error = %e, "could not put a VF setting back");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
