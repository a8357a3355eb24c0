//! The metric families and their registry.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::process::ProcessCollector;

/// RPC, CNI and store latencies: 1 ms doubling to ~33 s (16 buckets), the span
/// from a List call served from memory to a slow CNI ADD or container start.
const FAST_BUCKETS: (f64, f64, u16) = (0.001, 2.0, 16);
/// Pulls, unpacks and streaming sessions: 100 ms doubling to ~55 min (16
/// buckets), from a cached layer to a multi-GiB image on a slow link.
const SLOW_BUCKETS: (f64, f64, u16) = (0.1, 2.0, 16);

/// What exists now, asked at each scrape: gauges computed from the services'
/// indexes rather than counters that could drift from them.
pub trait Inventory: Send + Sync {
    /// Pod sandboxes by state ("ready", "notready").
    fn pods_by_state(&self) -> Vec<(&'static str, i64)>;
    /// Containers by state ("created", "running", "exited", "unknown").
    fn containers_by_state(&self) -> Vec<(&'static str, i64)>;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    service: String,
    method: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    service: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindCode {
    kind: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CniLabels {
    plugin: String,
    command: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn fast() -> Histogram {
    let (start, factor, n) = FAST_BUCKETS;
    Histogram::new(exponential_buckets(start, factor, n))
}

fn slow() -> Histogram {
    let (start, factor, n) = SLOW_BUCKETS;
    Histogram::new(exponential_buckets(start, factor, n))
}

fn outcome(ok: bool) -> Outcome {
    Outcome {
        outcome: if ok { "success" } else { "error" },
    }
}

pub(super) struct Families {
    registry: Registry,
    /// Serialises scrapes: each sets the state gauges, then encodes them.
    scrape: Mutex<()>,
    grpc_requests: Family<RpcLabels, Counter>,
    grpc_seconds: Histograms<MethodLabels>,
    streaming_requests: Family<KindCode, Counter>,
    streaming_seconds: Histograms<Kind>,
    pulls: Family<Outcome, Counter>,
    pull_seconds: Histograms<Outcome>,
    pub(super) pull_bytes: Counter,
    pub(super) unpack_seconds: Histogram,
    pods: Family<State, Gauge>,
    containers: Family<State, Gauge>,
    pub(super) container_exits: Counter,
    pub(super) container_ooms: Counter,
    pub(super) shim_starts: Counter,
    shim_reconnects: Family<Outcome, Counter>,
    pub(super) shim_deaths: Counter,
    cni_seconds: Histograms<CniLabels>,
    pub(super) store_tx_seconds: Histogram,
}

impl Families {
    pub(super) fn new() -> Families {
        let mut f = Families {
            registry: Registry::default(),
            scrape: Mutex::new(()),
            grpc_requests: Family::default(),
            grpc_seconds: Family::new_with_constructor(fast),
            streaming_requests: Family::default(),
            streaming_seconds: Family::new_with_constructor(slow),
            pulls: Family::default(),
            pull_seconds: Family::new_with_constructor(slow),
            pull_bytes: Counter::default(),
            unpack_seconds: slow(),
            pods: Family::default(),
            containers: Family::default(),
            container_exits: Counter::default(),
            container_ooms: Counter::default(),
            shim_starts: Counter::default(),
            shim_reconnects: Family::default(),
            shim_deaths: Counter::default(),
            cni_seconds: Family::new_with_constructor(fast),
            store_tx_seconds: fast(),
        };
        f.register();
        f
    }

    /// Counters are registered without `_total`: the encoder appends it.
    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "berth_grpc_requests",
            "CRI and admin RPCs answered, by service, method and gRPC code",
            self.grpc_requests.clone(),
        );
        r.register(
            "berth_grpc_request_duration_seconds",
            "Time to answer a CRI or admin RPC",
            self.grpc_seconds.clone(),
        );
        r.register(
            "berth_streaming_requests",
            "Requests to the exec/attach/port-forward server, by kind and HTTP status",
            self.streaming_requests.clone(),
        );
        r.register(
            "berth_streaming_session_duration_seconds",
            "How long exec, attach and port-forward sessions ran",
            self.streaming_seconds.clone(),
        );
        r.register(
            "berth_image_pulls",
            "Image pulls from registries, by outcome",
            self.pulls.clone(),
        );
        r.register(
            "berth_image_pull_duration_seconds",
            "Time an image pull took, by outcome",
            self.pull_seconds.clone(),
        );
        r.register(
            "berth_image_pull_bytes",
            "Layer bytes received from registries",
            self.pull_bytes.clone(),
        );
        r.register(
            "berth_image_layer_unpack_duration_seconds",
            "Time to unpack one layer into its snapshot",
            self.unpack_seconds.clone(),
        );
        r.register("berth_pods", "Pod sandboxes by state", self.pods.clone());
        r.register(
            "berth_containers",
            "Containers by state",
            self.containers.clone(),
        );
        r.register(
            "berth_container_exits",
            "Container exits recorded",
            self.container_exits.clone(),
        );
        r.register(
            "berth_container_oom_kills",
            "Container exits caused by the kernel's OOM killer",
            self.container_ooms.clone(),
        );
        r.register(
            "berth_shim_starts",
            "Shim processes started",
            self.shim_starts.clone(),
        );
        r.register(
            "berth_shim_reconnects",
            "Reconnections to shims left from before a restart, by outcome",
            self.shim_reconnects.clone(),
        );
        r.register(
            "berth_shim_deaths",
            "Shims found gone while their pod or container was expected to run",
            self.shim_deaths.clone(),
        );
        r.register(
            "berth_cni_plugin_duration_seconds",
            "Time a CNI plugin call took, by plugin type, command and outcome",
            self.cni_seconds.clone(),
        );
        r.register(
            "berth_store_transaction_duration_seconds",
            "Time a metadata store write transaction took, commit included",
            self.store_tx_seconds.clone(),
        );
        r.register_collector(Box::new(ProcessCollector));
    }

    pub(super) fn grpc_request(
        &self,
        service: &str,
        method: &str,
        code: &'static str,
        t: Duration,
    ) {
        let (service, method) = (service.to_string(), method.to_string());
        let labels = MethodLabels { service, method };
        self.grpc_seconds
            .get_or_create(&labels)
            .observe(t.as_secs_f64());
        let MethodLabels { service, method } = labels;
        self.grpc_requests
            .get_or_create(&RpcLabels {
                service,
                method,
                code,
            })
            .inc();
    }

    pub(super) fn streaming_request(&self, kind: &str, status: u16) {
        let labels = KindCode {
            kind: kind.to_string(),
            code: status.to_string(),
        };
        self.streaming_requests.get_or_create(&labels).inc();
    }

    pub(super) fn streaming_session(&self, kind: &'static str, t: Duration) {
        self.streaming_seconds
            .get_or_create(&Kind { kind })
            .observe(t.as_secs_f64());
    }

    pub(super) fn image_pull(&self, ok: bool, t: Duration) {
        self.pulls.get_or_create(&outcome(ok)).inc();
        self.pull_seconds
            .get_or_create(&outcome(ok))
            .observe(t.as_secs_f64());
    }

    pub(super) fn shim_reconnect(&self, ok: bool) {
        self.shim_reconnects.get_or_create(&outcome(ok)).inc();
    }

    pub(super) fn cni_call(&self, plugin: &str, command: &'static str, ok: bool, t: Duration) {
        let labels = CniLabels {
            plugin: plugin.to_string(),
            command,
            outcome: outcome(ok).outcome,
        };
        self.cni_seconds
            .get_or_create(&labels)
            .observe(t.as_secs_f64());
    }

    /// The Prometheus text (format 0.0.4) of every family, state gauges taken now.
    /// Reads /proc: call it off the async executor.
    pub(super) fn scrape(&self, inventory: &dyn Inventory) -> Result<String, std::fmt::Error> {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        set_states(&self.pods, inventory.pods_by_state());
        set_states(&self.containers, inventory.containers_by_state());
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Sets a gauge family's series; the inventory names every state, zero
/// included, so a state nothing is in any more reads 0, not its last count.
fn set_states(family: &Family<State, Gauge>, counts: Vec<(&'static str, i64)>) {
    for (state, n) in counts {
        family.get_or_create(&State { state }).set(n);
    }
}
