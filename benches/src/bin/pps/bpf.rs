//! The generator and the sink: the two XDP programs of `pps/bpf/`, loaded
//! with aya. Attachments are BPF links owned by these values, so dropping
//! them (or the process dying) detaches the programs.

use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use aya::maps::{Array, CpuMap, DevMap, MapData, PerCpuArray, PerCpuValues};
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;

use crate::frames;
use crate::sys;

static GEN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/gen.bpf.o"));
static SINK: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sink.bpf.o"));

fn err(what: &str) -> impl Fn(String) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn load_xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp, String> {
    let p: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("no program {name}"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    p.load().map_err(|e| format!("loading {name}: {e}"))?;
    Ok(p)
}

/// Attaches program `name` of `ebpf` to `ifname` in namespace `ns`, native mode.
fn attach(ebpf: &mut Ebpf, name: &str, ns: &str, ifname: &str) -> Result<(), String> {
    let p = load_xdp(ebpf, name)?;
    sys::in_netns(ns, || p.attach(ifname, XdpMode::Driver))
        .map_err(|e| format!("entering {ns}: {e}"))?
        .map_err(|e| format!("attaching {name} to {ns}/{ifname}: {e}"))?;
    Ok(())
}

/// What the sink expects (the C `struct sink_cfg`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SinkCfg {
    pub mode: u32,
    pub vni: u32,
    pub outer_src: u32,
    pub outer_dst: u32,
    pub inner_dst: u32,
    pub inner_len: u32,
    pub udp_port: u32,
    pub sample_mask: u32,
}
// SAFETY: plain u32 fields with the C layout and no padding.
unsafe impl aya::Pod for SinkCfg {}

pub const MODE_VXLAN: u32 = 1;
pub const MODE_GRETAP: u32 = 2;
pub const MODE_PLAIN: u32 = 3;
pub const MODE_GENEVE: u32 = 4;

/// The sink's counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct SinkStats {
    pub received: u64,
    pub sampled: u64,
    pub ok: u64,
    pub bad_outer: u64,
    pub bad_tunnel: u64,
    pub bad_inner: u64,
    pub bad_length: u64,
}

impl SinkStats {
    pub fn since(&self, a: &SinkStats) -> SinkStats {
        SinkStats {
            received: self.received - a.received,
            sampled: self.sampled - a.sampled,
            ok: self.ok - a.ok,
            bad_outer: self.bad_outer - a.bad_outer,
            bad_tunnel: self.bad_tunnel - a.bad_tunnel,
            bad_inner: self.bad_inner - a.bad_inner,
            bad_length: self.bad_length - a.bad_length,
        }
    }
}

/// The C `struct sink_wrong`: the first wrong frame the sink saw.
#[repr(C)]
#[derive(Clone, Copy)]
struct SinkWrong {
    taken: u32,
    reason: u32,
    len: u32,
    pad: u32,
    bytes: [u8; 256],
}
// SAFETY: integers and bytes with the C layout, no padding.
unsafe impl aya::Pod for SinkWrong {}

/// A wrong frame the sink kept: why, its length, its first bytes.
#[derive(Clone, Debug)]
pub struct WrongFrame {
    pub reason: &'static str,
    pub len: u32,
    pub bytes: Vec<u8>,
}

impl std::fmt::Display for WrongFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: String = self.bytes.iter().map(|b| format!("{b:02x}")).collect();
        write!(f, "{} ({} bytes), first {} bytes: {hex}", self.reason, self.len, self.bytes.len())
    }
}

/// The counting and checking XDP program on the sink's interface.
pub struct Sink {
    cfg: Array<MapData, SinkCfg>,
    stats: PerCpuArray<MapData, u64>,
    wrong: Array<MapData, SinkWrong>,
    _ebpf: Ebpf,
}

impl Sink {
    pub fn attach(ns: &str, ifname: &str) -> Result<Sink, String> {
        let mut ebpf = Ebpf::load(SINK).map_err(|e| format!("loading the sink: {e}"))?;
        let cfg = Array::try_from(ebpf.take_map("pb_sink_cfg").ok_or("no map pb_sink_cfg")?)
            .map_err(|e| e.to_string())?;
        let stats =
            PerCpuArray::try_from(ebpf.take_map("pb_sink_stats").ok_or("no map pb_sink_stats")?)
                .map_err(|e| e.to_string())?;
        let wrong = Array::try_from(ebpf.take_map("pb_sink_wrong").ok_or("no map pb_sink_wrong")?)
            .map_err(|e| e.to_string())?;
        attach(&mut ebpf, "pb_sink", ns, ifname)?;
        Ok(Sink { cfg, stats, wrong, _ebpf: ebpf })
    }

    /// Sets what to expect, and forgets the last wrong frame kept.
    pub fn expect(&mut self, c: SinkCfg) -> Result<(), String> {
        let clear = SinkWrong { taken: 0, reason: 0, len: 0, pad: 0, bytes: [0; 256] };
        self.wrong
            .set(0, clear, 0)
            .map_err(|e| err("clearing the sink's wrong frame")(e.to_string()))?;
        self.cfg.set(0, c, 0).map_err(|e| err("setting the sink's expectations")(e.to_string()))
    }

    /// The first wrong frame since the last `expect`, if any.
    pub fn first_wrong(&self) -> Result<Option<WrongFrame>, String> {
        let w = self.wrong.get(&0, 0).map_err(|e| format!("reading the sink: {e}"))?;
        if w.taken == 0 {
            return Ok(None);
        }
        let reason = match w.reason {
            3 => "outer headers",
            4 => "tunnel header",
            5 => "inner frame",
            6 => "inner length",
            _ => "unknown",
        };
        // The program keeps the frame's first 256 bytes, or all of a shorter one.
        let n = (w.len as usize).min(w.bytes.len());
        Ok(Some(WrongFrame { reason, len: w.len, bytes: w.bytes[..n].to_vec() }))
    }

    pub fn stats(&self) -> Result<SinkStats, String> {
        let get = |i: u32| -> Result<u64, String> {
            let v: PerCpuValues<u64> =
                self.stats.get(&i, 0).map_err(|e| format!("reading the sink: {e}"))?;
            Ok(v.iter().sum())
        };
        Ok(SinkStats {
            received: get(0)?,
            sampled: get(1)?,
            ok: get(2)?,
            bad_outer: get(3)?,
            bad_tunnel: get(4)?,
            bad_inner: get(5)?,
            bad_length: get(6)?,
        })
    }
}

/// An XDP forwarder on the device under test, d0 -> d1 through a devmap, as
/// an XDP tier sends: the null one, or the fixed-header encapsulation.
pub struct XdpFwd {
    _ebpf: Ebpf,
}

impl XdpFwd {
    /// Every frame arriving on `input` redirected unchanged out of `output`.
    pub fn null(ns: &str, input: &str, output: &str, via: Via) -> Result<XdpFwd, String> {
        let mut ebpf = via.load().map_err(|e| format!("loading pb_null: {e}"))?;
        forward(&mut ebpf, "pb_null", ns, input, output, via)?;
        Ok(XdpFwd { _ebpf: ebpf })
    }

    /// The least an XDP VXLAN encapsulation does: `header` (an outer
    /// Ethernet, IPv4, UDP and VXLAN header whose IPv4 total length and
    /// checksum, UDP source port and length are zero) put in front of every
    /// frame arriving on `input`, those fields patched, and the frame
    /// redirected out of `output`.
    pub fn encap(
        ns: &str,
        input: &str,
        output: &str,
        header: [u8; 50],
        via: Via,
    ) -> Result<XdpFwd, String> {
        let mut ebpf = via.load().map_err(|e| format!("loading pb_encap: {e}"))?;
        // The folded sum of the IPv4 header's words as given (total length
        // and checksum zero), the complement of its checksum: the program
        // adds the length.
        let ip_sum = u32::from(!frames::ipv4_checksum(&header[14..34]));
        let mut hdr = EncapHdr { b: [0; 56], ip_sum, pad: 0 };
        hdr.b[..50].copy_from_slice(&header);
        Array::try_from(ebpf.map_mut("pb_encap_hdr").ok_or("no map pb_encap_hdr")?)
            .map_err(|e| e.to_string())?
            .set(0, hdr, 0)
            .map_err(|e| format!("pb_encap_hdr: {e}"))?;
        forward(&mut ebpf, "pb_encap", ns, input, output, via)?;
        Ok(XdpFwd { _ebpf: ebpf })
    }
}

/// The C `struct encap_hdr`.
#[repr(C)]
#[derive(Clone, Copy)]
struct EncapHdr {
    b: [u8; 56],
    ip_sum: u32,
    pad: u32,
}
// SAFETY: plain bytes and u32s with the C layout and no padding.
unsafe impl aya::Pod for EncapHdr {}

/// Where an XDP forwarder redirects its frames out of the output port.
#[derive(Clone, Copy, Debug)]
pub enum Via {
    /// On the input veth's CPU, in its receive path (an XDP tier's way).
    InPlace,
    /// The forwarder's work on the input veth's CPU, then each frame through
    /// a cpumap to this CPU, where `pb_out` redirects it (the transmit and
    /// the sink's receive leave the input's CPU, as a userspace device's
    /// do when its packet thread sends from its own CPU).
    Cpumap(u32),
}

impl Via {
    fn load(self) -> Result<Ebpf, aya::EbpfError> {
        let cpu = match self {
            Via::InPlace => 0,
            Via::Cpumap(cpu) => cpu,
        };
        aya::EbpfLoader::new().override_global("pb_out_cpu", &cpu, true).load(SINK)
    }
}

/// Points `ebpf`'s devmap at `output` and attaches its program `name` (or,
/// through a cpumap, `name`_hop) to `input`, both in namespace `ns`.
fn forward(
    ebpf: &mut Ebpf,
    name: &str,
    ns: &str,
    input: &str,
    output: &str,
    via: Via,
) -> Result<(), String> {
    let mut tx = DevMap::try_from(ebpf.map_mut("pb_null_tx").ok_or("no map pb_null_tx")?)
        .map_err(|e| e.to_string())?;
    // The kernel resolves a devmap's interface index in the namespace of
    // whoever writes the entry: write it from inside `ns`.
    sys::in_netns(ns, || {
        let out = sys::ifindex(output).map_err(|e| format!("{ns}/{output}: {e}"))?;
        tx.set(0, out, None, 0).map_err(|e| format!("pb_null_tx: {e}"))
    })
    .map_err(|e| format!("entering {ns}: {e}"))??;
    let Via::Cpumap(cpu) = via else { return attach(ebpf, name, ns, input) };
    let out = load_xdp(ebpf, "pb_out")?.fd().map_err(|e| e.to_string())?;
    let out = out.try_clone().map_err(|e| format!("pb_out: {e}"))?;
    CpuMap::try_from(ebpf.map_mut("pb_cpu").ok_or("no map pb_cpu")?)
        .map_err(|e| e.to_string())?
        .set(cpu, CPUMAP_QUEUE, Some(&out), 0)
        .map_err(|e| format!("pb_cpu: {e}"))?;
    attach(ebpf, &format!("{name}_hop"), ns, input)
}

/// Frames a cpumap entry queues for its CPU (the kernel's ptr_ring; the
/// samples/bpf default).
const CPUMAP_QUEUE: u32 = 2048;

/// An XDP_PASS program on an interface (turns on a veth's NAPI path, which
/// frames sent with XDP_TX need to enter it).
pub struct Pass {
    _ebpf: Ebpf,
}

impl Pass {
    pub fn attach(ns: &str, ifname: &str) -> Result<Pass, String> {
        let mut ebpf = Ebpf::load(SINK).map_err(|e| format!("loading pb_pass: {e}"))?;
        attach(&mut ebpf, "pb_pass", ns, ifname)?;
        Ok(Pass { _ebpf: ebpf })
    }
}

/// The C `struct gen_cfg`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GenCfg {
    pub flows: u32,
    pub inner_ip: u32,
    pub outer_udp: u32,
}
// SAFETY: plain u32 fields with the C layout and no padding.
unsafe impl aya::Pod for GenCfg {}

/// The generator: one pre-built frame, turned into `flows` flows by the XDP
/// program and transmitted with XDP_TX through BPF_PROG_RUN live frames.
pub struct Gen {
    cfg: Array<MapData, GenCfg>,
    fd: i32,
    ebpf: Ebpf,
}

/// Frames per BPF_PROG_RUN call, and per transmission batch (the kernel's
/// largest live-frames batch is 256).
const REPEAT: u32 = 65_536;
pub const BATCH: u32 = 256;

impl Gen {
    pub fn load() -> Result<Gen, String> {
        let mut ebpf = Ebpf::load(GEN).map_err(|e| format!("loading the generator: {e}"))?;
        let cfg = Array::try_from(ebpf.take_map("pb_gen_cfg").ok_or("no map pb_gen_cfg")?)
            .map_err(|e| e.to_string())?;
        let p = load_xdp(&mut ebpf, "pb_gen")?;
        let fd = p.fd().map_err(|e| e.to_string())?.as_fd().as_raw_fd();
        Ok(Gen { cfg, fd, ebpf })
    }

    pub fn configure(&mut self, c: GenCfg) -> Result<(), String> {
        self.cfg.set(0, c, 0).map_err(|e| format!("configuring the generator: {e}"))
    }

    /// Sends `frame` out of `ifname` in namespace `ns` from a thread pinned
    /// to `cpu` for `secs` seconds (or until asked to stop); returns the
    /// frames sent and the time it took.
    pub fn run(
        &mut self,
        ns: &str,
        ifname: &str,
        cpu: usize,
        frame: &[u8],
        secs: f64,
    ) -> Result<(u64, Duration), String> {
        // Held in the kernel's XDP dispatcher for the whole run. Without an
        // attachment, every BPF_PROG_RUN call adds the program to the
        // dispatcher and takes it out again (bpf_dispatcher_change_prog),
        // waiting for an RCU grace period each time: on a VM whose grace
        // periods took 8-16 ms that idled the generator's CPU two thirds of
        // the time and capped every device at 1.6 Mpps (docs/benchmarks.md,
        // "the generator's wait"). The namespace's loopback carries nothing,
        // so the program never runs there.
        let p = self.program()?;
        let link = sys::in_netns(ns, || p.attach("lo", XdpMode::Skb))
            .map_err(|e| format!("entering {ns}: {e}"))?
            .map_err(|e| format!("attaching the generator to {ns}/lo: {e}"))?;
        let sent = self.flood(ns, ifname, cpu, frame, secs);
        self.program()?
            .detach(link)
            .map_err(|e| format!("detaching the generator from {ns}/lo: {e}"))?;
        sent
    }

    fn program(&mut self) -> Result<&mut Xdp, String> {
        self.ebpf
            .program_mut("pb_gen")
            .ok_or("no program pb_gen")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())
    }

    fn flood(
        &self,
        ns: &str,
        ifname: &str,
        cpu: usize,
        frame: &[u8],
        secs: f64,
    ) -> Result<(u64, Duration), String> {
        let (fd, ns, ifname, frame) = (self.fd, ns.to_string(), ifname.to_string(), frame.to_vec());
        let t = std::thread::spawn(move || -> Result<(u64, Duration), String> {
            sys::enter_netns(&ns).map_err(|e| format!("entering {ns}: {e}"))?;
            sys::pin_to(cpu);
            let ifindex = sys::ifindex(&ifname).map_err(|e| format!("{ns}/{ifname}: {e}"))?;
            let start = Instant::now();
            let end = start + Duration::from_secs_f64(secs);
            // bounded in time and in count (20 Mpps is far above this generator)
            let max = (secs * 20e6) as u64 + REPEAT as u64;
            let mut n = 0u64;
            while Instant::now() < end && n < max && !sys::stopping() {
                sys::xdp_live_run(fd, &frame, ifindex, REPEAT, BATCH)
                    .map_err(|e| format!("BPF_PROG_RUN (live frames): {e}"))?;
                n += REPEAT as u64;
            }
            Ok((n, start.elapsed()))
        });
        t.join().map_err(|_| "the generator thread panicked".to_string())?
    }
}
