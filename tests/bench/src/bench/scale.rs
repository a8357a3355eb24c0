//! Many pods on one runtime: N pods of M containers started K at a time (each pod
//! as the kubelet does it: RunPodSandbox, then its containers created and started
//! one after another), the daemon's and the shims' memory with all of them
//! running, List* latencies over them, then all torn down K at a time and the
//! host checked for leftovers. One runtime at a time, so that neither pays for
//! the other's pods.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::Result;
use super::client::{Cri, container_config, pod_config};
use super::floors::Floor;
use super::floors::grpc::BareServer;
use super::leaks::{self, Footprint};
use super::memory::{self, side};
use super::profile::Profiler;
use super::report::{Report, Side};
use super::runtimes::Runtime;
use super::samples::ms;

pub struct Options {
    pub pods: usize,
    pub containers: usize,
    pub concurrency: usize,
    pub list_calls: usize,
    pub profiler: Profiler,
}

/// Lets the daemons' allocations settle after the burst of starts.
const SETTLE: Duration = Duration::from_secs(3);
/// Untimed calls before a List is timed, so that the client's and the daemon's
/// first allocations for a response this size (buffers, h2 windows, the
/// daemon's kept list items) are not timed: a kubelet relisting every second
/// paid them long ago. With 20, the first timed calls were measured no slower
/// than the later ones; what spread remains is the machine's noise, which 200
/// calls and min/p50/p90 make visible instead of moving the p50.
const LIST_WARMUP: usize = 20;

pub async fn run(rt: &Runtime, image: &str, idle: &Footprint, opts: &Options, report: &mut Report) {
    let side = side(rt.kind);
    eprintln!(
        "scale: {} pods x {} containers on {}",
        opts.pods,
        opts.containers,
        rt.name()
    );
    let recording = opts.profiler.start(rt, "start");
    let t = Instant::now();
    let started: Vec<Result<(String, Duration)>> = futures::stream::iter(0..opts.pods)
        .map(|n| start_pod(rt, image, n, opts.containers))
        .buffer_unordered(opts.concurrency)
        .collect()
        .await;
    let elapsed = t.elapsed();
    if let Some(r) = recording {
        r.stop();
    }
    let mut pods = Vec::new();
    let mut error = None;
    for result in started {
        match result {
            Ok((id, took)) => {
                report.record("pod_start_loaded", side, ms(took));
                pods.push(id);
            }
            Err(e) => error = Some(e),
        }
    }
    match error {
        Some(e) => report.fail("pods_start", side, &e),
        None => {
            report.record("pods_start", side, elapsed.as_secs_f64());
            tokio::time::sleep(SETTLE).await;
            memory::record_daemon(rt, report, "rss_pods");
            let shims = memory::record_shims(rt, report);
            if shims != opts.pods {
                report.note(format!(
                    "{}: {shims} shim processes for {} pods",
                    rt.name(),
                    opts.pods
                ));
            }
            let recording = opts.profiler.start(rt, "lists");
            lists(rt, opts, report).await;
            if let Some(r) = recording {
                r.stop();
            }
        }
    }

    // Whatever started is torn down, also after a failed start.
    let mut all = rt.cri.pods().await.unwrap_or(pods);
    all.sort();
    let recording = opts.profiler.start(rt, "teardown");
    let t = Instant::now();
    let torn: Vec<Result<()>> = futures::stream::iter(&all)
        .map(|id| rt.cri.tear_down(id))
        .buffer_unordered(opts.concurrency)
        .collect()
        .await;
    let elapsed = t.elapsed();
    if let Some(r) = recording {
        r.stop();
    }
    match torn.into_iter().find_map(|r| r.err()) {
        Some(e) => report.fail("pods_teardown", side, &e),
        None if all.len() == opts.pods => {
            report.record("pods_teardown", side, elapsed.as_secs_f64())
        }
        None => {}
    }
    if !rt.cri.pods().await.unwrap_or_default().is_empty() {
        rt.cri.remove_everything().await;
    }
    let check = leaks::check(rt, idle, "scale teardown").await;
    report.leaks.push(check);
}

/// The same pods and containers on the floor, K at a time.
pub async fn run_floor(floor: &Arc<Floor>, opts: &Options, report: &mut Report) {
    eprintln!(
        "scale: {} pods x {} containers on the floor",
        opts.pods, opts.containers
    );
    let floor = Arc::clone(floor);
    let (pods, containers, concurrency) = (opts.pods, opts.containers, opts.concurrency);
    let times = tokio::task::spawn_blocking(move || floor.scale(pods, containers, concurrency))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    match times {
        Ok(t) => {
            report.record("pods_start", Side::Floor, t.start.as_secs_f64());
            report.record("pods_teardown", Side::Floor, t.teardown.as_secs_f64());
            for d in t.per_pod {
                report.record("pod_start_loaded", Side::Floor, ms(d));
            }
        }
        Err(e) => {
            for key in ["pods_start", "pods_teardown", "pod_start_loaded"] {
                report.fail(key, Side::Floor, &e);
            }
        }
    }
}

/// One pod and its containers, one after another; returns its id and how long
/// it took.
pub(super) async fn start_pod(
    rt: &Runtime,
    image: &str,
    n: usize,
    containers: usize,
) -> Result<(String, Duration)> {
    let t = Instant::now();
    let config = pod_config(&format!("scale-{n}"), &rt.logs);
    let pod = rt.cri.run_pod(&config).await?;
    for c in 0..containers {
        let id = rt
            .cri
            .create(
                &pod,
                container_config(&format!("c{c}"), image, None),
                &config,
            )
            .await?;
        rt.cri.start(&id).await?;
    }
    Ok((pod, t.elapsed()))
}

/// ListContainers, ListPodSandbox and ListContainerStats, each called after a
/// few untimed calls, one call at a time, checking the counts; and Version, the
/// round trip of a call that does nothing, under the same load. On berth's
/// side, then the same calls on the bare gRPC server answering berth's bytes
/// (the rows' floor).
async fn lists(rt: &Runtime, opts: &Options, report: &mut Report) {
    let side = side(rt.kind);
    let containers = opts.pods * opts.containers;
    let calls = [
        ("rpc_version", 1),
        ("list_containers", containers),
        ("list_pods", opts.pods),
        ("list_stats", containers),
    ];
    time_calls(&rt.cri, side, &calls, opts, report).await;
    let responses = client_decodes(rt, opts, report).await;
    if let (Side::Berth, Some((containers, pods))) = (side, responses) {
        let socket =
            std::env::temp_dir().join(format!("berth-bench-bare.{}.sock", std::process::id()));
        match BareServer::start(&socket, &containers, &pods).await {
            Ok(bare) => time_calls(&bare.cri, Side::Floor, &calls[..3], opts, report).await,
            Err(e) => {
                for (key, _) in &calls[..3] {
                    report.fail(key, Side::Floor, &e);
                }
            }
        }
    }
}

/// Times each of `calls` (a key and the items it must answer with) on `cri`.
async fn time_calls(
    cri: &Cri,
    side: Side,
    calls: &[(&str, usize)],
    opts: &Options,
    report: &mut Report,
) {
    for &(key, expected) in calls {
        let call = || async {
            match key {
                "rpc_version" => cri.version().await.map(|_| 1),
                "list_containers" => cri.list_containers().await,
                "list_pods" => cri.list_pods().await,
                _ => cri.list_stats().await,
            }
        };
        for n in 0..LIST_WARMUP + opts.list_calls {
            let t = Instant::now();
            match call().await {
                Ok(count) if count != expected => {
                    report.fail(key, side, &format!("{count} items, {expected} expected"));
                    break;
                }
                Ok(_) if n >= LIST_WARMUP => report.record(key, side, ms(t.elapsed())),
                Ok(_) => {}
                Err(e) => {
                    report.fail(key, side, &e);
                    break;
                }
            }
        }
    }
}

/// How long the client alone takes to decode each List's response (the same
/// bytes the daemon sent), timed as often as the calls: the part of a List's
/// latency that no daemon can remove, beside the Version round trip. Returns
/// the two responses.
async fn client_decodes(
    rt: &Runtime,
    opts: &Options,
    report: &mut Report,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let side = side(rt.kind);
    let (containers, pods) = match rt.cri.list_responses().await {
        Ok(bytes) => bytes,
        Err(e) => {
            report.fail("list_containers_decode", side, &e);
            report.fail("list_pods_decode", side, &e);
            return None;
        }
    };
    report.note(format!(
        "{} ListContainers response: {} bytes; ListPodSandbox: {} bytes",
        rt.name(),
        containers.len(),
        pods.len()
    ));
    let decode_containers = || {
        prost::Message::decode(containers.as_slice())
            .map(|r: k8s_cri::v1::ListContainersResponse| r.containers.len())
    };
    let decode_pods = || {
        prost::Message::decode(pods.as_slice())
            .map(|r: k8s_cri::v1::ListPodSandboxResponse| r.items.len())
    };
    for (key, decode) in [
        (
            "list_containers_decode",
            &decode_containers as &dyn Fn() -> std::result::Result<usize, prost::DecodeError>,
        ),
        ("list_pods_decode", &decode_pods),
    ] {
        for n in 0..LIST_WARMUP + opts.list_calls {
            let t = Instant::now();
            let decoded = std::hint::black_box(decode());
            if n >= LIST_WARMUP {
                report.record(key, side, ms(t.elapsed()));
            }
            if let Err(e) = decoded {
                report.fail(key, side, &e.to_string());
                break;
            }
        }
    }
    Some((containers, pods))
}
