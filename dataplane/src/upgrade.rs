//! Planned upgrade: a running overlayd hands its AF_XDP sockets, its packet
//! memory and its counters to a new binary started with `--take-over`,
//! over a Unix socket beside the API socket (`<socket>.handover`), without
//! closing a socket or dropping a frame.
//!
//! ```text
//!  new (overlayd run ... --take-over)        old (serving)
//!  loads its state, attaches its programs
//!  (adopting the pinned ones)
//!  ---- Ready ------------------------------>
//!                                            stops its tier owner (last
//!  <--- TierStopped -------------------------  harvest); its workers serve on
//!  starts its tier owner (adopts the
//!  tier's entries)
//!  ---- Park ------------------------------->
//!                                            parks its workers at a batch
//!  <--- State + descriptors (SCM_RIGHTS) ---  boundary; counters carried
//!  maps the memory and the rings,
//!  registers the sockets
//!  ---- TakingOver ------------------------>  exits (its API socket and the
//!  starts its workers, binds the API          pins are the new one's now)
//!  socket
//! ```
//!
//! Nobody moves packets only between "parks" and the new workers' start
//! (milliseconds); the sockets' rings hold what arrives meanwhile. If the new
//! binary dies or refuses before `TakingOver`, the old one starts its
//! datapath again over the same sockets (and its own pinned programs) and
//! keeps serving; its rings hold what arrives while it does. The descriptors
//! pass through io/handover.rs.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::counters::CounterBoard;
use serde::{Deserialize, Serialize};

use crate::datapath::{Datapath, DatapathLinks, DatapathOptions};
pub use crate::handed::{HandedState, HandedWorker, HandoverError, TakeOver};
use crate::io::handover;
use crate::io::tier::TierBaselines;

/// How long the old overlayd waits for the new one to take over once it
/// has sent its state (mapping the rings and starting the workers is ms).
const TAKE_OVER_WITHIN: Duration = Duration::from_secs(10);
/// How long the new one waits for the old one's state.
const STATE_WITHIN: Duration = Duration::from_secs(10);

/// What one handover came to, for whoever started the successor
/// (`overlayctl upgrade`, upgrade_launch.rs).
#[derive(Clone, Debug)]
pub enum Attempt {
    /// A successor introduced itself; its outcome follows.
    Begun { successor: Newcomer },
    /// The successor serves; this overlayd exits.
    Handed {
        successor: Newcomer,
        /// How long this overlayd's workers took to stop at a batch boundary.
        parked_ms: f64,
        /// From parking to the successor's `TakingOver`: nobody moved packets
        /// (beyond the XDP tier) for about this long.
        handed_ms: f64,
    },
    /// No handover; this overlayd serves (again, if it had parked).
    Failed { successor: Option<Newcomer>, reason: String },
}

/// The successor as it introduced itself.
#[derive(Clone, Debug)]
pub struct Newcomer {
    pub pid: u32,
    pub version: String,
}

/// Where the predecessor reports each [`Attempt`]; empty when nobody asked.
pub type AttemptWatch = Arc<Mutex<Option<std::sync::mpsc::Sender<Attempt>>>>;

/// What crosses the handover socket.
#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    /// New -> old: attached, waiting for the sockets.
    Ready { pid: u32, version: String },
    /// Old -> new: its tier owner stopped (last harvest); the new one may
    /// adopt the tier's entries, counting from where that harvest left them.
    TierStopped(TierBaselines),
    /// New -> old: its tier owner runs; park the workers.
    Park,
    /// Old -> new: the parked workers; their descriptors ride along.
    State(Box<HandedState>),
    /// Old -> new: it cannot hand over.
    Refused(String),
    /// New -> old: everything is mapped; the old one must not touch a ring again.
    TakingOver,
}

impl Msg {
    fn name(&self) -> &'static str {
        match self {
            Msg::Ready { .. } => "Ready",
            Msg::TierStopped(_) => "TierStopped",
            Msg::Park => "Park",
            Msg::State(_) => "State",
            Msg::Refused(_) => "Refused",
            Msg::TakingOver => "TakingOver",
        }
    }
}

/// The handover socket beside the API socket.
pub fn socket_path(api_socket: &Path) -> PathBuf {
    let mut s = api_socket.as_os_str().to_owned();
    s.push(".handover");
    PathBuf::from(s)
}

fn send(conn: &mut UnixStream, m: &Msg, fds: &[OwnedFd]) -> Result<(), HandoverError> {
    let body = serde_json::to_vec(m)?;
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    Ok(handover::send(conn, &body, &borrowed)?)
}

fn recv(conn: &mut UnixStream) -> Result<(Msg, Vec<OwnedFd>), HandoverError> {
    let (body, fds) = handover::recv(conn)?;
    Ok((serde_json::from_slice(&body)?, fds))
}

/// The new overlayd's side: a connection to the running one.
pub struct Successor {
    conn: UnixStream,
    board: Arc<CounterBoard>,
    /// When the old one parked (for the log: the gap).
    parked_at: Option<Instant>,
}

impl Successor {
    /// Connects to the overlayd serving `api_socket` (before attaching
    /// anything, so a missing one is said at once).
    pub fn connect(api_socket: &Path, board: Arc<CounterBoard>) -> Result<Self, HandoverError> {
        let path = socket_path(api_socket);
        let conn = UnixStream::connect(&path)
            .map_err(|source| HandoverError::Connect { path: path.clone(), source })?;
        conn.set_read_timeout(Some(STATE_WITHIN))?;
        Ok(Successor { conn, board, parked_at: None })
    }

    /// Time since the old overlayd's workers stopped, once they have.
    pub fn since_parked(&self) -> Option<Duration> {
        self.parked_at.map(|t| t.elapsed())
    }
}

impl TakeOver for Successor {
    fn prepare(&mut self) -> Result<TierBaselines, HandoverError> {
        let ready = Msg::Ready { pid: std::process::id(), version: crate::VERSION.to_string() };
        send(&mut self.conn, &ready, &[])?;
        match recv(&mut self.conn)?.0 {
            Msg::TierStopped(b) => Ok(b),
            Msg::Refused(why) => Err(HandoverError::Refused(why)),
            m => Err(HandoverError::Unexpected { expected: "TierStopped", got: m.name().into() }),
        }
    }

    fn take(&mut self) -> Result<(HandedState, Vec<OwnedFd>), HandoverError> {
        send(&mut self.conn, &Msg::Park, &[])?;
        let (m, fds) = recv(&mut self.conn)?;
        self.parked_at = Some(Instant::now());
        let state = match m {
            Msg::State(s) => *s,
            Msg::Refused(why) => return Err(HandoverError::Refused(why)),
            m => return Err(HandoverError::Unexpected { expected: "State", got: m.name().into() }),
        };
        if fds.len() != state.fd_count() {
            return Err(HandoverError::Mismatch(format!(
                "{} descriptors came for {} expected",
                fds.len(),
                state.fd_count()
            )));
        }
        self.board.absorb(&state.counters);
        Ok((state, fds))
    }

    fn commit(&mut self) -> Result<(), HandoverError> {
        send(&mut self.conn, &Msg::TakingOver, &[])
    }
}

impl Successor {
    /// This overlayd cannot take over: the running one is told why (it
    /// serves on, and reports the reason to whoever asked for the upgrade).
    pub fn give_up(&mut self, why: &str) {
        let _ = send(&mut self.conn, &Msg::Refused(why.to_string()), &[]);
    }
}

/// The old overlayd's own parked state, given back to itself when the new
/// one did not take over.
struct Resume(Option<(HandedState, Vec<OwnedFd>)>, TierBaselines);

impl TakeOver for Resume {
    fn prepare(&mut self) -> Result<TierBaselines, HandoverError> {
        Ok(std::mem::take(&mut self.1))
    }

    fn take(&mut self) -> Result<(HandedState, Vec<OwnedFd>), HandoverError> {
        self.0.take().ok_or_else(|| HandoverError::Refused("already resumed".into()))
    }

    fn commit(&mut self) -> Result<(), HandoverError> {
        Ok(())
    }
}

/// What the serving side needs to park and, if need be, resume.
pub struct Predecessor {
    pub slot: Arc<Mutex<Option<Datapath>>>,
    pub links: DatapathLinks,
    pub opts: DatapathOptions,
    /// Set while the datapath is handed (or being handed) over: the
    /// counters file is the successor's then.
    pub handing: Arc<AtomicBool>,
    /// Told of every handover attempt.
    pub watch: AttemptWatch,
}

impl Predecessor {
    /// Listens on the handover socket beside `api_socket` (replacing a
    /// stale one) and serves successors on a thread; `handed` runs once one
    /// has taken over.
    pub fn listen(
        self,
        api_socket: &Path,
        handed: impl FnOnce() + Send + 'static,
    ) -> Result<(), HandoverError> {
        use std::os::unix::fs::PermissionsExt;
        let path = socket_path(api_socket);
        let err = |source| HandoverError::Listen { path: path.clone(), source };
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).map_err(err)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        std::thread::Builder::new()
            .name("overlayd-handover".into())
            .spawn(move || self.serve(l, handed))
            .map_err(err)?;
        Ok(())
    }

    fn serve(self, l: UnixListener, handed: impl FnOnce()) {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(TAKE_OVER_WITHIN));
            let mut newcomer = None;
            let attempt = match self.hand_over(&mut conn, &mut newcomer) {
                Ok((parked, handed)) => Attempt::Handed {
                    successor: newcomer.expect("introduced itself before taking over"),
                    parked_ms: parked.as_secs_f64() * 1e3,
                    handed_ms: handed.as_secs_f64() * 1e3,
                },
                Err(HandoverError::NotTakenOver(why)) => {
                    Attempt::Failed { successor: newcomer, reason: why }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "upgrade: no handover");
                    Attempt::Failed { successor: newcomer, reason: e.to_string() }
                }
            };
            if let Attempt::Handed { successor, .. } = &attempt {
                // Before this process exits: under systemd the service goes
                // on in the successor (crate::notify).
                if let Err(e) = crate::notify::handed_to(successor.pid) {
                    tracing::warn!(error = %e, "could not tell systemd the successor's pid");
                }
            }
            let done = matches!(attempt, Attempt::Handed { .. });
            self.tell(attempt);
            if done {
                handed();
                return;
            }
        }
    }

    fn tell(&self, a: Attempt) {
        if let Some(tx) = self.watch.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(a);
        }
    }

    /// One successor: Ok (park time, time until it took over) if it took
    /// over (this process must exit now).
    fn hand_over(
        &self,
        conn: &mut UnixStream,
        newcomer: &mut Option<Newcomer>,
    ) -> Result<(Duration, Duration), HandoverError> {
        let (m, _) = recv(conn)?;
        let Msg::Ready { pid, version } = m else {
            return Err(HandoverError::Unexpected { expected: "Ready", got: m.name().into() });
        };
        tracing::info!(successor = pid, version, "upgrade: a new overlayd is ready to take over");
        let n = Newcomer { pid, version };
        self.tell(Attempt::Begun { successor: n.clone() });
        *newcomer = Some(n);
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        let refusal = match slot.as_ref() {
            None => Some("no datapath is running".to_string()),
            Some(dp) => dp.handover_refusal(),
        };
        if let Some(why) = refusal {
            send(conn, &Msg::Refused(why.clone()), &[])?;
            return Err(HandoverError::Refused(why));
        }
        self.handing.store(true, Ordering::Release);
        let baselines = slot.as_mut().expect("checked above").stop_tier();
        let asked = send(conn, &Msg::TierStopped(baselines.clone()), &[]).and_then(|()| recv(conn));
        let mut dp = slot.take().expect("checked above");
        let t0 = Instant::now();
        let (state, fds) = dp.park();
        let parked = t0.elapsed();
        let reply = match asked {
            Ok((Msg::Park, _)) => {
                let sent = send(conn, &Msg::State(Box::new(state.clone())), &fds);
                // What is left of it (programs, learning thread) goes while
                // the successor maps the queues.
                drop(dp);
                sent.and_then(|()| recv(conn))
            }
            Ok((m, _)) => Ok((m, Vec::new())),
            Err(e) => Err(e),
        };
        let why = match reply {
            Ok((Msg::TakingOver, _)) => {
                tracing::info!(
                    successor = pid,
                    parked_ms = parked.as_secs_f64() * 1e3,
                    handed_ms = t0.elapsed().as_secs_f64() * 1e3,
                    "upgrade: handed over; exiting"
                );
                return Ok((parked, t0.elapsed()));
            }
            Ok((Msg::Refused(why), _)) => why,
            Ok((m, _)) => format!("it sent {}", m.name()),
            Err(e) => e.to_string(),
        };
        tracing::warn!(successor = pid, reason = %why, "upgrade: the new overlayd did not take over; serving on");
        // Our own parked state back: the descriptors are still ours.
        let mut again = Resume(Some((state, fds)), baselines);
        match Datapath::start_taking_over(self.links.clone(), self.opts, &mut again) {
            Ok(dp) => *slot = Some(dp),
            Err(e) => tracing::error!(error = %e, "upgrade: cannot resume the datapath"),
        }
        self.handing.store(false, Ordering::Release);
        Err(HandoverError::NotTakenOver(why))
    }
}
