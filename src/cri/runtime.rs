//! CRI RuntimeService: runtime, pod sandbox, container, streaming, stats, events
//! and pod metrics calls. Each handler translates the request, calls a service
//! and translates the answer (each group of calls in its own module beside this
//! one); errors become gRPC codes through `From<Error> for Status`. Only
//! CheckpointContainer answers Unimplemented.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use tokio::sync::broadcast;
use tonic::{Request, Response, Status};

use super::list_memo::ListMemo;
use super::list_wire::EncodedList;
use super::{container, convert, events, metrics, sandbox, span, stats, streaming};
use crate::config::{CgroupDriver, Config};
use crate::container::{ContainerFilter, ContainerService};
use crate::domain::config::{ContainerConfig, SandboxConfig};
use crate::error::Error;
use crate::sandbox::{Sandbox, SandboxService};
use crate::store::ContainerRecord;
use crate::streaming::Streaming;

/// The CRI API version berth serves.
const CRI_API_VERSION: &str = "v1";
const RUNTIME_NAME: &str = "berth";
/// The kubelet checks this field; it names the CRI API, not berth's own version.
const KUBE_API_VERSION: &str = "0.1.0";

/// What the runtime-level calls need: the config and the services.
pub struct RuntimeInfo {
    pub config: Config,
    pub sandboxes: Arc<SandboxService>,
    pub containers: Arc<ContainerService>,
    /// Issues the URLs of exec, attach and port-forward sessions.
    pub streaming: Arc<Streaming>,
}

pub struct CriRuntimeService {
    info: Arc<RuntimeInfo>,
    /// The list items of pods and containers, kept encoded while their
    /// records last.
    pod_items: ListMemo<Sandbox>,
    container_items: ListMemo<ContainerRecord>,
}

impl CriRuntimeService {
    pub fn new(info: Arc<RuntimeInfo>) -> Self {
        CriRuntimeService {
            info,
            pod_items: ListMemo::default(),
            container_items: ListMemo::default(),
        }
    }

    fn network_condition(&self) -> cri::RuntimeCondition {
        let (ready, reason, message) = match self.info.sandboxes.cni().status() {
            Ok(()) => (true, String::new(), String::new()),
            Err(e) => (false, "NetworkPluginNotReady".to_string(), e.to_string()),
        };
        cri::RuntimeCondition {
            r#type: "NetworkReady".to_string(),
            status: ready,
            reason,
            message,
        }
    }
}

impl CriRuntimeService {
    /// The configured handlers; the one named "" is the default, as the kubelet
    /// reads it. User namespaces need id-mapped mounts, which berthd makes
    /// itself (runc 1.1 cannot): a handler claims them where its runtime joins
    /// user namespaces and the start-up probe id-mapped an overlay layer.
    fn runtime_handlers(&self) -> Vec<cri::RuntimeHandler> {
        std::iter::once(String::new())
            .chain(self.info.config.runtimes.keys().cloned())
            .map(|name| {
                let features = self.info.containers.handler_features(&name);
                cri::RuntimeHandler {
                    name,
                    features: Some(cri::RuntimeHandlerFeatures {
                        recursive_read_only_mounts: features.recursive_read_only_mounts,
                        user_namespaces: features.user_namespaces,
                    }),
                }
            })
            .collect()
    }
}

/// The two Lists the kubelet's PLEG calls every second, answered from kept
/// bytes ([`ListMemo`]): unfiltered, the whole response kept from the last
/// call while nothing changed; filtered, the kept frames of their items. The
/// server routes their paths here ([`super::router`]); the trait's methods
/// decode the same bytes.
impl CriRuntimeService {
    pub(super) fn list_pod_sandbox_encoded(
        &self,
        request: cri::ListPodSandboxRequest,
    ) -> EncodedList {
        let pods = &self.info.sandboxes;
        let filter = sandbox::filter(request.filter);
        let changes = filter.narrows_nothing().then(|| pods.list_changes());
        self.pod_items
            .list(changes, || pods.list(&filter), sandbox::list_item)
    }

    pub(super) fn list_containers_encoded(
        &self,
        request: cri::ListContainersRequest,
    ) -> EncodedList {
        let containers = &self.info.containers;
        let filter = container::filter(request.filter);
        let changes = filter.narrows_nothing().then(|| containers.list_changes());
        self.container_items
            .list(changes, || containers.list(&filter), container::list_item)
    }
}

/// The generated response of kept frames: only the trait's callers (tests,
/// in-process clients) decode; the frames are berthd's own encoding.
fn decoded<M: prost::Message + Default>(list: EncodedList) -> Result<Response<M>, Status> {
    list.to_response()
        .map(Response::new)
        .map_err(|e| Status::internal(format!("decoding a kept List response: {e}")))
}

fn unimplemented(call: &str) -> Status {
    Status::unimplemented(format!("{call} is not implemented by berth yet"))
}

macro_rules! not_yet {
    ($($name:ident($req:ty) -> $resp:ty;)*) => {$(
        // Written out as `async_trait` expands an async fn, because the attribute
        // runs before this macro and cannot see the methods it makes.
        fn $name<'a, 'async_trait>(
            &'a self,
            _request: Request<$req>,
        ) -> Pin<Box<dyn Future<Output = Result<Response<$resp>, Status>> + Send + 'async_trait>>
        where
            'a: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async { Err(unimplemented(stringify!($name))) })
        }
    )*};
}

type EventStream =
    Pin<Box<dyn Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl RuntimeService for CriRuntimeService {
    async fn version(
        &self,
        _request: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        Ok(Response::new(cri::VersionResponse {
            version: KUBE_API_VERSION.to_string(),
            runtime_name: RUNTIME_NAME.to_string(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
            runtime_api_version: CRI_API_VERSION.to_string(),
        }))
    }

    async fn status(
        &self,
        request: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        let runtime = cri::RuntimeCondition {
            r#type: "RuntimeReady".to_string(),
            status: true,
            reason: String::new(),
            message: String::new(),
        };
        let mut info = HashMap::new();
        if request.get_ref().verbose {
            let config = serde_json::to_string(&self.info.config)
                .map_err(|e| Error::Internal(format!("encoding config: {e}")))?;
            info.insert("config".to_string(), config);
            let pod_cidr = self.info.sandboxes.pod_cidrs();
            info.insert(
                "podCIDR".to_string(),
                pod_cidr.map(|c| c.to_string()).unwrap_or_default(),
            );
        }
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![runtime, self.network_condition()],
            }),
            info,
            runtime_handlers: self.runtime_handlers(),
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: true,
            }),
        }))
    }

    async fn runtime_config(
        &self,
        _request: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        let driver = match self.info.config.cgroup_driver {
            CgroupDriver::Systemd => cri::CgroupDriver::Systemd,
            CgroupDriver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
        };
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }))
    }

    async fn update_runtime_config(
        &self,
        request: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        let cidr = request
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        // An empty CIDR changes nothing, as in containerd.
        if !cidr.is_empty() {
            self.info.sandboxes.set_pod_cidrs(&cidr)?;
        }
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        _request: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        let receiver = self.info.containers.subscribe();
        let info = self.info.clone();
        let events = futures::stream::unfold((receiver, info), |(mut receiver, info)| async move {
            loop {
                match receiver.recv().await {
                    Ok(event) => {
                        let response = events::event(&event, |c| info.containers.image_names(c));
                        return Some((Ok(response), (receiver, info)));
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "a container event subscriber fell behind");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        let request = request.into_inner();
        let config = request
            .config
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("config: missing".into()))
            .and_then(SandboxConfig::try_from)?;
        let id = self
            .info
            .sandboxes
            .run(config, &request.runtime_handler)
            .await?;
        span::record_made("pod_id", &id);
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        span::record(&request);
        let id = request.into_inner().pod_sandbox_id;
        self.info.containers.stop_pod_sandbox(&id).await?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        span::record(&request);
        let id = request.into_inner().pod_sandbox_id;
        self.info.containers.remove_pod_sandbox(&id).await?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        span::record(&request);
        let request = request.into_inner();
        let pod = self.info.sandboxes.observe(&request.pod_sandbox_id).await?;
        let info = if request.verbose {
            sandbox::info(&pod)?
        } else {
            HashMap::new()
        };
        // The containers and the time they were read, always: the kubelet's evented
        // PLEG takes them from here instead of listing containers.
        let containers = self.info.containers.list(&ContainerFilter {
            sandbox_id: pod.pod.record.id.clone(),
            ..Default::default()
        });
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(sandbox::status(&pod)),
            info,
            containers_statuses: containers
                .iter()
                .map(|c| container::status(c, &self.info.containers.image_names(c)))
                .collect(),
            timestamp: crate::image::now_nanos(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        decoded(self.list_pod_sandbox_encoded(request.into_inner()))
    }

    async fn create_container(
        &self,
        request: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        span::record(&request);
        let request = request.into_inner();
        let config = request
            .config
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("config: missing".into()))
            .and_then(ContainerConfig::try_from)?;
        let id = self
            .info
            .containers
            .create(&request.pod_sandbox_id, config)
            .await?;
        span::record_made("container_id", &id);
        Ok(Response::new(cri::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        request: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        span::record(&request);
        let id = request.into_inner().container_id;
        self.info.containers.start(&id).await?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        span::record(&request);
        let request = request.into_inner();
        let timeout = Duration::from_secs(request.timeout.max(0) as u64);
        self.info
            .containers
            .stop(&request.container_id, timeout)
            .await?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        span::record(&request);
        let id = request.into_inner().container_id;
        self.info.containers.remove(&id).await?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        decoded(self.list_containers_encoded(request.into_inner()))
    }

    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        span::record(&request);
        let request = request.into_inner();
        let record = self.info.containers.get(&request.container_id)?;
        let info = if request.verbose {
            container::verbose_info(&record, self.info.containers.current_spec(&record).await)
        } else {
            HashMap::new()
        };
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(container::status(
                &record,
                &self.info.containers.image_names(&record),
            )),
            info,
        }))
    }

    async fn reopen_container_log(
        &self,
        request: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        span::record(&request);
        let id = request.into_inner().container_id;
        self.info.containers.reopen_log(&id)?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        request: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        span::record(&request);
        let request = request.into_inner();
        let timeout = Duration::from_secs(request.timeout.max(0) as u64);
        let output = self
            .info
            .containers
            .exec_sync(&request.container_id, &request.cmd, timeout)
            .await?;
        Ok(Response::new(cri::ExecSyncResponse {
            stdout: output.stdout,
            stderr: output.stderr,
            exit_code: output.exit_code,
        }))
    }

    async fn container_stats(
        &self,
        request: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        span::record(&request);
        let id = request.into_inner().container_id;
        let found = self.info.containers.stats(&id).await?;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(stats::container_stats(&found)),
        }))
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        let filter = request.into_inner().filter.map(|f| cri::ContainerFilter {
            id: f.id,
            pod_sandbox_id: f.pod_sandbox_id,
            label_selector: f.label_selector,
            state: None,
        });
        let found = self
            .info
            .containers
            .list_stats(&container::filter(filter))
            .await?;
        Ok(Response::new(cri::ListContainerStatsResponse {
            stats: found.iter().map(stats::container_stats).collect(),
        }))
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        span::record(&request);
        let id = request.into_inner().pod_sandbox_id;
        let found = self.info.containers.pod_stats(&id).await?;
        Ok(Response::new(cri::PodSandboxStatsResponse {
            stats: Some(stats::pod_stats(&found)),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        let filter = request.into_inner().filter.map(|f| cri::PodSandboxFilter {
            id: f.id,
            label_selector: f.label_selector,
            state: None,
        });
        let pods = self.info.sandboxes.list(&sandbox::filter(filter));
        let found = self.info.containers.list_pod_stats(pods).await?;
        Ok(Response::new(cri::ListPodSandboxStatsResponse {
            stats: found.iter().map(stats::pod_stats).collect(),
        }))
    }

    async fn update_container_resources(
        &self,
        request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        span::record(&request);
        let request = request.into_inner();
        let resources = convert::resources(&request.linux.unwrap_or_default())?;
        self.info
            .containers
            .update_resources(&request.container_id, resources)
            .await?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn exec(
        &self,
        request: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        span::record(&request);
        let request = streaming::exec_request(request.into_inner());
        let url = self.info.streaming.exec_url(request)?;
        Ok(Response::new(cri::ExecResponse { url }))
    }

    async fn attach(
        &self,
        request: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        span::record(&request);
        let request = streaming::attach_request(request.into_inner());
        let url = self.info.streaming.attach_url(request)?;
        Ok(Response::new(cri::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        request: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        span::record(&request);
        let request = streaming::port_forward_request(request.into_inner());
        let url = self.info.streaming.port_forward_url(request)?;
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    async fn list_metric_descriptors(
        &self,
        _request: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(cri::ListMetricDescriptorsResponse {
            descriptors: metrics::descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        let found = self.info.containers.pod_metrics().await?;
        Ok(Response::new(cri::ListPodSandboxMetricsResponse {
            pod_metrics: found.iter().map(metrics::pod).collect(),
        }))
    }

    not_yet! {
        checkpoint_container(cri::CheckpointContainerRequest) -> cri::CheckpointContainerResponse;
    }
}
