//! The berth shim under real runc, driven over ttrpc as containerd drives it.

mod common;

use std::time::Duration;

use common::*;
use containerd_shim_protos::api::{
    CloseIORequest, ConnectRequest, ExecProcessRequest, ResizePtyRequest, ShutdownRequest,
    StatsRequest,
};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::types::task::Status;
use serde_json::json;

#[test]
fn lifecycle_with_fifos_exit_code_and_events_in_order() {
    let Some(env) = Env::new() else { return };
    let b = env.bundle(
        "life",
        &[
            "sh",
            "-c",
            "echo hello; echo oops >&2; seq 1 100000; exit 3",
        ],
        |_| {},
    );
    let address = env.start_shim(&b);
    assert_eq!(
        std::fs::read_to_string(b.path.join("address")).unwrap(),
        address
    );
    let client = connect(&address);
    let io = Stdio3::fifos(&env.path().join("io"), "life", false);
    // A slow stdout reader: the process must block, not lose output.
    let out = read_fifo(&io.stdout, Duration::from_millis(500));
    let err = read_fifo(&io.stderr, Duration::ZERO);

    let pid = client
        .create(ctx(), &env.create_request(&b, &io))
        .expect("create")
        .pid;
    assert!(pid > 0);
    assert!(b.rootfs_mounted(), "rootfs mounted on create");
    assert_eq!(
        state(&client, "life", "").status.enum_value(),
        Ok(Status::CREATED)
    );
    assert_eq!(start(&client, "life", ""), pid);
    assert_eq!(wait(&client, "life", ""), 3);

    let stdout = out.join().unwrap();
    let expected: String = std::iter::once("hello".to_string())
        .chain((1..=100000).map(|i| i.to_string()))
        .map(|l| l + "\n")
        .collect();
    assert_eq!(stdout.len(), expected.len(), "no output lost");
    assert_eq!(stdout, expected);
    assert_eq!(err.join().unwrap(), "oops\n");

    let st = state(&client, "life", "");
    assert_eq!(st.status.enum_value(), Ok(Status::STOPPED));
    assert_eq!(st.exit_status, 3);

    let del = delete(&client, "life", "").expect("delete");
    assert_eq!(del.exit_status, 3);
    assert_eq!(del.pid, pid);
    assert!(!b.rootfs_mounted(), "rootfs unmounted on delete");
    assert!(!runc_knows(&env, "life"));

    assert!(env.wait_topic("/tasks/delete", 1));
    assert_eq!(
        env.topics(),
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
    let exit = &env.events.lock().unwrap()[2];
    assert_eq!(exit.1, "containerd.events.TaskExit");

    client.shutdown(ctx(), &ShutdownRequest::default()).ok();
    let socket = std::path::Path::new(address.trim_start_matches("unix://"));
    wait_until(
        "the socket removed on shutdown",
        Duration::from_secs(10),
        || !socket.exists(),
    );
}

fn exec_request(id: &str, exec_id: &str, args: &[&str], io: &Stdio3) -> ExecProcessRequest {
    let spec = json!({
        "args": args,
        "cwd": "/",
        "env": ["PATH=/bin"],
        "terminal": io.terminal,
        "user": {"uid": 0, "gid": 0},
    });
    ExecProcessRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        terminal: io.terminal,
        stdin: io.stdin.clone(),
        stdout: io.stdout.clone(),
        stderr: io.stderr.clone(),
        spec: Some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
            value: serde_json::to_vec(&spec).unwrap(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

#[test]
fn exec_kill_and_wait() {
    let Some(env) = Env::new() else { return };
    let b = env.bundle("execs", &["sleep", "1000"], |_| {});
    let client = connect(&env.start_shim(&b));
    let io = Stdio3::default();
    client
        .create(ctx(), &env.create_request(&b, &io))
        .expect("create");
    let pid = start(&client, "execs", "");
    assert_eq!(
        state(&client, "execs", "").status.enum_value(),
        Ok(Status::RUNNING)
    );

    let eio = Stdio3::fifos(&env.path().join("io"), "exec1", false);
    let out = read_fifo(&eio.stdout, Duration::ZERO);
    let err = read_fifo(&eio.stderr, Duration::ZERO);
    let req = exec_request(
        "execs",
        "e1",
        &["sh", "-c", "echo from-exec; echo to-err >&2; exit 5"],
        &eio,
    );
    client.exec(ctx(), &req).expect("exec");
    assert!(client.exec(ctx(), &req).is_err(), "exec id reused");
    let epid = start(&client, "execs", "e1");
    assert_ne!(epid, pid);
    assert_eq!(wait(&client, "execs", "e1"), 5);
    assert_eq!(out.join().unwrap(), "from-exec\n");
    assert_eq!(err.join().unwrap(), "to-err\n");
    let st = state(&client, "execs", "e1");
    assert_eq!(
        (st.status.enum_value(), st.exit_status),
        (Ok(Status::STOPPED), 5)
    );
    let del = delete(&client, "execs", "e1").expect("delete exec");
    assert_eq!(del.exit_status, 5);

    // Pids lists the init process.
    let pids = client
        .pids(
            ctx(),
            &containerd_shim_protos::api::PidsRequest {
                id: "execs".into(),
                ..Default::default()
            },
        )
        .expect("pids");
    assert!(pids.processes.iter().any(|p| p.pid == pid));

    // A running container cannot be deleted; SIGKILL then delete.
    assert!(delete(&client, "execs", "").is_err());
    kill(&client, "execs", "", 9).expect("kill");
    assert_eq!(wait(&client, "execs", ""), 137);
    let e = kill(&client, "execs", "", 9).expect_err("kill after exit");
    assert!(format!("{e:?}").contains("NOT_FOUND"), "{e:?}");
    delete(&client, "execs", "").expect("delete");
    assert!(env.wait_topic("/tasks/delete", 1));
    assert_eq!(
        env.topics(),
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exec-added",
            "/tasks/exec-started",
            "/tasks/exit",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
}

#[test]
fn tty_resize_and_stdin_close() {
    let Some(env) = Env::new() else { return };
    let b = env.bundle(
        "tty",
        &["sh", "-c", "stty size; read line; echo got:$line; tty"],
        |s| {
            s["process"]["terminal"] = json!(true);
        },
    );
    let client = connect(&env.start_shim(&b));
    let mut io = Stdio3::fifos(&env.path().join("io"), "tty", true);
    io.stderr = String::new();
    io.terminal = true;
    let out = read_fifo(&io.stdout, Duration::ZERO);
    let input = write_fifo(&io.stdin, b"hi\n");
    client
        .create(ctx(), &env.create_request(&b, &io))
        .expect("create");
    let resize = ResizePtyRequest {
        id: "tty".into(),
        width: 100,
        height: 40,
        ..Default::default()
    };
    client.resize_pty(ctx(), &resize).expect("resize");
    start(&client, "tty", "");
    input.join().unwrap();
    assert_eq!(wait(&client, "tty", ""), 0);
    let text = out.join().unwrap();
    assert!(
        text.contains("40 100"),
        "stty size through the pty: {text:?}"
    );
    assert!(text.contains("got:hi"), "stdin through the pty: {text:?}");
    assert!(text.contains("/dev/pts/"), "a terminal: {text:?}");
    delete(&client, "tty", "").expect("delete");
}

#[test]
fn stdin_reaches_eof_on_close_io() {
    let Some(env) = Env::new() else { return };
    let b = env.bundle("stdin", &["sh", "-c", "cat; echo done"], |_| {});
    let client = connect(&env.start_shim(&b));
    let io = Stdio3::fifos(&env.path().join("io"), "stdin", true);
    let out = read_fifo(&io.stdout, Duration::ZERO);
    let input = write_fifo(&io.stdin, b"ping\npong\n");
    client
        .create(ctx(), &env.create_request(&b, &io))
        .expect("create");
    start(&client, "stdin", "");
    input.join().unwrap();
    // containerd has closed its writer; cat keeps waiting until CloseIO.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        state(&client, "stdin", "").status.enum_value(),
        Ok(Status::RUNNING)
    );
    let close = CloseIORequest {
        id: "stdin".into(),
        stdin: true,
        ..Default::default()
    };
    client.close_io(ctx(), &close).expect("close io");
    assert_eq!(wait(&client, "stdin", ""), 0);
    assert_eq!(out.join().unwrap(), "ping\npong\ndone\n");
    delete(&client, "stdin", "").expect("delete");
}

#[test]
fn oom_kill_is_reported_and_stats_come_from_the_cgroup() {
    let Some(env) = Env::new() else { return };
    // busybox tail buffers a newline-free stream without bound.
    let b = env.bundle("oom", &["sh", "-c", "sleep 0.5; tail /dev/zero"], |s| {
        s["linux"]["resources"]["memory"] =
            json!({"limit": 32 * 1024 * 1024, "swap": 32 * 1024 * 1024});
    });
    let client = connect(&env.start_shim(&b));
    client
        .create(ctx(), &env.create_request(&b, &Stdio3::default()))
        .expect("create");
    start(&client, "oom", "");
    let stats = client
        .stats(
            ctx(),
            &StatsRequest {
                id: "oom".into(),
                ..Default::default()
            },
        )
        .expect("stats")
        .stats
        .into_option()
        .expect("stats any");
    assert!(
        stats.type_url.starts_with("io.containerd.cgroups.v"),
        "{}",
        stats.type_url
    );
    if stats.type_url == "io.containerd.cgroups.v1.Metrics" {
        let m = containerd_shim_protos::cgroups::metrics::Metrics::parse_from_bytes(&stats.value)
            .unwrap();
        let mem = m.memory.into_option().unwrap();
        assert_eq!(mem.usage.limit, 32 * 1024 * 1024);
        assert!(mem.usage.usage > 0);
        assert!(m.pids.current >= 1);
    }
    assert_eq!(wait(&client, "oom", ""), 137);
    assert!(
        env.wait_topic("/tasks/oom", 1),
        "an OOM event: {:?}\n{}",
        env.topics(),
        b.shim_log()
    );
    let topics = env.topics();
    assert_eq!(
        topics.iter().filter(|t| *t == "/tasks/oom").count(),
        1,
        "{topics:?}"
    );
    delete(&client, "oom", "").expect("delete");
}

#[test]
fn killed_shim_is_cleaned_up_by_delete() {
    let Some(env) = Env::new() else { return };
    let b = env.bundle("orphan", &["sleep", "1000"], |_| {});
    let address = env.start_shim(&b);
    let client = connect(&address);
    client
        .create(ctx(), &env.create_request(&b, &Stdio3::default()))
        .expect("create");
    start(&client, "orphan", "");
    let shim_pid = client
        .connect(
            ctx(),
            &ConnectRequest {
                id: "orphan".into(),
                ..Default::default()
            },
        )
        .expect("connect")
        .shim_pid;
    drop(client);
    // SAFETY: kill(2) on the shim we started.
    unsafe { libc::kill(shim_pid as i32, libc::SIGKILL) };
    wait_until("the shim to die", Duration::from_secs(10), || {
        process_gone(shim_pid)
    });
    assert!(b.rootfs_mounted() && runc_knows(&env, "orphan"));

    let out = env
        .shim_command(&b, "delete")
        .output()
        .expect("shim delete");
    assert!(
        out.status.success(),
        "delete: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resp = containerd_shim_protos::api::DeleteResponse::parse_from_bytes(&out.stdout)
        .expect("DeleteResponse");
    assert_eq!(resp.exit_status, 137);
    assert!(resp.exited_at.is_some());
    assert!(!runc_knows(&env, "orphan"), "runtime state removed");
    assert!(!b.rootfs_mounted(), "rootfs unmounted");
    assert!(
        !std::path::Path::new(address.trim_start_matches("unix://")).exists(),
        "dead socket removed"
    );
}

#[test]
fn containers_of_a_pod_share_one_shim() {
    let Some(env) = Env::new() else { return };
    let pod = |s: &mut serde_json::Value| {
        s["annotations"] = json!({"io.kubernetes.cri.sandbox-id": "pod1"});
    };
    let a = env.bundle("pod1", &["sleep", "1000"], pod);
    let b = env.bundle("app1", &["sh", "-c", "echo app; sleep 1000"], pod);
    let other = env.bundle("pod2", &["sleep", "1000"], |_| {});
    let address = env.start_shim(&a);
    assert_eq!(env.start_shim(&b), address, "same pod, same shim");
    assert_ne!(env.start_shim(&other), address, "another pod, another shim");

    let client = connect(&address);
    for bundle in [&a, &b] {
        client
            .create(ctx(), &env.create_request(bundle, &Stdio3::default()))
            .expect("create");
        start(&client, &bundle.id, "");
    }
    let shim_pid = |id: &str| {
        client
            .connect(
                ctx(),
                &ConnectRequest {
                    id: id.into(),
                    ..Default::default()
                },
            )
            .unwrap()
            .shim_pid
    };
    assert_eq!(shim_pid("pod1"), shim_pid("app1"));

    // The pod's shim stays while a container remains.
    for id in ["app1", "pod1"] {
        kill(&client, id, "", 9).unwrap();
        assert_eq!(wait(&client, id, ""), 137);
        delete(&client, id, "").unwrap();
        client
            .shutdown(
                ctx(),
                &ShutdownRequest {
                    id: id.into(),
                    ..Default::default()
                },
            )
            .ok();
        // After app1 the next calls go through the same shim, so it must stay;
        // after pod1, its last container, it exits.
        let socket = std::path::Path::new(address.trim_start_matches("unix://"));
        if id == "pod1" {
            wait_until("the pod's shim to exit", Duration::from_secs(10), || {
                !socket.exists()
            });
        } else {
            assert!(socket.exists(), "the shim exited after {id}");
        }
    }
    // Stop the other pod's shim too.
    let c2 = connect(&env.start_shim(&other));
    c2.shutdown(ctx(), &ShutdownRequest::default()).ok();
}

#[test]
fn containerd_1_6_calls_the_v2_service_name() {
    let Some(env) = Env::new() else { return };
    let b = env.bundle("v2", &["true"], |_| {});
    let address = env.start_shim(&b);
    let raw = containerd_shim_protos::ttrpc::Client::connect(&address).unwrap();
    let req = containerd_shim_protos::ttrpc::Request {
        service: "containerd.task.v2.Task".into(),
        method: "Connect".into(),
        payload: ConnectRequest {
            id: "v2".into(),
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap(),
        timeout_nano: 5_000_000_000,
        ..Default::default()
    };
    let resp = raw.request(req).expect("v2 Connect");
    let status = resp.status.into_option().unwrap_or_default();
    assert_eq!(status.code.value(), 0, "{status:?}");
    let connect =
        containerd_shim_protos::api::ConnectResponse::parse_from_bytes(&resp.payload).unwrap();
    assert!(connect.shim_pid > 0);
    let client = connect_client(&address);
    client.shutdown(ctx(), &ShutdownRequest::default()).ok();
}

fn connect_client(address: &str) -> containerd_shim_protos::TaskClient {
    connect(address)
}

/// Memory of a pod's shim with 1 and with 10 containers, printed for the
/// record (run with --nocapture, and BERTH_SHIM_BINARY pointing at a release
/// build for the shipped numbers). The per-pod cost is the shim's private
/// dirty memory: its clean private pages are the binary's text, read from
/// the page cache and shared by every shim once a second pod runs, which the
/// second pod's Pss shows.
#[test]
fn memory_with_one_and_ten_containers() {
    let Some(env) = Env::new() else { return };
    // A freshly linked binary's page-cache pages are dirty until written
    // back, and smaps would count its text as Private_Dirty.
    nix::unistd::sync();
    let mut report = Vec::new();
    let mut pods = Vec::new();
    for (pod, count) in [("mempod", 10), ("otherpod", 1)] {
        let annotate = |s: &mut serde_json::Value| {
            s["annotations"] = json!({"io.kubernetes.cri.sandbox-id": pod});
        };
        let mut address = String::new();
        let mut ids = Vec::new();
        for i in 0..count {
            let b = env.bundle(&format!("{pod}{i}"), &["sleep", "1000"], annotate);
            address = env.start_shim(&b);
            let client = connect(&address);
            let io = Stdio3::fifos(&env.path().join("io"), &b.id, false);
            let _out = read_fifo(&io.stdout, Duration::ZERO);
            let _err = read_fifo(&io.stderr, Duration::ZERO);
            client
                .create(ctx(), &env.create_request(&b, &io))
                .expect("create");
            start(&client, &b.id, "");
            ids.push(b.id.clone());
            if i == 0 || i == 9 {
                let shim_pid = client
                    .connect(
                        ctx(),
                        &ConnectRequest {
                            id: b.id.clone(),
                            ..Default::default()
                        },
                    )
                    .unwrap()
                    .shim_pid;
                std::thread::sleep(Duration::from_millis(300));
                report.push((pod, i + 1, private_kib(shim_pid)));
            }
        }
        pods.push((address, ids));
    }
    let mut dirty_ten = 0;
    for (pod, n, m) in &report {
        println!(
            "shim of {pod} with {n} containers: Rss {} KiB, Pss {} KiB, Private_Clean {} KiB, Private_Dirty {} KiB",
            m["Rss"], m["Pss"], m["Private_Clean"], m["Private_Dirty"]
        );
        if *n == 10 {
            dirty_ten = m["Private_Dirty"];
        }
    }
    for (address, ids) in pods {
        let client = connect(&address);
        for id in ids {
            kill(&client, &id, "", 9).unwrap();
            wait(&client, &id, "");
            delete(&client, &id, "").unwrap();
        }
        client.shutdown(ctx(), &ShutdownRequest::default()).ok();
    }
    // A debug build is larger; the bound catches leaks, not regressions.
    assert!(
        dirty_ten < 8 * 1024,
        "shim uses {dirty_ten} KiB private dirty"
    );
}

#[test]
fn events_through_the_publish_binary() {
    let Some(env) = Env::new() else { return };
    // Stands in for `containerd publish`: records its flags and the payload size.
    let script = env.path().join("publish.sh");
    let record = env.path().join("published");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nn=$(cat | wc -c)\necho \"$* bytes=$n\" >> {}\n",
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let b = env.bundle("pub", &["true"], |_| {});
    let client = connect(&env.start_shim_publishing_through(&b, &script));
    client
        .create(ctx(), &env.create_request(&b, &Stdio3::default()))
        .expect("create");
    start(&client, "pub", "");
    assert_eq!(wait(&client, "pub", ""), 0);
    delete(&client, "pub", "").expect("delete");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let topics = loop {
        let text = std::fs::read_to_string(&record).unwrap_or_default();
        let topics: Vec<String> = text
            .lines()
            .filter_map(|l| {
                l.split("--topic ")
                    .nth(1)?
                    .split(' ')
                    .next()
                    .map(String::from)
            })
            .collect();
        if topics.len() >= 4 || std::time::Instant::now() > deadline {
            assert!(
                text.lines()
                    .all(|l| l.contains("--namespace berth-test") && !l.ends_with("bytes=0")),
                "{text}"
            );
            break topics;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
    client.shutdown(ctx(), &ShutdownRequest::default()).ok();
}

#[test]
fn events_wait_for_containerd_and_keep_their_order() {
    let Some(env) = Env::new() else { return };
    let b = env.bundle("late", &["true"], |_| {});
    // Point the shim at an events socket nobody listens on yet.
    let late = env.path().join("late.sock");
    let mut cmd = env.shim_command(&b, "start");
    cmd.env("TTRPC_ADDRESS", &late);
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    let client = connect(&String::from_utf8(out.stdout).unwrap());
    client
        .create(ctx(), &env.create_request(&b, &Stdio3::default()))
        .expect("create");
    start(&client, "late", "");
    assert_eq!(wait(&client, "late", ""), 0);
    // containerd comes (back) once the shim has failed to reach it: the queue
    // retries, in order.
    wait_until("a failed publish", Duration::from_secs(10), || {
        b.shim_log().contains("(attempt 1)")
    });
    let events = EventSink::serve(&late);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while events.topics().len() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        events.topics(),
        ["/tasks/create", "/tasks/start", "/tasks/exit"]
    );
    delete(&client, "late", "").expect("delete");
    client.shutdown(ctx(), &ShutdownRequest::default()).ok();
}

#[test]
fn file_log_uri_pause_resume_and_update() {
    let Some(env) = Env::new() else { return };
    let b = env.bundle(
        "misc",
        &["sh", "-c", "echo out; echo err >&2; sleep 1000"],
        |_| {},
    );
    let client = connect(&env.start_shim(&b));
    let log = env.path().join("logs/misc.log");
    let io = Stdio3 {
        stdout: format!("file://{}", log.display()),
        ..Default::default()
    };
    client
        .create(ctx(), &env.create_request(&b, &io))
        .expect("create");
    start(&client, "misc", "");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "file:// log stays empty"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("out\n") && text.contains("err\n"), "{text:?}");

    let id = || containerd_shim_protos::api::PauseRequest {
        id: "misc".into(),
        ..Default::default()
    };
    client.pause(ctx(), &id()).expect("pause");
    assert_eq!(
        state(&client, "misc", "").status.enum_value(),
        Ok(Status::PAUSED)
    );
    let resume = containerd_shim_protos::api::ResumeRequest {
        id: "misc".into(),
        ..Default::default()
    };
    client.resume(ctx(), &resume).expect("resume");
    assert_eq!(
        state(&client, "misc", "").status.enum_value(),
        Ok(Status::RUNNING)
    );

    let resources = json!({"pids": {"limit": 42}});
    let update = containerd_shim_protos::api::UpdateTaskRequest {
        id: "misc".into(),
        resources: Some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
            value: serde_json::to_vec(&resources).unwrap(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    client.update(ctx(), &update).expect("update");
    let stats = client
        .stats(
            ctx(),
            &StatsRequest {
                id: "misc".into(),
                ..Default::default()
            },
        )
        .unwrap()
        .stats
        .into_option()
        .unwrap();
    if stats.type_url == "io.containerd.cgroups.v1.Metrics" {
        let m = containerd_shim_protos::cgroups::metrics::Metrics::parse_from_bytes(&stats.value)
            .unwrap();
        assert_eq!(m.pids.limit, 42);
    }
    let checkpoint = containerd_shim_protos::api::CheckpointTaskRequest {
        id: "misc".into(),
        ..Default::default()
    };
    let e = client
        .checkpoint(ctx(), &checkpoint)
        .expect_err("checkpoint");
    assert!(format!("{e:?}").contains("not implemented"), "{e:?}");

    kill(&client, "misc", "", 9).unwrap();
    wait(&client, "misc", "");
    delete(&client, "misc", "").unwrap();
    client.shutdown(ctx(), &ShutdownRequest::default()).ok();
}

#[test]
fn exec_with_a_terminal() {
    let Some(env) = Env::new() else { return };
    let b = env.bundle("ttyexec", &["sleep", "1000"], |_| {});
    let client = connect(&env.start_shim(&b));
    client
        .create(ctx(), &env.create_request(&b, &Stdio3::default()))
        .expect("create");
    start(&client, "ttyexec", "");
    let mut io = Stdio3::fifos(&env.path().join("io"), "ttyexec", true);
    io.stderr = String::new();
    io.terminal = true;
    let out = read_fifo(&io.stdout, Duration::ZERO);
    let input = write_fifo(&io.stdin, b"typed\n");
    let req = exec_request(
        "ttyexec",
        "t1",
        &["sh", "-c", "read l; echo [$l]; tty; stty size"],
        &io,
    );
    client.exec(ctx(), &req).expect("exec");
    start(&client, "ttyexec", "t1");
    let resize = ResizePtyRequest {
        id: "ttyexec".into(),
        exec_id: "t1".into(),
        width: 90,
        height: 30,
        ..Default::default()
    };
    client.resize_pty(ctx(), &resize).expect("resize exec pty");
    input.join().unwrap();
    assert_eq!(wait(&client, "ttyexec", "t1"), 0);
    let text = out.join().unwrap();
    assert!(
        text.contains("[typed]") && text.contains("/dev/pts/"),
        "{text:?}"
    );
    delete(&client, "ttyexec", "t1").expect("delete exec");
    kill(&client, "ttyexec", "", 9).unwrap();
    wait(&client, "ttyexec", "");
    delete(&client, "ttyexec", "").unwrap();
    client.shutdown(ctx(), &ShutdownRequest::default()).ok();
}

#[test]
fn binary_log_uri_feeds_a_logging_binary() {
    let Some(env) = Env::new() else { return };
    // A containerd-style logger: reads fd 3 and 4, closes fd 5 when ready.
    let logger = env.path().join("logger.sh");
    let out = env.path().join("logged");
    std::fs::write(
        &logger,
        format!(
            "#!/bin/sh\nexec 5>&-\ncat <&3 > {0}.out &\ncat <&4 > {0}.err &\necho \"$CONTAINER_ID $CONTAINER_NAMESPACE $*\" > {0}.env\nwait\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let b = env.bundle(
        "binlog",
        &["sh", "-c", "echo to-out; echo to-err >&2"],
        |_| {},
    );
    let client = connect(&env.start_shim(&b));
    let io = Stdio3 {
        stdout: format!("binary://{}?level=info", logger.display()),
        ..Default::default()
    };
    client
        .create(ctx(), &env.create_request(&b, &io))
        .expect("create");
    start(&client, "binlog", "");
    assert_eq!(wait(&client, "binlog", ""), 0);
    let read = |ext: &str| std::fs::read_to_string(out.with_extension(ext)).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    // The logger writes its three files in no fixed order; wait for all of them.
    while ["out", "err", "env"].iter().any(|e| read(e).is_empty())
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(read("out"), "to-out\n");
    assert_eq!(read("err"), "to-err\n");
    assert_eq!(read("env"), "binlog berth-test level info\n");
    delete(&client, "binlog", "").unwrap();
    client.shutdown(ctx(), &ShutdownRequest::default()).ok();
}

#[test]
fn close_io_ends_input_on_a_terminal() {
    let Some(env) = Env::new() else { return };
    let b = env.bundle("ttycat", &["sh", "-c", "cat; echo cat-done"], |s| {
        s["process"]["terminal"] = json!(true);
    });
    let client = connect(&env.start_shim(&b));
    let mut io = Stdio3::fifos(&env.path().join("io"), "ttycat", true);
    io.stderr = String::new();
    io.terminal = true;
    let out = read_fifo(&io.stdout, Duration::ZERO);
    let input = write_fifo(&io.stdin, b"line\n");
    client
        .create(ctx(), &env.create_request(&b, &io))
        .expect("create");
    start(&client, "ttycat", "");
    input.join().unwrap();
    let close = CloseIORequest {
        id: "ttycat".into(),
        stdin: true,
        ..Default::default()
    };
    client.close_io(ctx(), &close).expect("close io");
    assert_eq!(wait(&client, "ttycat", ""), 0);
    assert!(out.join().unwrap().contains("cat-done"));
    delete(&client, "ttycat", "").unwrap();
    client.shutdown(ctx(), &ShutdownRequest::default()).ok();
}

/// An executable shell script that records `ls -l` of its own descriptors
/// into `record` (then drains stdin, as a publish binary must).
fn fd_recorder(path: &std::path::Path, record: &std::path::Path) {
    std::fs::write(
        path,
        format!(
            "#!/bin/sh\nls -l /proc/$$/fd >> {0}\necho END-OF-LISTING >> {0}\ncat > /dev/null\n",
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// The shim's sockets (its ttrpc listener above all, handed over as fd 3)
/// reach none of the processes it runs: the runtime's hooks, the publish
/// binary, the container.
#[test]
fn shim_descriptors_reach_no_hook_publisher_or_container() {
    let Some(env) = Env::new() else { return };
    let publisher = env.path().join("publish.sh");
    let published = env.path().join("publisher-fds");
    fd_recorder(&publisher, &published);
    let hook = env.path().join("hook.sh");
    let hooked = env.path().join("hook-fds");
    fd_recorder(&hook, &hooked);
    let b = env.bundle("fds", &["sh", "-c", "ls -l /proc/$$/fd"], |s| {
        s["hooks"] = json!({
            "createRuntime": [{"path": hook.display().to_string()}],
            "poststart": [{"path": hook.display().to_string()}],
        });
    });
    let client = connect(&env.start_shim_publishing_through(&b, &publisher));
    let io = Stdio3::fifos(&env.path().join("io"), "fds", false);
    let out = read_fifo(&io.stdout, Duration::ZERO);
    let err = read_fifo(&io.stderr, Duration::ZERO);
    client
        .create(ctx(), &env.create_request(&b, &io))
        .expect("create");
    start(&client, "fds", "");
    assert_eq!(wait(&client, "fds", ""), 0, "{}", err.join().unwrap());
    let container = out.join().unwrap();
    delete(&client, "fds", "").expect("delete");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    // Four events: create, start, exit, delete.
    while read(&published).matches("END-OF-LISTING").count() < 4
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (published, hooked) = (read(&published), read(&hooked));
    assert_eq!(
        hooked.matches("END-OF-LISTING").count(),
        2,
        "both hooks ran: {hooked}"
    );
    assert!(container.contains("/dev/null"), "listing: {container:?}");
    for (who, listing) in [
        ("publish binary", &published),
        ("hook", &hooked),
        ("container", &container),
    ] {
        assert!(
            !listing.contains("socket:"),
            "a shim socket leaked into the {who}:\n{listing}"
        );
    }
    client.shutdown(ctx(), &ShutdownRequest::default()).ok();
}

/// The unprivileged user playing the attacker.
const NOBODY: libc::uid_t = 65534;

/// What a local user did to catch an exec's console socket: pre-created the
/// paths an exec's console directory used to get (`/tmp/berth-pty-<shim
/// pid>-<n>`: a 0777 directory and a symlink to one), and watched them to
/// swap the shim's socket for its own, as a real attacker would.
struct ConsoleTrap {
    planted: Vec<std::path::PathBuf>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(usize, usize)>>,
}

impl ConsoleTrap {
    fn set(shim_pid: u32) -> ConsoleTrap {
        let tmp = std::path::Path::new("/tmp");
        let lair = tmp.join(format!("berth-test-lair-{shim_pid}"));
        let dir = tmp.join(format!("berth-pty-{shim_pid}-0"));
        let link = tmp.join(format!("berth-pty-{shim_pid}-1"));
        let planted = vec![dir.clone(), link.clone(), lair.clone()];
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let halt = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            become_nobody();
            let watched = [lair.clone(), dir.clone()];
            for d in &watched {
                std::fs::create_dir(d).unwrap();
                std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                    .unwrap();
            }
            std::os::unix::fs::symlink(&lair, &link).unwrap();
            use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
            let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).unwrap();
            let wds: Vec<_> = watched
                .iter()
                .map(|d| inotify.add_watch(d, AddWatchFlags::IN_CREATE).unwrap())
                .collect();
            ready_tx.send(()).unwrap();
            let mut stolen = Vec::new();
            while !halt.load(std::sync::atomic::Ordering::Relaxed) {
                use std::os::fd::AsFd;
                let mut fds = [nix::poll::PollFd::new(
                    inotify.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(20u16));
                for event in inotify.read_events().unwrap_or_default() {
                    let Some(i) = wds.iter().position(|w| *w == event.wd) else {
                        continue;
                    };
                    let Some(name) = event.name else { continue };
                    // Replace the shim's socket with ours before the runtime
                    // connects (once: our own bind reports a creation too).
                    let path = watched[i].join(name);
                    if stolen.iter().any(|(p, _)| *p == path) {
                        continue;
                    }
                    let _ = std::fs::remove_file(&path);
                    if let Ok(l) = std::os::unix::net::UnixListener::bind(&path) {
                        l.set_nonblocking(true).unwrap();
                        stolen.push((path, l));
                    }
                }
            }
            // Each connection is a runtime handing us a pty master.
            let received = stolen.iter().filter(|(_, l)| l.accept().is_ok()).count();
            (stolen.len(), received)
        });
        ready.recv().expect("trap set");
        ConsoleTrap {
            planted,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops watching: (sockets the user could swap, pty masters it got).
    fn spring(&mut self) -> (usize, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map_or((0, 0), |t| t.join().unwrap())
    }
}

impl Drop for ConsoleTrap {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for p in &self.planted {
            let _ = std::fs::remove_file(p);
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Drops this thread (only) to nobody: the raw syscalls, unlike glibc's
/// wrappers, leave the other threads' credentials alone.
fn become_nobody() {
    // SAFETY: credential syscalls with plain integer arguments.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
            0
        );
        assert_eq!(
            libc::syscall(libc::SYS_setresgid, NOBODY, NOBODY, NOBODY),
            0
        );
        assert_eq!(
            libc::syscall(libc::SYS_setresuid, NOBODY, NOBODY, NOBODY),
            0
        );
    }
}

/// `kubectl exec -it` cannot be hijacked: a local user who prepares the
/// console socket's directory (its own 0777 directory, or a symlink to one)
/// receives no pty master, finds its paths untouched, and the exec works.
#[test]
fn exec_terminal_cannot_be_hijacked_by_a_local_user() {
    use std::os::unix::fs::MetadataExt;

    let Some(env) = Env::new() else { return };
    let b = env.bundle("hijack", &["sleep", "1000"], |_| {});
    let client = connect(&env.start_shim(&b));
    client
        .create(ctx(), &env.create_request(&b, &Stdio3::default()))
        .expect("create");
    start(&client, "hijack", "");
    let shim_pid: u32 = std::fs::read_to_string(b.path.join("shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut trap = ConsoleTrap::set(shim_pid);

    let mut outputs = Vec::new();
    for exec_id in ["t0", "t1"] {
        let mut io = Stdio3::fifos(&env.path().join("io"), exec_id, true);
        io.stderr = String::new();
        io.terminal = true;
        let out = read_fifo(&io.stdout, Duration::ZERO);
        let input = write_fifo(&io.stdin, b"typed\n");
        let req = exec_request(
            "hijack",
            exec_id,
            &["sh", "-c", "read l; echo [$l]; tty"],
            &io,
        );
        client.exec(ctx(), &req).expect("exec");
        let started = client.start(
            ctx(),
            &containerd_shim_protos::api::StartRequest {
                id: "hijack".into(),
                exec_id: exec_id.into(),
                ..Default::default()
            },
        );
        outputs.push(match started {
            Ok(_) => {
                input.join().unwrap();
                wait(&client, "hijack", exec_id);
                out.join().unwrap()
            }
            Err(e) => format!("exec start failed: {e:?}"),
        });
    }

    let (swapped, masters) = trap.spring();
    assert_eq!(masters, 0, "the local user received a pty master");
    assert_eq!(
        swapped, 0,
        "the shim put its console socket where the user could swap it"
    );
    for text in &outputs {
        assert!(
            text.contains("[typed]") && text.contains("/dev/pts/"),
            "exec -it works: {outputs:?}"
        );
    }
    let dir =
        std::fs::symlink_metadata(&trap.planted[0]).expect("the user's directory is left alone");
    assert!(dir.is_dir() && dir.uid() == NOBODY);
    let link =
        std::fs::symlink_metadata(&trap.planted[1]).expect("the user's symlink is left alone");
    assert!(link.file_type().is_symlink());

    kill(&client, "hijack", "", 9).unwrap();
    wait(&client, "hijack", "");
    delete(&client, "hijack", "").unwrap();
    client.shutdown(ctx(), &ShutdownRequest::default()).ok();
}
