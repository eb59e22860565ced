//! Small system-call helpers shared by the backends: socket options, a
//! socket, waiting for readiness, pinning a worker to its CPU.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Sets a socket option whose value is a plain C value `T`.
pub fn setsockopt<T>(fd: RawFd, level: libc::c_int, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: passes a valid pointer and the exact size of `T`.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets an `int` socket option.
pub fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    setsockopt(fd, level, opt, &v)
}

/// Reads a socket option into a plain C struct of the kernel's ABI.
///
/// # Safety
/// `T` must be a plain C struct of integers, for which all-zero bytes are a
/// valid value (libc's `xdp_*` structs are).
pub unsafe fn getsockopt<T: Copy>(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
) -> io::Result<T> {
    // SAFETY: the caller guarantees all-zero bytes are a valid `T`.
    let mut v: T = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `v`.
    let r = unsafe { libc::getsockopt(fd, level, opt, (&mut v as *mut T).cast(), &mut len) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(v)
    }
}

/// A new socket, close-on-exec.
pub fn socket(family: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked.
    let raw = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, proto) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Waits until one of `fds` has received data, or `timeout_ms` passes.
pub fn wait_readable(fds: &mut [libc::pollfd], timeout_ms: i32) {
    for p in fds.iter_mut() {
        p.events = libc::POLLIN;
        p.revents = 0;
    }
    // SAFETY: `fds` is a valid, initialised pollfd array of the given length.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
}

/// Pins the calling thread to `cpu` (best effort: a refusal leaves it free).
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it,
    // and sched_setaffinity reads exactly its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Keeps glibc's heap at a steady size instead of handing memory back and
/// taking it again on every rule change. overlayd itself allocates with
/// jemalloc ([`JEMALLOC_CONF`]); glibc's heap is what C libraries allocate,
/// and the whole heap of a build without jemalloc (the tests).
///
/// Each change compiles the whole rule set beside the one in force and
/// encodes the state file; with glibc's defaults the large buffers are
/// mapped and unmapped each time, the top of the heap is trimmed, and the
/// threads that happen to run a commit spread it over up to 8 arenas per
/// core, so resident memory swings by tens of MB from one second to the next
/// (measured in the soak: 227-293 MB). Two arenas (the packet path does not
/// allocate), buffers up to 32 MiB from the heap, and no trimming: the heap
/// settles at the peak of what a commit needs and reuses it. glibc's own
/// tunables (`GLIBC_TUNABLES=glibc.malloc...`) win when set.
pub fn steady_heap() {
    if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
        return;
    }
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes the allocator's parameters; it is called
    // at start, before the daemon starts a thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}

/// jemalloc's settings for overlayd (its `malloc_conf`, read before
/// `main`): one arena and no thread caches. The packet path does not
/// allocate, so neither buys anything that matters: with one arena a rule
/// change's scratch and the sets it keeps share one set of slabs, which
/// the next change reuses, and without thread caches no freed object is
/// held by a thread, out of reach of the once-a-second purge.
pub const JEMALLOC_CONF: &[u8] = b"narenas:1,tcache:false\0";

/// Gives the kernel back the heap's free pages. overlayd allocates with
/// jemalloc (its binary's global allocator): every arena's unused dirty
/// pages are purged now rather than on jemalloc's decay timer, so memory is
/// returned at one known point, after a change, not at random. glibc's
/// heap (C libraries; the whole heap in a build without jemalloc, e.g. the
/// tests) is trimmed too: [`steady_heap`] turns its automatic trimming off.
/// The control plane calls this once a second, off the fast path (which
/// allocates nothing, so never waits for the allocators' locks).
pub fn release_free_heap() {
    // MALLCTL_ARENAS_ALL: every arena.
    const PURGE_ALL: &[u8] = b"arena.4096.purge\0";
    // SAFETY: a void mallctl with no old or new value (what `purge` takes);
    // the name is NUL-terminated. It takes each arena's lock, so it is safe
    // beside other threads' allocations.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory; it takes each arena's
    // lock, so it is safe beside other threads' allocations.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A descriptor of our own for what `fd` refers to (close-on-exec): a
/// socket or memory handed to the next overlayd outlives our copy.
pub fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: duplicates a descriptor the caller holds open; checked below.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `r` is a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}
