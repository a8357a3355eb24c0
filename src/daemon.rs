//! berthd's life: take the root, open the stores, repair what a crash left, serve
//! CRI and the admin API on the socket until SIGTERM or SIGINT.

use std::fs::{self, File};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1::image_service_server::ImageServiceServer;
use nix::fcntl::{Flock, FlockArg};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::admin::AdminService;
use crate::admin::proto::admin_server::AdminServer;
use crate::authority::AnyAuthority;
use crate::config::Config;
use crate::container::ContainerService;
use crate::cri::{CriImageService, CriRuntimeService, RuntimeInfo, RuntimeServer};
use crate::error::{Error, IoContext, Result};
use crate::image::ImageService;
use crate::sandbox::{NameIndex, SandboxService};
use crate::shim::{EventServer, ShimEnv};
use crate::store::Store;
use crate::streaming;

/// How long in-flight calls get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Shim events buffered for slow receivers.
const EVENT_BUFFER: usize = 1024;
/// The CRI socket: root and the socket's group (as containerd's `grpc.gid`).
const SOCKET_MODE: u32 = 0o660;
/// CRI messages can be large (ListContainers on a busy node, image configs).
const MAX_MESSAGE_BYTES: usize = 32 << 20;

pub async fn run(config: Config) -> Result<()> {
    crate::layout::set_daemon_umask();
    raise_open_files_limit();
    crate::layout::prepare(&config)?;
    let _lock = lock_root(&config.root)?;
    let metrics_address = config
        .metrics
        .socket_address()
        .map_err(Error::InvalidArgument)?;
    if metrics_address.is_some() {
        crate::metrics::enable();
    }

    let store = Arc::new(Store::open(&config.root.join("meta.redb"))?);
    let images = Arc::new(
        ImageService::open(&config.root, config.registry.clone(), store.clone())?
            .with_pinned(&[config.sandbox_image.as_str()]),
    );
    if let Err(e) = images.collect_garbage().await {
        tracing::warn!(error = %e, "garbage collection at start-up failed");
    }

    let (events_tx, _) = tokio::sync::broadcast::channel(EVENT_BUFFER);
    let events = EventServer::start(&config.state.join("events.sock"), events_tx.clone()).await?;
    let shims = ShimEnv {
        events_address: events.address().to_string(),
        publish_binary: std::env::current_exe()
            .context(|| "finding berthd's own executable".into())?,
        socket_dir: config.state.join("s"),
    };
    let host = crate::spec::HostFacts::of_this_host();
    if host.min_oom_score_adj > -1000 {
        tracing::info!(
            floor = host.min_oom_score_adj,
            "no CAP_SYS_RESOURCE: oom_score_adj values below berthd's own are raised to it \
             (containerd's restrict_oom_score_adj)"
        );
    }
    let names = Arc::new(NameIndex::default());
    let sandboxes = SandboxService::open(
        config.clone(),
        store.clone(),
        shims,
        names.clone(),
        images.clone(),
        host,
    )
    .await?;
    sandboxes.watch_exits(events_tx.subscribe());
    let containers = ContainerService::open(
        config.clone(),
        store.clone(),
        images.clone(),
        sandboxes.clone(),
        names,
        host,
        &events_tx,
    )
    .await?;

    let backend = Arc::new(streaming::Node {
        containers: containers.clone(),
        sandboxes: sandboxes.clone(),
    });
    let (streaming, streaming_server) = streaming::bind(&config.streaming, backend).await?;

    let inventory = Arc::new(crate::metrics::NodeInventory {
        sandboxes: sandboxes.clone(),
        containers: containers.clone(),
    });
    let shutdown = shutdown_signal();
    let listener = bind_socket(&config.socket)?;
    let socket = config.socket.clone();
    let info = Arc::new(RuntimeInfo {
        config: config.clone(),
        sandboxes,
        containers,
        streaming,
    });
    tracing::info!(socket = %socket.display(), root = %config.root.display(), version = env!("CARGO_PKG_VERSION"), "berthd serving");

    let server = tonic::transport::Server::builder()
        .trace_fn(|req| crate::cri::rpc_span(req.uri().path()))
        .layer(crate::metrics::GrpcMetricsLayer)
        .layer(crate::cri::DeadlineLayer)
        .add_service(RuntimeServer::new(
            CriRuntimeService::new(info),
            MAX_MESSAGE_BYTES,
        ))
        .add_service(
            ImageServiceServer::new(CriImageService::new(images.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(AdminServer::new(AdminService::new(images)));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(address) = metrics_address {
        let bound = crate::metrics::serve(address, inventory, stop_rx.clone()).await?;
        tracing::info!(address = %bound, "serving metrics at /metrics");
    }
    tokio::spawn(streaming_server.serve(stop_rx.clone()));
    let serve = server.serve_with_incoming_shutdown(accept_any_authority(listener), async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|stop| *stop).await;
    });
    tokio::pin!(serve);
    // The socket is bound and listening: a client connecting now is served as
    // soon as `serve` is first polled, just below.
    crate::notify::ready();
    let result = tokio::select! {
        r = &mut serve => r,
        signal = shutdown => {
            tracing::info!(%signal, "shutting down");
            crate::notify::stopping();
            let _ = stop_tx.send(true);
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut serve).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("calls still running after {SHUTDOWN_GRACE:?}; stopping anyway");
                    Ok(())
                }
            }
        }
    };
    let _ = fs::remove_file(&socket);
    events.stop().await;
    result.map_err(|e| Error::Unavailable(format!("serving {}: {e}", socket.display())))
}

/// Accepted connections, each taking any `:authority` (see `crate::authority`).
fn accept_any_authority(
    listener: UnixListener,
) -> impl futures::Stream<Item = std::io::Result<AnyAuthority<tokio::net::UnixStream>>> {
    use futures::StreamExt;
    UnixListenerStream::new(listener).map(|conn| conn.map(AnyAuthority::new))
}

/// Installs the SIGTERM and SIGINT handlers now, before READY=1 tells systemd
/// (or anyone) berthd is up, so a stop request from then on is never fatal, and
/// returns the wait for either.
fn shutdown_signal() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; berthd stops only when killed");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
}

/// One berthd per root: an exclusive lock on `<root>/berthd.lock`, holding our pid.
fn lock_root(root: &Path) -> Result<Flock<File>> {
    let path = root.join("berthd.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .context(|| format!("opening {}", path.display()))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, _)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(Error::FailedPrecondition(format!(
                "root {} is in use by another berthd (pid {})",
                root.display(),
                holder.trim()
            )));
        }
    };
    lock.set_len(0)
        .and_then(|_| lock.rewind())
        .and_then(|_| write!(lock, "{}", std::process::id()))
        .context(|| format!("writing {}", path.display()))?;
    Ok(lock)
}

/// Raises the soft open-files limit to the hard one, as Go daemons (containerd)
/// get at start: every shim connection, fifo, log and streaming session holds a
/// descriptor, and the usual soft limit of 1024 is below what a busy node needs.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(error = %e, soft, hard, "could not raise the open-files limit");
    }
}

/// Binds the socket 0660. A socket left by a crashed berthd is replaced; one that
/// answers belongs to a live berthd and is an error.
fn bind_socket(path: &Path) -> Result<UnixListener> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).context(|| format!("creating {}", parent.display()))?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(Error::FailedPrecondition(format!(
                "{} exists and is not a socket",
                path.display()
            )));
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(Error::FailedPrecondition(format!(
                    "another berthd is serving {}",
                    path.display()
                )));
            }
            Err(_) => {
                tracing::info!(socket = %path.display(), "replacing stale socket");
                fs::remove_file(path).context(|| format!("removing {}", path.display()))?;
            }
        },
        Err(_) => {}
    }
    // Bound inside a directory only root can enter, made 0660 there and moved into
    // place: the socket is never reachable with wider permissions, whatever the umask.
    let private = path.with_file_name(format!(
        ".{}.{}.d",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("berth.sock"),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&private);
    fs::DirBuilder::new()
        .mode(crate::layout::PRIVATE_DIR)
        .create(&private)
        .context(|| format!("creating {}", private.display()))?;
    let tmp = private.join("sock");
    let bound = std::os::unix::net::UnixListener::bind(&tmp)
        .context(|| format!("binding {}", tmp.display()))
        .and_then(|l| {
            crate::layout::set_mode(&tmp, SOCKET_MODE)?;
            fs::rename(&tmp, path)
                .context(|| format!("moving the socket to {}", path.display()))?;
            Ok(l)
        });
    let _ = fs::remove_dir_all(&private);
    let listener = bound?;
    listener
        .set_nonblocking(true)
        .context(|| "making the socket non-blocking".into())?;
    UnixListener::from_std(listener).context(|| format!("listening on {}", path.display()))
}
