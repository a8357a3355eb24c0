//! Racing calls (issue 10): many clients creating, starting, stopping and
//! removing containers and pods on the same few pods at once, in random order,
//! for a bounded time. Afterwards everything is removed as `crictl rmp -fa`
//! does, and nothing that no record owns may be left: no shim, netns, mount,
//! runc container, CNI address or snapshot beyond the image's, and berthd's
//! memory is back near where it started.
//!
//! `BERTH_RACE_SEED` replays a run's random choices (the timing is the kernel's);
//! `BERTH_RACE_SECS` runs it longer.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pod;
use common::rng::{self, Rng};
use common::world::World;
use k8s_cri::v1 as cri;

/// Clients calling at once: more than berthd's worker threads, so calls on one
/// pod really interleave.
const CLIENTS: usize = 16;
/// Pods they share: few, so that most calls race another on the same pod.
const PODS: usize = 3;
/// How long they race by default: long enough for thousands of calls on two
/// cores, short enough for CI.
const DEFAULT_SECS: u64 = 20;
/// How long berthd may take to give memory back after the last removal (it
/// trims its allocator a second after).
const RSS_SETTLE: Duration = Duration::from_secs(5);
/// How long a shim may take to exit once its pod is removed.
const SHIM_EXIT_GRACE: Duration = Duration::from_secs(5);
/// How many of the latest containers calls pick from.
const RECENT: usize = 6;
/// How much berthd's RSS may stay above its level before the load once every
/// pod is gone: what its caches and allocator keep, not a per-call leak (the
/// old per-id maps and orphans grew past this within the run).
const MAX_RSS_GROWTH_KIB: u64 = 6 * 1024;

/// What the clients know: the pod in each slot, and containers ever created.
#[derive(Default)]
struct Known {
    pods: Vec<Option<(String, cri::PodSandboxConfig)>>,
    containers: Vec<String>,
    runs: u32,
    /// Outcomes by call and gRPC code, for the log and the Internal check.
    outcomes: BTreeMap<(&'static str, String), u32>,
}

/// What berthd's open descriptors point at, sorted, ids blanked, so that two
/// moments compare.
fn open_files(pid: u32) -> Vec<String> {
    let dir = format!("/proc/{pid}/fd");
    let mut files: Vec<String> = common::dir_entries(Path::new(&dir))
        .into_iter()
        .filter_map(|fd| std::fs::read_link(format!("{dir}/{fd}")).ok())
        .map(|target| target.display().to_string())
        .collect();
    files.sort();
    files
}

fn record<T>(known: &Mutex<Known>, call: &'static str, result: &Result<T, tonic::Status>) {
    let code = match result {
        Ok(_) => "Ok".to_string(),
        Err(s) => format!("{:?}", s.code()),
    };
    if let Err(s) = result
        && s.code() == tonic::Code::Internal
    {
        eprintln!("{call}: Internal: {}", s.message());
    }
    *known
        .lock()
        .unwrap()
        .outcomes
        .entry((call, code))
        .or_default() += 1;
}

/// One client: random calls on random pods and containers until `until`.
async fn client(w: Arc<World>, known: Arc<Mutex<Known>>, mut rng: Rng, until: Instant) {
    let rt = w.cri.runtime_client();
    while Instant::now() < until {
        let slot = rng.below(PODS);
        let (pod, container) = {
            let k = known.lock().unwrap();
            // Recent ones, so most calls find their container still there.
            let recent = &k.containers[k.containers.len().saturating_sub(RECENT)..];
            let c = (!recent.is_empty()).then(|| recent[rng.below(recent.len())].clone());
            (k.pods[slot].clone(), c)
        };
        match (rng.below(10), pod, container) {
            (0, _, _) => {
                let mut config = w.pod_config(&format!("race-{slot}"));
                let run = {
                    let mut k = known.lock().unwrap();
                    k.runs += 1;
                    k.runs
                };
                config.metadata.as_mut().unwrap().uid = format!("uid-{run}");
                let result = pod::run_pod(&w.cri, config.clone()).await;
                record(&known, "RunPodSandbox", &result);
                if let Ok(id) = result {
                    let old = known.lock().unwrap().pods[slot].replace((id, config));
                    // A pod pushed out of its slot is still removed at the end.
                    if let Some((old, _)) = old {
                        let r = pod::stop(&w.cri, &old).await;
                        record(&known, "StopPodSandbox", &r);
                    }
                }
            }
            (1..=3, Some(pod), _) => {
                let name = format!("c{}", rng.below(1 << 20));
                let result = w
                    .create(&pod, w.container_config(&name, "exec sleep 1000"))
                    .await;
                record(&known, "CreateContainer", &result);
                if let Ok(id) = result {
                    known.lock().unwrap().containers.push(id);
                }
            }
            (4 | 5, _, Some(c)) => {
                let r = rt
                    .clone()
                    .start_container(cri::StartContainerRequest { container_id: c })
                    .await;
                record(&known, "StartContainer", &r);
            }
            (6, _, Some(c)) => {
                let r = rt
                    .clone()
                    .stop_container(cri::StopContainerRequest {
                        container_id: c,
                        timeout: 0,
                    })
                    .await;
                record(&known, "StopContainer", &r);
            }
            (7, _, Some(c)) => {
                let r = w.remove(&c).await;
                record(&known, "RemoveContainer", &r);
            }
            (8, Some(pod), _) => {
                let r = pod::stop(&w.cri, &pod.0).await;
                record(&known, "StopPodSandbox", &r);
            }
            (9, Some(pod), _) => {
                let r = pod::remove(&w.cri, &pod.0).await;
                record(&known, "RemovePodSandbox", &r);
            }
            _ => {}
        }
    }
}

/// `crictl rmp -fa`: every listed pod stopped and removed.
async fn remove_all_pods(w: &World) {
    for id in pod::list(&w.cri, cri::PodSandboxFilter::default()).await {
        pod::stop(&w.cri, &id).await.expect("StopPodSandbox");
        pod::remove(&w.cri, &id).await.expect("RemovePodSandbox");
    }
}

/// Processes but berthd whose command line names this test's state directory:
/// shims (their `-bundle`), and what they run.
fn processes_under(state: &Path, berthd: u32) -> Vec<String> {
    let state = state.display().to_string();
    common::dir_entries(Path::new("/proc"))
        .into_iter()
        .filter(|p| p.parse::<u32>().is_ok_and(|p| p != berthd))
        .filter_map(|p| {
            let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&state).then(|| format!("{p}: {cmdline}"))
        })
        .collect()
}

/// Mounts under berth's root or state, but the netns directory's own.
fn mounts_under(w: &World) -> Vec<String> {
    let netns_dir = w.env.state.join("netns").display().to_string();
    let roots = [
        w.env.state.display().to_string(),
        w.env.root.display().to_string(),
    ];
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m != netns_dir && roots.iter().any(|r| m.starts_with(r.as_str())))
        .map(str::to_string)
        .collect()
}

fn runc_containers(w: &World) -> Vec<String> {
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(w.env.state.join("runc/k8s.io"))
        .args(["list", "-q"])
        .output()
        .expect("runc list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_calls_on_few_pods_leave_nothing_behind() {
    let Some(w) = World::start().await else {
        return;
    };
    let w = Arc::new(w);
    let seed = rng::seed("BERTH_RACE_SEED");
    let secs = std::env::var("BERTH_RACE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SECS);

    // One full cycle first, so lazily built state (connections, runtime
    // features, thread pools) is in the baseline rather than counted as growth.
    let warm = w.run_pod("race-warm").await;
    let c = w
        .create(&warm, w.container_config("warm", "exec sleep 1000"))
        .await;
    w.start_container(&c.expect("CreateContainer")).await;
    remove_all_pods(&w).await;
    let snapshots_before = common::dir_entries(&w.env.snapshots_dir());
    let rss_before = common::rss_kib(w.berthd.pid());
    let files_before = open_files(w.berthd.pid());

    let known = Arc::new(Mutex::new(Known {
        pods: vec![None; PODS],
        ..Default::default()
    }));
    let until = Instant::now() + Duration::from_secs(secs);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let client_rng = Rng(seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            tokio::spawn(client(w.clone(), known.clone(), client_rng, until))
        })
        .collect();
    for c in clients {
        c.await.expect("a client panicked");
    }
    let outcomes = std::mem::take(&mut known.lock().unwrap().outcomes);
    eprintln!("calls by outcome: {outcomes:#?}");

    remove_all_pods(&w).await;

    let containers = w.list(cri::ContainerFilter::default()).await;
    assert!(containers.is_empty(), "containers left: {containers:?}");
    // A shim told to shut down exits a moment after its reply; a leaked one never.
    let first = processes_under(&w.env.state, w.berthd.pid());
    if !first.is_empty() {
        eprintln!("processes still there right after the removals: {first:#?}");
    }
    let deadline = Instant::now() + SHIM_EXIT_GRACE;
    let shims = loop {
        let left = processes_under(&w.env.state, w.berthd.pid());
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(shims.is_empty(), "processes left: {shims:#?}");
    assert_eq!(
        runc_containers(&w),
        Vec::<String>::new(),
        "runc containers left"
    );
    assert_eq!(mounts_under(&w), Vec::<String>::new(), "mounts left");
    for dir in ["netns", "pods", "containers"] {
        assert_eq!(
            common::dir_entries(&w.env.state.join(dir)),
            Vec::<String>::new(),
            "{dir} left under the state directory"
        );
    }
    assert_eq!(
        w.net.allocated(),
        Vec::<String>::new(),
        "CNI addresses left"
    );
    assert_eq!(
        common::dir_entries(&w.env.snapshots_dir()),
        snapshots_before,
        "snapshots beyond the image's"
    );
    // Every copier, shim connection and log reader of a removed object is closed:
    // what berthd has open is what it had before the load.
    let deadline = Instant::now() + SHIM_EXIT_GRACE;
    let files_after = loop {
        let files = open_files(w.berthd.pid());
        if files.len() <= files_before.len() || Instant::now() > deadline {
            break files;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let opened: Vec<_> = files_after
        .iter()
        .filter(|f| !files_before.contains(f))
        .collect();
    assert!(
        files_after.len() <= files_before.len(),
        "berthd has {} files open, {} before the load; new ones: {opened:#?}",
        files_after.len(),
        files_before.len()
    );
    // Stop and Remove are idempotent: racing another stop or removal is no error.
    let wrong: Vec<_> = outcomes
        .iter()
        .filter(|((call, code), _)| {
            code == "Internal"
                || (call.starts_with("Stop") || call.starts_with("Remove")) && code != "Ok"
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "calls that failed as they must not: {wrong:?}"
    );
    // berthd trims its allocator a moment after the last removal.
    let deadline = Instant::now() + RSS_SETTLE;
    let rss_after = loop {
        let rss = common::rss_kib(w.berthd.pid());
        if rss < rss_before + MAX_RSS_GROWTH_KIB || Instant::now() > deadline {
            break rss;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("berthd RSS: {rss_before} KiB before, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + MAX_RSS_GROWTH_KIB,
        "berthd grew from {rss_before} KiB to {rss_after} KiB and kept it"
    );
}
