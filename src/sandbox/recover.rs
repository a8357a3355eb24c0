//! Start-up recovery: every recorded pod is reloaded and its shim reconnected
//! through the bundle's `address`. A pod whose shim or infra task is gone is
//! NotReady (Stop and Remove still clean it up); a pod a crash left in Creating is
//! undone. Each pod gets its own time limit, so one stuck shim cannot hold up
//! berthd's start.
//!
//! A half-created pod whose undoing fails stays recorded as Creating, which marks
//! it for teardown: every later start tries again. Meanwhile it is indexed
//! NotReady, so ListPodSandbox shows it and RemovePodSandbox can finish it (as
//! containerd keeps a sandbox it cannot clean up listed, NotReady, for the kubelet).

use std::sync::Arc;
use std::time::Duration;

use super::{SandboxService, files, infra, names};
use crate::domain::SandboxPhase;
use crate::error::{Error, Result};
use crate::store::SandboxRecord;

const RECOVER_TIMEOUT: Duration = Duration::from_secs(10);

impl SandboxService {
    pub(super) async fn recover(&self) -> Result<()> {
        let records: Vec<SandboxRecord> = self.store.all()?;
        for record in records {
            let id = record.id.clone();
            let fallback = record.clone();
            match tokio::time::timeout(RECOVER_TIMEOUT, self.recover_one(record)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(pod_id = %id, error = %e, "pod sandbox not recovered; NotReady");
                    self.index_not_ready(fallback);
                }
                Err(_) => {
                    tracing::warn!(pod_id = %id, "pod sandbox recovery timed out; NotReady");
                    self.index_not_ready(fallback);
                }
            }
        }
        self.sweep_userns().await;
        Ok(())
    }

    async fn recover_one(&self, mut record: SandboxRecord) -> Result<()> {
        if record.phase.is_half_created() {
            return self.undo_half_created(record).await;
        }
        let name = names::sandbox_name(&record.config);
        self.names.reserve(&name, &record.id)?;
        if record.bundle.join("log").exists() {
            self.follow_shim_log(&record.id, &record.bundle);
        }
        let task = infra::reconnect(&*self.connector, &record.bundle)
            .await
            .ok();
        let pid = match &task {
            Some(t) => infra::running_pid(t, &record.id).await,
            None => None,
        };
        if record.phase.expects_infra() && pid.is_none() {
            tracing::info!(pod_id = %record.id, "infra container or shim gone; NotReady");
            record.phase = SandboxPhase::NotReady;
        }
        self.save(record, task)
    }

    fn index_not_ready(&self, record: SandboxRecord) {
        let mut record = if record.phase.is_half_created() {
            self.half_created_view(record)
        } else {
            record
        };
        let _ = self
            .names
            .reserve(&names::sandbox_name(&record.config), &record.id);
        record.phase = SandboxPhase::NotReady;
        let mut pods = self.pods.write();
        pods.insert(
            record.id.clone(),
            Arc::new(super::Sandbox { record, task: None }),
        );
    }

    /// A RunPodSandbox cut short by a crash: whatever of it exists is torn down,
    /// then the record goes.
    async fn undo_half_created(&self, record: SandboxRecord) -> Result<()> {
        tracing::info!(pod_id = %record.id, "undoing a pod sandbox a crash left half-created");
        let mut record = self.half_created_view(record);
        let task = infra::reconnect(&*self.connector, &record.bundle)
            .await
            .ok();
        self.teardown(&mut record, task.as_ref()).await?;
        self.shutdown_shim(&record, task.as_ref()).await?;
        let bundle = record.bundle.clone();
        tokio::task::spawn_blocking(move || files::remove(&bundle))
            .await
            .map_err(Error::from)??;
        self.teardown_userns(&record.id).await?;
        // A `sandbox_image` layer may have been leased before the crash; ending a
        // lease that does not exist is harmless.
        self.images.release_rootfs(&record.id).await?;
        self.store
            .write(|tx| tx.delete::<SandboxRecord>(&record.id))
    }

    /// What a half-created pod may hold, for teardown: the record was written
    /// before the netns and the shm existed, so it names neither.
    fn half_created_view(&self, mut record: SandboxRecord) -> SandboxRecord {
        let netns = self.netns_dir().join(&record.id);
        if netns.exists() {
            record.netns = Some(netns);
        }
        record.shm_mounted = files::wants_shm(&record.config);
        record
    }
}
