//! berthd: the berth daemon. Argument parsing only; the work is in `berth::daemon`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use berth::config::Config;

#[derive(Parser)]
#[command(
    name = "berthd",
    version,
    about = "berth: a Kubernetes CRI runtime for one node"
)]
struct Args {
    /// Config file [default: /etc/berth/config.toml; missing means built-in defaults]
    #[arg(long)]
    config: Option<PathBuf>,
    /// Persistent data directory [default: /var/lib/berth]
    #[arg(long)]
    root: Option<PathBuf>,
    /// Runtime state directory [default: /run/berth]
    #[arg(long)]
    state: Option<PathBuf>,
    /// CRI socket [default: /run/berth/berth.sock]
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Log filter: error, warn, info, debug, trace [default: info]
    #[arg(long)]
    log_level: Option<String>,
    /// With `publish`: the events endpoint to forward to (as containerd's flag)
    #[arg(long)]
    address: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Forward an event (a protobuf Any on stdin) to berthd; shims exec this
    Publish {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        namespace: String,
    },
}

fn main() -> ExitCode {
    // SAFETY: no other thread exists yet (the async runtime starts below).
    unsafe { berth::notify::take_from_env() };
    let mut args = Args::parse();
    if let Some(Command::Publish { topic, namespace }) = args.command.take() {
        return publish(args.address.as_deref(), &topic, &namespace);
    }
    let config = match load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berthd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let traces = match berth::traces::init(&log_filter(&config.log_level), &config.tracing) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("berthd: {e}");
            return ExitCode::FAILURE;
        }
    };
    limit_malloc_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berthd: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(berth::daemon::run(config));
    // Spans still queued go out before berthd exits (off the runtime: the
    // exporter's HTTP client blocks).
    traces.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "berthd failed");
            eprintln!("berthd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Threads for blocking work (file I/O, fsync, unpacking). tokio's default, 512,
/// let a burst of concurrent calls start hundreds, each leaving its stack in
/// glibc's stack cache when it ends, so RSS stayed at the burst's peak. Work
/// beyond this many queues, on the same few cores it would have shared anyway.
const MAX_BLOCKING_THREADS: usize = 64;

/// glibc gives each thread that allocates an arena of its own, up to eight per
/// core, and an arena keeps what was freed in it. berthd's blocking threads come
/// and go with the load, so its memory would spread over many arenas; it waits on
/// I/O far more than it allocates, and each thread's cache serves most small
/// allocations without the arena's lock, so one arena costs no contention worth
/// having. One arena also lets `malloc_trim` return the heap's free top: it
/// trims only the main arena's, so with a second one the free top a pull left
/// there (up to 1 MiB, kept by glibc's trim threshold, which a pull's large
/// buffers raise) stayed resident, and idle RSS swung with it.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn load(args: Args) -> Result<Config, berth::error::Error> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(root) = args.root {
        config.root = root;
    }
    if let Some(state) = args.state {
        config.state = state;
    }
    if let Some(socket) = args.socket {
        config.socket = socket;
    }
    if let Some(level) = args.log_level {
        config.log_level = level;
    }
    if !config.root.is_absolute() || !config.state.is_absolute() {
        return Err(berth::error::Error::InvalidArgument(
            "--root and --state must be absolute paths".into(),
        ));
    }
    Ok(config)
}

/// A bare level applies to berth; its dependencies (HTTP/2 frames, say) stay at info
/// unless asked for with a full directive such as "debug".
fn log_filter(level: &str) -> String {
    match level {
        "debug" | "trace" => format!("info,berth={level},berthd={level}"),
        other => other.to_string(),
    }
}

/// `berthd --address A publish --topic T --namespace N`, as shims exec it.
fn publish(address: Option<&str>, topic: &str, namespace: &str) -> ExitCode {
    use std::io::Read;
    let Some(address) = address else {
        eprintln!("berthd publish: --address is required");
        return ExitCode::FAILURE;
    };
    let mut event = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut event) {
        eprintln!("berthd publish: reading the event: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berthd publish: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(berth::shim::events::publish(
        address, topic, namespace, &event,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berthd publish: {e}");
            ExitCode::FAILURE
        }
    }
}
