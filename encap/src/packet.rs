//! A packet in a buffer with headroom in front of it, so headers can be pushed
//! and pulled in place without copying the payload.

/// A mutable view of one packet: `buf[head..tail]` is the packet, `buf[..head]`
/// is headroom. The I/O layer builds these over its frames (an AF_XDP UMEM
/// chunk, a ring buffer); encapsulation pushes the outer headers into the
/// headroom, decapsulation pulls them off.
#[derive(Debug)]
pub struct PacketBuf<'a> {
    buf: &'a mut [u8],
    head: usize,
    tail: usize,
}

impl<'a> PacketBuf<'a> {
    /// A packet of `len` bytes starting `head` bytes into `buf`; `None` if that
    /// does not fit the buffer.
    pub fn new(buf: &'a mut [u8], head: usize, len: usize) -> Option<Self> {
        let tail = head.checked_add(len)?;
        (tail <= buf.len()).then_some(PacketBuf { buf, head, tail })
    }

    /// The packet bytes.
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.head..self.tail]
    }

    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head..self.tail]
    }

    #[inline(always)]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.tail - self.head
    }

    /// The start of the whole buffer (an I/O backend turns it back into a
    /// frame address).
    #[inline(always)]
    pub fn buffer_ptr(&self) -> *const u8 {
        self.buf.as_ptr()
    }

    /// Offset of the packet's first byte in the buffer.
    #[inline(always)]
    pub fn head(&self) -> usize {
        self.head
    }

    #[inline(always)]
    pub fn headroom(&self) -> usize {
        self.head
    }

    /// Room after the packet.
    #[inline(always)]
    pub fn tailroom(&self) -> usize {
        self.buf.len() - self.tail
    }

    /// Grows the packet by `n` bytes at the front, returning the whole packet
    /// (new bytes first), or `None` if the headroom is too small. The new bytes
    /// hold whatever the buffer held.
    #[inline(always)]
    pub fn push_front(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.head {
            return None;
        }
        self.head -= n;
        Some(&mut self.buf[self.head..self.tail])
    }

    /// Removes `n` bytes from the front; `false` (and no change) if the packet
    /// is shorter than `n`.
    #[inline(always)]
    pub fn pull_front(&mut self, n: usize) -> bool {
        if n > self.len() {
            return false;
        }
        self.head += n;
        true
    }

    /// Shortens the packet to `len` bytes (no-op if already shorter).
    #[inline(always)]
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.tail = self.head + len;
        }
    }

    /// Grows the packet by `n` bytes at the back, or `None` without room.
    pub fn push_back(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.tailroom() {
            return None;
        }
        self.tail += n;
        Some(&mut self.buf[self.head..self.tail])
    }

    /// Replaces the packet with `bytes` placed after `headroom` bytes of headroom.
    pub fn reset(&mut self, headroom: usize, bytes: &[u8]) -> bool {
        if headroom + bytes.len() > self.buf.len() {
            return false;
        }
        self.head = headroom;
        self.tail = headroom + bytes.len();
        self.buf[self.head..self.tail].copy_from_slice(bytes);
        true
    }

    /// Moves the first `n` bytes of the packet `by` bytes towards the back,
    /// overwriting what was there, and drops the `by` bytes left in front: used
    /// to cut a VLAN tag out of a frame. `false` if the packet is too short.
    pub fn remove_at(&mut self, n: usize, by: usize) -> bool {
        if n + by > self.len() {
            return false;
        }
        let h = self.head;
        self.buf.copy_within(h..h + n, h + by);
        self.head += by;
        true
    }

    /// Opens a gap of `by` bytes after the first `n` bytes of the packet, using
    /// headroom: used to insert a VLAN tag. Returns the gap, or `None` without
    /// room.
    pub fn insert_at(&mut self, n: usize, by: usize) -> Option<&mut [u8]> {
        if by > self.head || n > self.len() {
            return None;
        }
        let h = self.head;
        self.buf.copy_within(h..h + n, h - by);
        self.head -= by;
        Some(&mut self.buf[self.head + n..self.head + n + by])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_pull_and_bounds() {
        let mut b = [0u8; 16];
        b[8..12].copy_from_slice(&[1, 2, 3, 4]);
        assert!(PacketBuf::new(&mut b, 8, 9).is_none());
        let mut p = PacketBuf::new(&mut b, 8, 4).unwrap();
        assert_eq!(p.data(), &[1, 2, 3, 4]);
        assert!(p.push_front(9).is_none());
        p.push_front(2).unwrap()[..2].copy_from_slice(&[9, 9]);
        assert_eq!(p.data(), &[9, 9, 1, 2, 3, 4]);
        assert!(!p.pull_front(7));
        assert!(p.pull_front(3));
        assert_eq!(p.data(), &[2, 3, 4]);
        p.truncate(1);
        assert_eq!(p.data(), &[2]);
    }

    #[test]
    fn insert_and_remove_a_gap() {
        let mut b = [0u8; 16];
        b[4..10].copy_from_slice(&[1, 2, 3, 4, 5, 6]);
        let mut p = PacketBuf::new(&mut b, 4, 6).unwrap();
        p.insert_at(2, 2).unwrap().copy_from_slice(&[7, 8]);
        assert_eq!(p.data(), &[1, 2, 7, 8, 3, 4, 5, 6]);
        assert!(p.remove_at(2, 2));
        assert_eq!(p.data(), &[1, 2, 3, 4, 5, 6]);
        assert!(!p.remove_at(5, 2));
    }
}
