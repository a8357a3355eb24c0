//! Port forwarding's domain half: a TCP connection to a port on a pod's own
//! loopback, made inside the pod's network namespace (or the host's, for a
//! host-network pod). The streaming server carries the bytes.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::LazyLock;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

use super::SandboxService;
use crate::error::{Error, Result};
use crate::network;

/// Loopback answers at once; this only bounds a namespace that misbehaves (a
/// listener whose backlog is full leaves a connect waiting).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Dials in flight on the node: each briefly takes a thread to make its
/// sockets in the pod's namespace and a descriptor while it waits; a flood of
/// port-forward streams waits here instead of piling threads up.
const MAX_CONCURRENT_DIALS: usize = 64;

static DIALS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(MAX_CONCURRENT_DIALS));

impl SandboxService {
    /// Connects to `port` on the loopback of pod `id`.
    pub async fn connect_port(&self, id: &str, port: u16) -> Result<TcpStream> {
        let pod = self.get(id)?;
        if !pod.record.phase.can_port_forward() {
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
        let _dial = DIALS
            .acquire()
            .await
            .map_err(|_| Error::Internal("the dial semaphore is closed".into()))?;
        dial_loopback(netns.as_deref(), port).await.map_err(|e| {
            Error::Unavailable(format!(
                "connecting to port {port} in pod sandbox {}: {e}",
                pod.id()
            ))
        })
    }
}

/// Connects to `port` on the loopback of the namespace at `netns` (berthd's own
/// with `None`), over IPv4 and then IPv6, as containerd's port forwarding does.
async fn dial_loopback(netns: Option<&std::path::Path>, port: u16) -> io::Result<TcpStream> {
    let (v4, v6) = network::netns::tcp_sockets_in(netns).await?;
    let v4_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match connect(v4, v4_addr).await {
        Ok(stream) => Ok(stream),
        Err(e4) => {
            let v6_addr = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            let connected = match v6 {
                Ok(v6) => connect(v6, v6_addr).await,
                Err(e) => Err(e),
            };
            connected.map_err(|e6| io::Error::new(e4.kind(), format!("IPv4: {e4}; IPv6: {e6}")))
        }
    }
}

async fn connect(socket: OwnedFd, addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr))
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dial takes nothing from the blocking pool: with its only thread taken,
    /// a connection to a local listener still completes.
    #[test]
    fn dialing_needs_no_blocking_thread() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(1)
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let (release, hold) = std::sync::mpsc::channel::<()>();
            let busy = tokio::task::spawn_blocking(move || hold.recv());
            let dialed = tokio::time::timeout(Duration::from_secs(5), dial_loopback(None, port))
                .await
                .expect("the dial does not wait for a blocking thread");
            dialed.unwrap();
            listener.accept().await.unwrap();
            // Nothing listens on port 1: refused at once, both families tried.
            let refused = dial_loopback(None, 1).await.unwrap_err();
            assert!(refused.to_string().contains("IPv6"), "{refused}");
            release.send(()).unwrap();
            busy.await.unwrap().unwrap();
        });
    }
}
