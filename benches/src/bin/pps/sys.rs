//! The system calls of the harness that std does not wrap: entering a network
//! namespace on one thread, pinning a thread, BPF_PROG_RUN in live-frames
//! mode, SIGINT/SIGTERM to a flag. All the unsafe code of `pps` is here.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// From now on SIGINT and SIGTERM only set the flag `stopping()` reads, so
/// the harness stops at its next check and tears everything down.
pub fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installs a handler that only stores to an atomic, which is
        // async-signal-safe; `on_signal` has the C signature signal() expects.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

pub fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

fn setns(f: &File) -> io::Result<()> {
    // SAFETY: `f` is an open namespace file; setns only reads the descriptor.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs `f` with the calling thread inside network namespace `ns` (created
/// by `ip netns add`), then returns the thread to its own namespace.
pub fn in_netns<T>(ns: &str, f: impl FnOnce() -> T) -> io::Result<T> {
    let own = File::open("/proc/thread-self/ns/net")?;
    let target = File::open(format!("/run/netns/{ns}"))?;
    setns(&target)?;
    let r = f();
    setns(&own)?;
    Ok(r)
}

/// Moves the calling thread into network namespace `ns` for good.
pub fn enter_netns(ns: &str) -> io::Result<()> {
    setns(&File::open(format!("/run/netns/{ns}"))?)
}

/// Pins the calling thread to one CPU.
pub fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it and
    // sched_setaffinity reads exactly its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The kernel's `struct xdp_md`, as BPF_PROG_RUN takes it for context.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// The `test` member of `union bpf_attr` (BPF_PROG_TEST_RUN).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// Runs XDP program `prog_fd` `repeat` times over `frame` in live-frames
/// mode, as if received on `ifindex` (of the calling thread's namespace):
/// what it returns XDP_TX for is transmitted out of that interface, in
/// batches of `batch` frames.
pub fn xdp_live_run(
    prog_fd: i32,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
    batch: u32,
) -> io::Result<()> {
    let ctx = XdpMd { data_end: frame.len() as u32, ingress_ifindex: ifindex, ..XdpMd::default() };
    let attr = TestRunAttr {
        prog_fd: prog_fd as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: std::mem::size_of::<XdpMd>() as u32,
        ctx_in: &ctx as *const XdpMd as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size: batch,
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` is a valid bpf_attr prefix for BPF_PROG_TEST_RUN of the
    // size passed (the kernel zero-extends a shorter attr); the frame and the
    // context it points to outlive the call, and the kernel only reads them
    // (no data_out or ctx_out is given).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &attr as *const TestRunAttr,
            std::mem::size_of::<TestRunAttr>() as u32,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Clock ticks per second of /proc's CPU times.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The index of interface `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c =
        std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid NUL-terminated string that outlives the call.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i),
    }
}
