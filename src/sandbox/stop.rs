//! StopPodSandbox and RemovePodSandbox, both idempotent: an unknown id is fine, and
//! every step tolerates its work being done already, so a retry after a failure
//! (or after a crash) finishes the job.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::{Sandbox, SandboxService, files, infra, names};
use crate::error::{Error, Result};
use crate::shim::{ShimEvent, TaskClient};
use crate::store::{SandboxPhase, SandboxRecord};

impl SandboxService {
    /// Stops the infra container, detaches the network, removes the netns and
    /// unmounts shm; the pod stays, NotReady, until removed.
    pub async fn stop(&self, id: &str) -> Result<()> {
        let Some(pod) = self.locked_get(id).await? else {
            return Ok(());
        };
        let (pod, _guard) = pod;
        let mut record = pod.record.clone();
        self.teardown(&mut record, pod.task.as_ref()).await?;
        record.phase = SandboxPhase::NotReady;
        self.save(record, pod.task.clone())?;
        tracing::info!(pod_id = %id, "pod sandbox stopped");
        Ok(())
    }

    /// Stops the pod if it runs, ends its shim, deletes its files and record, and
    /// frees its name.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let Some((pod, guard)) = self.locked_get(id).await? else {
            return Ok(());
        };
        let mut record = pod.record.clone();
        let id = record.id.clone();
        self.teardown(&mut record, pod.task.as_ref()).await?;
        // The pod's containers are removed by the caller before this point: they
        // live in the same shim, which must have no tasks left to exit.
        self.shutdown_shim(&record, pod.task.as_ref()).await?;
        self.unfollow_shim_log(&id);
        let bundle = record.bundle.clone();
        tokio::task::spawn_blocking(move || files::remove(&bundle)).await??;
        // Whatever the record says: a pod a crash left half-created may hold a
        // `sandbox_image` layer its record does not name yet.
        self.images.release_rootfs(&id).await?;
        self.store.write(|tx| tx.delete::<SandboxRecord>(&id))?;
        self.unindex(&id);
        self.names
            .release(&names::sandbox_name(&record.config), &id);
        drop(guard);
        self.forget_lock(&id);
        tracing::info!(pod_id = %id, "pod sandbox removed");
        Ok(())
    }

    /// The pod (by id or unique prefix) with its lock held, or `None` if there is
    /// no such pod (any more).
    async fn locked_get(
        &self,
        id: &str,
    ) -> Result<Option<(Arc<Sandbox>, tokio::sync::OwnedMutexGuard<()>)>> {
        let id = match self.get(id) {
            Ok(pod) => pod.record.id.clone(),
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let guard = self.lock(&id).await;
        // Another call may have removed it while we waited.
        match self.get(&id) {
            Ok(pod) if pod.id() == id => Ok(Some((pod, guard))),
            _ => Ok(None),
        }
    }

    /// Everything Stop undoes, each step skipped when already done; updates the
    /// record's view (no IPs, no netns, no shm) but does not save it.
    pub(super) async fn teardown(
        &self,
        record: &mut SandboxRecord,
        task: Option<&TaskClient>,
    ) -> Result<()> {
        self.stop_infra(record, task).await?;
        if let Some(netns) = record.netns.clone() {
            self.cni_del(&record.id, &netns, &record.config).await?;
            self.remove_netns(&netns).await?;
            record.netns = None;
            record.ips.clear();
        }
        if record.shm_mounted {
            let bundle = record.bundle.clone();
            tokio::task::spawn_blocking(move || files::unmount_shm(&bundle)).await??;
            record.shm_mounted = false;
        }
        Ok(())
    }

    /// Kills and deletes the infra task. Without a shim to ask, the shim binary's
    /// `delete` cleans up whatever the OCI runtime still holds.
    pub(super) async fn stop_infra(
        &self,
        record: &SandboxRecord,
        task: Option<&TaskClient>,
    ) -> Result<()> {
        // A pod indexed without its shim (recovery could not finish it) may still
        // have one: ask it, so its task table empties and it can exit.
        let reconnected;
        let task = match task {
            Some(t) => Some(t),
            None => {
                reconnected = infra::reconnect(&record.bundle).await.ok();
                reconnected.as_ref()
            }
        };
        if let Some(task) = task {
            match infra::stop(task, &record.id).await {
                Ok(()) => return Ok(()),
                Err(Error::Unavailable(e)) => {
                    tracing::info!(pod_id = %record.id, error = %e, "shim gone; cleaning up without it");
                }
                Err(e) => return Err(e),
            }
        }
        if record.bundle.join("config.json").exists()
            && let Err(e) = self
                .shims
                .delete(&record.shim, &record.id, &record.bundle)
                .await
        {
            tracing::debug!(pod_id = %record.id, error = %e, "shim delete");
        }
        Ok(())
    }

    /// Cleans up task `id` of this pod (one of its containers, with its `bundle`)
    /// when the pod's shim is gone: the shim binary's `delete` force-deletes the
    /// runtime's container, whose processes die with it, and unmounts its rootfs.
    pub async fn delete_task_without_shim(
        &self,
        pod: &Sandbox,
        id: &str,
        bundle: &std::path::Path,
    ) -> Result<()> {
        self.shims.delete(&pod.record.shim, id, bundle).await
    }

    /// Asks the pod's shim to exit; a shim that is gone already is fine.
    pub(super) async fn shutdown_shim(
        &self,
        record: &SandboxRecord,
        task: Option<&TaskClient>,
    ) -> Result<()> {
        let reconnected;
        let task = match task {
            Some(t) => t,
            None => match infra::reconnect(&record.bundle).await {
                Ok(t) => {
                    reconnected = t;
                    &reconnected
                }
                Err(_) => return Ok(()),
            },
        };
        match task.shutdown(&record.id).await {
            Ok(()) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Marks pods NotReady when their infra process exits on its own.
    pub fn watch_exits(self: &Arc<Self>, mut events: broadcast::Receiver<ShimEvent>) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "shim events lagged");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if let ShimEvent::Exit {
                    container_id,
                    process_id,
                    ..
                } = event
                    && container_id == process_id
                {
                    this.infra_exited(&container_id).await;
                }
            }
        });
    }

    async fn infra_exited(&self, id: &str) {
        // Only exact ids: exits of containers and execs are not the pod's.
        let known = self
            .pods
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id);
        if !known {
            return;
        }
        let Ok(Some((pod, _guard))) = self.locked_get(id).await else {
            return;
        };
        if pod.record.phase != SandboxPhase::Ready {
            return;
        }
        let mut record = pod.record.clone();
        record.phase = SandboxPhase::NotReady;
        match self.save(record, pod.task.clone()) {
            Ok(()) => tracing::info!(pod_id = %id, "infra container exited; pod is NotReady"),
            Err(e) => tracing::warn!(pod_id = %id, error = %e, "recording an infra exit"),
        }
    }
}
