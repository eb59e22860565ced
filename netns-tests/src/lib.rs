//! Helpers for privileged end-to-end tests in network namespaces.
