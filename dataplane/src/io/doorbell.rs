//! Doorbells: wake sleeping workers when something they must see changed
//! without a packet arriving (a new rule set, a capture armed or disarmed,
//! a stop), so an idle worker can sleep in `poll(2)` for long instead of
//! waking every few milliseconds to look.
//!
//! Each worker has its own eventfd in its poll set: a worker drains only its
//! own, so a ring reaches every worker however their sleeps interleave.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, Weak};

/// One worker's eventfd.
pub struct Doorbell(OwnedFd);

impl Doorbell {
    fn new() -> io::Result<Doorbell> {
        // SAFETY: plain eventfd(2); the result is checked.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        Ok(Doorbell(unsafe { OwnedFd::from_raw_fd(raw) }))
    }

    /// The descriptor to poll for `POLLIN`.
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes exactly the 8 bytes of `one`. The only failure on a
        // non-blocking eventfd is a counter at its maximum, which is rung.
        unsafe { libc::write(self.fd(), (&one as *const u64).cast(), 8) };
    }

    /// Quiets the bell after a wake (one read resets its counter).
    pub fn drain(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads at most the 8 bytes of `n`; EAGAIN (not rung) is fine.
        unsafe { libc::read(self.fd(), (&mut n as *mut u64).cast(), 8) };
    }
}

/// Every live worker's doorbell. Rung from the control plane, rarely (a
/// commit, a capture, a stop): a lock and a system call per worker.
#[derive(Default)]
pub struct Doorbells {
    bells: Mutex<Vec<Weak<Doorbell>>>,
}

impl Doorbells {
    /// A new worker's doorbell; it stops being rung when dropped.
    pub fn register(&self) -> io::Result<Arc<Doorbell>> {
        let bell = Arc::new(Doorbell::new()?);
        let mut bells = crate::lock(&self.bells);
        bells.retain(|b| b.strong_count() > 0);
        bells.push(Arc::downgrade(&bell));
        Ok(bell)
    }

    /// Wakes every worker.
    pub fn ring(&self) {
        for b in crate::lock(&self.bells).iter().filter_map(Weak::upgrade) {
            b.ring();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::sys;

    fn rung(b: &Doorbell) -> bool {
        let mut p = [libc::pollfd { fd: b.fd(), events: libc::POLLIN, revents: 0 }];
        sys::wait_readable(&mut p, 0);
        p[0].revents & libc::POLLIN != 0
    }

    #[test]
    fn a_ring_reaches_every_worker_until_each_drains_its_own() {
        let bells = Doorbells::default();
        let (a, b) = (bells.register().unwrap(), bells.register().unwrap());
        assert!(!rung(&a) && !rung(&b), "a new bell is quiet");
        bells.ring();
        bells.ring();
        assert!(rung(&a) && rung(&b));
        a.drain();
        assert!(!rung(&a), "one drain quiets two rings");
        assert!(rung(&b), "a's drain leaves b's bell rung");
        b.drain();
        drop(b);
        bells.ring();
        assert!(rung(&a));
        assert_eq!(crate::lock(&bells.bells).iter().filter(|w| w.strong_count() > 0).count(), 1);
    }
}
