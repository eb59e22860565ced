//! Compiles the kernel tiers' programs (C) into BPF bytecode that `overlayd`
//! embeds and loads itself, so running it needs no file beside the binary.
//! The XDP program (xdp/steer.bpf.c) and the tc tier (tc/tier.bpf.c) are one
//! object: loaded once per port, they share that port's tier maps.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let srcs = ["xdp/steer.bpf.c", "tc/tier.bpf.c"];
    for s in srcs {
        println!("cargo:rerun-if-changed={s}");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let unit = out_dir.join("overlayd.bpf.c");
    let includes: String =
        srcs.iter().map(|s| format!("#include \"{}\"\n", dir.join(s).display())).collect();
    std::fs::write(&unit, includes).expect("writing the BPF compilation unit");
    let out = out_dir.join("steer.bpf.o");
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").unwrap().as_str() {
        "x86_64" => "x86_64",
        "aarch64" => "aarch64",
        other => other,
    }
    .to_string();
    let status = Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-Wall"])
        .arg(format!("-I/usr/include/{arch}-linux-gnu"))
        .arg("-c")
        .arg(&unit)
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("clang failed to compile {srcs:?} ({s}); is libbpf-dev installed? run scripts/setup.sh"),
        Err(e) => panic!(
            "cannot run clang to compile the kernel tiers' programs {srcs:?}: {e}; run scripts/setup.sh (installs clang, llvm, libbpf-dev)"
        ),
    }
}
