//! Next hops of remote VTEPs from the kernel's route and neighbour tables.
//!
//! For each remote the watcher asks the kernel which route it would use
//! (`ip route get`), then reads the neighbour entry of the gateway (or of the
//! remote itself when it is on-link) and publishes the MAC address in the
//! shared `NextHops` table the workers encapsulate with.
//!
//! The kernel resolves a neighbour only when it sends to it, and the
//! dataplane's own packets bypass the kernel. So when an entry is missing the
//! watcher asks the kernel to resolve it (`RTM_NEWNEIGH` with `NTF_USE`: the
//! kernel runs `neigh_event_send`, which starts ARP or neighbour discovery
//! without a packet of ours), and when an entry goes stale it asks again,
//! which makes the kernel re-probe it, so a peer that went away is noticed.
//! Where `NTF_USE` is refused (no CAP_NET_ADMIN), an empty UDP datagram to the
//! remote's discard port does the same.
//!
//! It re-resolves on every route, rule, next-hop object, link or relevant
//! neighbour change the kernel announces, and every few seconds besides in
//! case an announcement was lost.

use std::collections::hash_map::Entry as Slot;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use engine::model::Mac;
use engine::next_hop::NextHops;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use futures_util::FutureExt;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteType, RouteVia};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{new_connection, new_multicast_connection, Handle, MulticastGroup};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::lock;

#[derive(Debug, thiserror::Error)]
pub enum NeighError {
    #[error("cannot open a netlink route socket: {0}")]
    Socket(std::io::Error),
    #[error("cannot subscribe to the kernel's route, neighbour and link changes: {0}")]
    Subscribe(std::io::Error),
}

/// Why the kernel has no usable route to a remote (the text is what
/// `status` shows as the neighbour's state).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no interface {0}")]
    NoInterface(String),
    #[error("no route")]
    NoRoute,
    #[error("no route (no output interface)")]
    NoOutputInterface,
    /// The lookup failed: the kernel's reason, or the request could not be built.
    #[error("no route ({0})")]
    Lookup(String),
}

/// A neighbour entry that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading the neighbour entry of {hop} on interface {ifindex}: {reason}")]
pub struct NeighLookupError {
    pub hop: IpAddr,
    pub ifindex: u32,
    pub reason: String,
}

/// One remote VTEP to resolve; `ifname` is the uplink interface the tunnel leaves by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub remote: IpAddr,
    pub ifname: String,
}

/// State of each target, for `status`: resolved MAC, the gateway used, or why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NeighState {
    pub remote: IpAddr,
    pub interface: String,
    /// The gateway used; `None` when the remote is on-link (or unroutable).
    pub via: Option<IpAddr>,
    pub mac: Option<String>,
    /// The kernel's neighbour state ("reachable", "stale", "incomplete",
    /// "failed", ...), "no neighbour entry", or why no route applies ("no
    /// route", "route via another interface (eth1)", "no interface eth0").
    pub state: String,
}

/// The kernel's route to a remote, as `ip route get` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub oif: u32,
    /// The gateway; `None` when the remote is on-link.
    pub via: Option<IpAddr>,
    pub local: bool,
}

/// A neighbour entry: its state and link-layer address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub state: NeighbourState,
    pub lladdr: Option<Vec<u8>>,
}

/// What one lookup found, and what to ask the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Usable; `reprobe` when the entry is stale and nothing of the kernel's
    /// own would refresh it.
    Resolved { via: Option<IpAddr>, hop: IpAddr, mac: [u8; 6], state: String, reprobe: bool },
    /// Known route but no usable entry: ask the kernel to resolve `hop`.
    Unresolved { via: Option<IpAddr>, hop: IpAddr, state: String },
    /// Nothing to ask for: no interface, no route, or a route by another
    /// interface.
    Unroutable { why: String },
}

/// The decision, apart from netlink. `want` is the index of the target's
/// interface (None: no such interface), `route` the kernel's route or the
/// reason it has none, `entry` the neighbour entry of the hop on that
/// interface.
pub fn decide(
    target: &Target,
    want: Option<u32>,
    route: &Result<Route, RouteError>,
    entry: Option<&Entry>,
    oif_name: impl Fn(u32) -> String,
) -> Resolution {
    let Some(want) = want else {
        return Resolution::Unroutable { why: format!("no interface {}", target.ifname) };
    };
    let r = match route {
        Ok(r) => r,
        Err(why) => return Resolution::Unroutable { why: why.to_string() },
    };
    if r.local {
        return Resolution::Unroutable { why: "local address".into() };
    }
    if r.oif != want {
        return Resolution::Unroutable {
            why: format!("route via another interface ({})", oif_name(r.oif)),
        };
    }
    let via = r.via;
    let hop = via.unwrap_or(target.remote);
    let Some(e) = entry else {
        return Resolution::Unresolved { via, hop, state: "no neighbour entry".into() };
    };
    let usable = matches!(
        e.state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    );
    match e.lladdr.as_deref().map(<[u8; 6]>::try_from) {
        Some(Ok(mac)) if usable && mac != [0; 6] => Resolution::Resolved {
            via,
            hop,
            mac,
            state: state_name(e.state),
            reprobe: e.state == NeighbourState::Stale,
        },
        _ => Resolution::Unresolved { via, hop, state: state_name(e.state) },
    }
}

pub fn state_name(s: NeighbourState) -> String {
    match s {
        NeighbourState::Incomplete => "incomplete".into(),
        NeighbourState::Reachable => "reachable".into(),
        NeighbourState::Stale => "stale".into(),
        NeighbourState::Delay => "delay".into(),
        NeighbourState::Probe => "probe".into(),
        NeighbourState::Failed => "failed".into(),
        NeighbourState::Noarp => "noarp".into(),
        NeighbourState::Permanent => "permanent".into(),
        NeighbourState::None => "none".into(),
        NeighbourState::Other(v) => format!("state {v:#x}"),
        s => format!("{s:?}").to_lowercase(),
    }
}

/// Why the kernel is asked about a hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AskKind {
    /// Missing or failed: resolve it.
    Resolve,
    /// Stale: re-probe it.
    Reprobe,
}

/// When a hop was last asked about, and how often in a row.
#[derive(Clone, Copy, Debug)]
pub struct Asked {
    pub kind: AskKind,
    pub at: Instant,
    pub times: u32,
}

/// Every second for the first few tries, then every ten: a peer that is down
/// is not ARPed for at full rate forever, and one that comes back usually
/// announces itself (its own ARP creates our entry) before the next try.
const RESOLVE_FAST_TRIES: u32 = 10;
const RESOLVE_FAST: Duration = Duration::from_secs(1);
const RESOLVE_SLOW: Duration = Duration::from_secs(10);
/// A re-probe takes the kernel through DELAY and PROBE (several seconds), so
/// asking more often would change nothing.
const REPROBE_EVERY: Duration = Duration::from_secs(5);

/// Whether to ask now, given the previous ask about the same hop.
pub fn ask_due(prev: Option<&Asked>, kind: AskKind, now: Instant) -> bool {
    let Some(p) = prev.filter(|p| p.kind == kind) else { return true };
    let every = match kind {
        AskKind::Resolve if p.times < RESOLVE_FAST_TRIES => RESOLVE_FAST,
        AskKind::Resolve => RESOLVE_SLOW,
        AskKind::Reprobe => REPROBE_EVERY,
    };
    now.saturating_duration_since(p.at) >= every
}

/// The fallback pass: often while something is being resolved, rarely when
/// all is settled and announcements do the work.
const PASS_BUSY: Duration = Duration::from_secs(1);
const PASS_IDLE: Duration = Duration::from_secs(5);
/// Lets a burst of announcements settle into one pass.
const SETTLE: Duration = Duration::from_millis(10);

struct Shared {
    targets: Mutex<Vec<Target>>,
    states: Mutex<Vec<NeighState>>,
    wake: tokio::sync::Notify,
}

pub struct NeighWatcher {
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
}

impl NeighWatcher {
    /// Starts watching (spawns a task on the current tokio runtime, which
    /// must exist). The netlink sockets belong to the network namespace of the
    /// calling thread.
    pub async fn start(table: Arc<NextHops>) -> Result<NeighWatcher, NeighError> {
        let (conn, handle, _) = new_connection().map_err(NeighError::Socket)?;
        let conn = tokio::spawn(conn);
        let events = subscribe().map_err(NeighError::Subscribe)?;
        let shared = Arc::new(Shared {
            targets: Mutex::new(Vec::new()),
            states: Mutex::new(Vec::new()),
            wake: tokio::sync::Notify::new(),
        });
        let w = Watch {
            handle,
            table,
            shared: Arc::downgrade(&shared),
            events: Some(events),
            _conn: Conns(vec![conn]),
            asked: HashMap::new(),
            hops: HashSet::new(),
            logged: HashMap::new(),
            datagrams: false,
        };
        let task = tokio::spawn(w.run()).abort_handle();
        Ok(NeighWatcher { shared, task })
    }

    /// Replaces the set of targets. Removed targets leave the table on the
    /// next pass, which this starts at once.
    pub fn set_targets(&self, targets: Vec<Target>) {
        *lock(&self.shared.targets) = targets;
        self.shared.wake.notify_one();
    }

    /// The state of each target as of the last pass.
    pub fn states(&self) -> Vec<NeighState> {
        lock(&self.shared.states).clone()
    }
}

impl Drop for NeighWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Events = BoxStream<'static, (NetlinkMessage<RouteNetlinkMessage>, rtnetlink::sys::SocketAddr)>;

/// Subscribes to the changes that can move a next hop.
fn subscribe() -> std::io::Result<(Conns, Events)> {
    let (conn, _, events) = new_multicast_connection(&[
        MulticastGroup::Neigh,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
        MulticastGroup::Ipv4Rule,
        MulticastGroup::Ipv6Rule,
        MulticastGroup::Nexthop,
        MulticastGroup::Link,
    ])?;
    Ok((Conns(vec![tokio::spawn(conn)]), events.boxed()))
}

/// The connection tasks die with the watcher's task.
struct Conns(Vec<JoinHandle<()>>);

impl Drop for Conns {
    fn drop(&mut self) {
        for c in &self.0 {
            c.abort();
        }
    }
}

/// What a change is logged by: one line when this changes, not on every
/// REACHABLE/STALE/DELAY turn or every failed try.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Logged {
    Resolved { via: Option<IpAddr>, mac: [u8; 6] },
    Resolving { via: Option<IpAddr> },
    Unroutable(String),
}

struct Watch {
    handle: Handle,
    table: Arc<NextHops>,
    shared: Weak<Shared>,
    events: Option<(Conns, Events)>,
    _conn: Conns,
    /// Keyed by (interface index, hop).
    asked: HashMap<(u32, IpAddr), Asked>,
    /// Hops (and remotes) in use: neighbour announcements about others are ignored.
    hops: HashSet<IpAddr>,
    logged: HashMap<Target, Logged>,
    /// NTF_USE was refused: trigger with a datagram instead.
    datagrams: bool,
}

impl Watch {
    async fn run(mut self) {
        loop {
            let Some(shared) = self.shared.upgrade() else { return };
            let busy = self.pass(&shared).await;
            if self.events.is_none() {
                match subscribe() {
                    Ok(e) => {
                        tracing::info!("following the kernel's route and neighbour changes again");
                        self.events = Some(e);
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot subscribe to kernel changes"),
                }
            }
            let pause = tokio::time::sleep(if busy { PASS_BUSY } else { PASS_IDLE });
            tokio::pin!(pause);
            loop {
                let next = async {
                    match self.events.as_mut() {
                        Some((_, rx)) => rx.next().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = &mut pause => break,
                    _ = shared.wake.notified() => break,
                    m = next => match m {
                        Some((m, _)) if self.relevant(&m) => break,
                        Some(_) => {}
                        None => {
                            tracing::warn!("kernel change announcements stopped: polling until subscribed again");
                            self.events = None;
                            break;
                        }
                    },
                }
            }
            drop(shared);
            tokio::time::sleep(SETTLE).await;
            if let Some((_, rx)) = self.events.as_mut() {
                while let Some(Some(_)) = rx.next().now_or_never() {}
            }
        }
    }

    /// Announcements about neighbours we do not use are ignored (a busy
    /// host's table changes all the time); any route, rule, link or next-hop
    /// change, and an overrun (lost announcements), starts a pass.
    fn relevant(&self, m: &NetlinkMessage<RouteNetlinkMessage>) -> bool {
        match &m.payload {
            NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewNeighbour(n) | RouteNetlinkMessage::DelNeighbour(n),
            ) => n.attributes.iter().any(|a| match a {
                NeighbourAttribute::Destination(d) => {
                    neighbour_ip(d).is_some_and(|ip| self.hops.contains(&ip))
                }
                _ => false,
            }),
            _ => true,
        }
    }

    /// Resolves every target, updates the table and the states, and asks the
    /// kernel about what is missing or stale. Returns whether anything is
    /// still being resolved.
    async fn pass(&mut self, shared: &Shared) -> bool {
        let targets = lock(&shared.targets).clone();
        let mut routes: HashMap<IpAddr, Result<Route, RouteError>> = HashMap::new();
        let mut entries: HashMap<(u32, IpAddr), Option<Entry>> = HashMap::new();
        let mut states = Vec::with_capacity(targets.len());
        let mut asks: HashMap<(u32, IpAddr), (AskKind, IpAddr, String)> = HashMap::new();
        let mut hops = HashSet::new();
        let mut published = HashSet::new();
        for t in &targets {
            let want = crate::io::netdev::ifindex(&t.ifname).ok();
            let route = match (want, routes.entry(t.remote)) {
                // Decided on the interface alone.
                (None, _) => Err(RouteError::NoInterface(t.ifname.clone())),
                (Some(_), Slot::Occupied(o)) => o.get().clone(),
                (Some(_), Slot::Vacant(v)) => {
                    v.insert(route_get(&self.handle, t.remote).await).clone()
                }
            };
            let mut entry = None;
            if let (Some(w), Ok(r)) = (want, &route) {
                if r.oif == w && !r.local {
                    let hop = r.via.unwrap_or(t.remote);
                    entry = match entries.entry((w, hop)) {
                        Slot::Occupied(o) => o.get().clone(),
                        Slot::Vacant(v) => {
                            let e = neigh_get(&self.handle, w, hop).await.unwrap_or_else(|e| {
                                tracing::debug!(error = %e, "neighbour lookup failed");
                                None
                            });
                            v.insert(e).clone()
                        }
                    };
                }
            }
            let res = decide(t, want, &route, entry.as_ref(), |i| {
                crate::io::netdev::ifname(i).unwrap_or_else(|| format!("index {i}"))
            });
            hops.insert(t.remote);
            let (via, mac, state, logged) = match res {
                Resolution::Resolved { via, hop, mac, state, reprobe } => {
                    hops.insert(hop);
                    if reprobe {
                        asks.insert(
                            (want.unwrap_or(0), hop),
                            (AskKind::Reprobe, t.remote, t.ifname.clone()),
                        );
                    }
                    (via, Some(mac), state, Logged::Resolved { via, mac })
                }
                Resolution::Unresolved { via, hop, state } => {
                    hops.insert(hop);
                    asks.insert(
                        (want.unwrap_or(0), hop),
                        (AskKind::Resolve, t.remote, t.ifname.clone()),
                    );
                    (via, None, state, Logged::Resolving { via })
                }
                Resolution::Unroutable { why } => {
                    (None, None, why.clone(), Logged::Unroutable(why))
                }
            };
            // Two targets with one remote (two uplinks): the first one listed is published.
            if published.insert(t.remote) {
                self.table.set(t.remote, mac);
                let mtu = crate::io::netdev::mtu(&t.ifname).ok();
                self.table.set_mtu(t.remote, mtu.map(|m| m.min(u16::MAX as u32) as u16));
            }
            if self.logged.get(t) != Some(&logged) {
                let via = via.map(|v| v.to_string());
                let via = via.as_deref().unwrap_or("on-link");
                match &logged {
                    Logged::Resolved { mac, .. } => {
                        tracing::info!(remote = %t.remote, interface = %t.ifname, via = %via, mac = %Mac(*mac), state, "next hop resolved")
                    }
                    Logged::Resolving { .. } => {
                        tracing::info!(remote = %t.remote, interface = %t.ifname, via = %via, state, "next hop unresolved: asking the kernel to resolve it")
                    }
                    Logged::Unroutable(_) => {
                        tracing::warn!(remote = %t.remote, interface = %t.ifname, state, "next hop unresolved")
                    }
                }
                self.logged.insert(t.clone(), logged);
            }
            states.push(NeighState {
                remote: t.remote,
                interface: t.ifname.clone(),
                via,
                mac: mac.map(|m| Mac(m).to_string()),
                state,
            });
        }
        for remote in self.table.snapshot().keys() {
            if !published.contains(remote) {
                self.table.set(*remote, None);
                self.table.set_mtu(*remote, None);
                tracing::info!(remote = %remote, "next hop forgotten: no tunnel to it any more");
            }
        }
        self.logged.retain(|t, _| targets.contains(t));
        *lock(&shared.states) = states;
        self.hops = hops;

        let now = Instant::now();
        // An entry no longer missing or stale starts afresh when it next is.
        self.asked.retain(|k, a| asks.get(k).is_some_and(|(kind, ..)| *kind == a.kind));
        let busy = asks.values().any(|(kind, ..)| *kind == AskKind::Resolve);
        for ((ifindex, hop), (kind, remote, ifname)) in asks {
            let prev = self.asked.get(&(ifindex, hop));
            if !ask_due(prev, kind, now) {
                continue;
            }
            let times = prev.map_or(0, |p| p.times) + 1;
            self.asked.insert((ifindex, hop), Asked { kind, at: now, times });
            tracing::debug!(hop = %hop, ?kind, times, "asking the kernel about the next hop");
            self.ask(ifindex, hop, remote, &ifname).await;
        }
        busy
    }

    async fn ask(&mut self, ifindex: u32, hop: IpAddr, remote: IpAddr, ifname: &str) {
        if !self.datagrams {
            match ask_kernel(&self.handle, ifindex, hop).await {
                Ok(()) => return,
                // Without CAP_NET_ADMIN it will never work; anything else
                // (the interface went away, say) is the next pass's business.
                Err(rtnetlink::Error::NetlinkError(m))
                    if [libc::EPERM, libc::EACCES, libc::EOPNOTSUPP].contains(&-m.raw_code()) =>
                {
                    tracing::warn!(hop = %hop, error = %errno_text(m.raw_code()), "the kernel refused NTF_USE: resolving with datagrams to the discard port from now on");
                    self.datagrams = true;
                }
                Err(e) => {
                    tracing::debug!(hop = %hop, error = %netlink_error_text(&e), "asking the kernel to resolve failed");
                    return;
                }
            }
        }
        if let Err(e) = trigger_by_datagram(remote, ifname) {
            tracing::debug!(remote = %remote, interface = ifname, error = %e, "cannot send a datagram to resolve the next hop");
        }
    }
}

fn neighbour_ip(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(a) => Some(IpAddr::V4(*a)),
        NeighbourAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn neighbour_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// An errno as a reason: "network is unreachable", not "Network is
/// unreachable (os error 101)".
fn errno_text(code: i32) -> String {
    let s = std::io::Error::from_raw_os_error(code.abs()).to_string();
    let s = s.split(" (os error").next().unwrap_or(&s);
    let mut c = s.chars();
    c.next().map(|f| f.to_lowercase().chain(c).collect()).unwrap_or_default()
}

fn netlink_error_text(e: &rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(m) => errno_text(m.raw_code()),
        e => e.to_string(),
    }
}

/// `ip route get REMOTE`: the output interface and the gateway, if any.
async fn route_get(handle: &Handle, remote: IpAddr) -> Result<Route, RouteError> {
    let len = if remote.is_ipv4() { 32 } else { 128 };
    let msg = rtnetlink::RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(remote, len)
        .map_err(|e| RouteError::Lookup(e.to_string()))?
        .build();
    let r = match handle.route().get(msg).execute().try_next().await {
        Ok(Some(r)) => r,
        Ok(None) => return Err(RouteError::NoRoute),
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ENETUNREACH => {
            return Err(RouteError::NoRoute)
        }
        Err(e) => return Err(RouteError::Lookup(netlink_error_text(&e))),
    };
    let mut oif = None;
    let mut via = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => via = Some(IpAddr::V4(*g)),
            RouteAttribute::Gateway(RouteAddress::Inet6(g)) => via = Some(IpAddr::V6(*g)),
            // An IPv4 route through an IPv6 gateway (RFC 5549).
            RouteAttribute::Via(RouteVia::Inet6(g)) => via = Some(IpAddr::V6(*g)),
            RouteAttribute::Via(RouteVia::Inet(g)) => via = Some(IpAddr::V4(*g)),
            _ => {}
        }
    }
    let oif = oif.ok_or(RouteError::NoOutputInterface)?;
    Ok(Route { oif, via, local: r.header.kind == RouteType::Local })
}

/// The neighbour entry of `hop` on `ifindex` (`ip neigh get`), None if absent.
async fn neigh_get(
    handle: &Handle,
    ifindex: u32,
    hop: IpAddr,
) -> Result<Option<Entry>, NeighLookupError> {
    let failed = |reason: String| NeighLookupError { hop, ifindex, reason };
    let mut msg = NeighbourMessage::default();
    msg.header.family = family(hop);
    msg.header.ifindex = ifindex;
    msg.attributes.push(NeighbourAttribute::Destination(neighbour_address(hop)));
    // A single-entry get, not a dump of the whole table per target.
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNeighbour(msg));
    req.header.flags = NLM_F_REQUEST;
    let mut replies = handle.clone().request(req).map_err(|e| failed(netlink_error_text(&e)))?;
    while let Some(m) = replies.next().await {
        match m.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => {
                let lladdr = n.attributes.into_iter().find_map(|a| match a {
                    NeighbourAttribute::LinkLayerAddress(l) => Some(l),
                    _ => None,
                });
                return Ok(Some(Entry { state: n.header.state, lladdr }));
            }
            NetlinkPayload::Error(e) if e.raw_code() == -libc::ENOENT => return Ok(None),
            NetlinkPayload::Error(e) => return Err(failed(errno_text(e.raw_code()))),
            _ => {}
        }
    }
    Ok(None)
}

/// Starts (or restarts) ARP / neighbour discovery for `hop`, as the kernel
/// does when it has a packet to send: `RTM_NEWNEIGH` with `NTF_USE`. The
/// kernel needs NLM_F_CREATE to create a missing entry; with NTF_USE it then
/// only calls `neigh_event_send` and ignores the state, so an existing entry
/// is not overwritten (missing or failed: probe; stale: delay, then probe).
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

/// The fallback trigger: one empty UDP datagram to `remote`'s discard port,
/// from a socket bound to `ifname`, so the kernel resolves the next hop
/// towards it on that interface. Binding needs CAP_NET_RAW; without it the
/// datagram goes unbound, which is the same route: the caller has checked
/// that the kernel's route leaves by `ifname`.
pub fn trigger_by_datagram(remote: IpAddr, ifname: &str) -> std::io::Result<()> {
    let any: SocketAddr = match remote {
        IpAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = std::net::UdpSocket::bind(any)?;
    s.set_nonblocking(true)?;
    let name = ifname.as_bytes();
    // SAFETY: a valid socket, and a pointer to `name.len()` readable bytes
    // (SO_BINDTODEVICE takes the name without a terminating NUL).
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EPERM) {
            return Err(e);
        }
    }
    match s.send_to(&[], (remote, 9)) {
        // The datagram waits in the neighbour's queue or is dropped: either
        // way resolution has started.
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
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

    fn t() -> Target {
        Target { remote: R, ifname: "up0".into() }
    }

    fn on_link(oif: u32) -> Result<Route, RouteError> {
        Ok(Route { oif, via: None, local: false })
    }

    fn entry(state: NeighbourState, mac: Option<[u8; 6]>) -> Entry {
        Entry { state, lladdr: mac.map(|m| m.to_vec()) }
    }

    #[test]
    fn unroutable() {
        let why = |r: Resolution| match r {
            Resolution::Unroutable { why } => why,
            r => panic!("{r:?}"),
        };
        assert_eq!(why(decide(&t(), None, &on_link(3), None, name)), "no interface up0");
        assert_eq!(why(decide(&t(), Some(3), &Err(RouteError::NoRoute), None, name)), "no route");
        let refused = Err(RouteError::Lookup("network is unreachable".into()));
        assert_eq!(
            why(decide(&t(), Some(3), &refused, None, name)),
            "no route (network is unreachable)"
        );
        assert_eq!(
            why(decide(&t(), Some(3), &on_link(4), None, name)),
            "route via another interface (if4)"
        );
        let local = Ok(Route { oif: 1, via: None, local: true });
        assert_eq!(why(decide(&t(), Some(3), &local, None, name)), "local address");
    }

    #[test]
    fn unresolved_asks_for_the_hop() {
        let via_gw = Ok(Route { oif: 3, via: Some(GW), local: false });
        assert_eq!(
            decide(&t(), Some(3), &on_link(3), None, name),
            Resolution::Unresolved { via: None, hop: R, state: "no neighbour entry".into() }
        );
        for (state, mac, name_) in [
            (NeighbourState::Incomplete, None, "incomplete"),
            (NeighbourState::Failed, Some(MAC), "failed"),
            (NeighbourState::None, None, "none"),
            // Usable state but no (or no Ethernet) address.
            (NeighbourState::Reachable, None, "reachable"),
            (NeighbourState::Permanent, Some([0; 6]), "permanent"),
        ] {
            assert_eq!(
                decide(&t(), Some(3), &via_gw, Some(&entry(state, mac)), name),
                Resolution::Unresolved { via: Some(GW), hop: GW, state: name_.into() }
            );
        }
    }

    #[test]
    fn resolved_and_stale_reprobed() {
        for (state, reprobe) in [
            (NeighbourState::Reachable, false),
            (NeighbourState::Stale, true),
            (NeighbourState::Delay, false),
            (NeighbourState::Probe, false),
            (NeighbourState::Permanent, false),
            (NeighbourState::Noarp, false),
        ] {
            assert_eq!(
                decide(&t(), Some(3), &on_link(3), Some(&entry(state, Some(MAC))), name),
                Resolution::Resolved {
                    via: None,
                    hop: R,
                    mac: MAC,
                    state: state_name(state),
                    reprobe
                }
            );
        }
    }

    #[test]
    fn asks_are_rate_limited() {
        let t0 = Instant::now();
        let s = |n| Duration::from_millis(n);
        assert!(ask_due(None, AskKind::Resolve, t0));
        let first = Asked { kind: AskKind::Resolve, at: t0, times: 1 };
        assert!(!ask_due(Some(&first), AskKind::Resolve, t0 + s(900)));
        assert!(ask_due(Some(&first), AskKind::Resolve, t0 + s(1000)));
        // A different reason is a fresh start.
        assert!(ask_due(Some(&first), AskKind::Reprobe, t0 + s(1)));
        let many = Asked { kind: AskKind::Resolve, at: t0, times: RESOLVE_FAST_TRIES };
        assert!(!ask_due(Some(&many), AskKind::Resolve, t0 + s(9_000)));
        assert!(ask_due(Some(&many), AskKind::Resolve, t0 + s(10_000)));
        let stale = Asked { kind: AskKind::Reprobe, at: t0, times: 1 };
        assert!(!ask_due(Some(&stale), AskKind::Reprobe, t0 + s(4_000)));
        assert!(ask_due(Some(&stale), AskKind::Reprobe, t0 + s(5_000)));
    }

    #[test]
    fn errno_reads_as_a_reason() {
        assert_eq!(errno_text(-libc::ENETUNREACH), "network is unreachable");
    }
}
