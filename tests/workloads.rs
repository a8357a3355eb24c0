//! Workloads against a real berthd, shim, runc and CNI: containers of a pod talking
//! over localhost, a pod reached at its IP, a port mapped by the portmap plugin, a
//! host-network pod, users and groups from the image's account files, bind mounts
//! (read-only, a file, a created source, HostToContainer propagation), log
//! rotation and long lines, and a pod whose shim is killed.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::image::Image;
use common::pod;
use common::world::{self, EXITED, RUNNING, World};
use k8s_cri::v1 as cri;
use serde_json::json;

/// The busybox applets these tests run, beyond the shared image's.
const MORE_APPLETS: &[&str] = &["httpd", "wget", "mkdir", "touch", "yes", "head", "tr"];
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345::/:/bin/sh\n";
const GROUP: &str = "root:x:0:\nappgrp:x:2345:\nextra:x:3456:app\n";

fn workload_image(user: Option<&str>) -> Image {
    let applets: Vec<&str> = world::APPLETS.iter().chain(MORE_APPLETS).copied().collect();
    let mut image = Image::oci()
        .layer(world::busybox_layer(&applets, PASSWD, GROUP).gzip())
        .env("PATH=/bin")
        .cmd(&["sh"]);
    if let Some(user) = user {
        image = image.user(user);
    }
    image.build()
}

async fn start(plugins: &[serde_json::Value]) -> Option<World> {
    World::start_with(plugins, workload_image(None)).await
}

/// A script serving `body` over HTTP at `/msg` on `port`.
fn http_server(port: u16, body: &str) -> String {
    format!("mkdir -p /www && echo {body} > /www/msg && exec httpd -f -p {port} -h /www")
}

/// GET /msg from `addr`: the body.
fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /msg HTTP/1.0\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
            Ok(body.to_string())
        }
        _ => Err(std::io::Error::other(format!("bad response {response:?}"))),
    }
}

/// The body from `addr` once the server there answers (10 s at most).
async fn wait_http(addr: SocketAddr) -> String {
    common::wait_for(
        &format!("an HTTP answer from {addr}"),
        Duration::from_secs(10),
        || {
            let got = http_get(addr).ok();
            async move { got }
        },
    )
    .await
}

/// A TCP port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn linux_with(sc: cri::LinuxContainerSecurityContext) -> Option<cri::LinuxContainerConfig> {
    Some(cri::LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_of_a_pod_share_localhost_and_the_pod_ip_reaches_the_host() {
    let Some(w) = start(&[]).await else {
        return;
    };
    let pod = w.run_pod("duo").await;
    w.run(&pod, "server", &http_server(8080, "via-localhost"))
        .await;
    let client = w.run(&pod, "client", "exec sleep 1000").await;

    // The other container reaches the server at 127.0.0.1: one network namespace.
    let out = common::wait_for("the client to fetch", Duration::from_secs(10), || {
        let w = &w;
        let client = &client;
        async move {
            let out = w
                .exec(
                    client,
                    &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/msg"],
                    5,
                )
                .await
                .unwrap();
            (out.exit_code == 0).then_some(out.stdout)
        }
    })
    .await;
    assert_eq!(out, b"via-localhost\n");

    // The host reaches the server at the pod's IP on the test's bridge.
    let (state, ip) = pod::state_and_ip(&w.cri, &pod.0).await;
    assert_eq!(state, cri::PodSandboxState::SandboxReady as i32);
    assert!(w.net.contains(&ip), "pod IP {ip} not in the test's subnet");
    let addr = SocketAddr::new(ip.parse().unwrap(), 8080);
    assert_eq!(wait_http(addr).await, "via-localhost\n");

    pod::stop(&w.cri, &pod.0).await.unwrap();
    pod::remove(&w.cri, &pod.0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn portmap_maps_a_host_port_until_the_pod_stops() {
    let plugin = json!({"type": "portmap", "capabilities": {"portMappings": true}});
    let Some(w) = start(&[plugin]).await else {
        return;
    };
    let host_port = free_port();
    let mut config = w.pod_config("mapped");
    config.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: i32::from(host_port),
        host_ip: String::new(),
    }];
    let pod = w.run_pod_with(config).await;
    w.run(&pod, "server", &http_server(8080, "through-portmap"))
        .await;

    // To the bridge's gateway, a local address: portmap's DNAT in OUTPUT applies.
    let gateway: std::net::IpAddr = format!("10.197.{}.1", w.net.octet).parse().unwrap();
    let mapped = SocketAddr::new(gateway, host_port);
    assert_eq!(wait_http(mapped).await, "through-portmap\n");

    // Stopped, the pod's mapping is gone: the same address now reaches whatever
    // listens on the host port itself.
    pod::stop(&w.cri, &pod.0).await.unwrap();
    let listener = TcpListener::bind(("0.0.0.0", host_port)).expect("bind the freed host port");
    listener.set_nonblocking(true).unwrap();
    let mut stream = TcpStream::connect_timeout(&mapped, Duration::from_secs(2))
        .expect("connect to the host port after the pod stopped");
    stream.write_all(b"x").unwrap();
    let accepted = common::wait_for(
        "the host listener to accept",
        Duration::from_secs(5),
        || {
            let got = listener.accept().ok();
            async move { got }
        },
    )
    .await;
    assert_eq!(accepted.1.ip(), gateway);
    pod::remove(&w.cri, &pod.0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_network_pod_listens_on_the_host() {
    let Some(w) = start(&[]).await else {
        return;
    };
    let port = free_port();
    let pod = w
        .run_pod_with(pod::host_network(w.pod_config("hostnet")))
        .await;
    w.run(&pod, "server", &http_server(port, "on-the-host"))
        .await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(wait_http(addr).await, "on-the-host\n");
    pod::stop(&w.cri, &pod.0).await.unwrap();
    pod::remove(&w.cri, &pod.0).await.unwrap();
    assert!(
        http_get(addr).is_err(),
        "something still serves on {addr} after the pod went"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn users_and_groups_come_from_the_image() {
    let Some(w) = start(&[]).await else {
        return;
    };
    let as_app = w.add_image(&workload_image(Some("app")), "as-app").await;
    let pod = w.run_pod("users").await;
    let app_id = "uid=1234(app) gid=2345(appgrp) groups=2345(appgrp),3456(extra)";

    // (a) The image's USER, with its primary group and the groups listing it.
    let mut config = w.container_config("image-user", "id");
    config.image.as_mut().unwrap().image = as_app.clone();
    let id = w.create(&pod, config).await.expect("create image-user");
    w.start_container(&id).await;
    w.wait_exited(&id).await;
    w.wait_log("users", "image-user", app_id).await;

    // (b) CRI run_as_user overrides the image's USER; a uid without an entry
    // runs with gid 0 and none of app's groups.
    let mut config = w.container_config("by-uid", "id");
    config.image.as_mut().unwrap().image = as_app;
    config.linux = linux_with(cri::LinuxContainerSecurityContext {
        run_as_user: Some(cri::Int64Value { value: 4321 }),
        ..Default::default()
    });
    let id = w.create(&pod, config).await.expect("create by-uid");
    w.start_container(&id).await;
    w.wait_exited(&id).await;
    w.wait_log("users", "by-uid", "uid=4321 gid=0(root) groups=0(root)")
        .await;

    // (c) run_as_username resolved in the image without a USER.
    let mut config = w.container_config("by-name", "id");
    config.linux = linux_with(cri::LinuxContainerSecurityContext {
        run_as_username: "app".into(),
        ..Default::default()
    });
    let id = w.create(&pod, config).await.expect("create by-name");
    w.start_container(&id).await;
    w.wait_exited(&id).await;
    w.wait_log("users", "by-name", app_id).await;

    // (d) A name the image does not know: refused, and nothing is left behind.
    let before = common::dir_entries(&w.env.state.join("containers"));
    let mut config = w.container_config("ghost", "id");
    config.linux = linux_with(cri::LinuxContainerSecurityContext {
        run_as_username: "ghost".into(),
        ..Default::default()
    });
    let err = w.create(&pod, config).await.unwrap_err();
    common::assert_error(&err, tonic::Code::InvalidArgument, &["ghost"]);
    assert_eq!(common::dir_entries(&w.env.state.join("containers")), before);

    pod::stop(&w.cri, &pod.0).await.unwrap();
    pod::remove(&w.cri, &pod.0).await.unwrap();
}

/// An image whose /etc/passwd is a symlink: followed inside the image, never to the
/// host's file (whose `daemon` user the image does not have).
#[tokio::test(flavor = "multi_thread")]
async fn account_files_linked_out_of_the_image_are_not_read_from_the_host() {
    let Some(w) = start(&[]).await else {
        return;
    };
    assert!(
        std::fs::read_to_string("/etc/passwd").is_ok_and(|p| p.contains("\ndaemon:")),
        "the host has a daemon user"
    );
    let linked = |target: &str| {
        let applets: Vec<&str> = world::APPLETS.iter().chain(MORE_APPLETS).copied().collect();
        Image::oci()
            .layer(
                world::busybox_layer(&applets, PASSWD, GROUP)
                    .file("usr/lib/passwd", "daemon:x:4242:4242::/:/bin/sh\n")
                    .gzip(),
            )
            .layer(
                common::image::Layer::new()
                    .symlink("etc/passwd", target)
                    .gzip(),
            )
            .env("PATH=/bin")
            .build()
    };
    let pod = w.run_pod("linked").await;
    let as_daemon = |name: &str, image: String| {
        let mut config = w.container_config(name, "id -u");
        config.image.as_mut().unwrap().image = image;
        config.linux = linux_with(cri::LinuxContainerSecurityContext {
            run_as_username: "daemon".into(),
            ..Default::default()
        });
        config
    };
    for (name, target) in [
        ("absolute", "/etc/passwd"),
        ("climbing", "../../../../../../../../../../etc/passwd"),
    ] {
        let image = w.add_image(&linked(target), name).await;
        let err = w.create(&pod, as_daemon(name, image)).await.unwrap_err();
        common::assert_error(&err, tonic::Code::InvalidArgument, &["/etc/passwd"]);
    }
    // A link that stays in the image is followed there.
    let image = w.add_image(&linked("/usr/lib/passwd"), "inside").await;
    let id = w
        .create(&pod, as_daemon("inside", image))
        .await
        .expect("create");
    w.start_container(&id).await;
    w.wait_exited(&id).await;
    w.wait_log("linked", "inside", "4242").await;
}

/// `dir` bind-mounted on itself and made rshared, so that mounts below it
/// propagate; unmounted (with whatever is below) on drop.
struct SharedMount(PathBuf);

impl SharedMount {
    fn new(dir: &Path) -> SharedMount {
        std::fs::create_dir_all(dir).unwrap();
        run(Command::new("mount").arg("--bind").arg(dir).arg(dir));
        let shared = SharedMount(dir.to_path_buf());
        run(Command::new("mount").arg("--make-rshared").arg(dir));
        shared
    }
}

impl Drop for SharedMount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-R")
            .arg("-l")
            .arg(&self.0)
            .output();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn bind(
    host: &Path,
    container: &str,
    readonly: bool,
    propagation: cri::MountPropagation,
) -> cri::Mount {
    cri::Mount {
        container_path: container.into(),
        host_path: host.display().to_string(),
        readonly,
        propagation: propagation as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bind_mounts_read_only_a_file_a_created_source_and_host_to_container() {
    let Some(w) = start(&[]).await else {
        return;
    };
    let outside = &w.env.outside;
    let ro_dir = outside.join("ro");
    std::fs::create_dir_all(&ro_dir).unwrap();
    std::fs::write(ro_dir.join("data"), "read-only-data\n").unwrap();
    let rw_file = outside.join("rw.txt");
    std::fs::write(&rw_file, "before\n").unwrap();
    let missing = outside.join("missing/below");
    let shared_dir = outside.join("shared");
    std::fs::create_dir_all(shared_dir.join("sub")).unwrap();
    let shared = SharedMount::new(&shared_dir);

    let pod = w.run_pod("mounts").await;
    let mut config = w.container_config("app", "exec sleep 1000");
    config.mounts = vec![
        bind(
            &ro_dir,
            "/ro",
            true,
            cri::MountPropagation::PropagationPrivate,
        ),
        bind(
            &rw_file,
            "/rw.txt",
            false,
            cri::MountPropagation::PropagationPrivate,
        ),
        bind(
            &missing,
            "/made",
            false,
            cri::MountPropagation::PropagationPrivate,
        ),
        bind(
            &shared.0,
            "/shared",
            false,
            cri::MountPropagation::PropagationHostToContainer,
        ),
    ];
    let id = w.create(&pod, config).await.expect("CreateContainer");
    w.start_container(&id).await;
    let sh = |script: &'static str| {
        let w = &w;
        let id = &id;
        async move { w.exec(id, &["sh", "-c", script], 10).await.unwrap() }
    };

    // Read-only: readable, not writable.
    let out = sh("cat /ro/data").await;
    assert_eq!(
        (out.exit_code, out.stdout.as_slice()),
        (0, &b"read-only-data\n"[..])
    );
    let out = sh("touch /ro/new").await;
    assert_ne!(out.exit_code, 0, "wrote to a read-only mount");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "{out:?}"
    );
    assert!(!ro_dir.join("new").exists());

    // A file mounted read-write: a write inside lands in the host's file.
    let out = sh("cat /rw.txt && echo after > /rw.txt").await;
    assert_eq!(
        (out.exit_code, out.stdout.as_slice()),
        (0, &b"before\n"[..])
    );
    assert_eq!(std::fs::read_to_string(&rw_file).unwrap(), "after\n");

    // The missing source was created as a directory, and is what /made shows.
    assert!(missing.is_dir(), "{} was not created", missing.display());
    assert_eq!(sh("echo made > /made/f").await.exit_code, 0);
    assert_eq!(
        std::fs::read_to_string(missing.join("f")).unwrap(),
        "made\n"
    );

    // HostToContainer: a mount made on the host after the start shows inside.
    let sub = shared.0.join("sub");
    assert_eq!(sh("ls -A /shared/sub").await.stdout, b"");
    run(Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&sub));
    std::fs::write(sub.join("marker"), "from-the-host\n").unwrap();
    let out = sh("cat /shared/sub/marker").await;
    assert_eq!(
        (out.exit_code, out.stdout.as_slice()),
        (0, &b"from-the-host\n"[..]),
        "{out:?}"
    );

    // The bundle's spec says so too.
    let spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(w.env.state.join("containers").join(&id).join("config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(spec["linux"]["rootfsPropagation"], "rslave", "{spec}");
    let mounts = spec["mounts"].as_array().unwrap();
    let options_of = |dest: &str| -> Vec<String> {
        let m = mounts
            .iter()
            .find(|m| m["destination"] == dest)
            .unwrap_or_else(|| panic!("no mount at {dest} in {mounts:?}"));
        serde_json::from_value(m["options"].clone()).unwrap()
    };
    assert!(options_of("/shared").contains(&"rslave".to_string()));
    assert!(options_of("/ro").contains(&"ro".to_string()));
    assert!(options_of("/rw.txt").contains(&"rw".to_string()));

    // Read-only is not recursive unless asked: the tmpfs below the shared
    // directory stays writable in a plain read-only mount, not in an `rro` one.
    let mut config = w.container_config("rro", "exec sleep 1000");
    let private = cri::MountPropagation::PropagationPrivate;
    config.mounts = vec![
        bind(&shared.0, "/plain", true, private),
        cri::Mount {
            recursive_read_only: true,
            ..bind(&shared.0, "/rro", true, private)
        },
    ];
    let rro = w.create(&pod, config).await.expect("CreateContainer");
    w.start_container(&rro).await;
    let out = w
        .exec(&rro, &["sh", "-c", "touch /plain/sub/plain-ok"], 10)
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "{out:?}");
    let out = w
        .exec(&rro, &["sh", "-c", "touch /rro/sub/rro-bad"], 10)
        .await
        .unwrap();
    assert_ne!(out.exit_code, 0, "wrote below a recursive read-only mount");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "{out:?}"
    );
    // Writable and recursively read-only at once is refused by name.
    let mut config = w.container_config("rro-rw", "exec sleep 1000");
    config.mounts = vec![cri::Mount {
        recursive_read_only: true,
        ..bind(&shared.0, "/rro", false, private)
    }];
    let err = w.create(&pod, config).await.unwrap_err();
    common::assert_error(
        &err,
        tonic::Code::InvalidArgument,
        &["mounts[0].recursive_read_only"],
    );

    pod::stop(&w.cri, &pod.0).await.unwrap();
    pod::remove(&w.cri, &pod.0).await.unwrap();
}

/// The numbers of `line-<n>` entries of a CRI log file, in order.
fn numbered_lines(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let parts: Vec<&str> = line.splitn(4, ' ').collect();
            assert_eq!(parts.len(), 4, "malformed log line {line:?}");
            assert_eq!(&parts[1..3], ["stdout", "F"], "{line:?}");
            parts[3]
                .strip_prefix("line-")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected log entry {line:?}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_reopen_after_rotation_and_split_long_lines() {
    let Some(w) = start(&[]).await else {
        return;
    };
    let pod = w.run_pod("logs").await;
    let ticker = w
        .run(
            &pod,
            "ticker",
            "i=0; while true; do i=$((i+1)); echo line-$i; sleep 0.1; done",
        )
        .await;
    let log = w.logs.join("logs/ticker.log");
    let rotated = w.logs.join("logs/ticker.log.1");
    common::wait_until("5 lines in the log", Duration::from_secs(10), || {
        numbered_lines(&log).len() >= 5
    })
    .await;

    // The kubelet's rotation: rename, then ask for a reopen.
    std::fs::rename(&log, &rotated).unwrap();
    w.cri
        .runtime_client()
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: ticker.clone(),
        })
        .await
        .expect("ReopenContainerLog");
    common::wait_until("5 lines in the new log", Duration::from_secs(10), || {
        numbered_lines(&log).len() >= 5
    })
    .await;
    w.stop(&ticker, 0).await;

    let old = numbered_lines(&rotated);
    let new = numbered_lines(&log);
    let all: Vec<u32> = old.iter().chain(&new).copied().collect();
    let expected: Vec<u32> = (1..=all.len() as u32).collect();
    assert_eq!(all, expected, "old file {old:?}, new file {new:?}");

    // A line of 40000 bytes: 16 KiB partial entries, then the full one.
    let long: String = "abcdefghij".repeat(4000);
    let id = w
        .run(
            &pod,
            "long",
            "yes abcdefghij | head -c 44000 | tr -d '\\n'; echo; echo done",
        )
        .await;
    w.wait_exited(&id).await;
    w.wait_log("logs", "long", "done").await;
    let entries = w.log_entries("logs", "long");
    let (line, rest) = entries.split_at(entries.len() - 1);
    assert_eq!(rest[0], ("stdout".into(), "F".into(), "done".into()));
    let tags: Vec<&str> = line.iter().map(|(_, tag, _)| tag.as_str()).collect();
    assert_eq!(
        tags,
        ["P", "P", "F"],
        "{:?}",
        (&tags, line.iter().map(|e| e.2.len()).collect::<Vec<_>>())
    );
    assert!(line.iter().all(|(stream, _, _)| stream == "stdout"));
    assert_eq!(line[0].2.len(), 16 * 1024);
    let joined: String = line
        .iter()
        .map(|(_, _, content)| content.as_str())
        .collect();
    assert!(
        joined == long,
        "the pieces do not make the line: {} bytes",
        joined.len()
    );

    pod::stop(&w.cri, &pod.0).await.unwrap();
    pod::remove(&w.cri, &pod.0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shim_killed_9_leaves_an_exited_container_that_removes_cleanly() {
    let Some(w) = start(&[]).await else {
        return;
    };
    let pod = w.run_pod("orphan").await;
    let id = w.run(&pod, "app", "exec sleep 1000").await;
    assert_eq!(w.status(&id).await.state, RUNNING);
    let bundle = w.env.state.join("containers").join(&id);
    let mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.contains(bundle.to_str().unwrap()))
    };
    assert!(
        mounted(),
        "no mount of the container's rootfs while it runs"
    );

    let runc_state = Command::new("runc")
        .arg("--root")
        .arg(w.env.state.join("runc/k8s.io"))
        .args(["state", &id])
        .output()
        .unwrap();
    let runc_state: serde_json::Value = serde_json::from_slice(&runc_state.stdout)
        .unwrap_or_else(|e| panic!("runc state {id}: {e}: {runc_state:?}"));
    let process = runc_state["pid"].as_i64().unwrap() as i32;
    assert!(alive(process));

    let pid_file = w.env.state.join("pods").join(&pod.0).join("shim.pid");
    let shim: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(unsafe { libc::kill(shim, libc::SIGKILL) }, 0);

    let st = common::wait_for(
        "the container to be Exited",
        Duration::from_secs(10),
        || {
            let w = &w;
            let id = &id;
            async move { Some(w.status(id).await).filter(|st| st.state == EXITED) }
        },
    )
    .await;
    assert_eq!(st.reason, "Unknown", "{st:?}");
    assert!(st.message.contains("shim"), "{st:?}");
    assert!(st.finished_at >= st.started_at, "{st:?}");

    // The shim's death did not end the process; removing the container does.
    assert!(alive(process), "the container's process died with its shim");
    w.remove(&id).await.expect("RemoveContainer");
    assert!(!mounted(), "the container's rootfs is still mounted");
    assert!(!bundle.exists());
    common::wait_until(
        "the container's process to die",
        Duration::from_secs(5),
        || !alive(process),
    )
    .await;
    pod::stop(&w.cri, &pod.0).await.expect("StopPodSandbox");
    pod::remove(&w.cri, &pod.0).await.expect("RemovePodSandbox");
    assert!(common::dir_entries(&w.env.state.join("pods")).is_empty());
}

/// Whether `pid` is a process that has not exited (zombies count as exited).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, after_comm) = stat.rsplit_once(") ")?;
            after_comm.chars().next()
        })
        .is_some_and(|state| state != 'Z')
}
