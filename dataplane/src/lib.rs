//! I/O, control plane and binaries.

pub mod api;
pub mod api_types;
pub mod capture;
pub mod client;
pub mod daemon;
pub mod datapath;
pub mod io;
pub mod metrics;
pub mod neigh;
pub mod offload;
pub mod render;
pub mod replay;
pub mod report;
pub mod run;
pub mod store;
pub mod worker;
