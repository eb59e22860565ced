//! `overlayd run`: restore the accepted state, attach the interfaces and start
//! the workers, serve the control API, follow configuration changes, and on
//! SIGTERM drain the workers, detach and exit.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use engine::compile::RuleSet;
use engine::model::{Backend, Config, ConfigError};
use engine::next_hop::NextHops;
use tokio::signal::unix::{signal, SignalKind};

use crate::api::ApiState;
use crate::api_server::serve;
use crate::daemon::{ApplyError, Daemon, IoReport, PublishHook, StartError};
use crate::datapath::{neighbour_targets, Datapath, DatapathError, DatapathLinks, DatapathOptions};
use crate::io::tier::TierGenerations;
use crate::neigh::{NeighError, NeighWatcher, Target};
use crate::report::{IoStatus, LiveInputs};
use crate::store::{Recovery, Store, StoreError};

/// Why the daemon could not start, or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Restore(#[from] ApplyError),
    #[error(transparent)]
    Start(#[from] StartError),
    /// The accepted configuration names interfaces this host does not have.
    #[error(transparent)]
    Host(#[from] ConfigError),
    #[error("tokio runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{}: {source}", path.display())]
    Socket { path: PathBuf, source: std::io::Error },
    #[error("{}: another overlayd is serving this socket", path.display())]
    SocketInUse { path: PathBuf },
    #[error(transparent)]
    Neighbours(#[from] NeighError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("{signal}: {source}")]
    Signal { signal: &'static str, source: std::io::Error },
    #[error("--listen-tcp needs --token-file: TCP clients are authenticated by a bearer token")]
    TcpWithoutToken,
    #[error("{addr}: {source}")]
    Tcp { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("serving {}: {source}", path.display())]
    Serve { path: PathBuf, source: std::io::Error },
    #[error("taking over: {0}")]
    Handover(#[from] crate::upgrade::HandoverError),
    #[error("--take-over needs the datapath (not --control-only) and pinned programs")]
    TakeOverWithoutDatapath,
}

/// Why a SIGHUP did not reload the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Parse { path: PathBuf, source: ConfigError },
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// Re-reads the configuration file and applies it over the current generation.
fn reload(path: &std::path::Path, d: &Daemon) -> Result<u64, ReloadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ReloadError::Read { path: path.into(), source })?;
    // The [cluster] section is read at start only.
    let (c, _) = crate::cluster::settings::read_file_text(&text).map_err(|e| match e {
        crate::cluster::settings::FileError::Config(source) => {
            ReloadError::Parse { path: path.into(), source }
        }
        e => ReloadError::Parse { path: path.into(), source: ConfigError::Syntax(e.to_string()) },
    })?;
    Ok(d.apply(c, d.generation())?)
}

pub struct RunOptions {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// The configuration file, re-read on SIGHUP.
    pub config: Option<PathBuf>,
    /// Its contents at start, used when the state directory is empty.
    pub initial: Option<Config>,
    pub allow_uids: Vec<u32>,
    /// Whether to start from `state.json` (the default), the previous
    /// state, or empty.
    pub recovery: Recovery,
    /// Also serve the API on TCP; every request must carry `token`, or
    /// `read_token` to read only.
    pub tcp: Option<std::net::SocketAddr>,
    pub token: Option<String>,
    pub read_token: Option<String>,
    /// Attach the configured interfaces and move packets (None: control only).
    pub datapath: Option<DatapathOptions>,
    /// Remove what a previous overlayd left pinned instead of adopting it.
    pub fresh: bool,
    /// On exit, remove the pinned programs and maps (a clean stop).
    pub remove_on_exit: bool,
    /// Cluster mode (the file's `[cluster]` section); None: a single host.
    pub cluster: Option<crate::cluster::ClusterSettings>,
    /// A planned upgrade: take the sockets, memory and counters over from
    /// the overlayd serving `socket` (upgrade.rs) instead of opening new ones.
    pub take_over: bool,
}

/// A document is only accepted if this host can serve it: every port names
/// an interface that exists.
fn host_check(c: &Config) -> Result<(), ConfigError> {
    for (i, p) in c.ports.iter().enumerate() {
        let invalid =
            |reason: String| ConfigError::Invalid { path: format!("ports[{i}].interface"), reason };
        match &p.interface {
            None => {
                return Err(invalid(
                    "required by `overlayd run` (the port's Linux interface)".into(),
                ))
            }
            // `run` creates a TAP device that does not exist yet.
            Some(name) if p.backend == Backend::Tap => {
                if name.is_empty() || name.len() >= libc::IFNAMSIZ {
                    return Err(invalid(format!("{name:?} is not a valid interface name")));
                }
            }
            Some(name) => {
                crate::io::netdev::ifindex(name)
                    .map_err(|e| invalid(format!("no interface {name:?} on this host ({e})")))?;
            }
        }
    }
    Ok(())
}

fn targets(rs: &RuleSet) -> Vec<Target> {
    neighbour_targets(rs).into_iter().map(|(remote, ifname)| Target { remote, ifname }).collect()
}

/// The running datapath, replaced when the ports change.
type Slot = Arc<Mutex<Option<Datapath>>>;

/// The running packet I/O as the control plane reads it: the datapath in its
/// slot, the neighbour watcher and the next hops it learns.
struct RunningIo {
    slot: Slot,
    watcher: Arc<NeighWatcher>,
    hops: Arc<NextHops>,
}

impl IoReport for RunningIo {
    fn io_status(&self) -> IoStatus {
        let g = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        IoStatus {
            running: g.is_some(),
            workers: g.as_ref().map_or(0, |d| d.workers()),
            ports: g.as_ref().map(|d| d.status()).unwrap_or_default(),
            neighbours: self.watcher.states(),
            tier: g.as_ref().and_then(|d| d.tier_status()),
        }
    }

    fn live_inputs(&self) -> LiveInputs {
        let g = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        LiveInputs {
            next_hops: self.hops.snapshot(),
            path_mtus: self.hops.mtus(),
            interface_macs: g.as_ref().map(|d| d.interface_macs().clone()).unwrap_or_default(),
            neighbours: self.watcher.states(),
        }
    }
}

/// Makes the XDP tier's entries of older rule sets inert before a change
/// is acknowledged (io/tier.rs: why this is atomic).
struct TierHook(Arc<TierGenerations>);

impl PublishHook for TierHook {
    fn published(&self, rs: &RuleSet) {
        if let Err(e) = self.0.publish(rs.generation) {
            tracing::error!(generation = rs.generation, error = %e, "XDP tier generation not updated");
        }
    }
}

/// Keeps the datapath and the neighbour watcher in step with each new generation.
async fn follow(
    daemon: Arc<Daemon>,
    slot: Slot,
    watcher: Arc<NeighWatcher>,
    links: DatapathLinks,
    opts: DatapathOptions,
) {
    let mut rx = daemon.subscribe();
    while rx.changed().await.is_ok() {
        let rs = daemon.rules();
        watcher.set_targets(targets(&rs));
        tokio::task::block_in_place(|| {
            let mut g = slot.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(dp) = g.as_ref().filter(|dp| dp.serves(&rs)) {
                if let Err(e) = dp.resteer(&rs) {
                    tracing::error!(generation = rs.generation, error = %e, "re-steering failed");
                }
                return;
            }
            tracing::info!(generation = rs.generation, "ports changed: restarting the datapath");
            if let Some(old) = g.take() {
                old.stop();
            }
            match Datapath::start(links.clone(), opts) {
                Ok(dp) => *g = Some(dp),
                Err(e) => {
                    tracing::error!(generation = rs.generation, error = %e, "datapath failed to start")
                }
            }
        });
    }
}

/// One line per event on stderr, `key=value` fields; RUST_LOG filters.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}

fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0)
}

pub fn run(o: RunOptions) -> Result<(), RunError> {
    crate::io::sys::steady_heap();
    init_logging();
    let store = Store::open(&o.state_dir)?;
    if let Some(aside) = store.recover(o.recovery)? {
        tracing::warn!(recovery = ?o.recovery, kept = %aside.display(), "the state file was set aside");
    }
    let daemon = Arc::new(Daemon::start(store, o.initial)?);
    tracing::info!(generation = daemon.generation(), state_dir = %o.state_dir.display(), "started");
    if o.take_over && !o.datapath.is_some_and(|d| d.pin) {
        return Err(RunError::TakeOverWithoutDatapath);
    }
    // Counters go on from where the previous run left them; a successor
    // gets them with the sockets instead.
    if !o.take_over {
        if let Some(c) = crate::carry::load(&o.state_dir) {
            daemon.counter_board().absorb(&c);
            tracing::info!(rx = c.rx, tx = c.tx, "counters carried over from the previous run");
        }
    }
    let handing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handed_over = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cluster = o.cluster.map(|s| {
        tracing::info!(node = %s.node, endpoints = ?s.endpoints, prefix = %s.prefix, "cluster mode");
        let a = crate::cluster::Agent::new(s, Arc::clone(&daemon));
        daemon.set_cluster(Arc::clone(&a));
        a
    });
    if o.datapath.is_some() {
        daemon.set_host_check(Box::new(host_check))?;
        // VF settings and flow offload follow the configuration from now on;
        // whatever the devices refuse is reported and runs in software.
        let offloader = crate::offload::Offloader::new(Box::new(crate::offload::Kernel::default()));
        daemon.set_offload(Arc::new(offloader));
    } else {
        tracing::info!("control only: no interface attached, no packet moved");
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let socket_error = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| RunError::Socket { path, source }
    };
    rt.block_on(async move {
        if let Some(dir) = o.socket.parent() {
            std::fs::create_dir_all(dir).map_err(socket_error(dir))?;
        }
        if o.socket.exists() && !o.take_over {
            if std::os::unix::net::UnixStream::connect(&o.socket).is_ok() {
                return Err(RunError::SocketInUse { path: o.socket.clone() });
            }
            std::fs::remove_file(&o.socket).map_err(socket_error(&o.socket))?;
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        // The datapath before the API socket: if it cannot start, nothing is
        // left behind.
        let io = match o.datapath {
            Some(opts) => {
                let hops = NextHops::new();
                let watcher = Arc::new(NeighWatcher::start(Arc::clone(&hops)).await?);
                watcher.set_targets(targets(&daemon.rules()));
                let tier_gens = Arc::new(TierGenerations::default());
                daemon.set_publish_hook(Box::new(TierHook(Arc::clone(&tier_gens))));
                // A live capture must see every packet: the tier pauses while one runs.
                let paused = Arc::clone(&tier_gens);
                daemon.capture_tap().on_arming(Box::new(move |armed| match paused.pause(armed) {
                    Ok(()) if armed => tracing::info!(
                        "XDP tier paused while a capture runs: its flows take the software path"
                    ),
                    Ok(()) => tracing::info!("XDP tier resumed"),
                    Err(e) => tracing::error!(error = %e, "XDP tier not paused for the capture"),
                }));
                let links = DatapathLinks {
                    published: daemon.published(),
                    hops,
                    counters: daemon.counter_board(),
                    tier_gens,
                    capture: daemon.capture_tap(),
                    learning: daemon.learning(),
                    bells: daemon.doorbells(),
                };
                if o.fresh && opts.pin {
                    let keep: [String; 0] = [];
                    for p in crate::io::pin::sweep(&keep) {
                        tracing::info!(interface = %p.interface, "--fresh: removed the pinned XDP program a previous overlayd left");
                    }
                }
                let dp = if o.take_over {
                    let mut from =
                        crate::upgrade::Successor::connect(&o.socket, daemon.counter_board())?;
                    let started = tokio::task::block_in_place(|| {
                        Datapath::start_taking_over(links.clone(), opts, &mut from)
                    });
                    // The running overlayd serves on; it reports why to
                    // whoever asked for the upgrade.
                    let dp = started.inspect_err(|e| from.give_up(&e.to_string()))?;
                    let gap = from.since_parked().unwrap_or_default();
                    tracing::info!(
                        workers_stopped_for_ms = gap.as_secs_f64() * 1e3,
                        "upgrade: took over from the running overlayd"
                    );
                    dp
                } else {
                    Datapath::start(links.clone(), opts)?
                };
                let slot: Slot = Arc::new(Mutex::new(Some(dp)));
                if opts.pin {
                    let pred = crate::upgrade::Predecessor {
                        slot: Arc::clone(&slot),
                        links: links.clone(),
                        opts,
                        handing: Arc::clone(&handing),
                        watch: crate::upgrade::AttemptWatch::default(),
                    };
                    let upgrader =
                        crate::upgrade_launch::Upgrader::of_this_process(Arc::clone(&pred.watch));
                    daemon.set_upgrader(Arc::new(upgrader));
                    let (done, tx) = (Arc::clone(&handed_over), Arc::clone(&stop_tx));
                    pred.listen(&o.socket, move || {
                        done.store(true, std::sync::atomic::Ordering::Release);
                        let _ = tx.send(true);
                    })?;
                }
                daemon.set_io_report(Box::new(RunningIo {
                    hops: Arc::clone(&links.hops),
                    slot: Arc::clone(&slot),
                    watcher: Arc::clone(&watcher),
                }));
                tokio::spawn(follow(Arc::clone(&daemon), Arc::clone(&slot), watcher, links, opts));
                Some(slot)
            }
            None => None,
        };
        let session = cluster.as_ref().map(|a| tokio::spawn(crate::cluster::session::run(Arc::clone(a))));
        // A sample of the counters every second: tunnel liveness and what
        // moved recently (`why`) come from these.
        // The same tick saves the counters for the next run, and frees the
        // rule sets the workers have moved on from.
        let d = Arc::clone(&daemon);
        let (dir, busy) = (o.state_dir.clone(), Arc::clone(&handing));
        // What the last save wrote: counters that did not move are not
        // written again (an idle daemon writes nothing).
        let saved = Arc::new(Mutex::new(None));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let d = Arc::clone(&d);
                let (dir, busy, saved) = (dir.clone(), Arc::clone(&busy), Arc::clone(&saved));
                // Reading offloaded rules' counters asks the kernel.
                let _ = tokio::task::spawn_blocking(move || {
                    d.observe();
                    if !busy.load(std::sync::atomic::Ordering::Acquire) {
                        crate::carry::save_if_moved(&dir, d.counter_board().carried(), &saved);
                    }
                    // Last, so the tick's own scratch is returned too.
                    d.release_memory();
                })
                .await;
            }
        });
        if o.take_over {
            // The predecessor's socket: ours from now on (it exits).
            let _ = std::fs::remove_file(&o.socket);
        }
        let listener =
            tokio::net::UnixListener::bind(&o.socket).map_err(socket_error(&o.socket))?;
        std::fs::set_permissions(&o.socket, std::fs::Permissions::from_mode(0o600))
            .map_err(socket_error(&o.socket))?;
        let mut allowed = o.allow_uids.clone();
        allowed.push(own_uid());
        let state = Arc::new(ApiState {
            daemon: Arc::clone(&daemon),
            allowed_uids: allowed,
            tokens: crate::api_tokens::Tokens {
                read_write: o.token.clone(),
                read_only: o.read_token.clone(),
            },
        });
        tracing::info!(socket = %o.socket.display(), "listening");

        if let Some(path) = o.config.clone() {
            let d = Arc::clone(&daemon);
            let mut hup = signal(SignalKind::hangup())
                .map_err(|source| RunError::Signal { signal: "SIGHUP", source })?;
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    match reload(&path, &d) {
                        Ok(g) => tracing::info!(generation = g, file = %path.display(), "reloaded"),
                        Err(e) => {
                            // One line per event: TOML errors come with a multi-line snippet.
                            let reason =
                                e.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
                            tracing::warn!(generation = d.generation(), reason, "reload failed")
                        }
                    }
                }
            });
        }
        let mut term = signal(SignalKind::terminate())
            .map_err(|source| RunError::Signal { signal: "SIGTERM", source })?;
        let mut int = signal(SignalKind::interrupt())
            .map_err(|source| RunError::Signal { signal: "SIGINT", source })?;
        let capture = daemon.capture_tap();
        let stop_on_signal = Arc::clone(&stop_tx);
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            // A running capture ends, so its connection lets the server stop.
            capture.close();
            let _ = stop_on_signal.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let nofile = crate::api_server::raise_fd_limit();
        let caps = crate::api_server::Caps::for_fd_limit(nofile);
        tracing::debug!(nofile, ?caps, "API connection caps");
        let tcp_task = match o.tcp {
            Some(addr) => {
                if o.token.is_none() && o.read_token.is_none() {
                    return Err(RunError::TcpWithoutToken);
                }
                let mut bound = tokio::net::TcpListener::bind(addr).await;
                // A predecessor being handed over holds the port until it exits.
                let t0 = std::time::Instant::now();
                while o.take_over && bound.is_err() && t0.elapsed().as_secs() < 5 {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    bound = tokio::net::TcpListener::bind(addr).await;
                }
                let l = bound.map_err(|source| RunError::Tcp { addr, source })?;
                tracing::info!(tcp = %addr, "listening (bearer token required)");
                Some(tokio::spawn(crate::api_server::serve_tcp(
                    l,
                    Arc::clone(&state),
                    caps,
                    stopped(stop_rx.clone()),
                )))
            }
            None => None,
        };
        // The datapath is attached and both listeners are bound: a unit of
        // Type=notify is ready now (a no-op outside systemd). A successor
        // is the service's main process from now on (crate::notify).
        if let Err(e) = crate::notify::ready(o.take_over) {
            tracing::warn!(error = %e, "could not tell systemd we are ready");
        }
        let served = serve(listener, state, caps, stopped(stop_rx)).await;
        if let Some(t) = tcp_task {
            let _ = t.await;
        }
        if handed_over.load(std::sync::atomic::Ordering::Acquire) {
            // The successor serves the sockets, the programs and the API
            // socket's path now: nothing here is ours to remove.
            served.map_err(|source| RunError::Serve { path: o.socket.clone(), source })?;
            tracing::info!(generation = daemon.generation(), "handed over to the new overlayd");
            return Ok(());
        }
        let _ = std::fs::remove_file(&o.socket);
        if let (true, Some(a), Some(session)) = (o.remove_on_exit, &cluster, session) {
            // The session first: it would register again the moment the
            // revoke deletes this node's record.
            session.abort();
            let _ = session.await;
            a.leave(std::time::Duration::from_secs(1)).await;
        }
        let _ = std::fs::remove_file(crate::upgrade::socket_path(&o.socket));
        if let Some(slot) = io {
            let dp = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(dp) = dp {
                // By default the pinned programs stay, the tier's flows
                // forwarded, for the next start to take over (a restart).
                if o.remove_on_exit {
                    tokio::task::block_in_place(|| dp.stop_and_remove());
                } else {
                    tokio::task::block_in_place(|| dp.stop());
                }
            }
        }
        if let Err(e) = crate::carry::save(&o.state_dir, &daemon.counter_board().carried()) {
            tracing::warn!(error = %e, "counters not saved for the next run");
        }
        served.map_err(|source| RunError::Serve { path: o.socket.clone(), source })?;
        tracing::info!(generation = daemon.generation(), "stopped");
        Ok(())
    })
}
