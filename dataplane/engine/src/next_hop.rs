//! Next-hop MAC addresses of remote VTEPs, shared by whoever resolves them
//! (the neighbour watcher in `overlayd run`) and the workers that encapsulate.
//!
//! The table is keyed by the tunnel's remote address, not by the gateway: the
//! resolver follows the route to the remote and records the MAC of whatever
//! the kernel would send to. Workers read a version number between batches
//! (one atomic load) and re-read the table only when it changed, so the fast
//! path takes no lock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

/// Resolved next hops: remote VTEP address -> MAC of the next hop towards it.
/// A remote with no entry is unresolved. Beside it, the MTU of the interface
/// each remote is reached by, which can change under a running daemon.
#[derive(Default)]
pub struct NextHops {
    map: ArcSwap<HashMap<IpAddr, [u8; 6]>>,
    mtus: ArcSwap<HashMap<IpAddr, u16>>,
    version: AtomicU64,
}

impl NextHops {
    pub fn new() -> Arc<NextHops> {
        Arc::new(NextHops::default())
    }

    /// Bumped by every change; a worker compares it with what it last applied.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn get(&self, remote: &IpAddr) -> Option<[u8; 6]> {
        self.map.load().get(remote).copied()
    }

    pub fn snapshot(&self) -> Arc<HashMap<IpAddr, [u8; 6]>> {
        self.map.load_full()
    }

    /// The interface MTU on the way to each remote, where known.
    pub fn mtus(&self) -> Arc<HashMap<IpAddr, u16>> {
        self.mtus.load_full()
    }

    /// Records (`Some`) or forgets (`None`) the MTU of the interface that
    /// reaches `remote`. Returns true if that changed anything. Only one
    /// thread writes.
    pub fn set_mtu(&self, remote: IpAddr, mtu: Option<u16>) -> bool {
        let cur = self.mtus.load();
        if cur.get(&remote).copied() == mtu {
            return false;
        }
        let mut next = HashMap::clone(&cur);
        match mtu {
            Some(m) => next.insert(remote, m),
            None => next.remove(&remote),
        };
        self.mtus.store(Arc::new(next));
        self.version.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Records (`Some`) or forgets (`None`) the next hop of `remote`. Returns
    /// true if that changed anything. Only one thread writes.
    pub fn set(&self, remote: IpAddr, mac: Option<[u8; 6]>) -> bool {
        let cur = self.map.load();
        if cur.get(&remote).copied() == mac {
            return false;
        }
        let mut next = HashMap::clone(&cur);
        match mac {
            Some(m) => next.insert(remote, m),
            None => next.remove(&remote),
        };
        self.map.store(Arc::new(next));
        self.version.fetch_add(1, Ordering::AcqRel);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_bumps_version_only_on_change() {
        let t = NextHops::new();
        let a: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(t.version(), 0);
        assert!(t.set(a, Some([2, 0, 0, 0, 0, 1])));
        assert_eq!(t.version(), 1);
        assert!(!t.set(a, Some([2, 0, 0, 0, 0, 1])));
        assert_eq!(t.version(), 1);
        assert_eq!(t.get(&a), Some([2, 0, 0, 0, 0, 1]));
        assert!(t.set(a, None));
        assert_eq!((t.version(), t.get(&a)), (2, None));
        assert!(t.set_mtu(a, Some(1400)));
        assert!(!t.set_mtu(a, Some(1400)));
        assert_eq!((t.version(), t.mtus().get(&a).copied()), (3, Some(1400)));
    }
}
