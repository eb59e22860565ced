//! Typed, zero-copy views of the headers the dataplane reads and writes.
//!
//! Each protocol has a `Packet<T: AsRef<[u8]>>` (or `Frame`) view with
//! `new_unchecked`, `new_checked` and `check_len`, getters named after the header
//! field and `set_*` setters, and a `*Repr` with `parse`, `emit` and
//! `buffer_len`. The contract: once `check_len` (or `new_checked`) succeeded, no
//! accessor panics. Errors are `DropReason`s, so a failed check is already the
//! counter the fast path bumps.
//!
//! Each view's `field` module is public: code that patches a header in place
//! (the encap template, segmentation) names the field it writes rather than
//! an offset. [`l2`] is the one walk past VLAN tags that every parser uses.

pub mod checksum;
pub mod ethernet;
pub mod geneve;
pub mod gre;
pub mod ipv4;
pub mod ipv6;
pub mod l2;
pub mod tcp;
pub mod udp;
pub mod vxlan;

/// IP protocol numbers the dataplane looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    Icmp,
    Tcp,
    Udp,
    Gre,
    Icmpv6,
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    fn from(v: u8) -> Self {
        match v {
            1 => IpProtocol::Icmp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            47 => IpProtocol::Gre,
            58 => IpProtocol::Icmpv6,
            other => IpProtocol::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(p: IpProtocol) -> u8 {
        match p {
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Gre => 47,
            IpProtocol::Icmpv6 => 58,
            IpProtocol::Unknown(v) => v,
        }
    }
}
