//! A small rtnetlink layer: building requests attribute by attribute, and
//! one blocking NETLINK_ROUTE socket that sends a request and collects the
//! answer up to its acknowledgement.
//!
//! Encoding is done by hand rather than through `netlink-packet-route` so
//! that every byte is under our control: the tests compare our requests
//! with the ones iproute2 sends, byte for byte (docs/decisions.md). Padding
//! bytes are zero, as in iproute2's zeroed request buffers.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

pub const NLM_F_REQUEST: u16 = 0x01;
pub const NLM_F_ACK: u16 = 0x04;
pub const NLM_F_ECHO: u16 = 0x08;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLA_F_NESTED: u16 = 0x8000;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const RTM_NEWLINK: u16 = 16;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_NEWQDISC: u16 = 36;
pub const RTM_NEWTFILTER: u16 = 44;
pub const RTM_DELTFILTER: u16 = 45;
pub const RTM_GETTFILTER: u16 = 46;

pub const HEADER_LEN: usize = 16;

/// A request being built: the netlink header, a fixed family header, then
/// attributes (nested ones through `begin`/`end`).
pub struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    /// `nlmsg_pid` is 0: the kernel fills in the sender.
    pub fn new(ty: u16, flags: u16, seq: u32) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        Msg { buf }
    }

    /// Raw bytes (the family header).
    pub fn put(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    pub fn attr(&mut self, ty: u16, data: &[u8]) {
        self.buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    pub fn u8(&mut self, ty: u16, v: u8) {
        self.attr(ty, &[v]);
    }

    pub fn u16(&mut self, ty: u16, v: u16) {
        self.attr(ty, &v.to_ne_bytes());
    }

    pub fn u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_ne_bytes());
    }

    pub fn be16(&mut self, ty: u16, v: u16) {
        self.attr(ty, &v.to_be_bytes());
    }

    pub fn be32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    /// A NUL-terminated string.
    pub fn str(&mut self, ty: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(ty, &v);
    }

    /// Opens a nested attribute; `end` closes it. `ty` carries NLA_F_NESTED
    /// only where iproute2 sets it.
    pub fn begin(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        at
    }

    pub fn end(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    pub fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// The message type of an encoded message.
pub fn msg_type(m: &[u8]) -> u16 {
    u16::from_ne_bytes([m[4], m[5]])
}

pub fn msg_flags(m: &[u8]) -> u16 {
    u16::from_ne_bytes([m[6], m[7]])
}

/// Iterates over the attributes in `b`: (type without flags, payload).
/// Stops at the first malformed one.
pub fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[((len + 3) & !3).min(b.len())..];
        Some((ty, payload))
    })
}

/// The first attribute of type `ty` in `b`.
pub fn find(b: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(b).find(|(t, _)| *t == ty).map(|(_, p)| p)
}

/// A refusal from the kernel (or a failure to talk to it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NlError {
    /// The errno, when the kernel answered with one.
    pub errno: Option<i32>,
    /// strerror, plus the kernel's extended acknowledgement text if any.
    pub message: String,
}

impl NlError {
    pub fn io(e: io::Error) -> NlError {
        NlError { errno: e.raw_os_error(), message: e.to_string() }
    }

    fn from_errno(errno: i32, ext: Option<String>) -> NlError {
        let base = io::Error::from_raw_os_error(errno).to_string();
        let message = match ext {
            Some(t) if !t.is_empty() => format!("{base}: {t}"),
            _ => base,
        };
        NlError { errno: Some(errno), message }
    }
}

/// One NETLINK_ROUTE socket, used for one request at a time.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;

impl Socket {
    pub fn open() -> io::Result<Socket> {
        // SAFETY: plain system call with constant arguments; the result is
        // checked before it is used as a descriptor.
        let fd = unsafe {
            libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        for opt in [NETLINK_EXT_ACK, NETLINK_CAP_ACK] {
            // SAFETY: `one` outlives the call and its size is passed. Failure
            // only loses the kernel's explanatory text, so it is ignored.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    SOL_NETLINK,
                    opt,
                    &one as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        let tv = libc::timeval { tv_sec: Duration::from_secs(5).as_secs() as _, tv_usec: 0 };
        // SAFETY: as above, with a timeval. A kernel that never answers then
        // gives EAGAIN instead of blocking the control path for ever.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        // SAFETY: sockaddr_nl is plain data; all zero means "kernel assigns
        // the port id, no multicast groups".
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `sa` is a valid sockaddr_nl and its size is passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs() as u32);
        Ok(Socket { fd, seq })
    }

    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `msg` (its sequence number is rewritten to this socket's next)
    /// and returns the data messages of the answer. With NLM_F_ACK, reading
    /// stops at the acknowledgement; without it, at the first answer.
    pub fn request(&mut self, mut msg: Vec<u8>) -> Result<Vec<Vec<u8>>, NlError> {
        let seq = self.next_seq();
        msg[8..12].copy_from_slice(&seq.to_ne_bytes());
        let ack = msg_flags(&msg) & NLM_F_ACK != 0;
        // SAFETY: `msg` is a valid buffer of the given length; the kernel
        // address is the default (zeroed sockaddr) of a connected-less send.
        let rc = unsafe {
            libc::send(self.fd.as_raw_fd(), msg.as_ptr() as *const libc::c_void, msg.len(), 0)
        };
        if rc < 0 {
            return Err(NlError::io(io::Error::last_os_error()));
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is writable for its whole length.
            let n = unsafe {
                libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0)
            };
            if n < 0 {
                return Err(NlError::io(io::Error::last_os_error()));
            }
            let mut b = &buf[..n as usize];
            while b.len() >= HEADER_LEN {
                let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
                if len < HEADER_LEN || len > b.len() {
                    break;
                }
                let m = &b[..len];
                b = &b[((len + 3) & !3).min(b.len())..];
                if u32::from_ne_bytes([m[8], m[9], m[10], m[11]]) != seq {
                    continue;
                }
                match msg_type(m) {
                    NLMSG_ERROR => {
                        let errno = i32::from_ne_bytes([m[16], m[17], m[18], m[19]]);
                        if errno == 0 {
                            return Ok(out);
                        }
                        return Err(NlError::from_errno(-errno, ext_ack(m)));
                    }
                    NLMSG_DONE => return Ok(out),
                    _ => {
                        out.push(m.to_vec());
                        if !ack {
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }
}

/// The kernel's explanation in an error message (NETLINK_EXT_ACK), if any.
fn ext_ack(m: &[u8]) -> Option<String> {
    if msg_flags(m) & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    // error (4) + the original header (16; its payload is capped off).
    let tlvs = m.get(HEADER_LEN + 4 + HEADER_LEN..)?;
    let t = find(tlvs, NLMSGERR_ATTR_MSG)?;
    Some(String::from_utf8_lossy(t.split(|c| *c == 0).next().unwrap_or(t)).into_owned())
}

/// An interface that could not be found.
#[derive(Debug, thiserror::Error)]
#[error("no interface {name:?} ({source})")]
pub struct IfindexError {
    pub name: String,
    pub source: io::Error,
}

/// The interface index of `name`.
pub fn ifindex(name: &str) -> Result<u32, IfindexError> {
    crate::io::netdev::ifindex(name).map_err(|source| IfindexError { name: name.into(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nests_measured() {
        let mut m = Msg::new(RTM_NEWTFILTER, NLM_F_REQUEST, 7);
        m.put(&[0xaa; 4]);
        m.str(1, "flower");
        let n = m.begin(2 | NLA_F_NESTED);
        m.u8(3, 9);
        m.end(n);
        let b = m.finish();
        assert_eq!(b.len(), 16 + 4 + 12 + 4 + 8);
        assert_eq!(&b[0..4], &(b.len() as u32).to_ne_bytes());
        assert_eq!(&b[20..24], &[11, 0, 1, 0], "length counts the NUL, not the padding");
        assert_eq!(&b[31..32], &[0], "padding is zero");
        assert_eq!(&b[32..36], &[12, 0, 2, 0x80], "a nest spans its padded contents");
        let got: Vec<(u16, Vec<u8>)> = attrs(&b[20..]).map(|(t, p)| (t, p.to_vec())).collect();
        assert_eq!(got[0], (1, b"flower\0".to_vec()));
        assert_eq!(got[1].0, 2, "flags are masked off the type");
        assert_eq!(find(&got[1].1, 3), Some(&[9u8][..]));
    }

    #[test]
    fn truncated_attributes_end_the_walk() {
        assert_eq!(attrs(&[8, 0, 1, 0, 1, 2]).count(), 0);
        assert_eq!(attrs(&[2, 0, 1, 0]).count(), 0);
    }
}
