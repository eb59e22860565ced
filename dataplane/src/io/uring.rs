//! io_uring I/O for one queue of an AF_PACKET or TAP port.
//!
//! - Receive: one multishot request (`RECV` on a packet socket, `READ` on a
//!   TAP queue) fills buffers from a provided-buffer ring. It stays armed
//!   across packets, so receiving costs no system call; it is re-armed when
//!   the kernel runs out of buffers. Buffers are 66 KiB so a TSO super-frame
//!   fits in one; each frame is then copied (or cut into segments) into a
//!   frame of the worker's packet memory, which is where the pipeline works
//!   and from which any port, AF_XDP included, can send it.
//! - Send: `WRITE_FIXED` straight from the worker's packet memory, registered
//!   once as a fixed buffer, with the virtio-net header written into the
//!   headroom in front of the frame. Writes of a batch go in one
//!   `io_uring_enter`; their completions free the frames. Consecutive TCP
//!   segments of one flow whose checksums the worker settled are copied
//!   into a staging buffer instead and written as one super-frame
//!   (io/gro.rs); their frames are free at once.
//! - `COOP_TASKRUN`: the kernel never interrupts the worker to post
//!   completions; they are collected when the worker next enters the kernel,
//!   which it does when the ring says work is pending.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use encap::DropReason;
use io_uring::{cqueue, opcode, types, IoUring};

use super::gro::{self, Run, Segment};
use super::gso::Plan;
use super::memory::{FrameAddr, Region, Umem, FRAME_SIZE, HEADROOM};
use super::steer::{steer, Steer, SteerRole, SteerStats};
use super::virtio::{self, OffloadError, VnetHdr, F_DATA_VALID, F_NEEDS_CSUM, HDR_LEN};
use super::{InputDrop, OffloadStats, PortQueue, QueueStats, RxCtx, RxDesc, TxFailure};

/// Receive buffers per queue, and their size: a 64 KiB super-frame plus its
/// Ethernet and virtio-net headers.
const RX_BUFS: u16 = 256;
const RX_BUF_SIZE: usize = 66 * 1024;
/// Writes in flight at once per queue.
const TX_INFLIGHT: usize = 1024;
const SQ_ENTRIES: u32 = 2048;
const BGID: u16 = 0;
const RX_TAG: u64 = u64::MAX;
/// The request that cancels the multishot receive before a handover.
const CANCEL_TAG: u64 = u64::MAX - 1;
/// Staging buffers per queue for merged segments (io/gro.rs); a write of
/// one is tagged STAGE_TAG plus its index.
const STAGE_BUFS: usize = 32;
const STAGE_TAG: u64 = 1 << 62;

#[derive(Debug, thiserror::Error)]
pub enum UringError {
    #[error("io_uring is not available: {0}")]
    Unavailable(String),
    #[error("io_uring lacks {what} on this kernel (needs Linux {since})")]
    Missing { what: &'static str, since: &'static str },
    #[error("{ifname}: {what}: {source}")]
    Io { ifname: String, what: &'static str, source: io::Error },
}

/// Checks that io_uring can be used here at all, with what this backend
/// needs; run once at start so that nothing starts half-working.
pub fn probe() -> Result<(), UringError> {
    let ring = new_ring(8)?;
    let mut p = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut p)
        .map_err(|e| UringError::Unavailable(format!("cannot probe opcodes: {e}")))?;
    for (code, what, since) in [
        (opcode::WriteFixed::CODE, "IORING_OP_WRITE_FIXED", "5.1"),
        (opcode::RecvMulti::CODE, "IORING_OP_RECV (multishot)", "6.0"),
        (opcode::ReadMulti::CODE, "IORING_OP_READ_MULTISHOT", "6.7"),
    ] {
        if !p.is_supported(code) {
            return Err(UringError::Missing { what, since });
        }
    }
    Ok(())
}

fn new_ring(entries: u32) -> Result<IoUring, UringError> {
    IoUring::builder()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .setup_cqsize(entries * 4)
        .build(entries)
        .map_err(|e| {
            let why = match e.raw_os_error() {
                Some(libc::EPERM) => {
                    let s = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                        .map(|s| s.trim().to_string())
                        .unwrap_or_else(|_| "?".into());
                    format!("io_uring_setup refused (EPERM): sysctl kernel.io_uring_disabled = {s}")
                }
                Some(libc::ENOSYS) => "the kernel is built without io_uring (ENOSYS)".into(),
                Some(libc::EINVAL) => {
                    "io_uring_setup rejected COOP_TASKRUN (needs Linux 5.19)".into()
                }
                _ => format!("io_uring_setup: {e}"),
            };
            UringError::Unavailable(why)
        })
}

/// What kind of queue, and what its kind needs.
pub enum Kind {
    /// An AF_PACKET socket: the uplink's steering decides what is ours.
    AfPacket { role: Arc<ArcSwap<SteerRole>> },
    /// A TAP queue: mark checksums we verified when delivering.
    Tap { mark_valid: bool },
}

/// A write in flight, carried in its completion's `user_data`: the frame
/// (48 bits of address are plenty for packet memory) and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WriteTag {
    addr: FrameAddr,
    len: u32,
}

impl WriteTag {
    const ADDR_BITS: u32 = 48;

    fn pack(self) -> u64 {
        debug_assert!(self.addr.0 < 1 << Self::ADDR_BITS && self.len < 1 << 16);
        self.addr.0 | (self.len as u64) << Self::ADDR_BITS
    }

    fn unpack(v: u64) -> WriteTag {
        WriteTag {
            addr: FrameAddr(v & ((1 << Self::ADDR_BITS) - 1)),
            len: (v >> Self::ADDR_BITS) as u32,
        }
    }
}

/// A received buffer waiting to be taken: its id in the buffer ring and the
/// bytes the kernel wrote.
#[derive(Clone, Copy, Debug)]
struct Received {
    bid: u16,
    len: u32,
}

pub struct UringQueue {
    // The ring first: dropping it cancels requests before the memory goes.
    ring: IoUring,
    fd: OwnedFd,
    /// Where frames are sent when not on `fd` (a TSO-keeping port receives
    /// on its punt device and sends on the workload's interface).
    tx_fd: Option<OwnedFd>,
    ifname: String,
    kind: Kind,
    rx_mem: Region,
    bufs: Region,
    buf_tail: u16,
    rx_armed: bool,
    /// Set before a handover: the receive is not armed again, so what the
    /// socket holds stays there for the next owner.
    quiescing: bool,
    ready: VecDeque<Received>,
    in_flight: usize,
    unsubmitted: bool,
    queue: u32,
    rx_packets: u64,
    tx_packets: u64,
    rx_checksums_completed: u64,
    offload: OffloadStats,
    steering: Option<SteerStats>,
    /// Staging buffers for super-frames, the free ones, and the lengths of
    /// the segments each one in flight carries (counted as failed if its
    /// write fails).
    stage: Region,
    stage_free: Vec<usize>,
    stage_segs: Vec<Vec<u32>>,
    /// A flow's segments not yet written: the last batch's that the next
    /// may continue.
    held: Option<Held>,
    /// Frames copied into a staging buffer, free at the next reclaim.
    copied: Vec<FrameAddr>,
}

/// Segments held back in case the next ones continue their flow.
enum Held {
    /// One, still in its frame, its virtio-net header written: `ptr` is
    /// where the write starts.
    One { addr: FrameAddr, len: u32, seg: Segment, ptr: usize, valid: bool },
    /// Two or more, copied into staging buffer `buf`.
    Merged { run: Run, buf: usize },
}

// SAFETY: the raw regions are owned by this value and only touched by the
// thread that owns it.
unsafe impl Send for UringQueue {}

impl UringQueue {
    /// Sets up a ring for `fd` (a packet socket or TAP queue of `ifname`)
    /// with `mem`, the worker's packet memory, registered for writes.
    pub fn new(
        fd: OwnedFd,
        ifname: &str,
        queue: u32,
        kind: Kind,
        mem: &Umem,
    ) -> Result<UringQueue, UringError> {
        let io_err = |what| move |source| UringError::Io { ifname: ifname.into(), what, source };
        let ring = new_ring(SQ_ENTRIES)?;
        let iov = libc::iovec { iov_base: mem.as_ptr().cast(), iov_len: mem.len() };
        // SAFETY: the worker's packet memory outlives this ring (the worker
        // drops its queues before its memory).
        unsafe { ring.submitter().register_buffers(&[iov]) }
            .map_err(io_err("registering the packet memory with io_uring"))?;
        let rx_mem = Region::new(RX_BUFS as usize * RX_BUF_SIZE)
            .map_err(io_err("mapping receive buffers"))?;
        let bufs = Region::new(RX_BUFS as usize * std::mem::size_of::<types::BufRingEntry>())
            .map_err(io_err("mapping the buffer ring"))?;
        // SAFETY: the ring memory is page-aligned, sized for RX_BUFS entries,
        // and lives as long as the io_uring.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.ptr.as_ptr() as u64,
                RX_BUFS,
                BGID,
                0,
            )
        }
        .map_err(|e| match e.kind() {
            io::ErrorKind::InvalidInput => {
                UringError::Missing { what: "provided buffer rings", since: "5.19" }
            }
            _ => UringError::Io {
                ifname: ifname.into(),
                what: "registering the buffer ring",
                source: e,
            },
        })?;
        let steering = matches!(kind, Kind::AfPacket { .. }).then(SteerStats::default);
        let stage =
            Region::new(STAGE_BUFS * gro::BUF_LEN).map_err(io_err("mapping staging buffers"))?;
        let mut q = UringQueue {
            ring,
            fd,
            tx_fd: None,
            ifname: ifname.into(),
            kind,
            rx_mem,
            bufs,
            buf_tail: 0,
            rx_armed: false,
            quiescing: false,
            ready: VecDeque::new(),
            in_flight: 0,
            unsubmitted: false,
            queue,
            rx_packets: 0,
            tx_packets: 0,
            rx_checksums_completed: 0,
            offload: OffloadStats::default(),
            steering,
            stage,
            stage_free: (0..STAGE_BUFS).rev().collect(),
            stage_segs: (0..STAGE_BUFS).map(|_| Vec::with_capacity(gro::MAX_SEGS)).collect(),
            held: None,
            copied: Vec::with_capacity(gro::MAX_SEGS),
        };
        for bid in 0..RX_BUFS {
            q.give_buffer(bid);
        }
        q.publish_buffers();
        q.arm_rx();
        q.submit();
        Ok(q)
    }

    /// Sends on `fd` instead of the descriptor it receives on.
    pub fn sending_on(mut self, fd: OwnedFd) -> UringQueue {
        self.tx_fd = Some(fd);
        self
    }

    /// A segment copied into staging buffer `i`: its frame is free at the
    /// next reclaim; its length is what fails if the write does.
    fn copied_into(&mut self, i: usize, addr: FrameAddr, len: u32) {
        self.copied.push(addr.base());
        self.stage_segs[i].push(len);
    }

    /// Staging buffer `i` of `stage`.
    fn stage_buf<'a>(stage: &Region, i: usize) -> &'a mut [u8] {
        // SAFETY: a staging buffer is used by one run at a time, from when
        // it leaves `stage_free` until its write completes.
        unsafe { stage.slice_mut(i * gro::BUF_LEN, gro::BUF_LEN) }
    }

    /// Tries to put `frame` (segment `s`) into what is held; true if it
    /// joined.
    fn join(&mut self, mem: &Umem, addr: FrameAddr, frame: &[u8], s: &Segment) -> bool {
        let joined = match self.held.as_mut() {
            None => return false,
            Some(Held::Merged { run, buf }) => {
                let buf = *buf;
                run.append(Self::stage_buf(&self.stage, buf), frame, s) && {
                    self.copied_into(buf, addr, frame.len() as u32);
                    true
                }
            }
            Some(Held::One { addr: a0, len: l0, seg: s0, .. }) => {
                // SAFETY: a held frame is ours until its write completes.
                let (f0, off0) = unsafe { mem.frame(*a0) };
                let first = &f0[off0..off0 + *l0 as usize];
                let (a0, l0, s0) = (*a0, *l0, *s0);
                if !gro::follows(first, &s0, frame, s) {
                    return false;
                }
                let Some(buf) = self.stage_free.pop() else { return false };
                let b = Self::stage_buf(&self.stage, buf);
                let mut run = Run::start(b, first, s0);
                run.append(b, frame, s);
                self.copied_into(buf, a0, l0);
                self.copied_into(buf, addr, frame.len() as u32);
                self.held = Some(Held::Merged { run, buf });
                true
            }
        };
        if joined {
            self.tx_packets += 1;
        }
        joined
    }

    /// Writes what is held: one segment from its frame, more as a
    /// super-frame from their staging buffer.
    fn release(&mut self) {
        let tx = self.tx_fd.as_ref().unwrap_or(&self.fd).as_raw_fd();
        let e = match self.held.take() {
            None => return,
            Some(Held::One { addr, len, ptr, valid, .. }) => {
                self.offload.tx_data_valid += valid as u64;
                opcode::WriteFixed::new(types::Fd(tx), ptr as *const u8, len + HDR_LEN as u32, 0)
                    .build()
                    .user_data(WriteTag { addr, len }.pack())
            }
            Some(Held::Merged { run, buf }) => {
                let b = Self::stage_buf(&self.stage, buf);
                let n = run.finish(b);
                self.offload.tx_super_frames += 1;
                self.offload.tx_merged_segments += run.segments() as u64;
                opcode::Write::new(types::Fd(tx), b.as_ptr(), n as u32)
                    .build()
                    .user_data(STAGE_TAG | buf as u64)
            }
        };
        self.push(e);
    }

    fn held_closed(&self) -> bool {
        match &self.held {
            Some(Held::Merged { run, .. }) => run.closed(),
            Some(Held::One { seg, .. }) => seg.ends_run(),
            None => false,
        }
    }

    fn give_buffer(&mut self, bid: u16) {
        let entries = self.bufs.ptr.as_ptr().cast::<types::BufRingEntry>();
        // SAFETY: the index is masked into the ring's RX_BUFS entries; the
        // kernel reads an entry only once the tail is published past it.
        let e = unsafe { &mut *entries.add((self.buf_tail & (RX_BUFS - 1)) as usize) };
        // SAFETY: `bid` < RX_BUFS, so the buffer lies inside rx_mem.
        let addr = unsafe { self.rx_mem.ptr.as_ptr().add(bid as usize * RX_BUF_SIZE) };
        e.set_addr(addr as u64);
        e.set_len(RX_BUF_SIZE as u32);
        e.set_bid(bid);
        self.buf_tail = self.buf_tail.wrapping_add(1);
    }

    fn publish_buffers(&self) {
        let base = self.bufs.ptr.as_ptr().cast::<types::BufRingEntry>();
        // SAFETY: the tail field lives in the first entry, as the kernel's
        // struct io_uring_buf_ring lays out; it is read by the kernel
        // concurrently, hence the atomic release store.
        unsafe {
            let tail = types::BufRingEntry::tail(base) as *const AtomicU16;
            (*tail).store(self.buf_tail, Ordering::Release);
        }
    }

    fn arm_rx(&mut self) {
        let fd = types::Fd(self.fd.as_raw_fd());
        let e = match self.kind {
            Kind::AfPacket { .. } => opcode::RecvMulti::new(fd, BGID).build(),
            Kind::Tap { .. } => opcode::ReadMulti::new(fd, 0, BGID).build(),
        };
        self.push(e.user_data(RX_TAG));
        self.rx_armed = true;
    }

    fn push(&mut self, e: io_uring::squeue::Entry) {
        // SAFETY: every entry we push points at memory that outlives its
        // completion: the fixed packet memory, the provided buffers or a
        // staging buffer (not reused before its write completes).
        while unsafe { self.ring.submission().push(&e) }.is_err() {
            self.submit();
        }
        self.unsubmitted = true;
    }

    fn submit(&mut self) {
        match self.ring.submit() {
            Ok(_) => self.unsubmitted = false,
            // The completion queue is full: the next call retries.
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN | libc::EINTR)) => {}
            Err(e) => {
                tracing::error!(interface = %self.ifname, error = %e, "io_uring_enter failed");
                self.unsubmitted = false;
            }
        }
    }

    /// Collects completions: received buffers wait in `ready`, written
    /// frames return to `free`, failed writes to `failed` (their lengths).
    fn reap(&mut self, free: &mut Vec<FrameAddr>, failed: &mut Vec<TxFailure>) {
        free.append(&mut self.copied);
        if self.ring.completion().is_empty() && self.ring.submission().taskrun() {
            self.submit();
        }
        for c in self.ring.completion() {
            if c.user_data() == RX_TAG {
                if c.result() >= 0 {
                    if let Some(bid) = cqueue::buffer_select(c.flags()) {
                        self.ready.push_back(Received { bid, len: c.result() as u32 });
                    }
                } else if c.result() == -libc::ENOBUFS {
                    self.offload.rx_buffers_exhausted += 1;
                } else if c.result() == -libc::ECANCELED && self.quiescing {
                    // Cancelled for a handover (quiesce): not a failure.
                } else {
                    tracing::warn!(interface = %self.ifname, error = %io::Error::from_raw_os_error(-c.result()), "receive failed; re-arming");
                }
                if !cqueue::more(c.flags()) {
                    self.rx_armed = false;
                }
            } else if c.user_data() == CANCEL_TAG {
                // The receive's own last completion says when it ended.
            } else if c.user_data() & STAGE_TAG != 0 {
                let i = (c.user_data() & !STAGE_TAG) as usize;
                self.in_flight -= 1;
                if c.result() < 0 {
                    self.offload.tx_errors += 1;
                    failed.extend(self.stage_segs[i].iter().map(|&len| TxFailure { len }));
                }
                self.stage_segs[i].clear();
                self.stage_free.push(i);
            } else {
                let w = WriteTag::unpack(c.user_data());
                free.push(w.addr.base());
                self.in_flight -= 1;
                if c.result() < 0 {
                    self.offload.tx_errors += 1;
                    failed.push(TxFailure { len: w.len });
                }
            }
        }
    }

    /// Turns one received buffer into frames of packet memory; false (and
    /// nothing taken) if its segments would not fit in `budget` frames.
    #[allow(clippy::too_many_arguments)]
    fn take(
        &mut self,
        bid: u16,
        len: usize,
        role: Option<&SteerRole>,
        budget: usize,
        cx: &mut RxCtx<'_>,
        out: &mut Vec<RxDesc>,
    ) -> bool {
        // SAFETY: the kernel filled `len` bytes of buffer `bid` and gave it
        // back through the completion; it is ours until returned to the ring.
        let buf = unsafe {
            std::slice::from_raw_parts(
                self.rx_mem.ptr.as_ptr().add(bid as usize * RX_BUF_SIZE),
                len,
            )
        };
        let (Some(h), Some(frame)) = (VnetHdr::parse(buf), buf.get(HDR_LEN..)) else {
            cx.drops.push(InputDrop { reason: DropReason::OffloadInvalid, len: len as u32 });
            return true;
        };
        if let Some(role) = role {
            let s = steer(frame, role);
            if let Some(st) = self.steering.as_mut() {
                s.count(st);
            }
            if s != Steer::Ours {
                return true;
            }
        }
        if h.is_gso() {
            match Plan::new(frame, &h, cx.max_ip) {
                Ok(plan) => {
                    // Whole super-frames only: the rest waits for the next
                    // batch rather than overflowing the output queues.
                    if plan.segments() > budget {
                        return false;
                    }
                    self.offload.rx_super_frames += 1;
                    for i in 0..plan.segments() {
                        let Some(a) = cx.free.pop() else {
                            let len = plan.segment_len(i) as u32;
                            cx.drops.push(InputDrop { reason: DropReason::NoFreeFrame, len });
                            continue;
                        };
                        // SAFETY: a frame from the free list is the worker's alone.
                        let (f, _) = unsafe { cx.mem.frame(a) };
                        let n = plan.write(frame, i, &mut f[HEADROOM..]);
                        out.push(RxDesc { addr: a.offset_by(HEADROOM), len: n as u32 });
                        self.offload.rx_segments += 1;
                    }
                }
                Err(_) => cx.drops.push(InputDrop {
                    reason: DropReason::OffloadInvalid,
                    len: frame.len() as u32,
                }),
            }
            return true;
        }
        let len = frame.len() as u32;
        if frame.len() > FRAME_SIZE - HEADROOM {
            cx.drops.push(InputDrop { reason: DropReason::RxTooLarge, len });
            return true;
        }
        let Some(a) = cx.free.pop() else {
            cx.drops.push(InputDrop { reason: DropReason::NoFreeFrame, len });
            return true;
        };
        // SAFETY: a frame from the free list is the worker's alone.
        let (f, _) = unsafe { cx.mem.frame(a) };
        let dst = &mut f[HEADROOM..HEADROOM + frame.len()];
        dst.copy_from_slice(frame);
        if h.flags & F_NEEDS_CSUM != 0 {
            if let Err(OffloadError::BadChecksumOffsets | OffloadError::BadSegmentation) =
                virtio::complete_checksum(dst, &h)
            {
                cx.free.push(a);
                cx.drops.push(InputDrop { reason: DropReason::OffloadInvalid, len });
                return true;
            }
            self.rx_checksums_completed += 1;
        }
        out.push(RxDesc { addr: a.offset_by(HEADROOM), len });
        true
    }
}

impl PortQueue for UringQueue {
    fn queue(&self) -> u32 {
        self.queue
    }

    fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    fn reclaim(&mut self, free: &mut Vec<FrameAddr>, failed: &mut Vec<TxFailure>) {
        self.reap(free, failed);
    }

    fn refill(&mut self, _free: &mut Vec<FrameAddr>) {}

    fn recv(&mut self, cx: &mut RxCtx<'_>, out: &mut Vec<RxDesc>, max: usize) -> usize {
        let before = out.len();
        let mut returned = false;
        // The steering role, read once per batch.
        let role = match &self.kind {
            Kind::AfPacket { role } => Some(role.load_full()),
            Kind::Tap { .. } => None,
        };
        while out.len() - before < max {
            let Some(r) = self.ready.pop_front() else { break };
            // A super-frame larger than a whole batch goes through alone.
            let budget = if out.len() == before { usize::MAX } else { max - (out.len() - before) };
            if !self.take(r.bid, r.len as usize, role.as_deref(), budget, cx, out) {
                self.ready.push_front(r);
                break;
            }
            self.give_buffer(r.bid);
            returned = true;
        }
        if returned {
            self.publish_buffers();
        }
        if !self.rx_armed && !self.quiescing {
            self.arm_rx();
            self.submit();
        }
        let n = out.len() - before;
        self.rx_packets += n as u64;
        n
    }

    fn tx_free(&mut self) -> usize {
        TX_INFLIGHT - self.in_flight
    }

    fn send(&mut self, mem: &Umem, addr: FrameAddr, len: u32, settled: bool) -> bool {
        if self.in_flight >= TX_INFLIGHT {
            return false;
        }
        // SAFETY: the worker handed us this frame to send; until its write
        // completes (or it is copied) nobody else touches it.
        let (f, off) = unsafe { mem.frame(addr) };
        if off < HDR_LEN {
            return false;
        }
        let frame = &f[off..off + len as usize];
        let seg = settled.then(|| gro::segment(frame)).flatten();
        if let Some(s) = &seg {
            if self.join(mem, addr, frame, s) {
                if self.held_closed() {
                    self.release();
                }
                return true;
            }
        }
        self.release();
        let mut h = VnetHdr::default();
        // Settled means its checksum verifies (or is complete now).
        let valid = matches!(self.kind, Kind::Tap { mark_valid: true })
            && (settled || virtio::l4_checksum_valid(frame));
        if valid {
            h.flags = F_DATA_VALID;
        }
        h.write(&mut f[off - HDR_LEN..off]);
        self.in_flight += 1;
        self.tx_packets += 1;
        let ptr = f[off - HDR_LEN..].as_ptr();
        if let Some(seg) = seg {
            // Held: the next segment may continue its flow.
            self.held = Some(Held::One { addr, len, seg, ptr: ptr as usize, valid });
            if seg.ends_run() {
                self.release();
            }
            return true;
        }
        self.offload.tx_data_valid += valid as u64;
        let tx = self.tx_fd.as_ref().unwrap_or(&self.fd);
        let e = opcode::WriteFixed::new(types::Fd(tx.as_raw_fd()), ptr, len + HDR_LEN as u32, 0)
            .build()
            .user_data(WriteTag { addr, len }.pack());
        self.push(e);
        true
    }

    fn flush_tx(&mut self) {
        self.release();
        if self.unsubmitted {
            self.submit();
        }
    }

    fn tx_pending(&mut self) -> bool {
        self.unsubmitted || self.held.is_some()
    }

    fn outstanding(&mut self) -> usize {
        self.in_flight
    }

    fn after_rx(&mut self) {}

    fn passed(&self) -> u64 {
        self.steering.map_or(0, |s| s.passed())
    }

    fn handover_fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.fd.as_raw_fd()];
        fds.extend(self.tx_fd.as_ref().map(|f| f.as_raw_fd()));
        fds
    }

    fn quiesce(&mut self) {
        self.quiescing = true;
        if self.rx_armed {
            let e = opcode::AsyncCancel::new(RX_TAG).build().user_data(CANCEL_TAG);
            self.push(e);
            self.submit();
        }
    }

    fn quiet(&mut self) -> bool {
        !self.rx_armed && self.ready.is_empty() && self.in_flight == 0 && !self.unsubmitted
    }

    fn stats(&self) -> QueueStats {
        QueueStats {
            queue: self.queue,
            rx_packets: self.rx_packets,
            tx_packets: self.tx_packets,
            rx_checksums_completed: self.rx_checksums_completed,
            rings: None,
            offload: Some(self.offload),
            steering: self.steering,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_tag_round_trips() {
        let w = WriteTag { addr: FrameAddr(0x0000_7fff_ffff_f100), len: 1514 };
        assert_eq!(WriteTag::unpack(w.pack()), w);
        let top = WriteTag { addr: FrameAddr((1 << 48) - 1), len: u16::MAX as u32 };
        assert_eq!(WriteTag::unpack(top.pack()), top);
    }
}
