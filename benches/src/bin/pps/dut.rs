//! The topology and the devices under test.
//!
//! ```text
//!   pb-gen            pb-dut               pb-sink
//!    g0  ----------  d0 [device] d1  ---------  s1
//! ```
//!
//! Encapsulation scenarios: d0 is the workload side, d1 the uplink, and the
//! tunnel goes from 192.0.2.1 (the device) to 192.0.2.2 (the sink).
//! Decapsulation: d0 is the uplink, 192.0.2.1, and the generator is the
//! remote VTEP 192.0.2.3; d1 delivers the inner frames to the sink.
//!
//! Every process started here is a child of the harness, stopped by its pid;
//! the namespaces (and with them the veths and their XDP programs) are
//! deleted when a `Topology` is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bpf::{Pass, Sink, Via, XdpFwd};
use crate::frames;
use crate::plan::{DutKind, Kind, Scenario};

pub const NS_GEN: &str = "pb-gen";
pub const NS_DUT: &str = "pb-dut";
pub const NS_SINK: &str = "pb-sink";
pub const MAC_G0: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x01];
pub const MAC_D0: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x02];
pub const MAC_D1: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x01];
pub const MAC_S1: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x02];
/// The CPU the device under test's packet thread is pinned to; the
/// generator gets the other one.
pub const DUT_CPU: usize = 0;
pub const GEN_CPU: usize = 1;

pub fn mac(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Runs a command to completion; its stdout, or an error with its stderr.
pub fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut v = vec!["ip", "-n", ns];
    v.extend_from_slice(args);
    sh(&v)
}

fn ns_exec(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    sh(&v)
}

/// Deletes the harness's namespaces (what a killed earlier run left too).
pub fn delete_namespaces() {
    for n in [NS_GEN, NS_DUT, NS_SINK] {
        let _ = Command::new("ip").args(["netns", "del", n]).stderr(Stdio::null()).status();
    }
}

/// The kernel threads named `napi/...`.
fn napi_threads() -> Vec<u32> {
    let mut v = Vec::new();
    if let Ok(d) = std::fs::read_dir("/proc") {
        for e in d.filter_map(Result::ok) {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.starts_with("napi/") {
                v.push(pid);
            }
        }
    }
    v
}

/// Turns on threaded NAPI for `dev` in `ns` and pins its poll thread to
/// `cpu`; returns the thread's pid. A veth's NAPI poll otherwise runs in the
/// softirq of whichever CPU sent into it, here the generator's; as a pinned
/// thread it runs where the harness says, and its CPU time is measurable.
pub fn pin_napi(ns: &str, dev: &str, cpu: usize) -> Result<Vec<u32>, String> {
    let before = napi_threads();
    ns_exec(ns, &["sh", "-c", &format!("echo 1 > /sys/class/net/{dev}/threaded")])?;
    let prefix = format!("napi/{dev}-");
    let mut mine = Vec::new();
    let end = Instant::now() + Duration::from_secs(2);
    while mine.is_empty() && Instant::now() < end {
        mine = napi_threads()
            .into_iter()
            .filter(|p| !before.contains(p))
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.starts_with(&prefix))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
    }
    if mine.is_empty() {
        return Err(format!("{ns}/{dev}: no NAPI thread appeared after `threaded` was set"));
    }
    for p in &mine {
        sh(&["taskset", "-pc", &cpu.to_string(), &p.to_string()])?;
    }
    Ok(mine)
}

/// gen -> dut -> sink, with the sink's counter attached.
pub struct Topology {
    pub sink: Sink,
}

impl Topology {
    pub fn build() -> Result<Topology, String> {
        delete_namespaces();
        for n in [NS_GEN, NS_DUT, NS_SINK] {
            sh(&["ip", "netns", "add", n])?;
            // no IPv6 autoconfiguration: nothing but the test traffic reaches the sink
            ns_exec(
                n,
                &[
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ],
            )?;
            ip(n, &["link", "set", "lo", "up"])?;
        }
        let veth = |a: &str, ans: &str, am: [u8; 6], b: &str, bns: &str, bm: [u8; 6]| {
            sh(&[
                "ip",
                "link",
                "add",
                a,
                "netns",
                ans,
                "address",
                &mac(am),
                "type",
                "veth",
                "peer",
                "name",
                b,
                "netns",
                bns,
                "address",
                &mac(bm),
            ])
        };
        veth("g0", NS_GEN, MAC_G0, "d0", NS_DUT, MAC_D0)?;
        veth("d1", NS_DUT, MAC_D1, "s1", NS_SINK, MAC_S1)?;
        for (n, d) in [(NS_GEN, "g0"), (NS_DUT, "d0"), (NS_DUT, "d1"), (NS_SINK, "s1")] {
            ip(n, &["link", "set", d, "up"])?;
        }
        ip(NS_SINK, &["addr", "add", "192.0.2.2/24", "dev", "s1"])?;
        ip(NS_GEN, &["addr", "add", "192.0.2.3/24", "dev", "g0"])?;
        let sink = Sink::attach(NS_SINK, "s1")?;
        Ok(Topology { sink })
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        delete_namespaces();
    }
}

/// A child process stopped with SIGTERM (then SIGKILL) when dropped.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    fn spawn(mut c: Command, name: &'static str, log: &Path) -> Result<Proc, String> {
        let f = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        c.stdin(Stdio::null()).stdout(f.try_clone().map_err(|e| e.to_string())?).stderr(f);
        let child = c.spawn().map_err(|e| format!("starting {name}: {e}"))?;
        Ok(Proc { child, name })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("pps: {} (pid {pid}) ignored SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{what}: not ready after {secs} s"))
}

/// Where the harness finds its programs and writes its scratch files.
#[derive(Clone, Debug)]
pub struct Env {
    pub bin_dir: PathBuf,
    pub work: PathBuf,
    /// Run the input veth's receive path as a NAPI thread pinned to the
    /// device's CPU (instead of in the generator CPU's softirq).
    pub napi_thread: bool,
    /// The reference XDP forwarders (xdp-null, xdp-encap) send through a
    /// cpumap from the device's CPU (`bpf::Via::Cpumap`).
    pub xdp_cpumap: bool,
}

impl Env {
    /// Where the reference XDP forwarders transmit from.
    fn via(&self) -> Via {
        if self.xdp_cpumap {
            Via::Cpumap(DUT_CPU as u32)
        } else {
            Via::InPlace
        }
    }
}

/// The port option that selects the io_uring backend (packet sockets driven
/// by io_uring) in an overlayd configuration.
pub const URING_PORT_OPTION: &str = "backend = \"af_packet\"";
/// The AF_XDP backend, named: on these veths `backend = "auto"` (the
/// default) would choose tc, which keeps bulk TCP's TSO but is not what
/// these devices measure (the XDP tier's and AF_XDP's packet rate, as on a
/// NIC, where `auto` chooses AF_XDP).
pub const AF_XDP_PORT_OPTION: &str = "backend = \"af_xdp\"";
/// The XDP tier on (overlayd's default) or off.
pub const TIER_AUTO: &str = "xdp_tier = \"auto\"";
pub const TIER_OFF: &str = "xdp_tier = \"off\"";

/// The overlayd configuration of a scenario group (TOML).
/// `top`: top-level settings (the XDP tier's); `port_extra`: each port's.
pub fn overlayd_config(kind: Kind, rules: usize, top: &str, port_extra: &str) -> String {
    let (wl, up) = if kind.decap() { ("d1", "d0") } else { ("d0", "d1") };
    let tunnel = match kind {
        Kind::VxlanEncap => format!(
            "type = \"vxlan\"\nuplink = \"d1\"\nlocal = \"192.0.2.1\"\nremote = \"192.0.2.2\"\nvni = 42\nnext_hop_mac = \"{}\"",
            mac(MAC_S1)
        ),
        Kind::GretapEncap => format!(
            "type = \"gretap\"\nuplink = \"d1\"\nlocal = \"192.0.2.1\"\nremote = \"192.0.2.2\"\nkey = 42\nnext_hop_mac = \"{}\"",
            mac(MAC_S1)
        ),
        Kind::GeneveEncap => format!(
            "type = \"geneve\"\nuplink = \"d1\"\nlocal = \"192.0.2.1\"\nremote = \"192.0.2.2\"\nvni = 42\nnext_hop_mac = \"{}\"",
            mac(MAC_S1)
        ),
        Kind::VxlanDecap => format!(
            "type = \"vxlan\"\nuplink = \"d0\"\nlocal = \"192.0.2.1\"\nremote = \"192.0.2.3\"\nvni = 42\nnext_hop_mac = \"{}\"",
            mac(MAC_G0)
        ),
    };
    let rule = if kind.decap() {
        format!("match = {{ tunnel = \"t\", vni = 42 }}\nactions = [{{ output = \"{wl}\" }}]")
    } else {
        format!("match = {{ in_port = \"{wl}\" }}\nactions = [{{ encap = \"t\" }}]")
    };
    format!(
        "generation = 1\n{top}\n\n[[ports]]\nname = \"{wl}\"\nkind = \"workload\"\ninterface = \"{wl}\"\n{port_extra}\n\n\
         [[ports]]\nname = \"{up}\"\nkind = \"uplink\"\ninterface = \"{up}\"\n{port_extra}\n\n\
         [[tunnels]]\nname = \"t\"\n{tunnel}\n\n\
         # the one rule that matches the traffic, below all the others\n\
         [[rules]]\nid = 0\npriority = 1\n{rule}\n\n{}",
        benches::noise_rules(rules, wl, up)
    )
}

/// The OpenFlow equivalent of `benches::noise_match` (same shapes, values and
/// priorities; `drop`).
pub fn ovs_noise_flows(rules: usize, wl: &str, up: &str) -> String {
    let mut s = String::new();
    for i in 1..rules {
        let m = match benches::noise_shape(i) {
            0 => format!("ip,nw_dst=203.0.{}.{}", (i >> 8) % 256, i % 256),
            1 => format!("ip,nw_src=203.0.{}.0/24", i % 256),
            2 => format!("udp,tp_dst={}", 1024 + i % 60000),
            3 => format!("tcp,tp_dst={}", i % 65536),
            4 => format!(
                "dl_dst=02:00:00:{:02x}:{:02x}:{:02x}",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            ),
            5 => format!("dl_vlan={}", 1 + i % 4000),
            6 => format!("dl_type=0x{:04x}", 0x9000 + i % 4096),
            7 => format!("ipv6,ipv6_dst=2001:db8:{:x}::/48", i % 65536),
            8 => format!("udp,tp_src={}", 1 + i % 60000),
            9 => format!("in_port={up},udp,tp_dst={}", i % 65536),
            10 => format!("tun_id={}", 100_000 + i),
            11 => format!(
                "dl_src=02:00:01:{:02x}:{:02x}:{:02x}",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            ),
            12 => format!("tcp,nw_dst=203.0.113.0/24,tp_dst={}", i % 65536),
            13 => format!("udp,nw_src=203.0.{}.{}", (i >> 8) % 256, i % 256),
            14 => format!(
                "dl_vlan={},dl_dst=02:00:02:00:{:02x}:{:02x}",
                1 + i % 4000,
                (i >> 8) & 255,
                i & 255
            ),
            _ => format!("in_port={wl},ip,nw_dst=203.0.{}.{}", (i >> 8) % 256, i % 256),
        };
        s += &format!("priority={},{m},actions=drop\n", 10 + i % 50);
    }
    s
}

/// A running device under test.
pub struct Dut {
    pub kind: DutKind,
    /// Processes whose CPU time is the device's (empty for the kernel).
    pub pids: Vec<u32>,
    procs: Vec<Proc>,
    ovs_ctl: Option<PathBuf>,
    _pass: Option<Pass>,
    _fwd: Option<XdpFwd>,
}

impl Dut {
    /// Checks the device can run this scenario here; the reason if not.
    pub fn available(kind: DutKind, s: &Scenario, env: &Env) -> Result<(), String> {
        match kind {
            DutKind::XdpNull => match s.kind {
                Kind::VxlanEncap => Ok(()),
                _ => Err("the null forwarder is measured beside VXLAN encapsulation only".into()),
            },
            DutKind::XdpEncap => match s.kind {
                Kind::VxlanEncap => Ok(()),
                _ => Err("the fixed-header encapsulation is VXLAN encapsulation only".into()),
            },
            DutKind::Overlayd | DutKind::OverlaydAfxdp => {
                if !env.bin_dir.join("overlayd").exists() {
                    return Err(format!("no overlayd in {}", env.bin_dir.display()));
                }
                Ok(())
            }
            DutKind::OverlaydUring => {
                let c = overlayd_config(s.kind, 2, TIER_OFF, URING_PORT_OPTION);
                engine::model::Config::from_toml(&c).map(|_| ()).map_err(|e| {
                    format!(
                        "the io_uring backend is not in this build (its port option `{URING_PORT_OPTION}` is refused: {})",
                        e.to_string().lines().next().unwrap_or("")
                    )
                })
            }
            DutKind::OvsAfxdp => sh(&["ovs-vswitchd", "--version"]).map(|_| ()),
            DutKind::Kernel => match s.kind {
                Kind::GretapEncap => {
                    Err("this kernel has no GRE module (Open vSwitch is the GRE peer)".into())
                }
                Kind::GeneveEncap => {
                    Err("this kernel has no geneve module (Open vSwitch is the Geneve peer)".into())
                }
                _ => Ok(()),
            },
        }
    }

    /// An XDP forwarder as the device: no process of its own.
    fn xdp(kind: DutKind, fwd: XdpFwd) -> Dut {
        Dut { kind, pids: vec![], procs: vec![], ovs_ctl: None, _pass: None, _fwd: Some(fwd) }
    }

    /// Starts the device. With `env.napi_thread`, its input veth's receive
    /// path (NAPI) then runs as a thread on the device's CPU and counts as the
    /// device's CPU time: every device gets one CPU for all its work, kernel
    /// or user, and the generator keeps the other. Without it (the default),
    /// that work runs in the softirq of the generator's CPU, which slows the
    /// generator down as it does the device.
    pub fn start(kind: DutKind, s: &Scenario, env: &Env) -> Result<Dut, String> {
        let mut d = match kind {
            DutKind::Overlayd => Self::overlayd(kind, s, env, TIER_AUTO, AF_XDP_PORT_OPTION)?,
            DutKind::OverlaydAfxdp => Self::overlayd(kind, s, env, TIER_OFF, AF_XDP_PORT_OPTION)?,
            DutKind::OverlaydUring => Self::overlayd(kind, s, env, TIER_OFF, URING_PORT_OPTION)?,
            DutKind::OvsAfxdp => Self::ovs(s, env)?,
            DutKind::Kernel => Self::kernel(s)?,
            DutKind::XdpNull => Self::xdp(kind, XdpFwd::null(NS_DUT, "d0", "d1", env.via())?),
            DutKind::XdpEncap => Self::xdp(
                kind,
                XdpFwd::encap(
                    NS_DUT,
                    "d0",
                    "d1",
                    frames::vxlan_header(MAC_S1, MAC_D1, frames::DUT_IP, frames::SINK_IP),
                    env.via(),
                )?,
            ),
        };
        if env.napi_thread {
            std::thread::sleep(Duration::from_millis(500));
            d.pids.extend(pin_napi(NS_DUT, "d0", DUT_CPU)?);
        }
        Ok(d)
    }

    fn overlayd(
        kind: DutKind,
        s: &Scenario,
        env: &Env,
        top: &str,
        extra: &str,
    ) -> Result<Dut, String> {
        let dir = env.work.join(kind.name());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let text = overlayd_config(s.kind, s.rules, top, extra);
        engine::model::Config::from_toml(&text)
            .map_err(|e| format!("the harness's overlayd configuration is invalid: {e}"))?;
        let cfg = dir.join("dut.toml");
        std::fs::write(&cfg, &text).map_err(|e| e.to_string())?;
        let sock = dir.join("api.sock");
        let overlayd = env.bin_dir.join("overlayd");
        let mut c = Command::new("ip");
        c.args(["netns", "exec", NS_DUT])
            .arg(&overlayd)
            .arg("run")
            .arg("--config")
            .arg(&cfg)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(&sock)
            .args(["--workers", "1"]);
        let mut p = Proc::spawn(c, "overlayd", &dir.join("overlayd.log"))?;
        let ctl = env.bin_dir.join("overlayctl");
        let log = dir.join("overlayd.log");
        wait_for("overlayd", 30, || {
            p.alive()
                && Command::new(&ctl)
                    .arg("--socket")
                    .arg(&sock)
                    .arg("status")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
        })
        .map_err(|e| {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            format!("{e}; its log:\n{}", tail.lines().rev().take(5).collect::<Vec<_>>().join("\n"))
        })?;
        // The packet socket leaves d0 without XDP, so, as for the kernel
        // device, a program that passes everything turns on the NAPI path
        // through which the generator's XDP_TX frames enter.
        let pass = match kind {
            DutKind::OverlaydUring => Some(Pass::attach(NS_DUT, "d0")?),
            _ => None,
        };
        Ok(Dut {
            kind,
            pids: vec![p.pid()],
            procs: vec![p],
            ovs_ctl: None,
            _pass: pass,
            _fwd: None,
        })
    }

    fn ovs(s: &Scenario, env: &Env) -> Result<Dut, String> {
        let dir = env.work.join("ovs");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let d = dir.to_string_lossy().into_owned();
        let db = format!("{d}/conf.db");
        sh(&["ovsdb-tool", "create", &db, "/usr/share/openvswitch/vswitch.ovsschema"])?;
        let env_vars = [("OVS_RUNDIR", &d), ("OVS_DBDIR", &d), ("OVS_LOGDIR", &d)];
        let mut c = Command::new("ip");
        c.args(["netns", "exec", NS_DUT, "ovsdb-server", &db])
            .arg(format!("--remote=punix:{d}/db.sock"))
            .arg(format!("--unixctl={d}/ovsdb.ctl"))
            .envs(env_vars);
        let dbp = Proc::spawn(c, "ovsdb-server", &dir.join("ovsdb.out"))?;
        wait_for("ovsdb-server", 10, || Path::new(&format!("{d}/db.sock")).exists())?;
        let dbarg = format!("--db=unix:{d}/db.sock");
        let vsctl = |args: &[&str]| {
            let mut v = vec!["ovs-vsctl", dbarg.as_str()];
            v.extend_from_slice(args);
            sh(&v)
        };
        vsctl(&["--no-wait", "init"])?;
        // one PMD thread, on the CPU overlayd's worker is pinned to
        vsctl(&[
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            &format!("other_config:pmd-cpu-mask=0x{:x}", 1u32 << DUT_CPU),
        ])?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", NS_DUT, "ovs-vswitchd"])
            .arg(format!("unix:{d}/db.sock"))
            .arg(format!("--unixctl={d}/vsd.ctl"))
            .arg(format!("--log-file={d}/vsd.log"))
            .envs(env_vars);
        let vsd = Proc::spawn(c, "ovs-vswitchd", &dir.join("vsd.out"))?;
        wait_for("ovs-vswitchd", 10, || Path::new(&format!("{d}/vsd.ctl")).exists())?;
        let (wl, up, up_mac) =
            if s.kind.decap() { ("d1", "d0", MAC_D0) } else { ("d0", "d1", MAC_D1) };
        let (tun, ttype, remote, key) = match s.kind {
            Kind::VxlanEncap => ("vxlan0", "vxlan", "192.0.2.2", "42"),
            Kind::VxlanDecap => ("vxlan0", "vxlan", "192.0.2.3", "42"),
            Kind::GretapEncap => ("gre0", "gre", "192.0.2.2", "42"),
            Kind::GeneveEncap => ("gnv0", "geneve", "192.0.2.2", "42"),
        };
        let afxdp = |br: &str, port: &str| {
            vsctl(&[
                "add-port",
                br,
                port,
                "--",
                "set",
                "interface",
                port,
                "type=afxdp",
                "options:xdp-mode=native",
            ])
        };
        vsctl(&["add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev"])?;
        afxdp("br-int", wl)?;
        vsctl(&[
            "add-port",
            "br-int",
            tun,
            "--",
            "set",
            "interface",
            tun,
            &format!("type={ttype}"),
            &format!("options:remote_ip={remote}"),
            "options:local_ip=192.0.2.1",
            &format!("options:key={key}"),
        ])?;
        vsctl(&[
            "add-br",
            "br-phy",
            "--",
            "set",
            "bridge",
            "br-phy",
            "datapath_type=netdev",
            &format!("other_config:hwaddr={}", mac(up_mac)),
        ])?;
        afxdp("br-phy", up)?;
        ip(NS_DUT, &["addr", "add", "192.0.2.1/24", "dev", "br-phy"])?;
        ip(NS_DUT, &["link", "set", "br-phy", "up"])?;
        let flows = dir.join("flows.txt");
        let main = if s.kind.decap() {
            format!("priority=1,in_port={tun},actions=output:{wl}\n")
        } else {
            format!("priority=1,in_port={wl},actions=output:{tun}\n")
        };
        std::fs::write(&flows, main + &ovs_noise_flows(s.rules, wl, tun))
            .map_err(|e| e.to_string())?;
        let mgmt = format!("unix:{d}/br-int.mgmt");
        wait_for("br-int", 10, || Path::new(&format!("{d}/br-int.mgmt")).exists())?;
        sh(&["ovs-ofctl", "del-flows", &mgmt])?;
        sh(&["ovs-ofctl", "add-flows", &mgmt, &flows.to_string_lossy()])?;
        let ctl = dir.join("vsd.ctl");
        let ctls = ctl.to_string_lossy().into_owned();
        let (peer_ip, peer_mac) =
            if s.kind.decap() { ("192.0.2.3", MAC_G0) } else { ("192.0.2.2", MAC_S1) };
        sh(&["ovs-appctl", "-t", &ctls, "tnl/neigh/set", "br-phy", peer_ip, &mac(peer_mac)])?;
        let pid = vsd.pid();
        Ok(Dut {
            kind: DutKind::OvsAfxdp,
            pids: vec![pid],
            procs: vec![vsd, dbp],
            ovs_ctl: Some(ctl),
            _pass: None,
            _fwd: None,
        })
    }

    fn kernel(s: &Scenario) -> Result<Dut, String> {
        let (input, output) = ("d0", "d1");
        if s.kind.decap() {
            ip(NS_DUT, &["addr", "add", "192.0.2.1/24", "dev", "d0"])?;
            ip(
                NS_DUT,
                &[
                    "link",
                    "add",
                    "vx0",
                    "type",
                    "vxlan",
                    "id",
                    "42",
                    "local",
                    "192.0.2.1",
                    "remote",
                    "192.0.2.3",
                    "dstport",
                    "4789",
                    "dev",
                    "d0",
                ],
            )?;
        } else {
            ip(NS_DUT, &["addr", "add", "192.0.2.1/24", "dev", "d1"])?;
            ip(
                NS_DUT,
                &[
                    "neigh",
                    "replace",
                    "192.0.2.2",
                    "lladdr",
                    &mac(MAC_S1),
                    "dev",
                    "d1",
                    "nud",
                    "permanent",
                ],
            )?;
            ip(
                NS_DUT,
                &[
                    "link",
                    "add",
                    "vx0",
                    "type",
                    "vxlan",
                    "id",
                    "42",
                    "local",
                    "192.0.2.1",
                    "remote",
                    "192.0.2.2",
                    "dstport",
                    "4789",
                    "dev",
                    "d1",
                ],
            )?;
        }
        // No multicast snooping: a snooping bridge joins the all-snoopers
        // group (224.0.0.106) and sends an IGMPv3 report out of its ports,
        // which reached the sink as a wrong frame in every kernel run.
        ip(NS_DUT, &["link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])?;
        let port = if s.kind.decap() { output } else { input };
        ip(NS_DUT, &["link", "set", port, "master", "br0"])?;
        ip(NS_DUT, &["link", "set", "vx0", "master", "br0"])?;
        ip(NS_DUT, &["link", "set", "vx0", "up"])?;
        ip(NS_DUT, &["link", "set", "br0", "up"])?;
        // frames sent with XDP_TX enter d0 only through its NAPI path, which
        // an XDP program (here one that passes everything) turns on
        let pass = Pass::attach(NS_DUT, input)?;

        Ok(Dut {
            kind: DutKind::Kernel,
            pids: vec![],
            procs: vec![],
            ovs_ctl: None,
            _pass: Some(pass),
            _fwd: None,
        })
    }

    pub fn alive(&mut self) -> bool {
        self.procs.iter_mut().all(|p| p.alive())
    }

    /// Before a measurement: clears the device's own statistics.
    pub fn clear_stats(&self) {
        if let Some(ctl) = &self.ovs_ctl {
            let _ =
                sh(&["ovs-appctl", "-t", &ctl.to_string_lossy(), "dpif-netdev/pmd-stats-clear"]);
        }
    }

    /// After a measurement: cycles per packet, where the device reports them
    /// (Open vSwitch's `pmd-perf-show`: "Rx packets: N (K Kpps, C cycles/pkt)").
    pub fn cycles_per_packet(&self) -> Option<f64> {
        let ctl = self.ovs_ctl.as_ref()?;
        let out =
            sh(&["ovs-appctl", "-t", &ctl.to_string_lossy(), "dpif-netdev/pmd-perf-show"]).ok()?;
        let line = out.lines().find(|l| l.contains("Rx packets") && l.contains("cycles/pkt"))?;
        let before = line.split("cycles/pkt").next()?;
        before.split(|c: char| c == ',' || c.is_whitespace()).rfind(|w| !w.is_empty())?.parse().ok()
    }

    /// Flow entries the XDP tier holds now (overlayd with the tier on).
    pub fn tier_entries(&self, env: &Env) -> Option<u64> {
        if self.kind != DutKind::Overlayd {
            return None;
        }
        let sock = env.work.join(self.kind.name()).join("api.sock");
        let ctl = env.bin_dir.join("overlayctl");
        let out =
            sh(&[&ctl.to_string_lossy(), "--socket", &sock.to_string_lossy(), "--json", "status"])
                .ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        v["io"]["tier"]["entries"].as_u64()
    }

    /// What the device says it did, for the log of a run.
    pub fn describe(&self, env: &Env) -> String {
        match self.kind {
            DutKind::Overlayd | DutKind::OverlaydAfxdp | DutKind::OverlaydUring => {
                let sock = env.work.join(self.kind.name()).join("api.sock");
                sh(&[
                    &env.bin_dir.join("overlayctl").to_string_lossy(),
                    "--socket",
                    &sock.to_string_lossy(),
                    "counters",
                ])
                .unwrap_or_else(|e| e)
            }
            DutKind::OvsAfxdp => {
                let ctl = self
                    .ovs_ctl
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                sh(&["ovs-appctl", "-t", &ctl, "dpif-netdev/pmd-perf-show"]).unwrap_or_else(|e| e)
            }
            DutKind::Kernel => {
                ns_exec(NS_DUT, &["ip", "-s", "link", "show", "vx0"]).unwrap_or_else(|e| e)
            }
            DutKind::XdpNull | DutKind::XdpEncap => {
                ns_exec(NS_DUT, &["ip", "-s", "link", "show", "d1"]).unwrap_or_else(|e| e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every scenario's overlayd configuration is one the daemon accepts
    /// (checked without running the harness).
    #[test]
    fn every_scenario_configuration_validates() {
        for kind in Kind::ALL {
            for top in [TIER_AUTO, TIER_OFF] {
                let c = overlayd_config(kind, 10, top, AF_XDP_PORT_OPTION);
                engine::model::Config::from_toml(&c)
                    .unwrap_or_else(|e| panic!("{}: {e}\n{c}", kind.name()));
            }
        }
    }
}
