//! I/O, control plane and binaries.

pub mod io;
