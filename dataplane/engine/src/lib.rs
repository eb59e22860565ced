//! The sans-IO engine: rule model, compiler, classifier, pipeline, counters and
//! trace. It takes packets (and the time) and returns verdicts; it never makes a
//! system call, so it runs the same under `overlayd run`, `replay` and tests.

pub mod classifier;
pub mod compile;
pub mod config_error;
pub mod counters;
pub mod flow_cache;
pub mod flow_key;
pub mod geneve;
pub mod learn;
pub mod lint;
pub mod model;
pub mod next_hop;
pub mod ops;
pub mod packet_spec;
pub mod pipeline;
pub mod placement;
pub mod schema;
pub mod suppress;
pub mod tier;
pub mod tier_fit;
pub mod trace;
pub mod usage;
