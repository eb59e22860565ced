//! The bodies of the control-plane fuzz targets (`config`, `ops`), also run
//! over the committed seeds by dataplane/engine/tests/fuzz_corpus.rs.
//!
//! What must hold for any input: no panic; a configuration the validator
//! accepts compiles, and writing it out and reading it back gives the same
//! configuration; an operation batch either fails with an error naming an
//! operation or a field, or gives a configuration that validates and compiles.

#![allow(dead_code)]

use engine::compile::compile;
use engine::model::{Config, ConfigError};
use engine::ops::{self, Op};

/// The configuration the `ops` target changes: the user guide's example.
pub const BASE: &str = include_str!("../../docs/examples/vxlan.toml");

fn accepted(c: &Config, how: &str) {
    if let Err(e) = compile(c) {
        panic!("a configuration the validator accepted ({how}) does not compile: {e}");
    }
    let toml = c.to_toml();
    let back = Config::from_toml(&toml).unwrap_or_else(|e| {
        panic!("an accepted configuration ({how}) written as TOML is refused: {e}\n{toml}")
    });
    assert_eq!(&back, c, "TOML round trip ({how}) changed the configuration");
    let json = serde_json::to_vec(c).expect("a configuration serialises");
    let back: Config = serde_json::from_slice(&json).expect("a configuration's JSON parses");
    assert_eq!(&back, c, "JSON round trip ({how}) changed the configuration");
}

fn refused(e: &ConfigError) {
    // Every refusal says something (the API returns it as the message).
    assert!(!e.to_string().trim().is_empty(), "an empty refusal: {e:?}");
}

/// The configuration parser and validator, as TOML (the file) and JSON (the
/// API's `PUT /v1/config`).
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        match Config::from_toml(text) {
            Ok(c) => accepted(&c, "TOML"),
            Err(e) => refused(&e),
        }
    }
    if let Ok(c) = serde_json::from_slice::<Config>(data) {
        match c.validate() {
            Ok(()) => accepted(&c, "JSON"),
            Err(e) => refused(&e),
        }
    }
}

/// An operation batch (`POST /v1/ops`) applied to a valid configuration.
pub fn ops(data: &[u8]) {
    let Ok(ops) = serde_json::from_slice::<Vec<Op>>(data) else { return };
    let base = Config::from_toml(BASE).expect("the example configuration is valid");
    match ops::apply(&base, &ops) {
        Ok(c) => {
            if let Err(e) = c.validate() {
                panic!("a batch applied cleanly but its result does not validate: {e}");
            }
            accepted(&c, "after ops");
        }
        Err(e) => refused(&e),
    }
}
