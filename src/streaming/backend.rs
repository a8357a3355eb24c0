//! What the streaming server asks of the node: which containers and pods a
//! session may target, and the sessions' domain work (exec, attach, a connection
//! into a pod), behind a trait so the protocol code runs against fakes in tests.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::net::TcpStream;

use crate::container::{ContainerService, ProcessStreams};
use crate::error::{Error, Result};
use crate::sandbox::SandboxService;

pub trait Backend: Send + Sync + 'static {
    /// The full id of running container `id` (an id or unique prefix).
    fn running_container(&self, id: &str) -> Result<String>;
    /// The full id of ready pod `id`.
    fn ready_sandbox(&self, id: &str) -> Result<String>;
    /// Runs `cmd` in the container; its exit code.
    fn exec(
        &self,
        container_id: String,
        cmd: Vec<String>,
        streams: ProcessStreams,
    ) -> BoxFuture<'static, Result<i32>>;
    fn attach(
        &self,
        container_id: String,
        streams: ProcessStreams,
    ) -> BoxFuture<'static, Result<()>>;
    /// A connection to `port` on the pod's loopback.
    fn connect(&self, sandbox_id: String, port: u16) -> BoxFuture<'static, Result<TcpStream>>;
}

/// The real node: its containers and pods.
pub struct Node {
    pub containers: Arc<ContainerService>,
    pub sandboxes: Arc<SandboxService>,
}

impl Backend for Node {
    fn running_container(&self, id: &str) -> Result<String> {
        let record = self.containers.get(id)?;
        if !record.phase.can_exec() {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {:?}, not running",
                record.id, record.phase
            )));
        }
        Ok(record.id)
    }

    fn ready_sandbox(&self, id: &str) -> Result<String> {
        let pod = self.sandboxes.get(id)?;
        if !pod.record.phase.can_port_forward() {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id()
            )));
        }
        Ok(pod.id().to_string())
    }

    fn exec(
        &self,
        container_id: String,
        cmd: Vec<String>,
        streams: ProcessStreams,
    ) -> BoxFuture<'static, Result<i32>> {
        let containers = self.containers.clone();
        Box::pin(async move { containers.exec(&container_id, &cmd, streams).await })
    }

    fn attach(
        &self,
        container_id: String,
        streams: ProcessStreams,
    ) -> BoxFuture<'static, Result<()>> {
        let containers = self.containers.clone();
        Box::pin(async move { containers.attach(&container_id, streams).await })
    }

    fn connect(&self, sandbox_id: String, port: u16) -> BoxFuture<'static, Result<TcpStream>> {
        let sandboxes = self.sandboxes.clone();
        Box::pin(async move { sandboxes.connect_port(&sandbox_id, port).await })
    }
}
