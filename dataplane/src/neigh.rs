//! Next hops of remote VTEPs from the kernel's route and neighbour tables.
//!
//! For each remote the watcher asks the kernel which route it would use
//! (`ip route get`), then reads the neighbour entry of the gateway (or of the
//! remote itself when it is on-link) and publishes the MAC address in the
//! shared `NextHops` table the workers encapsulate with.
//!
//! The kernel resolves a neighbour only when it sends to it, and the
//! dataplane's own packets bypass the kernel: so when an entry is missing the
//! watcher asks the kernel to resolve it (`RTM_NEWNEIGH` with `NTF_USE`,
//! which starts ARP or neighbour discovery without sending a packet of ours),
//! and when an entry goes stale it asks for a re-probe, so a peer that went
//! away is noticed. It re-resolves on every route, neighbour or link change
//! the kernel announces, and once a second besides.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::next_hop::NextHops;
use futures_util::stream::{StreamExt, TryStreamExt};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourState,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{
    new_connection, new_multicast_connection, Handle, MulticastGroup, RouteMessageBuilder,
};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum NeighError {
    #[error("cannot open a netlink route socket: {0}")]
    Socket(std::io::Error),
}

/// One remote VTEP to resolve; `ifname` is the uplink its tunnel leaves by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub remote: IpAddr,
    pub ifname: String,
}

/// A target's state, for `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NeighState {
    pub remote: IpAddr,
    pub interface: String,
    /// The gateway used; `None` when the remote is on-link.
    pub via: Option<IpAddr>,
    pub mac: Option<String>,
    pub state: String,
}

/// What one lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    Resolved {
        via: Option<IpAddr>,
        mac: [u8; 6],
        stale: bool,
    },
    /// Known route, no usable entry: ask the kernel to resolve `hop`.
    Unresolved {
        via: Option<IpAddr>,
        hop: IpAddr,
        why: String,
    },
    /// Nothing to ask for (no route, or the route leaves by another interface).
    Unroutable {
        why: String,
    },
}

/// The decision, apart from netlink: given the route's output interface and
/// gateway and the neighbour entry of the hop (state, link-layer address).
pub fn decide(
    remote: IpAddr,
    want_ifindex: u32,
    route: Option<(u32, Option<IpAddr>)>,
    entry: Option<(NeighbourState, Option<Vec<u8>>)>,
    oif_name: impl Fn(u32) -> String,
) -> Resolution {
    let Some((oif, via)) = route else {
        return Resolution::Unroutable { why: "no route".into() };
    };
    if oif != want_ifindex {
        return Resolution::Unroutable {
            why: format!("route via another interface ({})", oif_name(oif)),
        };
    }
    let hop = via.unwrap_or(remote);
    match entry {
        Some((state, Some(ll))) if ll.len() == 6 => {
            let usable = matches!(
                state,
                NeighbourState::Reachable
                    | NeighbourState::Stale
                    | NeighbourState::Delay
                    | NeighbourState::Probe
                    | NeighbourState::Permanent
                    | NeighbourState::Noarp
            );
            if usable {
                let mac: [u8; 6] = ll.try_into().expect("length checked");
                return Resolution::Resolved { via, mac, stale: state == NeighbourState::Stale };
            }
            Resolution::Unresolved { via, hop, why: state_name(state) }
        }
        Some((state, _)) => Resolution::Unresolved { via, hop, why: state_name(state) },
        None => Resolution::Unresolved { via, hop, why: "no neighbour entry".into() },
    }
}

fn state_name(s: NeighbourState) -> String {
    format!("{s:?}").to_lowercase()
}

struct Inner {
    targets: Vec<Target>,
    states: Vec<NeighState>,
    /// When each hop was last asked to resolve (rate limit).
    asked: HashMap<IpAddr, Instant>,
}

pub struct NeighWatcher {
    inner: Arc<Mutex<Inner>>,
    wake: Arc<tokio::sync::Notify>,
}

/// How often a missing entry is asked for again, and a stale one re-probed.
const ASK_EVERY: Duration = Duration::from_secs(1);
const REPROBE_STALE_EVERY: Duration = Duration::from_secs(5);

impl NeighWatcher {
    /// Starts watching on the current tokio runtime.
    pub async fn start(table: Arc<NextHops>) -> Result<NeighWatcher, NeighError> {
        let (conn, handle, _) = new_connection().map_err(NeighError::Socket)?;
        tokio::spawn(conn);
        let (mconn, _, mut events) = new_multicast_connection(&[
            MulticastGroup::Neigh,
            MulticastGroup::Ipv4Route,
            MulticastGroup::Ipv6Route,
            MulticastGroup::Link,
        ])
        .map_err(NeighError::Socket)?;
        tokio::spawn(mconn);
        let inner = Arc::new(Mutex::new(Inner {
            targets: Vec::new(),
            states: Vec::new(),
            asked: HashMap::new(),
        }));
        let wake = Arc::new(tokio::sync::Notify::new());
        let (i2, w2) = (Arc::clone(&inner), Arc::clone(&wake));
        tokio::spawn(async move {
            loop {
                resolve_all(&handle, &i2, &table).await;
                tokio::select! {
                    e = events.next() => if e.is_none() { break },
                    _ = w2.notified() => {}
                    _ = tokio::time::sleep(ASK_EVERY) => {}
                }
                // Let a burst of events settle into one pass.
                tokio::time::sleep(Duration::from_millis(5)).await;
                while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, events.next()).await {}
            }
        });
        Ok(NeighWatcher { inner, wake })
    }

    /// Replaces the set of remotes to resolve.
    pub fn set_targets(&self, targets: Vec<Target>) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).targets = targets;
        self.wake.notify_one();
    }

    pub fn states(&self) -> Vec<NeighState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).states.clone()
    }
}

async fn resolve_all(handle: &Handle, inner: &Mutex<Inner>, table: &NextHops) {
    let targets = inner.lock().unwrap_or_else(|p| p.into_inner()).targets.clone();
    let mut states = Vec::with_capacity(targets.len());
    let mut to_ask = Vec::new();
    for t in &targets {
        let want = crate::io::afxdp::ifindex(&t.ifname).unwrap_or(0);
        let route = route_get(handle, t.remote).await;
        let entry = match route {
            Some((oif, via)) if oif == want => {
                neighbour(handle, oif, via.unwrap_or(t.remote)).await
            }
            _ => None,
        };
        let r = decide(t.remote, want, route, entry, |i| {
            ifname(i).unwrap_or_else(|| format!("index {i}"))
        });
        let (via, mac, state) = match &r {
            Resolution::Resolved { via, mac, stale } => {
                if *stale {
                    to_ask.push((want, via.unwrap_or(t.remote), REPROBE_STALE_EVERY));
                }
                (*via, Some(*mac), if *stale { "stale" } else { "resolved" }.to_string())
            }
            Resolution::Unresolved { via, hop, why } => {
                to_ask.push((want, *hop, ASK_EVERY));
                (*via, None, format!("resolving: {why}"))
            }
            Resolution::Unroutable { why } => (None, None, why.clone()),
        };
        if table.set(t.remote, mac) {
            match mac {
                Some(m) => {
                    tracing::info!(remote = %t.remote, via = ?via, mac = %engine::model::Mac(m), "next hop resolved")
                }
                None => tracing::warn!(remote = %t.remote, state, "next hop unresolved"),
            }
        }
        states.push(NeighState {
            remote: t.remote,
            interface: t.ifname.clone(),
            via,
            mac: mac.map(|m| engine::model::Mac(m).to_string()),
            state,
        });
    }
    // Forget remotes no longer targeted.
    for (remote, _) in table.snapshot().iter() {
        if !targets.iter().any(|t| t.remote == *remote) {
            table.set(*remote, None);
        }
    }
    let now = Instant::now();
    let mut due = Vec::new();
    {
        let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
        g.states = states;
        for (ifindex, hop, every) in to_ask {
            if g.asked.get(&hop).is_none_or(|t| now.duration_since(*t) >= every) {
                g.asked.insert(hop, now);
                due.push((ifindex, hop));
            }
        }
    }
    for (ifindex, hop) in due {
        if let Err(e) = ask_kernel(handle, ifindex, hop).await {
            tracing::debug!(hop = %hop, error = %e, "asking the kernel to resolve failed");
        }
    }
}

/// `ip route get REMOTE`: the output interface and the gateway, if any.
async fn route_get(handle: &Handle, remote: IpAddr) -> Option<(u32, Option<IpAddr>)> {
    let len = if remote.is_ipv4() { 32 } else { 128 };
    let msg = RouteMessageBuilder::<IpAddr>::new().destination_prefix(remote, len).ok()?.build();
    let mut s = handle.route().get(msg).execute();
    let r = s.try_next().await.ok()??;
    let mut oif = None;
    let mut gw = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(IpAddr::V4(*g)),
            RouteAttribute::Gateway(RouteAddress::Inet6(g)) => gw = Some(IpAddr::V6(*g)),
            _ => {}
        }
    }
    Some((oif?, gw))
}

/// The neighbour entry of `hop` on `ifindex`: its state and link-layer address.
async fn neighbour(
    handle: &Handle,
    ifindex: u32,
    hop: IpAddr,
) -> Option<(NeighbourState, Option<Vec<u8>>)> {
    let family = if hop.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let mut s = handle.neighbours().get().set_address_family(family).execute();
    while let Ok(Some(n)) = s.try_next().await {
        if n.header.ifindex != ifindex {
            continue;
        }
        let mut dst = None;
        let mut ll = None;
        for a in &n.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                    dst = Some(IpAddr::V4(*a))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                    dst = Some(IpAddr::V6(*a))
                }
                NeighbourAttribute::LinkLayerAddress(l) => ll = Some(l.clone()),
                _ => {}
            }
        }
        if dst == Some(hop) {
            return Some((n.header.state, ll));
        }
    }
    None
}

/// Starts (or restarts) ARP / neighbour discovery for `hop`, as the kernel
/// does when it has a packet to send: `RTM_NEWNEIGH` with `NTF_USE`.
async fn ask_kernel(handle: &Handle, ifindex: u32, hop: IpAddr) -> Result<(), rtnetlink::Error> {
    handle
        .neighbours()
        .add(ifindex, hop)
        .state(NeighbourState::None)
        .flags(NeighbourFlags::Use)
        .replace()
        .execute()
        .await
}

fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    Some(unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));
    const GW: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 254));
    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn name(i: u32) -> String {
        format!("if{i}")
    }

    #[test]
    fn decisions() {
        assert_eq!(
            decide(R, 3, None, None, name),
            Resolution::Unroutable { why: "no route".into() }
        );
        assert_eq!(
            decide(R, 3, Some((4, None)), None, name),
            Resolution::Unroutable { why: "route via another interface (if4)".into() }
        );
        assert_eq!(
            decide(R, 3, Some((3, None)), None, name),
            Resolution::Unresolved { via: None, hop: R, why: "no neighbour entry".into() }
        );
        assert_eq!(
            decide(R, 3, Some((3, Some(GW))), Some((NeighbourState::Incomplete, None)), name),
            Resolution::Unresolved { via: Some(GW), hop: GW, why: "incomplete".into() }
        );
        assert_eq!(
            decide(
                R,
                3,
                Some((3, Some(GW))),
                Some((NeighbourState::Failed, Some(MAC.to_vec()))),
                name
            ),
            Resolution::Unresolved { via: Some(GW), hop: GW, why: "failed".into() }
        );
        assert_eq!(
            decide(R, 3, Some((3, None)), Some((NeighbourState::Stale, Some(MAC.to_vec()))), name),
            Resolution::Resolved { via: None, mac: MAC, stale: true }
        );
        assert_eq!(
            decide(
                R,
                3,
                Some((3, None)),
                Some((NeighbourState::Permanent, Some(MAC.to_vec()))),
                name
            ),
            Resolution::Resolved { via: None, mac: MAC, stale: false }
        );
    }
}
