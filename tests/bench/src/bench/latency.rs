//! Single-pod latencies, one pod at a time: RunPodSandbox (CNI bridge),
//! CreateContainer + StartContainer, ExecSync, StopContainer + RemoveContainer,
//! StopPodSandbox + RemovePodSandbox. Each iteration runs the same cycle on every
//! side (berth, containerd, the floor) in an order that rotates with the
//! iteration, so drift and noise fall on all of them alike; the first
//! iterations warm caches up and are dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Result;
use super::client::{container_config, pod_config};
use super::floors::{self, Floor};
use super::memory::side;
use super::report::{Report, Side};
use super::runtimes::Runtime;
use super::samples::ms;

/// Lets the previous cycle's asynchronous cleanup (shim exit, reaping) finish
/// before the next side is timed.
const PAUSE: Duration = Duration::from_millis(200);

pub struct Options {
    pub iterations: usize,
    pub warmup: usize,
    pub execs: usize,
}

enum Participant<'a> {
    Runtime(&'a Runtime),
    Floor(&'a Arc<Floor>),
}

pub async fn run(
    runtimes: &[Runtime],
    floor: Option<&Arc<Floor>>,
    image: &str,
    opts: &Options,
    report: &mut Report,
) {
    let mut participants: Vec<Participant> = runtimes.iter().map(Participant::Runtime).collect();
    participants.extend(floor.map(Participant::Floor));
    let mut failed = vec![false; participants.len()];
    let total = opts.warmup + opts.iterations;
    for i in 0..total {
        eprint!("\rlatency: iteration {}/{total}", i + 1);
        for k in 0..participants.len() {
            let k = (k + i) % participants.len();
            if failed[k] {
                continue;
            }
            let (side, cycle) = match &participants[k] {
                Participant::Runtime(rt) => {
                    (side(rt.kind), runtime_cycle(rt, image, i, opts.execs).await)
                }
                Participant::Floor(floor) => {
                    let floor = Arc::clone(floor);
                    let execs = opts.execs;
                    let cycle = tokio::task::spawn_blocking(move || floor.cycle(i, execs))
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                    if let Ok(c) = &cycle
                        && i >= opts.warmup
                    {
                        floor_components(c, report);
                    }
                    (Side::Floor, cycle.map(Cycle::from))
                }
            };
            match cycle {
                Ok(c) if i >= opts.warmup => c.record(side, report),
                Ok(_) => {}
                Err(e) => {
                    for key in KEYS {
                        report.fail(key, side, &e);
                    }
                    failed[k] = true;
                }
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
    eprintln!();
}

const KEYS: [&str; 7] = [
    "pod_start",
    "create_start",
    "create",
    "start",
    "exec_sync",
    "stop_remove",
    "pod_stop_remove",
];

/// One pod's life as the five timings every side reports.
pub struct Cycle {
    pod: Duration,
    create: Duration,
    start: Duration,
    exec: Vec<Duration>,
    stop_remove: Duration,
    pod_teardown: Duration,
}

impl Cycle {
    fn record(&self, side: Side, report: &mut Report) {
        report.record("pod_start", side, ms(self.pod));
        report.record("create_start", side, ms(self.create + self.start));
        report.record("create", side, ms(self.create));
        report.record("start", side, ms(self.start));
        for e in &self.exec {
            report.record("exec_sync", side, ms(*e));
        }
        report.record("stop_remove", side, ms(self.stop_remove));
        report.record("pod_stop_remove", side, ms(self.pod_teardown));
    }
}

impl From<floors::Cycle> for Cycle {
    fn from(c: floors::Cycle) -> Cycle {
        Cycle {
            pod: c.pod,
            create: c.create,
            start: c.start,
            exec: c.exec,
            stop_remove: c.stop_remove,
            pod_teardown: c.pod_teardown,
        }
    }
}

/// The floor's parts of a pod start, recorded as metrics of their own.
fn floor_components(c: &floors::Cycle, report: &mut Report) {
    report.record("floor_netns", Side::Floor, ms(c.netns));
    report.record("floor_cni_add", Side::Floor, ms(c.cni_add));
    report.record("floor_runc_pause", Side::Floor, ms(c.runc_pause));
}

/// One pod through CRI; on failure the pod is torn down before the error returns.
async fn runtime_cycle(rt: &Runtime, image: &str, i: usize, execs: usize) -> Result<Cycle> {
    let config = pod_config(&format!("latency-{i}"), &rt.logs);
    let t = Instant::now();
    let pod_id = rt.cri.run_pod(&config).await?;
    let pod = t.elapsed();
    let rest = async {
        let t = Instant::now();
        let id = rt
            .cri
            .create(&pod_id, container_config("app", image, None), &config)
            .await?;
        let create = t.elapsed();
        let t = Instant::now();
        rt.cri.start(&id).await?;
        let start = t.elapsed();
        let mut exec = Vec::with_capacity(execs);
        for _ in 0..execs {
            let t = Instant::now();
            rt.cri.exec(&id, &["true"]).await?;
            exec.push(t.elapsed());
        }
        let t = Instant::now();
        rt.cri.stop(&id).await?;
        rt.cri.remove(&id).await?;
        let stop_remove = t.elapsed();
        let t = Instant::now();
        rt.cri.stop_pod(&pod_id).await?;
        rt.cri.remove_pod(&pod_id).await?;
        Ok::<_, String>(Cycle {
            pod,
            create,
            start,
            exec,
            stop_remove,
            pod_teardown: t.elapsed(),
        })
    };
    match rest.await {
        Ok(cycle) => Ok(cycle),
        Err(e) => {
            let _ = rt.cri.tear_down(&pod_id).await;
            Err(e)
        }
    }
}
