//! I/O, control plane and binaries.

/// What `--version` says: the package version and the commit built.
pub const VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("OVERLAYD_COMMIT"), ")");

pub mod api;
mod api_refusal;
pub mod api_server;
pub mod api_state;
pub mod api_tokens;
pub mod api_types;
pub mod capture;
pub mod carry;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod daemon;
pub mod datapath;
pub mod handed;
pub mod history;
pub mod io;
pub mod learning;
pub mod metrics;
pub mod neigh;
pub mod notify;
pub mod offload;
pub mod openapi;
pub mod pinned;
pub mod render;
pub mod replay;
pub mod report;
pub mod resident;
pub mod run;
pub mod store;
pub mod tier_place;
pub mod tunnels;
pub mod upgrade;
pub mod upgrade_http;
pub mod upgrade_launch;
pub mod why;
pub mod worker;

/// Locks `m`, taking over the value a holder that panicked left behind
/// rather than passing the panic on.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
