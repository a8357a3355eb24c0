//! Fault injection against a real berthd: kill -9 at random moments while pods and
//! containers are created, started, stopped and removed and images pulled, over
//! and over; after every restart everything listed is inspectable and removable,
//! and at the end nothing is left that no record owns.
//!
//! `BERTH_CRASH_ROUNDS=<n>` runs more rounds, `BERTH_FAULT_SEED=<n>` replays a run
//! (the seed is printed), `BERTH_FAULT_KEEP_LOG=<dir>` keeps berthd's whole log.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::daemon::Cri;
use common::pod;
use common::rng::{self, Rng};
use common::world::World;
use k8s_cri::v1 as cri;

/// Clients issuing calls at once while berthd is killed.
const WORKERS: usize = 4;

/// What a worker needs to build requests: the world's configs, made before the
/// workers start.
#[derive(Clone)]
struct Templates {
    pod: cri::PodSandboxConfig,
    container: cri::ContainerConfig,
    extra_image: String,
}

async fn pod_ids(cri: &Cri) -> Vec<String> {
    match cri
        .runtime_client()
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
    {
        Ok(r) => r.into_inner().items.into_iter().map(|p| p.id).collect(),
        Err(_) => Vec::new(),
    }
}

async fn container_ids(cri: &Cri) -> Vec<String> {
    match cri
        .runtime_client()
        .list_containers(cri::ListContainersRequest::default())
        .await
    {
        Ok(r) => r
            .into_inner()
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Random calls until told to stop; every error is expected (berthd dies under it).
async fn worker(cri: Cri, t: Templates, seed: u64, stop: Arc<AtomicBool>) {
    let mut rng = Rng(seed);
    let mut n = 0;
    let mut rt = cri.runtime_client();
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        match rng.below(6) {
            0 | 1 => {
                let mut config = t.pod.clone();
                let meta = config.metadata.as_mut().unwrap();
                meta.name = format!("crash-{seed:x}-{n}");
                meta.uid = format!("uid-{seed:x}-{n}");
                let _ = pod::run_pod(&cri, config.clone()).await;
            }
            2 => {
                let Some(pod) = rng.pick(&pod_ids(&cri).await) else {
                    continue;
                };
                let mut config = t.container.clone();
                config.metadata.as_mut().unwrap().name = format!("c-{seed:x}-{n}");
                let created = rt
                    .create_container(cri::CreateContainerRequest {
                        pod_sandbox_id: pod,
                        config: Some(config),
                        sandbox_config: Some(t.pod.clone()),
                    })
                    .await;
                if let Ok(r) = created {
                    let _ = rt
                        .start_container(cri::StartContainerRequest {
                            container_id: r.into_inner().container_id,
                        })
                        .await;
                }
            }
            3 => {
                let Some(id) = rng.pick(&container_ids(&cri).await) else {
                    continue;
                };
                let _ = rt
                    .stop_container(cri::StopContainerRequest {
                        container_id: id.clone(),
                        timeout: 0,
                    })
                    .await;
                let _ = rt
                    .remove_container(cri::RemoveContainerRequest { container_id: id })
                    .await;
            }
            4 => {
                let Some(id) = rng.pick(&pod_ids(&cri).await) else {
                    continue;
                };
                let _ = pod::stop(&cri, &id).await;
                let _ = pod::remove(&cri, &id).await;
            }
            _ => {
                if rng.below(2) == 0 {
                    let _ = cri.pull(&t.extra_image).await;
                } else {
                    let _ = cri.remove(&t.extra_image).await;
                }
            }
        }
    }
}

/// Everything listed can be inspected; about half of it is then removed.
async fn check_and_thin(cri: &Cri, rng: &mut Rng) {
    let mut rt = cri.runtime_client();
    for id in container_ids(cri).await {
        rt.container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await
        .unwrap_or_else(|e| panic!("ContainerStatus of listed {id}: {e:?}"));
        if rng.below(2) == 0 {
            rt.stop_container(cri::StopContainerRequest {
                container_id: id.clone(),
                timeout: 0,
            })
            .await
            .unwrap_or_else(|e| panic!("StopContainer of listed {id}: {e:?}"));
            rt.remove_container(cri::RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("RemoveContainer of listed {id}: {e:?}"));
        }
    }
    for id in pod_ids(cri).await {
        pod::status(cri, &id)
            .await
            .unwrap_or_else(|e| panic!("PodSandboxStatus of listed {id}: {e:?}"));
        if rng.below(2) == 0 {
            pod::stop(cri, &id)
                .await
                .unwrap_or_else(|e| panic!("StopPodSandbox of listed {id}: {e:?}"));
            pod::remove(cri, &id)
                .await
                .unwrap_or_else(|e| panic!("RemovePodSandbox of listed {id}: {e:?}"));
        }
    }
}

/// Processes other than berthd whose command line names a path under `dir`
/// (shims name berthd's events socket there).
fn processes_naming(dir: &Path, berthd: u32) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|pid| pid != berthd)
        })
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&needle).then_some(cmdline)
        })
        .collect()
}

/// Mounts below `dir`, but for the netns directory's own (a shared bind mount of
/// itself, made once, as iproute2 makes /run/netns).
fn mounts_under(dir: &Path, netns_dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let netns_dir = netns_dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| m.starts_with(&needle) && m != netns_dir)
        })
        .map(str::to_string)
        .collect()
}

/// runc state files under the shims' runc root: containers runc still knows.
fn runc_containers(state: &Path) -> Vec<String> {
    common::walk(&state.join("runc"))
        .into_iter()
        .filter(|p| p.ends_with("state.json"))
        .map(|p| p.display().to_string())
        .collect()
}

fn blobs(w: &World) -> BTreeSet<String> {
    common::dir_entries(&w.env.root.join("content/blobs/sha256"))
        .into_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_loses_and_leaks_nothing() {
    let Some(mut w) = World::start().await else {
        return;
    };
    let rounds: usize = std::env::var("BERTH_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed = rng::seed("BERTH_FAULT_SEED");
    let mut rng = Rng(seed);

    let extra = common::image::Image::oci()
        .layer(
            common::image::Layer::new()
                .file("extra/data", common::noise(256 << 10, seed))
                .gzip(),
        )
        .cmd(&["sh"])
        .build();
    extra.push(&w.registry, "test/extra", "1").await;
    let templates = Templates {
        pod: w.pod_config("template"),
        container: w.container_config("template", "exec sleep 1000"),
        extra_image: w.registry.reference("test/extra", "1"),
    };
    let snapshots_at_start = w.env.snapshot_fs_dirs().len();
    let blobs_at_start = blobs(&w);

    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..WORKERS)
            .map(|i| {
                tokio::spawn(worker(
                    w.cri.clone(),
                    templates.clone(),
                    rng.next() ^ i as u64,
                    stop.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100 + rng.below(1400) as u64)).await;
        w.berthd.kill9();
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;
        }
        w.berthd.restart().await;
        w.cri = w.berthd.cri().await;
        eprintln!(
            "round {round}: {} pods, {} containers after the restart",
            pod_ids(&w.cri).await.len(),
            container_ids(&w.cri).await.len()
        );
        check_and_thin(&w.cri, &mut rng).await;
    }

    // Remove everything, as `crictl rmp -fa` and `crictl rmi` would.
    for id in pod_ids(&w.cri).await {
        pod::stop(&w.cri, &id).await.expect("StopPodSandbox");
        pod::remove(&w.cri, &id).await.expect("RemovePodSandbox");
    }
    assert!(
        container_ids(&w.cri).await.is_empty(),
        "containers outlived their pods"
    );
    // A pull the last kill cut short keeps its blobs under the pull's lease (for
    // the next attempt, 24 h, as containerd's does); the next pull completes,
    // ending the lease, and the removal then frees every blob.
    w.cri
        .pull(&templates.extra_image)
        .await
        .expect("a pull after the crashes completes");
    let _ = w.cri.remove(&templates.extra_image).await;

    if let Ok(dir) = std::env::var("BERTH_FAULT_KEEP_LOG") {
        let _ = std::fs::copy(&w.env.log, Path::new(&dir).join("berthd.log"));
    }
    assert_nothing_left(&w).await;
    assert_eq!(
        w.env.snapshot_fs_dirs().len(),
        snapshots_at_start,
        "snapshots beyond the image's: {:?}",
        common::dir_entries(&w.env.snapshots_dir())
    );
    assert_eq!(blobs(&w), blobs_at_start, "blobs beyond the image's");
}

/// Once every pod is removed: no shim or other process naming the state dir (shims
/// get 15 s to exit), no mount, netns, runc container or CNI address.
async fn assert_nothing_left(w: &World) {
    let state = &w.env.state;
    let berthd = w.berthd.pid();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !processes_naming(state, berthd).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        processes_naming(state, berthd),
        Vec::<String>::new(),
        "processes left"
    );
    assert_eq!(
        mounts_under(w.env.path(), &state.join("netns")),
        Vec::<String>::new(),
        "mounts left"
    );
    assert_eq!(
        common::dir_entries(&state.join("netns")),
        Vec::<String>::new()
    );
    assert_eq!(
        runc_containers(state),
        Vec::<String>::new(),
        "runc containers left"
    );
    assert_eq!(
        w.net.allocated(),
        Vec::<String>::new(),
        "CNI addresses left"
    );
}

/// A shim killed -9 while a container starts, stops or execs: the call fails or
/// finishes, the container's record says it exited (reason Unknown, naming the
/// shim) within a bound, and removing the pod leaves nothing behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_shim_killed_during_start_stop_or_exec_leaves_records_that_say_so() {
    let Some(w) = World::start().await else {
        return;
    };
    for (case, delay_ms) in [("start", 0), ("stop", 100), ("exec", 300)] {
        let pod = w.run_pod(&format!("dying-{case}")).await;
        let shim = w.env.shim_pid(&pod.0) as i32;
        let mut rt = w.cri.runtime_client();
        let id = w
            .create(
                &pod,
                w.container_config(case, "trap '' TERM; exec sleep 1000"),
            )
            .await
            .expect("CreateContainer");
        let call = {
            let mut rt = rt.clone();
            let id = id.clone();
            async move {
                let _ = rt
                    .start_container(cri::StartContainerRequest {
                        container_id: id.clone(),
                    })
                    .await;
                match case {
                    "stop" => {
                        let _ = rt
                            .stop_container(cri::StopContainerRequest {
                                container_id: id,
                                timeout: 2,
                            })
                            .await;
                    }
                    "exec" => {
                        let _ = rt
                            .exec_sync(cri::ExecSyncRequest {
                                container_id: id,
                                cmd: vec!["sleep".into(), "5".into()],
                                timeout: 10,
                            })
                            .await;
                    }
                    _ => {}
                }
            }
        };
        let killer = async {
            tokio::time::sleep(Duration::from_millis(delay_ms + 50)).await;
            assert_eq!(
                unsafe { libc::kill(shim, libc::SIGKILL) },
                0,
                "kill the shim"
            );
        };
        tokio::join!(
            async {
                let _ = tokio::time::timeout(Duration::from_secs(30), call).await;
            },
            killer
        );
        let st =
            common::wait_for(
                &format!("{case}: the container recorded Exited"),
                Duration::from_secs(15),
                || {
                    let w = &w;
                    let id = &id;
                    async move {
                        Some(w.status(id).await).filter(|st| st.state == common::world::EXITED)
                    }
                },
            )
            .await;
        assert_eq!(st.reason, "Unknown", "{case}: {st:?}");
        rt.remove_container(cri::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("{case}: RemoveContainer: {e:?}"));
        pod::stop(&w.cri, &pod.0).await.expect("StopPodSandbox");
        pod::remove(&w.cri, &pod.0).await.expect("RemovePodSandbox");
    }
    assert_nothing_left(&w).await;
}
