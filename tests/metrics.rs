//! `[metrics] address`: a berthd serving Prometheus text, scraped around a pod's
//! life (pull, pod, container, exec URL, stop), the counts checked to have moved
//! and the text checked by `promtool check metrics`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::metrics::{must, scrape, value};
use common::pod;
use common::world::{World, busybox_image};
use k8s_cri::v1 as cri;

fn rpc(service: &str, method: &str, code: &str) -> String {
    format!(
        "berth_grpc_requests_total{{service=\"runtime.v1.{service}\",method=\"{method}\",code=\"{code}\"}}"
    )
}

/// promtool's lint of the exposition (names, units, suffixes, HELP), when
/// promtool is installed (Debian's `prometheus`; `make deps` installs it); under
/// CI its absence is a failure.
fn promtool_check(text: &str) {
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("promtool not run ({e}); install Debian's prometheus package");
            return;
        }
        Err(e) => panic!("promtool is required under CI: {e}"),
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn scrape_counts_a_pod_lifecycle() {
    let extra = common::metrics::CONFIG;
    let Some(world) = World::start_configured(&[], busybox_image(), extra).await else {
        return;
    };
    let url = common::metrics::url(&world);
    // World::start pulled the busybox image once.
    let before = scrape(&url).await;
    assert_eq!(must(&before, &rpc("ImageService", "PullImage", "OK")), 1.0);
    assert_eq!(
        must(&before, "berth_image_pulls_total{outcome=\"success\"}"),
        1.0
    );
    assert!(must(&before, "berth_image_pull_bytes_total") > 1_000_000.0); // busybox
    assert!(must(&before, "berth_image_layer_unpack_duration_seconds_count") >= 1.0);
    assert_eq!(must(&before, "berth_pods{state=\"ready\"}"), 0.0);
    assert_eq!(value(&before, "berth_shim_starts_total"), Some(0.0));

    let pod = world.run_pod("metrics").await;
    let id = world.run(&pod, "sleeper", "exec sleep 60").await;
    // An exec URL fetched without an upgrade: a streaming request answered 400.
    let exec = world
        .cri
        .runtime_client()
        .exec(cri::ExecRequest {
            container_id: id.clone(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
        .await
        .expect("Exec")
        .into_inner();
    let plain = reqwest::get(&exec.url).await.unwrap();
    assert_eq!(plain.status().as_u16(), 400);
    // A call that fails: counted under its code.
    let missing = pod::status(&world.cri, "0123456789abcdef").await;
    assert_eq!(missing.unwrap_err().code(), tonic::Code::NotFound);

    let running = scrape(&url).await;
    assert_eq!(
        must(&running, &rpc("RuntimeService", "RunPodSandbox", "OK")),
        1.0
    );
    assert_eq!(
        must(&running, &rpc("RuntimeService", "StartContainer", "OK")),
        1.0
    );
    assert_eq!(
        must(
            &running,
            &rpc("RuntimeService", "PodSandboxStatus", "NotFound")
        ),
        1.0
    );
    assert!(
        must(
            &running,
            "berth_grpc_request_duration_seconds_count{service=\"runtime.v1.RuntimeService\",method=\"RunPodSandbox\"}"
        ) == 1.0
    );
    assert_eq!(must(&running, "berth_pods{state=\"ready\"}"), 1.0);
    assert_eq!(must(&running, "berth_containers{state=\"running\"}"), 1.0);
    assert_eq!(must(&running, "berth_shim_starts_total"), 1.0);
    assert_eq!(
        must(
            &running,
            "berth_cni_plugin_duration_seconds_count{plugin=\"bridge\",command=\"ADD\",outcome=\"success\"}"
        ),
        1.0
    );
    assert_eq!(
        must(
            &running,
            "berth_streaming_requests_total{kind=\"exec\",code=\"400\"}"
        ),
        1.0
    );
    assert!(must(&running, "berth_store_transaction_duration_seconds_count") >= 3.0);
    assert!(must(&running, "process_resident_memory_bytes") > 1_000_000.0);
    assert!(must(&running, "process_open_fds") > 5.0);
    assert!(must(&running, "process_cpu_seconds_total") > 0.0);
    assert!(must(&running, "berth_heap_in_use_bytes") > 100_000.0);
    assert!(value(&running, "berth_heap_free_bytes").is_some());
    promtool_check(&running);

    world.stop(&id, 0).await;
    world.wait_exited(&id).await;
    pod::stop(&world.cri, &pod.0).await.expect("StopPodSandbox");
    let stopped = scrape(&url).await;
    assert_eq!(must(&stopped, "berth_pods{state=\"ready\"}"), 0.0);
    assert_eq!(must(&stopped, "berth_pods{state=\"notready\"}"), 1.0);
    assert_eq!(must(&stopped, "berth_containers{state=\"running\"}"), 0.0);
    assert_eq!(must(&stopped, "berth_containers{state=\"exited\"}"), 1.0);
    assert_eq!(must(&stopped, "berth_container_exits_total"), 1.0);
    assert_eq!(must(&stopped, "berth_container_oom_kills_total"), 0.0);
    promtool_check(&stopped);

    // Only /metrics is served.
    let other = reqwest::get(url.replace("/metrics", "/debug"))
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 404);
}

#[tokio::test]
async fn non_loopback_address_is_refused_at_start() {
    let env = common::TestEnv::new();
    let config = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        format!("{config}\n[metrics]\naddress = \"0.0.0.0:0\"\n"),
    )
    .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::from(env.berthd_command()).output(),
    )
    .await
    .expect("berthd exits at once")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("metrics.address") && stderr.contains("loopback"),
        "{stderr}"
    );
}

#[tokio::test]
async fn shim_reconnects_and_deaths_are_counted() {
    let extra = common::metrics::CONFIG;
    let Some(mut world) = World::start_configured(&[], busybox_image(), extra).await else {
        return;
    };
    let pod = world.run_pod("survivor").await;
    world.run(&pod, "sleeper", "exec sleep 60").await;
    world.berthd.restart().await;
    let url = common::metrics::url(&world);
    let restarted = scrape(&url).await;
    assert_eq!(
        must(
            &restarted,
            "berth_shim_reconnects_total{outcome=\"success\"}"
        ),
        1.0
    );
    assert_eq!(must(&restarted, "berth_shim_starts_total"), 0.0);
    assert_eq!(must(&restarted, "berth_pods{state=\"ready\"}"), 1.0);
    assert_eq!(must(&restarted, "berth_containers{state=\"running\"}"), 1.0);

    // The shim dies under its running container.
    let pid_file = world.env.state.join("pods").join(&pod.0).join("shim.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    // The death is counted when berthd sees the shim go; the container's record
    // turns Exited just after, so wait for both.
    let died = common::wait_for(
        "the shim's death counted and its container no longer running",
        Duration::from_secs(10),
        || {
            let url = url.clone();
            async move {
                let text = scrape(&url).await;
                (value(&text, "berth_shim_deaths_total") == Some(1.0)
                    && value(&text, "berth_containers{state=\"running\"}") == Some(0.0))
                .then_some(text)
            }
        },
    )
    .await;
    assert_eq!(must(&died, "berth_shim_deaths_total"), 1.0);
    promtool_check(&died);
}

#[tokio::test]
async fn container_exits_and_oom_kills_are_counted() {
    let extra = common::metrics::CONFIG;
    let Some(world) = World::start_configured(&[], busybox_image(), extra).await else {
        return;
    };
    let url = common::metrics::url(&world);
    let pod = world.run_pod("jobs").await;
    let failed = world.run(&pod, "failed", "exit 7").await;
    let mut config = world.container_config("hog", "tail /dev/zero");
    config.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let hog = world.create(&pod, config).await.expect("create hog");
    world.start_container(&hog).await;
    world.wait_exited(&failed).await;
    let st = world.wait_exited(&hog).await;
    assert_eq!(st.reason, "OOMKilled", "{st:?}");

    let text = scrape(&url).await;
    assert_eq!(must(&text, "berth_container_exits_total"), 2.0);
    assert_eq!(must(&text, "berth_container_oom_kills_total"), 1.0);
    assert_eq!(must(&text, "berth_containers{state=\"exited\"}"), 2.0);
    pod::stop(&world.cri, &pod.0).await.expect("StopPodSandbox");
    pod::remove(&world.cri, &pod.0)
        .await
        .expect("RemovePodSandbox");
}
