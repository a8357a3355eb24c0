//! The annotations berth puts on every spec. The names are containerd's, so shims and
//! tools built for containerd read them as they would there; berth's shim groups a
//! pod's containers by `SANDBOX_ID`.

use std::collections::HashMap;

use super::{ContainerSpecInputs, SandboxSpecInputs};

pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const CONTAINER_TYPE_SANDBOX: &str = "sandbox";
pub const CONTAINER_TYPE_CONTAINER: &str = "container";
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
pub const SANDBOX_LOG_DIRECTORY: &str = "io.kubernetes.cri.sandbox-log-directory";
pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
pub const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

pub(super) fn sandbox(inputs: &SandboxSpecInputs) -> HashMap<String, String> {
    let pod = inputs.config;
    [
        (CONTAINER_TYPE, CONTAINER_TYPE_SANDBOX),
        (SANDBOX_ID, inputs.id),
        (SANDBOX_NAME, &pod.name),
        (SANDBOX_NAMESPACE, &pod.namespace),
        (SANDBOX_UID, &pod.uid),
        (SANDBOX_LOG_DIRECTORY, &pod.log_directory),
        (IMAGE_NAME, inputs.image_name),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub(super) fn container(inputs: &ContainerSpecInputs) -> HashMap<String, String> {
    let pod = inputs.sandbox;
    [
        (CONTAINER_TYPE, CONTAINER_TYPE_CONTAINER),
        (SANDBOX_ID, inputs.sandbox_id),
        (CONTAINER_NAME, &inputs.config.name),
        (IMAGE_NAME, inputs.image_name),
        (SANDBOX_NAME, &pod.name),
        (SANDBOX_NAMESPACE, &pod.namespace),
        (SANDBOX_UID, &pod.uid),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}
