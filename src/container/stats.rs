//! Container and pod stats: CPU and memory read straight from the cgroups (no
//! shim round trip, so listing 200 containers costs file reads, not RPCs), the
//! size of each writable layer, and a pod's network counters from its namespace.
//! A CPU rate needs two readings, so the last reading of each object is kept.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{ContainerFilter, ContainerService};
use crate::error::Result;
use crate::image::{ImageService, now_nanos};
use crate::sandbox::{Sandbox, SandboxFilter};
use crate::store::{ContainerRecord, SandboxRecord};
use berth_cgroup::{Cgroup, Hierarchies, Memory};

/// Below this interval a new CPU reading would make a noisy rate: the last rate
/// stands instead.
const MIN_RATE_INTERVAL_NS: i64 = 1_000_000_000;
/// How long a writable layer's measured size is reused. Measuring walks the layer;
/// containerd likewise refreshes snapshot usage every 10 s, not per call.
const LAYER_USAGE_TTL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cpu {
    /// Cumulative CPU time, nanoseconds.
    pub usage_ns: u64,
    /// Average use since the previous reading, in billionths of a core; `None` at
    /// the first reading.
    pub nano_cores: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerUsage {
    /// Where the writable layers live.
    pub mountpoint: PathBuf,
    pub bytes: u64,
    pub inodes: u64,
}

#[derive(Debug, Clone)]
pub struct ContainerStats {
    pub container: Arc<ContainerRecord>,
    pub timestamp: i64,
    /// `None` unless the container runs.
    pub cpu: Option<Cpu>,
    pub memory: Option<Memory>,
    pub writable_layer: Option<LayerUsage>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

#[derive(Debug, Clone)]
pub struct PodStats {
    pub sandbox: SandboxRecord,
    pub timestamp: i64,
    pub cpu: Option<Cpu>,
    pub memory: Option<Memory>,
    /// The pod's own interfaces; empty with host network.
    pub interfaces: Vec<Interface>,
    pub processes: Option<u64>,
    pub containers: Vec<ContainerStats>,
}

/// What stats keep between calls: the host's cgroup mounts, each running
/// object's cgroup (found once from its pid) and its last CPU reading.
pub(super) struct Sampler {
    hierarchies: Hierarchies,
    /// Threads a long listing is read on: the host's cores, counted once.
    readers: usize,
    cgroups: Mutex<HashMap<String, (u32, Cgroup)>>,
    cpu: Mutex<HashMap<String, CpuSample>>,
    layers: Mutex<HashMap<String, LayerSample>>,
}

/// When a writable layer was measured, and its bytes and inodes then.
type LayerSample = (Instant, (u64, u64));

/// A CPU reading: when, cumulative nanoseconds, and the rate then computed.
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    at: i64,
    usage_ns: u64,
    nano_cores: Option<u64>,
}

impl Sampler {
    pub(super) fn new() -> Sampler {
        Sampler {
            hierarchies: Hierarchies::of_this_host().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "reading /proc/self/mountinfo: no cgroup stats");
                Hierarchies::default()
            }),
            readers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cgroups: Mutex::new(HashMap::new()),
            cpu: Mutex::new(HashMap::new()),
            layers: Mutex::new(HashMap::new()),
        }
    }

    /// The size of container `id`'s writable layer, measured at most every
    /// `LAYER_USAGE_TTL`.
    fn layer_usage(&self, images: &ImageService, id: &str) -> Option<(u64, u64)> {
        let cached = self
            .layers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied();
        if let Some((at, usage)) = cached
            && at.elapsed() < LAYER_USAGE_TTL
        {
            return Some(usage);
        }
        let usage = images.writable_layer_usage(id)?;
        self.layers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), (Instant::now(), usage));
        Some(usage)
    }

    /// The cgroup of `pid`, object `id`'s main process.
    pub(super) fn cgroup(&self, id: &str, pid: u32) -> Option<Cgroup> {
        let mut cgroups = self.cgroups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, cg)) = cgroups.get(id)
            && *known == pid
        {
            return Some(cg.clone());
        }
        let cg = self.hierarchies.of_process(pid)?;
        cgroups.insert(id.to_string(), (pid, cg.clone()));
        Some(cg)
    }

    fn cpu(&self, id: &str, now: i64, usage_ns: u64) -> Cpu {
        let mut samples = self.cpu.lock().unwrap_or_else(|e| e.into_inner());
        let nano_cores = match samples.get(id).copied() {
            Some(last) if now - last.at < MIN_RATE_INTERVAL_NS => {
                return Cpu {
                    usage_ns,
                    nano_cores: last.nano_cores,
                };
            }
            Some(last) => Some(rate(last.usage_ns, usage_ns, now - last.at)),
            None => None,
        };
        let sample = CpuSample {
            at: now,
            usage_ns,
            nano_cores,
        };
        samples.insert(id.to_string(), sample);
        Cpu {
            usage_ns,
            nano_cores,
        }
    }

    /// Drops what was kept for object `id`, once removed.
    pub(super) fn forget(&self, id: &str) {
        self.cgroups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.cpu
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.layers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Drops what was kept for objects not in `live`.
    fn retain(&self, live: &dyn Fn(&str) -> bool) {
        self.cgroups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| live(id));
        self.cpu
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| live(id));
        self.layers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| live(id));
    }
}

/// CPU nanoseconds used per wall nanosecond, in billionths of a core.
fn rate(before: u64, after: u64, wall_ns: i64) -> u64 {
    let used = u128::from(after.saturating_sub(before));
    let wall = u128::from(wall_ns.max(1) as u64);
    u64::try_from(used * 1_000_000_000 / wall).unwrap_or(u64::MAX)
}

/// Reads one container's stats; blocking (cgroup files, a walk of its layer).
fn read_container(
    sampler: &Sampler,
    images: &ImageService,
    c: Arc<ContainerRecord>,
) -> ContainerStats {
    let timestamp = now_nanos();
    let usage = (c.phase.has_usage() && c.pid > 0)
        .then(|| sampler.cgroup(&c.id, c.pid))
        .flatten()
        .map(|cg| cg.read_cpu_memory());
    let cpu = usage
        .and_then(|u| u.cpu_ns)
        .map(|ns| sampler.cpu(&c.id, timestamp, ns));
    let writable_layer = sampler
        .layer_usage(images, &c.id)
        .map(|(bytes, inodes)| LayerUsage {
            mountpoint: images.snapshot_store().dir().to_path_buf(),
            bytes,
            inodes,
        });
    ContainerStats {
        timestamp,
        cpu,
        memory: usage.and_then(|u| u.memory),
        writable_layer,
        container: c,
    }
}

/// Below this many containers one thread reads them all.
const PARALLEL_READ_MIN: usize = 32;

/// Reads many containers' stats, spread over the host's cores: the time goes to
/// the kernel producing cgroup files, which parallelises.
fn read_containers(
    sampler: &Sampler,
    images: &ImageService,
    containers: Vec<Arc<ContainerRecord>>,
) -> Vec<ContainerStats> {
    let threads = sampler.readers;
    if containers.len() < PARALLEL_READ_MIN || threads < 2 {
        return containers
            .into_iter()
            .map(|c| read_container(sampler, images, c))
            .collect();
    }
    let chunk = containers.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let readers: Vec<_> = containers
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|c| read_container(sampler, images, c.clone()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        readers
            .into_iter()
            .flat_map(|r| {
                r.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

impl ContainerService {
    pub async fn stats(&self, id: &str) -> Result<ContainerStats> {
        let container = self.get_shared(id)?;
        let (sampler, images) = (self.sampler.clone(), self.images.clone());
        Ok(
            tokio::task::spawn_blocking(move || read_container(&sampler, &images, container))
                .await?,
        )
    }

    pub async fn list_stats(&self, filter: &ContainerFilter) -> Result<Vec<ContainerStats>> {
        let containers = self.list(filter);
        let (sampler, images) = (self.sampler.clone(), self.images.clone());
        let all = filter.id.is_empty() && filter.sandbox_id.is_empty() && filter.labels.is_empty();
        let stats =
            tokio::task::spawn_blocking(move || read_containers(&sampler, &images, containers))
                .await?;
        if all {
            // A full listing sees every live container: forget the removed ones.
            let live: std::collections::HashSet<String> = self
                .list(&ContainerFilter::default())
                .into_iter()
                .map(|c| c.id.clone())
                .collect();
            let pods: std::collections::HashSet<String> = self
                .sandboxes
                .list(&SandboxFilter::default())
                .into_iter()
                .map(|p| p.record.id.clone())
                .collect();
            self.sampler
                .retain(&|id| live.contains(id) || pods.contains(id));
        }
        Ok(stats)
    }

    pub async fn pod_stats(&self, id: &str) -> Result<PodStats> {
        let pod = self.sandboxes.get(id)?;
        Ok(self.list_pod_stats(vec![pod]).await?.remove(0))
    }

    /// Stats of each pod in `pods`, with its containers'.
    pub async fn list_pod_stats(&self, pods: Vec<Arc<Sandbox>>) -> Result<Vec<PodStats>> {
        let with_containers: Vec<(SandboxRecord, Vec<Arc<ContainerRecord>>)> = pods
            .into_iter()
            .map(|p| {
                let filter = ContainerFilter {
                    sandbox_id: p.record.id.clone(),
                    ..Default::default()
                };
                let containers = self.list(&filter);
                (p.record.clone(), containers)
            })
            .collect();
        let (sampler, images) = (self.sampler.clone(), self.images.clone());
        Ok(tokio::task::spawn_blocking(move || {
            with_containers
                .into_iter()
                .map(|(pod, containers)| read_pod(&sampler, &images, pod, containers))
                .collect()
        })
        .await?)
    }
}

/// A pod's cgroup is the parent of its infra container's when the kubelet gave a
/// cgroup parent; without one the pod is the sum of its infra and containers.
fn read_pod(
    sampler: &Sampler,
    images: &ImageService,
    sandbox: SandboxRecord,
    containers: Vec<Arc<ContainerRecord>>,
) -> PodStats {
    let timestamp = now_nanos();
    let containers: Vec<ContainerStats> = containers
        .into_iter()
        .map(|c| read_container(sampler, images, c))
        .collect();
    let infra = (sandbox.pid > 0)
        .then(|| sampler.cgroup(&sandbox.id, sandbox.pid))
        .flatten();
    let (cpu_ns, memory, processes) = match infra {
        Some(cg) if !sandbox.config.linux.cgroup_parent.is_empty() => {
            let u = cg.parent().read();
            (u.cpu_ns, u.memory, u.pids)
        }
        Some(cg) => {
            let infra = cg.read();
            let running = containers
                .iter()
                .filter(|c| c.cpu.is_some() || c.memory.is_some());
            let cpu = running
                .clone()
                .filter_map(|c| c.cpu)
                .map(|c| c.usage_ns)
                .sum::<u64>();
            let memory = running
                .clone()
                .filter_map(|c| c.memory)
                .chain(infra.memory)
                .reduce(add_memory);
            (infra.cpu_ns.map(|ns| ns + cpu), memory, infra.pids)
        }
        None => (None, None, None),
    };
    let interfaces = match (&sandbox.netns, sandbox.pid) {
        (Some(_), pid) if pid > 0 => std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
            .map(|text| net_dev(&text))
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    PodStats {
        cpu: cpu_ns.map(|ns| sampler.cpu(&sandbox.id, timestamp, ns)),
        memory,
        interfaces,
        processes,
        containers,
        timestamp,
        sandbox,
    }
}

fn add_memory(a: Memory, b: Memory) -> Memory {
    Memory {
        usage: a.usage + b.usage,
        working_set: a.working_set + b.working_set,
        rss: a.rss + b.rss,
        cache: a.cache + b.cache,
        page_faults: a.page_faults + b.page_faults,
        major_page_faults: a.major_page_faults + b.major_page_faults,
        limit: None,
    }
}

/// `/proc/<pid>/net/dev`: two header lines, then `name: rx_bytes packets errs drop
/// fifo frame compressed multicast tx_bytes packets errs ...`. Loopback is left out.
fn net_dev(text: &str) -> Vec<Interface> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            let n: Vec<u64> = counters
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            (name != "lo" && n.len() >= 12).then(|| Interface {
                name: name.to_string(),
                rx_bytes: n[0],
                rx_packets: n[1],
                rx_errors: n[2],
                rx_dropped: n[3],
                tx_bytes: n[8],
                tx_packets: n[9],
                tx_errors: n[10],
                tx_dropped: n[11],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_rate_in_nano_cores() {
        // Half a second of CPU in one second of wall time is half a core.
        assert_eq!(rate(1_000, 500_001_000, 1_000_000_000), 500_000_000);
        // A counter that went backwards (a new cgroup) is no use, not a panic.
        assert_eq!(rate(10, 5, 1_000_000_000), 0);
    }

    #[test]
    fn first_reading_has_no_rate_and_close_readings_keep_the_last() {
        let s = Sampler {
            hierarchies: Hierarchies::default(),
            readers: 1,
            cgroups: Mutex::new(HashMap::new()),
            cpu: Mutex::new(HashMap::new()),
            layers: Mutex::new(HashMap::new()),
        };
        assert_eq!(s.cpu("c", 0, 100).nano_cores, None);
        let second = s.cpu("c", 2_000_000_000, 1_000_000_100);
        assert_eq!(second.nano_cores, Some(500_000_000));
        let close = s.cpu("c", 2_000_000_500, 1_000_000_200);
        assert_eq!(
            (close.usage_ns, close.nano_cores),
            (1_000_000_200, Some(500_000_000))
        );
        s.retain(&|id| id != "c");
        assert_eq!(s.cpu("c", 3_000_000_000, 5).nano_cores, None);
    }

    #[test]
    fn net_dev_skips_loopback() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     140       2    0    0    0     0          0         0      140       2    0    0    0     0       0          0
  eth0:    1296      16    1    2    0     0          0         0      936      12    3    4    0     0       0          0
";
        assert_eq!(
            net_dev(text),
            vec![Interface {
                name: "eth0".into(),
                rx_bytes: 1296,
                rx_packets: 16,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 936,
                tx_packets: 12,
                tx_errors: 3,
                tx_dropped: 4,
            }]
        );
    }
}
