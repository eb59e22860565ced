//! AF_XDP sockets over a UMEM, with the four rings (fill, completion, RX, TX).
//!
//! One worker owns one UMEM and one socket per (port, queue) it serves; the
//! sockets after the first share the UMEM (`XDP_SHARED_UMEM`) with their own
//! fill and completion rings, so a frame received on one port is sent out of
//! another without a copy. Every frame is in exactly one place at a time: the
//! worker's free list, a fill ring, the kernel, an RX ring, the worker's batch,
//! a TX ring, or a completion ring. Nothing here allocates per packet.
//!
//! Received data starts `XDP_PACKET_HEADROOM` (256) bytes into its frame
//! ([`super::memory::HEADROOM`]), and frames the worker allocates keep the same headroom, so
//! the outer headers of an encapsulation are written in front of the packet
//! in place. The packet memory itself is [`Umem`] (io/memory.rs).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

pub use engine::model::ZeroCopy;

use super::memory::{FrameAddr, Umem, FRAME_SIZE};
use super::sys::{self, getsockopt, setsockopt};
use super::{netdev, PortQueue, QueueStats, RingStats, RxCtx, RxDesc, TxFailure};

use super::checksums::{settle_received, RxChecksums};

/// A kernel feature or an operation that failed, naming the interface.
#[derive(Debug, thiserror::Error)]
pub enum AfXdpError {
    #[error("{ifname}: the kernel lacks {feature}: {source}")]
    Unsupported { ifname: String, feature: &'static str, source: io::Error },
    #[error("{ifname}: {what}: {source}")]
    Io { ifname: String, what: &'static str, source: io::Error },
    #[error("{ifname}: {what} needs {capability}: {source}")]
    Denied { ifname: String, what: &'static str, capability: &'static str, source: io::Error },
    #[error("{ifname}: zero-copy was required but the driver refused it: {source}")]
    ZeroCopyRefused { ifname: String, source: io::Error },
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

    /// Takes our index and the other side's from the shared ring, as a
    /// previous owner of the socket left them (`producer`: we produce).
    fn resume(&mut self, producer: bool) {
        let (prod, cons) = (self.load(self.producer), self.load(self.consumer));
        (self.cached_own, self.cached_other) = if producer { (prod, cons) } else { (cons, prod) };
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
        let index = netdev::ifindex(ifname).map_err(|source| AfXdpError::Io {
            ifname: ifname.into(),
            what: "no such interface",
            source,
        })?;
        let fd = sys::socket(libc::AF_XDP, libc::SOCK_RAW, 0).map_err(|source| {
            // EPERM is the missing capability, not a kernel without AF_XDP.
            match source.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => AfXdpError::Denied {
                    ifname: ifname.into(),
                    what: "an AF_XDP socket",
                    capability: "CAP_NET_RAW",
                    source,
                },
                _ => AfXdpError::Unsupported {
                    ifname: ifname.into(),
                    feature: "AF_XDP sockets (CONFIG_XDP_SOCKETS)",
                    source,
                },
            }
        })?;
        let f = fd.as_raw_fd();
        let wrap = |what: &'static str| {
            move |source| AfXdpError::Io { ifname: ifname.to_string(), what, source }
        };

        if primary.is_none() {
            let reg = libc::xdp_umem_reg {
                addr: umem.as_ptr() as u64,
                len: umem.len() as u64,
                chunk_size: FRAME_SIZE as u32,
                headroom: 0,
                flags: 0,
                tx_metadata_len: 0,
            };
            setsockopt(f, libc::SOL_XDP, libc::XDP_UMEM_REG, &reg)
                .map_err(wrap("registering the UMEM"))?;
        }
        let n = cfg.ring_size;
        setsockopt(f, libc::SOL_XDP, libc::XDP_UMEM_FILL_RING, &n)
            .map_err(wrap("sizing the fill ring"))?;
        setsockopt(f, libc::SOL_XDP, libc::XDP_UMEM_COMPLETION_RING, &n)
            .map_err(wrap("sizing the completion ring"))?;
        setsockopt(f, libc::SOL_XDP, libc::XDP_RX_RING, &n).map_err(wrap("sizing the RX ring"))?;
        setsockopt(f, libc::SOL_XDP, libc::XDP_TX_RING, &n).map_err(wrap("sizing the TX ring"))?;
        let (rx, tx, fill, comp) = map_rings(f, n, ifname)?;
        raise_tx_budget(f, n);

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
        // SAFETY: xdp_options is a plain struct of integers.
        let opts: libc::xdp_options = unsafe { getsockopt(f, libc::SOL_XDP, libc::XDP_OPTIONS) }
            .map_err(|_| io_err("reading XDP_OPTIONS"))?;
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

    /// A socket a previous overlayd opened, bound and handed over (upgrade):
    /// its rings mapped here and our indices taken from where that process
    /// left them (it stopped at a batch boundary, everything published).
    /// Needs a kernel that maps a bound socket's rings (Linux 6.x).
    pub fn adopt(
        fd: OwnedFd,
        ifname: &str,
        queue: u32,
        ring_size: u32,
        checksums: RxChecksums,
    ) -> Result<Xsk, AfXdpError> {
        let (mut rx, mut tx, mut fill, mut comp) = map_rings(fd.as_raw_fd(), ring_size, ifname)?;
        rx.resume(false);
        tx.resume(true);
        fill.resume(true);
        comp.resume(false);
        // SAFETY: xdp_options is a plain struct of integers.
        let opts: libc::xdp_options =
            unsafe { getsockopt(fd.as_raw_fd(), libc::SOL_XDP, libc::XDP_OPTIONS) }.map_err(
                |source| AfXdpError::Io {
                    ifname: ifname.into(),
                    what: "reading XDP_OPTIONS",
                    source,
                },
            )?;
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
            checksums,
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

    /// Takes up to `max` received frames.
    #[inline]
    pub fn recv(&mut self, out: &mut Vec<RxDesc>, max: usize) -> usize {
        let n = (self.rx.cons_ready() as usize).min(max);
        for _ in 0..n {
            let d = self.rx.cons_read();
            out.push(RxDesc { addr: FrameAddr(d.addr), len: d.len });
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
    pub fn send(&mut self, addr: FrameAddr, len: u32) -> bool {
        if self.tx.prod_free() == 0 {
            return false;
        }
        self.tx.prod_write(libc::xdp_desc { addr: addr.0, len, options: 0 });
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
    pub fn reclaim(&mut self, free: &mut Vec<FrameAddr>) -> usize {
        let n = self.comp.cons_ready();
        for _ in 0..n {
            free.push(FrameAddr(self.comp.cons_read()).base());
        }
        if n > 0 {
            self.comp.cons_release();
        }
        n as usize
    }

    /// Gives the kernel frames to receive into, from `free`, keeping at most
    /// `target` frames in the fill ring.
    #[inline]
    pub fn refill(&mut self, free: &mut Vec<FrameAddr>, target: usize) {
        let in_ring = self.fill.size as usize - self.fill.prod_free_now() as usize;
        let n = target.saturating_sub(in_ring).min(free.len());
        for _ in 0..n {
            let a = free.pop().expect("counted above");
            self.fill.prod_write(a.0);
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

    /// This socket's counts and the kernel's (`XDP_STATISTICS`).
    pub fn stats(&self) -> io::Result<QueueStats> {
        // SAFETY: xdp_statistics is a plain struct of integers.
        let s: libc::xdp_statistics =
            unsafe { getsockopt(self.fd(), libc::SOL_XDP, libc::XDP_STATISTICS) }?;
        Ok(QueueStats {
            rings: Some(RingStats {
                rx_dropped: s.rx_dropped,
                rx_invalid_descs: s.rx_invalid_descs,
                tx_invalid_descs: s.tx_invalid_descs,
                rx_ring_full: s.rx_ring_full,
                rx_fill_ring_empty: s.rx_fill_ring_empty_descs,
                tx_ring_empty: s.tx_ring_empty_descs,
            }),
            ..self.own_stats()
        })
    }

    fn own_stats(&self) -> QueueStats {
        QueueStats {
            queue: self.queue,
            rx_packets: self.rx_packets,
            tx_packets: self.tx_packets,
            rx_checksums_completed: self.rx_checksums_completed,
            ..Default::default()
        }
    }

    /// Kicks a driver that waits for a system call before filling RX.
    fn wake_rx(&self) {
        // SAFETY: a zero-length, non-blocking recvfrom on our socket.
        unsafe {
            libc::recvfrom(
                self.fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }
}

/// `XDP_MAX_TX_SKB_BUDGET` (Linux 6.17; not in libc yet): how many TX
/// descriptors one `sendto()` may send in copy mode.
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

/// Lets one `sendto()` send the whole TX ring in copy mode, where the kernel
/// otherwise stops after 32 frames and a batch of 256 costs eight kicks
/// (docs/decisions.md has the measurement). Zero-copy drivers ignore it;
/// older kernels refuse the option (ENOPROTOOPT), and then 32 it stays.
fn raise_tx_budget(f: RawFd, ring: u32) {
    if let Err(e) = setsockopt(f, libc::SOL_XDP, XDP_MAX_TX_SKB_BUDGET, &ring) {
        tracing::debug!(error = %e, "copy-mode TX budget left at the kernel's 32");
    }
}

/// A socket's rings: RX, TX, fill, completion.
type Rings = (Ring<libc::xdp_desc>, Ring<libc::xdp_desc>, Ring<u64>, Ring<u64>);

/// Maps a socket's four rings of `n` entries: RX, TX, fill, completion.
fn map_rings(f: RawFd, n: u32, ifname: &str) -> Result<Rings, AfXdpError> {
    let wrap = |what: &'static str| {
        move |source| AfXdpError::Io { ifname: ifname.to_string(), what, source }
    };
    // SAFETY: xdp_mmap_offsets is a plain struct of integers.
    let off: libc::xdp_mmap_offsets =
        unsafe { getsockopt(f, libc::SOL_XDP, libc::XDP_MMAP_OFFSETS) }
            .map_err(wrap("reading the ring offsets (XDP_MMAP_OFFSETS)"))?;
    let rx = Ring::map(f, &off.rx, n, libc::XDP_PGOFF_RX_RING as u64)
        .map_err(wrap("mapping the RX ring"))?;
    let tx = Ring::map(f, &off.tx, n, libc::XDP_PGOFF_TX_RING as u64)
        .map_err(wrap("mapping the TX ring"))?;
    let fill = Ring::map(f, &off.fr, n, libc::XDP_UMEM_PGOFF_FILL_RING)
        .map_err(wrap("mapping the fill ring"))?;
    let comp = Ring::map(f, &off.cr, n, libc::XDP_UMEM_PGOFF_COMPLETION_RING)
        .map_err(wrap("mapping the completion ring"))?;
    Ok((rx, tx, fill, comp))
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

impl PortQueue for Xsk {
    fn queue(&self) -> u32 {
        self.queue
    }

    fn fd(&self) -> RawFd {
        Xsk::fd(self)
    }

    fn reclaim(&mut self, free: &mut Vec<FrameAddr>, _failed: &mut Vec<TxFailure>) {
        Xsk::reclaim(self, free);
    }

    fn refill(&mut self, free: &mut Vec<FrameAddr>) {
        let target = self.ring_size();
        Xsk::refill(self, free, target);
    }

    fn recv(&mut self, cx: &mut RxCtx<'_>, out: &mut Vec<RxDesc>, max: usize) -> usize {
        let from = out.len();
        Xsk::recv(self, out, max);
        self.rx_checksums_completed += settle_received(self.checksums, cx, out, from);
        out.len() - from
    }

    fn tx_free(&mut self) -> usize {
        Xsk::tx_free(self)
    }

    fn send(&mut self, _mem: &Umem, addr: FrameAddr, len: u32, _settled: bool) -> bool {
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
            self.wake_rx();
        }
    }

    fn stats(&self) -> QueueStats {
        Xsk::stats(self).unwrap_or_else(|_| self.own_stats())
    }

    fn zero_copy(&self) -> bool {
        self.zero_copy
    }
}
