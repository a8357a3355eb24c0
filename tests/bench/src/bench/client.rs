//! An in-process CRI client over a runtime's unix socket (no process start per
//! call, unlike crictl), the pod and container configs every side gets, and the
//! calls the scenarios time.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use super::Result;

/// Longer than any single call should take, even a 100 MB pull.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// The containers' program: sleeps, and exits at once on SIGTERM (a shell as
/// PID 1 would otherwise ignore it and wait out the stop timeout).
pub const SLEEPER: &str = "trap 'exit 0' TERM; sleep 3600 & wait";

/// How long StopContainer waits before SIGKILL; the sleeper exits long before.
pub const STOP_TIMEOUT: i64 = 10;

#[derive(Clone)]
pub struct Cri {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

fn failed(call: &'static str) -> impl Fn(tonic::Status) -> String {
    move |s| format!("{call}: {:?}: {}", s.code(), s.message())
}

impl Cri {
    pub async fn connect(socket: &Path) -> Result<Cri> {
        let channel = berth_testkit::cri::connect(socket, CALL_TIMEOUT)
            .await
            .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
        Ok(Cri {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    /// `runtime_name runtime_version`
    pub async fn version(&self) -> Result<String> {
        let v = self
            .runtime
            .clone()
            .version(cri::VersionRequest {
                version: "v1".into(),
            })
            .await
            .map_err(failed("Version"))?
            .into_inner();
        Ok(format!("{} {}", v.runtime_name, v.runtime_version))
    }

    /// Whether Status reports both RuntimeReady and NetworkReady.
    pub async fn ready(&self) -> Result<bool> {
        let status = self
            .runtime
            .clone()
            .status(cri::StatusRequest { verbose: false })
            .await
            .map_err(failed("Status"))?
            .into_inner()
            .status
            .unwrap_or_default();
        let up = |kind: &str| {
            status
                .conditions
                .iter()
                .any(|c| c.r#type == kind && c.status)
        };
        Ok(up("RuntimeReady") && up("NetworkReady"))
    }

    pub async fn pull(&self, image: &str) -> Result<String> {
        Ok(self
            .images
            .clone()
            .pull_image(cri::PullImageRequest {
                image: Some(image_spec(image)),
                auth: None,
                sandbox_config: None,
            })
            .await
            .map_err(failed("PullImage"))?
            .into_inner()
            .image_ref)
    }

    pub async fn run_pod(&self, config: &cri::PodSandboxConfig) -> Result<String> {
        Ok(self
            .runtime
            .clone()
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map_err(failed("RunPodSandbox"))?
            .into_inner()
            .pod_sandbox_id)
    }

    pub async fn stop_pod(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
            .map_err(failed("StopPodSandbox"))?;
        Ok(())
    }

    pub async fn remove_pod(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
            .map_err(failed("RemovePodSandbox"))?;
        Ok(())
    }

    pub async fn create(
        &self,
        pod_id: &str,
        config: cri::ContainerConfig,
        sandbox: &cri::PodSandboxConfig,
    ) -> Result<String> {
        Ok(self
            .runtime
            .clone()
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod_id.to_string(),
                config: Some(config),
                sandbox_config: Some(sandbox.clone()),
            })
            .await
            .map_err(failed("CreateContainer"))?
            .into_inner()
            .container_id)
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .start_container(cri::StartContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .map_err(failed("StartContainer"))?;
        Ok(())
    }

    pub async fn stop(&self, id: &str) -> Result<()> {
        self.stop_within(id, STOP_TIMEOUT).await
    }

    /// StopContainer with `timeout` seconds before SIGKILL.
    pub async fn stop_within(&self, id: &str, timeout: i64) -> Result<()> {
        self.runtime
            .clone()
            .stop_container(cri::StopContainerRequest {
                container_id: id.to_string(),
                timeout,
            })
            .await
            .map_err(failed("StopContainer"))?;
        Ok(())
    }

    pub async fn remove(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .map_err(failed("RemoveContainer"))?;
        Ok(())
    }

    /// ExecSync; an exit code other than 0 is an error.
    pub async fn exec(&self, id: &str, cmd: &[&str]) -> Result<()> {
        let response = self
            .runtime
            .clone()
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: 10,
            })
            .await
            .map_err(failed("ExecSync"))?
            .into_inner();
        if response.exit_code != 0 {
            return Err(format!(
                "ExecSync {cmd:?} exited {}: {}",
                response.exit_code,
                String::from_utf8_lossy(&response.stderr)
            ));
        }
        Ok(())
    }

    /// ListContainers, unfiltered; returns how many.
    pub async fn list_containers(&self) -> Result<usize> {
        Ok(self.containers_response().await?.containers.len())
    }

    /// The ListContainers and ListPodSandbox responses, unfiltered.
    pub async fn list_responses(
        &self,
    ) -> Result<(cri::ListContainersResponse, cri::ListPodSandboxResponse)> {
        Ok((
            self.containers_response().await?,
            self.pods_response().await?,
        ))
    }

    /// ListContainers narrowed to the container `id`; returns how many.
    pub async fn list_containers_by_id(&self, id: &str) -> Result<usize> {
        let filter = cri::ContainerFilter {
            id: id.to_string(),
            ..Default::default()
        };
        Ok(self.containers_listed(Some(filter)).await?.containers.len())
    }

    async fn containers_response(&self) -> Result<cri::ListContainersResponse> {
        self.containers_listed(None).await
    }

    async fn containers_listed(
        &self,
        filter: Option<cri::ContainerFilter>,
    ) -> Result<cri::ListContainersResponse> {
        Ok(self
            .runtime
            .clone()
            .list_containers(cri::ListContainersRequest { filter })
            .await
            .map_err(failed("ListContainers"))?
            .into_inner())
    }

    /// ListPodSandbox narrowed to the pod `id`; returns how many.
    pub async fn list_pods_by_id(&self, id: &str) -> Result<usize> {
        let filter = cri::PodSandboxFilter {
            id: id.to_string(),
            ..Default::default()
        };
        Ok(self.pods_listed(Some(filter)).await?.items.len())
    }

    async fn pods_response(&self) -> Result<cri::ListPodSandboxResponse> {
        self.pods_listed(None).await
    }

    async fn pods_listed(
        &self,
        filter: Option<cri::PodSandboxFilter>,
    ) -> Result<cri::ListPodSandboxResponse> {
        Ok(self
            .runtime
            .clone()
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter })
            .await
            .map_err(failed("ListPodSandbox"))?
            .into_inner())
    }

    /// ListPodSandbox, unfiltered; returns how many.
    pub async fn list_pods(&self) -> Result<usize> {
        Ok(self.pods_response().await?.items.len())
    }

    /// ListContainerStats, unfiltered; returns how many.
    pub async fn list_stats(&self) -> Result<usize> {
        Ok(self
            .runtime
            .clone()
            .list_container_stats(cri::ListContainerStatsRequest { filter: None })
            .await
            .map_err(failed("ListContainerStats"))?
            .into_inner()
            .stats
            .len())
    }

    /// ContainerStatus (verbose, as the kubelet asks after a restart).
    pub async fn container_status(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: true,
            })
            .await
            .map_err(failed("ContainerStatus"))?;
        Ok(())
    }

    /// PodSandboxStatus (verbose).
    pub async fn pod_status(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: true,
            })
            .await
            .map_err(failed("PodSandboxStatus"))?;
        Ok(())
    }

    pub async fn remove_image(&self, image: &str) -> Result<()> {
        self.images
            .clone()
            .remove_image(cri::RemoveImageRequest {
                image: Some(image_spec(image)),
            })
            .await
            .map_err(failed("RemoveImage"))?;
        Ok(())
    }

    /// Ids of every container.
    pub async fn containers(&self) -> Result<Vec<String>> {
        Ok(self
            .runtime
            .clone()
            .list_containers(cri::ListContainersRequest { filter: None })
            .await
            .map_err(failed("ListContainers"))?
            .into_inner()
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect())
    }

    /// Ids of every pod.
    pub async fn pods(&self) -> Result<Vec<String>> {
        Ok(self
            .pods_response()
            .await?
            .items
            .into_iter()
            .map(|p| p.id)
            .collect())
    }

    /// Ids of the containers of pod `pod_id`.
    pub async fn containers_of(&self, pod_id: &str) -> Result<Vec<String>> {
        let filter = cri::ContainerFilter {
            pod_sandbox_id: pod_id.to_string(),
            ..Default::default()
        };
        Ok(self
            .runtime
            .clone()
            .list_containers(cri::ListContainersRequest {
                filter: Some(filter),
            })
            .await
            .map_err(failed("ListContainers"))?
            .into_inner()
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect())
    }

    /// Tears a pod down the way the kubelet does: its containers stopped
    /// together, removed, then the pod stopped and removed.
    pub async fn tear_down(&self, pod_id: &str) -> Result<()> {
        let containers = self.containers_of(pod_id).await?;
        let stops = containers.iter().map(|c| self.stop(c));
        futures::future::try_join_all(stops).await?;
        for c in &containers {
            self.remove(c).await?;
        }
        self.stop_pod(pod_id).await?;
        self.remove_pod(pod_id).await
    }

    /// Every pod torn down, failures ignored: the cleanup after an error.
    pub async fn remove_everything(&self) {
        for pod in self.pods().await.unwrap_or_default() {
            if self.tear_down(&pod).await.is_err() {
                let _ = self.stop_pod(&pod).await;
                let _ = self.remove_pod(&pod).await;
            }
        }
    }
}

fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

/// A pod as the kubelet would ask for it, minus what neither runtime reads here:
/// its own log directory, the kubelet's labels, no host namespaces.
pub fn pod_config(name: &str, logs: &Path) -> cri::PodSandboxConfig {
    let uid = format!("uid-{name}");
    let labels = HashMap::from([
        ("io.kubernetes.pod.name".to_string(), name.to_string()),
        (
            "io.kubernetes.pod.namespace".to_string(),
            "bench".to_string(),
        ),
        ("io.kubernetes.pod.uid".to_string(), uid.clone()),
    ]);
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            uid,
            namespace: "bench".to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: logs.join(name).display().to_string(),
        labels,
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

/// A container running `command` (the [`SLEEPER`] unless given) from `image`.
pub fn container_config(name: &str, image: &str, command: Option<&[&str]>) -> cri::ContainerConfig {
    let command = command
        .map(|c| c.iter().map(|s| s.to_string()).collect())
        .unwrap_or_else(|| vec!["sh".into(), "-c".into(), SLEEPER.into()]);
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(image_spec(image)),
        command,
        log_path: format!("{name}.log"),
        labels: HashMap::from([("io.kubernetes.container.name".to_string(), name.to_string())]),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}
