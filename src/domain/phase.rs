//! Where pods and containers are in their lives, as recorded.

use serde::{Deserialize, Serialize};

/// Where a pod is in its life, as recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxPhase {
    /// RunPodSandbox has begun; a record left in this phase by a crash is undone
    /// at start-up.
    #[default]
    Creating,
    /// The infra container runs and the network is attached.
    Ready,
    /// Stopped, or its infra container or shim is gone.
    NotReady,
}

/// Where a container is in its life, as CRI names the states.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerPhase {
    /// CreateContainer has begun; a record left in this phase by a crash is undone
    /// at start-up.
    #[default]
    Creating,
    Created,
    Running,
    Exited,
    /// Its shim is gone and its fate cannot be known.
    Unknown,
}
