//! The floor of the List rows: a server on berthd's gRPC stack (tonic, hyper and
//! h2 with their defaults, on tokio's multi-threaded runtime, over a unix
//! socket) that answers Version, ListContainers and ListPodSandbox with bytes
//! encoded before the first call: berth's own responses, the same size (a
//! List that carries a filter gets the one-item response berth gave the same
//! filter). It
//! runs in a process of its own (this binary, started with
//! `--bare-grpc-server`) and is timed with the same client, warm-up and calls
//! as the daemons. What a List costs there is the round trip, the transfer and
//! the client's decode of the same bytes, with no daemon work at all.

use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};

use super::super::Result;
use super::super::client::Cri;

const VERSION: &str = "/runtime.v1.RuntimeService/Version";
const LIST_CONTAINERS: &str = "/runtime.v1.RuntimeService/ListContainers";
const LIST_POD_SANDBOX: &str = "/runtime.v1.RuntimeService/ListPodSandbox";
/// How long the server may take to listen.
const LISTENING_WITHIN: Duration = Duration::from_secs(10);

/// The bare server, started as a child process, and a client connected to it.
pub struct BareServer {
    pub cri: Cri,
    _process: Process,
}

/// The child: killed, and its files removed, when dropped.
struct Process {
    child: Child,
    socket: PathBuf,
}

impl BareServer {
    /// Starts this binary as a bare server on `socket` answering the List calls
    /// with `lists` (encoded responses), and connects to it.
    pub async fn start(socket: &Path, lists: &Lists) -> Result<BareServer> {
        let _ = std::fs::remove_file(socket);
        for (ext, bytes) in lists.files() {
            std::fs::write(socket.with_extension(ext), bytes).map_err(|e| e.to_string())?;
        }
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let child = Command::new(exe)
            .arg("--bare-grpc-server")
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the bare gRPC server: {e}"))?;
        let process = Process {
            child,
            socket: socket.to_path_buf(),
        };
        let deadline = Instant::now() + LISTENING_WITHIN;
        while !socket.exists() {
            if Instant::now() > deadline {
                return Err("the bare gRPC server did not listen".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(BareServer {
            cri: Cri::connect(socket).await?,
            _process: process,
        })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for ext in LIST_FILES {
            let _ = std::fs::remove_file(self.socket.with_extension(ext));
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The child's body: serves on `socket` until killed.
pub fn serve(socket: &Path) -> Result<()> {
    let read = |ext: &str| {
        std::fs::read(socket.with_extension(ext))
            .map(Bytes::from)
            .map_err(|e| format!("{}: {e}", socket.with_extension(ext).display()))
    };
    let version = k8s_cri::v1::VersionResponse {
        version: "0.1.0".into(),
        runtime_name: "bare".into(),
        runtime_version: "0".into(),
        runtime_api_version: "v1".into(),
    };
    let bare = Bare {
        version: prost::Message::encode_to_vec(&version).into(),
        lists: Arc::new(Lists {
            containers: read(LIST_FILES[0])?,
            pods: read(LIST_FILES[1])?,
            one_container: read(LIST_FILES[2])?,
            one_pod: read(LIST_FILES[3])?,
        }),
    };
    let socket = socket.to_path_buf();
    // Its own multi-threaded runtime, as berthd's (the bench's is single-threaded).
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let listener = tokio::net::UnixListener::bind(&socket).map_err(|e| e.to_string())?;
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            tonic::transport::Server::builder()
                .add_service(bare)
                .serve_with_incoming(incoming)
                .await
                .map_err(|e| e.to_string())
        })
    })
    .join()
    .map_err(|_| "the bare gRPC server panicked".to_string())?
}

/// The encoded List responses the bare server answers with: each List's
/// whole, and the one item a filter narrowed it to.
pub struct Lists {
    pub containers: Bytes,
    pub pods: Bytes,
    pub one_container: Bytes,
    pub one_pod: Bytes,
}

/// The files beside the socket that hand `Lists` to the child, in field order.
const LIST_FILES: [&str; 4] = ["containers", "pods", "one-container", "one-pod"];

impl Lists {
    fn files(&self) -> [(&str, &[u8]); 4] {
        [
            (LIST_FILES[0], &self.containers),
            (LIST_FILES[1], &self.pods),
            (LIST_FILES[2], &self.one_container),
            (LIST_FILES[3], &self.one_pod),
        ]
    }
}

#[derive(Clone)]
struct Bare {
    version: Bytes,
    lists: Arc<Lists>,
}

impl NamedService for Bare {
    const NAME: &'static str = "runtime.v1.RuntimeService";
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = std::result::Result<T, Infallible>> + Send>>;

impl<B> Service<http::Request<B>> for Bare
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let answer = match req.uri().path() {
            VERSION => Answer::Always(self.version.clone()),
            LIST_CONTAINERS => Answer::List(Arc::clone(&self.lists), |l, filtered| {
                if filtered {
                    &l.one_container
                } else {
                    &l.containers
                }
            }),
            LIST_POD_SANDBOX => Answer::List(Arc::clone(&self.lists), |l, filtered| {
                if filtered { &l.one_pod } else { &l.pods }
            }),
            _ => {
                let status = tonic::Status::unimplemented("the bare server answers Lists only");
                return Box::pin(async move { Ok(status.into_http()) });
            }
        };
        Box::pin(async move { Ok(Grpc::new(Raw).unary(answer, req).await) })
    }
}

/// What a call is answered with.
enum Answer {
    /// The same bytes whatever was asked.
    Always(Bytes),
    /// A List's response: the one item when the request carried a filter.
    List(Arc<Lists>, fn(&Lists, bool) -> &Bytes),
}

impl UnaryService<bool> for Answer {
    type Response = Bytes;
    type Future = std::future::Ready<std::result::Result<tonic::Response<Bytes>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<bool>) -> Self::Future {
        let bytes = match self {
            Answer::Always(bytes) => bytes.clone(),
            Answer::List(lists, pick) => pick(lists, *request.get_ref()).clone(),
        };
        std::future::ready(Ok(tonic::Response::new(bytes)))
    }
}

/// A codec that sends its bytes as the message and, of the request, only
/// tells whether it had any: a List request without a filter is empty, and
/// one with any filter, even an empty one, is not (the bench sends either
/// none or an id).
#[derive(Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = bool;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut EncodeBuf<'_>,
    ) -> std::result::Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = bool;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> std::result::Result<Option<bool>, tonic::Status> {
        let filtered = src.remaining() > 0;
        src.advance(src.remaining());
        Ok(Some(filtered))
    }
}
