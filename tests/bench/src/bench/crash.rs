//! The crash loop of tests/faults.rs (`kill_9_at_random_moments_loses_and_leaks_nothing`)
//! run against each runtime of the bench, side by side: four CRI clients create,
//! start, stop and remove pods and containers and pull and remove an image; the
//! daemon is killed -9 at a random moment, started again, and everything listed
//! is inspected and about half of it stopped and removed; at the end every pod
//! is removed and what is left on the host is counted, then counted again after
//! one more restart with nothing in flight (what recovery reclaims).
//!
//! Same seed, same operations, same checks on both sides. Where tests/faults.rs
//! panics on a failed call after a restart, this counts it (and keeps the first
//! few messages), so that a runtime that fails still gets its figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use berth_testkit::rng::Rng;
use serde_json::{Value, json};

use super::Result;
use super::client::{self, Cri};
use super::leaks::Footprint;
use super::runtimes::Runtime;

/// Clients issuing calls at once while the daemon is killed: tests/faults.rs's.
const WORKERS: usize = 4;
/// The kill comes 100 ms to 1.5 s into a round, as in tests/faults.rs: long
/// enough for a few calls of every kind to be under way.
const KILL_AFTER_MIN_MS: u64 = 100;
const KILL_AFTER_SPREAD_MS: u64 = 1400;
/// How long a worker may take to notice its daemon is gone (tests/faults.rs's).
const WORKER_GRACE: Duration = Duration::from_secs(30);
/// How long shims may take to exit after the last pod is removed.
const SETTLE: Duration = Duration::from_secs(15);
/// Failure messages kept per runtime: enough to see the kinds, bounded.
const KEPT_FAILURES: usize = 10;

/// What the workers ask for, on either runtime.
#[derive(Clone)]
pub struct Templates {
    pub image: String,
    pub extra_image: String,
}

/// What is left on the host after the loop, beyond what was there before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    pub shims: usize,
    pub mounts: usize,
    pub netns: usize,
    pub runc_containers: usize,
    pub cni_addresses: usize,
    pub snapshots: usize,
    pub blobs: usize,
}

impl Leftovers {
    fn fields(&self) -> [(&'static str, usize); 7] {
        [
            ("shims", self.shims),
            ("mounts", self.mounts),
            ("netns", self.netns),
            ("runc_containers", self.runc_containers),
            ("cni_addresses", self.cni_addresses),
            ("snapshots", self.snapshots),
            ("blobs", self.blobs),
        ]
    }
}

/// A count before the loop, to subtract: images' snapshots and blobs, and
/// whatever mounts and processes the runtime holds when idle.
struct Baseline {
    footprint: Footprint,
    snapshots: usize,
    blobs: usize,
}

impl Baseline {
    fn of(rt: &Runtime) -> Baseline {
        Baseline {
            footprint: Footprint::of(rt),
            snapshots: rt.snapshots().len(),
            blobs: rt.blobs().len(),
        }
    }

    fn leftovers(&self, rt: &Runtime) -> Leftovers {
        let now = Baseline::of(rt);
        let (a, b) = (&now.footprint, &self.footprint);
        Leftovers {
            shims: a.shims.saturating_sub(b.shims),
            mounts: (a.overlay_mounts + a.other_mounts)
                .saturating_sub(b.overlay_mounts + b.other_mounts),
            netns: a.netns.saturating_sub(b.netns),
            runc_containers: a.runc_containers.saturating_sub(b.runc_containers),
            cni_addresses: a.ips.saturating_sub(b.ips),
            snapshots: now.snapshots.saturating_sub(self.snapshots),
            blobs: now.blobs.saturating_sub(self.blobs),
        }
    }
}

/// One runtime's figures.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub runtime: &'static str,
    pub seed: u64,
    pub rounds: usize,
    pub kills: usize,
    /// Pods and containers listed after the restarts, summed over rounds.
    pub listed: usize,
    /// Calls on listed objects (status, stop, remove) that failed after a restart,
    /// and those of the final removal.
    pub failed_calls: usize,
    pub failures: Vec<String>,
    /// Containers still listed after every pod was removed.
    pub orphan_containers: usize,
    pub leftovers: Option<Leftovers>,
    /// The same after one more kill -9 and restart with nothing in flight: what
    /// the runtime's recovery reclaims of it.
    pub after_restart: Option<Leftovers>,
    /// containerd's leases left (they expire 24 h after the killed call).
    pub leases: Option<usize>,
    /// What the leftover shims and runc containers are (ids), to look into.
    pub left_ids: Vec<String>,
    /// Why the loop stopped early (a daemon that did not come back).
    pub error: Option<String>,
}

impl Outcome {
    fn failed(&mut self, what: String) {
        self.failed_calls += 1;
        if self.failures.len() < KEPT_FAILURES {
            eprintln!("crash loop [{}]: {what}", self.runtime);
            self.failures.push(what);
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "runtime": self.runtime,
            "seed": self.seed,
            "rounds": self.rounds,
            "kills": self.kills,
            "listed_after_restarts": self.listed,
            "failed_calls": self.failed_calls,
            "failures": self.failures,
            "orphan_containers": self.orphan_containers,
            "leftovers": self.leftovers.as_ref().map(|l| Value::Object(
                l.fields().iter().map(|(k, v)| (k.to_string(), json!(v))).collect()
            )),
            "leftovers_after_one_more_restart": self.after_restart.as_ref().map(|l| Value::Object(
                l.fields().iter().map(|(k, v)| (k.to_string(), json!(v))).collect()
            )),
            "containerd_leases": self.leases,
            "left_ids": self.left_ids,
            "error": self.error,
        })
    }
}

/// The side-by-side table: one row per figure, one column per runtime.
pub fn table(outcomes: &[Outcome]) -> Vec<Vec<String>> {
    let mut rows = vec![
        std::iter::once("CRASH LOOP (kill -9)".to_string())
            .chain(outcomes.iter().map(|o| o.runtime.to_string()))
            .collect::<Vec<_>>(),
    ];
    let mut row = |title: &str, cell: &dyn Fn(&Outcome) -> String| {
        rows.push(
            std::iter::once(title.to_string())
                .chain(outcomes.iter().map(cell))
                .collect(),
        );
    };
    row("rounds", &|o| o.rounds.to_string());
    row("kills survived (daemon back, ready)", &|o| {
        o.kills.to_string()
    });
    row("pods+containers listed after restarts", &|o| {
        o.listed.to_string()
    });
    row("calls failed on listed objects", &|o| {
        o.failed_calls.to_string()
    });
    row("containers left without a pod", &|o| {
        o.orphan_containers.to_string()
    });
    let names = Leftovers::default().fields().map(|(name, _)| name);
    for (i, name) in names.iter().enumerate() {
        row(
            &format!("left at the end / after a restart: {name}"),
            &|o| {
                let count = |l: &Option<Leftovers>| {
                    l.as_ref()
                        .map_or("n/a".to_string(), |l| l.fields()[i].1.to_string())
                };
                format!("{} / {}", count(&o.leftovers), count(&o.after_restart))
            },
        );
    }
    // berth's own pull leases are in its store, which nothing outside reads.
    row("containerd leases left (expire in 24 h)", &|o| {
        o.leases.map_or("-".to_string(), |n| n.to_string())
    });
    row("stopped early", &|o| {
        o.error.clone().unwrap_or_else(|| "no".into())
    });
    rows
}

/// The loop on one runtime: `rounds` kills, then the final removal and count.
pub async fn run(rt: &mut Runtime, t: &Templates, rounds: usize, seed: u64) -> Outcome {
    let mut outcome = Outcome {
        runtime: rt.name(),
        seed,
        ..Default::default()
    };
    // Pulled and removed once first, so that the extra image's blob and
    // snapshot are not in the baseline whatever state it was in.
    let _ = rt.cri.remove_image(&t.extra_image).await;
    let baseline = Baseline::of(rt);
    let mut rng = Rng(seed);
    for round in 0..rounds {
        outcome.rounds = round + 1;
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..WORKERS)
            .map(|i| {
                tokio::spawn(worker(
                    rt.cri.clone(),
                    t.clone(),
                    rt.logs.clone(),
                    rng.next() ^ i as u64,
                    stop.clone(),
                ))
            })
            .collect();
        let wait = KILL_AFTER_MIN_MS + rng.below(KILL_AFTER_SPREAD_MS as usize) as u64;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        rt.kill9();
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            let _ = tokio::time::timeout(WORKER_GRACE, worker).await;
        }
        if let Err(e) = rt.restart().await {
            outcome.error = Some(format!("round {round}: not back after kill -9: {e}"));
            return outcome;
        }
        outcome.kills += 1;
        check_and_thin(&rt.cri, &mut rng, &mut outcome).await;
        eprintln!(
            "crash loop [{}] round {round}: {} failed calls so far",
            outcome.runtime, outcome.failed_calls
        );
    }
    remove_everything(rt, t, &mut outcome).await;
    outcome.leftovers = Some(settle(rt, &baseline).await);
    outcome.leases = rt.containerd_leases();
    outcome.left_ids = left_ids(rt);
    match rt.restart().await {
        Ok(()) => outcome.after_restart = Some(settle(rt, &baseline).await),
        Err(e) => outcome.error = Some(format!("the last restart: {e}")),
    }
    outcome
}

/// Random calls until told to stop; every error is expected (the daemon dies
/// under it). The operations and their odds are tests/faults.rs's.
async fn worker(
    cri: Cri,
    t: Templates,
    logs: std::path::PathBuf,
    seed: u64,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng(seed);
    let mut n = 0;
    let sandbox = client::pod_config("template", &logs);
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        match rng.below(6) {
            0 | 1 => {
                let _ = cri
                    .run_pod(&client::pod_config(&format!("crash-{seed:x}-{n}"), &logs))
                    .await;
            }
            2 => {
                let pods = cri.pods().await.unwrap_or_default();
                if pods.is_empty() {
                    continue;
                }
                let pod = &pods[rng.below(pods.len())];
                let config = client::container_config(&format!("c-{seed:x}-{n}"), &t.image, None);
                if let Ok(id) = cri.create(pod, config, &sandbox).await {
                    let _ = cri.start(&id).await;
                }
            }
            3 => {
                let containers = cri.containers().await.unwrap_or_default();
                if containers.is_empty() {
                    continue;
                }
                let id = &containers[rng.below(containers.len())];
                let _ = cri.stop_within(id, 0).await;
                let _ = cri.remove(id).await;
            }
            4 => {
                let pods = cri.pods().await.unwrap_or_default();
                if pods.is_empty() {
                    continue;
                }
                let id = &pods[rng.below(pods.len())];
                let _ = cri.stop_pod(id).await;
                let _ = cri.remove_pod(id).await;
            }
            _ => {
                if rng.below(2) == 0 {
                    let _ = cri.pull(&t.extra_image).await;
                } else {
                    let _ = cri.remove_image(&t.extra_image).await;
                }
            }
        }
    }
}

/// Everything listed is inspected; about half of it is then stopped and removed.
async fn check_and_thin(cri: &Cri, rng: &mut Rng, outcome: &mut Outcome) {
    let containers = listed(cri.containers().await, "ListContainers", outcome);
    let pods = listed(cri.pods().await, "ListPodSandbox", outcome);
    outcome.listed += containers.len() + pods.len();
    for id in containers {
        expect(cri.container_status(&id).await, &id, outcome);
        if rng.below(2) == 0 {
            expect(cri.stop_within(&id, 0).await, &id, outcome);
            expect(cri.remove(&id).await, &id, outcome);
        }
    }
    for id in pods {
        expect(cri.pod_status(&id).await, &id, outcome);
        if rng.below(2) == 0 {
            expect(cri.stop_pod(&id).await, &id, outcome);
            expect(cri.remove_pod(&id).await, &id, outcome);
        }
    }
}

fn listed(ids: Result<Vec<String>>, call: &str, outcome: &mut Outcome) -> Vec<String> {
    ids.unwrap_or_else(|e| {
        outcome.failed(format!("{call}: {e}"));
        Vec::new()
    })
}

fn expect(result: Result<()>, id: &str, outcome: &mut Outcome) {
    if let Err(e) = result {
        outcome.failed(format!("{id}: {e}"));
    }
}

/// Every pod stopped and removed, as `crictl rmp -fa` would; the extra image
/// pulled and removed (containerd's RemoveImage runs its garbage collection
/// synchronously, which removes the snapshots of removed containers).
async fn remove_everything(rt: &Runtime, t: &Templates, outcome: &mut Outcome) {
    for id in listed(rt.cri.pods().await, "ListPodSandbox", outcome) {
        expect(rt.cri.stop_pod(&id).await, &id, outcome);
        expect(rt.cri.remove_pod(&id).await, &id, outcome);
    }
    outcome.orphan_containers = listed(rt.cri.containers().await, "ListContainers", outcome).len();
    if let Err(e) = rt.cri.pull(&t.extra_image).await {
        outcome.failed(format!("final pull: {e}"));
    }
    if let Err(e) = rt.cri.remove_image(&t.extra_image).await {
        outcome.failed(format!("final RemoveImage: {e}"));
    }
}

/// Waits (up to [`SETTLE`]) for the leftovers to go, and returns what stayed.
async fn settle(rt: &Runtime, baseline: &Baseline) -> Leftovers {
    let deadline = Instant::now() + SETTLE;
    loop {
        let left = baseline.leftovers(rt);
        if left == Leftovers::default() || Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `shim <id>` for each shim still running, `runc <id>` for each container runc
/// still knows; the first few of each.
fn left_ids(rt: &Runtime) -> Vec<String> {
    let shims = rt.shims().into_iter().map(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let id = args
            .iter()
            .position(|a| a == "-id")
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_default();
        format!("shim pid {pid} -id {id}")
    });
    let runc = rt
        .runc_containers()
        .into_iter()
        .map(|id| format!("runc {id}"));
    shims
        .take(KEPT_FAILURES)
        .chain(runc.take(KEPT_FAILURES))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench must make the choices tests/faults.rs makes for a seed, or the
    /// two runs would not be the same loop: the first draws of seed 1, as the
    /// test's xorshift64* gives them.
    #[test]
    fn the_rng_is_the_fault_suites() {
        let mut rng = Rng(1);
        let draws: Vec<u64> = (0..3).map(|_| rng.next()).collect();
        assert_eq!(
            draws,
            [
                0x47e4_ce4b_896c_dd1d,
                0xabcf_a6a8_e079_651d,
                0xb9d1_0d8f_eb73_1f57
            ]
        );
    }

    /// A runtime whose leftovers could not be counted says n/a, not 0; every
    /// runtime gets a column and every figure a row.
    #[test]
    fn the_table_is_side_by_side_and_never_fakes_a_count() {
        let berth = Outcome {
            runtime: "berth",
            rounds: 20,
            kills: 20,
            leftovers: Some(Leftovers {
                shims: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let containerd = Outcome {
            runtime: "containerd",
            rounds: 3,
            kills: 2,
            error: Some("round 2: not back".into()),
            ..Default::default()
        };
        let rows = table(&[berth, containerd]);
        assert_eq!(rows[0], ["CRASH LOOP (kill -9)", "berth", "containerd"]);
        assert!(rows.iter().all(|r| r.len() == 3));
        let shims = rows
            .iter()
            .find(|r| r[0] == "left at the end / after a restart: shims")
            .unwrap();
        assert_eq!(shims[1..], ["2 / n/a", "n/a / n/a"]);
        let early = rows.iter().find(|r| r[0] == "stopped early").unwrap();
        assert_eq!(early[1..], ["no", "round 2: not back"]);
    }
}
