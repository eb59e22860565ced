//! `encap`: wire formats and in-place tunnel encapsulation for the overlay dataplane.
//!
//! - [`wire`]: typed, zero-copy views of Ethernet, 802.1Q, IPv4, IPv6, UDP, VXLAN,
//!   Geneve and GRE headers, in the style of smoltcp's `wire` module.
//! - [`EncapTemplate`]: a tunnel's outer header, built once and applied per
//!   packet into the headroom in front of the inner frame.
//! - [`decap()`]: validation and stripping of received tunnel packets.
//! - [`settle()`]: the TCP/UDP checksum of a frame that arrives without its
//!   checksum state (AF_XDP), verified or finished.
//! - [`DropReason`]: the one list of reasons a packet can be dropped.
//!
//! No function here allocates, locks, logs or makes a system call on the per-packet
//! path, and no input bytes can make it panic.

pub mod decap;
pub mod drop;
pub mod ecn;
pub mod icmp;
pub mod inner;
pub mod packet;
pub mod settle;
pub mod template;
pub mod tunnel;
pub mod wire;

pub use decap::{decap, DecapConfig, Decapped, GeneveOptionMatch, TunnelId};
pub use drop::DropReason;
pub use ecn::EcnMode;
pub use inner::{InnerL3, InnerMeta};
pub use packet::PacketBuf;
pub use settle::{settle, Settled};
pub use template::EncapTemplate;
pub use tunnel::{
    DfMode, DscpMode, EncapOptions, Encapsulation, GeneveOptions, ParamsError, TtlMode,
    TunnelParams, Underlay,
};

/// Encapsulates every packet of a batch in place. `verdicts[i]` receives the
/// outcome for `pkts[i]`; both slices must have the same length (extra entries
/// of the longer one are left alone).
pub fn encap_batch(
    tpl: &mut EncapTemplate,
    pkts: &mut [PacketBuf<'_>],
    verdicts: &mut [Result<(), DropReason>],
) {
    for (p, v) in pkts.iter_mut().zip(verdicts.iter_mut()) {
        *v = tpl.encap(p);
    }
}

/// Decapsulates every packet of a batch in place.
pub fn decap_batch(
    cfg: &DecapConfig,
    pkts: &mut [PacketBuf<'_>],
    verdicts: &mut [Result<Decapped, DropReason>],
) {
    for (p, v) in pkts.iter_mut().zip(verdicts.iter_mut()) {
        *v = decap(cfg, p);
    }
}
