//! I/O, control plane and binaries.

pub mod io;
pub mod render;
pub mod replay;
pub mod store;
