//! A worker's packet memory: one shared mapping of a memfd cut into
//! page-sized frames, shared with the kernel as an AF_XDP UMEM and registered with
//! io_uring as a fixed buffer, so every backend receives into and sends from
//! the same frames and a packet crosses from one port to another without a
//! copy.
//!
//! Frames are named by [`FrameAddr`], their byte offset in the mapping: what
//! AF_XDP rings carry. Every frame is in exactly one place at a time (the
//! worker's free list, a kernel ring, the worker's batch), which is what makes
//! [`Umem::frame`] sound to call.
//!
//! The mapping is of a memfd, not anonymous, so a planned upgrade can hand
//! the very frames the kernel holds to the next overlayd (upgrade.rs), which
//! maps the same pages at an address of its own: the rings carry offsets.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

/// Bytes per frame: a page, so no frame crosses a page boundary.
pub const FRAME_SIZE: usize = 4096;
/// Where received data starts in a frame (XDP_PACKET_HEADROOM); the room in
/// front is where encapsulation writes the outer headers (at most 78 bytes)
/// and io_uring writes the virtio-net header.
pub const HEADROOM: usize = 256;

/// A byte's offset in packet memory, as the AF_XDP rings carry it. It may
/// point inside a frame (received data starts at `HEADROOM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct FrameAddr(pub u64);

impl FrameAddr {
    /// The start of the frame holding this address.
    #[inline(always)]
    pub fn base(self) -> FrameAddr {
        FrameAddr(self.0 & !(FRAME_SIZE as u64 - 1))
    }

    /// The offset of this address in its frame.
    #[inline(always)]
    pub fn offset(self) -> usize {
        (self.0 & (FRAME_SIZE as u64 - 1)) as usize
    }

    /// `n` bytes further into the same frame.
    #[inline(always)]
    pub fn offset_by(self, n: usize) -> FrameAddr {
        FrameAddr(self.0 + n as u64)
    }
}

/// Anonymous memory, populated up front and unmapped on drop: packet
/// memory and io_uring receive buffers.
pub struct Region {
    pub ptr: NonNull<u8>,
    pub len: usize,
}

impl Region {
    /// `len` bytes of the region from `at`.
    ///
    /// # Safety
    /// Nobody else reads or writes these bytes while the slice lives.
    pub unsafe fn slice_mut<'a>(&self, at: usize, len: usize) -> &'a mut [u8] {
        assert!(at + len <= self.len);
        // SAFETY: in bounds (checked above); exclusive by the caller's word.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(at), len) }
    }

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

impl Region {
    /// A shared mapping of `len` bytes of `fd`; `populate`: page tables
    /// filled up front (a successor maps memory whose pages exist already,
    /// and filling tables for all of it would lengthen the handover).
    fn shared(fd: &OwnedFd, len: usize, populate: bool) -> io::Result<Region> {
        let populate = if populate { libc::MAP_POPULATE } else { 0 };
        // SAFETY: a shared mapping of a file we hold, of its full length;
        // checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | populate,
                fd.as_raw_fd(),
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

/// Packet memory: `frames` frames of `FRAME_SIZE` bytes.
pub struct Umem {
    mem: Region,
    frames: usize,
    /// The memory itself, for handing over to the next overlayd.
    memfd: OwnedFd,
}

// SAFETY: the region is plain memory owned by this value; which frames a
// thread may touch is decided by the ring protocol, not by the type.
unsafe impl Send for Umem {}

impl Umem {
    pub fn new(frames: usize) -> io::Result<Umem> {
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let memfd =
            memfd_create("overlayd-umem", MFdFlags::MFD_CLOEXEC).map_err(io::Error::from)?;
        nix::unistd::ftruncate(&memfd, (frames * FRAME_SIZE) as libc::off_t)
            .map_err(io::Error::from)?;
        let len = frames * FRAME_SIZE;
        Ok(Umem { mem: Region::shared(&memfd, len, true)?, frames, memfd })
    }

    /// The packet memory a previous overlayd handed over: `frames` frames
    /// of `memfd`, mapped here at an address of our own.
    pub fn from_memfd(memfd: OwnedFd, frames: usize) -> io::Result<Umem> {
        let len = frames * FRAME_SIZE;
        let size = nix::sys::stat::fstat(&memfd).map_err(io::Error::from)?.st_size;
        if (size as usize) < len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the memory handed over holds {size} bytes, not {len}"),
            ));
        }
        Ok(Umem { mem: Region::shared(&memfd, len, false)?, frames, memfd })
    }

    /// The memfd behind the mapping.
    pub fn memfd(&self) -> BorrowedFd<'_> {
        self.memfd.as_fd()
    }

    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Every frame's address, for the initial free list.
    pub fn frame_addrs(&self) -> impl Iterator<Item = FrameAddr> {
        (0..self.frames as u64).map(|i| FrameAddr(i * FRAME_SIZE as u64))
    }

    /// The whole frame containing `addr`, and `addr`'s offset in it.
    ///
    /// # Safety
    /// The caller must own that frame (it is in none of the rings) and must not
    /// create a second reference to it while this one lives.
    #[inline(always)]
    pub unsafe fn frame<'a>(&self, addr: FrameAddr) -> (&'a mut [u8], usize) {
        let base = addr.base().0 as usize;
        debug_assert!(base < self.frames * FRAME_SIZE);
        // SAFETY: `base` is a frame inside the mapping (addresses come from
        // this memory's free list and rings), and the caller guarantees
        // exclusive ownership.
        let s =
            unsafe { std::slice::from_raw_parts_mut(self.mem.ptr.as_ptr().add(base), FRAME_SIZE) };
        (s, addr.offset())
    }

    /// The address of a byte inside the mapping.
    #[inline(always)]
    pub fn addr_of(&self, p: *const u8) -> FrameAddr {
        FrameAddr((p as usize - self.mem.ptr.as_ptr() as usize) as u64)
    }

    /// The mapping, for registering it with the kernel.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_names_its_frame_and_offset() {
        let a = FrameAddr(3 * FRAME_SIZE as u64 + HEADROOM as u64);
        assert_eq!(a.base(), FrameAddr(3 * FRAME_SIZE as u64));
        assert_eq!(a.offset(), HEADROOM);
        assert_eq!(a.base().offset_by(HEADROOM), a);
    }

    #[test]
    fn a_frame_is_found_from_any_byte_in_it() {
        let m = Umem::new(4).unwrap();
        let addrs: Vec<FrameAddr> = m.frame_addrs().collect();
        assert_eq!(addrs.len(), 4);
        // SAFETY: nothing else holds frames of this fresh memory.
        let (f, off) = unsafe { m.frame(addrs[2].offset_by(10)) };
        assert_eq!((f.len(), off), (FRAME_SIZE, 10));
        assert_eq!(m.addr_of(f[10..].as_ptr()), addrs[2].offset_by(10));
    }
}
