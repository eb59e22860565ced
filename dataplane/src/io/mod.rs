//! The I/O layer: moves batches of frames between the kernel (or a file) and
//! the engine, and holds no policy. One job per file:
//!
//! | file | job |
//! |---|---|
//! | `memory.rs` | a worker's packet memory ([`memory::Umem`]) and frame addresses |
//! | `netdev.rs` | interface queries: index, name, MAC address, queue count |
//! | `sys.rs` | socket options, sockets, poll, CPU pinning |
//! | `doorbell.rs` | eventfds that wake sleeping workers when the control plane changes something |
//! | `steer.rs` | what of an interface's traffic is ours (the XDP program's rule and its Rust twin) |
//! | `xdp.rs` | the XDP program (steering, and the fast tier in front of it) and its maps |
//! | `tier.rs` | the XDP fast tier's maps and their owner; the Rust twin of its key |
//! | `map_batch.rs` | batch reads of a per-CPU array map (the tier's counters) |
//! | `tc.rs` | the tc tier on workload ports: skbs with partial checksums and GSO, same entries |
//! | `afxdp.rs` | AF_XDP sockets and their rings |
//! | `af_packet.rs` | AF_PACKET sockets, and the kernel sink on uplinks |
//! | `tc_port.rs` | the TSO-keeping workload port and the tc uplink: tc ingress only, misses through a punt device |
//! | `tap.rs` | TAP devices |
//! | `uring.rs` | io_uring queues for AF_PACKET and TAP ports |
//! | `virtio.rs`, `gso.rs` | the virtio-net header: checksum completion, segmentation |
//! | `checksums.rs` | checksums of frames received without their state (AF_XDP) |
//! | `pcap.rs` | pcap and pcapng files read, classic pcap written (`replay`) |
//! | `pcapng.rs` | pcapng written: `replay` outputs and live captures |
//!
//! A worker drives every queue it serves through [`PortQueue`], whatever the
//! backend: frames live in the worker's packet memory, so a packet received
//! on one backend is sent on another without a copy, and the pipeline never
//! knows where a packet came from.

pub mod af_packet;
pub mod afxdp;
pub mod checksums;
pub mod doorbell;
pub mod gro;
pub mod gso;
pub mod handover;
pub mod map_batch;
pub mod memory;
pub mod netdev;
pub mod pcap;
pub mod pcapng;
pub mod pin;
pub mod steer;
pub mod sys;
pub mod tap;
pub mod tc;
pub mod tc_port;
pub mod tier;
pub mod uring;
pub mod virtio;
pub mod xdp;

use std::os::fd::RawFd;

use encap::DropReason;
use serde::{Deserialize, Serialize};

use memory::{FrameAddr, Umem};
use steer::SteerStats;

/// Most packets taken from one RX ring per batch (VPP's vector size).
pub const BATCH: usize = 256;

/// A received frame: where it is in packet memory and how long it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxDesc {
    pub addr: FrameAddr,
    pub len: u32,
}

/// A frame dropped before the pipeline saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputDrop {
    pub reason: DropReason,
    pub len: u32,
}

/// A frame the kernel failed to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxFailure {
    pub len: u32,
}

/// What a queue needs to turn what it received into frames of packet memory.
pub struct RxCtx<'a> {
    pub mem: &'a Umem,
    /// Free frames of `mem`, for backends that copy into them.
    pub free: &'a mut Vec<FrameAddr>,
    /// Frames dropped before the pipeline saw them.
    pub drops: &'a mut Vec<InputDrop>,
    /// Largest IP packet a segment may be (the smallest inner MTU).
    pub max_ip: usize,
}

/// One queue of one port, as a worker drives it.
pub trait PortQueue: Send {
    fn queue(&self) -> u32;
    /// The descriptor to wait on while idle.
    fn fd(&self) -> RawFd;
    /// Returns the frames the kernel is done sending to `free` (frame
    /// starts), and the ones it failed to send to `failed`.
    fn reclaim(&mut self, free: &mut Vec<FrameAddr>, failed: &mut Vec<TxFailure>);
    /// Gives the kernel frames to receive into, if this backend receives
    /// into packet memory directly.
    fn refill(&mut self, free: &mut Vec<FrameAddr>);
    /// Takes up to `max` received frames.
    fn recv(&mut self, cx: &mut RxCtx<'_>, out: &mut Vec<RxDesc>, max: usize) -> usize;
    /// Frames `send` can take now.
    fn tx_free(&mut self) -> usize;
    /// Queues one frame; false if there is no room. `settled`: the worker
    /// verified or completed its TCP/UDP checksum (`encap::settle`), so a
    /// backend may merge it with its flow's next segments (io/gro.rs).
    fn send(&mut self, mem: &Umem, addr: FrameAddr, len: u32, settled: bool) -> bool;
    /// Hands queued frames to the kernel.
    fn flush_tx(&mut self);
    /// True while frames are queued that the kernel has not taken.
    fn tx_pending(&mut self) -> bool;
    /// Frames handed over and not yet returned.
    fn outstanding(&mut self) -> usize;
    /// Called after a batch was taken, for backends that must be woken.
    fn after_rx(&mut self);
    fn stats(&self) -> QueueStats;
    /// Frames received and left to the kernel by steering in userspace
    /// (AF_PACKET uplinks): they reach no worker, yet their counts must
    /// still be published.
    fn passed(&self) -> u64 {
        0
    }
    /// True if the kernel moves frames to and from packet memory without a copy.
    fn zero_copy(&self) -> bool {
        false
    }
    /// The descriptors a successor needs to take this queue over (a
    /// planned upgrade), in the order its adoption takes them.
    fn handover_fds(&self) -> Vec<RawFd> {
        vec![self.fd()]
    }
    /// Before a handover: take nothing more from the kernel, so what it
    /// has not handed over yet stays in the socket for the successor.
    fn quiesce(&mut self) {}
    /// After [`quiesce`](Self::quiesce): true once nothing taken from the
    /// kernel waits for the engine and no send is in flight. Backends whose
    /// rings cross a handover as they are (AF_XDP) are always quiet.
    fn quiet(&mut self) -> bool {
        true
    }
}

/// A queue's statistics, as `status` shows them: the counts every backend
/// keeps, then what only some have.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct QueueStats {
    pub queue: u32,
    /// Frames this queue received and queued for transmission: which queue,
    /// and so which worker, carries the traffic.
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Partial TCP/UDP checksums finished on receive (the virtio-net header
    /// asked for it, or `io::checksums` found one on an AF_XDP queue).
    pub rx_checksums_completed: u64,
    /// AF_XDP: the kernel's ring statistics.
    #[serde(flatten)]
    pub rings: Option<RingStats>,
    /// io_uring: virtio-net offload work and ring events.
    #[serde(flatten)]
    pub offload: Option<OffloadStats>,
    /// AF_PACKET uplinks: the steering decision taken in software.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steering: Option<SteerStats>,
}

/// An AF_XDP socket's statistics kept by the kernel (`XDP_STATISTICS`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct RingStats {
    /// Received but dropped by the kernel (no fill-ring frame, or too large).
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    /// Dropped because the RX ring was full (the worker fell behind).
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty: u64,
    pub tx_ring_empty: u64,
}

/// What an io_uring queue did for the virtio-net header and its rings.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct OffloadStats {
    /// Super-frames cut into segments, and the segments they gave.
    pub rx_super_frames: u64,
    pub rx_segments: u64,
    /// Times the receive buffers ran out (the kernel queued meanwhile).
    pub rx_buffers_exhausted: u64,
    /// Frames delivered marked DATA_VALID.
    pub tx_data_valid: u64,
    /// Super-frames written from merged TCP segments (io/gro.rs), and the
    /// segments they carried.
    pub tx_super_frames: u64,
    pub tx_merged_segments: u64,
    pub tx_errors: u64,
}
