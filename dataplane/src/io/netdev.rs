//! Questions about network interfaces, asked by every layer that needs them
//! (port attach, the neighbour watcher, offload, the host check): one place,
//! so every caller gets the same answer and the same error.

use std::ffi::{CStr, CString};
use std::io;

/// The interface index of `ifname`.
pub fn ifindex(ifname: &str) -> io::Result<u32> {
    let c = CString::new(ifname).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i),
    }
}

/// The name of interface `index`, if it exists.
pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    Some(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

/// Number of RX queues of an interface, from sysfs (1 if it cannot tell).
pub fn rx_queues(ifname: &str) -> usize {
    std::fs::read_dir(format!("/sys/class/net/{ifname}/queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count()
        })
        .unwrap_or(1)
        .max(1)
}

/// The interface's MAC address, from sysfs.
pub fn mac_address(ifname: &str) -> io::Result<[u8; 6]> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))?;
    parse_mac(s.trim())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad address {s:?}")))
}

/// The name of the interface's driver ("veth", "mlx5_core", ...), as
/// `ethtool -i` reports it (SIOCETHTOOL, ETHTOOL_GDRVINFO).
pub fn driver(ifname: &str) -> io::Result<String> {
    const ETHTOOL_GDRVINFO: u32 = 3;
    // struct ethtool_drvinfo: cmd, then driver[32], version[32], ... (196
    // bytes in all; only the driver's name is read).
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 160],
    }
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IF_NAMESIZE {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let mut info = DrvInfo { cmd: ETHTOOL_GDRVINFO, driver: [0; 32], rest: [0; 160] };
    // SAFETY: ifreq is plain data, valid when zeroed.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in req.ifr_name.iter_mut().zip(name) {
        *d = *b as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    let s = super::sys::socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    // SAFETY: SIOCETHTOOL with a NUL-terminated name and ifru_data pointing
    // at a live, large enough ethtool_drvinfo whose cmd says what to fill.
    if unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&s), libc::SIOCETHTOOL, &mut req) } < 0
    {
        return Err(io::Error::last_os_error());
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(info.driver.len());
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// The interface's MTU, from sysfs.
pub fn mtu(ifname: &str) -> io::Result<u32> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{ifname}/mtu"))?;
    s.trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad mtu {s:?}")))
}

/// What an interface's driver does with XDP (the netdev generic-netlink
/// family's `xdp-features`, `NETDEV_XDP_ACT_*` bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpFeatures(pub u64);

impl XdpFeatures {
    /// `NETDEV_XDP_ACT_NDO_XMIT`: the driver takes frames other interfaces'
    /// XDP programs redirect to it. A veth advertises it only while its peer
    /// runs an XDP program or has GRO on (its receive side then has NAPI).
    pub const NDO_XMIT: u64 = 1 << 2;

    pub fn takes_redirects(self) -> bool {
        self.0 & Self::NDO_XMIT != 0
    }
}

/// The XDP features of interface `index`, asked of the kernel's `netdev`
/// generic-netlink family (Linux 6.3 and later).
pub fn xdp_features(index: u32) -> io::Result<XdpFeatures> {
    const GENL_ID_CTRL: u16 = 0x10;
    const CTRL_CMD_GETFAMILY: u8 = 3;
    const CTRL_ATTR_FAMILY_ID: u16 = 1;
    const CTRL_ATTR_FAMILY_NAME: u16 = 2;
    const NETDEV_CMD_DEV_GET: u8 = 1;
    const NETDEV_A_DEV_IFINDEX: u16 = 1;
    const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;
    let s = super::sys::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_GENERIC)?;
    let family =
        genl_request(&s, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_NAME, b"netdev\0")?;
    let id = nl_attr(&family, CTRL_ATTR_FAMILY_ID)
        .filter(|a| a.len() >= 2)
        .map(|a| u16::from_ne_bytes([a[0], a[1]]))
        .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "no netdev netlink family"))?;
    let dev = genl_request(&s, id, NETDEV_CMD_DEV_GET, NETDEV_A_DEV_IFINDEX, &index.to_ne_bytes())?;
    nl_attr(&dev, NETDEV_A_DEV_XDP_FEATURES)
        .filter(|a| a.len() >= 8)
        .map(|a| XdpFeatures(u64::from_ne_bytes(a[..8].try_into().unwrap())))
        .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "no xdp-features attribute"))
}

/// Sends a generic-netlink request with one attribute and returns the
/// attributes of the answer.
fn genl_request(
    s: &std::os::fd::OwnedFd,
    family: u16,
    cmd: u8,
    attr: u16,
    value: &[u8],
) -> io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    const NLM_F_REQUEST: u16 = 1;
    const NLMSG_ERROR: u16 = 2;
    let alen = 4 + value.len();
    let len = 16 + 4 + ((alen + 3) & !3);
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&family.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    m.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel fills it in
    m.extend_from_slice(&[cmd, 1, 0, 0]); // genlmsghdr: command, version
    m.extend_from_slice(&(alen as u16).to_ne_bytes());
    m.extend_from_slice(&attr.to_ne_bytes());
    m.extend_from_slice(value);
    m.resize(len, 0);
    // SAFETY: `m` is a valid buffer of the given length.
    if unsafe { libc::send(s.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 8192];
    // SAFETY: `buf` is writable for its whole length.
    let n = unsafe { libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let b = &buf[..n as usize];
    if b.len() < 20 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "short netlink answer"));
    }
    if u16::from_ne_bytes([b[4], b[5]]) == NLMSG_ERROR {
        let errno = i32::from_ne_bytes([b[16], b[17], b[18], b[19]]);
        return Err(io::Error::from_raw_os_error(-errno));
    }
    let len = (u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize).min(b.len());
    Ok(b[20..len].to_vec())
}

/// The payload of attribute `ty` in a run of netlink attributes.
fn nl_attr(mut b: &[u8], ty: u16) -> Option<&[u8]> {
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let t = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        if t == ty {
            return Some(&b[4..len]);
        }
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    None
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for o in m.iter_mut() {
        *o = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_both_ways() {
        let i = ifindex("lo").unwrap();
        assert_eq!(ifname(i).as_deref(), Some("lo"));
        assert!(ifindex("no-such-if0").is_err());
        assert!(ifindex("bad\0name").is_err());
    }

    #[test]
    fn mac_addresses_parse_exactly() {
        assert_eq!(parse_mac("02:00:00:00:00:0a"), Some([2, 0, 0, 0, 0, 10]));
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(parse_mac("02:00:00:00:00:0a:0b"), None);
        assert_eq!(parse_mac("zz:00:00:00:00:0a"), None);
        assert_eq!(mac_address("lo").unwrap(), [0; 6]);
        assert!(mtu("lo").unwrap() >= 1280);
        assert!(mtu("no-such-if0").is_err());
    }

    #[test]
    fn loopback_takes_no_redirected_frames() {
        let f = xdp_features(ifindex("lo").unwrap()).unwrap();
        assert!(!f.takes_redirects(), "{f:?}");
        assert!(xdp_features(0x7fff_fff0).is_err(), "no such interface");
    }
}
