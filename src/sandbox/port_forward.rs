//! Port forwarding's domain half: a TCP connection to a port on a pod's own
//! loopback, made inside the pod's network namespace (or the host's, for a
//! host-network pod). The streaming server carries the bytes.

use std::time::Duration;

use tokio::net::TcpStream;

use super::SandboxService;
use crate::error::{Error, Result};
use crate::network;

/// Loopback answers at once; this only bounds a namespace that misbehaves.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl SandboxService {
    /// Connects to `port` on the loopback of pod `id`.
    pub async fn connect_port(&self, id: &str, port: u16) -> Result<TcpStream> {
        let pod = self.get(id)?;
        if !pod.is_ready() {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id()
            )));
        }
        let netns = match pod.netns() {
            Some(path) => Some(path.to_path_buf()),
            None if pod.record.config.host_network() => None,
            None => {
                return Err(Error::FailedPrecondition(format!(
                    "pod sandbox {} has no network namespace",
                    pod.id()
                )));
            }
        };
        let stream = tokio::task::spawn_blocking(move || {
            network::netns::connect_loopback(netns.as_deref(), port, CONNECT_TIMEOUT)
        })
        .await?
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .and_then(TcpStream::from_std)
        .map_err(|e| {
            Error::Unavailable(format!(
                "connecting to port {port} in pod sandbox {}: {e}",
                pod.id()
            ))
        })?;
        Ok(stream)
    }
}
