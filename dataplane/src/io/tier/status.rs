//! What the tier reports: the owner's counts and why an entry was not
//! installed, `status`'s view, and the program's own counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use engine::tier::NotInTier;
use serde::{Deserialize, Serialize};

/// The program's tier counts on one port, summed over CPUs.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct TierProgramStats {
    /// Frames an entry handled.
    pub hit: u64,
    /// Frames with a tier key and no entry (to AF_XDP).
    pub miss: u64,
    /// Frames whose entry is of an older generation (to AF_XDP).
    pub stale: u64,
    /// Frames longer than their entry handles (to AF_XDP).
    pub too_long: u64,
    /// Frames whose output port is not in the devmap (to AF_XDP).
    pub no_tx: u64,
    /// Frames without headroom for the outer header (to AF_XDP).
    pub no_headroom: u64,
    /// Frames with a partial TCP/UDP checksum, left for an offload by a
    /// sender the tier cannot see (to AF_XDP, which finishes it).
    #[serde(default)]
    pub partial_checksum: u64,
    /// Frames with a partial checksum passed up to the tc tier (io/tc.rs).
    #[serde(default)]
    pub to_tc: u64,
    /// Skbs the tc tier encapsulated (a GSO skb is one).
    #[serde(default)]
    pub tc_hit: u64,
    /// Skbs the tc tier dropped: their entry was retired after the XDP
    /// program passed them.
    #[serde(default)]
    pub tc_lost: u64,
    /// Tunnel packets on an uplink the decap tier does not take (outer
    /// options, extension headers, a UDP checksum to verify, reserved
    /// VXLAN bits, ...): to AF_XDP, whose engine judges them.
    #[serde(default)]
    pub decap_punt: u64,
    /// Tunnel packets of no tunnel the tier has a current entry for.
    #[serde(default)]
    pub decap_no_tunnel: u64,
    /// Decapsulated frames whose ECN field RFC 6040 changes (a CE mark to
    /// carry, or a drop): to AF_XDP.
    #[serde(default)]
    pub decap_ecn: u64,
    /// Tunnel packets whose outer UDP checksum, verified here as the
    /// engine verifies it, is wrong or partial (a peer's offload): to
    /// AF_XDP, whose engine finishes or drops them.
    #[serde(default)]
    pub decap_bad_checksum: u64,
    /// Frames whose TCP/UDP checksum the software path would drop, or
    /// whose lengths the tier does not walk (padding after the datagram,
    /// lengths that contradict each other): to AF_XDP, which settles them
    /// (`encap::settle`) as it does every frame it receives bare.
    #[serde(default)]
    pub unsettled: u64,
    /// GRE packets with a sequence number (RFC 2890): to AF_XDP, whose
    /// engine decapsulates them.
    #[serde(default)]
    pub decap_gre_sequence: u64,
    /// Frames whose partial TCP/UDP checksum (a sender's offload left it)
    /// the tier finished, as the software path would, and sent on: also in
    /// `hit`.
    #[serde(default)]
    pub finished_checksum: u64,
}

/// Why an entry the engine offered was not installed (the flow stays on AF_XDP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum InstallFailure {
    /// The owner's queue was full.
    QueueFull,
    /// The rule set changed before the entry was installed.
    StaleGeneration,
    /// The ingress port has no tier (not an AF_XDP port).
    NoTierOnPort,
    /// The output port's driver does not take redirected frames.
    CannotRedirect,
    /// Every slot of the ingress port's table is in use.
    TableFull,
    /// The kernel refused the map update.
    MapUpdate,
    /// The entry needs a mask and every slot of the port's mask list holds
    /// another one.
    MasksFull,
    /// A live entry of another key has the same [`tier_hash`].
    HashCollision,
}

impl InstallFailure {
    pub(super) const ALL: [InstallFailure; 8] = [
        InstallFailure::QueueFull,
        InstallFailure::StaleGeneration,
        InstallFailure::NoTierOnPort,
        InstallFailure::CannotRedirect,
        InstallFailure::TableFull,
        InstallFailure::MapUpdate,
        InstallFailure::MasksFull,
        InstallFailure::HashCollision,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            InstallFailure::QueueFull => "queue_full",
            InstallFailure::StaleGeneration => "stale_generation",
            InstallFailure::NoTierOnPort => "no_tier_on_port",
            InstallFailure::CannotRedirect => "cannot_redirect",
            InstallFailure::TableFull => "table_full",
            InstallFailure::MapUpdate => "map_update",
            InstallFailure::MasksFull => "masks_full",
            InstallFailure::HashCollision => "hash_collision",
        }
    }
}

/// The tier's counts of what it did, written by the owner and the workers.
#[derive(Default)]
pub(super) struct Stats {
    pub(super) installs: AtomicU64,
    pub(super) adopted: AtomicU64,
    pub(super) evictions: AtomicU64,
    pub(super) invalidations: AtomicU64,
    pub(super) hits: AtomicU64,
    pub(super) failures: [AtomicU64; InstallFailure::ALL.len()],
    pub(super) not_in_tier: [AtomicU64; NotInTier::ALL.len()],
}

impl Stats {
    pub(super) fn fail(&self, f: InstallFailure) {
        self.failures[f as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// What `status` shows of the tier.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TierStatus {
    /// Flow entries installed now, over all ingress ports.
    pub entries: u64,
    /// Entries each ingress port holds at most.
    pub capacity: u32,
    /// Packets the tier handled (harvested from its counters).
    pub hits: u64,
    pub installs: u64,
    /// Entries taken over at start from a previous overlayd's pinned maps.
    #[serde(default)]
    pub adopted: u64,
    /// Entries removed after being idle.
    pub evictions: u64,
    /// Entries removed because the rule set, a next hop or an output port changed.
    pub invalidations: u64,
    /// Entries offered and not installed, by reason (the flows stay on AF_XDP).
    pub install_failures: BTreeMap<String, u64>,
    /// Flows the engine kept for itself, by reason.
    pub not_in_tier: BTreeMap<String, u64>,
    /// The masks entries are keyed under now (over all ports), each as the
    /// fields it keeps (`ip_dst/8`: a prefix): an entry serves every flow
    /// equal to its first one on those fields.
    #[serde(default)]
    pub masks: Vec<String>,
    pub ports: Vec<TierPortStatus>,
}

/// One port's place in the tier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TierPortStatus {
    pub port: String,
    /// Entries installed for flows arriving here; `None`: no tier on this port.
    pub entries: Option<u64>,
    /// Why frames may not be redirected out of it (absent: they may).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_output: Option<String>,
}
