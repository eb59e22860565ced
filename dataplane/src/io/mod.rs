//! I/O backends: one file per facility. Each moves batches of packets between
//! the kernel (or a file) and the engine, and holds no policy.

pub mod afxdp;
pub mod pcap;
pub mod xdp;
