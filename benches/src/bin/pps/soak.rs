//! `pps --soak SECONDS`: overlayd at the generator's maximum rate, for a long
//! time, with 100,000 flows and 10,000 rules and a rule change every second.
//! Every 10 s the traffic pauses long enough for the counters to settle and
//! the daemon is sampled: resident memory, open descriptors, threads, the
//! conservation identity, and the generation against the changes it accepted.
//! A leak shows as growth after warm-up, a lost change as a generation or a
//! rule list that does not match what was accepted.
//!
//! The memory judged is the daemon's own: overlayd reads its resident set
//! right after each once-a-second purge of its free heap pages and reports
//! it with a purge count (`status`' `memory`). After its API calls, with no
//! rule change in flight, the sampler waits for a purge that began after
//! every byte of those calls was freed, and takes that reading. A fixed rest
//! instead read too early whenever the daemon's tick came late under load:
//! three samples of the last such run held their own 10,000-rule list.

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
/// Purges to wait for past the count read after the sample's own API
/// calls: the next one may have begun before the last of their scratch was
/// freed (the count is read while it is being answered); the one after it
/// began after.
const PURGES_PAST: u64 = 2;
/// How often the daemon's purge count is read while waiting, and for how
/// long at most: the purge comes once a second, so two take about 2 s, and
/// a wait of 5 s means the daemon's tick has stalled. A sample whose wait
/// ends without the reading says so and fails the verdict.
const POLL: Duration = Duration::from_millis(200);
const MARK_WAIT: Duration = Duration::from_secs(5);
/// How long the daemon's descriptors are watched after the reading, every
/// `FD_POLL`: each API call holds one until the daemon notices its client
/// has gone, which under load can take a while after the call returned (a
/// count taken at once swung 56-57). The fewest seen is what it holds; a
/// leaked descriptor never goes away, so it still shows.
const FD_WINDOW: Duration = Duration::from_secs(1);
const FD_POLL: Duration = Duration::from_millis(100);
/// The rule the changer adds and removes (an id above the noise rules').
const SOAK_RULE: u32 = 60_000;

/// The daemon's reading of its own memory right after a purge (`status`'
/// `memory`), in KiB; `purges` numbers it, `at_ms` is its time since the
/// daemon started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AfterPurge {
    pub resident_kib: u64,
    pub anon_kib: u64,
    pub purges: u64,
    pub at_ms: u64,
}

impl AfterPurge {
    /// The `memory` of a `status` answer. An overlayd that does not report
    /// it cannot be judged: an error, not a zero.
    fn of_status(status: &serde_json::Value) -> Result<AfterPurge, String> {
        let m = status
            .get("memory")
            .ok_or("the daemon's status has no memory (an overlayd from before it reported one)")?;
        let field = |f: &str| Ctl::u64_of(m, f).map_err(|e| format!("status memory: {e}"));
        Ok(AfterPurge {
            resident_kib: field("resident_kib")?,
            anon_kib: field("anon_kib")?,
            purges: field("purges")?,
            at_ms: field("at_ms")?,
        })
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    pub at_secs: f64,
    /// The daemon's reading right after a purge that began after the
    /// sample's own API calls were answered: what the memory verdict
    /// judges. `None` when it did not come within `MARK_WAIT` (the sample
    /// then fails the verdict).
    pub after_purge: Option<AfterPurge>,
    /// The purge count read after the sample's API calls, and how long the
    /// wait for the reading took.
    pub purges_before: u64,
    pub waited_ms: f64,
    /// The sampler's own reading of /proc/PID/status, taken as soon as the
    /// daemon's reading was in (or the wait gave up): VmRSS.
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
    /// How far apart the daemon's after-purge readings of the samples after
    /// warm-up are: the largest over the smallest, less one. Flat within
    /// 1 % means at most 0.01, whichever way the samples move (a rise, a
    /// fall or a swing). `None` when a sample after warm-up has no reading.
    pub rss_spread_after_warmup: Option<f64>,
    /// Samples (any, warm-up included) whose wait for the reading timed out.
    pub samples_without_reading: usize,
    /// The same spread of the sampler's own /proc readings (reported, not
    /// judged).
    pub proc_rss_spread_after_warmup: f64,
    /// After-purge growth from the 30-second sample on (reported, not judged).
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

/// The fewest descriptors `pid` held over `FD_WINDOW`, starting from `first`.
fn settled_fds(pid: u32, first: usize) -> usize {
    let t0 = Instant::now();
    let mut fewest = first;
    while t0.elapsed() < FD_WINDOW {
        std::thread::sleep(FD_POLL);
        if let Ok(d) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            fewest = fewest.min(d.count());
        }
    }
    fewest
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

/// Waits, with no change in flight, for the daemon's reading after a purge
/// that began after everything the sample asked for was freed: reads the
/// purge count N, then every `POLL` until it is at least N + `PURGES_PAST`,
/// at most `MARK_WAIT`. Returns N, the reading (`None` if it did not come)
/// and how long the wait took.
fn await_after_purge(ctl: &Ctl) -> Result<(u64, Option<AfterPurge>, Duration), String> {
    let t0 = Instant::now();
    let before = AfterPurge::of_status(&ctl.json(&["status"])?)?.purges;
    loop {
        std::thread::sleep(POLL);
        let m = AfterPurge::of_status(&ctl.json(&["status"])?)?;
        if m.purges >= before + PURGES_PAST {
            return Ok((before, Some(m), t0.elapsed()));
        }
        if t0.elapsed() >= MARK_WAIT {
            return Ok((before, None, t0.elapsed()));
        }
    }
}

/// The memory verdict's figure: how far apart the daemon's after-purge
/// readings of `samples` are. `None` when one has no reading (its wait
/// timed out, or the daemon could not read its memory): such a sample
/// cannot be judged, so the verdict fails rather than skip it.
fn after_purge_spread(samples: &[Sample]) -> Option<f64> {
    let v: Option<Vec<f64>> = samples.iter().map(|s| judged_kib(s).map(|r| r as f64)).collect();
    v.map(|v| spread(&v))
}

/// The figure a sample is judged on: the daemon's resident set after the
/// purge, when there is one (0 is the daemon saying it could not read it).
fn judged_kib(s: &Sample) -> Option<u64> {
    s.after_purge.map(|m| m.resident_kib).filter(|&r| r > 0)
}

fn after_purge_text(s: &Sample) -> String {
    match (s.after_purge, judged_kib(s)) {
        (Some(m), Some(r)) => format!("{r} KiB (anon {}, purge {})", m.anon_kib, m.purges),
        (Some(m), None) => format!("NONE (the daemon could not read it, purge {})", m.purges),
        (None, _) => format!(
            "NONE (no purge {} within {} s)",
            s.purges_before + PURGES_PAST,
            MARK_WAIT.as_secs()
        ),
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
            let (purges_before, after_purge, waited) = await_after_purge(&ctl)?;
            if after_purge.is_none() {
                eprintln!(
                    "soak: no purge reading within {} s of purge {purges_before}: this sample fails the verdict",
                    MARK_WAIT.as_secs()
                );
            }
            let u = process_use(pid)?;
            // Each mapping's share of the reading, kept as the evidence
            // behind a figure (`smaps/<seconds>.txt` beside soak.json).
            let at = started.elapsed().as_secs();
            let _ = std::fs::create_dir_all(out.join("smaps"));
            let _ = std::fs::copy(
                format!("/proc/{pid}/smaps"),
                out.join("smaps").join(format!("{at:04}.txt")),
            );
            let fds = settled_fds(pid, u.fds);
            let s_now = topo.sink.stats()?;
            let d = s_now.since(&s_prev);
            s_prev = s_now;
            let sample = Sample {
                at_secs: started.elapsed().as_secs_f64(),
                after_purge,
                purges_before,
                waited_ms: waited.as_secs_f64() * 1e3,
                rss_kib: u.rss,
                peak_rss_kib: u.peak,
                rss_anon_kib: u.anon,
                rss_file_kib: u.file,
                rss_shmem_kib: u.shmem,
                fds,
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
                "soak: {:>5.0}s after purge {} (waited {:.0} ms); /proc rss {} KiB (anon {} file {} shmem {}) fds {} threads {} rx {} tx {} dropped {} conserved {} generation {} ({}pps)",
                sample.at_secs,
                after_purge_text(&sample),
                sample.waited_ms,
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
    let after = samples.get(WARMUP_SAMPLES..).unwrap_or_default();
    let rss = after_purge_spread(after);
    let proc_rss = spread(&after.iter().map(|s| s.rss_kib as f64).collect::<Vec<_>>());
    let fds = spread(&after.iter().map(|s| s.fds as f64).collect::<Vec<_>>());
    let without_reading = samples.iter().filter(|s| judged_kib(s).is_none()).count();
    let early = growth(
        &samples
            .iter()
            .skip(EARLY_SAMPLES)
            .filter_map(judged_kib)
            .map(|r| r as f64)
            .collect::<Vec<_>>(),
    );
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
        samples_without_reading: without_reading,
        proc_rss_spread_after_warmup: proc_rss,
        rss_growth_after_start: early,
        fd_spread_after_warmup: fds,
        conserved_every_sample: conserved,
        no_change_lost: !changes_lost && refused == 0,
        sink_frames_wrong: wrong,
        pass: after.len() >= 2
            && rss.is_some_and(|r| r <= 0.01)
            && without_reading == 0
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
        m += &format!(
            "Memory judged: overlayd's own reading of its resident set (VmRSS of /proc/self/status) \
             right after it gave its free heap pages back, in a purge that began after the sample's \
             API calls (counters, status, the 10,000-rule list) were answered: with the rule changer \
             held, the sampler reads the daemon's purge count N from `status` and polls it every {} ms, \
             for at most {} s, until it is N+{PURGES_PAST}, then takes that purge's reading. So the figure is \
             what the daemon holds, not the sample's own scratch awaiting the next purge. A sample whose \
             wait times out has no figure and fails the verdict. The sampler's own /proc/PID/status \
             reading, taken right after, is shown beside it (not judged), with the peak (VmHWM); \
             each sample's /proc/PID/smaps is kept beside soak.json. Descriptors: the fewest the daemon \
             held over the {} ms after the reading (an API call's connection stays open until the \
             daemon notices its client has gone; a leaked descriptor never goes).\n\n",
            POLL.as_millis(),
            MARK_WAIT.as_secs(),
            FD_WINDOW.as_millis()
        );
        m += "| at | after purge: RSS (KiB, judged) | of it anonymous (KiB) | purge | waited (ms) | sampler's RSS (KiB) | of it anonymous (KiB) | peak RSS (KiB) | fds | threads | rx | tx | dropped | conserved | generation | changes | delivered |\n";
        m += "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|\n";
        for s in &self.samples {
            let (judged, anon, purge) = match (s.after_purge, judged_kib(s)) {
                (Some(a), Some(r)) => (r.to_string(), a.anon_kib.to_string(), a.purges.to_string()),
                (Some(a), None) => ("NONE (unreadable)".into(), "-".into(), a.purges.to_string()),
                (None, _) => (
                    format!(
                        "NONE (no purge {} in {} s)",
                        s.purges_before + PURGES_PAST,
                        MARK_WAIT.as_secs()
                    ),
                    "-".into(),
                    "-".into(),
                ),
            };
            m += &format!(
                "| {:.0} s | {judged} | {anon} | {purge} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}pps |\n",
                s.at_secs,
                s.waited_ms,
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
        let after = self.samples.get(WARMUP_SAMPLES..).unwrap_or_default();
        let judged: Vec<u64> = after.iter().filter_map(judged_kib).collect();
        let own: Vec<u64> = after.iter().map(|s| s.rss_kib).collect();
        if let (Some(lo), Some(hi), Some(olo), Some(ohi)) =
            (judged.iter().min(), judged.iter().max(), own.iter().min(), own.iter().max())
        {
            m += &format!(
                "\nAfter warm-up, RSS after a purge between {lo} and {hi} KiB (the sampler's own readings: {olo} to {ohi} KiB).\n"
            );
        }
        let judged_spread = match self.rss_spread_after_warmup {
            Some(r) => format!("{:.2} %", r * 100.0),
            None => "NONE (a sample has no reading)".into(),
        };
        m += &format!(
            "\nAfter warm-up (the first {WARMUP_SAMPLES} samples), the largest sample above the smallest: \
             RSS after a purge {judged_spread} (the sampler's own /proc readings, not judged: {:.2} %), \
             descriptors {:.2} % (limit 1 %); samples without the daemon's reading: {}; \
             RSS after a purge from the {}th sample on grew {:.2} % (the heap reaching its working set; not judged); \
             conservation exact in every sample: {}; changes accepted {}, refused {}, none lost: {}; \
             a change took {:.0} ms (median), {:.0} ms (99th percentile), {:.0} ms at most; \
             sink frames wrong: {}. Verdict: **{}**.\n",
            self.proc_rss_spread_after_warmup * 100.0,
            self.fd_spread_after_warmup * 100.0,
            self.samples_without_reading,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(resident_kib: Option<u64>) -> Sample {
        let after_purge = resident_kib.map(|r| AfterPurge {
            resident_kib: r,
            anon_kib: r / 2,
            purges: 9,
            at_ms: 1,
        });
        Sample { after_purge, purges_before: 7, rss_kib: 999_999, ..Sample::default() }
    }

    #[test]
    fn the_verdict_judges_the_daemons_reading_and_fails_without_one() {
        let flat = [sample(Some(150_000)), sample(Some(151_000))];
        let r = after_purge_spread(&flat).unwrap();
        assert!((r - 1.0 / 150.0).abs() < 1e-12, "{r}");
        // The sampler's own reading is not what is judged.
        assert!(flat.iter().all(|s| s.rss_kib == 999_999));
        let high = [sample(Some(150_000)), sample(Some(152_000))];
        assert!(after_purge_spread(&high).unwrap() > 0.01);
        let timed_out = [sample(Some(150_000)), sample(None)];
        assert_eq!(after_purge_spread(&timed_out), None, "a wait that timed out is never skipped");
        let unreadable = [sample(Some(150_000)), sample(Some(0))];
        assert_eq!(after_purge_spread(&unreadable), None, "0 is the daemon failing to read");
        assert!(after_purge_text(&sample(None)).contains("no purge 9 within 5 s"));
    }

    #[test]
    fn reads_the_daemons_memory_from_status() {
        let status = serde_json::json!({
            "generation": 3,
            "memory": { "resident_kib": 154476, "anon_kib": 107852, "purges": 520, "at_ms": 594300 }
        });
        assert_eq!(
            AfterPurge::of_status(&status),
            Ok(AfterPurge { resident_kib: 154476, anon_kib: 107852, purges: 520, at_ms: 594300 })
        );
        let old = serde_json::json!({ "generation": 3 });
        assert!(AfterPurge::of_status(&old).unwrap_err().contains("no memory"));
        let partial = serde_json::json!({ "memory": { "resident_kib": 1 } });
        assert!(AfterPurge::of_status(&partial).unwrap_err().contains("anon_kib"));
    }
}
