//! UpdateContainerResources: new cgroup limits for a created or running container,
//! applied by its shim (runc update) and recorded, so that ContainerStatus shows
//! them and they survive a restart.

use containerd_shim_protos::protobuf::well_known_types::any::Any;

use super::service::ContainerService;
use crate::domain::config::Resources;
use crate::error::{Error, Result};
use crate::spec;

/// How containerd names an OCI `LinuxResources` carried as JSON in an `Any`.
const RESOURCES_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

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
        if record.phase.has_live_task() {
            let limits = spec::resources_update(&resources)?;
            let value = serde_json::to_vec(&limits)
                .map_err(|e| Error::Internal(format!("encoding resources of {id}: {e}")))?;
            let (_, task) = self.task_of(&record)?;
            task.update(
                &id,
                Any {
                    type_url: RESOURCES_TYPE_URL.to_string(),
                    value,
                    ..Default::default()
                },
            )
            .await?;
        }
        record.config.linux.resources = resources;
        self.save(&record)
    }
}
