//! What every API handler is given: the daemon, who may connect, and who
//! is connected. Apart from the router so that route groups kept elsewhere
//! (the cluster's, `cluster::http`) need nothing of it.

use std::sync::Arc;

use crate::daemon::Daemon;

pub struct ApiState {
    pub daemon: Arc<Daemon>,
    pub allowed_uids: Vec<u32>,
    /// The bearer tokens TCP clients present (TCP is only served with one):
    /// read-write, and read-only (`api_tokens`).
    pub tokens: crate::api_tokens::Tokens,
}

/// Who is connected: a local process (its uid, from SO_PEERCRED) or a TCP
/// client (which must present the bearer token).
#[derive(Clone, Copy, Debug)]
pub enum Peer {
    Unix { uid: Option<u32> },
    Tcp,
}
