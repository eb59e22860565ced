//! `pps --soak SECONDS`: overlayd at the generator's maximum rate, for a long
//! time, with 100,000 flows and 10,000 rules and a rule change every second.
//! Every 10 s the traffic pauses long enough for the counters to settle and
//! the daemon is sampled: resident memory, open descriptors, threads, the
//! conservation identity, and the generation against the changes it accepted.
//! A leak shows as growth after warm-up, a lost change as a generation or a
//! rule list that does not match what was accepted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bpf::{Gen, GenCfg};
use crate::dut::{self, Dut, Env, Topology, GEN_CPU, NS_GEN};
use crate::plan::{DutKind, Kind, Scenario};
use crate::{frames, sink_cfg, sys};

/// Seconds between samples; the first samples are warm-up.
const SAMPLE_EVERY: f64 = 10.0;
/// Samples taken before the ones the flatness verdict compares: three
/// minutes. Under a rule change a second the daemon's heap reaches its
/// working set in a step or two (jemalloc's slabs growing until the pattern
/// of old and new sets fits: about 6 MB within the first minute in 200 s
/// runs; `smaps/` beside soak.json shows which mappings), then holds.
/// Growth from the early samples is reported beside the verdict, not
/// judged.
const WARMUP_SAMPLES: usize = 18;
/// Samples before the early growth figure: the start itself (30 s).
const EARLY_SAMPLES: usize = 3;
/// How long the daemon is left alone before its memory is read: overlayd
/// gives its free heap pages back once a second (`Daemon::release_memory`),
/// so after this long the reading is what it holds, not the scratch of the
/// API answers the sample itself just asked for (the rule list of 10,000
/// rules). The peak is read too (VmHWM), and reported.
const REST: Duration = Duration::from_millis(1200);
/// The rule the changer adds and removes (an id above the noise rules').
const SOAK_RULE: u32 = 60_000;

#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub at_secs: f64,
    pub rss_kib: u64,
    /// The largest resident set since the start (VmHWM).
    pub peak_rss_kib: u64,
    /// The resident set's parts: anonymous (heap, stacks), file-backed
    /// (the binary, libraries) and shared memory (the AF_XDP UMEM).
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
    pub rss_shmem_kib: u64,
    pub fds: usize,
    pub threads: usize,
    pub rx: u64,
    pub tx: u64,
    pub dropped: u64,
    pub conserved: bool,
    pub generation: u64,
    /// Changes the daemon accepted (2xx) until this sample.
    pub changes_accepted: u64,
    /// Frames the sink received in the last interval, per second.
    pub delivered_pps: f64,
}

#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub date: String,
    pub kernel: String,
    pub command: String,
    pub secs: u64,
    pub scenario: String,
    pub samples: Vec<Sample>,
    pub changes_accepted: u64,
    pub changes_refused: u64,
    /// How long an accepted change took, `overlayctl` start to exit
    /// (median, 99th percentile, longest): the control plane's cost.
    pub change_ms_median: f64,
    pub change_ms_p99: f64,
    pub change_ms_max: f64,
    /// How far apart the samples after warm-up are: the largest over the
    /// smallest, less one. Flat within 1 % means at most 0.01, whichever
    /// way the samples move (a rise, a fall or a swing).
    pub rss_spread_after_warmup: f64,
    /// RSS growth from the 30-second sample on (reported, not judged).
    pub rss_growth_after_start: f64,
    pub fd_spread_after_warmup: f64,
    pub conserved_every_sample: bool,
    pub no_change_lost: bool,
    pub sink_frames_wrong: u64,
    pub pass: bool,
}

/// The changer's tally; the sampler holds its lock while it reads the daemon.
#[derive(Default)]
struct Changes {
    accepted: u64,
    refused: u64,
    /// Each accepted change's time, in ms.
    took_ms: Vec<f64>,
}

/// The value at quantile `q` of sorted `v` (0 when empty).
fn percentile(v: &[f64], q: f64) -> f64 {
    match v.len() {
        0 => 0.0,
        n => v[((n - 1) as f64 * q).round() as usize],
    }
}

/// overlayctl against the device's socket.
struct Ctl {
    bin: PathBuf,
    sock: PathBuf,
}

impl Ctl {
    fn json(&self, args: &[&str]) -> Result<serde_json::Value, String> {
        let mut full = vec!["--socket", self.sock.to_str().unwrap_or_default(), "--json"];
        full.extend_from_slice(args);
        let out = std::process::Command::new(&self.bin)
            .args(&full)
            .output()
            .map_err(|e| format!("running overlayctl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "overlayctl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("overlayctl {}: not JSON: {e}", args.join(" ")))
    }

    fn run(&self, args: &[&str]) -> Result<(), String> {
        let out = std::process::Command::new(&self.bin)
            .arg("--socket")
            .arg(&self.sock)
            .args(args)
            .output()
            .map_err(|e| format!("running overlayctl: {e}"))?;
        match out.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        }
    }

    fn u64_of(v: &serde_json::Value, field: &str) -> Result<u64, String> {
        v.get(field).and_then(|x| x.as_u64()).ok_or(format!("no {field} in the daemon's answer"))
    }

    fn has_rule(&self, id: u32) -> Result<bool, String> {
        let v = self.json(&["rule", "list"])?;
        let list = v.as_array().or_else(|| v.get("rules").and_then(|r| r.as_array()));
        let list = list.ok_or("rule list: no array")?;
        Ok(list.iter().any(|r| r.get("id").and_then(|i| i.as_u64()) == Some(id as u64)))
    }
}

/// What one sample reads from /proc: sizes in KiB.
struct Use {
    rss: u64,
    peak: u64,
    anon: u64,
    file: u64,
    shmem: u64,
    fds: usize,
    threads: usize,
}

/// The process's resident set, its parts and its peak, descriptors and
/// threads.
fn process_use(pid: u32) -> Result<Use, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("overlayd ({pid}) is gone: {e}"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let count = |dir: String| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    Ok(Use {
        rss: field("VmRSS:"),
        peak: field("VmHWM:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
        shmem: field("RssShmem:"),
        fds: count(format!("/proc/{pid}/fd")),
        threads: count(format!("/proc/{pid}/task")),
    })
}

/// Counters once they stop moving (the XDP tier's are harvested
/// periodically): two equal reads, at most 5 s.
fn settled_counters(ctl: &Ctl) -> Result<serde_json::Value, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = ctl.json(&["counters"])?;
    loop {
        std::thread::sleep(Duration::from_millis(600));
        let now = ctl.json(&["counters"])?;
        let same = ["rx", "tx", "dropped"].iter().all(|f| now.get(f) == last.get(f));
        if same || Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// How far apart the values of `v` are: its maximum over its minimum, less one.
fn spread(v: &[f64]) -> f64 {
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(0.0, f64::max);
    if min > 0.0 && min.is_finite() {
        max / min - 1.0
    } else {
        0.0
    }
}

/// Relative growth of `v` from its first value to its maximum.
fn growth(v: &[f64]) -> f64 {
    match v.first() {
        Some(&first) if first > 0.0 => v.iter().cloned().fold(first, f64::max) / first - 1.0,
        _ => 0.0,
    }
}

pub fn run(secs: u64, env: &Env, gen: &mut Gen, out: &Path) -> Result<SoakReport, String> {
    let s = Scenario { kind: Kind::VxlanEncap, size: 64, flows: 100_000, rules: 10_000 };
    let mut topo = Topology::build()?;
    let mut dev = Dut::start(DutKind::Overlayd, &s, env)?;
    let pid = *dev.pids.first().ok_or("overlayd has no process")?;
    let ctl = Arc::new(Ctl {
        bin: env.bin_dir.join("overlayctl"),
        sock: env.work.join(DutKind::Overlayd.name()).join("api.sock"),
    });
    gen.configure(GenCfg { flows: s.flows, inner_ip: 14, outer_udp: 0 })?;
    topo.sink.expect(sink_cfg(&s, DutKind::Overlayd))?;
    let frame = frames::inner(s.size);
    let g0 = Ctl::u64_of(&ctl.json(&["status"])?, "generation")?;
    eprintln!("soak: {secs} s of {} through overlayd (pid {pid}), generation {g0}", s.label());

    // The changer: adds and removes one rule every second. The lock keeps a
    // sample from reading the daemon halfway through a change.
    let gate = Arc::new(Mutex::new(Changes::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let changer = {
        let (ctl, gate, stop) = (ctl.clone(), gate.clone(), stop.clone());
        std::thread::spawn(move || {
            let id = SOAK_RULE.to_string();
            while !stop.load(Ordering::Relaxed) && !sys::stopping() {
                let tick = Instant::now();
                {
                    let mut g = gate.lock().unwrap_or_else(|p| p.into_inner());
                    let add = g.accepted % 2 == 0;
                    let t0 = Instant::now();
                    let r = if add {
                        ctl.run(&[
                            "rule",
                            "add",
                            "--id",
                            &id,
                            "--priority",
                            "5",
                            "--match",
                            "in_port=d0,ip_dst=203.0.113.77/32",
                            "--action",
                            "drop",
                        ])
                    } else {
                        ctl.run(&["rule", "del", &id])
                    };
                    match r {
                        Ok(()) => {
                            g.accepted += 1;
                            g.took_ms.push(t0.elapsed().as_secs_f64() * 1e3);
                        }
                        Err(e) => {
                            eprintln!("soak: change refused: {e}");
                            g.refused += 1;
                        }
                    }
                }
                std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
            }
        })
    };

    let started = Instant::now();
    let mut samples = Vec::new();
    let mut changes_lost = false;
    let mut s_prev = topo.sink.stats()?;
    let result = (|| -> Result<(), String> {
        while started.elapsed().as_secs_f64() + SAMPLE_EVERY <= secs as f64 + 0.5 {
            if sys::stopping() {
                return Err("interrupted".into());
            }
            if !dev.alive() {
                return Err("overlayd exited".into());
            }
            let (_, took) = gen.run(NS_GEN, "g0", GEN_CPU, &frame, SAMPLE_EVERY - 1.0)?;
            let g = gate.lock().unwrap_or_else(|p| p.into_inner());
            let c = settled_counters(&ctl)?;
            let generation = Ctl::u64_of(&ctl.json(&["status"])?, "generation")?;
            let present = ctl.has_rule(SOAK_RULE)?;
            // every accepted change is one generation, and the rule is there
            // exactly when the last accepted change added it
            if generation != g0 + g.accepted || present != (g.accepted % 2 == 1) {
                changes_lost = true;
                eprintln!(
                    "soak: generation {generation} after {} accepted changes from {g0}; rule {SOAK_RULE} present: {present}",
                    g.accepted
                );
            }
            std::thread::sleep(REST);
            let u = process_use(pid)?;
            // Each mapping's share of the reading, kept as the evidence
            // behind a figure (`smaps/<seconds>.txt` beside soak.json).
            let at = started.elapsed().as_secs();
            let _ = std::fs::create_dir_all(out.join("smaps"));
            let _ = std::fs::copy(
                format!("/proc/{pid}/smaps"),
                out.join("smaps").join(format!("{at:04}.txt")),
            );
            let s_now = topo.sink.stats()?;
            let d = s_now.since(&s_prev);
            s_prev = s_now;
            let sample = Sample {
                at_secs: started.elapsed().as_secs_f64(),
                rss_kib: u.rss,
                peak_rss_kib: u.peak,
                rss_anon_kib: u.anon,
                rss_file_kib: u.file,
                rss_shmem_kib: u.shmem,
                fds: u.fds,
                threads: u.threads,
                rx: Ctl::u64_of(&c, "rx")?,
                tx: Ctl::u64_of(&c, "tx")?,
                dropped: Ctl::u64_of(&c, "dropped")?,
                conserved: c.get("conserved").and_then(|v| v.as_bool()) == Some(true),
                generation,
                changes_accepted: g.accepted,
                delivered_pps: d.received as f64 / took.as_secs_f64(),
            };
            drop(g);
            eprintln!(
                "soak: {:>5.0}s rss {} KiB (anon {} file {} shmem {}) fds {} threads {} rx {} tx {} dropped {} conserved {} generation {} ({}pps)",
                sample.at_secs,
                sample.rss_kib,
                sample.rss_anon_kib,
                sample.rss_file_kib,
                sample.rss_shmem_kib,
                sample.fds,
                sample.threads,
                sample.rx,
                sample.tx,
                sample.dropped,
                sample.conserved,
                sample.generation,
                crate::report::kpps(sample.delivered_pps)
            );
            samples.push(sample);
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let _ = changer.join();
    let _ = std::fs::write(out.join("overlayd-counters.txt"), dev.describe(env));
    let sink = topo.sink.stats()?;
    drop(dev);
    drop(topo);
    result?;

    let mut g = gate.lock().unwrap_or_else(|p| p.into_inner());
    let (accepted, refused) = (g.accepted, g.refused);
    g.took_ms.sort_by(f64::total_cmp);
    let change_ms = [0.5, 0.99, 1.0].map(|q| percentile(&g.took_ms, q));
    drop(g);
    let after: Vec<&Sample> = samples.iter().skip(WARMUP_SAMPLES).collect();
    let rss = spread(&after.iter().map(|s| s.rss_kib as f64).collect::<Vec<_>>());
    let fds = spread(&after.iter().map(|s| s.fds as f64).collect::<Vec<_>>());
    let early =
        growth(&samples.iter().skip(EARLY_SAMPLES).map(|s| s.rss_kib as f64).collect::<Vec<_>>());
    let conserved = !samples.is_empty() && samples.iter().all(|s| s.conserved);
    let wrong = sink.sampled - sink.ok;
    let rep = SoakReport {
        date: dut::sh(&["date", "-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default().trim().into(),
        kernel: dut::sh(&["uname", "-r"]).unwrap_or_default().trim().into(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        secs,
        scenario: s.label(),
        changes_accepted: accepted,
        changes_refused: refused,
        change_ms_median: change_ms[0],
        change_ms_p99: change_ms[1],
        change_ms_max: change_ms[2],
        rss_spread_after_warmup: rss,
        rss_growth_after_start: early,
        fd_spread_after_warmup: fds,
        conserved_every_sample: conserved,
        no_change_lost: !changes_lost && refused == 0,
        sink_frames_wrong: wrong,
        pass: after.len() >= 2
            && rss <= 0.01
            && fds <= 0.01
            && conserved
            && !changes_lost
            && refused == 0
            && wrong == 0,
        samples,
    };
    Ok(rep)
}

impl SoakReport {
    pub fn markdown(&self) -> String {
        let mut m = format!(
            "Soak ({}, kernel {}): `{}`, {} s of {} at the generator's maximum rate, a rule added or removed every second.\n\n",
            self.date, self.kernel, self.command, self.secs, self.scenario
        );
        m += "| at | RSS (KiB) | of it anonymous (KiB) | peak RSS (KiB) | fds | threads | rx | tx | dropped | conserved | generation | changes | delivered |\n";
        m += "|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|\n";
        for s in &self.samples {
            m += &format!(
                "| {:.0} s | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}pps |\n",
                s.at_secs,
                s.rss_kib,
                s.rss_anon_kib,
                s.peak_rss_kib,
                s.fds,
                s.threads,
                s.rx,
                s.tx,
                s.dropped,
                if s.conserved { "yes" } else { "NO" },
                s.generation,
                s.changes_accepted,
                crate::report::kpps(s.delivered_pps)
            );
        }
        let rest: Vec<u64> = self.samples.iter().skip(WARMUP_SAMPLES).map(|s| s.rss_kib).collect();
        if let (Some(lo), Some(hi)) = (rest.iter().min(), rest.iter().max()) {
            m += &format!("\nAfter warm-up, RSS between {lo} and {hi} KiB.\n");
        }
        m += &format!(
            "\nAfter warm-up (the first {WARMUP_SAMPLES} samples), the largest sample above the smallest: \
             RSS {:.2} %, descriptors {:.2} % (limit 1 %); \
             RSS from the {}th sample on grew {:.2} % (the heap reaching its working set; not judged); \
             conservation exact in every sample: {}; changes accepted {}, refused {}, none lost: {}; \
             a change took {:.0} ms (median), {:.0} ms (99th percentile), {:.0} ms at most; \
             sink frames wrong: {}. Verdict: **{}**.\n",
            self.rss_spread_after_warmup * 100.0,
            self.fd_spread_after_warmup * 100.0,
            EARLY_SAMPLES + 1,
            self.rss_growth_after_start * 100.0,
            if self.conserved_every_sample { "yes" } else { "NO" },
            self.changes_accepted,
            self.changes_refused,
            if self.no_change_lost { "yes" } else { "NO" },
            self.change_ms_median,
            self.change_ms_p99,
            self.change_ms_max,
            self.sink_frames_wrong,
            if self.pass { "pass" } else { "FAIL" }
        );
        m
    }
}
