//! TAP devices: one file descriptor per queue (`IFF_MULTI_QUEUE`), frames
//! prefixed with a virtio-net header (`IFF_VNET_HDR`), and the offloads the
//! workload may use negotiated with `TUNSETOFFLOAD`.
//!
//! `overlayd` creates the device if it does not exist (it then lives as long
//! as the daemon holds it) or attaches to a persistent one made with
//! `ip tuntap add mode tap [multi_queue] vnet_hdr`. The workload side is the
//! kernel interface: move it into the workload's namespace and bring it up.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

use super::virtio::HDR_LEN;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;

/// TUNSETOFFLOAD bits: what we accept from the workload.
pub const TUN_F_CSUM: u32 = 0x01;
pub const TUN_F_TSO4: u32 = 0x02;
pub const TUN_F_TSO6: u32 = 0x04;
pub const TUN_F_TSO_ECN: u32 = 0x08;
pub const TUN_F_USO4: u32 = 0x20;
pub const TUN_F_USO6: u32 = 0x40;

const NAMES: [(u32, &str); 6] = [
    (TUN_F_CSUM, "csum"),
    (TUN_F_TSO4, "tso4"),
    (TUN_F_TSO6, "tso6"),
    (TUN_F_TSO_ECN, "tso_ecn"),
    (TUN_F_USO4, "uso4"),
    (TUN_F_USO6, "uso6"),
];

/// The offloads a TAP port asked for and got: what is not enabled the
/// workload's own kernel does in software (it sees the feature off).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "TapOffloads")]
pub struct Offloads {
    pub enabled: Vec<String>,
    /// Asked for, refused by this kernel.
    pub refused: Vec<String>,
}

fn names(bits: u32) -> Vec<String> {
    NAMES.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| n.to_string()).collect()
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// One queue of a TAP device.
pub struct TapQueue {
    fd: OwnedFd,
}

impl TapQueue {
    /// Opens (creating if needed) queue fd of TAP `ifname`; `multi_queue`
    /// must match how a persistent device was made.
    pub fn open(ifname: &str, multi_queue: bool) -> io::Result<TapQueue> {
        if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"));
        }
        // SAFETY: a plain open(2) of a NUL-terminated path; checked below.
        let raw = unsafe {
            libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC)
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor we just opened and own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags: 0, _pad: [0; 22] };
        req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
        req.flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        if multi_queue {
            req.flags |= IFF_MULTI_QUEUE;
        }
        // SAFETY: TUNSETIFF reads and writes a struct ifreq, which IfReq
        // matches in size (40 bytes) and layout for the fields used.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let sz: libc::c_int = HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ, &sz) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(TapQueue { fd })
    }

    /// Asks for checksum offload, TSO and USO (or nothing if `want` is
    /// false), dropping what the kernel refuses: USO needs Linux 6.2.
    pub fn negotiate(&self, want: bool) -> Offloads {
        let wanted = if want {
            TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_USO4 | TUN_F_USO6
        } else {
            0
        };
        let tries = [wanted, wanted & !(TUN_F_USO4 | TUN_F_USO6), wanted & TUN_F_CSUM, 0];
        for bits in tries {
            // SAFETY: TUNSETOFFLOAD takes its argument by value.
            let r =
                unsafe { libc::ioctl(self.fd.as_raw_fd(), TUNSETOFFLOAD, bits as libc::c_ulong) };
            if r == 0 {
                return Offloads { enabled: names(bits), refused: names(wanted & !bits) };
            }
        }
        Offloads { enabled: Vec::new(), refused: names(wanted) }
    }

    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_is_the_kernels_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn names_of_offload_bits() {
        assert_eq!(names(TUN_F_CSUM | TUN_F_TSO6), ["csum", "tso6"]);
        assert!(names(0).is_empty());
    }
}
