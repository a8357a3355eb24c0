//! Many pods on one runtime: N pods of M containers started K at a time (each pod
//! as the kubelet does it: RunPodSandbox, then its containers created and started
//! one after another), the daemon's and the shims' memory with all of them
//! running, List* latencies over them, then all torn down K at a time and the
//! host checked for leftovers. One runtime at a time, so that neither pays for
//! the other's pods.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use k8s_cri::v1 as cri;
use prost::Message;

use super::Result;
use super::client::{Cri, container_config, pod_config};
use super::floors::Floor;
use super::floors::grpc::{BareServer, Lists};
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
/// Blocks a List's timed calls are split into, alternating between berth and
/// its floor.
const BLOCKS: usize = 10;
/// Untimed calls at the start of each later block: the server the other block
/// left idle wakes up on them.
const BLOCK_WARMUP: usize = 3;

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
/// few untimed calls, one call at a time, checking the counts; each List also
/// narrowed to one item by id, which its cost per item is measured against;
/// and Version, the round trip of a call that does nothing, under the same
/// load. On berth's side the bare gRPC server answering berth's bytes (the
/// rows' floor) is timed in blocks alternating with berth's: the two series
/// share whatever the machine was doing, where timing the floor after all of
/// berth's calls left it the quieter seconds. The floor idles while berth's
/// blocks run, as berth idles during the floor's.
async fn lists(rt: &Runtime, opts: &Options, report: &mut Report) {
    let side = side(rt.kind);
    let ready = client_decodes(rt, opts, report).await.and_then(|lists| {
        let (container, pod) = (lists.first_container())
            .zip(lists.first_pod())
            .ok_or("an unfiltered List came back empty")?;
        Ok((lists, container, pod))
    });
    let (lists, container, pod) = match ready {
        Ok(ready) => ready,
        Err(e) => {
            // Nothing of the section can be timed: each row says why.
            for key in FLOOR_KEYS.iter().chain(["list_stats"].iter()) {
                report.fail(key, side, &e);
            }
            return;
        }
    };
    let mut bare = None;
    if side == Side::Berth {
        let socket =
            std::env::temp_dir().join(format!("berth-bench-bare.{}.sock", std::process::id()));
        match BareServer::start(&socket, &lists.encoded()).await {
            Ok(server) => bare = Some(server),
            Err(e) => {
                for key in FLOOR_KEYS {
                    report.fail(key, Side::Floor, &e);
                }
            }
        }
    }
    let groups = [
        vec![Call::Version],
        vec![Call::Containers, Call::ContainerById(&container)],
        vec![Call::Pods, Call::PodById(&pod)],
        vec![Call::Stats],
    ];
    let expected = Expected {
        containers: opts.pods * opts.containers,
        pods: opts.pods,
    };
    for group in &groups {
        // The floor answers Version and the Lists; it has no stats.
        let floor = bare
            .as_ref()
            .filter(|_| group.iter().all(|c| FLOOR_KEYS.contains(&c.key())))
            .map(|b| &b.cri);
        time_calls(&rt.cri, side, floor, group, expected, opts, report).await;
    }
}

/// The calls the bare server answers, as metric keys.
const FLOOR_KEYS: [&str; 5] = [
    "rpc_version",
    "list_containers",
    "list_containers_one",
    "list_pods",
    "list_pods_one",
];

/// One timed call of the List section.
#[derive(Debug, Clone, Copy)]
enum Call<'a> {
    Version,
    Containers,
    ContainerById(&'a str),
    Pods,
    PodById(&'a str),
    Stats,
}

/// How many containers and pods the unfiltered Lists must answer with.
#[derive(Clone, Copy)]
struct Expected {
    containers: usize,
    pods: usize,
}

impl Call<'_> {
    fn key(self) -> &'static str {
        match self {
            Call::Version => "rpc_version",
            Call::Containers => "list_containers",
            Call::ContainerById(_) => "list_containers_one",
            Call::Pods => "list_pods",
            Call::PodById(_) => "list_pods_one",
            Call::Stats => "list_stats",
        }
    }

    fn expected(self, e: Expected) -> usize {
        match self {
            Call::Version | Call::ContainerById(_) | Call::PodById(_) => 1,
            Call::Containers | Call::Stats => e.containers,
            Call::Pods => e.pods,
        }
    }

    /// Makes the call on `cri`; the items it answered with.
    async fn on(self, cri: &Cri) -> Result<usize> {
        match self {
            Call::Version => cri.version().await.map(|_| 1),
            Call::Containers => cri.list_containers().await,
            Call::ContainerById(id) => cri.list_containers_by_id(id).await,
            Call::Pods => cri.list_pods().await,
            Call::PodById(id) => cri.list_pods_by_id(id).await,
            Call::Stats => cri.list_stats().await,
        }
    }
}

/// Times each of `group`'s calls on `cri`, and where there is a `floor`, on
/// it as `Side::Floor`: in `BLOCKS` blocks, each side's in turn and each call
/// of the group in turn within them, each after a few untimed calls. Both
/// sides and all the group's calls share the machine's drift, and each call
/// still finds its server as warm as in a run of calls.
async fn time_calls(
    cri: &Cri,
    side: Side,
    floor: Option<&Cri>,
    group: &[Call<'_>],
    expected: Expected,
    opts: &Options,
    report: &mut Report,
) {
    let mut sides: Vec<(&Cri, Side)> = vec![(cri, side)];
    sides.extend(floor.map(|f| (f, Side::Floor)));
    // (side, call) pairs that failed: not called again.
    let mut failed: Vec<(Side, &str)> = Vec::new();
    let blocks = BLOCKS.min(opts.list_calls.max(1));
    for block in 0..blocks {
        let warmup = if block == 0 {
            LIST_WARMUP
        } else {
            BLOCK_WARMUP
        };
        // The calls spread over the blocks, the remainder in the first ones.
        let timed = opts.list_calls / blocks + usize::from(block < opts.list_calls % blocks);
        for &(cri, side) in &sides {
            for &call in group {
                let key = call.key();
                if failed.contains(&(side, key)) {
                    continue;
                }
                for n in 0..warmup + timed {
                    let t = Instant::now();
                    let answered = call.on(cri).await;
                    let error = match answered {
                        Ok(count) if count == call.expected(expected) => None,
                        Ok(count) => Some(format!(
                            "{count} items, {} expected",
                            call.expected(expected)
                        )),
                        Err(e) => Some(e),
                    };
                    match error {
                        None if n >= warmup => report.record(key, side, ms(t.elapsed())),
                        None => {}
                        Some(e) => {
                            report.fail(key, side, &e);
                            failed.push((side, key));
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// How long the client alone takes to decode each List's response (the same
/// bytes the daemon sent), timed as often as the calls: the part of a List's
/// latency that no daemon can remove, beside the Version round trip. Returns
/// the two responses (encoded again here: the same fields and values, so the
/// same size and decode work as the daemon's bytes).
async fn client_decodes(rt: &Runtime, opts: &Options, report: &mut Report) -> Result<Responses> {
    let side = side(rt.kind);
    let (decoded_containers, decoded_pods) = match rt.cri.list_responses().await {
        Ok(responses) => responses,
        Err(e) => {
            report.fail("list_containers_decode", side, &e);
            report.fail("list_pods_decode", side, &e);
            return Err(e);
        }
    };
    let (containers, pods) = (
        decoded_containers.encode_to_vec(),
        decoded_pods.encode_to_vec(),
    );
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
    Ok(Responses {
        containers: decoded_containers,
        pods: decoded_pods,
        wire: (containers.into(), pods.into()),
    })
}

/// Both unfiltered List responses, as a daemon answered them.
struct Responses {
    containers: cri::ListContainersResponse,
    pods: cri::ListPodSandboxResponse,
    /// The two encoded, ListContainers first.
    wire: (Bytes, Bytes),
}

impl Responses {
    /// The id of the oldest container, which the by-id call names.
    fn first_container(&self) -> Option<String> {
        self.containers.containers.first().map(|c| c.id.clone())
    }

    /// The id of the oldest pod, which the by-id call names.
    fn first_pod(&self) -> Option<String> {
        self.pods.items.first().map(|p| p.id.clone())
    }

    /// What the bare server answers with: each List whole, and narrowed to its
    /// first item (the one the by-id calls name).
    fn encoded(&self) -> Lists {
        let one_container = cri::ListContainersResponse {
            containers: self.containers.containers.iter().take(1).cloned().collect(),
        };
        let one_pod = cri::ListPodSandboxResponse {
            items: self.pods.items.iter().take(1).cloned().collect(),
        };
        Lists {
            containers: self.wire.0.clone(),
            pods: self.wire.1.clone(),
            one_container: one_container.encode_to_vec().into(),
            one_pod: one_pod.encode_to_vec().into(),
        }
    }
}
