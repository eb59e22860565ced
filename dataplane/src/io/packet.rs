//! AF_PACKET sockets: the way to own an interface where AF_XDP is not
//! available. Unlike XDP, a packet socket gets a copy and the kernel keeps
//! the original, so on an uplink:
//!
//! - the socket takes only what the steering rules give the dataplane
//!   ([`steer`], the same decision as the XDP program), and leaves the rest
//!   (ARP, SSH, the host's own traffic) uncounted to the kernel, which has it
//!   anyway;
//! - a [`KernelSink`] holds the tunnel's UDP port and the GRE protocol on
//!   each local VTEP with sockets that discard everything, so the kernel does
//!   not answer our tunnel packets with ICMP "port unreachable".
//!
//! Several workers share an interface through a fanout group that spreads
//! flows by hash, which is what "queues" means for this backend.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::virtio::HDR_LEN;
use super::xdp::{SteerRole, SteerStats};

const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_FANOUT: libc::c_int = 18;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_FANOUT_HASH: u32 = 0;
const ETH_P_ALL: u16 = 0x0003;

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a valid pointer to an int and its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Opens a packet socket on `ifindex` with a virtio-net header on every
/// frame both ways (so partial checksums and GRO super-frames are described
/// to us), ignoring our own transmissions. `fanout` joins group `id` when
/// the interface is shared by several workers.
pub fn open(ifindex: u32, fanout: Option<u16>) -> io::Result<OwnedFd> {
    // Protocol 0 receives nothing until bind: no frame of another interface
    // slips in between socket() and bind().
    // SAFETY: plain socket(2); the result is checked.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
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

/// Bytes in front of every frame on a packet socket opened by [`open`].
pub const PREFIX: usize = HDR_LEN;

/// What the steering decision says of one received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steer {
    Ours,
    PassNotIp,
    PassNotTunnel,
    PassNotLocalVtep,
    PassFragment,
}

impl Steer {
    pub fn count(self, s: &mut SteerStats) {
        match self {
            Steer::Ours => s.redirected += 1,
            Steer::PassNotIp => s.pass_not_ip += 1,
            Steer::PassNotTunnel => s.pass_not_tunnel += 1,
            Steer::PassNotLocalVtep => s.pass_not_local_vtep += 1,
            Steer::PassFragment => s.pass_fragment += 1,
        }
    }
}

/// The XDP program's decision (`dataplane/xdp/steer.bpf.c`), for frames a
/// packet socket received: whether `frame` belongs to the dataplane.
pub fn steer(frame: &[u8], role: &SteerRole) -> Steer {
    let SteerRole::Uplink { vteps, vxlan_ports, gre } = role else { return Steer::Ours };
    let l4 = |proto: u8, l4: &[u8]| match proto {
        47 if *gre => Steer::Ours,
        17 if l4.len() >= 4 && vxlan_ports.contains(&u16::from_be_bytes([l4[2], l4[3]])) => {
            Steer::Ours
        }
        _ => Steer::PassNotTunnel,
    };
    let Ok(l2) = encap::wire::l2::walk_with(frame, encap::wire::l2::TagRule::XdpSteer) else {
        return Steer::PassNotIp;
    };
    let (et, l3) = (l2.ethertype, l2.l3_offset);
    match et {
        0x0800 => {
            let Some(ip) = frame.get(l3..l3 + 20) else { return Steer::PassNotIp };
            if ip[9] != 17 && ip[9] != 47 {
                return Steer::PassNotTunnel;
            }
            let dst = IpAddr::from(<[u8; 4]>::try_from(&ip[16..20]).unwrap());
            if !vteps.contains(&dst) {
                return Steer::PassNotLocalVtep;
            }
            if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
                return Steer::PassFragment;
            }
            let ihl = (ip[0] & 0x0f) as usize * 4;
            match frame.get(l3 + ihl..) {
                Some(rest) if ihl >= 20 => l4(ip[9], rest),
                // Malformed but addressed to us: ours, to drop with a reason.
                _ => Steer::Ours,
            }
        }
        0x86dd => {
            let Some(ip) = frame.get(l3..l3 + 40) else { return Steer::PassNotIp };
            if ip[6] != 17 && ip[6] != 47 {
                return Steer::PassNotTunnel;
            }
            let dst = IpAddr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap());
            if !vteps.contains(&dst) {
                return Steer::PassNotLocalVtep;
            }
            l4(ip[6], &frame[l3 + 40..])
        }
        _ => Steer::PassNotIp,
    }
}

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

fn socket(fam: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked.
    let raw = unsafe { libc::socket(fam, ty | libc::SOCK_CLOEXEC, proto) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn uplink() -> SteerRole {
        SteerRole::Uplink {
            vteps: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
            vxlan_ports: vec![4789],
            gre: true,
        }
    }

    fn f(spec: &str) -> Vec<u8> {
        engine::packet_spec::build(spec).unwrap()
    }

    #[test]
    fn takes_what_the_xdp_program_takes() {
        let r = uplink();
        let cases = [
            ("eth/ipv4(src=192.0.2.2,dst=192.0.2.1)/udp(dport=4789)/vxlan(vni=1)/eth", Steer::Ours),
            ("eth/vlan(vid=3)/ipv4(src=192.0.2.2,dst=192.0.2.1)/udp(dport=4789)", Steer::Ours),
            ("eth/ipv4(src=192.0.2.2,dst=192.0.2.1)/gre(key=1)/eth", Steer::Ours),
            ("eth/ipv6(src=2001:db8::2,dst=2001:db8::1)/udp(dport=4789)", Steer::Ours),
            ("eth/ipv4(src=192.0.2.2,dst=192.0.2.1)/udp(dport=53)", Steer::PassNotTunnel),
            ("eth/ipv4(src=192.0.2.2,dst=192.0.2.1)/tcp(dport=22)", Steer::PassNotTunnel),
            ("eth/ipv4(src=192.0.2.2,dst=192.0.2.9)/udp(dport=4789)", Steer::PassNotLocalVtep),
            ("eth/ipv6(src=2001:db8::2,dst=2001:db8::9)/gre", Steer::PassNotLocalVtep),
            ("eth/arp(spa=192.0.2.2,tpa=192.0.2.1)", Steer::PassNotIp),
        ];
        for (spec, want) in cases {
            assert_eq!(steer(&f(spec), &r), want, "{spec}");
        }
        let mut frag = f("eth/ipv4(src=192.0.2.2,dst=192.0.2.1)/udp(dport=4789)");
        frag[20] = 0x00;
        frag[21] = 0x10; // fragment offset 16
        assert_eq!(steer(&frag, &r), Steer::PassFragment);
        assert_eq!(steer(&f("eth/tcp"), &SteerRole::Workload), Steer::Ours);
    }

    #[test]
    fn counts_under_the_xdp_programs_names() {
        let mut s = SteerStats::default();
        Steer::Ours.count(&mut s);
        Steer::PassNotLocalVtep.count(&mut s);
        assert_eq!((s.redirected, s.pass_not_local_vtep), (1, 1));
    }
}
