//! The VM lane (netns-tests/vm/run.sh): tests that need kernel features this
//! host's kernel may lack (GRE, ip6gre, Geneve, tc flower and its actions,
//! the Open vSwitch kernel datapath). They run in a guest booted from
//! Debian's stock kernel, or directly on any host whose kernel has them.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::*;

/// True if the guest lane runs us (run.sh sets `OVERLAYD_IN_VM`).
pub fn in_vm() -> bool {
    std::env::var_os("OVERLAYD_IN_VM").is_some()
}

/// Returns true if the test may run here: as root, in the guest or on a
/// kernel that can create every device kind in `kinds` (`ip link add ...
/// type KIND`, tried in a throwaway namespace). Otherwise it says why and
/// returns false; under CI that is allowed only when the caller says the
/// VM lane runs these tests (`OVERLAYD_VM_LANE` set, as scripts/test.sh
/// does), and is a failure otherwise.
pub fn require_kernel(test: &str, kinds: &[&str]) -> bool {
    if !require_root(test) {
        return false;
    }
    if in_vm() {
        return true;
    }
    let ns = Netns::new("vmk");
    let missing: Vec<&str> = kinds
        .iter()
        .copied()
        .filter(|k| {
            let mut args = vec!["ip", "link", "add", "probe0", "type", k];
            // The kinds that cannot be made without parameters.
            args.extend_from_slice(match *k {
                "vxlan" => &["id", "1", "dstport", "4789"][..],
                "geneve" => &["id", "1", "remote", "192.0.2.9"][..],
                _ => &[][..],
            });
            !ns.exec_output(&args).status.success()
        })
        .inspect(|_| {
            let _ = ns.exec_output(&["ip", "link", "del", "probe0"]);
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{test}: this kernel cannot create {} devices; the VM lane (netns-tests/vm/run.sh) runs this test on Debian's kernel",
        missing.join(", ")
    );
    if under_ci() && std::env::var_os("OVERLAYD_VM_LANE").is_none() {
        panic!("{why}; CI is set and OVERLAYD_VM_LANE is not, so this is a failure, not a skip");
    }
    eprintln!("SKIPPED {why}");
    false
}

/// Runs `f` on a thread that lives in `ns`'s network namespace, so sockets
/// it opens (rtnetlink) and interface names it looks up are those of `ns`.
pub fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{}", ns.name());
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a valid namespace fd only changes this
            // thread's network namespace; the thread ends with the scope.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns into {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// A packet capture by `dumpcap` alone, bounded in packets and time: in
/// the emulated guest tshark takes seconds to start (it loads every
/// dissector), dumpcap (which tshark itself runs to capture) does not. The
/// file is then dissected by tshark as in the other tests.
pub struct Dumpcap {
    proc: Background,
    file: PathBuf,
}

impl Dumpcap {
    pub fn start(
        ns: &Netns,
        dev: &str,
        filter: &str,
        file: &Path,
        max_packets: u32,
        max_secs: u32,
    ) -> Dumpcap {
        require_program("dumpcap");
        let f = file.to_string_lossy().into_owned();
        let (c, a) = (max_packets.to_string(), format!("duration:{max_secs}"));
        let mut cmd = ns.command(&[
            "dumpcap", "-q", "-P", "-i", dev, "-f", filter, "-w", &f, "-c", &c, "-a", &a,
        ]);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let mut proc = Background::spawn(cmd, "dumpcap");
        if !wait_until(Duration::from_secs(30), || file.exists()) {
            proc.stop();
            panic!("dumpcap did not start capturing on {dev} in {}", ns.name());
        }
        std::thread::sleep(Duration::from_millis(200));
        Dumpcap { proc, file: file.to_path_buf() }
    }

    /// Stops the capture (SIGTERM: dumpcap closes the file) and returns the file.
    pub fn finish(mut self) -> PathBuf {
        std::thread::sleep(Duration::from_millis(300));
        self.proc.stop();
        self.file.clone()
    }
}
