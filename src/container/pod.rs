//! StopPodSandbox and RemovePodSandbox as a whole. The pod is held exclusively
//! while its containers are stopped or removed and then the pod itself, and
//! CreateContainer and StartContainer hold it shared: one that raced a stop or a
//! removal either finished first, and its container is stopped or removed with
//! the pod, or waits and is refused because the pod is no longer Ready (or gone).
//! containerd checks readiness without such a hold, and leaks the same race.

use std::time::Duration;

use super::service::ContainerService;
use crate::error::Result;

impl ContainerService {
    /// Stops every container of the pod (at once: no grace, as containerd), then
    /// the pod. An unknown pod is fine.
    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let Some(held) = self.sandboxes.hold(id).await? else {
            return Ok(());
        };
        for container in self.of_sandbox(held.id()) {
            self.stop(&container, Duration::ZERO).await?;
        }
        self.sandboxes.stop_held(&held).await
    }

    /// Removes every container of the pod whatever its state (Creating after a
    /// crash, Created, Running, Exited), then the pod and its shim. An unknown
    /// pod is fine.
    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let Some(held) = self.sandboxes.hold(id).await? else {
            return Ok(());
        };
        for container in self.of_sandbox(held.id()) {
            self.remove(&container).await?;
        }
        self.sandboxes.remove_held(held).await?;
        // What the pod's records, clients and copiers held is free now.
        crate::malloc::trim_soon();
        Ok(())
    }
}
