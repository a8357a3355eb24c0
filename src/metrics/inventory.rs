//! Pods and containers by state, counted from the services' in-memory indexes
//! at each scrape (the same indexes ListPodSandbox and ListContainers answer from).

use std::sync::Arc;

use super::families::Inventory;
use crate::container::{ContainerFilter, ContainerService};
use crate::domain::{ContainerPhase, SandboxPhase};
use crate::sandbox::{SandboxFilter, SandboxService};

pub struct NodeInventory {
    pub sandboxes: Arc<SandboxService>,
    pub containers: Arc<ContainerService>,
}

impl Inventory for NodeInventory {
    fn pods_by_state(&self) -> Vec<(&'static str, i64)> {
        let pods = self.sandboxes.list(&SandboxFilter::default());
        let ready = pods
            .iter()
            .filter(|p| p.record.phase == SandboxPhase::Ready)
            .count() as i64;
        vec![("ready", ready), ("notready", pods.len() as i64 - ready)]
    }

    fn containers_by_state(&self) -> Vec<(&'static str, i64)> {
        let mut counts = [
            ("created", 0),
            ("running", 0),
            ("exited", 0),
            ("unknown", 0),
        ];
        for c in self.containers.list(&ContainerFilter::default()) {
            let slot = match c.phase {
                ContainerPhase::Created => 0,
                ContainerPhase::Running => 1,
                ContainerPhase::Exited => 2,
                // Creating ones are not listed.
                ContainerPhase::Unknown | ContainerPhase::Creating => 3,
            };
            counts[slot].1 += 1;
        }
        counts.to_vec()
    }
}
