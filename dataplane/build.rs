//! Compiles the XDP steering program (C) into BPF bytecode that `overlayd`
//! embeds and loads itself, so running it needs no file beside the binary.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "xdp/steer.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("steer.bpf.o");
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").unwrap().as_str() {
        "x86_64" => "x86_64",
        "aarch64" => "aarch64",
        other => other,
    }
    .to_string();
    let status = Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-Wall"])
        .arg(format!("-I/usr/include/{arch}-linux-gnu"))
        .args(["-c", src, "-o"])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("clang failed to compile {src} ({s}); is libbpf-dev installed? run scripts/setup.sh"),
        Err(e) => panic!(
            "cannot run clang to compile the XDP program {src}: {e}; run scripts/setup.sh (installs clang, llvm, libbpf-dev)"
        ),
    }
}
