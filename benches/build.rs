//! Compiles the pps harness's XDP programs (generator and sink, C) into BPF
//! bytecode that `pps` embeds and loads itself.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap();
    for name in ["gen", "sink"] {
        let src = format!("pps/bpf/{name}.bpf.c");
        println!("cargo:rerun-if-changed={src}");
        let out = out_dir.join(format!("{name}.bpf.o"));
        let status = Command::new("clang")
            .args(["-O2", "-g", "-target", "bpf", "-Wall"])
            .arg(format!("-I/usr/include/{arch}-linux-gnu"))
            .args(["-c", &src, "-o"])
            .arg(&out)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("clang failed to compile {src} ({s}); run scripts/setup.sh"),
            Err(e) => panic!("cannot run clang to compile {src}: {e}; run scripts/setup.sh"),
        }
    }
}
