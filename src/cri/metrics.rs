//! Domain metrics -> CRI `MetricDescriptor` and `PodSandboxMetrics` (KEP-2371).

use k8s_cri::v1 as cri;

use crate::container::metrics::{ContainerMetrics, DESCRIPTORS, Metric, MetricKind, PodMetrics};

pub fn descriptors() -> Vec<cri::MetricDescriptor> {
    DESCRIPTORS
        .iter()
        .map(|d| cri::MetricDescriptor {
            name: d.name.to_string(),
            help: d.help.to_string(),
            label_keys: d.labels.iter().map(|l| l.to_string()).collect(),
        })
        .collect()
}

fn metric(timestamp: i64, m: &Metric) -> cri::Metric {
    let kind = match m.kind {
        MetricKind::Counter => cri::MetricType::Counter,
        MetricKind::Gauge => cri::MetricType::Gauge,
    };
    cri::Metric {
        name: m.name.to_string(),
        timestamp,
        metric_type: kind as i32,
        label_values: m.labels.clone(),
        value: Some(cri::UInt64Value { value: m.value }),
    }
}

fn container(c: &ContainerMetrics) -> cri::ContainerMetrics {
    cri::ContainerMetrics {
        container_id: c.id.clone(),
        metrics: c.metrics.iter().map(|m| metric(c.timestamp, m)).collect(),
    }
}

pub fn pod(p: &PodMetrics) -> cri::PodSandboxMetrics {
    cri::PodSandboxMetrics {
        pod_sandbox_id: p.id.clone(),
        metrics: p.metrics.iter().map(|m| metric(p.timestamp, m)).collect(),
        container_metrics: p.containers.iter().map(container).collect(),
    }
}
