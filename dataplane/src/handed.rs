//! What a parked datapath hands to its successor, and how a starting
//! datapath asks for it: the contract between datapath.rs, which parks and
//! takes over, and upgrade.rs, which carries it between two processes.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use engine::counters::Carried;
use serde::{Deserialize, Serialize};

use crate::io::tier::TierBaselines;

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("{}: no overlayd to take over from ({source})", path.display())]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("handover socket {}: {source}", path.display())]
    Listen { path: PathBuf, source: std::io::Error },
    #[error("the handover connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the other overlayd sent a message this one does not read: {0}")]
    Message(#[from] serde_json::Error),
    #[error("the running overlayd refused to hand over: {0}")]
    Refused(String),
    #[error("the running overlayd sent {got} where {expected} was due")]
    Unexpected { expected: &'static str, got: String },
    #[error("the state handed over does not fit this configuration: {0}")]
    Mismatch(String),
    #[error("the new overlayd did not take over ({0}); this one serves on")]
    NotTakenOver(String),
}

/// The parked datapath: per worker, its memory's size, its free frames
/// and the ports it had a queue of (queue number = worker number). The
/// descriptors follow in the same order: each worker's memfd, then its
/// sockets.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HandedState {
    pub ring_size: u32,
    pub workers: Vec<HandedWorker>,
    /// Everything counted so far: the new overlayd's counters start there.
    pub counters: Carried,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HandedWorker {
    pub id: usize,
    pub frames: usize,
    /// Frame numbers (not byte offsets): the list stays small.
    pub free: Vec<u32>,
    pub ports: Vec<String>,
    /// How many descriptors each port's queue comes with, in `ports`' order
    /// (a tc port's: its punt device's socket and its sending one); empty
    /// from an overlayd that handed over AF_XDP sockets only: one each.
    #[serde(default)]
    pub port_fds: Vec<usize>,
}

impl HandedState {
    /// Descriptors the state comes with.
    pub fn fd_count(&self) -> usize {
        self.workers
            .iter()
            .map(|w| match w.port_fds.is_empty() {
                true => 1 + w.ports.len(),
                false => 1 + w.port_fds.iter().sum::<usize>(),
            })
            .sum()
    }
}

/// Where the datapath gets parked queues from instead of opening new ones.
pub trait TakeOver {
    /// The previous owner stops its tier owner (called once the programs
    /// are attached, before this datapath's tier owner adopts the entries):
    /// where its last harvest left the entries' counters.
    fn prepare(&mut self) -> Result<TierBaselines, HandoverError>;
    /// The parked state and its descriptors (called once the programs are attached).
    fn take(&mut self) -> Result<(HandedState, Vec<OwnedFd>), HandoverError>;
    /// Every queue is mapped: the previous owner lets go (called before
    /// the workers start).
    fn commit(&mut self) -> Result<(), HandoverError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(ports: &[&str], port_fds: Vec<usize>) -> HandedWorker {
        HandedWorker {
            id: 0,
            frames: 8,
            free: Vec::new(),
            ports: ports.iter().map(|p| p.to_string()).collect(),
            port_fds,
        }
    }

    #[test]
    fn a_tc_queue_brings_two_descriptors_and_an_older_state_one_each() {
        let state = |workers| HandedState { ring_size: 64, workers, counters: Carried::default() };
        // memfd + AF_XDP socket + the tc port's punt and send sockets.
        assert_eq!(state(vec![worker(&["up", "wl"], vec![1, 2])]).fd_count(), 4);
        // From an overlayd that knew no port_fds: memfd + one per port.
        assert_eq!(state(vec![worker(&["up", "wl"], Vec::new())]).fd_count(), 3);
        let old: HandedWorker =
            serde_json::from_str(r#"{"id":0,"frames":8,"free":[],"ports":["wl"]}"#).unwrap();
        assert!(old.port_fds.is_empty());
    }
}
