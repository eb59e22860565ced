#![no_main]

#[path = "control_checks.rs"]
mod control_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| control_checks::config(data));
