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
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berthd: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(log_filter(
            &config.log_level,
        )))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berthd: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(berth::daemon::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "berthd failed");
            eprintln!("berthd: {e}");
            ExitCode::FAILURE
        }
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
