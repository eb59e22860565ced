//! `POST /v1/upgrade` (`overlayctl upgrade`): the running overlayd starts a
//! new binary with its own arguments plus `--take-over`, waits until the
//! handover (upgrade.rs) is done or has failed, and says how it went. By
//! default the binary is the path this overlayd was started from, which a
//! package upgrade has replaced with the new one.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::upgrade::{Attempt, AttemptWatch};

/// How long an upgrade may take unless the request says otherwise: the new
/// overlayd loads its state and attaches its programs before it connects.
pub const DEFAULT_TIMEOUT_SECS: u64 = 20;
/// Longest wait a request may ask for.
pub const MAX_TIMEOUT_SECS: u64 = 600;

/// Flags that only mean something at the start they were given to (or
/// contradict `--take-over`): the successor does not get them.
const ONCE_ONLY: &[&str] = &["--fresh", "--restore-previous", "--start-empty"];

/// The body of `POST /v1/upgrade`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpgradeRequest {
    /// The new binary (an absolute path); default: the path this overlayd
    /// was started from.
    #[serde(default)]
    pub binary: Option<PathBuf>,
    /// How long to wait for the handover, in seconds (default 20, at most 600).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// One overlayd process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProcessView {
    pub pid: u32,
    pub version: String,
}

/// The answer to a successful upgrade (the old overlayd exits right after).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UpgradeReport {
    pub binary: PathBuf,
    pub old: ProcessView,
    pub new: ProcessView,
    /// How long the old overlayd's workers took to stop at a batch boundary (ms).
    pub parked_ms: f64,
    /// From the old workers' stop to the new overlayd's `TakingOver`: no
    /// userspace worker moved packets for about this long; the sockets'
    /// rings held what arrived, and the XDP tier forwarded its flows (ms).
    pub silence_ms: f64,
    /// From starting the new binary to the handover (ms).
    pub took_ms: f64,
}

impl UpgradeReport {
    /// The report as `overlayctl upgrade` prints it.
    pub fn summary(&self) -> String {
        format!(
            "upgraded: pid {} ({}) -> pid {} ({}) from {}\n\
             workers parked in {:.1} ms; no userspace worker moved packets for {:.1} ms \
             (the rings held them; the XDP tier forwarded its flows); {:.0} ms in all\n",
            self.old.pid,
            self.old.version,
            self.new.pid,
            self.new.version,
            self.binary.display(),
            self.parked_ms,
            self.silence_ms,
            self.took_ms
        )
    }
}

/// Why an upgrade did not happen. The old overlayd serves on in every case.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("binary: {0}")]
    Binary(String),
    #[error("timeout_secs: {0} is not within 1..={MAX_TIMEOUT_SECS}")]
    Timeout(u64),
    #[error("another upgrade is under way")]
    Busy,
    #[error("no datapath with pinned programs runs here (control only, or --no-pin): nothing to hand over")]
    Unavailable,
    #[error("{binary} could not be started: {source}")]
    Spawn { binary: PathBuf, source: std::io::Error },
    #[error("the new overlayd (pid {pid}) exited ({status}) before taking over; see its log (overlayd's standard error); pid {old} serves on")]
    Exited { pid: u32, status: std::process::ExitStatus, old: u32 },
    #[error(
        "the new overlayd (pid {pid}, {version}) did not take over: {reason}; pid {old} serves on"
    )]
    Failed { pid: u32, version: String, reason: String, old: u32 },
    #[error("the new overlayd (pid {pid}) did not take over within {secs} s and was killed; pid {old} serves on")]
    TimedOut { pid: u32, secs: u64, old: u32 },
}

impl UpgradeError {
    /// The request field the error is about, if it is about one.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            UpgradeError::Binary(_) => Some("binary"),
            UpgradeError::Timeout(_) => Some("timeout_secs"),
            _ => None,
        }
    }
}

/// Starts successors and waits for their handover; one at a time.
pub struct Upgrader {
    /// The binary this overlayd was started from (its path, not the file:
    /// after a package upgrade the path holds the new binary).
    exe: PathBuf,
    /// This overlayd's arguments (after the program name).
    args: Vec<OsString>,
    watch: AttemptWatch,
    busy: AtomicBool,
}

impl Upgrader {
    /// `watch` is the one the handover listener (upgrade::Predecessor) reports to.
    pub fn new(exe: PathBuf, args: Vec<OsString>, watch: AttemptWatch) -> Self {
        Upgrader { exe, args, watch, busy: AtomicBool::new(false) }
    }

    /// From this process: the path it was started from and its arguments.
    pub fn of_this_process(watch: AttemptWatch) -> Self {
        // /proc/self/exe names the file; once a package upgrade has replaced
        // it, that name ends in " (deleted)": the path is what to run.
        let exe = std::env::current_exe()
            .ok()
            .map(|p| {
                let s = p.to_string_lossy();
                PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s).to_string())
            })
            .unwrap_or_else(|| PathBuf::from("overlayd"));
        Upgrader::new(exe, std::env::args_os().skip(1).collect(), watch)
    }

    /// The successor's arguments: these, less the start-only flags, plus
    /// `--take-over`.
    pub fn successor_args(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = self
            .args
            .iter()
            .filter(|a| !ONCE_ONLY.iter().any(|f| OsStr::new(f) == *a))
            .cloned()
            .collect();
        if !v.iter().any(|a| a == "--take-over") {
            v.push("--take-over".into());
        }
        v
    }

    /// Starts the new binary and waits until it has taken over (Ok: this
    /// process must exit, which the handover listener sees to) or failed.
    pub fn upgrade(&self, req: &UpgradeRequest) -> Result<UpgradeReport, UpgradeError> {
        let binary = req.binary.clone().unwrap_or_else(|| self.exe.clone());
        check_binary(&binary)?;
        let secs = req.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if !(1..=MAX_TIMEOUT_SECS).contains(&secs) {
            return Err(UpgradeError::Timeout(secs));
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            return Err(UpgradeError::Busy);
        }
        let r = self.launch(&binary, Duration::from_secs(secs));
        self.busy.store(false, Ordering::Release);
        r
    }

    fn launch(&self, binary: &Path, limit: Duration) -> Result<UpgradeReport, UpgradeError> {
        let (tx, rx) = channel();
        *self.watch.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        let _unwatch = Unwatch(Arc::clone(&self.watch));
        let t0 = Instant::now();
        let old = ProcessView { pid: std::process::id(), version: crate::VERSION.to_string() };
        // Its standard error is ours (the journal under systemd): its log
        // goes on where this one's stops.
        let mut child = Command::new(binary)
            .args(self.successor_args())
            .stdin(Stdio::null())
            .spawn()
            .map_err(|source| UpgradeError::Spawn { binary: binary.to_path_buf(), source })?;
        let pid = child.id();
        tracing::info!(binary = %binary.display(), pid, "upgrade: started the new binary");
        // Once it has introduced itself to the handover listener, the
        // listener's outcome is the answer (its steps are bounded in time);
        // before that, its exit is.
        let mut begun = false;
        loop {
            // Another process's attempt (a hand-started --take-over) is not
            // this one's outcome.
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Attempt::Begun { successor }) if successor.pid == pid => begun = true,
                Ok(Attempt::Handed { successor, parked_ms, handed_ms }) if successor.pid == pid => {
                    // It runs on after this process exits (dropping the
                    // handle neither kills nor waits for it).
                    drop(child);
                    return Ok(UpgradeReport {
                        binary: binary.to_path_buf(),
                        old,
                        new: ProcessView { pid, version: successor.version },
                        parked_ms,
                        silence_ms: handed_ms,
                        took_ms: t0.elapsed().as_secs_f64() * 1e3,
                    });
                }
                Ok(Attempt::Failed { successor: Some(s), reason }) if s.pid == pid => {
                    reap(child, Duration::from_secs(5));
                    return Err(UpgradeError::Failed {
                        pid,
                        version: s.version,
                        reason,
                        old: old.pid,
                    });
                }
                _ => {}
            }
            if !begun {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(UpgradeError::Exited { pid, status, old: old.pid });
                }
            }
            if t0.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return Err(UpgradeError::TimedOut { pid, secs: limit.as_secs(), old: old.pid });
            }
        }
    }
}

/// Stops reporting attempts to a request that is over.
struct Unwatch(AttemptWatch);

impl Drop for Unwatch {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Waits for a failed successor to exit (it does, having said why); one
/// that does not is killed, so no second overlayd lingers.
fn reap(mut child: Child, within: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A binary worth starting: an absolute path to an executable file.
fn check_binary(p: &Path) -> Result<(), UpgradeError> {
    use std::os::unix::fs::PermissionsExt;
    if !p.is_absolute() {
        return Err(UpgradeError::Binary(format!("{} is not an absolute path", p.display())));
    }
    let m =
        std::fs::metadata(p).map_err(|e| UpgradeError::Binary(format!("{}: {e}", p.display())))?;
    if !m.is_file() || m.permissions().mode() & 0o111 == 0 {
        return Err(UpgradeError::Binary(format!("{} is not an executable file", p.display())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrader(args: &[&str]) -> Upgrader {
        Upgrader::new(
            PathBuf::from("/usr/bin/overlayd"),
            args.iter().map(OsString::from).collect(),
            AttemptWatch::default(),
        )
    }

    #[test]
    fn the_successor_gets_the_same_arguments_less_the_start_only_ones() {
        let u = upgrader(&["run", "--fresh", "--config", "/etc/o.toml", "--start-empty"]);
        assert_eq!(u.successor_args(), ["run", "--config", "/etc/o.toml", "--take-over"]);
        // A successor upgraded in turn keeps one --take-over.
        let u = upgrader(&["run", "--take-over", "--socket", "/run/s"]);
        assert_eq!(u.successor_args(), ["run", "--take-over", "--socket", "/run/s"]);
    }

    #[test]
    fn a_bad_request_names_its_field() {
        let u = upgrader(&["run"]);
        let e = u
            .upgrade(&UpgradeRequest { binary: Some("overlayd".into()), timeout_secs: None })
            .unwrap_err();
        assert_eq!(e.field(), Some("binary"), "{e}");
        let e = u
            .upgrade(&UpgradeRequest {
                binary: Some("/nonexistent/overlayd".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(e.field(), Some("binary"), "{e}");
        let e = u
            .upgrade(&UpgradeRequest { binary: Some("/etc/passwd".into()), ..Default::default() })
            .unwrap_err();
        assert!(e.to_string().contains("not an executable"), "{e}");
        let e = u
            .upgrade(&UpgradeRequest { binary: Some("/bin/true".into()), timeout_secs: Some(0) })
            .unwrap_err();
        assert_eq!(e.field(), Some("timeout_secs"), "{e}");
    }

    #[test]
    fn a_successor_that_exits_at_once_is_reported_with_its_status() {
        let u = Upgrader::new(PathBuf::from("/bin/false"), vec![], AttemptWatch::default());
        let e = u.upgrade(&UpgradeRequest::default()).unwrap_err();
        assert!(matches!(e, UpgradeError::Exited { .. }), "{e}");
        assert!(e.to_string().contains("serves on"), "{e}");
        // Not left busy.
        assert!(matches!(u.upgrade(&UpgradeRequest::default()), Err(UpgradeError::Exited { .. })));
    }
}
