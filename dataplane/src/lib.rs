//! I/O, control plane and binaries.

pub mod api;
mod api_refusal;
pub mod api_server;
pub mod api_types;
pub mod capture;
pub mod client;
pub mod cluster;
pub mod daemon;
pub mod datapath;
pub mod history;
pub mod io;
pub mod metrics;
pub mod neigh;
pub mod offload;
pub mod render;
pub mod replay;
pub mod report;
pub mod run;
pub mod store;
pub mod tunnels;
pub mod why;
pub mod worker;
