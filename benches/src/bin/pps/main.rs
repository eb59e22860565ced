//! `pps`: the packets-per-second harness (issue 7). Measures overlayd and its
//! peers (Open vSwitch's AF_XDP userspace datapath, the kernel's VXLAN device
//! behind a bridge) on the same gen -> dut -> sink topology, with the same
//! generator and frames, in one run; writes JSON, markdown and an SVG plot.
//!
//! Run it through `benches/pps/run.sh [--quick|--full]` (root), which builds
//! overlayd and this binary first. See docs/benchmarks.md for the method.

mod bpf;
mod dut;
mod frames;
mod plan;
mod report;
mod soak;
mod sys;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;

use bpf::{Gen, GenCfg, SinkCfg, SinkStats};
use dut::{Dut, Env, Topology, DUT_CPU, GEN_CPU, NS_GEN};
use plan::{DutKind, Kind, Scenario};
use report::{Meta, Rep, Report, Row};

#[derive(Parser, Debug)]
#[command(about = "packets per second: overlayd next to Open vSwitch and the kernel")]
struct Args {
    /// The quick check (a few minutes): VXLAN encap of 64-byte frames at
    /// 1 flow/10 rules and 100,000 flows/10,000 rules, and VXLAN decap at 1
    /// flow/10 rules, 3 x 2 s per device.
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Every scenario: 3 tunnel directions x 2 frame sizes x 3 flow counts x
    /// 2 rule counts, 3 x 3 s per device (about 20 minutes).
    #[arg(long)]
    full: bool,
    /// Seconds per measurement (default: 2 quick, 3 full).
    #[arg(long)]
    secs: Option<f64>,
    /// Repetitions per device and scenario (default 3).
    #[arg(long)]
    reps: Option<usize>,
    /// Seconds of traffic before the measurements of a scenario (caches,
    /// Open vSwitch's flow set-up; default: 0.5 quick, 1 full).
    #[arg(long)]
    warmup: Option<f64>,
    /// Devices, comma-separated (overlayd-afxdp, overlayd-uring, ovs-afxdp, kernel).
    #[arg(long, value_delimiter = ',')]
    duts: Vec<String>,
    /// Scenario kinds, comma-separated (vxlan-encap, vxlan-decap, gretap-encap,
    /// geneve-encap).
    #[arg(long, value_delimiter = ',')]
    kinds: Vec<String>,
    /// Frame sizes in bytes, FCS included (64, 1400).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Flow counts (1, 1000, 100000).
    #[arg(long, value_delimiter = ',')]
    flows: Vec<u32>,
    /// Rule counts (10, 10000).
    #[arg(long, value_delimiter = ',')]
    rules: Vec<usize>,
    /// Where overlayd and overlayctl are (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Output directory for results.json, results.md and pps.svg.
    #[arg(long, default_value = "pps-out")]
    out: PathBuf,
    /// Also put the results into docs/: docs/pps/{results.json,pps.svg} and
    /// the section between the pps markers of docs/benchmarks.md.
    #[arg(long)]
    publish: Option<PathBuf>,
    /// Run the device's input veth receive path (NAPI) as a thread pinned to
    /// the device's CPU rather than in the generator CPU's softirq.
    #[arg(long)]
    napi_thread: bool,
    /// The reference XDP forwarders (xdp-null, xdp-encap) do their work on
    /// the input veth's CPU, then hand each frame through a cpumap to the
    /// device's CPU, which redirects it out (and so also runs the sink's
    /// receive): what an XDP tier that transmitted from a second CPU would
    /// reach. An experiment (docs/decisions.md), not the default.
    #[arg(long)]
    xdp_cpumap: bool,
    /// Soak instead of measuring: overlayd alone for this many seconds at the
    /// generator's maximum rate, 100,000 flows, 10,000 rules and a rule change
    /// every second, sampled every 10 s (memory, descriptors, threads,
    /// conservation, accepted changes). With --publish, the result replaces
    /// the soak section of docs/benchmarks.md.
    #[arg(long, value_name = "SECONDS", conflicts_with_all = ["quick", "full"])]
    soak: Option<u64>,
    /// Render an existing results.json again (no measurement).
    #[arg(long)]
    render: Option<PathBuf>,
}

fn main() {
    let a = Args::parse();
    if let Err(e) = run(a) {
        eprintln!("pps: {e}");
        dut::delete_namespaces();
        std::process::exit(1);
    }
}

fn list<T: Clone>(given: &[T], quick: &[T], full: &[T], is_full: bool) -> Vec<T> {
    if !given.is_empty() {
        given.to_vec()
    } else if is_full {
        full.to_vec()
    } else {
        quick.to_vec()
    }
}

/// CPU ticks (user + system) of a process, all its threads.
fn proc_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the command name (which is in parentheses)
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Softirq ticks of all CPUs (/proc/stat, first line, seventh number).
fn softirq_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    s.lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(7))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_mhz() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    s.lines().find(|l| l.starts_with("cpu MHz"))?.split(':').nth(1)?.trim().parse().ok()
}

pub(crate) fn sink_cfg(s: &Scenario, dut: DutKind) -> SinkCfg {
    let be = |a: [u8; 4]| u32::from_ne_bytes(a);
    SinkCfg {
        mode: match s.kind {
            // The null forwarder sends the generator's frames as they came.
            _ if dut == DutKind::XdpNull => bpf::MODE_PLAIN,
            Kind::VxlanEncap => bpf::MODE_VXLAN,
            Kind::GretapEncap => bpf::MODE_GRETAP,
            Kind::GeneveEncap => bpf::MODE_GENEVE,
            Kind::VxlanDecap => bpf::MODE_PLAIN,
        },
        vni: frames::VNI,
        outer_src: be(frames::DUT_IP),
        outer_dst: be(frames::SINK_IP),
        inner_dst: be(frames::INNER_DST),
        inner_len: (s.size - 4) as u32,
        udp_port: if s.kind == Kind::GeneveEncap {
            frames::GENEVE_PORT as u32
        } else {
            frames::VXLAN_PORT as u32
        },
        sample_mask: 63,
    }
}

struct Progress {
    start: Instant,
    done: usize,
    total: usize,
}

impl Progress {
    fn tick(&mut self, what: &str) {
        self.done += 1;
        let el = self.start.elapsed().as_secs_f64();
        let eta = el / self.done as f64 * (self.total - self.done) as f64;
        eprintln!("[{:>3}/{}] {:>5.0}s (about {:.0}s left) {what}", self.done, self.total, el, eta);
    }
}

/// Longest the tier is given to take a scenario's flows before it is measured.
const SETTLE_MAX: Duration = Duration::from_secs(30);

/// With the XDP tier, the first packet of every flow goes through AF_XDP
/// and the engine before the flow's entry is installed: with many flows the
/// start of a run measures that install phase, not the established flows
/// the tier is for. So the generator runs (in 1 s steps, after the warm-up)
/// until the tier's entries stop growing or cover 99 % of the flows, and
/// the time that took is reported beside the figures. Returns (seconds,
/// entries) when there was a tier to wait for.
fn settle_tier(
    dut: &Dut,
    env: &Env,
    gen: &mut Gen,
    frame: &[u8],
    s: &Scenario,
) -> Result<Option<(f64, u64)>, String> {
    let Some(mut last) = dut.tier_entries(env) else { return Ok(None) };
    if s.flows <= 1 {
        return Ok(None);
    }
    let start = Instant::now();
    loop {
        gen.run(NS_GEN, "g0", GEN_CPU, frame, 1.0)?;
        let now = dut.tier_entries(env).unwrap_or(last);
        let enough = now * 100 >= s.flows as u64 * 99;
        if enough || now <= last || start.elapsed() >= SETTLE_MAX {
            return Ok(Some((start.elapsed().as_secs_f64(), now)));
        }
        last = now;
    }
}

/// One device in one scenario: warm-up, then `reps` measurements.
#[allow(clippy::too_many_arguments)]
fn measure(
    dut: &mut Dut,
    env: &Env,
    notes: &mut Vec<String>,
    topo: &mut Topology,
    gen: &mut Gen,
    s: &Scenario,
    secs: f64,
    warmup: f64,
    reps: usize,
    progress: &mut Progress,
) -> Result<Vec<Rep>, String> {
    let frame = if s.kind.decap() {
        frames::vxlan(s.size, dut::MAC_D0, dut::MAC_G0)
    } else {
        frames::inner(s.size)
    };
    gen.configure(GenCfg {
        flows: s.flows,
        inner_ip: if s.kind.decap() { 14 + frames::VXLAN_OVERHEAD as u32 } else { 14 },
        outer_udp: if s.kind.decap() { 34 } else { 0 },
    })?;
    topo.sink.expect(sink_cfg(s, dut.kind))?;
    if warmup > 0.0 {
        gen.run(NS_GEN, "g0", GEN_CPU, &frame, warmup)?;
    }
    if let Some((t, n)) = settle_tier(dut, env, gen, &frame, s)? {
        let note = format!(
            "{} at {}: before measuring, the tier took {t:.0} s of traffic (after the warm-up) to settle at {} entries for the {} flows (a masked entry serves many)",
            dut.kind.name(),
            s.label(),
            plan::thousands(n),
            plan::thousands(s.flows as u64)
        );
        eprintln!("pps: {note}");
        notes.push(note);
    }
    let hz = sys::clock_ticks();
    let mut out = Vec::new();
    for rep in 0..reps {
        if sys::stopping() {
            return Err("interrupted".into());
        }
        if !dut.alive() {
            return Err(format!("{} exited", dut.kind.name()));
        }
        dut.clear_stats();
        let s0 = topo.sink.stats()?;
        let c0: u64 = dut.pids.iter().filter_map(|p| proc_ticks(*p)).sum();
        let q0 = softirq_ticks();
        let (sent, took) = gen.run(NS_GEN, "g0", GEN_CPU, &frame, secs)?;
        let c1: u64 = dut.pids.iter().filter_map(|p| proc_ticks(*p)).sum();
        let q1 = softirq_ticks();
        std::thread::sleep(Duration::from_millis(200)); // frames still in rings
        let s1 = topo.sink.stats()?;
        let cycles = dut.cycles_per_packet();
        let d: SinkStats = s1.since(&s0);
        let t = took.as_secs_f64();
        let n = d.received.max(1) as f64;
        let softirq = (q1 - q0) as f64 / hz * 1e9 / n;
        // the kernel device has no process of its own: its time is softirq time
        let cpu = if dut.pids.is_empty() { softirq } else { (c1 - c0) as f64 / hz * 1e9 / n };
        let total = if dut.pids.is_empty() { softirq } else { cpu + softirq };
        let r = Rep {
            secs: t,
            offered_pps: sent as f64 / t,
            delivered_pps: d.received as f64 / t,
            loss: if sent > 0 { 1.0 - (d.received as f64 / sent as f64).min(1.0) } else { 0.0 },
            cpu_ns_per_pkt: cpu,
            softirq_ns_per_pkt: softirq,
            total_ns_per_pkt: total,
            cycles_per_pkt: cycles,
            sink: d,
        };
        progress.tick(&format!(
            "{:<15} {:<38} rep {}/{}: {}pps delivered of {}pps offered, loss {:.1}%, CPU {:.0} ns/pkt{}{}",
            dut.kind.name(),
            s.label(),
            rep + 1,
            reps,
            report::kpps(r.delivered_pps),
            report::kpps(r.offered_pps),
            r.loss * 100.0,
            r.cpu_ns_per_pkt,
            r.cycles_per_pkt.map(|c| format!(", {c:.0} cycles/pkt")).unwrap_or_default(),
            if d.sampled > d.ok {
                format!(
                    ", {} of {} sampled frames WRONG (outer {}, tunnel {}, inner {}, length {})",
                    d.sampled - d.ok,
                    d.sampled,
                    d.bad_outer,
                    d.bad_tunnel,
                    d.bad_inner,
                    d.bad_length
                )
            } else {
                String::new()
            }
        ));
        out.push(r);
    }
    // The sink keeps the first wrong frame of the scenario (sampled ones
    // only): say what it was, so it can be read and not only counted.
    if let Some(w) = topo.sink.first_wrong()? {
        let note = format!("{} at {}: first wrong frame: {w}", dut.kind.name(), s.label());
        eprintln!("pps: {note}");
        notes.push(note);
    }
    Ok(out)
}

fn write_outputs(rep: &Report, dir: &std::path::Path, svg_ref: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let w = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))
    };
    w("results.json", serde_json::to_string_pretty(rep).map_err(|e| e.to_string())? + "\n")?;
    w("results.md", rep.markdown(svg_ref))?;
    w("pps.svg", rep.svg())?;
    eprintln!("pps: wrote {}/results.json, results.md, pps.svg", dir.display());
    Ok(())
}

const BEGIN: &str = "<!-- pps:begin (generated by benches/pps/run.sh --full; do not edit) -->";
const END: &str = "<!-- pps:end -->";

fn publish(rep: &Report, docs: &std::path::Path) -> Result<(), String> {
    write_outputs(rep, &docs.join("pps"), "pps.svg")?;
    replace_section(&docs.join("benchmarks.md"), BEGIN, END, &rep.markdown("pps/pps.svg"))
}

/// Where the binaries are (default: next to this one) and a scratch directory.
fn environment(bin_dir: Option<PathBuf>) -> Result<Env, String> {
    let bin_dir = match bin_dir {
        Some(d) => d,
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .parent()
            .ok_or("no directory of the executable")?
            .to_path_buf(),
    };
    let work = std::env::temp_dir().join(format!("pb-pps.{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    Ok(Env { bin_dir, work, napi_thread: false, xdp_cpumap: false })
}

/// Replaces the text between two markers of a file (appends it if absent).
fn replace_section(md: &std::path::Path, begin: &str, end: &str, body: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(md).map_err(|e| format!("{}: {e}", md.display()))?;
    let section = format!("{begin}\n{body}{end}");
    let new = match (text.find(begin), text.find(end)) {
        (Some(a), Some(b)) if b > a => format!("{}{section}{}", &text[..a], &text[b + end.len()..]),
        _ => format!("{}\n{section}\n", text.trim_end()),
    };
    std::fs::write(md, new).map_err(|e| format!("{}: {e}", md.display()))?;
    eprintln!("pps: updated {}", md.display());
    Ok(())
}

fn run(a: Args) -> Result<(), String> {
    if let Some(p) = &a.render {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let mut rep: Report = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        rep.derive();
        write_outputs(&rep, &a.out, "pps.svg")?;
        if let Some(d) = &a.publish {
            publish(&rep, d)?;
        }
        return Ok(());
    }
    if let Some(secs) = a.soak {
        return soak_run(secs, &a);
    }
    let full = a.full;
    let secs = a.secs.unwrap_or(if full { 3.0 } else { 2.0 });
    let reps = a.reps.unwrap_or(3).max(1);
    let warmup = a.warmup.unwrap_or(if full { 1.0 } else { 0.5 });
    let duts: Vec<DutKind> = if a.duts.is_empty() {
        DutKind::ALL.to_vec()
    } else {
        a.duts
            .iter()
            .map(|d| DutKind::parse(d).ok_or(format!("no device {d:?}")))
            .collect::<Result<_, _>>()?
    };
    let kinds: Vec<Kind> = if !a.kinds.is_empty() {
        a.kinds
            .iter()
            .map(|k| Kind::parse(k).ok_or(format!("no scenario kind {k:?}")))
            .collect::<Result<_, _>>()?
    } else if full {
        Kind::ALL.to_vec()
    } else {
        vec![Kind::VxlanEncap, Kind::VxlanDecap]
    };
    let sizes = list(&a.sizes, &[64], &[64, 1400], full);
    let flows = list(&a.flows, &[1, 100_000], &[1, 1000, 100_000], full);
    let rules = list(&a.rules, &[10, 10_000], &[10, 10_000], full);
    let mut scen = plan::scenarios(&kinds, &sizes, &flows, &rules);
    if !full && a.flows.is_empty() && a.rules.is_empty() {
        // quick: only the scenarios the targets name (decap at 1 flow)
        scen.retain(|s| {
            (s.flows == 1 && s.rules == 10)
                || (s.kind == Kind::VxlanEncap && s.flows == 100_000 && s.rules == 10_000)
        });
    }
    if own_uid() != 0 {
        return Err("run as root (namespaces, XDP, Open vSwitch)".into());
    }
    sys::catch_signals();
    let mut env = environment(a.bin_dir)?;
    env.napi_thread = a.napi_thread;
    env.xdp_cpumap = a.xdp_cpumap;
    let work = env.work.clone();

    // groups: scenarios sharing a device configuration (kind, rules)
    let mut groups: Vec<(Kind, usize, Vec<Scenario>)> = Vec::new();
    for s in &scen {
        match groups.iter_mut().find(|g| g.0 == s.kind && g.1 == s.rules) {
            Some(g) => g.2.push(*s),
            None => groups.push((s.kind, s.rules, vec![*s])),
        }
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut total = 0;
    for (_, _, ss) in &groups {
        for d in &duts {
            if Dut::available(*d, &ss[0], &env).is_ok() {
                total += ss.len() * reps;
            }
        }
    }
    eprintln!(
        "pps: {} scenarios x {} devices, {} measurements of {secs} s (+{warmup} s warm-up per scenario), {} repetitions",
        scen.len(),
        duts.len(),
        total,
        reps
    );
    let mut progress = Progress { start: Instant::now(), done: 0, total };
    let mut gen = Gen::load()?;
    let mut settled: Vec<String> = Vec::new();
    let started = Instant::now();
    let result = (|| -> Result<(), String> {
        for (_, _, ss) in &groups {
            for &d in &duts {
                if let Err(why) = Dut::available(d, &ss[0], &env) {
                    eprintln!("pps: {}: not available: {why}", d.name());
                    for s in ss {
                        rows.push(Row {
                            dut: d,
                            scenario: *s,
                            not_available: Some(why.clone()),
                            reps: vec![],
                            summary: None,
                        });
                    }
                    continue;
                }
                let mut topo = Topology::build()?;
                let mut dev = Dut::start(d, &ss[0], &env)?;
                for s in ss {
                    let reps = measure(
                        &mut dev,
                        &env,
                        &mut settled,
                        &mut topo,
                        &mut gen,
                        s,
                        secs,
                        warmup,
                        reps,
                        &mut progress,
                    )?;
                    let mut row =
                        Row { dut: d, scenario: *s, not_available: None, reps, summary: None };
                    row.summarise();
                    rows.push(row);
                }
                let log =
                    work.join(format!("{}-{}-{}.txt", d.name(), ss[0].kind.name(), ss[0].rules));
                let _ = std::fs::write(&log, dev.describe(&env));
                drop(dev);
                drop(topo);
            }
        }
        Ok(())
    })();
    dut::delete_namespaces();
    result?;
    let mut rep = Report {
        meta: Meta {
            mode: if full {
                "full".into()
            } else if a.kinds.is_empty() && a.flows.is_empty() && a.rules.is_empty() && a.sizes.is_empty() {
                "quick".into()
            } else {
                "custom".into()
            },
            date: dut::sh(&["date", "-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default().trim().into(),
            host: dut::sh(&["hostname"]).unwrap_or_default().trim().into(),
            kernel: dut::sh(&["uname", "-r"]).unwrap_or_default().trim().into(),
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu_mhz: cpu_mhz(),
            secs,
            warmup_secs: warmup,
            reps,
            duration_secs: started.elapsed().as_secs_f64(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            notes: vec![
                format!(
                    "device's packet thread on CPU {DUT_CPU} (overlayd's worker, the OVS PMD thread), generator on CPU {GEN_CPU}"
                ),
                if a.napi_thread {
                    format!("the input veth's receive path (NAPI) ran as a thread pinned to CPU {DUT_CPU} and counts as the device's CPU time")
                } else {
                    format!("the input veth's receive path (NAPI: XDP, copy into the AF_XDP ring or skb for the kernel) ran in the softirq of the generator's CPU {GEN_CPU}; it is in the softirq column, not in the device's CPU time")
                },
                if a.xdp_cpumap {
                    format!("xdp-null and xdp-encap handed each frame through a cpumap to CPU {DUT_CPU}, which redirected it out of d1 (--xdp-cpumap)")
                } else {
                    String::new()
                },
            ]
            .into_iter()
            .filter(|n| !n.is_empty())
            .chain(settled)
            .collect(),
        },
        rows,
        ratios: vec![],
        targets: vec![],
    };
    rep.derive();
    write_outputs(&rep, &a.out, "pps.svg")?;
    if let Some(d) = &a.publish {
        publish(&rep, d)?;
    }
    print!("{}", rep.markdown("pps.svg"));
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

const SOAK_BEGIN: &str =
    "<!-- soak:begin (generated by benches/pps/run.sh --soak; do not edit) -->";
const SOAK_END: &str = "<!-- soak:end -->";

fn soak_run(secs: u64, a: &Args) -> Result<(), String> {
    // 18 warm-up samples, then at least two to compare: a sample takes about
    // 13 s (10 s of traffic, then the wait for the daemon's reading).
    if secs < 300 {
        return Err(
            "--soak needs at least 300 s (18 warm-up samples of about 13 s each, then samples to compare)".into()
        );
    }
    if own_uid() != 0 {
        return Err("run as root (namespaces, XDP)".into());
    }
    sys::catch_signals();
    let env = environment(a.bin_dir.clone())?;
    let mut gen = Gen::load()?;
    let rep = soak::run(secs, &env, &mut gen, &a.out);
    dut::delete_namespaces();
    let _ = std::fs::remove_dir_all(&env.work);
    let rep = rep?;
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let json = serde_json::to_string_pretty(&rep).map_err(|e| e.to_string())? + "\n";
    std::fs::write(a.out.join("soak.json"), json).map_err(|e| e.to_string())?;
    std::fs::write(a.out.join("soak.md"), rep.markdown()).map_err(|e| e.to_string())?;
    eprintln!("pps: wrote {}/soak.json, soak.md", a.out.display());
    if let Some(docs) = &a.publish {
        replace_section(&docs.join("benchmarks.md"), SOAK_BEGIN, SOAK_END, &rep.markdown())?;
    }
    print!("{}", rep.markdown());
    match rep.pass {
        true => Ok(()),
        false => Err("the soak failed its verdict (see above)".into()),
    }
}

fn own_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(u32::MAX)
}
