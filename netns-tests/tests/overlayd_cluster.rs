//! Cluster mode end to end (docs/cluster.md): a 3-member etcd cluster with
//! TLS (a throwaway CA made with openssl), four hosts each running overlayd
//! with two workloads, one network (VNI 42) and cluster-wide rules written
//! into the store, endpoints registered with `overlayctl cluster`. Then:
//! all-pairs pings; the time from an endpoint write to the entry being in
//! every other host's running rule set (p50/p99 over 60 writes); one member
//! killed (no effect); all members killed (forwarding goes on, writes fail
//! with the degraded message) and back; a host cut from the store while the
//! store compacts (its watch resumes behind the compaction: it relists and
//! converges); a host killed (its lease expires and every other host drops
//! its tunnel and FDB entries within the TTL plus one second).
//!
//! ```text
//!  w<i>a, w<i>b --- h<i>: overlayd  up ---+--- sw: br0 (underlay 192.0.2.0/24)
//!                                  mg ---+--- sw: br1 (store 203.0.113.0/24) --- e1, e2, e3: etcd
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use netns_tests::*;

const HOSTS: usize = 4;
const MEMBERS: usize = 3;
const TTL: u64 = 3;
const PREFIX: &str = "/overlayd";

fn host_ip(i: usize) -> String {
    format!("192.0.2.{}", i + 1)
}
fn mgmt_ip(i: usize) -> String {
    format!("203.0.113.{}", i + 1)
}
fn member_ip(j: usize) -> String {
    format!("203.0.113.{}", j + 11)
}
fn workload_ip(i: usize, k: usize) -> String {
    format!("198.51.100.{}", 10 * (i + 1) + k)
}
fn workload_mac(i: usize, k: usize) -> String {
    format!("02:00:00:00:{:02x}:{:02x}", i + 1, k + 1)
}

/// A throwaway CA, a certificate per member (server and peer) and one for
/// the clients (overlayd and etcdctl).
fn make_pki(dir: &TempDir) {
    require_program("openssl");
    let d = dir.path().display().to_string();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let mut script = format!(
        "cd {d}\nopenssl req -x509 {ec} -keyout ca.key -out ca.pem -days 1 -subj /CN=overlayd-test-ca 2>/dev/null\n"
    );
    let mut sign = |name: &str, san: &str| {
        script += &format!(
            "openssl req {ec} -keyout {name}.key -out {name}.csr -subj /CN={name} 2>/dev/null\n\
             printf 'subjectAltName={san}\\nextendedKeyUsage=serverAuth,clientAuth\\n' > {name}.ext\n\
             openssl x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -out {name}.pem -extfile {name}.ext 2>/dev/null\n"
        );
    };
    for j in 0..MEMBERS {
        sign(&format!("e{}", j + 1), &format!("IP:{}", member_ip(j)));
    }
    sign("client", "DNS:overlayd");
    run(&["sh", "-ec", &script]);
}

struct Member {
    ns: Netns,
    name: String,
    data: std::path::PathBuf,
    pki: std::path::PathBuf,
    proc: Option<Background>,
}

impl Member {
    fn start(&mut self) {
        let ip = member_ip(self.name[1..].parse::<usize>().unwrap() - 1);
        let cluster: Vec<String> =
            (0..MEMBERS).map(|j| format!("e{}=https://{}:2380", j + 1, member_ip(j))).collect();
        let p = |f: &str| self.pki.join(f).display().to_string();
        let (cert, key, ca) =
            (p(&format!("{}.pem", self.name)), p(&format!("{}.key", self.name)), p("ca.pem"));
        let args: Vec<String> = vec![
            "etcd".into(),
            "--name".into(),
            self.name.clone(),
            "--data-dir".into(),
            self.data.display().to_string(),
            "--listen-client-urls".into(),
            format!("https://{ip}:2379"),
            "--advertise-client-urls".into(),
            format!("https://{ip}:2379"),
            "--listen-peer-urls".into(),
            format!("https://{ip}:2380"),
            "--initial-advertise-peer-urls".into(),
            format!("https://{ip}:2380"),
            "--initial-cluster".into(),
            cluster.join(","),
            "--initial-cluster-state".into(),
            "new".into(),
            "--initial-cluster-token".into(),
            "overlayd-cluster-test".into(),
            "--cert-file".into(),
            cert.clone(),
            "--key-file".into(),
            key.clone(),
            "--trusted-ca-file".into(),
            ca.clone(),
            "--client-cert-auth".into(),
            "--peer-cert-file".into(),
            cert,
            "--peer-key-file".into(),
            key,
            "--peer-trusted-ca-file".into(),
            ca,
            "--peer-client-cert-auth".into(),
        ];
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = std::fs::File::create(self.data.with_extension("log")).unwrap();
        let mut cmd = self.ns.command(&argv);
        cmd.stdout(std::process::Stdio::null()).stderr(log);
        self.proc = Some(Background::spawn(cmd, "etcd"));
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            if let Some(pid) = p.id() {
                run(&["kill", "-9", &pid.to_string()]);
            }
            p.wait_timeout(Duration::from_secs(5));
        }
    }
}

/// `etcdctl` with the client certificate, run from the first member's namespace.
fn etcdctl(ns: &Netns, pki: &Path, args: &[&str]) -> std::process::Output {
    let eps: Vec<String> = (0..MEMBERS).map(|j| format!("https://{}:2379", member_ip(j))).collect();
    let eps = format!("--endpoints={}", eps.join(","));
    let (ca, cert, key) = (
        format!("--cacert={}", pki.join("ca.pem").display()),
        format!("--cert={}", pki.join("client.pem").display()),
        format!("--key={}", pki.join("client.key").display()),
    );
    let mut v = vec!["etcdctl", "--command-timeout=3s", &eps, &ca, &cert, &key];
    v.extend_from_slice(args);
    ns.exec_output(&v)
}

fn host_config(i: usize, up: &str, wl: &[String; 2], pki: &Path) -> String {
    let eps: Vec<String> =
        (0..MEMBERS).map(|j| format!("\"https://{}:2379\"", member_ip(j))).collect();
    format!(
        r#"
[[ports]]
name = "up0"
kind = "uplink"
interface = "{up}"
backend = "af_xdp"

[[ports]]
name = "wl0"
kind = "workload"
interface = "{wl0}"
backend = "af_xdp"

[[ports]]
name = "wl1"
kind = "workload"
interface = "{wl1}"
backend = "af_xdp"

# The local members of VNI 42's flood list; the cluster adds the peers.
[[flood]]
vni = 42
tunnels = []
ports = ["wl0", "wl1"]

[cluster]
endpoints = [{eps}]
prefix = "{PREFIX}"
node = "h{n}"
vteps = ["{vtep}"]
uplink = "up0"
labels = {{ role = "host" }}
lease_ttl_secs = {TTL}
ca_file = "{ca}"
cert_file = "{cert}"
key_file = "{key}"
"#,
        wl0 = wl[0],
        wl1 = wl[1],
        eps = eps.join(", "),
        n = i + 1,
        vtep = host_ip(i),
        ca = pki.join("ca.pem").display(),
        cert = pki.join("client.pem").display(),
        key = pki.join("client.key").display(),
    )
}

fn api(
    d: &Overlayd,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let body = body.map(|b| serde_json::to_vec(&b).unwrap());
    let r = dataplane::client::request(&d.socket(), method, path, &[], body.as_deref())
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    (r.status, r.json())
}

fn cluster_status(d: &Overlayd) -> serde_json::Value {
    api(d, "GET", "/v1/cluster/status", None).1
}

fn has_fdb(d: &Overlayd, mac: &str) -> bool {
    api(d, "GET", "/v1/fdb", None).1.as_array().is_some_and(|v| v.iter().any(|e| e["mac"] == mac))
}

fn tunnels(d: &Overlayd) -> Vec<String> {
    api(d, "GET", "/v1/tunnels", None)
        .1
        .as_array()
        .map(|v| v.iter().map(|t| t["name"].as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default()
}

fn add_endpoint(d: &Overlayd, mac: &str, ip: Option<&str>) -> (u16, serde_json::Value) {
    api(
        d,
        "POST",
        "/v1/cluster/endpoints",
        Some(serde_json::json!({ "network": "blue", "mac": mac, "ip": ip })),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct Hosts {
    ns: Vec<Netns>,
    mgmt_dev: Vec<String>,
    workloads: Vec<[Netns; 2]>,
    daemons: Vec<Option<Overlayd>>,
}

impl Hosts {
    fn alive(&self) -> impl Iterator<Item = (usize, &Overlayd)> {
        self.daemons.iter().enumerate().filter_map(|(i, d)| d.as_ref().map(|d| (i, d)))
    }

    fn why(&self) -> String {
        self.alive()
            .map(|(i, d)| {
                format!(
                    "--- h{}: cluster {:#}\nstatus {:#}\nlog:\n{}",
                    i + 1,
                    cluster_status(d),
                    d.status(),
                    d.log()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every workload of a live host pings every other one.
    fn all_pairs_ping(&self) -> usize {
        let live: Vec<(usize, usize)> = self.alive().flat_map(|(i, _)| [(i, 0), (i, 1)]).collect();
        let mut n = 0;
        for &(i, k) in &live {
            for &(j, l) in &live {
                if (i, k) == (j, l) {
                    continue;
                }
                let to = workload_ip(j, l);
                let ok =
                    pings(&self.workloads[i][k], &to, 1) || pings(&self.workloads[i][k], &to, 2);
                assert!(ok, "w{}{} -> {to} failed\n{}", i + 1, k, self.why());
                n += 1;
            }
        }
        n
    }
}

#[test]
fn cluster_converges_and_survives_store_and_host_failures() {
    if !require_root("cluster_converges_and_survives_store_and_host_failures") {
        return;
    }
    require_program("etcd");
    require_program("etcdctl");
    let started = Instant::now();
    let pki_dir = TempDir::new("clpki");
    make_pki(&pki_dir);
    let pki = pki_dir.path().to_path_buf();

    // The switch: one bridge for the underlay, one for the store.
    let sw = Netns::new("clsw");
    sw.ip(&["link", "add", "br0", "type", "bridge"]);
    sw.ip(&["link", "add", "br1", "type", "bridge"]);
    sw.ip(&["link", "set", "br0", "up"]);
    sw.ip(&["link", "set", "br1", "up"]);

    let data = TempDir::new("cletcd");
    let mut members: Vec<Member> = (0..MEMBERS)
        .map(|j| {
            let ns = Netns::new("clet");
            let (dev, port) = (unique("ce"), unique("cs"));
            veth(&ns, &dev, &sw, &port);
            sw.ip(&["link", "set", &port, "master", "br1"]);
            ns.ip(&["addr", "add", &format!("{}/24", member_ip(j)), "dev", &dev]);
            Member {
                ns,
                name: format!("e{}", j + 1),
                data: data.join(&format!("e{}", j + 1)),
                pki: pki.clone(),
                proc: None,
            }
        })
        .collect();
    for m in &mut members {
        m.start();
    }
    let healthy = wait_until(Duration::from_secs(30), || {
        etcdctl(&members[0].ns, &pki, &["endpoint", "health"]).status.success()
    });
    assert!(
        healthy,
        "etcd did not come up: {}",
        String::from_utf8_lossy(&etcdctl(&members[0].ns, &pki, &["endpoint", "health"]).stderr)
    );
    let put = |k: &str, v: &str| {
        let o = etcdctl(&members[0].ns, &pki, &["put", &format!("{PREFIX}/v1/{k}"), v]);
        assert!(o.status.success(), "etcdctl put {k}: {}", String::from_utf8_lossy(&o.stderr));
    };
    // The desired state every host converges from: one network, and the
    // forwarding rules for every node labelled role=host.
    put("networks/blue", r#"{"vni":42}"#);
    for (id, m) in [
        (2147483648u32, r#"{"in_port":"wl0"}"#),
        (2147483649, r#"{"in_port":"wl1"}"#),
        (2147483650, r#"{"vni":42}"#),
    ] {
        put(
            &format!("rules/{id}"),
            &format!(
                r#"{{"selector":{{"role":"host"}},"rule":{{"id":{id},"match":{m},"actions":[{{"forward_l2":42}}]}}}}"#
            ),
        );
    }

    let mut hosts = Hosts { ns: vec![], mgmt_dev: vec![], workloads: vec![], daemons: vec![] };
    for i in 0..HOSTS {
        let h = Netns::new("clh");
        let (up, sup) = (unique("cu"), unique("cs"));
        let (mg, smg) = (unique("cm"), unique("cs"));
        veth(&h, &up, &sw, &sup);
        veth(&h, &mg, &sw, &smg);
        sw.ip(&["link", "set", &sup, "master", "br0"]);
        sw.ip(&["link", "set", &smg, "master", "br1"]);
        h.ip(&["addr", "add", &format!("{}/24", host_ip(i)), "dev", &up]);
        h.ip(&["addr", "add", &format!("{}/24", mgmt_ip(i)), "dev", &mg]);
        let mut wls: Vec<String> = vec![];
        let mut wns = vec![];
        for k in 0..2 {
            let w = Netns::new("clw");
            let (wl, we) = (unique("cw"), unique("ce"));
            veth(&h, &wl, &w, &we);
            w.ip(&["link", "set", &we, "address", &workload_mac(i, k)]);
            w.ip(&["link", "set", &we, "mtu", "1450"]);
            w.ip(&["addr", "add", &format!("{}/24", workload_ip(i, k)), "dev", &we]);
            wls.push(wl);
            wns.push(w);
        }
        let cfg = host_config(i, &up, &[wls[0].clone(), wls[1].clone()], &pki);
        let d = Overlayd::start_with(&h, &cfg, &["--workers", "1"]);
        hosts.ns.push(h);
        hosts.mgmt_dev.push(mg);
        hosts.workloads.push(wns.try_into().unwrap());
        hosts.daemons.push(Some(d));
    }
    let converged = wait_until(Duration::from_secs(20), || {
        hosts.alive().all(|(_, d)| {
            let s = cluster_status(d);
            s["connection"] == "connected" && s["nodes"] == HOSTS && s["rules"] == 3
        })
    });
    assert!(converged, "the hosts did not all register\n{}", hosts.why());

    // Each host registers its workloads through overlayctl.
    for (i, d) in hosts.alive() {
        for k in 0..2 {
            d.ctl(&[
                "cluster",
                "endpoints",
                "add",
                "--network",
                "blue",
                "--mac",
                &workload_mac(i, k),
                "--ip",
                &workload_ip(i, k),
            ]);
        }
    }
    let full = wait_until(Duration::from_secs(10), || {
        hosts.alive().all(|(i, d)| {
            (0..HOSTS).filter(|j| *j != i).all(|j| (0..2).all(|k| has_fdb(d, &workload_mac(j, k))))
        })
    });
    assert!(full, "FDB entries missing\n{}", hosts.why());
    for (i, d) in hosts.alive() {
        let t = tunnels(d);
        assert_eq!(t.len(), HOSTS - 1, "h{}: one tunnel per peer: {t:?}", i + 1);
        let s = cluster_status(d);
        assert_eq!(s["conflicts"], serde_json::json!([]), "h{}: {s:#}", i + 1);
        d.wait_neighbours();
    }
    let listed = hosts.daemons[0].as_ref().unwrap().ctl(&["cluster", "endpoints", "list"]);
    assert_eq!(listed.lines().count(), 1 + 2 * HOSTS, "{listed}");
    eprintln!("cluster: converged ({:.1} s in)", started.elapsed().as_secs_f64());
    let n = hosts.all_pairs_ping();
    eprintln!(
        "cluster: {n} all-pairs pings answered ({:.1} s in)",
        started.elapsed().as_secs_f64()
    );

    // Endpoint write -> in every other host's running rule set.
    let mut lat = Vec::new();
    for w in 0..60usize {
        let owner = w % HOSTS;
        let mac = format!("02:00:00:01:{:02x}:{:02x}", owner + 1, w);
        let d = hosts.daemons[owner].as_ref().unwrap();
        let t = Instant::now();
        let (st, body) = add_endpoint(d, &mac, None);
        assert_eq!(st, 200, "{body}");
        let seen = wait_until(Duration::from_secs(5), || {
            hosts.alive().filter(|(i, _)| *i != owner).all(|(_, o)| has_fdb(o, &mac))
        });
        assert!(seen, "write {w} not seen everywhere within 5 s\n{}", hosts.why());
        lat.push(t.elapsed());
    }
    lat.sort();
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    eprintln!(
        "cluster: endpoint write to every other host's rule set, {} writes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        lat.last().unwrap().as_secs_f64() * 1e3
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?} misses the 1 s target");

    // One member killed: nothing changes for the hosts.
    members[0].kill();
    std::thread::sleep(Duration::from_millis(500));
    let d1 = hosts.daemons[1].as_ref().unwrap();
    let ok = wait_until(Duration::from_secs(10), || {
        add_endpoint(d1, "02:00:00:02:00:01", None).0 == 200
    });
    assert!(ok, "a write failed with one member of three down\n{}", hosts.why());
    let seen = wait_until(Duration::from_secs(5), || {
        hosts.alive().filter(|(i, _)| *i != 1).all(|(_, o)| has_fdb(o, "02:00:00:02:00:01"))
    });
    assert!(seen, "a write with one member down did not propagate\n{}", hosts.why());
    assert!(
        hosts.alive().all(|(_, d)| cluster_status(d)["connection"] == "connected"),
        "{}",
        hosts.why()
    );
    hosts.all_pairs_ping();

    // All members killed: forwarding goes on, writes say why they fail.
    members[1].kill();
    members[2].kill();
    let degraded = wait_until(Duration::from_secs(10), || {
        hosts.alive().all(|(_, d)| {
            cluster_status(d)["degraded"]
                .as_str()
                .is_some_and(|s| s.starts_with("degraded: store unreachable since "))
        })
    });
    assert!(degraded, "the hosts did not report degraded\n{}", hosts.why());
    // and so does the daemon's own status, for humans and for JSON
    let d2 = hosts.daemons[2].as_ref().unwrap();
    let st = d2.status();
    assert!(
        st["cluster"].as_str().is_some_and(|s| s.starts_with("degraded: store unreachable since ")),
        "status does not say degraded: {st:#}"
    );
    assert!(d2.ctl(&["status"]).contains("cluster: degraded: store unreachable since "));
    let o = hosts.daemons[2].as_ref().unwrap().ctl_output(&[
        "cluster",
        "endpoints",
        "add",
        "--network",
        "blue",
        "--mac",
        "02:00:00:02:00:02",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("degraded: store unreachable since"), "{err}");
    hosts.all_pairs_ping();
    for m in &mut members {
        m.start();
    }
    let back = wait_until(Duration::from_secs(30), || {
        hosts.alive().all(|(_, d)| cluster_status(d)["connection"] == "connected")
    });
    assert!(back, "the hosts did not reconnect\n{}", hosts.why());
    let d2 = hosts.daemons[2].as_ref().unwrap();
    let ok = wait_until(Duration::from_secs(10), || {
        add_endpoint(d2, "02:00:00:02:00:02", None).0 == 200
    });
    assert!(ok, "no write after the store came back\n{}", hosts.why());
    let seen = wait_until(Duration::from_secs(5), || {
        hosts.alive().filter(|(i, _)| *i != 2).all(|(_, o)| has_fdb(o, "02:00:00:02:00:02"))
    });
    assert!(seen, "a write after recovery did not propagate\n{}", hosts.why());

    // h4 cut from the store while it changes and compacts: its watch cannot
    // resume from where it was, so it lists again and converges.
    let h4 = 3;
    let relists_before =
        cluster_status(hosts.daemons[h4].as_ref().unwrap())["relists"].as_u64().unwrap();
    hosts.ns[h4].ip(&["link", "set", &hosts.mgmt_dev[h4], "down"]);
    let cut = wait_until(Duration::from_secs(10), || {
        cluster_status(hosts.daemons[h4].as_ref().unwrap())["connection"] == "degraded"
    });
    assert!(cut, "h4 did not notice it lost the store\n{}", hosts.why());
    let d0 = hosts.daemons[0].as_ref().unwrap();
    // Two revisions at least: a compaction keeps the revision it names, and
    // h4 must be left behind it.
    assert_eq!(add_endpoint(d0, "02:00:00:02:00:03", None).0, 200);
    assert_eq!(add_endpoint(d0, "02:00:00:02:00:04", None).0, 200);
    let o = etcdctl(&members[0].ns, &pki, &["get", "/", "-w", "json", "--limit=1"]);
    let rev = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["header"]["revision"]
        .as_u64()
        .unwrap();
    let o = etcdctl(&members[0].ns, &pki, &["compact", &rev.to_string()]);
    assert!(o.status.success(), "compact: {}", String::from_utf8_lossy(&o.stderr));
    hosts.ns[h4].ip(&["link", "set", &hosts.mgmt_dev[h4], "up"]);
    let relisted = wait_until(Duration::from_secs(20), || {
        let d = hosts.daemons[h4].as_ref().unwrap();
        let s = cluster_status(d);
        s["connection"] == "connected"
            && s["relists"].as_u64().unwrap() > relists_before
            && has_fdb(d, "02:00:00:02:00:03")
            && has_fdb(d, "02:00:00:02:00:04")
    });
    assert!(relisted, "h4 did not relist after the compaction\n{}", hosts.why());
    // Its lease may have lapsed meanwhile: it registered again, and every
    // host has all its peers back.
    let whole = wait_until(Duration::from_secs(10), || {
        hosts.alive().all(|(_, d)| tunnels(d).len() == HOSTS - 1)
    });
    assert!(whole, "tunnels not restored after h4 came back\n{}", hosts.why());
    hosts.all_pairs_ping();

    // h3 dies: its lease expires and the others drop it.
    let h3 = 2;
    let gone = format!("cl.42.h{}", h3 + 1);
    let t = Instant::now();
    for pid in run(&["ip", "netns", "pids", hosts.ns[h3].name()]).split_whitespace() {
        run(&["kill", "-9", pid]);
    }
    let dropped = wait_until(Duration::from_secs(TTL + 5), || {
        hosts.alive().filter(|(i, _)| *i != h3).all(|(_, d)| {
            !tunnels(d).contains(&gone) && !(0..2).any(|k| has_fdb(d, &workload_mac(h3, k)))
        })
    });
    let took = t.elapsed();
    assert!(dropped, "h3's tunnel and FDB entries stayed\n{}", hosts.why());
    eprintln!("cluster: a killed host's tunnel and FDB entries gone from the others {:.2} s after the kill (lease TTL {TTL} s)", took.as_secs_f64());
    assert!(took <= Duration::from_secs(TTL + 1), "took {took:?}, more than the TTL plus 1 s");
    drop(hosts.daemons[h3].take());
    hosts.all_pairs_ping();

    for (i, d) in hosts.alive() {
        let c = d.settled_counters();
        assert!(c["rx"].as_u64().unwrap() > 0, "h{}: {c:#}", i + 1);
    }

    // h4 stops cleanly (the helper starts overlayd with --remove-on-exit):
    // it revokes its lease, so the others drop it at once, not after the TTL.
    let h4 = 3;
    let gone = format!("cl.42.h{}", h4 + 1);
    let t = Instant::now();
    let log = hosts.daemons[h4].take().expect("h4 runs").stop();
    let dropped = wait_until(Duration::from_secs(TTL + 5), || {
        hosts.alive().all(|(_, d)| !tunnels(d).contains(&gone))
    });
    let took = t.elapsed();
    assert!(dropped, "h4's tunnel stayed after its clean stop\n{}", hosts.why());
    eprintln!(
        "cluster: a cleanly stopped host's tunnel gone from the others {:.2} s after SIGTERM",
        took.as_secs_f64()
    );
    assert!(
        took < Duration::from_secs(TTL),
        "took {took:?}: the lease was not revoked on a clean stop; h4's log:\n{log}"
    );
    for d in hosts.daemons.iter_mut().filter_map(Option::take) {
        d.stop();
    }
    for m in &mut members {
        m.kill();
    }
    eprintln!("cluster test: {:.1} s", started.elapsed().as_secs_f64());
}
