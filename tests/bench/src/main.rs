//! `berth-bench`: berth against containerd and the physical floors (as root;
//! starts its own berthd, containerd and registry). `berth bench` runs it too.

mod bench;

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "berth-bench",
    version,
    about = "Benchmark berth against containerd and the physical floors (as root; \
             starts its own berthd, containerd and registry)"
)]
struct Cli {
    #[command(flatten)]
    args: bench::BenchArgs,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match bench::run(Cli::parse().args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
