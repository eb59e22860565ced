//! Support for privileged end-to-end tests: network namespaces and veth pairs
//! that clean up after themselves, commands run inside them, packet captures
//! dissected by tshark, and private Open vSwitch instances.
//!
//! Every object deletes what it created when dropped, also when a test panics,
//! so a failed test leaves no namespace, link or daemon behind. Names carry the
//! process id and a counter, so tests can run in parallel.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod kernel_peer;
pub mod one_tunnel;
pub mod vm_lane;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `{prefix}{pid%10000}x{n}`, short
/// enough for an interface name (15 bytes) when the prefix is at most 4 bytes.
pub fn unique(prefix: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 10000)
}

/// True when running under CI, where a missing privilege or feature is a failure.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Returns true if the test may run. Without root: under CI this panics with
/// the reason; otherwise it prints why the test is skipped and returns false.
pub fn require_root(test: &str) -> bool {
    if effective_uid() == Some(0) {
        return true;
    }
    let why = format!("{test}: needs root (network namespaces, veth, XDP); run as root");
    if under_ci() {
        panic!("{why}; CI is set, so this is a failure, not a skip");
    }
    eprintln!("SKIPPED {why}");
    false
}

/// The effective uid: /proc/self belongs to it.
fn effective_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Checks that a program is on PATH, failing with the install hint if not.
pub fn require_program(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(found, "`{name}` is not installed: run scripts/setup.sh (as root)");
}

/// Runs a command to completion; panics with its stderr if it fails.
pub fn run(args: &[&str]) -> String {
    let out = output(args);
    assert!(
        out.status.success(),
        "`{}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command to completion and returns its output, whatever its status.
pub fn output(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", args[0]))
}

/// A network namespace, deleted on drop (with every process still in it killed).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `{prefix}…` with loopback up.
    pub fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NS ARGS...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        run(&v)
    }

    /// Runs a command inside the namespace; panics on failure.
    pub fn exec(&self, args: &[&str]) -> String {
        run(&self.cmd_args(args))
    }

    /// Runs a command inside the namespace and returns its output.
    pub fn exec_output(&self, args: &[&str]) -> Output {
        output(&self.cmd_args(args))
    }

    /// A `Command` that runs `args` inside the namespace.
    pub fn command(&self, args: &[&str]) -> Command {
        let v = self.cmd_args(args);
        let mut c = Command::new(v[0]);
        c.args(&v[1..]);
        c
    }

    fn cmd_args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        v
    }

    /// Runs a shell script inside the namespace; panics on failure.
    pub fn sh(&self, script: &str) -> String {
        self.exec(&["sh", "-ec", script])
    }

    /// The MAC address of an interface in this namespace.
    pub fn mac(&self, dev: &str) -> String {
        let out = self.ip(&["-br", "link", "show", dev]);
        out.split_whitespace().nth(2).unwrap_or_default().to_string()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill what still runs inside, then delete; deleting the namespace also
        // deletes the veth ends in it, and with them their peers.
        let _ = Command::new("ip").args(["netns", "pids", &self.name]).output().map(|o| {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        });
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Creates a veth pair with one end in each namespace, both up.
pub fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) {
    veth_queues(a, a_dev, b, b_dev, 1);
}

/// As `veth`, with `queues` RX and TX queues on each end (veth spreads
/// flows over them by hash, like a multi-queue NIC).
pub fn veth_queues(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str, queues: u32) {
    let q = queues.to_string();
    run(&[
        "ip",
        "link",
        "add",
        a_dev,
        "netns",
        a.name(),
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
        "type",
        "veth",
        "peer",
        "name",
        b_dev,
        "netns",
        b.name(),
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
    ]);
    a.ip(&["link", "set", a_dev, "up"]);
    b.ip(&["link", "set", b_dev, "up"]);
    if std::env::var_os("OVERLAYD_TEST_VETH_GRO").is_some() {
        // GRO gives each end NAPI, so the other end takes frames redirected
        // by XDP: overlayd's XDP tier can then send out of any veth port.
        a.exec(&["ethtool", "-K", a_dev, "gro", "on"]);
        b.exec(&["ethtool", "-K", b_dev, "gro", "on"]);
    }
}

/// A background process killed on drop.
pub struct Background {
    child: Option<Child>,
    what: String,
}

impl Background {
    pub fn spawn(mut cmd: Command, what: &str) -> Background {
        let child =
            cmd.stdin(Stdio::null()).spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Background { child: Some(child), what: what.to_string() }
    }

    /// Waits up to `limit` for the process to exit by itself.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        let child = self.child.as_mut()?;
        while start.elapsed() < limit {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends SIGTERM and waits up to two seconds, then kills.
    pub fn stop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            // Once reaped its pid may belong to someone else: never signal it.
            if matches!(c.try_wait(), Ok(Some(_))) {
                self.child = None;
                return;
            }
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        }
        if self.wait_timeout(Duration::from_secs(2)).is_none() {
            if let Some(c) = self.child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.child = None;
    }

    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn what(&self) -> &str {
        &self.what
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `f` every 20 ms until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A scratch directory removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A tshark capture on one interface of a namespace, bounded in packets and time.
pub struct Capture {
    proc: Background,
    file: PathBuf,
}

impl Capture {
    /// Starts capturing on `dev` into `file`, stopping after `max_packets` or
    /// `max_secs`, whichever comes first. Waits until tshark is capturing.
    pub fn start(
        ns: &Netns,
        dev: &str,
        filter: &str,
        file: &Path,
        max_packets: u32,
        max_secs: u32,
    ) -> Capture {
        require_program("tshark");
        let f = file.to_string_lossy().into_owned();
        let (c, a) = (format!("{max_packets}"), format!("duration:{max_secs}"));
        let mut args =
            vec!["tshark", "-q", "-n", "-i", dev, "-F", "pcap", "-w", &f, "-c", &c, "-a", &a];
        if !filter.is_empty() {
            args.extend_from_slice(&["-f", filter]);
        }
        let mut cmd = ns.command(&args);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut proc = Background::spawn(cmd, "tshark capture");
        // tshark creates the file once the capture is running.
        let ok = wait_until(Duration::from_secs(10), || file.exists());
        if !ok {
            proc.stop();
            panic!("tshark did not start capturing on {dev} in {}", ns.name());
        }
        std::thread::sleep(Duration::from_millis(200));
        Capture { proc, file: file.to_path_buf() }
    }

    /// Stops the capture and returns the file.
    pub fn finish(mut self) -> PathBuf {
        // SIGTERM makes tshark flush and close the file.
        std::thread::sleep(Duration::from_millis(300));
        self.proc.stop();
        self.file.clone()
    }
}

/// Dissects `file` with tshark and returns one row per packet with the given
/// fields (tshark `-T fields`), after `display_filter`.
pub fn tshark_fields(file: &Path, display_filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let f = file.to_string_lossy().into_owned();
    let mut args = vec![
        "tshark",
        "-n",
        "-r",
        &f,
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "udp.check_checksum:TRUE",
        "-o",
        "tcp.check_checksum:TRUE",
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-E",
        "occurrence=f",
    ];
    if !display_filter.is_empty() {
        args.extend_from_slice(&["-Y", display_filter]);
    }
    for fl in fields {
        args.extend_from_slice(&["-e", fl]);
    }
    run(&args).lines().map(|l| l.split('|').map(str::to_string).collect()).collect()
}

/// A private Open vSwitch (ovsdb-server + ovs-vswitchd) running inside a
/// namespace with its own run directory, so tests never touch a system OVS.
pub struct Ovs {
    dir: TempDir,
    ns_name: String,
    _db: Background,
    _vswitchd: Background,
}

impl Ovs {
    pub fn start(ns: &Netns) -> Ovs {
        require_program("ovsdb-server");
        require_program("ovs-vswitchd");
        let dir = TempDir::new("ovs");
        let d = dir.path().to_string_lossy().into_owned();
        let db = format!("{d}/conf.db");
        run(&["ovsdb-tool", "create", &db, "/usr/share/openvswitch/vswitch.ovsschema"]);
        let sock = format!("unix:{d}/db.sock");
        let remote = format!("--remote=p{sock}");
        let mut c = ns.command(&[
            "ovsdb-server",
            &db,
            &remote,
            &format!("--unixctl={d}/ovsdb.ctl"),
            &format!("--log-file={d}/ovsdb.log"),
        ]);
        c.env("OVS_RUNDIR", &d).env("OVS_DBDIR", &d).env("OVS_LOGDIR", &d);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        let db_proc = Background::spawn(c, "ovsdb-server");
        assert!(
            wait_until(Duration::from_secs(10), || Path::new(&format!("{d}/db.sock")).exists()),
            "ovsdb-server did not start (see {d}/ovsdb.log)"
        );
        run(&["ovs-vsctl", &format!("--db={sock}"), "--no-wait", "init"]);
        let mut c = ns.command(&[
            "ovs-vswitchd",
            &sock,
            &format!("--unixctl={d}/vsd.ctl"),
            &format!("--log-file={d}/vsd.log"),
        ]);
        c.env("OVS_RUNDIR", &d).env("OVS_DBDIR", &d).env("OVS_LOGDIR", &d);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        let vsd = Background::spawn(c, "ovs-vswitchd");
        assert!(
            wait_until(Duration::from_secs(10), || Path::new(&format!("{d}/vsd.ctl")).exists()),
            "ovs-vswitchd did not start (see {d}/vsd.log)"
        );
        Ovs { dir, ns_name: ns.name().to_string(), _db: db_proc, _vswitchd: vsd }
    }

    /// `ovs-vsctl` against this instance.
    pub fn vsctl(&self, args: &[&str]) -> String {
        let db = format!("--db=unix:{}/db.sock", self.dir.path().display());
        let mut v = vec!["ovs-vsctl", db.as_str()];
        v.extend_from_slice(args);
        run(&v)
    }

    /// `ovs-ofctl` against a bridge of this instance.
    pub fn ofctl(&self, cmd: &str, bridge: &str, rest: &[&str]) -> String {
        let mgmt = format!("unix:{}/{bridge}.mgmt", self.dir.path().display());
        let mut v = vec!["ovs-ofctl", cmd, mgmt.as_str()];
        v.extend_from_slice(rest);
        run(&v)
    }

    /// `ovs-appctl` against ovs-vswitchd.
    pub fn appctl(&self, args: &[&str]) -> String {
        let t = format!("{}/vsd.ctl", self.dir.path().display());
        let mut v = vec!["ovs-appctl", "-t", t.as_str()];
        v.extend_from_slice(args);
        run(&v)
    }

    pub fn namespace(&self) -> &str {
        &self.ns_name
    }
}

/// Sends raw Ethernet frames out of `dev` in `ns` through an AF_PACKET socket.
pub fn inject(ns: &Netns, dev: &str, frames: &[Vec<u8>]) {
    let hexes: Vec<String> = frames.iter().map(|f| hex(f)).collect();
    let mut args = vec![
        "python3",
        "-c",
        "import socket,sys; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); \
         s.bind((sys.argv[1], 0)); [s.send(bytes.fromhex(h)) for h in sys.argv[2:]]",
        dev,
    ];
    args.extend(hexes.iter().map(String::as_str));
    ns.exec(&args);
}

/// The frames of a pcap file.
pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    dataplane::io::pcap::PcapReader::new(f)
        .and_then(|r| r.read_all())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .map(|r| r.data)
        .collect()
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn mac_bytes(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s.split(':').filter_map(|h| u8::from_str_radix(h, 16).ok()).collect();
    v.try_into().unwrap_or_else(|_| panic!("not a MAC address: {s}"))
}

/// An ICMP echo request Ethernet frame, IPv4 with DF, 34 bytes of payload.
pub fn echo_request(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    seq: u16,
) -> Vec<u8> {
    use encap::wire::{checksum, ipv4};
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, (seq >> 8) as u8, seq as u8];
    icmp.extend_from_slice(b"overlayd wire interop test payload");
    let c = checksum::checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let repr = ipv4::Ipv4Repr {
        src,
        dst,
        protocol: encap::wire::IpProtocol::Icmp,
        payload_len: icmp.len() as u16,
        ttl: 64,
        dscp: 0,
        ecn: 0,
        dont_frag: true,
        ident: seq,
    };
    let mut ip = [0u8; 20];
    repr.emit(&mut ipv4::Packet::new_unchecked(&mut ip[..]));
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}

/// Checks that `inner` is a valid ICMP echo reply from `src` to `dst` and
/// returns its sequence number.
pub fn check_echo_reply(inner: &[u8], src: [u8; 4], dst: [u8; 4]) -> u16 {
    use encap::wire::{checksum, ipv4};
    assert_eq!(&inner[12..14], &[0x08, 0x00], "inner frame is IPv4");
    let ip = ipv4::Packet::new_checked(&inner[14..]).expect("inner IPv4 header");
    assert!(ip.verify_checksum(), "inner IPv4 checksum");
    assert_eq!((ip.src_addr(), ip.dst_addr()), (src, dst));
    let icmp = ip.payload();
    assert_eq!(icmp[0], 0, "ICMP echo reply");
    assert_eq!(checksum::checksum(icmp), 0, "ICMP checksum");
    u16::from_be_bytes([icmp[6], icmp[7]])
}

/// The path of one of the project's binaries (`overlayd`, `overlayctl`), built
/// on first use: the tests of this crate run the real daemon, and cargo does
/// not build another package's binaries for them.
pub fn project_bin(name: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    // Prebuilt binaries (the VM lane: the guest sees the target directory
    // read-only and has no use for cargo).
    if let Some(dir) = std::env::var_os("OVERLAYD_BIN_DIR") {
        let p = Path::new(&dir).join(name);
        assert!(p.is_file(), "{} is missing (OVERLAYD_BIN_DIR)", p.display());
        return p;
    }
    // target/<profile>/deps/<test> -> target/<profile>/
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target directory").to_path_buf();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut c = Command::new(cargo);
        c.args(["build", "-q", "-p", "dataplane", "--bins"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            c.arg("--release");
        }
        let st = c.status().expect("cannot run cargo to build overlayd");
        assert!(st.success(), "building overlayd and overlayctl failed");
    });
    let p = dir.join(name);
    assert!(p.is_file(), "{} is missing after the build", p.display());
    p
}

/// `overlayd run` inside a namespace, with its own state directory, socket
/// and log. Dropping it stops it with SIGTERM.
pub struct Overlayd {
    proc: Background,
    dir: TempDir,
}

impl Overlayd {
    /// Starts the daemon with `config` (TOML) and waits until its API answers.
    pub fn start(ns: &Netns, config: &str) -> Overlayd {
        Self::start_with(ns, config, &[])
    }

    pub fn start_with(ns: &Netns, config: &str, extra: &[&str]) -> Overlayd {
        Self::start_as(ns, config, extra, &[], None)
    }

    /// As [`Overlayd::start_with`], the daemon started through `wrapper`
    /// (such as `setpriv` with a reduced capability set) and, with `owner`,
    /// its directory (state, socket, configuration) owned by that uid.
    pub fn start_as(
        ns: &Netns,
        config: &str,
        extra: &[&str],
        wrapper: &[&str],
        owner: Option<u32>,
    ) -> Overlayd {
        let dir = TempDir::new("overlayd");
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        if let Some(uid) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), None).unwrap();
        }
        let bin = project_bin("overlayd");
        let mut args: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
        args.extend([
            bin.to_str().unwrap().to_string(),
            "run".into(),
            "--config".into(),
            dir.join("config.toml").to_string_lossy().into(),
            "--state-dir".into(),
            dir.join("state").to_string_lossy().into(),
            "--socket".into(),
            dir.join("api.sock").to_string_lossy().into(),
            // A clean stop: nothing of the test's daemon stays pinned.
            "--remove-on-exit".into(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = ns.command(&argv);
        cmd.stderr(log).stdout(Stdio::null());
        let proc = Background::spawn(cmd, "overlayd");
        let mut d = Overlayd { proc, dir };
        // An emulated CPU (the VM lane) loads XDP programs and fills the
        // AF_XDP rings many times slower.
        let limit = Duration::from_secs(if vm_lane::in_vm() { 90 } else { 15 });
        let up = wait_until(limit, || {
            d.dir.join("api.sock").exists() && d.ctl_output(&["status"]).status.success()
        });
        if !up {
            let st = d.proc.wait_timeout(Duration::from_millis(10));
            panic!("overlayd did not come up (exit: {st:?}); its log:\n{}", d.log());
        }
        d
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.proc.id().expect("running")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("api.sock")
    }

    /// The daemon's state directory (`--state-dir`).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    pub fn ctl_output(&self, args: &[&str]) -> Output {
        Command::new(project_bin("overlayctl"))
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run overlayctl")
    }

    /// Runs `overlayctl ARGS` and returns its standard output; panics on failure.
    pub fn ctl(&self, args: &[&str]) -> String {
        let o = self.ctl_output(args);
        assert!(
            o.status.success(),
            "overlayctl {} failed: {}\nlog:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `overlayctl --json ARGS`, parsed.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut v = vec!["--json"];
        v.extend_from_slice(args);
        serde_json::from_str(&self.ctl(&v)).expect("overlayctl --json printed JSON")
    }

    pub fn counters(&self) -> serde_json::Value {
        self.ctl_json(&["counters"])
    }

    pub fn status(&self) -> serde_json::Value {
        self.ctl_json(&["status"])
    }

    /// Waits until every next hop the daemon resolves is known.
    pub fn wait_neighbours(&self) {
        let ok = wait_until(Duration::from_secs(10), || {
            let s = self.status();
            s["io"]["neighbours"].as_array().is_some_and(|v| v.iter().all(|n| n["mac"].is_string()))
        });
        assert!(ok, "next hops not resolved: {}", self.status()["io"]["neighbours"]);
    }

    /// The counters once they stop moving (workers finish their batches
    /// quickly; this waits for in-flight packets to settle), checked for
    /// conservation: packets in = packets out + named drops.
    pub fn settled_counters(&self) -> serde_json::Value {
        let mut last = self.counters();
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(100));
            let c = self.counters();
            if c["rx"] == last["rx"] && c["tx"] == last["tx"] && c["dropped"] == last["dropped"] {
                last = c;
                break;
            }
            last = c;
        }
        assert_eq!(
            last["conserved"],
            serde_json::Value::Bool(true),
            "counters do not add up (rx + replicas + generated != tx + dropped): {last:#}"
        );
        last
    }

    /// Per drop reason, how many more `after` counts than `before` (two
    /// readings of `counters`); reasons that did not move are left out.
    pub fn drops_since(
        before: &serde_json::Value,
        after: &serde_json::Value,
    ) -> std::collections::BTreeMap<String, u64> {
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        after["drops"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), n(v) - n(&before["drops"][k])))
            .filter(|(_, d)| *d > 0)
            .collect()
    }

    /// Stops the daemon with SIGTERM; panics unless it exits cleanly.
    /// Returns its log.
    pub fn stop(mut self) -> String {
        let pid = self.proc.id().expect("running");
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let st = self.proc.wait_timeout(Duration::from_secs(10));
        assert!(
            st.is_some_and(|s| s.success()),
            "overlayd did not exit cleanly on SIGTERM ({st:?}); log:\n{}",
            self.log()
        );
        self.log()
    }
}

/// Pings `to` from `from`, `n` times; true if all were answered.
pub fn pings(from: &Netns, to: &str, n: u32) -> bool {
    from.exec_output(&["ping", "-c", &n.to_string(), "-i", "0.2", "-W", "2", to]).status.success()
}

/// Sends `bytes` bytes over TCP from `from` to `to_ip` (IPv4 or IPv6,
/// listening in `to`), and checks they arrive intact: SHA-256 computed at
/// both ends, and the bytes compared.
pub fn tcp_transfer(from: &Netns, to: &Netns, to_ip: &str, bytes: usize) {
    let tmp = TempDir::new("tcp");
    let src = tmp.join("src");
    let dst = tmp.join("dst");
    let data: Vec<u8> = (0..bytes).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    // Thirty seconds, and one more per 2 MB: 50 MB takes under a second on
    // every path that works.
    let secs = 30 + bytes / 2_000_000;
    let family = if to_ip.contains(':') { "-6" } else { "-4" };
    let mut server = Background::spawn(
        to.command(&[
            "sh",
            "-c",
            &format!("timeout {secs} nc {family} -l -p 5001 > {}", dst.display()),
        ]),
        "nc -l",
    );
    // Wait until the listener is bound (a slow or emulated CPU takes more
    // than a moment to start it), then give it one more.
    let listening = wait_until(Duration::from_secs(30), || {
        !to.exec_output(&["ss", "-Hltn", "sport = :5001"]).stdout.is_empty()
    });
    assert!(listening, "the TCP receiver (nc -l) did not start listening");
    std::thread::sleep(Duration::from_millis(100));
    let out = from.exec_output(&[
        "sh",
        "-c",
        &format!("timeout {secs} nc -N -w 5 {to_ip} 5001 < {}", src.display()),
    ]);
    assert!(out.status.success(), "nc client failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        server.wait_timeout(Duration::from_secs(secs as u64)).is_some(),
        "the TCP receiver did not finish"
    );
    let sha = |ns: &Netns, f: &Path| {
        let out = ns.exec(&["sha256sum", f.to_str().unwrap()]);
        out.split_whitespace().next().unwrap_or_default().to_string()
    };
    let (sent, got_sha) = (sha(from, &src), sha(to, &dst));
    let got = std::fs::read(&dst).unwrap();
    assert_eq!(got.len(), data.len(), "TCP transfer lost bytes");
    assert_eq!(sent, got_sha, "SHA-256 differs between sender and receiver");
    assert!(got == data, "TCP transfer corrupted bytes");
}

/// Sends `count` UDP datagrams of assorted sizes (1 to `max_len` bytes) from
/// `from` to an echo server on `to_ip` in `to`, each answered with the same
/// bytes: both directions, every datagram, checked byte for byte. A datagram
/// is sent again (at most three times) if its echo does not come back within
/// a second.
pub fn udp_echo(from: &Netns, to: &Netns, to_ip: &str, count: u32, max_len: usize) {
    const ECHO: &str = r#"
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 5002))
s.settimeout(30)
for _ in range(int(sys.argv[2]) * 3):
    try:
        d, a = s.recvfrom(65535)
    except socket.timeout:
        break
    if d == b"stop":
        break
    s.sendto(d, a)
"#;
    const CLIENT: &str = r#"
import socket, sys
ip, count, max_len = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.settimeout(1)
lost = 0
for i in range(count):
    n = 1 + (i * 7919) % max_len
    d = bytes((i + j * 31) % 256 for j in range(n))
    for attempt in range(3):
        s.sendto(d, (ip, 5002))
        try:
            while True:
                e, _ = s.recvfrom(65535)
                if e == d:
                    break
            break
        except socket.timeout:
            continue
    else:
        lost += 1
s.sendto(b"stop", (ip, 5002))
print(lost)
"#;
    let n = count.to_string();
    let mut server =
        Background::spawn(to.command(&["python3", "-c", ECHO, to_ip, &n]), "UDP echo server");
    std::thread::sleep(Duration::from_millis(300));
    let out =
        from.exec(&["timeout", "60", "python3", "-c", CLIENT, to_ip, &n, &max_len.to_string()]);
    let lost: u32 = out.trim().parse().unwrap_or_else(|_| panic!("UDP echo client said {out:?}"));
    assert_eq!(lost, 0, "{lost} of {count} UDP datagrams to {to_ip} never came back");
    server.wait_timeout(Duration::from_secs(5));
}

/// TCP and UDP segments the kernel of `ns` refused for a bad checksum
/// (`TcpInCsumErrors`, `UdpInCsumErrors`, `Udp6InCsumErrors`), as name = count.
pub fn checksum_errors(ns: &Netns) -> Vec<(String, u64)> {
    let out = ns.exec(&["nstat", "-asz", "TcpInCsumErrors", "UdpInCsumErrors", "Udp6InCsumErrors"]);
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (name, n) = (w.next()?, w.next()?.parse().ok()?);
            name.ends_with("InCsumErrors").then(|| (name.to_string(), n))
        })
        .collect()
}

/// A device's offload features as `ethtool -k` shows them, to check later
/// that nothing changed what a user can change.
#[derive(Clone, Debug)]
pub struct Features {
    ns: String,
    dev: String,
    /// Feature -> (on, fixed by the kernel).
    list: std::collections::BTreeMap<String, (bool, bool)>,
}

impl Features {
    pub fn read(ns: &Netns, dev: &str) -> Features {
        let list = Features::parse(&ns.exec(&["ethtool", "-k", dev]));
        Features { ns: ns.name().to_string(), dev: dev.to_string(), list }
    }

    pub fn dev(&self) -> &str {
        &self.dev
    }

    pub fn is_on(&self, feature: &str) -> bool {
        self.list.get(feature).is_some_and(|f| f.0)
    }

    /// What changed since: features not fixed by the kernel (then and now)
    /// that flipped, and checksum offload if it is off. Attaching XDP to a
    /// veth's peer turns its TSO `off [fixed]`: that is the kernel, not a
    /// setting.
    pub fn changes(&self) -> Vec<String> {
        let out = run(&["ip", "netns", "exec", &self.ns, "ethtool", "-k", &self.dev]);
        let now = Features::parse(&out);
        let mut changed: Vec<String> = self
            .list
            .iter()
            .filter_map(|(name, (on, fixed))| {
                let (on_now, fixed_now) = now.get(name).copied()?;
                (!fixed && !fixed_now && *on != on_now).then(|| format!("{name}: {on} -> {on_now}"))
            })
            .collect();
        if !now.get("tx-checksumming").is_some_and(|f| f.0) {
            changed.push("tx-checksumming is off".into());
        }
        changed
    }

    /// Panics if [`Features::changes`] finds any.
    pub fn assert_unchanged(&self) {
        let changed = self.changes();
        assert!(
            changed.is_empty(),
            "offloads of workload device {} in {} were changed: {changed:?}",
            self.dev,
            self.ns
        );
    }

    /// A summary line (`tcp-segmentation-offload`, followed by its indented
    /// features) follows from them: it is compared through them, as if fixed.
    fn parse(out: &str) -> std::collections::BTreeMap<String, (bool, bool)> {
        let mut list: std::collections::BTreeMap<String, (bool, bool)> = Default::default();
        let mut summary: Option<String> = None;
        for l in out.lines() {
            let Some((name, rest)) = l.trim().split_once(": ") else { continue };
            if l.starts_with('\t') {
                if let Some(f) = summary.take().and_then(|s| list.get_mut(&s)) {
                    f.1 = true;
                }
            } else {
                summary = Some(name.to_string());
            }
            list.insert(name.to_string(), (rest.starts_with("on"), rest.contains("[fixed]")));
        }
        list
    }
}

/// Turns checksum offload off on a peer host's uplink veth, and says so: a
/// real NIC finishes the checksums a kernel leaves partial, veth does not,
/// so without this the peer's tunnel packets carry partial checksums on the
/// wire.
pub fn finish_checksums_like_a_nic(ns: &Netns, dev: &str) {
    ns.exec(&["ethtool", "-K", dev, "tx", "off"]);
    eprintln!(
        "note: peer uplink {dev} in {} has tx checksumming off, standing in for a NIC that finishes partial checksums",
        ns.name()
    );
}

/// True if any interface in the namespace has an XDP program attached.
pub fn xdp_attached(ns: &Netns) -> bool {
    ns.ip(&["-d", "link", "show"]).contains("prog/xdp")
}

/// A drop counter by reason name (0 if absent).
pub fn drops(counters: &serde_json::Value, reason: &str) -> u64 {
    counters["drops"][reason].as_u64().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_fit_an_interface_name() {
        let a = unique("ovl");
        let b = unique("ovl");
        assert_ne!(a, b);
        assert!(a.len() <= 15, "{a} is too long for IFNAMSIZ");
    }
}
