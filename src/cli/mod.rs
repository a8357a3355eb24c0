//! The `berth` admin CLI: talks to berthd over its socket (CRI for list/remove, the
//! admin API for pulls with progress, import and disk usage). `berth bench` hands
//! over to the benchmark, a binary of its own (`tests/bench`) so that none of it
//! is linked into the product.

mod bench;
mod display;
pub mod from_containerd;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::admin::proto;
use crate::admin::proto::admin_client::AdminClient;

#[derive(Parser)]
#[command(name = "berth", version, about = "Administer a running berthd")]
pub struct Cli {
    /// berthd's socket
    #[arg(long, global = true, default_value = "/run/berth/berth.sock")]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Images: pull, import, ls, rm
    #[command(subcommand)]
    Image(ImageCommand),
    /// Space used by images, snapshots and content
    Du,
    /// Berth's configuration
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Benchmark berth against containerd and the physical floors (as root;
    /// starts its own berthd, containerd and registry): runs `berth-bench`
    /// from beside this binary with the same arguments (`berth bench --help`)
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a berth config (TOML) equivalent to a containerd CRI config;
    /// what cannot be carried over is listed in comments at its top
    FromContainerd {
        /// containerd's config (version 2 or 3)
        #[arg(default_value = from_containerd::DEFAULT_CONTAINERD_CONFIG)]
        path: PathBuf,
        /// Write the hosts.toml files for containerd's deprecated
        /// registry.mirrors here (the printed registry.config_path names it);
        /// without it they are printed as comments
        #[arg(long, default_value = "/etc/berth/certs.d")]
        hosts_dir: PathBuf,
        /// Write the hosts.toml files into --hosts-dir instead of printing them
        #[arg(long)]
        write_hosts: bool,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Pull an image, showing progress
    Pull {
        reference: String,
        /// Registry credentials as user:password
        #[arg(long)]
        creds: Option<String>,
    },
    /// Import an OCI image layout tar or a `docker save` tar
    Import { file: PathBuf },
    /// List images
    Ls,
    /// Remove images by reference or id
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
}

type CliResult = Result<(), String>;

pub async fn run(cli: Cli) -> CliResult {
    if let Command::Bench { args } = cli.command {
        return Err(bench::exec(&args));
    }
    if let Command::Config(ConfigCommand::FromContainerd {
        path,
        hosts_dir,
        write_hosts,
    }) = &cli.command
    {
        return config_from_containerd(path, hosts_dir, *write_hosts);
    }
    let channel = connect(&cli.socket).await?;
    match cli.command {
        Command::Image(ImageCommand::Pull { reference, creds }) => {
            pull(channel, reference, creds.unwrap_or_default()).await
        }
        Command::Image(ImageCommand::Import { file }) => import(channel, &file).await,
        Command::Image(ImageCommand::Ls) => list(channel).await,
        Command::Image(ImageCommand::Rm { images }) => remove(channel, images).await,
        Command::Du => disk_usage(channel).await,
        Command::Bench { .. } | Command::Config(_) => unreachable!("handled before connecting"),
    }
}

async fn connect(socket: &Path) -> Result<Channel, String> {
    let path = socket.to_path_buf();
    Endpoint::try_from("http://berthd")
        .map_err(|e| e.to_string())?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|e| format!("cannot reach berthd at {}: {e}", socket.display()))
}

fn failed(e: tonic::Status) -> String {
    e.message().to_string()
}

async fn pull(channel: Channel, reference: String, credentials: String) -> CliResult {
    let mut client = AdminClient::new(channel);
    let mut stream = client
        .pull_image(proto::PullImageRequest {
            reference: reference.clone(),
            credentials,
        })
        .await
        .map_err(failed)?
        .into_inner();
    let mut screen = display::Progress::new();
    while let Some(msg) = stream.message().await.map_err(failed)? {
        screen.show(&msg);
        if !msg.image_id.is_empty() {
            screen.finish(&msg);
            println!("{reference}: {}", msg.image_id);
            return Ok(());
        }
    }
    Err("berthd ended the pull without a result".into())
}

async fn import(channel: Channel, file: &Path) -> CliResult {
    let path = std::fs::canonicalize(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let response = AdminClient::new(channel)
        .import_image(proto::ImportImageRequest {
            path: path.display().to_string(),
        })
        .await
        .map_err(failed)?
        .into_inner();
    for image in response.images {
        let tags = if image.repo_tags.is_empty() {
            "<none>".to_string()
        } else {
            image.repo_tags.join(", ")
        };
        println!("imported {} {tags}", image.id);
    }
    Ok(())
}

async fn list(channel: Channel) -> CliResult {
    let images = ImageServiceClient::new(channel)
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .map_err(failed)?
        .into_inner()
        .images;
    let mut rows = vec![[
        "IMAGE".to_string(),
        "TAG".to_string(),
        "IMAGE ID".to_string(),
        "SIZE".to_string(),
    ]];
    for image in &images {
        let id = display::short_id(&image.id);
        let size = display::bytes(image.size);
        if image.repo_tags.is_empty() {
            let name = image
                .repo_digests
                .first()
                .and_then(|d| d.split('@').next())
                .unwrap_or("<none>");
            rows.push([name.to_string(), "<none>".into(), id.clone(), size.clone()]);
        }
        for tag in &image.repo_tags {
            let (name, t) = tag.rsplit_once(':').unwrap_or((tag, "<none>"));
            rows.push([name.to_string(), t.to_string(), id.clone(), size.clone()]);
        }
    }
    display::table(&rows);
    Ok(())
}

async fn remove(channel: Channel, images: Vec<String>) -> CliResult {
    let mut client = ImageServiceClient::new(channel);
    let mut failures = Vec::new();
    for image in images {
        let spec = Some(cri::ImageSpec {
            image: image.clone(),
            ..Default::default()
        });
        let known = client
            .image_status(cri::ImageStatusRequest {
                image: spec.clone(),
                verbose: false,
            })
            .await
            .map_err(failed)?
            .into_inner()
            .image
            .is_some();
        if !known {
            failures.push(format!("{image}: no such image"));
            continue;
        }
        match client
            .remove_image(cri::RemoveImageRequest { image: spec })
            .await
        {
            Ok(_) => println!("removed {image}"),
            Err(e) => failures.push(format!("{image}: {}", e.message())),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

async fn disk_usage(channel: Channel) -> CliResult {
    let du = AdminClient::new(channel)
        .disk_usage(proto::DiskUsageRequest {})
        .await
        .map_err(failed)?
        .into_inner();
    let mut rows = vec![[
        "IMAGE".to_string(),
        "IMAGE ID".to_string(),
        "SIZE".to_string(),
        "UNIQUE".to_string(),
    ]];
    for image in &du.images {
        let name = image
            .repo_tags
            .first()
            .cloned()
            .unwrap_or_else(|| "<none>".into());
        rows.push([
            name,
            display::short_id(&image.id),
            display::bytes(image.size),
            display::bytes(image.unique_snapshot_bytes),
        ]);
    }
    display::table(&rows);
    println!();
    println!(
        "content:   {} in {} blobs ({} partial downloads)",
        display::bytes(du.content_bytes),
        du.content_blobs,
        display::bytes(du.ingest_bytes)
    );
    println!(
        "snapshots: {} and {} inodes in {} snapshots",
        display::bytes(du.snapshot_bytes),
        du.snapshot_inodes,
        du.snapshots
    );
    Ok(())
}

/// `berth config from-containerd`: the config on stdout, the mirrors' hosts.toml
/// files written or printed as comments, what was left out also on stderr.
fn config_from_containerd(path: &Path, hosts_dir: &Path, write_hosts: bool) -> CliResult {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let conversion = from_containerd::convert(&text, hosts_dir)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    print!("{}", from_containerd::document(&conversion, path));
    if write_hosts {
        for written in from_containerd::write_hosts(hosts_dir, &conversion.hosts)? {
            eprintln!("wrote {}", written.display());
        }
    } else {
        for file in &conversion.hosts {
            let target = hosts_dir.join(&file.dir).join("hosts.toml");
            println!(
                "\n# ---- {} (--write-hosts writes it) ----",
                target.display()
            );
            for line in file.text.lines() {
                println!("# {line}");
            }
        }
    }
    for dropped in &conversion.dropped {
        eprintln!("not carried over: {dropped}");
    }
    Ok(())
}
