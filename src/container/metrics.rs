//! Pod and container metrics in cAdvisor's names and labels, for a kubelet that
//! serves `/metrics/cadvisor` from the runtime (KEP-2371: ListMetricDescriptors,
//! ListPodSandboxMetrics). They come from the readings stats already make (the
//! cgroups, each writable layer, the pod's `/proc/<pid>/net/dev`) plus each
//! running container's process count.
//!
//! Labels are containerd's: `pod`, `namespace`, `container`, `id`, `image`, with
//! `interface` on network series and `device` on filesystem ones. As in cAdvisor,
//! a pod's own series (its cgroup, its network) have an empty `container` and
//! `image` and the pod's id as `id`. Values are whole units (seconds, bytes), as
//! the CRI carries integers.

use std::collections::HashMap;
use std::sync::Arc;

use super::stats::{ContainerStats, Interface, PodStats};
use super::{ContainerFilter, ContainerService};
use crate::domain::{ContainerPhase, SandboxPhase};
use crate::error::Result;
use crate::image::now_nanos;
use crate::sandbox::SandboxFilter;
use crate::store::ContainerRecord;
use berth_cgroup::Memory;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

/// One metric family as ListMetricDescriptors lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDescriptor {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

const BASE: &[&str] = &["pod", "namespace", "container", "id", "image"];
const NETWORK: &[&str] = &["pod", "namespace", "container", "id", "image", "interface"];
const DISK: &[&str] = &["pod", "namespace", "container", "id", "image", "device"];
const FAILURES: &[&str] = &[
    "pod",
    "namespace",
    "container",
    "id",
    "image",
    "failure_type",
    "scope",
];

const fn family(
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
) -> MetricDescriptor {
    MetricDescriptor { name, help, labels }
}

const CPU_USAGE: &str = "container_cpu_usage_seconds_total";
const MEMORY_USAGE: &str = "container_memory_usage_bytes";
const MEMORY_WORKING_SET: &str = "container_memory_working_set_bytes";
const MEMORY_RSS: &str = "container_memory_rss";
const MEMORY_CACHE: &str = "container_memory_cache";
const MEMORY_FAILURES: &str = "container_memory_failures_total";
const MEMORY_LIMIT: &str = "container_spec_memory_limit_bytes";
const RX_BYTES: &str = "container_network_receive_bytes_total";
const RX_PACKETS: &str = "container_network_receive_packets_total";
const RX_DROPPED: &str = "container_network_receive_packets_dropped_total";
const RX_ERRORS: &str = "container_network_receive_errors_total";
const TX_BYTES: &str = "container_network_transmit_bytes_total";
const TX_PACKETS: &str = "container_network_transmit_packets_total";
const TX_DROPPED: &str = "container_network_transmit_packets_dropped_total";
const TX_ERRORS: &str = "container_network_transmit_errors_total";
const FS_USAGE: &str = "container_fs_usage_bytes";
const PROCESSES: &str = "container_processes";
const START_TIME: &str = "container_start_time_seconds";
const LAST_SEEN: &str = "container_last_seen";

/// Every family berth sends, and only those: the kubelet drops a series whose
/// family was not listed.
pub const DESCRIPTORS: &[MetricDescriptor] = &[
    family(CPU_USAGE, "Cumulative CPU time consumed in seconds.", BASE),
    family(
        MEMORY_USAGE,
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        BASE,
    ),
    family(MEMORY_WORKING_SET, "Current working set in bytes.", BASE),
    family(MEMORY_RSS, "Size of RSS in bytes.", BASE),
    family(MEMORY_CACHE, "Number of bytes of page cache memory.", BASE),
    family(
        MEMORY_FAILURES,
        "Cumulative count of memory allocation failures.",
        FAILURES,
    ),
    family(MEMORY_LIMIT, "Memory limit for the container.", BASE),
    family(RX_BYTES, "Cumulative count of bytes received", NETWORK),
    family(RX_PACKETS, "Cumulative count of packets received", NETWORK),
    family(
        RX_DROPPED,
        "Cumulative count of packets dropped while receiving",
        NETWORK,
    ),
    family(
        RX_ERRORS,
        "Cumulative count of errors encountered while receiving",
        NETWORK,
    ),
    family(TX_BYTES, "Cumulative count of bytes transmitted", NETWORK),
    family(
        TX_PACKETS,
        "Cumulative count of packets transmitted",
        NETWORK,
    ),
    family(
        TX_DROPPED,
        "Cumulative count of packets dropped while transmitting",
        NETWORK,
    ),
    family(
        TX_ERRORS,
        "Cumulative count of errors encountered while transmitting",
        NETWORK,
    ),
    family(
        FS_USAGE,
        "Number of bytes that are consumed by the container on this filesystem.",
        DISK,
    ),
    family(
        PROCESSES,
        "Number of processes running inside the container.",
        BASE,
    ),
    family(
        START_TIME,
        "Start time of the container since unix epoch in seconds.",
        BASE,
    ),
    family(
        LAST_SEEN,
        "Last time a container was seen by the exporter",
        BASE,
    ),
];

/// One sample: its family, its label values (in the family's label order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: MetricKind,
    pub labels: Vec<String>,
    pub value: u64,
}

#[derive(Debug, Clone)]
pub struct ContainerMetrics {
    pub id: String,
    pub timestamp: i64,
    pub metrics: Vec<Metric>,
}

#[derive(Debug, Clone)]
pub struct PodMetrics {
    pub id: String,
    pub timestamp: i64,
    pub metrics: Vec<Metric>,
    pub containers: Vec<ContainerMetrics>,
}

/// Collects samples sharing the base label values.
struct Samples {
    base: Vec<String>,
    out: Vec<Metric>,
}

impl Samples {
    fn new(pod: &str, namespace: &str, container: &str, id: &str, image: &str) -> Samples {
        let base = [pod, namespace, container, id, image]
            .map(String::from)
            .to_vec();
        Samples {
            base,
            out: Vec::new(),
        }
    }

    fn push(&mut self, name: &'static str, kind: MetricKind, extra: &[&str], value: u64) {
        let mut labels = self.base.clone();
        labels.extend(extra.iter().map(|s| s.to_string()));
        self.out.push(Metric {
            name,
            kind,
            labels,
            value,
        });
    }

    fn cpu(&mut self, usage_ns: u64) {
        let seconds = usage_ns / NANOS_PER_SECOND;
        self.push(CPU_USAGE, MetricKind::Counter, &[], seconds);
    }

    fn memory(&mut self, m: &Memory) {
        use MetricKind::{Counter, Gauge};
        self.push(MEMORY_USAGE, Gauge, &[], m.usage);
        self.push(MEMORY_WORKING_SET, Gauge, &[], m.working_set);
        self.push(MEMORY_RSS, Gauge, &[], m.rss);
        self.push(MEMORY_CACHE, Gauge, &[], m.cache);
        // berth reads the hierarchical counters (v1 `total_*`, v2 `memory.stat`).
        self.push(
            MEMORY_FAILURES,
            Counter,
            &["pgfault", "hierarchy"],
            m.page_faults,
        );
        self.push(
            MEMORY_FAILURES,
            Counter,
            &["pgmajfault", "hierarchy"],
            m.major_page_faults,
        );
        if let Some(limit) = m.limit {
            self.push(MEMORY_LIMIT, Gauge, &[], limit);
        }
    }

    fn interface(&mut self, i: &Interface) {
        let c = MetricKind::Counter;
        let name = [i.name.as_str()];
        self.push(RX_BYTES, c, &name, i.rx_bytes);
        self.push(RX_PACKETS, c, &name, i.rx_packets);
        self.push(RX_DROPPED, c, &name, i.rx_dropped);
        self.push(RX_ERRORS, c, &name, i.rx_errors);
        self.push(TX_BYTES, c, &name, i.tx_bytes);
        self.push(TX_PACKETS, c, &name, i.tx_packets);
        self.push(TX_DROPPED, c, &name, i.tx_dropped);
        self.push(TX_ERRORS, c, &name, i.tx_errors);
    }
}

/// A running container's samples; `processes` from its pids cgroup.
fn container_metrics(
    pod: &PodStats,
    s: &ContainerStats,
    processes: Option<u64>,
    now: i64,
) -> ContainerMetrics {
    let c = &s.container;
    let p = &pod.sandbox.config;
    let mut out = Samples::new(
        &p.name,
        &p.namespace,
        &c.config.name,
        &c.id,
        &c.config.image,
    );
    out.push(
        START_TIME,
        MetricKind::Gauge,
        &[],
        nanos_to_seconds(c.started_at),
    );
    out.push(LAST_SEEN, MetricKind::Gauge, &[], nanos_to_seconds(now));
    if let Some(cpu) = s.cpu {
        out.cpu(cpu.usage_ns);
    }
    if let Some(m) = &s.memory {
        out.memory(m);
    }
    if let Some(layer) = &s.writable_layer {
        let device = layer.mountpoint.display().to_string();
        out.push(FS_USAGE, MetricKind::Gauge, &[&device], layer.bytes);
    }
    if let Some(n) = processes {
        out.push(PROCESSES, MetricKind::Gauge, &[], n);
    }
    ContainerMetrics {
        id: c.id.clone(),
        timestamp: s.timestamp,
        metrics: out.out,
    }
}

/// A pod's own samples (cgroup, network) and its running containers'.
fn pod_metrics(pod: &PodStats, processes: &HashMap<String, u64>, now: i64) -> PodMetrics {
    let p = &pod.sandbox.config;
    let mut own = Samples::new(&p.name, &p.namespace, "", &pod.sandbox.id, "");
    if let Some(cpu) = pod.cpu {
        own.cpu(cpu.usage_ns);
    }
    if let Some(m) = &pod.memory {
        own.memory(m);
    }
    if let Some(n) = pod.processes {
        own.push(PROCESSES, MetricKind::Gauge, &[], n);
    }
    for i in &pod.interfaces {
        own.interface(i);
    }
    let containers = pod
        .containers
        .iter()
        .filter(|c| c.container.phase == ContainerPhase::Running)
        .map(|c| container_metrics(pod, c, processes.get(&c.container.id).copied(), now))
        .collect();
    PodMetrics {
        id: pod.sandbox.id.clone(),
        timestamp: pod.timestamp,
        metrics: own.out,
        containers,
    }
}

fn nanos_to_seconds(ns: i64) -> u64 {
    u64::try_from(ns).unwrap_or(0) / NANOS_PER_SECOND
}

impl ContainerService {
    /// Metrics of every Ready pod and its running containers (containerd likewise
    /// leaves out pods that are not Ready).
    pub async fn pod_metrics(&self) -> Result<Vec<PodMetrics>> {
        let pods = self.sandboxes.list(&SandboxFilter {
            phase: Some(SandboxPhase::Ready),
            ..Default::default()
        });
        let stats = self.list_pod_stats(pods).await?;
        let running: Vec<Arc<ContainerRecord>> = self.list(&ContainerFilter {
            phase: Some(ContainerPhase::Running),
            ..Default::default()
        });
        let sampler = self.sampler.clone();
        let processes = tokio::task::spawn_blocking(move || {
            running
                .iter()
                .filter_map(|c| {
                    let n = sampler.cgroup(&c.id, c.pid)?.read_pids()?;
                    Some((c.id.clone(), n))
                })
                .collect::<HashMap<_, _>>()
        })
        .await?;
        let now = now_nanos();
        Ok(stats
            .iter()
            .map(|pod| pod_metrics(pod, &processes, now))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{Cpu, LayerUsage};
    use crate::store::SandboxRecord;

    fn pod_stats() -> PodStats {
        let mut sandbox = SandboxRecord {
            id: "p1".into(),
            ..Default::default()
        };
        sandbox.config.name = "web-0".into();
        sandbox.config.namespace = "shop".into();
        let mut record = ContainerRecord {
            id: "c1".into(),
            sandbox_id: "p1".into(),
            phase: ContainerPhase::Running,
            started_at: 1_700_000_000_123_000_000,
            ..Default::default()
        };
        record.config.name = "app".into();
        record.config.image = "registry.example/app:1".into();
        let memory = Memory {
            usage: 5000,
            working_set: 4000,
            rss: 3000,
            cache: 1000,
            page_faults: 7,
            major_page_faults: 1,
            limit: Some(1 << 20),
        };
        let container = ContainerStats {
            container: Arc::new(record.clone()),
            timestamp: 42,
            cpu: Some(Cpu {
                usage_ns: 2_500_000_000,
                nano_cores: None,
            }),
            memory: Some(memory),
            writable_layer: Some(LayerUsage {
                mountpoint: "/var/lib/berth/snapshots".into(),
                bytes: 4096,
                inodes: 3,
            }),
        };
        record.id = "c2".into();
        record.phase = ContainerPhase::Exited;
        let exited = ContainerStats {
            container: Arc::new(record),
            timestamp: 42,
            cpu: None,
            memory: None,
            writable_layer: None,
        };
        PodStats {
            sandbox,
            timestamp: 42,
            cpu: Some(Cpu {
                usage_ns: 3_900_000_000,
                nano_cores: None,
            }),
            memory: Some(memory),
            interfaces: vec![Interface {
                name: "eth0".into(),
                rx_bytes: 100,
                tx_bytes: 200,
                ..Default::default()
            }],
            processes: Some(4),
            containers: vec![container, exited],
        }
    }

    fn find<'a>(metrics: &'a [Metric], name: &str, extra: &[&str]) -> &'a Metric {
        let tail: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        metrics
            .iter()
            .find(|m| m.name == name && m.labels.ends_with(&tail))
            .unwrap_or_else(|| panic!("no {name} {extra:?} in {metrics:?}"))
    }

    #[test]
    fn every_sample_is_of_a_listed_family_with_its_labels() {
        let pod = pod_metrics(&pod_stats(), &HashMap::from([("c1".into(), 2)]), 0);
        let all = pod
            .metrics
            .iter()
            .chain(pod.containers.iter().flat_map(|c| &c.metrics));
        for m in all {
            let family = DESCRIPTORS
                .iter()
                .find(|d| d.name == m.name)
                .unwrap_or_else(|| panic!("{} is not listed", m.name));
            assert_eq!(family.labels.len(), m.labels.len(), "{m:?}");
        }
    }

    #[test]
    fn pod_series_have_no_container_and_the_pod_id() {
        let pod = pod_metrics(&pod_stats(), &HashMap::new(), 0);
        let rx = find(&pod.metrics, RX_BYTES, &["eth0"]);
        assert_eq!(rx.labels, ["web-0", "shop", "", "p1", "", "eth0"]);
        assert_eq!((rx.value, rx.kind), (100, MetricKind::Counter));
        assert_eq!(find(&pod.metrics, TX_BYTES, &["eth0"]).value, 200);
        // Whole seconds, truncated, as containerd sends them.
        assert_eq!(find(&pod.metrics, CPU_USAGE, &[]).value, 3);
        assert_eq!(find(&pod.metrics, PROCESSES, &[]).value, 4);
    }

    #[test]
    fn running_containers_only_with_their_values() {
        let now = 1_700_000_100_000_000_000;
        let pod = pod_metrics(&pod_stats(), &HashMap::from([("c1".into(), 2)]), now);
        assert_eq!(
            pod.containers.len(),
            1,
            "the exited container has no metrics"
        );
        let c = &pod.containers[0];
        assert_eq!(c.id, "c1");
        let cpu = find(&c.metrics, CPU_USAGE, &[]);
        assert_eq!(
            cpu.labels,
            ["web-0", "shop", "app", "c1", "registry.example/app:1"]
        );
        assert_eq!(cpu.value, 2);
        assert_eq!(find(&c.metrics, MEMORY_WORKING_SET, &[]).value, 4000);
        assert_eq!(find(&c.metrics, MEMORY_CACHE, &[]).value, 1000);
        assert_eq!(find(&c.metrics, MEMORY_LIMIT, &[]).value, 1 << 20);
        assert_eq!(
            find(&c.metrics, MEMORY_FAILURES, &["pgmajfault", "hierarchy"]).value,
            1
        );
        let fs = find(&c.metrics, FS_USAGE, &["/var/lib/berth/snapshots"]);
        assert_eq!((fs.value, fs.kind), (4096, MetricKind::Gauge));
        assert_eq!(find(&c.metrics, PROCESSES, &[]).value, 2);
        assert_eq!(find(&c.metrics, START_TIME, &[]).value, 1_700_000_000);
        assert_eq!(find(&c.metrics, LAST_SEEN, &[]).value, 1_700_000_100);
    }

    #[test]
    fn descriptors_are_unique() {
        let mut names: Vec<_> = DESCRIPTORS.iter().map(|d| d.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DESCRIPTORS.len());
    }
}
