//! A gRPC channel to a CRI endpoint on a unix socket: berthd's, or in the
//! benchmark containerd's too.

use std::path::Path;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Connects to `socket`; every call on the channel fails after `call_timeout`.
pub async fn connect(
    socket: &Path,
    call_timeout: Duration,
) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    // The URI is ignored: every connection goes to the socket.
    Endpoint::try_from("http://[::]:50051")?
        .timeout(call_timeout)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
}
