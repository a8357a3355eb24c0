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
    /// Stops every container of the pod (at once and together: no grace, as
    /// containerd), then the pod. An unknown pod is fine.
    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let Some(held) = self.sandboxes.hold(id).await? else {
            return Ok(());
        };
        let containers = self.of_sandbox(held.id());
        all_of(containers.iter().map(|c| self.stop(c, Duration::ZERO))).await?;
        self.sandboxes.stop_held(&held).await
    }

    /// Removes every container of the pod whatever its state (Creating after a
    /// crash, Created, Running, Exited), together, then the pod and its shim. An
    /// unknown pod is fine.
    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let Some(held) = self.sandboxes.hold(id).await? else {
            return Ok(());
        };
        let containers = self.of_sandbox(held.id());
        all_of(containers.iter().map(|c| self.remove(c))).await?;
        self.sandboxes.remove_held(held).await?;
        // What the pod's records, clients and copiers held is free now.
        crate::malloc::trim_soon();
        Ok(())
    }
}

/// Runs `steps` together, each to its end (none is cancelled halfway because
/// another failed), and returns the first error. Each container has its own lock
/// and its own task in the shim, so their stops and removals do not wait on one
/// another, as the floor's do not.
async fn all_of(steps: impl IntoIterator<Item = impl Future<Output = Result<()>>>) -> Result<()> {
    futures::future::join_all(steps)
        .await
        .into_iter()
        .collect::<Result<Vec<()>>>()
        .map(drop)
}
