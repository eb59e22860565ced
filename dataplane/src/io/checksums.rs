//! TCP and UDP checksums of frames received without their checksum state.
//!
//! XDP, and so AF_XDP, sees a bare frame: not the skb's CHECKSUM_PARTIAL
//! that a container's veth (checksum offload on by default) leaves on every
//! segment it sends, and a native XDP program on a veth has no way to ask
//! for it. [`encap::settle`] reads that state from the bytes; this module
//! applies it to what a queue just received, in the worker's packet memory:
//! a workload's frames are verified, finished if partial, or dropped with a
//! reason; an uplink's VXLAN packets have their one partial checksum, outer
//! or inner, finished ([`encap::settle::complete_partial_vxlan`]), and are
//! verified by decapsulation (outer, by its configuration) and on their way
//! out to a workload (inner, see `datapath`).
//!
//! Backends with a virtio-net header (TAP, packet sockets) are told the state
//! by the kernel and finish exactly what it names (`io::virtio`): they trust.

use engine::model::PortKind;

use super::{InputDrop, RxCtx, RxDesc};

/// What a receive queue does about the checksums of what it receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RxChecksums {
    /// The backend knows each frame's checksum state.
    #[default]
    Trust,
    /// A workload's frames: verify; finish partial checksums; drop the rest.
    Settle,
    /// An uplink's tunnel packets: finish a partial checksum, outer or inner.
    CompleteTunnelled,
}

impl RxChecksums {
    /// What a queue without checksum state does on a port of `kind`.
    pub fn for_bare_frames(kind: PortKind) -> RxChecksums {
        match kind {
            PortKind::Workload => RxChecksums::Settle,
            PortKind::Uplink => RxChecksums::CompleteTunnelled,
        }
    }
}

/// Settles the frames `out[from..]` that a queue just received into
/// `cx.mem`, as `mode` says. A frame that fails goes back to `cx.free` with
/// its reason in `cx.drops`, and leaves `out`. Returns how many partial
/// checksums it finished.
pub fn settle_received(
    mode: RxChecksums,
    cx: &mut RxCtx<'_>,
    out: &mut Vec<RxDesc>,
    from: usize,
) -> u64 {
    if mode == RxChecksums::Trust {
        return 0;
    }
    let mut completed = 0;
    let mut kept = from;
    for i in from..out.len() {
        let RxDesc { addr, len } = out[i];
        // SAFETY: the queue has just handed this frame over and nobody else
        // holds a reference to it until the worker queues or frees it.
        let (frame, off) = unsafe { cx.mem.frame(addr) };
        let data = &mut frame[off..off + len as usize];
        match mode {
            RxChecksums::Settle => match encap::settle(data) {
                Ok(encap::Settled::Completed) => completed += 1,
                Ok(_) => {}
                Err(reason) => {
                    cx.drops.push(InputDrop { reason, len });
                    cx.free.push(addr.base());
                    continue;
                }
            },
            RxChecksums::CompleteTunnelled => {
                completed += encap::settle::complete_partial_vxlan(data) as u64
            }
            RxChecksums::Trust => {}
        }
        out[kept] = out[i];
        kept += 1;
    }
    out.truncate(kept);
    completed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::memory::{FrameAddr, Umem, FRAME_SIZE, HEADROOM};
    use encap::DropReason;

    fn tcp(payload: &str) -> Vec<u8> {
        engine::packet_spec::build(&format!(
            "eth/ipv4(src=198.51.100.1,dst=198.51.100.2)/tcp(sport=40000,dport=5001)/hex(data={payload})"
        ))
        .unwrap()
    }

    /// The same Ethernet / IPv4 / TCP frame with its checksum left partial,
    /// as a sender with checksum offload hands it over.
    fn partial(valid: &[u8]) -> Vec<u8> {
        use encap::wire::checksum;
        let mut f = valid.to_vec();
        let len = (f.len() - 34) as u16;
        let (src, dst) = (f[26..30].try_into().unwrap(), f[30..34].try_into().unwrap());
        let seed = checksum::pseudo_v4(src, dst, 6, len);
        f[50..52].copy_from_slice(&checksum::fold(seed).to_be_bytes());
        f
    }

    /// Puts `frames` into frames of `mem` as an RX ring would hand them over.
    fn receive(mem: &Umem, frames: &[Vec<u8>]) -> Vec<RxDesc> {
        frames
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let addr = FrameAddr((i * FRAME_SIZE + HEADROOM) as u64);
                // SAFETY: a fresh UMEM; each test frame gets a frame of its own.
                let (frame, off) = unsafe { mem.frame(addr) };
                frame[off..off + f.len()].copy_from_slice(f);
                RxDesc { addr, len: f.len() as u32 }
            })
            .collect()
    }

    fn data(mem: &Umem, RxDesc { addr, len }: RxDesc) -> Vec<u8> {
        // SAFETY: as in `receive`; the slice is copied out at once.
        let (frame, off) = unsafe { mem.frame(addr) };
        frame[off..off + len as usize].to_vec()
    }

    #[test]
    fn a_workload_port_finishes_partials_and_drops_corrupt_frames() {
        let mem = Umem::new(8).unwrap();
        let good = tcp("6f7665726c6179");
        let mut corrupt = good.clone();
        *corrupt.last_mut().unwrap() ^= 1;
        let arp = engine::packet_spec::build("eth(type=0x0806)/hex(data=0001)").unwrap();
        let got = [good.clone(), partial(&good), corrupt.clone(), arp.clone()];
        let earlier = RxDesc { addr: FrameAddr(7), len: 7 };
        let mut out = vec![earlier]; // an earlier queue's frame: not touched
        out.extend(receive(&mem, &got));
        let (mut free, mut drops) = (Vec::new(), Vec::new());
        let mut cx = RxCtx { mem: &mem, free: &mut free, drops: &mut drops, max_ip: 1500 };
        let done = settle_received(RxChecksums::Settle, &mut cx, &mut out, 1);
        assert_eq!(done, 1);
        assert_eq!(out.len(), 4);
        assert_eq!(out[0], earlier);
        assert_eq!(data(&mem, out[1]), good);
        assert_eq!(data(&mem, out[2]), good, "the partial checksum was finished");
        assert_eq!(data(&mem, out[3]), arp);
        let drop = InputDrop { reason: DropReason::L4ChecksumBad, len: corrupt.len() as u32 };
        assert_eq!(drops, [drop]);
        assert_eq!(free, [FrameAddr(2 * FRAME_SIZE as u64)], "the corrupt frame went back, whole");
    }

    #[test]
    fn an_uplink_finishes_partials_and_leaves_the_rest_to_decapsulation() {
        let mem = Umem::new(4).unwrap();
        let good = engine::packet_spec::build(
            "eth/ipv6(src=2001:db8::2,dst=2001:db8::1)/udp(dport=4789,csum=auto)/vxlan(vni=42)/eth/ipv4(src=198.51.100.2,dst=198.51.100.1)/tcp(sport=5001,dport=40000)/hex(data=00)",
        )
        .unwrap();
        // The inner checksum left partial, the outer one computed for it
        // finished (local checksum offload): what a Linux VTEP sends.
        let inner = 14 + 40 + 8 + 8;
        let mut lco = good.clone();
        lco[inner..].copy_from_slice(&partial(&good[inner..]));
        let mut corrupt = good.clone();
        *corrupt.last_mut().unwrap() ^= 1;
        let mut out = receive(&mem, &[lco, corrupt.clone()]);
        let (mut free, mut drops) = (Vec::new(), Vec::new());
        let mut cx = RxCtx { mem: &mem, free: &mut free, drops: &mut drops, max_ip: 1500 };
        assert_eq!(settle_received(RxChecksums::CompleteTunnelled, &mut cx, &mut out, 0), 1);
        assert_eq!(out.len(), 2);
        assert_eq!(data(&mem, out[0]), good);
        assert_eq!(data(&mem, out[1]), corrupt);
        assert!(drops.is_empty() && free.is_empty());
        let before = out.clone();
        let mut cx = RxCtx { mem: &mem, free: &mut free, drops: &mut drops, max_ip: 1500 };
        assert_eq!(settle_received(RxChecksums::Trust, &mut cx, &mut out, 0), 0);
        assert_eq!(out, before);
    }
}
