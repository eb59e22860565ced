//! AF_XDP sockets over a UMEM, with the four rings (fill, completion, RX, TX).
//!
//! One worker owns one UMEM and one socket per (port, queue) it serves; the
//! sockets after the first share the UMEM (`XDP_SHARED_UMEM`) with their own
//! fill and completion rings, so a frame received on one port is sent out of
//! another without a copy. Every frame is in exactly one place at a time: the
//! worker's free list, a fill ring, the kernel, an RX ring, the worker's batch,
//! a TX ring, or a completion ring. Nothing here allocates per packet.
//!
//! Received data starts `XDP_PACKET_HEADROOM` (256) bytes into its frame, and
//! frames the worker allocates keep the same headroom, so the outer headers of
//! an encapsulation (at most 78 bytes) are written in front of the packet in
//! place.
//!
//! All the unsafe code of the AF_XDP path is in this file.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

pub use engine::model::ZeroCopy;

use super::checksums::{settle_received, RxChecksums};

/// Bytes per UMEM frame: a page, so no frame crosses a page boundary.
pub const FRAME_SIZE: usize = 4096;
/// Where the kernel places received data in a frame (XDP_PACKET_HEADROOM);
/// the room in front is where encapsulation writes the outer headers.
pub const HEADROOM: usize = 256;

/// A kernel feature or an operation that failed, naming the interface.
#[derive(Debug, thiserror::Error)]
pub enum AfXdpError {
    #[error("{ifname}: the kernel lacks {feature}: {source}")]
    Unsupported { ifname: String, feature: &'static str, source: io::Error },
    #[error("{ifname}: {what}: {source}")]
    Io { ifname: String, what: &'static str, source: io::Error },
    #[error("{ifname}: zero-copy was required but the driver refused it: {source}")]
    ZeroCopyRefused { ifname: String, source: io::Error },
}

/// Socket statistics kept by the kernel (`XDP_STATISTICS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct XskStats {
    pub queue: u32,
    /// Frames this socket received and queued for transmission: which queue,
    /// and so which worker, carries the traffic.
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Received but dropped by the kernel (no fill-ring frame, or too large).
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    /// Dropped because the RX ring was full (the worker fell behind).
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty: u64,
    pub tx_ring_empty: u64,
    /// Partial TCP/UDP checksums finished (`io::checksums`).
    pub rx_checksums_completed: u64,
}

/// Packet memory shared with the kernel: `frames` frames of `FRAME_SIZE` bytes.
pub struct Umem {
    mem: super::Region,
    frames: usize,
}

// SAFETY: the region is plain memory owned by this value; which frames a
// thread may touch is decided by the ring protocol, not by the type.
unsafe impl Send for Umem {}

impl Umem {
    pub fn new(frames: usize) -> io::Result<Umem> {
        Ok(Umem { mem: super::Region::new(frames * FRAME_SIZE)?, frames })
    }

    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Every frame's address, for the initial free list.
    pub fn frame_addrs(&self) -> impl Iterator<Item = u64> {
        (0..self.frames as u64).map(|i| i * FRAME_SIZE as u64)
    }

    /// The whole frame containing `addr`, and `addr`'s offset in it.
    ///
    /// # Safety
    /// The caller must own that frame (it is in none of the rings) and must not
    /// create a second reference to it while this one lives.
    #[inline(always)]
    pub unsafe fn frame<'a>(&self, addr: u64) -> (&'a mut [u8], usize) {
        let base = addr as usize & !(FRAME_SIZE - 1);
        debug_assert!(base < self.frames * FRAME_SIZE);
        // SAFETY: `base` is a frame inside the mapping (addresses come from
        // this UMEM's rings), and the caller guarantees exclusive ownership.
        let s =
            unsafe { std::slice::from_raw_parts_mut(self.mem.ptr.as_ptr().add(base), FRAME_SIZE) };
        (s, addr as usize - base)
    }

    /// The UMEM address of a byte inside the mapping.
    #[inline(always)]
    pub fn addr_of(&self, p: *const u8) -> u64 {
        (p as usize - self.mem.ptr.as_ptr() as usize) as u64
    }
}

impl Umem {
    /// The mapping, for registering it with io_uring.
    pub fn as_ptr(&self) -> *mut u8 {
        self.mem.ptr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.frames * FRAME_SIZE
    }

    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }
}

/// One mmapped ring. `T` is `u64` (fill, completion) or `libc::xdp_desc`.
struct Ring<T> {
    map: NonNull<u8>,
    map_len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    desc: *mut T,
    mask: u32,
    size: u32,
    /// Our copy of the index we own (producer for fill/TX, consumer for RX/completion).
    cached_own: u32,
    /// Last seen value of the other side's index.
    cached_other: u32,
}

impl<T: Copy> Ring<T> {
    fn map(fd: RawFd, off: &libc::xdp_ring_offset, size: u32, pgoff: u64) -> io::Result<Ring<T>> {
        let map_len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        // SAFETY: maps the ring the kernel created for this socket at its
        // documented page offset; checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = p.cast::<u8>();
        // SAFETY: the offsets come from XDP_MMAP_OFFSETS for this ring and lie
        // inside the mapping; the kernel aligns them for their types.
        let (producer, consumer, flags, desc) = unsafe {
            (
                base.add(off.producer as usize).cast::<AtomicU32>(),
                base.add(off.consumer as usize).cast::<AtomicU32>(),
                base.add(off.flags as usize).cast::<AtomicU32>(),
                base.add(off.desc as usize).cast::<T>(),
            )
        };
        // A fresh socket's rings start with every index at zero.
        Ok(Ring {
            map: NonNull::new(base).expect("mmap returned null"),
            map_len,
            producer,
            consumer,
            flags,
            desc,
            mask: size - 1,
            size,
            cached_own: 0,
            cached_other: 0,
        })
    }

    #[inline(always)]
    fn load(&self, p: *const AtomicU32) -> u32 {
        // SAFETY: `p` points into the live mapping (see `map`).
        unsafe { (*p).load(Ordering::Acquire) }
    }

    #[inline(always)]
    fn store(&self, p: *const AtomicU32, v: u32) {
        // SAFETY: as in `load`; only this side writes its own index.
        unsafe { (*p).store(v, Ordering::Release) }
    }

    #[inline(always)]
    fn needs_wakeup(&self) -> bool {
        self.load(self.flags) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    #[inline(always)]
    fn slot(&self, idx: u32) -> *mut T {
        // SAFETY: masked index < size, inside the descriptor array.
        unsafe { self.desc.add((idx & self.mask) as usize) }
    }

    // --- we produce (fill, TX) ---

    /// Free slots we may write.
    #[inline(always)]
    fn prod_free(&mut self) -> u32 {
        let free = self.cached_other.wrapping_add(self.size).wrapping_sub(self.cached_own);
        if free > 0 {
            return free;
        }
        self.cached_other = self.load(self.consumer);
        self.cached_other.wrapping_add(self.size).wrapping_sub(self.cached_own)
    }

    /// Free slots, re-reading the consumer index.
    #[inline(always)]
    fn prod_free_now(&mut self) -> u32 {
        self.cached_other = self.load(self.consumer);
        self.cached_other.wrapping_add(self.size).wrapping_sub(self.cached_own)
    }

    #[inline(always)]
    fn prod_write(&mut self, v: T) {
        // SAFETY: the caller checked `prod_free` > 0, so the slot is ours.
        unsafe { self.slot(self.cached_own).write(v) };
        self.cached_own = self.cached_own.wrapping_add(1);
    }

    #[inline(always)]
    fn prod_submit(&mut self) {
        self.store(self.producer, self.cached_own);
    }

    // --- we consume (RX, completion) ---

    /// Entries ready to read.
    #[inline(always)]
    fn cons_ready(&mut self) -> u32 {
        self.cached_other = self.load(self.producer);
        self.cached_other.wrapping_sub(self.cached_own)
    }

    #[inline(always)]
    fn cons_read(&mut self) -> T {
        // SAFETY: the caller checked `cons_ready` > 0, so the kernel wrote it.
        let v = unsafe { self.slot(self.cached_own).read() };
        self.cached_own = self.cached_own.wrapping_add(1);
        v
    }

    #[inline(always)]
    fn cons_release(&mut self) {
        self.store(self.consumer, self.cached_own);
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the ring mapped in `map`.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

// SAFETY: a ring is used by the one thread that owns its socket.
unsafe impl<T> Send for Ring<T> {}

/// How to open a socket.
#[derive(Clone, Copy, Debug)]
pub struct XskConfig {
    /// Entries in each of the four rings (a power of two).
    pub ring_size: u32,
    pub zero_copy: ZeroCopy,
    /// What to do about the checksums of received frames, whose state XDP does not see.
    pub checksums: RxChecksums,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig { ring_size: 2048, zero_copy: ZeroCopy::Auto, checksums: RxChecksums::Trust }
    }
}

/// One AF_XDP socket bound to one queue of one interface.
pub struct Xsk {
    fd: OwnedFd,
    ifname: String,
    queue: u32,
    zero_copy: bool,
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    fill: Ring<u64>,
    comp: Ring<u64>,
    rx_packets: u64,
    tx_packets: u64,
    checksums: RxChecksums,
    rx_checksums_completed: u64,
}

fn setsockopt<T>(fd: RawFd, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: passes a valid pointer and the exact size of `T`.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
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

/// Reads a socket option into a plain C struct of the kernel's ABI.
fn getsockopt<T: Copy>(fd: RawFd, opt: libc::c_int) -> io::Result<T> {
    // SAFETY: only used with libc's xdp_* structs, plain integers for which
    // all-zero bytes are a valid value.
    let mut v: T = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `v`.
    let r =
        unsafe { libc::getsockopt(fd, libc::SOL_XDP, opt, (&mut v as *mut T).cast(), &mut len) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(v)
    }
}

/// The interface index of `ifname`.
pub fn ifindex(ifname: &str) -> io::Result<u32> {
    let c = CString::new(ifname).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i),
    }
}

impl Xsk {
    /// Opens a socket on `ifname` queue `queue`. The first socket of a UMEM
    /// registers it (`primary` = None); later ones share it.
    pub fn open(
        umem: &Umem,
        ifname: &str,
        queue: u32,
        primary: Option<RawFd>,
        cfg: XskConfig,
    ) -> Result<Xsk, AfXdpError> {
        let io_err = |what: &'static str| {
            let source = io::Error::last_os_error();
            AfXdpError::Io { ifname: ifname.to_string(), what, source }
        };
        let index = ifindex(ifname).map_err(|source| AfXdpError::Io {
            ifname: ifname.into(),
            what: "no such interface",
            source,
        })?;
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(AfXdpError::Unsupported {
                ifname: ifname.into(),
                feature: "AF_XDP sockets (CONFIG_XDP_SOCKETS)",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let f = fd.as_raw_fd();
        let wrap = |what: &'static str| {
            move |source| AfXdpError::Io { ifname: ifname.to_string(), what, source }
        };

        if primary.is_none() {
            let reg = libc::xdp_umem_reg {
                addr: umem.as_ptr() as u64,
                len: (umem.frames * FRAME_SIZE) as u64,
                chunk_size: FRAME_SIZE as u32,
                headroom: 0,
                flags: 0,
                tx_metadata_len: 0,
            };
            setsockopt(f, libc::XDP_UMEM_REG, &reg).map_err(wrap("registering the UMEM"))?;
        }
        let n = cfg.ring_size;
        setsockopt(f, libc::XDP_UMEM_FILL_RING, &n).map_err(wrap("sizing the fill ring"))?;
        setsockopt(f, libc::XDP_UMEM_COMPLETION_RING, &n)
            .map_err(wrap("sizing the completion ring"))?;
        setsockopt(f, libc::XDP_RX_RING, &n).map_err(wrap("sizing the RX ring"))?;
        setsockopt(f, libc::XDP_TX_RING, &n).map_err(wrap("sizing the TX ring"))?;
        let off: libc::xdp_mmap_offsets = getsockopt(f, libc::XDP_MMAP_OFFSETS)
            .map_err(wrap("reading the ring offsets (XDP_MMAP_OFFSETS)"))?;
        let rx = Ring::map(f, &off.rx, n, libc::XDP_PGOFF_RX_RING as u64)
            .map_err(wrap("mapping the RX ring"))?;
        let tx = Ring::map(f, &off.tx, n, libc::XDP_PGOFF_TX_RING as u64)
            .map_err(wrap("mapping the TX ring"))?;
        let fill = Ring::map(f, &off.fr, n, libc::XDP_UMEM_PGOFF_FILL_RING)
            .map_err(wrap("mapping the fill ring"))?;
        let comp = Ring::map(f, &off.cr, n, libc::XDP_UMEM_PGOFF_COMPLETION_RING)
            .map_err(wrap("mapping the completion ring"))?;

        let bind = |flags: u16| {
            let sa = libc::sockaddr_xdp {
                sxdp_family: libc::AF_XDP as u16,
                sxdp_flags: flags,
                sxdp_ifindex: index,
                sxdp_queue_id: queue,
                sxdp_shared_umem_fd: primary.map(|p| p as u32).unwrap_or(0),
            };
            // SAFETY: a valid sockaddr_xdp of the size passed.
            let r = unsafe {
                libc::bind(
                    f,
                    (&sa as *const libc::sockaddr_xdp).cast(),
                    std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
                )
            };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        if primary.is_some() {
            // A shared-UMEM socket inherits copy/zero-copy and need_wakeup
            // from the UMEM's first socket; the kernel refuses other flags.
            bind(libc::XDP_SHARED_UMEM).map_err(|source| {
                if source.raw_os_error() == Some(libc::EINVAL) {
                    AfXdpError::Unsupported {
                        ifname: ifname.into(),
                        feature: "a UMEM shared across interfaces and queues (Linux 5.10)",
                        source,
                    }
                } else {
                    AfXdpError::Io { ifname: ifname.into(), what: "binding the socket", source }
                }
            })?;
        } else {
            let zc = libc::XDP_USE_NEED_WAKEUP | libc::XDP_ZEROCOPY;
            let copy = libc::XDP_USE_NEED_WAKEUP | libc::XDP_COPY;
            match cfg.zero_copy {
                ZeroCopy::On => bind(zc).map_err(|source| AfXdpError::ZeroCopyRefused {
                    ifname: ifname.into(),
                    source,
                })?,
                ZeroCopy::Off => bind(copy).map_err(|s| bind_error(ifname, s))?,
                ZeroCopy::Auto => {
                    if bind(zc).is_err() {
                        bind(copy).map_err(|s| bind_error(ifname, s))?
                    }
                }
            }
        }
        let opts: libc::xdp_options =
            getsockopt(f, libc::XDP_OPTIONS).map_err(|_| io_err("reading XDP_OPTIONS"))?;
        Ok(Xsk {
            fd,
            ifname: ifname.into(),
            queue,
            zero_copy: opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0,
            rx,
            tx,
            fill,
            comp,
            rx_packets: 0,
            tx_packets: 0,
            checksums: cfg.checksums,
            rx_checksums_completed: 0,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    pub fn queue(&self) -> u32 {
        self.queue
    }

    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Takes up to `max` received descriptors as (address, length).
    #[inline]
    pub fn recv(&mut self, out: &mut Vec<(u64, u32)>, max: usize) -> usize {
        let n = (self.rx.cons_ready() as usize).min(max);
        for _ in 0..n {
            let d = self.rx.cons_read();
            out.push((d.addr, d.len));
        }
        if n > 0 {
            self.rx.cons_release();
            self.rx_packets += n as u64;
        }
        n
    }

    /// Free TX slots, as of now.
    #[inline]
    pub fn tx_free(&mut self) -> usize {
        self.tx.prod_free_now() as usize
    }

    /// Queues one frame for transmission; false if the TX ring is full.
    #[inline]
    pub fn send(&mut self, addr: u64, len: u32) -> bool {
        if self.tx.prod_free() == 0 {
            return false;
        }
        self.tx.prod_write(libc::xdp_desc { addr, len, options: 0 });
        self.tx_packets += 1;
        true
    }

    /// Publishes queued TX descriptors and wakes the kernel if it asks to be.
    /// In copy mode the kernel transmits only inside sendto(), so this is the
    /// one system call per batch of the TX path.
    #[inline]
    pub fn flush_tx(&mut self) {
        self.tx.prod_submit();
        if self.tx.needs_wakeup() {
            // SAFETY: a zero-length sendto on our socket only kicks TX.
            let r = unsafe {
                libc::sendto(
                    self.fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            // EAGAIN/EBUSY/ENOBUFS mean "try again later": the next flush does.
            let _ = r;
        }
    }

    /// True while the kernel has not taken every queued TX descriptor. In
    /// copy mode one sendto() transmits at most 32 frames, so a full batch
    /// needs several kicks.
    #[inline]
    pub fn tx_pending(&mut self) -> bool {
        (self.tx.prod_free_now()) < self.tx.size
    }

    /// Moves completed TX frames to `free`.
    #[inline]
    pub fn reclaim(&mut self, free: &mut Vec<u64>) -> usize {
        let n = self.comp.cons_ready();
        for _ in 0..n {
            free.push(self.comp.cons_read());
        }
        if n > 0 {
            self.comp.cons_release();
        }
        n as usize
    }

    /// Gives the kernel frames to receive into, from `free`, keeping at most
    /// `target` frames in the fill ring.
    #[inline]
    pub fn refill(&mut self, free: &mut Vec<u64>, target: usize) {
        let in_ring = self.fill.size as usize - self.fill.prod_free_now() as usize;
        let n = target.saturating_sub(in_ring).min(free.len());
        for _ in 0..n {
            let a = free.pop().expect("counted above");
            self.fill.prod_write(a);
        }
        if n > 0 {
            self.fill.prod_submit();
        }
    }

    /// True if the driver waits for a system call before using the fill ring.
    #[inline]
    pub fn rx_needs_wakeup(&self) -> bool {
        self.fill.needs_wakeup()
    }

    pub fn ring_size(&self) -> usize {
        self.rx.size as usize
    }

    pub fn stats(&self) -> io::Result<XskStats> {
        let s: libc::xdp_statistics = getsockopt(self.fd(), libc::XDP_STATISTICS)?;
        Ok(XskStats {
            queue: self.queue,
            rx_packets: self.rx_packets,
            tx_packets: self.tx_packets,
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty: s.rx_fill_ring_empty_descs,
            tx_ring_empty: s.tx_ring_empty_descs,
            rx_checksums_completed: self.rx_checksums_completed,
        })
    }
}

fn bind_error(ifname: &str, source: io::Error) -> AfXdpError {
    match source.raw_os_error() {
        Some(libc::EBUSY) => AfXdpError::Io {
            ifname: ifname.into(),
            what: "binding the socket (another AF_XDP socket holds this queue)",
            source,
        },
        Some(libc::EINVAL) => AfXdpError::Io {
            ifname: ifname.into(),
            what: "binding the socket (no such queue, or the kernel lacks need_wakeup, Linux 5.4)",
            source,
        },
        _ => AfXdpError::Io { ifname: ifname.into(), what: "binding the socket", source },
    }
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

/// Kicks a driver that waits for a system call before filling RX.
pub fn wake_rx(fd: RawFd) {
    // SAFETY: a zero-length, non-blocking recvfrom on our socket.
    unsafe {
        libc::recvfrom(
            fd,
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
}

/// Number of RX queues of an interface, from sysfs.
pub fn rx_queues(ifname: &str) -> usize {
    std::fs::read_dir(format!("/sys/class/net/{ifname}/queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count()
        })
        .unwrap_or(1)
        .max(1)
}

/// The interface's MAC address, from sysfs.
pub fn mac_address(ifname: &str) -> io::Result<[u8; 6]> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))?;
    let mut m = [0u8; 6];
    let parts: Vec<&str> = s.trim().split(':').collect();
    if parts.len() != 6 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad address {s:?}")));
    }
    for (o, p) in m.iter_mut().zip(parts) {
        *o = u8::from_str_radix(p, 16).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, format!("bad address {s:?}"))
        })?;
    }
    Ok(m)
}

impl super::PortQueue for Xsk {
    fn queue(&self) -> u32 {
        self.queue
    }

    fn fd(&self) -> RawFd {
        Xsk::fd(self)
    }

    fn reclaim(&mut self, free: &mut Vec<u64>, _failed: &mut Vec<u32>) {
        Xsk::reclaim(self, free);
    }

    fn refill(&mut self, free: &mut Vec<u64>) {
        let target = self.ring_size();
        Xsk::refill(self, free, target);
    }

    fn recv(&mut self, cx: &mut super::RxCtx<'_>, out: &mut Vec<(u64, u32)>, max: usize) -> usize {
        let from = out.len();
        Xsk::recv(self, out, max);
        self.rx_checksums_completed += settle_received(self.checksums, cx, out, from);
        out.len() - from
    }

    fn tx_free(&mut self) -> usize {
        Xsk::tx_free(self)
    }

    fn send(&mut self, _mem: &Umem, addr: u64, len: u32) -> bool {
        Xsk::send(self, addr, len)
    }

    fn flush_tx(&mut self) {
        Xsk::flush_tx(self)
    }

    fn tx_pending(&mut self) -> bool {
        Xsk::tx_pending(self)
    }

    fn outstanding(&mut self) -> usize {
        self.ring_size() - Xsk::tx_free(self)
    }

    fn after_rx(&mut self) {
        if self.rx_needs_wakeup() {
            wake_rx(Xsk::fd(self));
        }
    }

    fn stats(&self) -> super::QueueStats {
        let s = Xsk::stats(self).unwrap_or(XskStats {
            queue: self.queue,
            rx_packets: self.rx_packets,
            tx_packets: self.tx_packets,
            rx_checksums_completed: self.rx_checksums_completed,
            ..Default::default()
        });
        super::QueueStats::AfXdp(s)
    }

    fn zero_copy(&self) -> bool {
        self.zero_copy
    }
}
