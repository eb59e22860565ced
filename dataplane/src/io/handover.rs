//! Passing descriptors to another process over a Unix stream socket
//! (`SCM_RIGHTS`, through `nix`): what a planned upgrade hands the next
//! overlayd (upgrade.rs). A message is a 4-byte length and a body; the
//! descriptors ride on the length, so the receiver gets them with the first
//! `recvmsg` of the message.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// The kernel's limit on descriptors in one message (SCM_MAX_FD).
pub const MAX_FDS: usize = 253;
/// Largest body accepted: a bound on what a confused peer makes us allocate.
const MAX_BODY: usize = 64 << 20;

/// Sends `body` with `fds` (at most [`MAX_FDS`]).
pub fn send(sock: &mut UnixStream, body: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} descriptors: one message carries at most {MAX_FDS}", fds.len()),
        ));
    }
    let len = (body.len() as u32).to_be_bytes();
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs = if raw.is_empty() { vec![] } else { vec![ControlMessage::ScmRights(&raw)] };
    let sent =
        sendmsg::<()>(sock.as_raw_fd(), &[IoSlice::new(&len)], &cmsgs, MsgFlags::empty(), None)
            .map_err(io::Error::from)?;
    if sent < len.len() {
        // The descriptors went with the first bytes; the rest follows.
        sock.write_all(&len[sent..])?;
    }
    sock.write_all(body)
}

/// Receives one message: its body and the descriptors sent with it.
pub fn recv(sock: &mut UnixStream) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut len = [0u8; 4];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (got, fds) = {
        let mut iov = [IoSliceMut::new(&mut len)];
        let m =
            recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
                .map_err(io::Error::from)?;
        let mut fds = Vec::new();
        for c in m.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(v) = c {
                // SAFETY: SCM_RIGHTS just installed these descriptors in
                // this process; nothing else owns them.
                fds.extend(v.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        (m.bytes, fds)
    };
    if got == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed the connection"));
    }
    sock.read_exact(&mut len[got..])?;
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_BODY {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a {n}-byte message")));
    }
    let mut body = vec![0u8; n];
    sock.read_exact(&mut body)?;
    Ok((body, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_message_carries_its_descriptors() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let (r, mut w) = UnixStream::pair().unwrap();
        send(&mut a, b"hello", &[r.as_fd()]).unwrap();
        send(&mut a, b"", &[]).unwrap();
        let (body, fds) = recv(&mut b).unwrap();
        assert_eq!((body.as_slice(), fds.len()), (&b"hello"[..], 1));
        // The descriptor received is the same socket: what is written to its
        // peer arrives on it.
        w.write_all(b"x").unwrap();
        let mut got = UnixStream::from(fds.into_iter().next().unwrap());
        let mut one = [0u8; 1];
        got.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"x");
        let (body, fds) = recv(&mut b).unwrap();
        assert!(body.is_empty() && fds.is_empty());
        drop(a);
        assert_eq!(recv(&mut b).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
