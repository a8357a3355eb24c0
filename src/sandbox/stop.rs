//! The pod halves of StopPodSandbox and RemovePodSandbox (their container halves
//! are in `container/pod.rs`, under the same hold), both idempotent: an unknown id
//! is fine, and every step tolerates its work being done already, so a retry
//! after a failure (or after a crash) finishes the job.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::{Sandbox, SandboxService, files, infra, names};
use crate::domain::SandboxPhase;
use crate::error::{Error, Result};
use crate::id_locks::IdGuard;
use crate::shim::{ShimEvent, TaskClient};
use crate::store::SandboxRecord;

/// A pod held exclusively: no container is created or started in it until this
/// is dropped, so a caller sees every container the pod will have.
pub struct ExclusivePod {
    id: String,
    _guard: IdGuard,
}

impl ExclusivePod {
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A Ready pod held shared with other creates and starts: it cannot stop or be
/// removed until this is dropped.
pub struct ReadyPod {
    pub pod: Arc<Sandbox>,
    pub task: TaskClient,
    _guard: IdGuard,
}

impl SandboxService {
    /// Stops the infra container, detaches the network, removes the netns and
    /// unmounts shm; the pod stays, NotReady, until removed. The caller holds the
    /// pod and stopped its containers.
    pub async fn stop_held(&self, held: &ExclusivePod) -> Result<()> {
        let Ok(pod) = self.get(held.id()) else {
            return Ok(());
        };
        let mut record = pod.record.clone();
        self.teardown(&mut record, pod.task.as_ref()).await?;
        record.phase = SandboxPhase::NotReady;
        self.save(record, pod.task.clone())?;
        tracing::info!(pod_id = %held.id(), "pod sandbox stopped");
        Ok(())
    }

    /// Stops the pod if it runs, ends its shim, deletes its files and record, and
    /// frees its name. The caller holds the pod and removed its containers: they
    /// live in the same shim, which must have no tasks left to exit.
    pub async fn remove_held(&self, held: ExclusivePod) -> Result<()> {
        let Ok(pod) = self.get(held.id()) else {
            return Ok(());
        };
        let mut record = pod.record.clone();
        let id = record.id.clone();
        self.teardown(&mut record, pod.task.as_ref()).await?;
        self.shutdown_shim(&record, pod.task.as_ref()).await?;
        self.unfollow_shim_log(&id);
        let bundle = record.bundle.clone();
        tokio::task::spawn_blocking(move || files::remove(&bundle)).await??;
        self.teardown_userns(&id).await?;
        // Whatever the record says: a pod a crash left half-created may hold a
        // `sandbox_image` layer its record does not name yet.
        self.images.release_rootfs(&id).await?;
        self.store.write(|tx| tx.delete::<SandboxRecord>(&id))?;
        self.publish_removal(&pod);
        self.unindex(&id);
        self.names
            .release(&names::sandbox_name(&record.config), &id);
        tracing::info!(pod_id = %id, "pod sandbox removed");
        Ok(())
    }

    /// The pod (by id or unique prefix) held exclusively, or `None` if there is no
    /// such pod (any more).
    pub async fn hold(&self, id: &str) -> Result<Option<ExclusivePod>> {
        let id = match self.get(id) {
            Ok(pod) => pod.record.id.clone(),
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let guard = self.lock(&id).await;
        // Another call may have removed it while we waited.
        match self.get(&id) {
            Ok(pod) if pod.id() == id => Ok(Some(ExclusivePod { id, _guard: guard })),
            _ => Ok(None),
        }
    }

    /// The pod (by id or unique prefix), held shared, if it is Ready and its shim
    /// connected: what creating or starting a container in it needs. Checked under
    /// the hold, so a pod that a stop or removal got first is refused.
    pub async fn hold_ready(&self, id: &str) -> Result<ReadyPod> {
        let id = self.get(id)?.record.id.clone();
        let guard = self.locks.read(&id).await;
        let pod = self.get(&id)?;
        if !pod.record.phase.can_hold_containers() {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {id} is not ready"
            )));
        }
        let task = pod.task.clone().ok_or_else(|| {
            Error::FailedPrecondition(format!("the shim of pod sandbox {id} is not connected"))
        })?;
        Ok(ReadyPod {
            pod,
            task,
            _guard: guard,
        })
    }

    /// Everything Stop undoes, each step skipped when already done; updates the
    /// record's view (no IPs, no netns, no shm) but does not save it.
    pub(super) async fn teardown(
        &self,
        record: &mut SandboxRecord,
        task: Option<&TaskClient>,
    ) -> Result<()> {
        // The pause is killed beside CNI DEL, as the floor does it: neither step
        // needs the other (the namespace stays pinned until both are done), and
        // each is idempotent, so a retry after a failure of either redoes both.
        let netns = record.netns.clone();
        let detach = async {
            match &netns {
                Some(netns) => self.cni_del(&record.id, netns, &record.config).await,
                None => Ok(()),
            }
        };
        let (stopped, detached) = tokio::join!(self.stop_infra(record, task), detach);
        stopped?;
        detached?;
        if let Some(netns) = netns {
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
                reconnected = infra::reconnect(&*self.connector, &record.bundle)
                    .await
                    .ok();
                reconnected.as_ref()
            }
        };
        if let Some(task) = task {
            match infra::stop(task, &record.id).await {
                Ok(()) => return Ok(()),
                Err(Error::Unavailable(e)) => {
                    tracing::info!(pod_id = %record.id, error = %e, "shim gone; cleaning up without it");
                    crate::metrics::shim_death();
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
            None => match infra::reconnect(&*self.connector, &record.bundle).await {
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
        let known = self.pods.read().contains_key(id);
        if !known {
            return;
        }
        let Ok(Some(_held)) = self.hold(id).await else {
            return;
        };
        let Ok(pod) = self.get(id) else { return };
        if !pod.record.phase.expects_infra() {
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
