//! `overlayd run`: restore the accepted state, serve the control API, and exit
//! cleanly on SIGTERM. Today this is the daemon's control plane; the AF_XDP
//! workers (issue 5) attach to the same `Daemon` and its published rule sets.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use engine::model::Config;
use tokio::signal::unix::{signal, SignalKind};

use crate::api::{serve, ApiState};
use crate::daemon::Daemon;
use crate::store::Store;

pub struct RunOptions {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// The configuration file, re-read on SIGHUP.
    pub config: Option<PathBuf>,
    /// Its contents at start, used when the state directory is empty.
    pub initial: Option<Config>,
    pub allow_uids: Vec<u32>,
    /// Also serve the API on TCP; every request must carry `token`.
    pub tcp: Option<std::net::SocketAddr>,
    pub token: Option<String>,
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

pub fn run(o: RunOptions) -> Result<(), String> {
    init_logging();
    let store = Store::open(&o.state_dir).map_err(|e| e.to_string())?;
    let daemon = Arc::new(Daemon::start(store, o.initial).map_err(|e| e.to_string())?);
    tracing::info!(generation = daemon.generation(), state_dir = %o.state_dir.display(), "started");
    tracing::warn!("no packet I/O backend is attached yet (AF_XDP is issue 5): rules are served, not applied to traffic");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async move {
        if let Some(dir) = o.socket.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        if o.socket.exists() {
            if std::os::unix::net::UnixStream::connect(&o.socket).is_ok() {
                return Err(format!(
                    "{}: another overlayd is serving this socket",
                    o.socket.display()
                ));
            }
            std::fs::remove_file(&o.socket).map_err(|e| format!("{}: {e}", o.socket.display()))?;
        }
        let listener = tokio::net::UnixListener::bind(&o.socket)
            .map_err(|e| format!("{}: {e}", o.socket.display()))?;
        std::fs::set_permissions(&o.socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", o.socket.display()))?;
        let mut allowed = o.allow_uids.clone();
        allowed.push(own_uid());
        let state = Arc::new(ApiState { daemon: Arc::clone(&daemon), allowed_uids: allowed, token: o.token.clone() });
        tracing::info!(socket = %o.socket.display(), "listening");

        if let Some(path) = o.config.clone() {
            let d = Arc::clone(&daemon);
            let mut hup = signal(SignalKind::hangup()).map_err(|e| format!("SIGHUP: {e}"))?;
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let result = std::fs::read_to_string(&path)
                        .map_err(|e| e.to_string())
                        .and_then(|t| Config::from_toml(&t).map_err(|e| e.to_string()))
                        .and_then(|c| d.apply(c, d.generation()).map_err(|e| e.to_string()));
                    match result {
                        Ok(g) => tracing::info!(generation = g, file = %path.display(), "reloaded"),
                        Err(e) => {
                            // One line per event: TOML errors come with a multi-line snippet.
                            let reason = e.split_whitespace().collect::<Vec<_>>().join(" ");
                            tracing::warn!(generation = d.generation(), reason, "reload failed")
                        }
                    }
                }
            });
        }
        let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let tcp_task = match o.tcp {
            Some(addr) => {
                if o.token.is_none() {
                    return Err("--listen-tcp needs --token-file: TCP clients are authenticated by a bearer token".into());
                }
                let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("{addr}: {e}"))?;
                tracing::info!(tcp = %addr, "listening (bearer token required)");
                Some(tokio::spawn(crate::api::serve_tcp(l, Arc::clone(&state), stopped(stop_rx.clone()))))
            }
            None => None,
        };
        let served = serve(listener, state, stopped(stop_rx)).await;
        if let Some(t) = tcp_task {
            let _ = t.await;
        }
        let _ = std::fs::remove_file(&o.socket);
        served.map_err(|e| format!("serving {}: {e}", o.socket.display()))?;
        tracing::info!(generation = daemon.generation(), "stopped");
        Ok(())
    })
}
