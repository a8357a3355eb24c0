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
use common::world::{World, busybox_image};
use k8s_cri::v1 as cri;

/// Clients calling at once: more than berthd's worker threads, so calls on one
/// pod really interleave.
const CLIENTS: usize = 16;
/// Pods they share: few, so that most calls race another on the same pod.
const PODS: usize = 3;
/// How long they race by default: long enough for thousands of calls on two
/// cores, short enough for CI.
const DEFAULT_SECS: u64 = 20;
/// How long berthd may take to let go of what removed pods held (a shim's log
/// reader and connection end a moment after the shim).
const HEAP_SETTLE: Duration = Duration::from_secs(5);
/// How long a shim may take to exit once its pod is removed.
const SHIM_EXIT_GRACE: Duration = Duration::from_secs(5);
/// How many of the latest containers calls pick from.
const RECENT: usize = 6;
/// How much more heap berthd may have in use once every pod is gone than before
/// the load: what grows with the peak (1.4-2.3 MiB here; likely index capacity
/// and each thread's allocation cache), not a per-call leak (the old per-id maps
/// and orphans grew past this within the run). Not its RSS: pods pushed out of
/// their slot stay until the end, hundreds at the peak, and once they are
/// removed the allocator keeps what they freed between chunks still in use,
/// 6-14 MiB here, by as much as the peak was high; a trim can return only whole
/// free pages.
const MAX_HEAP_GROWTH_KIB: u64 = 4 * 1024;

/// What the clients know: the pod in each slot, and containers ever created.
#[derive(Default)]
struct Known {
    pods: Vec<Option<(String, cri::PodSandboxConfig)>>,
    containers: Vec<String>,
    runs: u32,
    /// Outcomes by call and gRPC code, for the log and the Internal check.
    outcomes: BTreeMap<(&'static str, String), u32>,
}

/// berthd's heap in use and free inside its allocator, in KiB, as it reports them.
async fn heap(metrics: &str) -> (u64, u64) {
    let text = common::metrics::scrape(metrics).await;
    let kib = |series| (common::metrics::must(&text, series) / 1024.0) as u64;
    (kib("berth_heap_in_use_bytes"), kib("berth_heap_free_bytes"))
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
    let Some(w) = World::start_configured(&[], busybox_image(), common::metrics::CONFIG).await
    else {
        return;
    };
    let w = Arc::new(w);
    let metrics = common::metrics::url(&w);
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
    let (heap_before, _) = heap(&metrics).await;
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
    let deadline = Instant::now() + HEAP_SETTLE;
    let (heap_after, free) = loop {
        let (in_use, free) = heap(&metrics).await;
        if in_use < heap_before + MAX_HEAP_GROWTH_KIB || Instant::now() > deadline {
            break (in_use, free);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "berthd heap in use: {heap_before} KiB before, {heap_after} KiB after \
         ({free} KiB free in its allocator; anonymous RSS {} KiB)",
        common::anon_rss_kib(w.berthd.pid())
    );
    assert!(
        heap_after < heap_before + MAX_HEAP_GROWTH_KIB,
        "berthd's heap in use grew from {heap_before} KiB to {heap_after} KiB and kept it"
    );
}
