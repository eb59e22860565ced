//! What outlives the process: each AF_XDP port's XDP program, through a
//! pinned BPF link, and its maps (steering, the tier's flows, counters and
//! generation), pinned in the BPF filesystem.
//!
//! ```text
//! /sys/fs/bpf/overlayd/net<netns inode>/<ifname>/link          the attachment
//! /sys/fs/bpf/overlayd/net<netns inode>/<ifname>/tc-link       the tc tier's (TCX), if any
//! /sys/fs/bpf/overlayd/net<netns inode>/<ifname>/maps-v<L>-c<N>/<map>
//! /sys/fs/bpf/overlayd/net<netns inode>/<ifname>/tc-port-link  a tc port's program (TCX)
//! /sys/fs/bpf/overlayd/net<netns inode>/<ifname>/tc-sink-link  its punt device's (TCX)
//! ```
//!
//! A tc port (`backend = "tc"`, io/tc_port.rs) has no XDP program: its two
//! tc links and the same maps are pinned instead, and its punt device (a
//! network device, not pinned) is kept with them.
//!
//! The network namespace is part of the path because the BPF filesystem is
//! shared by every namespace of the host, and interface names are not. `L`
//! is [`LAYOUT`]; `N` the tier's capacity (the flow and counter maps' size
//! is fixed when they are created). A starting overlayd adopts the maps
//! directory its own program would create only if its `meta` map says the
//! same layout; anything else is replaced (io/xdp.rs).
//!
//! While the link is pinned the program stays attached after the process
//! exits or is killed, and the tier goes on forwarding the flows it holds;
//! frames it would hand to userspace reach the kernel instead (the AF_XDP
//! sockets are gone, so the program passes them). Removing the directory
//! (`overlayd cleanup`, `overlayd run --remove-on-exit`) detaches the
//! program and frees the maps once no process holds them.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the BPF filesystem is mounted by convention.
pub const BPFFS: &str = "/sys/fs/bpf";
/// overlayd's directory in it, unless [`set_root`] says otherwise.
pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/overlayd";

static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes `dir` (on a BPF filesystem) the place to pin, for the whole
/// process; only the first call counts. Needed where /sys is private to the
/// process: `ip netns exec` mounts a fresh sysfs for the command it runs,
/// so a BPF filesystem mounted at /sys/fs/bpf there dies with it.
pub fn set_root(dir: PathBuf) {
    let _ = ROOT.set(dir);
}

/// Where overlayd pins.
pub fn root() -> &'static Path {
    ROOT.get_or_init(|| PathBuf::from(DEFAULT_ROOT))
}
/// The tc tier's link in a port's directory.
const TC_LINK: &str = "tc-link";
/// A tc port's links: its program on the interface, its sink on the punt device.
const TC_PORT_LINK: &str = "tc-port-link";
const TC_SINK_LINK: &str = "tc-sink-link";

/// The layout of the pinned maps (keys, values, meaning). Bump it with any
/// change to a map of dataplane/xdp/steer.bpf.c (its `LAYOUT_VERSION`).
pub const LAYOUT: u32 = 10;

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// `struct pin_meta` of the C program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinMeta {
    pub layout: u32,
    pub tier_capacity: u32,
    /// The rule set every live tier entry was decided under...
    pub generation: u64,
    /// ...and a hash of its content (0: none recorded).
    pub fingerprint: u64,
    /// 1: native, 2: generic.
    pub mode: u32,
    pub pad: u32,
}

// SAFETY: integers with the C layout, no implicit padding.
unsafe impl aya::Pod for PinMeta {}

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "no BPF filesystem at {BPFFS}, and mounting one failed: {0} (mount it with \
         `mount -t bpf bpf {BPFFS}`; overlayd keeps its XDP programs and tier there so \
         they survive a restart)"
    )]
    Mount(io::Error),
    #[error(
        "{}: not on a BPF filesystem (mount one there with `mount -t bpf bpf DIR`, or \
         choose a directory on one with --bpf-dir)",
        path.display()
    )]
    NotBpffs { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PinError + '_ {
    move |source| PinError::Io { path: path.into(), source }
}

/// Makes sure [`root`] is on a BPF filesystem: the default one is, once a
/// BPF filesystem is mounted at [`BPFFS`] (done here if need be).
pub fn ensure_bpffs() -> Result<(), PinError> {
    let root = root();
    let parent = root.parent().unwrap_or(root);
    if is_bpffs(parent) || is_bpffs(root) {
        return Ok(());
    }
    if parent != Path::new(BPFFS) {
        return Err(PinError::NotBpffs { path: parent.into() });
    }
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (src, target, fstype) = (c("bpf"), c(BPFFS), c("bpf"));
    // SAFETY: NUL-terminated strings that outlive the call; no data argument.
    let r =
        unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if r != 0 {
        return Err(PinError::Mount(io::Error::last_os_error()));
    }
    tracing::info!(path = BPFFS, "mounted a BPF filesystem");
    Ok(())
}

/// Makes sure this namespace's directory can be pinned in (the BPF
/// filesystem mounted, the directory created).
pub fn prepare() -> Result<(), PinError> {
    ensure_bpffs()?;
    let dir = netns_dir(this_netns());
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))
}

fn is_bpffs(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: an all-zero statfs is a valid value for the kernel to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a pointer to a statfs we own.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    r == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// The inode of this process's network namespace: its name in [`root`].
pub fn this_netns() -> u64 {
    std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).unwrap_or(0)
}

fn netns_dir(ns: u64) -> PathBuf {
    root().join(format!("net{ns}"))
}

/// One port's pinned state.
#[derive(Clone, Debug)]
pub struct PortPins {
    dir: PathBuf,
}

impl PortPins {
    /// The directory of `ifname` in this namespace, created (and the BPF
    /// filesystem mounted) if need be.
    pub fn for_interface(ifname: &str) -> Result<PortPins, PinError> {
        ensure_bpffs()?;
        let dir = netns_dir(this_netns()).join(ifname);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(PortPins { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn link(&self) -> PathBuf {
        self.dir.join("link")
    }

    /// The tc tier's TCX link (workload ports with the tc tier), beside the
    /// XDP program's: io/tc.rs.
    pub fn tc_link(&self) -> PathBuf {
        self.dir.join(TC_LINK)
    }

    /// A tc port's program's TCX link on its interface (io/tc_port.rs).
    pub fn tc_port_link(&self) -> PathBuf {
        self.dir.join(TC_PORT_LINK)
    }

    /// A tc port's sink program's TCX link on its punt device.
    pub fn tc_sink_link(&self) -> PathBuf {
        self.dir.join(TC_SINK_LINK)
    }

    /// Where maps of this binary's layout with a tier of `capacity` live.
    pub fn maps_dir(&self, capacity: u32) -> PathBuf {
        self.dir.join(format!("maps-v{LAYOUT}-c{capacity}"))
    }

    /// The maps directories other than `keep` (older layouts, other sizes).
    pub fn other_maps_dirs(&self, keep: &Path) -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir() && p != keep).collect()
    }

    /// Removes everything pinned for the port: the program detaches once
    /// no process holds its link.
    pub fn remove(&self) -> Result<(), PinError> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&self.dir)(e)),
            _ => Ok(()),
        }
    }
}

/// Reads the `meta` map pinned in `maps_dir`, if there is one of this layout's size.
pub fn read_meta(maps_dir: &Path) -> Option<PinMeta> {
    let data = aya::maps::MapData::from_pin(maps_dir.join("meta")).ok()?;
    let a: aya::maps::Array<_, PinMeta> =
        aya::maps::Array::try_from(aya::maps::Map::Array(data)).ok()?;
    a.get(&0, 0).ok()
}

/// A pinned link as the kernel sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    /// The program it runs.
    pub program_id: u32,
    /// The interface it is attached to; 0 once the interface is gone.
    pub ifindex: u32,
}

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// Opens a pinned BPF object.
fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // union bpf_attr for BPF_OBJ_GET: pathname, bpf_fd, file_flags.
    #[repr(C)]
    struct Attr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        pad: [u32; 11],
    }
    let attr =
        Attr { pathname: c.as_ptr() as u64, bpf_fd: 0, file_flags: 0, path_fd: 0, pad: [0; 11] };
    // SAFETY: the attribute is a valid BPF_OBJ_GET union member whose path
    // outlives the call; its size is passed with it.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, &attr as *const Attr, size_of::<Attr>() as u32)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// What the kernel says of the link pinned at `path`.
pub fn link_state(path: &Path) -> io::Result<LinkState> {
    let fd = obj_get(path)?;
    // struct bpf_link_info: type, id, prog_id, then a union 8-aligned at
    // offset 16 whose xdp and tcx members start with the ifindex. The rest stays zero, as
    // the kernel requires of a buffer longer than its struct.
    let mut info = [0u8; 128];
    #[repr(C)]
    struct Attr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
        pad: [u64; 4],
    }
    let attr = Attr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: info.len() as u32,
        info: info.as_mut_ptr() as u64,
        pad: [0; 4],
    };
    // SAFETY: a valid BPF_OBJ_GET_INFO_BY_FD attribute pointing at a buffer
    // of the length it states, which outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &attr as *const Attr,
            size_of::<Attr>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let word = |o: usize| u32::from_ne_bytes(info[o..o + 4].try_into().unwrap());
    Ok(LinkState { program_id: word(8), ifindex: word(16) })
}

/// One port's pinned state as `overlayd pinned` lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PinnedPort {
    /// The network namespace (inode of /proc/PID/ns/net).
    pub netns: u64,
    pub interface: String,
    pub dir: PathBuf,
    /// The pinned link, if it can be read; `ifindex` 0: its interface is gone.
    pub link: Option<LinkState>,
    /// The tc tier's pinned TCX link, if there is one (io/tc.rs).
    #[serde(default)]
    pub tc_link: Option<LinkState>,
    /// A tc port's program's pinned TCX link (io/tc_port.rs), if any.
    #[serde(default)]
    pub tc_port_link: Option<LinkState>,
    /// A tc port's punt device's sink program's pinned TCX link.
    #[serde(default)]
    pub tc_sink_link: Option<LinkState>,
    /// Its maps directories, with what their `meta` map says.
    pub maps: Vec<(String, Option<PinMeta>)>,
}

impl PinnedPort {
    /// True if the program no longer serves an interface: removing it
    /// harms nothing. A directory without a link is defunct only once it is
    /// a minute old (an overlayd starting elsewhere pins its link last).
    pub fn defunct(&self) -> bool {
        // A tc port has no XDP link: its program's link stands for it.
        match self.link.or(self.tc_port_link) {
            Some(l) => l.ifindex == 0,
            None => std::fs::metadata(&self.dir)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age.as_secs() >= 60),
        }
    }
}

/// Everything pinned under [`root`], every namespace.
pub fn list() -> Vec<PinnedPort> {
    let mut out = Vec::new();
    let Ok(namespaces) = std::fs::read_dir(root()) else { return out };
    for ns in namespaces.filter_map(Result::ok) {
        let name = ns.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_prefix("net").and_then(|n| n.parse().ok()) else { continue };
        let Ok(ports) = std::fs::read_dir(ns.path()) else { continue };
        for p in ports.filter_map(Result::ok) {
            let dir = p.path();
            let mut maps: Vec<(String, Option<PinMeta>)> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .map(|e| (e.file_name().to_string_lossy().into_owned(), read_meta(&e.path())))
                .collect();
            maps.sort_by(|a, b| a.0.cmp(&b.0));
            out.push(PinnedPort {
                netns: id,
                interface: p.file_name().to_string_lossy().into_owned(),
                link: link_state(&dir.join("link")).ok(),
                tc_link: link_state(&dir.join(TC_LINK)).ok(),
                tc_port_link: link_state(&dir.join(TC_PORT_LINK)).ok(),
                tc_sink_link: link_state(&dir.join(TC_SINK_LINK)).ok(),
                dir,
                maps,
            });
        }
    }
    out.sort_by(|a, b| (a.netns, &a.interface).cmp(&(b.netns, &b.interface)));
    out
}

/// Removes a listed port's pinned state.
pub fn remove(p: &PinnedPort) -> Result<(), PinError> {
    PortPins { dir: p.dir.clone() }.remove()?;
    // The namespace's directory goes with its last port.
    if let Some(ns) = p.dir.parent() {
        let _ = std::fs::remove_dir(ns);
    }
    Ok(())
}

/// Removes the pinned state of this namespace's ports not in `keep`, and
/// of every port in any namespace whose interface is gone; returns what
/// was removed.
pub fn sweep(keep: &[String]) -> Vec<PinnedPort> {
    let ns = this_netns();
    let mut removed = Vec::new();
    for p in list() {
        let ours_unwanted = p.netns == ns && !keep.contains(&p.interface);
        if ours_unwanted || p.defunct() {
            match remove(&p) {
                Ok(()) => removed.push(p),
                Err(e) => tracing::warn!(error = %e, "cannot remove pinned XDP state"),
            }
        }
    }
    remove_empty_namespaces();
    removed
}

/// Removes namespace directories left empty for a minute (a start that
/// failed before pinning anything); a younger one may be about to be used.
pub fn remove_empty_namespaces() {
    let Ok(rd) = std::fs::read_dir(root()) else { return };
    for e in rd.filter_map(Result::ok) {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() >= 60);
        if old {
            // Fails, harmlessly, unless the directory is empty.
            let _ = std::fs::remove_dir(e.path());
        }
    }
}
