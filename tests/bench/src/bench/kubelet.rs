//! Kubelet scale: for each pod count of `--scale` (the kubelet's default
//! maximum of 110 pods per node, and 250), that many pods of M containers
//! started K at a time on each runtime, then measured as a node full of them:
//! start and teardown time, daemon RSS, shim memory, List latencies, and a
//! PLEG-style relist (ListPodSandbox + ListContainers once a second while a pod
//! is started and torn down beside it every two seconds, the same churn on
//! every runtime) with the daemon's CPU over it (utime + stime from /proc). Each figure's growth per pod is a
//! least-squares slope over the counts.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use super::fit;
use super::procfs;
use super::report::num;
use super::runtimes::Runtime;
use super::samples::{Summary, ms};
use super::scale::start_pod;

pub struct Options {
    pub counts: Vec<usize>,
    pub containers: usize,
    pub concurrency: usize,
    pub relist: Duration,
    /// Timed calls of ListContainers and ListPodSandbox at each count.
    pub list_calls: usize,
}

/// The PLEG relists once a second.
const RELIST_PERIOD: Duration = Duration::from_secs(1);
/// A pod (with its containers) started and torn down this often during the
/// relist, on every runtime: the same work for each, so that the CPU figures
/// compare. (Churning as fast as each runtime could gave the faster runtime
/// more pods to start in the same minute, and a higher CPU figure for it.)
/// Every runtime measured here starts and tears down a pod well within it.
const CHURN_PERIOD: Duration = Duration::from_secs(2);
/// At most this many timed calls of ListContainerStats at each count:
/// containerd's takes a second at 250 pods. (ListContainers and ListPodSandbox
/// take `--list-calls`: with 50, one noisy second could move the p50 of 110 pods
/// twofold, 0.52 and 1.09 ms in two runs of one commit, and the slope with it.)
const STATS_CALLS: usize = 50;
/// Untimed calls first, as in the scale scenario and for the same reason.
const LIST_WARMUP: usize = 20;
/// Lets the daemon's allocations settle after the burst of starts.
const SETTLE: Duration = Duration::from_secs(3);
/// Daemon memory growth allowed per container (issue 15: 40 KiB).
const RSS_KIB_PER_CONTAINER: f64 = 40.0;
/// berthd's CPU during relist, as a fraction of containerd's.
const RELIST_CPU_VS_CONTAINERD: f64 = 0.3;

/// One runtime at one pod count.
#[derive(Debug, Clone, Default)]
pub struct Point {
    pub runtime: &'static str,
    pub pods: usize,
    pub containers: usize,
    pub figures: Vec<(&'static str, f64)>,
    pub error: Option<String>,
}

/// The figures, their units, in table order.
const FIGURES: [(&str, &str); 10] = [
    ("start_s", "s"),
    ("teardown_s", "s"),
    ("rss_kib", "KiB"),
    ("shim_pss_kib_total", "KiB"),
    ("list_containers_ms", "ms"),
    ("list_pods_ms", "ms"),
    ("list_stats_ms", "ms"),
    ("relist_ms", "ms"),
    ("relist_cpu_pct", "% of a core"),
    ("relist_churn_pods", "pods"),
];

pub async fn run(rt: &Runtime, image: &str, opts: &Options) -> Vec<Point> {
    let mut points = Vec::new();
    for &pods in &opts.counts {
        eprintln!(
            "kubelet scale: {pods} pods x {} on {}",
            opts.containers,
            rt.name()
        );
        let mut point = Point {
            runtime: rt.name(),
            pods,
            containers: pods * opts.containers,
            ..Default::default()
        };
        if let Err(e) = measure(rt, image, opts, pods, &mut point).await {
            point.error = Some(e);
        }
        rt.cri.remove_everything().await;
        points.push(point);
    }
    points
}

async fn measure(
    rt: &Runtime,
    image: &str,
    opts: &Options,
    pods: usize,
    point: &mut Point,
) -> super::Result<()> {
    let t = Instant::now();
    let started: Vec<super::Result<(String, Duration)>> = futures::stream::iter(0..pods)
        .map(|n| start_pod(rt, image, n, opts.containers))
        .buffer_unordered(opts.concurrency)
        .collect()
        .await;
    let ids = started
        .into_iter()
        .map(|r| r.map(|(id, _)| id))
        .collect::<super::Result<Vec<String>>>()?;
    point.figures.push(("start_s", t.elapsed().as_secs_f64()));
    tokio::time::sleep(SETTLE).await;
    let pid = rt.pid().ok_or("daemon not running")?;
    let rss = procfs::rss_kib(pid).ok_or("no daemon RSS")?;
    point.figures.push(("rss_kib", rss as f64));
    unsafe { libc::sync() };
    let pss: u64 = rt
        .shims()
        .into_iter()
        .filter_map(procfs::smaps_rollup)
        .map(|r| r.pss)
        .sum();
    point.figures.push(("shim_pss_kib_total", pss as f64));
    point.figures.push((
        "list_containers_ms",
        p50(opts.list_calls, || rt.cri.list_containers()).await?,
    ));
    point.figures.push((
        "list_pods_ms",
        p50(opts.list_calls, || rt.cri.list_pods()).await?,
    ));
    point.figures.push((
        "list_stats_ms",
        p50(opts.list_calls.min(STATS_CALLS), || rt.cri.list_stats()).await?,
    ));
    let (relist_ms, cpu, churned) = relist(rt, image, opts, pid).await?;
    point.figures.push(("relist_ms", relist_ms));
    point.figures.push(("relist_cpu_pct", cpu));
    point.figures.push(("relist_churn_pods", churned as f64));
    let t = Instant::now();
    let torn: Vec<super::Result<()>> = futures::stream::iter(&ids)
        .map(|id| rt.cri.tear_down(id))
        .buffer_unordered(opts.concurrency)
        .collect()
        .await;
    torn.into_iter().collect::<super::Result<Vec<()>>>()?;
    point
        .figures
        .push(("teardown_s", t.elapsed().as_secs_f64()));
    Ok(())
}

/// p50 of a List's latency over `calls` calls, after the warm-up.
async fn p50<F, Fut>(calls: usize, call: F) -> super::Result<f64>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = super::Result<usize>>,
{
    let mut times = Vec::with_capacity(calls);
    for n in 0..LIST_WARMUP + calls {
        let t = Instant::now();
        call().await?;
        if n >= LIST_WARMUP {
            times.push(ms(t.elapsed()));
        }
    }
    Ok(Summary::of(&times).map_or(0.0, |s| s.p50))
}

/// The PLEG's relist for `opts.relist`, while a pod is started and torn down
/// beside it every [`CHURN_PERIOD`]; returns the relist's p50, the daemon's CPU
/// over the whole time in percent of one core, and how many pods churned.
async fn relist(
    rt: &Runtime,
    image: &str,
    opts: &Options,
    pid: u32,
) -> super::Result<(f64, f64, usize)> {
    let cpu_before = procfs::cpu_ticks(pid).ok_or("no daemon CPU time")?;
    let t = Instant::now();
    let deadline = t + opts.relist;
    let churn = async {
        let mut n = 0;
        let mut tick = tokio::time::interval(CHURN_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if Instant::now() >= deadline {
                break;
            }
            let (id, _) = start_pod(rt, image, usize::MAX / 2 + n, opts.containers).await?;
            rt.cri.tear_down(&id).await?;
            n += 1;
        }
        Ok::<usize, String>(n)
    };
    let relists = async {
        let mut times = Vec::new();
        let mut tick = tokio::time::interval(RELIST_PERIOD);
        while Instant::now() < deadline {
            tick.tick().await;
            let one = Instant::now();
            rt.cri.list_pods().await?;
            rt.cri.list_containers().await?;
            times.push(ms(one.elapsed()));
        }
        Ok::<Vec<f64>, String>(times)
    };
    let (churned, times) = tokio::join!(churn, relists);
    let churned = churned?;
    let times = times?;
    let elapsed = t.elapsed().as_secs_f64();
    let cpu_after = procfs::cpu_ticks(pid).ok_or("no daemon CPU time")?;
    let cpu_s = (cpu_after - cpu_before) as f64 / procfs::ticks_per_second();
    let p50 = Summary::of(&times).map_or(0.0, |s| s.p50);
    Ok((p50, 100.0 * cpu_s / elapsed, churned))
}

pub fn figure(p: &Point, key: &str) -> Option<f64> {
    p.figures.iter().find(|f| f.0 == key).map(|f| f.1)
}

/// The figures and their units, for the chart.
pub fn figures() -> Vec<(&'static str, &'static str)> {
    FIGURES.to_vec()
}

/// Slope of `key` per pod over the runtime's points (least squares).
fn slope(points: &[&Point], key: &str) -> Option<f64> {
    let xy: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|p| Some((p.pods as f64, figure(p, key)?)))
        .collect();
    fit::line(&xy).map(|(_, m)| m)
}

fn runtimes(points: &[Point]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = points.iter().map(|p| p.runtime).collect();
    names.dedup();
    names
}

/// Per runtime and figure: the value at each count, the slope per pod and per
/// container; then the targets and whether each is met.
pub fn table(points: &[Point], containers_per_pod: usize) -> Vec<Vec<String>> {
    let counts: Vec<usize> = {
        let mut c: Vec<usize> = points.iter().map(|p| p.pods).collect();
        c.sort();
        c.dedup();
        c
    };
    let mut header = vec!["KUBELET SCALE".to_string(), "RUNTIME".into(), "UNIT".into()];
    header.extend(counts.iter().map(|c| format!("{c} pods")));
    header.extend(["/pod".to_string(), "/container".into()]);
    let mut rows = vec![header];
    for name in runtimes(points) {
        let mine: Vec<&Point> = points.iter().filter(|p| p.runtime == name).collect();
        for (key, unit) in FIGURES {
            let mut row = vec![key.to_string(), name.to_string(), unit.to_string()];
            for c in &counts {
                let v = mine
                    .iter()
                    .find(|p| p.pods == *c)
                    .and_then(|p| figure(p, key));
                row.push(v.map_or("-".into(), num));
            }
            let m = slope(&mine, key);
            row.push(m.map_or("-".into(), num));
            row.push(m.map_or("-".into(), |m| num(m / containers_per_pod.max(1) as f64)));
            rows.push(row);
        }
    }
    rows
}

/// The targets of the scenario, each with its value and verdict.
pub fn verdicts(points: &[Point], containers_per_pod: usize) -> Vec<String> {
    let of = |name: &str| -> Vec<&Point> { points.iter().filter(|p| p.runtime == name).collect() };
    let (berth, containerd) = (of("berth"), of("containerd"));
    let mut out = Vec::new();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    match slope(&berth, "rss_kib").map(|m| m / containers_per_pod.max(1) as f64) {
        Some(v) => out.push(format!(
            "berthd RSS per container {} KiB (target <= {RSS_KIB_PER_CONTAINER} KiB): {}",
            num(v),
            verdict(v <= RSS_KIB_PER_CONTAINER)
        )),
        None => out.push("berthd RSS per container: n/a (needs two pod counts)".into()),
    }
    let mean = |ps: &[&Point]| {
        let v: Vec<f64> = ps
            .iter()
            .filter_map(|p| figure(p, "relist_cpu_pct"))
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    match (mean(&berth), mean(&containerd)) {
        (Some(b), Some(c)) if c > 0.0 => out.push(format!(
            "relist CPU berthd/containerd {} (target <= {RELIST_CPU_VS_CONTAINERD}x): {}",
            num(b / c),
            verdict(b / c <= RELIST_CPU_VS_CONTAINERD)
        )),
        _ => out.push("relist CPU vs containerd: n/a".into()),
    }
    for p in points.iter().filter(|p| p.error.is_some()) {
        out.push(format!(
            "{} at {} pods failed: {}",
            p.runtime,
            p.pods,
            p.error.as_deref().unwrap_or("")
        ));
    }
    out
}

pub fn to_json(points: &[Point]) -> Value {
    json!(points
        .iter()
        .map(|p| json!({
            "runtime": p.runtime, "pods": p.pods, "containers": p.containers,
            "figures": p.figures.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "error": p.error,
        }))
        .collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(runtime: &'static str, pods: usize, rss: f64, cpu: f64) -> Point {
        Point {
            runtime,
            pods,
            containers: pods * 4,
            figures: vec![("rss_kib", rss), ("relist_cpu_pct", cpu)],
            error: None,
        }
    }

    #[test]
    fn slopes_per_pod_and_container_and_their_verdicts() {
        // 100 pods more cost 12800 KiB: 128 per pod, 32 per container.
        let points = [
            point("berth", 10, 10_000.0, 1.0),
            point("berth", 110, 22_800.0, 1.0),
            point("containerd", 10, 40_000.0, 5.0),
            point("containerd", 110, 90_000.0, 5.0),
        ];
        let rows = table(&points, 4);
        let rss = rows
            .iter()
            .find(|r| r[0] == "rss_kib" && r[1] == "berth")
            .unwrap();
        assert_eq!(&rss[5..], ["128", "32.0"]);
        let v = verdicts(&points, 4);
        assert!(v[0].contains("32.0 KiB") && v[0].ends_with("met"), "{v:?}");
        assert!(v[1].contains("0.20") && v[1].ends_with("met"), "{v:?}");
        let one = [point("berth", 10, 10_000.0, 1.0)];
        assert!(verdicts(&one, 4)[0].contains("n/a"));
    }
}
