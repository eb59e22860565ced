//! AF_PACKET sockets: the way to own an interface where AF_XDP is not
//! available. Unlike XDP, a packet socket gets a copy and the kernel keeps
//! the original, so on an uplink:
//!
//! - the socket takes only what the steering rules give the dataplane
//!   ([`super::steer::steer`], the same decision as the XDP program), and
//!   leaves the rest (ARP, SSH, the host's own traffic) uncounted to the
//!   kernel, which has it anyway;
//! - a [`KernelSink`] holds the tunnel's UDP port and the GRE protocol on
//!   each local VTEP with sockets that discard everything, so the kernel does
//!   not answer our tunnel packets with ICMP "port unreachable".
//!
//! Several workers share an interface through a fanout group that spreads
//! flows by hash, which is what "queues" means for this backend.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use super::steer::SteerRole;
use super::sys::{setsockopt_int, socket};
use super::virtio::HDR_LEN;

const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_FANOUT: libc::c_int = 18;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_FANOUT_HASH: u32 = 0;
const ETH_P_ALL: u16 = 0x0003;

/// Opens a packet socket on `ifindex` with a virtio-net header on every
/// frame both ways (so partial checksums and GRO super-frames are described
/// to us), ignoring our own transmissions. `fanout` joins group `id` when
/// the interface is shared by several workers.
pub fn open(ifindex: u32, fanout: Option<u16>) -> io::Result<OwnedFd> {
    // Protocol 0 receives nothing until bind: no frame of another interface
    // slips in between socket() and bind().
    let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
    let f = fd.as_raw_fd();
    setsockopt_int(f, libc::SOL_PACKET, PACKET_VNET_HDR, 1)?;
    setsockopt_int(f, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
    // Room for a burst while a multishot receive is re-armed.
    let _ = setsockopt_int(f, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20);
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETH_P_ALL.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: binds to a fully initialised sockaddr_ll of the size given.
    let r = unsafe {
        libc::bind(
            f,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if let Some(id) = fanout {
        setsockopt_int(
            f,
            libc::SOL_PACKET,
            PACKET_FANOUT,
            (id as u32 | PACKET_FANOUT_HASH << 16) as i32,
        )?;
    }
    Ok(fd)
}

/// Opens a packet socket that only sends on `ifindex` (with a virtio-net
/// header, so a GSO super-frame goes out whole): bound with protocol 0, it
/// receives nothing. A TSO-keeping workload port (io/tc_port.rs) receives
/// on its punt device and sends with this on the workload's interface.
pub fn open_tx(ifindex: u32) -> io::Result<OwnedFd> {
    let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
    let f = fd.as_raw_fd();
    setsockopt_int(f, libc::SOL_PACKET, PACKET_VNET_HDR, 1)?;
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: binds to a fully initialised sockaddr_ll of the size given.
    let r = unsafe {
        libc::bind(
            f,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Bytes in front of every frame on a packet socket opened by [`open`].
pub const PREFIX: usize = HDR_LEN;

/// Sockets that hold the tunnel's UDP ports and the GRE protocol on the
/// local VTEPs and discard everything they receive (a classic BPF filter
/// returning 0), so the kernel, which also sees what our packet sockets
/// take, neither answers with ICMP unreachables nor delivers it elsewhere.
pub struct KernelSink {
    _fds: Vec<OwnedFd>,
}

impl KernelSink {
    pub fn bind(role: &SteerRole) -> io::Result<KernelSink> {
        let SteerRole::Uplink { vteps, vxlan_ports, gre } = role else {
            return Ok(KernelSink { _fds: Vec::new() });
        };
        let mut fds = Vec::new();
        for vtep in vteps {
            let fam = if vtep.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
            for port in vxlan_ports {
                let fd = socket(fam, libc::SOCK_DGRAM, 0)?;
                discard_all(&fd)?;
                bind_ip(&fd, SocketAddr::new(*vtep, *port)).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot hold UDP port {port} on {vtep} for the tunnel ({e}); is another VXLAN endpoint using it?"),
                    )
                })?;
                fds.push(fd);
            }
            if *gre {
                // A raw socket for protocol 47 tells the kernel someone takes
                // GRE, so it sends no "protocol unreachable".
                let fd = socket(fam, libc::SOCK_RAW, libc::IPPROTO_GRE)?;
                discard_all(&fd)?;
                bind_ip(&fd, SocketAddr::new(*vtep, 0))?;
                fds.push(fd);
            }
        }
        Ok(KernelSink { _fds: fds })
    }
}

fn discard_all(fd: &OwnedFd) -> io::Result<()> {
    let mut ret0 = [libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: 0 }]; // BPF_RET | BPF_K, 0
    let prog = libc::sock_fprog { len: 1, filter: ret0.as_mut_ptr() };
    // SAFETY: the kernel copies the one-instruction program during the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn bind_ip(fd: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    let _ = setsockopt_int(fd.as_raw_fd(), libc::SOL_IP, libc::IP_FREEBIND, 1);
    let r = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: binds to a fully initialised sockaddr_in of the size given.
            unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sin as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_in6 is plain data; zero is a valid start.
            let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as u16;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            // SAFETY: binds to a fully initialised sockaddr_in6 of the size given.
            unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sin6 as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
