//! Compiles the kernel tiers' programs (C) into BPF bytecode that `overlayd`
//! embeds and loads itself, so running it needs no file beside the binary
//! (and an installed package needs no compiler); stamps the git commit the
//! binaries were built from into their `--version`. The XDP program
//! (xdp/steer.bpf.c), the tc tier (tc/tier.bpf.c) and the tc uplink
//! (tc/uplink.bpf.c) are one object: loaded once per port, they share that
//! port's tier maps.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    stamp_commit();
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let srcs = ["xdp/steer.bpf.c", "tc/tier.bpf.c", "tc/uplink.bpf.c"];
    // The XDP program's headers (xdp/*.h) too: cargo scans a directory.
    for s in ["xdp", "tc/tier.bpf.c", "tc/uplink.bpf.c"] {
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

/// `OVERLAYD_COMMIT`: the commit checked out, from `git`, or from the
/// environment variable of that name when building outside a checkout (a
/// source tarball); "unknown" when neither says.
fn stamp_commit() {
    println!("cargo:rerun-if-env-changed=OVERLAYD_COMMIT");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = std::env::var("OVERLAYD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=OVERLAYD_COMMIT={commit}");
    // Stamp again when HEAD moves: a commit or a checkout changes HEAD (a
    // branch switch) or the branch's ref (loose, or packed by gc). Only
    // files that exist: cargo reruns a script whose watched file is missing
    // on every build.
    let mut watched = Vec::new();
    if let Some(dir) = git(&["rev-parse", "--path-format=absolute", "--git-dir"]) {
        watched.push(format!("{dir}/HEAD"));
    }
    if let Some(common) = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]) {
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(format!("{common}/{r}"));
        }
        watched.push(format!("{common}/packed-refs"));
    }
    for f in watched.iter().filter(|f| std::path::Path::new(f).exists()) {
        println!("cargo:rerun-if-changed={f}");
    }
}
