//! Compiles the flood generator's XDP program (bpf/flood.bpf.c) into BPF
//! bytecode that `src/bin/flood.rs` embeds and loads itself.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap();
    let src = "bpf/flood.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    let status = Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-Wall"])
        .arg(format!("-I/usr/include/{arch}-linux-gnu"))
        .args(["-c", src, "-o"])
        .arg(out_dir.join("flood.bpf.o"))
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("clang failed to compile {src} ({s}); run scripts/setup.sh"),
        Err(e) => panic!("cannot run clang to compile {src}: {e}; run scripts/setup.sh"),
    }
}
