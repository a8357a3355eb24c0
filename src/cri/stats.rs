//! Domain stats -> CRI `ContainerStats` and `PodSandboxStats`.

use k8s_cri::v1 as cri;

use super::{container, convert, sandbox};
use crate::container::{ContainerStats, Cpu, Interface, LayerUsage, PodStats};
use berth_cgroup::Memory;

fn value(value: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value })
}

fn cpu(timestamp: i64, c: Cpu) -> cri::CpuUsage {
    cri::CpuUsage {
        timestamp,
        usage_core_nano_seconds: value(c.usage_ns),
        usage_nano_cores: c.nano_cores.and_then(value),
    }
}

fn memory(timestamp: i64, m: Memory) -> cri::MemoryUsage {
    cri::MemoryUsage {
        timestamp,
        working_set_bytes: value(m.working_set),
        available_bytes: m.available().and_then(value),
        usage_bytes: value(m.usage),
        rss_bytes: value(m.rss),
        page_faults: value(m.page_faults),
        major_page_faults: value(m.major_page_faults),
    }
}

fn layer(timestamp: i64, l: &LayerUsage) -> cri::FilesystemUsage {
    cri::FilesystemUsage {
        timestamp,
        fs_id: Some(cri::FilesystemIdentifier {
            mountpoint: l.mountpoint.display().to_string(),
        }),
        used_bytes: value(l.bytes),
        inodes_used: value(l.inodes),
    }
}

pub fn container_stats(s: &ContainerStats) -> cri::ContainerStats {
    let c = &s.container;
    cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: c.id.clone(),
            metadata: Some(container::metadata(c)),
            labels: convert::map(&c.config.labels),
            annotations: convert::map(&c.config.annotations),
        }),
        cpu: s.cpu.map(|c| cpu(s.timestamp, c)),
        memory: s.memory.map(|m| memory(s.timestamp, m)),
        writable_layer: s.writable_layer.as_ref().map(|l| layer(s.timestamp, l)),
        swap: None,
    }
}

fn interface(i: &Interface) -> cri::NetworkInterfaceUsage {
    cri::NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: value(i.rx_bytes),
        rx_errors: value(i.rx_errors),
        tx_bytes: value(i.tx_bytes),
        tx_errors: value(i.tx_errors),
    }
}

pub fn pod_stats(s: &PodStats) -> cri::PodSandboxStats {
    let r = &s.sandbox;
    // The pod's first interface is the one CNI set up (eth0).
    let network = (!s.interfaces.is_empty()).then(|| cri::NetworkUsage {
        timestamp: s.timestamp,
        default_interface: s
            .interfaces
            .iter()
            .find(|i| i.name == "eth0")
            .or(s.interfaces.first())
            .map(interface),
        interfaces: s.interfaces.iter().map(interface).collect(),
    });
    cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: r.id.clone(),
            metadata: Some(sandbox::metadata(r)),
            labels: convert::map(&r.config.labels),
            annotations: convert::map(&r.config.annotations),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: s.cpu.map(|c| cpu(s.timestamp, c)),
            memory: s.memory.map(|m| memory(s.timestamp, m)),
            network,
            process: s.processes.map(|n| cri::ProcessUsage {
                timestamp: s.timestamp,
                process_count: value(n),
            }),
            containers: s.containers.iter().map(container_stats).collect(),
        }),
        windows: None,
    }
}
