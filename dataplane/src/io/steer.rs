//! What of an interface's traffic is the dataplane's: the steering role of
//! a port, the decision for one frame, and its counts.
//!
//! The decision is taken by the XDP program (`dataplane/xdp/steer.bpf.c`) in
//! front of AF_XDP sockets, and by [`steer`], its Rust twin, on what an
//! AF_PACKET socket received. The two must agree frame for frame: the tests
//! here hold the twin to the program's rule.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What an interface's traffic is to the dataplane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SteerRole {
    /// Everything received belongs to the dataplane.
    Workload,
    /// Only tunnel packets addressed to a local VTEP do.
    Uplink { vteps: Vec<IpAddr>, vxlan_ports: Vec<u16>, gre: bool },
}

/// The program's own counters, summed over CPUs: what it redirected to the
/// dataplane and why it passed the rest to the kernel.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct SteerStats {
    pub redirected: u64,
    pub pass_not_ip: u64,
    pub pass_not_tunnel: u64,
    pub pass_not_local_vtep: u64,
    pub pass_no_socket: u64,
    pub pass_fragment: u64,
}

impl SteerStats {
    /// Frames passed to the kernel, for every reason.
    pub fn passed(&self) -> u64 {
        self.pass_not_ip
            + self.pass_not_tunnel
            + self.pass_not_local_vtep
            + self.pass_no_socket
            + self.pass_fragment
    }
}

impl std::ops::Add for SteerStats {
    type Output = SteerStats;

    fn add(self, o: SteerStats) -> SteerStats {
        SteerStats {
            redirected: self.redirected + o.redirected,
            pass_not_ip: self.pass_not_ip + o.pass_not_ip,
            pass_not_tunnel: self.pass_not_tunnel + o.pass_not_tunnel,
            pass_not_local_vtep: self.pass_not_local_vtep + o.pass_not_local_vtep,
            pass_no_socket: self.pass_no_socket + o.pass_no_socket,
            pass_fragment: self.pass_fragment + o.pass_fragment,
        }
    }
}

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
            let Some((nh, at)) = ipv6_upper(frame, ip[6], l3 + 40) else {
                return Steer::PassNotTunnel;
            };
            if nh != 17 && nh != 47 {
                return Steer::PassNotTunnel;
            }
            let dst = IpAddr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap());
            if !vteps.contains(&dst) {
                return Steer::PassNotLocalVtep;
            }
            l4(nh, frame.get(at..).unwrap_or_default())
        }
        _ => Steer::PassNotIp,
    }
}

/// The program's `ipv6_upper`: the protocol after at most four Hop-by-Hop,
/// Destination Options and Routing headers from `at`, and where its header
/// starts; `None` if the frame ends inside them. The engine acts on options
/// (RFC 8200) and names a Routing header's drop, so a tunnel packet behind
/// them is the dataplane's; a fragment, ESP or AH ends the walk (the host's).
fn ipv6_upper(frame: &[u8], mut nh: u8, mut at: usize) -> Option<(u8, usize)> {
    for _ in 0..4 {
        if !matches!(nh, 0 | 60 | 43) {
            break;
        }
        let x = frame.get(at..at + 2)?;
        nh = x[0];
        at += (x[1] as usize + 1) * 8;
    }
    Some((nh, at))
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
