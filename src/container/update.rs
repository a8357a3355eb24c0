//! UpdateContainerResources: new cgroup limits for a created or running container,
//! applied by its shim (runc update) and recorded, so that ContainerStatus shows
//! them and they survive a restart; the bundle's spec is updated to match.

use super::bundle_spec;
use super::service::ContainerService;
use crate::domain::config::Resources;
use crate::error::Result;
use crate::spec;

impl ContainerService {
    /// Replaces the container's limits. A container that has exited only has its
    /// record changed, as containerd does; the OOM score cannot change after start.
    pub async fn update_resources(&self, id: &str, resources: Resources) -> Result<()> {
        let id = self.get(id)?.id;
        spec::check_supported(&resources, &self.host)?;
        let _guard = self.lock(&id).await;
        let mut record = self.get(&id)?;
        let resources = Resources {
            oom_score_adj: record.config.linux.resources.oom_score_adj,
            ..resources
        };
        let limits = spec::resources_update(&resources)?;
        if record.phase.has_live_task() {
            let (_, task) = self.task_of(&record)?;
            task.update(&id, &limits).await?;
        }
        // The bundle's spec says what the container runs with (verbose status).
        let bundle = record.bundle.clone();
        tokio::task::spawn_blocking(move || bundle_spec::write_resources(&bundle, &limits))
            .await??;
        record.config.linux.resources = resources;
        self.save(&record)
    }
}
