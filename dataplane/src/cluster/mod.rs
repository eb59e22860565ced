//! Cluster mode (docs/cluster.md): many hosts converge from one desired state
//! held in etcd v3. The agent registers this node under a lease, watches the
//! key layout, derives this node's tunnels, FDB entries, flood lists and
//! rules, and applies them through the daemon's commit path, one generation
//! per converged batch. It keeps no store of its own and touches no packet.

pub mod agent;
pub mod cli;
pub mod derive;
pub mod http;
pub mod layout;
pub mod session;
pub mod settings;
pub mod view;

pub use agent::Agent;
pub use settings::ClusterSettings;
