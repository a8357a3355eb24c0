//! The pod-network layer against the real CNI plugins (Debian's
//! containernetworking-plugins in /usr/lib/cni), as root.
//!
//! Each test gets its own bridge (`bt<random>`), its own /24 in 10.199.0.0/16, its
//! own conf, cache and host-local data dirs, and tears all of it down when it ends,
//! passing or not, so it can run beside a real berthd (berth0, 10.88.0.0/16).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth::network::{self, Cni, NetNs, NetworkError, PodNetwork, PortMapping};
use rand::Rng;

const CNI_BIN: &str = "/usr/lib/cni";

/// Whether this machine can run these tests (root, the CNI plugins they call,
/// and the tools that look into a namespace); prints why not, or fails under CI.
fn prerequisites_met() -> bool {
    let plugins = ["bridge", "host-local", "loopback", "portmap"];
    let tools = ["/usr/bin/nsenter", "/usr/bin/busybox", "/usr/sbin/ip"].map(String::from);
    berth_testkit::prerequisites_met_for(
        plugins
            .iter()
            .map(|p| format!("{CNI_BIN}/{p}"))
            .chain(tools),
    )
}

/// Subnets taken by tests of this process; others are checked against the routes.
static TAKEN: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// A pod of a test: its id, namespace and port mappings.
struct Pod {
    id: String,
    netns: NetNs,
    ports: Vec<PortMapping>,
}

impl Pod {
    fn net(&self) -> PodNetwork<'_> {
        PodNetwork {
            pod_id: &self.id,
            netns: self.netns.path(),
            name: &self.id,
            namespace: "berth-test",
            uid: "uid-1",
            port_mappings: &self.ports,
            bandwidth: None,
            dns: None,
        }
    }
}

/// One test's network world; dropping it deletes every pod, namespace, the bridge
/// and the dirs.
struct Net {
    dir: tempfile::TempDir,
    bridge: String,
    /// The third octet of 10.199.<n>.0/24.
    octet: u8,
    cni: Cni,
    pods: Vec<Pod>,
}

impl Net {
    /// `extra` plugins go after bridge; `bin` dirs are searched before /usr/lib/cni.
    fn new(extra: &[serde_json::Value], bin: Option<&Path>) -> Net {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut rng = rand::rng();
        let bridge = format!("bt{:04x}", rng.random::<u16>());
        let octet = free_subnet(&mut rng);
        let mut plugins = vec![serde_json::json!({
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            "ipMasq": true,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "dataDir": dir.path().join("ipam"),
                "ranges": [[{"subnet": format!("10.199.{octet}.0/24")}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        })];
        plugins.extend(extra.iter().cloned());
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": bridge, "plugins": plugins});
        std::fs::create_dir_all(dir.path().join("net.d")).unwrap();
        std::fs::write(dir.path().join("net.d/10-test.conflist"), conf.to_string()).unwrap();
        let mut bin_dirs: Vec<PathBuf> = bin.map(Path::to_path_buf).into_iter().collect();
        bin_dirs.push(CNI_BIN.into());
        let cni = Cni::new(
            &dir.path().join("net.d"),
            &bin_dirs,
            &dir.path().join("cache"),
        );
        Net {
            dir,
            bridge,
            octet,
            cni,
            pods: Vec::new(),
        }
    }

    fn netns_dir(&self) -> PathBuf {
        self.dir.path().join("netns")
    }

    fn subnet_contains(&self, ip: IpAddr) -> bool {
        matches!(ip, IpAddr::V4(v4) if v4.octets()[..3] == [10, 199, self.octet])
    }

    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 199, self.octet, 1)
    }

    /// A new pod with its own namespace; ADD is up to the test.
    fn pod(&mut self, ports: Vec<PortMapping>) -> usize {
        let id = format!("{}-pod{}", self.bridge, self.pods.len());
        let netns = network::netns::create(&self.netns_dir(), &id).expect("create netns");
        self.pods.push(Pod { id, netns, ports });
        self.pods.len() - 1
    }

    /// host-local's allocation files (one per IP) for this network.
    fn allocated(&self) -> Vec<String> {
        let dir = self.dir.path().join("ipam").join(&self.bridge);
        let mut ips: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ips.retain(|name| name.parse::<IpAddr>().is_ok());
        ips
    }

    /// Host-side interfaces attached to this test's bridge (the pods' veths).
    fn bridge_ports(&self) -> String {
        run(&["ip", "-o", "link", "show", "master", &self.bridge]).1
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // DEL is async and Drop is not, and we may be on a runtime thread: run it
        // on a thread with a runtime of its own.
        let cni = self.cni.clone();
        let pods = std::mem::take(&mut self.pods);
        let pods = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            for pod in &pods {
                if let Err(e) = rt.block_on(cni.del(&pod.net())) {
                    eprintln!("cleanup: DEL of {}: {e}", pod.id);
                }
            }
            pods
        })
        .join()
        .unwrap_or_default();
        for pod in pods {
            let _ = pod.netns.remove();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        remove_masquerade_rules(&self.bridge);
        let _ = nix::mount::umount2(&self.netns_dir(), nix::mount::MntFlags::MNT_DETACH);
        TAKEN
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|o| *o != self.octet);
    }
}

/// bridge's ipMasq rules of a pod whose namespace went before its DEL: the plugin
/// finds the addresses to unmasquerade in the namespace, so those rules stay.
fn remove_masquerade_rules(bridge: &str) {
    let (_, rules) = run(&[
        "iptables",
        "-t",
        "nat",
        "-L",
        "POSTROUTING",
        "--line-numbers",
        "-n",
    ]);
    let tag = format!("name: \"{bridge}\"");
    // Highest rule number first, so the numbers of the rest stay valid.
    for line in rules.lines().rev().filter(|l| l.contains(&tag)) {
        let mut cols = line.split_whitespace();
        let (Some(num), Some(chain)) = (cols.next(), cols.next()) else {
            continue;
        };
        run(&["iptables", "-t", "nat", "-D", "POSTROUTING", num]);
        run(&["iptables", "-t", "nat", "-F", chain]);
        run(&["iptables", "-t", "nat", "-X", chain]);
    }
}

/// A 10.199.<n>.0/24 no other test of this process uses and no route covers.
fn free_subnet(rng: &mut impl Rng) -> u8 {
    let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let octet = rng.random_range(1..=250u8);
        let routed = run(&["ip", "route", "show", "match", &format!("10.199.{octet}.1")]).1;
        let routed = routed.lines().any(|l| !l.starts_with("default"));
        if !taken.contains(&octet) && !routed {
            taken.push(octet);
            return octet;
        }
    }
}

/// Runs a command; (success, stdout + stderr).
fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run command");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn in_netns(netns: &Path, args: &[&str]) -> (bool, String) {
    let flag = format!("--net={}", netns.display());
    let mut all = vec!["nsenter", flag.as_str()];
    all.extend_from_slice(args);
    run(&all)
}

fn ping(from: Option<&Path>, ip: IpAddr) -> (bool, String) {
    let ip = ip.to_string();
    let args = ["busybox", "ping", "-c", "1", "-W", "2", ip.as_str()];
    match from {
        Some(netns) => in_netns(netns, &args),
        None => run(&args),
    }
}

fn first_ipv4(attached: &network::Attached) -> IpAddr {
    let ip = attached.ips[0];
    assert!(ip.is_ipv4(), "{:?}", attached.ips);
    ip
}

#[tokio::test]
async fn add_gives_an_ip_in_the_subnet_with_lo_up() {
    if !prerequisites_met() {
        return;
    }
    let mut net = Net::new(&[], None);
    net.cni.status().expect("status");
    let p = net.pod(Vec::new());
    let pod = &net.pods[p];

    let started = Instant::now();
    let attached = net.cni.add(&pod.net()).await.expect("ADD");
    eprintln!("ADD took {:?}", started.elapsed());
    let ip = first_ipv4(&attached);
    assert!(
        net.subnet_contains(ip),
        "{ip} not in 10.199.{}.0/24",
        net.octet
    );

    let (ok, lo) = in_netns(pod.netns.path(), &["ip", "-o", "link", "show", "lo"]);
    assert!(ok && lo.contains("LOOPBACK,UP"), "lo is not up: {lo}");
    let (ok, eth0) = in_netns(pod.netns.path(), &["ip", "-o", "addr", "show", "eth0"]);
    assert!(ok && eth0.contains(&format!("{ip}/24")), "eth0: {eth0}");
    let (ok, out) = ping(None, ip);
    assert!(ok, "host cannot ping the pod at {ip}: {out}");

    net.cni.check(&pod.net()).await.expect("CHECK");
}

#[tokio::test]
async fn port_mapping_reaches_the_pod() {
    if !prerequisites_met() {
        return;
    }
    let mut net = Net::new(
        &[serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}})],
        None,
    );
    let host_port = rand::rng().random_range(20000..40000u16);
    let ports = vec![PortMapping {
        host_port,
        container_port: 8080,
        protocol: "TCP".into(),
        host_ip: String::new(),
    }];
    let p = net.pod(ports);
    let attached = net.cni.add(&net.pods[p].net()).await.expect("ADD");
    first_ipv4(&attached);

    let server = echo_once_in(net.pods[p].netns.path(), 8080);
    let target = SocketAddr::new(IpAddr::V4(net.gateway()), host_port);
    let reply = tokio::task::spawn_blocking(move || {
        let mut conn = TcpStream::connect_timeout(&target, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {target}: {e}"));
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).unwrap();
        buf
    })
    .await
    .unwrap();
    assert_eq!(&reply, b"ping");
    server.join().expect("listener thread");
}

/// Listens on `port` inside the namespace and echoes one connection's first 4 bytes.
fn echo_once_in(netns: &Path, port: u16) -> std::thread::JoinHandle<()> {
    let ns = std::fs::File::open(netns).expect("open netns");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        // setns moves only this thread, which ends with the test's connection.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns"
        );
        let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind in pod");
        ready_tx.send(()).unwrap();
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).expect("read");
        conn.write_all(&buf).expect("write");
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("listener ready");
    handle
}

#[tokio::test]
async fn del_releases_the_ip_and_is_idempotent() {
    if !prerequisites_met() {
        return;
    }
    let mut net = Net::new(&[], None);
    let a = net.pod(Vec::new());
    let b = net.pod(Vec::new());
    let ip_a = first_ipv4(&net.cni.add(&net.pods[a].net()).await.expect("ADD a"));
    let ip_b = first_ipv4(&net.cni.add(&net.pods[b].net()).await.expect("ADD b"));
    let mut both = vec![ip_a.to_string(), ip_b.to_string()];
    both.sort();
    let mut allocated = net.allocated();
    allocated.sort();
    assert_eq!(allocated, both);

    net.cni.del(&net.pods[a].net()).await.expect("DEL a");
    assert_eq!(net.allocated(), vec![ip_b.to_string()]);
    net.cni.del(&net.pods[a].net()).await.expect("second DEL a");
    net.pods[a].netns.remove().expect("remove netns a");
    net.cni
        .del(&net.pods[a].net())
        .await
        .expect("DEL a without netns");

    // The namespace gone before DEL (a node reboot, a crash): DEL still frees the IP.
    net.pods[b].netns.remove().expect("remove netns b");
    net.cni
        .del(&net.pods[b].net())
        .await
        .expect("DEL b without netns");
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
    assert!(matches!(
        net.cni.check(&net.pods[b].net()).await,
        Err(NetworkError::NotAttached { .. })
    ));
}

#[tokio::test]
async fn failing_plugin_undoes_what_came_before() {
    if !prerequisites_met() {
        return;
    }
    let bin = tempfile::tempdir().unwrap();
    let failer = bin.path().join("failer");
    std::fs::write(
        &failer,
        "#!/bin/sh\ncat >/dev/null\n[ \"$CNI_COMMAND\" = ADD ] || exit 0\n\
         echo '{\"cniVersion\":\"1.0.0\",\"code\":100,\"msg\":\"failer says no\",\"details\":\"on purpose\"}'\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&failer, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut net = Net::new(&[serde_json::json!({"type": "failer"})], Some(bin.path()));
    let p = net.pod(Vec::new());

    let err = net
        .cni
        .add(&net.pods[p].net())
        .await
        .expect_err("ADD must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("failer says no") && msg.contains("failer"),
        "{msg}"
    );
    assert!(
        net.allocated().is_empty(),
        "IP leaked: {:?}",
        net.allocated()
    );
    assert_eq!(net.bridge_ports().trim(), "", "veth leaked");
    let (_, links) = in_netns(net.pods[p].netns.path(), &["ip", "-o", "link"]);
    assert!(!links.contains("eth0"), "eth0 left in the pod: {links}");
}

#[tokio::test]
async fn two_pods_get_different_ips_and_reach_each_other() {
    if !prerequisites_met() {
        return;
    }
    let mut net = Net::new(&[], None);
    let a = net.pod(Vec::new());
    let b = net.pod(Vec::new());
    let ip_a = first_ipv4(&net.cni.add(&net.pods[a].net()).await.expect("ADD a"));
    let ip_b = first_ipv4(&net.cni.add(&net.pods[b].net()).await.expect("ADD b"));
    assert_ne!(ip_a, ip_b);
    let (ok, out) = ping(Some(net.pods[a].netns.path()), ip_b);
    assert!(ok, "{ip_a} cannot ping {ip_b}: {out}");
    let (ok, out) = ping(Some(net.pods[b].netns.path()), ip_a);
    assert!(ok, "{ip_b} cannot ping {ip_a}: {out}");
}
