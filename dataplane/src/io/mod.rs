//! I/O backends: one file per facility. Each moves batches of packets between
//! the kernel (or a file) and the engine, and holds no policy.
//!
//! A worker drives every queue it serves through [`PortQueue`], whatever the
//! backend: frames are addresses in the worker's packet memory ([`Umem`]),
//! so a packet received on one backend is sent on another without a copy,
//! and the pipeline never knows where a packet came from.

pub mod afxdp;
pub mod checksums;
pub mod gso;
pub mod packet;
pub mod pcap;
pub mod tap;
pub mod uring;
pub mod virtio;
pub mod xdp;

use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;

use encap::DropReason;
use serde::Serialize;

use afxdp::{Umem, XskStats};
use uring::UringStats;

/// What a queue needs to turn what it received into frames of packet memory.
pub struct RxCtx<'a> {
    pub mem: &'a Umem,
    /// Free frames of `mem`, for backends that copy into them.
    pub free: &'a mut Vec<u64>,
    /// Frames dropped before the pipeline saw them: (reason, length).
    pub drops: &'a mut Vec<(DropReason, u32)>,
    /// Largest IP packet a segment may be (the smallest inner MTU).
    pub max_ip: usize,
}

/// One queue of one port, as a worker drives it.
pub trait PortQueue: Send {
    fn queue(&self) -> u32;
    /// The descriptor to wait on while idle.
    fn fd(&self) -> RawFd;
    /// Returns the frames the kernel is done sending to `free`, and the
    /// lengths of the ones it failed to send to `failed`.
    fn reclaim(&mut self, free: &mut Vec<u64>, failed: &mut Vec<u32>);
    /// Gives the kernel frames to receive into, if this backend receives
    /// into packet memory directly.
    fn refill(&mut self, free: &mut Vec<u64>);
    /// Takes up to `max` received frames as (address, length).
    fn recv(&mut self, cx: &mut RxCtx<'_>, out: &mut Vec<(u64, u32)>, max: usize) -> usize;
    /// Frames `send` can take now.
    fn tx_free(&mut self) -> usize;
    /// Queues one frame; false if there is no room.
    fn send(&mut self, mem: &Umem, addr: u64, len: u32) -> bool;
    /// Hands queued frames to the kernel.
    fn flush_tx(&mut self);
    /// True while frames are queued that the kernel has not taken.
    fn tx_pending(&mut self) -> bool;
    /// Frames handed over and not yet returned.
    fn outstanding(&mut self) -> usize;
    /// Called after a batch was taken, for backends that must be woken.
    fn after_rx(&mut self);
    fn stats(&self) -> QueueStats;
    /// True if the kernel moves frames to and from packet memory without a copy.
    fn zero_copy(&self) -> bool {
        false
    }
}

/// A queue's statistics, as `status` shows them.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(untagged)]
pub enum QueueStats {
    AfXdp(XskStats),
    Uring(UringStats),
}

/// Anonymous memory, populated up front and unmapped on drop: packet
/// memory and receive buffers.
pub struct Region {
    pub ptr: NonNull<u8>,
    pub len: usize,
}

impl Region {
    pub fn new(len: usize) -> io::Result<Region> {
        // SAFETY: an anonymous private mapping; checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Region { ptr: NonNull::new(p.cast()).expect("mmap succeeded"), len })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped; its users (rings, sockets)
        // are dropped before it.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
