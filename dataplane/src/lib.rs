//! I/O, control plane and binaries.
