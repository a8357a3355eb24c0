//! `berth bench`: berth side by side with containerd 1.6 (when installed) and
//! with the physical floors, on this machine, in one run.
//!
//! Both runtimes run at once, each on its own root, state, socket and CNI
//! bridge, fed by one local docker-registry with images built here; every
//! latency is taken through an in-process CRI client, the sides interleaved.
//! Scenarios: single-pod latencies (`latency.rs`), many pods (`scale.rs`), cold
//! pulls (`pull.rs`), memory (`memory.rs`); the floors (`floors.rs`) ride along
//! with the latency and pull scenarios. Results: `results.json`, `results.txt`
//! and `ratios.png` in `--out`. See the README's "Benchmarks" section.

mod chart;
mod client;
mod crash;
mod fit;
mod floors;
mod images;
mod kubelet;
mod kubelet_chart;
mod latency;
mod leaks;
mod memory;
mod network;
mod procfs;
mod profile;
mod pull;
mod report;
mod runtimes;
mod samples;
mod scale;
mod spread;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_testkit::{REGISTRY_BIN, Registry, RegistryOpts};
use serde_json::json;

use floors::Floor;
use report::{Metric, Report, Target, Unit};
use runtimes::{Binaries, CONTAINERD_BIN, Runtime};

pub type Result<T> = std::result::Result<T, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Latency,
    Scale,
    /// Kubelet scale: each pod count of --scale, with the PLEG relist.
    Kubelet,
    Pull,
    /// The kill -9 crash loop of tests/faults.rs; needs --crash-loop.
    Crash,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Where results.json, results.txt and ratios.png go
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Work directory for the roots, states and registry [default: a fresh
    /// /var/tmp/berth-bench.<pid>, removed at the end]
    #[arg(long)]
    work: Option<PathBuf>,
    /// Keep the work directory
    #[arg(long)]
    keep: bool,
    /// Where berthd, containerd-shim-berth-v2 and the static berth-pause are
    /// [default: next to this binary]
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Run berth only, even when containerd is installed
    #[arg(long)]
    no_containerd: bool,
    /// Scenarios to run [default: all]
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Timed iterations of the single-pod latencies
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Untimed iterations before them
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// ExecSync calls per iteration
    #[arg(long, default_value_t = 3)]
    execs: usize,
    /// Pods of the scale scenario
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// Containers per pod in the scale scenario
    #[arg(long, default_value_t = 4)]
    containers: usize,
    /// Pods started or torn down at once
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Pod counts of the kubelet scale scenario (the kubelet's default maximum
    /// of 110 pods per node, and 250), each with --containers per pod
    #[arg(long, value_delimiter = ',', default_value = "110,250")]
    scale: Vec<usize>,
    /// Seconds of PLEG-style relist (with pods churning) at each pod count
    #[arg(long, default_value_t = 60)]
    relist_secs: u64,
    /// Timed calls of each List* RPC (enough for a p90 that holds between runs;
    /// the kubelet scenario times at most 50 ListContainerStats at each count)
    #[arg(long, default_value_t = 200)]
    list_calls: usize,
    /// Cold pulls per side (each of its own image)
    #[arg(long, default_value_t = 3)]
    pull_runs: usize,
    /// Seconds of quiet after a sync before every timed pull
    #[arg(long, default_value_t = 60)]
    settle: u64,
    /// Rounds of the kill -9 crash loop (tests/faults.rs's) on each runtime, one
    /// runtime after the other [default: not run]
    #[arg(long, value_name = "ROUNDS")]
    crash_loop: Option<usize>,
    /// The crash loop's seed, the same for every runtime [default: the clock]
    #[arg(long)]
    crash_seed: Option<u64>,
    /// Record each daemon with `perf record` during the scale phases (start,
    /// lists, teardown) into --out
    #[arg(long)]
    perf: bool,
    /// What --perf records, as `perf record` options
    #[arg(long, default_value = "-F 999 -g", allow_hyphen_values = true)]
    perf_events: String,
    /// Serve as the List rows' bare gRPC floor on SOCKET (the bench starts
    /// itself so)
    #[arg(long, hide = true, value_name = "SOCKET")]
    bare_grpc_server: Option<PathBuf>,
}

impl BenchArgs {
    fn runs(&self, scenario: Scenario) -> bool {
        let asked = self.only.is_empty() || self.only.contains(&scenario);
        // The crash loop kills daemons: only when its rounds are given.
        asked && (scenario != Scenario::Crash || self.crash_loop.is_some())
    }
}

pub async fn run(args: BenchArgs) -> Result<()> {
    if let Some(socket) = &args.bare_grpc_server {
        return floors::grpc::serve(socket);
    }
    preflight()?;
    if args.only.contains(&Scenario::Crash) && args.crash_loop.is_none() {
        return Err("--only crash needs --crash-loop ROUNDS".into());
    }
    // Containers the floor starts are orphaned by `runc create`; as a subreaper
    // the bench can reap them (this machine's PID 1 does not).
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let mut bench = Bench::new(args)?;
    let outcome = tokio::select! {
        r = bench.run() => r,
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_string()),
    };
    if let Err(e) = &outcome {
        eprintln!("bench: {e}; cleaning up");
        bench.report.note(format!("the run stopped early: {e}"));
    }
    bench.shut_down().await;
    reap_children();
    bench.write_results()?;
    outcome
}

struct Bench {
    args: BenchArgs,
    work: PathBuf,
    /// Whether the work directory is ours to remove.
    temporary: bool,
    bins: Binaries,
    registry: Option<Registry>,
    runtimes: Vec<Runtime>,
    floor: Option<Arc<Floor>>,
    report: Report,
}

impl Bench {
    fn new(args: BenchArgs) -> Result<Bench> {
        let bin_dir = match &args.bin_dir {
            Some(d) => d.clone(),
            None => std::env::current_exe()
                .map_err(|e| e.to_string())?
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        let bins = Binaries {
            berthd: bin_dir.join("berthd"),
            shim: bin_dir.join("containerd-shim-berth-v2"),
            pause: bin_dir.join("berth-pause"),
        };
        for bin in [&bins.berthd, &bins.shim, &bins.pause] {
            if !bin.exists() {
                return Err(format!("{} missing: run `make build` first", bin.display()));
            }
        }
        let pause = std::fs::read(&bins.pause).map_err(|e| e.to_string())?;
        if has_interpreter(&pause) {
            return Err(format!(
                "{} is dynamically linked: `make build` puts the static one there",
                bins.pause.display()
            ));
        }
        let (work, temporary) = match &args.work {
            Some(w) => (w.clone(), false),
            None => (
                PathBuf::from(format!("/var/tmp/berth-bench.{}", std::process::id())),
                true,
            ),
        };
        std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        let work = work.canonicalize().map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
        let bins = copy_binaries(&bins, &work.join("bin"))?;
        let report = Report::new(suite(&args));
        Ok(Bench {
            args,
            work,
            temporary,
            bins,
            registry: None,
            runtimes: Vec::new(),
            floor: None,
            report,
        })
    }

    async fn run(&mut self) -> Result<()> {
        eprintln!("work directory: {}", self.work.display());
        let registry = Registry::start_in(&self.work, RegistryOpts::default()).await;
        let certs_d = write_hosts_toml(&registry.host(), &self.work.join("certs.d"))?;

        eprintln!("building and pushing images");
        let busybox_layer = images::busybox_layer()?;
        let pause_layer = images::pause_layer(&self.bins.pause)?;
        images::busybox_image(&busybox_layer)?
            .image
            .push(&registry, "bench/busybox", "1")
            .await;
        images::pause_image(&pause_layer)?
            .image
            .push(&registry, "bench/pause", "1")
            .await;
        let busybox = registry.reference("bench/busybox", "1");
        let pause = registry.reference("bench/pause", "1");
        let mut bigs = Vec::new();
        if self.args.runs(Scenario::Pull) {
            for i in 0..self.args.pull_runs {
                let seed = i as u64 + 1;
                let big = tokio::task::spawn_blocking(move || images::big_image(seed))
                    .await
                    .map_err(|e| e.to_string())??;
                let tag = i.to_string();
                big.image.push(&registry, "bench/big", &tag).await;
                if i == 0 {
                    self.report.meta.insert(
                        "big_image".into(),
                        json!({
                            "layers": big.image.layers.len(),
                            "compressed_bytes": big.compressed_size(),
                            "layer_bytes": big.image.layers.iter().map(|l| l.size()).collect::<Vec<_>>(),
                            "tar_bytes": big.tar_size(),
                            "files": big.files,
                        }),
                    );
                }
                bigs.push(pull::BigImage {
                    reference: registry.reference("bench/big", &tag),
                    repo: "bench/big".into(),
                    tag,
                });
            }
        }
        let crash_seed = self.args.crash_seed.unwrap_or_else(clock_seed);
        let extra = registry.reference("bench/extra", "1");
        if self.args.runs(Scenario::Crash) {
            images::extra_image(crash_seed)?
                .image
                .push(&registry, "bench/extra", "1")
                .await;
        }
        self.registry = Some(registry);

        eprintln!("starting berthd");
        let berth = Runtime::start_berth(&self.work.join("berth"), &self.bins, &certs_d).await?;
        self.runtimes.push(berth);
        if self.args.no_containerd {
            self.report
                .note("containerd left out (--no-containerd): berth only");
        } else if !Path::new(CONTAINERD_BIN).exists() {
            self.report.note(format!(
                "{CONTAINERD_BIN} is not installed: berth only, no ratios"
            ));
        } else {
            eprintln!("starting containerd");
            let containerd =
                Runtime::start_containerd(&self.work.join("containerd"), &certs_d, &pause).await?;
            self.runtimes.push(containerd);
        }
        for rt in &self.runtimes {
            rt.cri.pull(&busybox).await?;
            if rt.kind == runtimes::Kind::Containerd {
                rt.cri.pull(&pause).await?;
            }
        }
        let floor_dir = self.work.join("floor");
        let floor = tokio::task::spawn_blocking(move || {
            Floor::prepare(&floor_dir, &pause_layer, &busybox_layer)
        })
        .await
        .map_err(|e| e.to_string())?;
        match floor {
            Ok(f) => self.floor = Some(Arc::new(f)),
            Err(e) => self.report.note(format!("no floors: {e}")),
        }
        self.record_meta();

        // Idle: images pulled, no pod yet.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut idle = Vec::new();
        for rt in &self.runtimes {
            memory::record_daemon(rt, &mut self.report, "rss_idle");
            idle.push(leaks::Footprint::of(rt));
        }

        if self.args.runs(Scenario::Latency) {
            let opts = latency::Options {
                iterations: self.args.iterations,
                warmup: self.args.warmup,
                execs: self.args.execs,
            };
            latency::run(
                &self.runtimes,
                self.floor.as_ref(),
                &busybox,
                &opts,
                &mut self.report,
            )
            .await;
            for (rt, idle) in self.runtimes.iter().zip(&idle) {
                let check = leaks::check(rt, idle, "latency runs").await;
                self.report.leaks.push(check);
            }
        }
        if self.args.runs(Scenario::Scale) {
            let opts = scale::Options {
                pods: self.args.pods,
                containers: self.args.containers,
                concurrency: self.args.concurrency,
                list_calls: self.args.list_calls,
                profiler: profile::Profiler {
                    out: self.args.perf.then(|| self.args.out.clone()),
                    events: self
                        .args
                        .perf_events
                        .split_whitespace()
                        .map(String::from)
                        .collect(),
                },
            };
            for (rt, idle) in self.runtimes.iter().zip(&idle) {
                scale::run(rt, &busybox, idle, &opts, &mut self.report).await;
            }
            if let Some(floor) = &self.floor {
                scale::run_floor(floor, &opts, &mut self.report).await;
            }
        }
        if self.args.runs(Scenario::Kubelet) {
            let opts = kubelet::Options {
                counts: self.args.scale.clone(),
                containers: self.args.containers,
                concurrency: self.args.concurrency,
                relist: Duration::from_secs(self.args.relist_secs),
                list_calls: self.args.list_calls,
            };
            for (rt, idle) in self.runtimes.iter().zip(&idle) {
                let points = kubelet::run(rt, &busybox, &opts).await;
                self.report.kubelet.extend(points);
                let check = leaks::check(rt, idle, "kubelet scale").await;
                self.report.leaks.push(check);
            }
            self.report.kubelet_containers = self.args.containers;
        }
        if self.args.runs(Scenario::Pull) {
            let opts = pull::Options {
                settle: Duration::from_secs(self.args.settle),
            };
            let floor_dir = self.floor.as_ref().map(|_| self.work.join("floor"));
            let registry = self.registry.as_ref().expect("registry started above");
            pull::run(
                &self.runtimes,
                registry,
                &bigs,
                floor_dir.as_deref(),
                &opts,
                &mut self.report,
            )
            .await;
        }
        if let Some(rounds) = self
            .args
            .crash_loop
            .filter(|_| self.args.runs(Scenario::Crash))
        {
            self.crash_loop(rounds, crash_seed, &busybox, &extra).await;
        }
        Ok(())
    }

    /// The crash loop on each runtime in turn (not at once: one daemon's kill
    /// must not land in the other's timing).
    async fn crash_loop(&mut self, rounds: usize, seed: u64, image: &str, extra: &str) {
        eprintln!("crash loop: {rounds} rounds per runtime, seed {seed}");
        self.report.meta.insert(
            "crash_loop".into(),
            json!({"rounds": rounds, "seed": seed, "workers": 4}),
        );
        let templates = crash::Templates {
            image: image.to_string(),
            extra_image: extra.to_string(),
        };
        for rt in &mut self.runtimes {
            let outcome = crash::run(rt, &templates, rounds, seed).await;
            self.report.crash.push(outcome);
        }
    }

    fn record_meta(&mut self) {
        let first_line = |cmd: &str, args: &[&str]| {
            std::process::Command::new(cmd)
                .args(args)
                .output()
                .ok()
                .and_then(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .next()
                        .map(String::from)
                })
                .unwrap_or_default()
        };
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_default();
        let meta = &mut self.report.meta;
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        meta.insert("unix_time".into(), json!(started));
        meta.insert(
            "kernel".into(),
            json!(read("/proc/sys/kernel/osrelease").trim()),
        );
        meta.insert("cpu".into(), json!(cpu));
        meta.insert(
            "cpus".into(),
            json!(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(0)
            ),
        );
        meta.insert("runc".into(), json!(first_line("runc", &["--version"])));
        meta.insert(
            "git".into(),
            json!(first_line("git", &["describe", "--always", "--dirty"])),
        );
        for rt in &self.runtimes {
            meta.insert(rt.name().into(), json!(rt.version));
        }
        let a = &self.args;
        meta.insert(
            "options".into(),
            json!({
                "iterations": a.iterations, "warmup": a.warmup, "execs": a.execs,
                "pods": a.pods, "containers": a.containers, "concurrency": a.concurrency,
                "list_calls": a.list_calls, "scale": a.scale, "relist_secs": a.relist_secs, "pull_runs": a.pull_runs, "settle_s": a.settle,
                "cni": "bridge (gateway, ipMasq, hairpin) + host-local + portmap, and loopback",
            }),
        );
    }

    /// Pods torn down, daemons stopped, leftovers swept, the registry stopped,
    /// and the work directory removed if it is ours and nothing is mounted in it.
    async fn shut_down(&mut self) {
        for rt in &mut self.runtimes {
            rt.shut_down().await;
        }
        self.runtimes.clear();
        self.floor = None;
        self.registry = None;
        if self.temporary && !self.args.keep {
            let left = procfs::mounts_under(&self.work);
            if left.is_empty() {
                eprintln!("removing {}", self.work.display());
                let _ = std::fs::remove_dir_all(&self.work);
            } else {
                self.report.note(format!(
                    "{} kept: {} mounts still below it",
                    self.work.display(),
                    left.len()
                ));
            }
        }
    }

    fn write_results(&mut self) -> Result<()> {
        let out = &self.args.out;
        let png = out.join("ratios.png");
        if let Err(e) = chart::write(&self.report, &png) {
            self.report.note(format!("no chart: {e}"));
        }
        if !self.report.kubelet.is_empty() {
            let png = out.join("kubelet_scale.png");
            if let Err(e) = kubelet_chart::write(&self.report.kubelet, &png) {
                self.report.note(format!("no kubelet scale chart: {e}"));
            }
        }
        self.report.write(out)?;
        println!("{}", self.report.table());
        println!("results in {}", out.display());
        Ok(())
    }
}

/// Lists are answered from kept items: at most this fraction of containerd's p50.
const LIST_VS_CONTAINERD: f64 = 0.4;
/// A List's cost per item beyond the first (1.5 us, issue 15) once its
/// items are kept, so that a kubelet relisting 110 pods x 4 containers every
/// second pays under a ms.
const LIST_US_PER_ITEM: f64 = 1.5;
/// The floor of the Version and List rows (`floors/grpc.rs`).
const BARE_GRPC: &str = "a bare server on berthd's gRPC stack answering berth's bytes";

/// What the suite measures, in the order of the table.
fn suite(a: &BenchArgs) -> Vec<Metric> {
    use Target::{AtMost, PerItemUs, VsContainerd, VsFloor};
    use Unit::{MiB, Ms, S};
    let (p, c, k, all) = (a.pods, a.containers, a.concurrency, a.pods * a.containers);
    vec![
        Metric::new("pod_start", "RunPodSandbox (CNI bridge)", Ms)
            .floor("netns, then CNI ADD beside runc create+start of the pause")
            .target(VsContainerd(0.6))
            .target(VsFloor(1.2)),
        Metric::new("create_start", "CreateContainer + StartContainer", Ms)
            .floor("runc create + runc start")
            .target(VsContainerd(0.7))
            .target(VsFloor(1.1)),
        Metric::new("create", "  CreateContainer alone", Ms).floor("runc create"),
        Metric::new("start", "  StartContainer alone", Ms).floor("runc start"),
        Metric::new("exec_sync", "ExecSync (true)", Ms).floor("runc exec"),
        Metric::new("stop_remove", "StopContainer + RemoveContainer", Ms)
            .floor("runc kill TERM, exit awaited, runc delete"),
        Metric::new("pod_stop_remove", "StopPodSandbox + RemovePodSandbox", Ms)
            .floor("pause killed and deleted beside CNI DEL, netns removed")
            .target(VsFloor(1.15)),
        Metric::new("floor_netns", "  floor part: pin a netns", Ms),
        Metric::new("floor_cni_add", "  floor part: CNI ADD", Ms),
        Metric::new(
            "floor_runc_pause",
            "  floor part: runc create+start pause",
            Ms,
        ),
        Metric::new("pull", "pull+unpack ~100 MB/5 layers, until usable", S)
            .floor("parallel download + gunzip + untar")
            .target(VsContainerd(1.0 / 1.5)),
        Metric::new("pull_sync", "  the same, vs floor with syncfs", S)
            .floor("parallel download + gunzip + untar + syncfs"),
        Metric::new("pull_rpc", "  PullImage RPC alone", S),
        Metric::new("rss_idle", "daemon RSS, idle", MiB).target(AtMost(15.0)),
        Metric::new(
            "rss_pods",
            format!("daemon RSS, {p} pods x {c} containers"),
            MiB,
        )
        .target(AtMost(25.0)),
        Metric::new("shim_pss", "shim PSS per pod", MiB).target(AtMost(1.0)),
        Metric::new("shim_private", "shim private memory per pod", MiB).target(AtMost(2.0)),
        Metric::new(
            "pods_start",
            format!("start {p} pods x {c} containers, {k} at once"),
            S,
        )
        .floor("the floor's pods and containers, on K threads")
        .target(VsContainerd(0.5)),
        Metric::new(
            "pod_start_loaded",
            format!("  one pod + {c} containers, {k} at once"),
            Ms,
        )
        .floor("one floor pod and its containers, K at once"),
        Metric::new(
            "pods_teardown",
            format!("tear {p} pods down, {k} at once"),
            S,
        )
        .floor("the floor's teardown, on K threads")
        .target(VsContainerd(0.5)),
        Metric::new("rpc_version", "Version (a call's round trip alone)", Ms).floor(BARE_GRPC),
        Metric::new(
            "list_containers",
            format!("ListContainers, {all} containers"),
            Ms,
        )
        .floor(BARE_GRPC)
        .items(all, "list_containers_one")
        .target(VsContainerd(LIST_VS_CONTAINERD))
        .target(PerItemUs(LIST_US_PER_ITEM)),
        Metric::new(
            "list_containers_one",
            "  the same, narrowed to one container by id",
            Ms,
        )
        .floor(BARE_GRPC),
        Metric::new(
            "list_containers_decode",
            "  the client's decode of that response alone",
            Ms,
        ),
        Metric::new("list_pods", format!("ListPodSandbox, {p} pods"), Ms)
            .floor(BARE_GRPC)
            .items(p, "list_pods_one")
            .target(VsContainerd(LIST_VS_CONTAINERD))
            .target(PerItemUs(LIST_US_PER_ITEM)),
        Metric::new("list_pods_one", "  the same, narrowed to one pod by id", Ms).floor(BARE_GRPC),
        Metric::new(
            "list_pods_decode",
            "  the client's decode of that response alone",
            Ms,
        ),
        Metric::new(
            "list_stats",
            format!("ListContainerStats, {all} containers"),
            Ms,
        )
        .target(AtMost(20.0)),
    ]
}

/// `<certs_d>/<host>/hosts.toml` saying the registry at `host` speaks plain
/// http, in containerd's format, which berth reads too. Returns `certs_d`.
fn write_hosts_toml(host: &str, certs_d: &Path) -> Result<PathBuf> {
    let dir = certs_d.join(host);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let toml = format!(
        "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    );
    std::fs::write(dir.join("hosts.toml"), toml).map_err(|e| e.to_string())?;
    Ok(certs_d.to_path_buf())
}

/// Root, and the tools every side needs.
fn preflight() -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("berth bench must run as root".into());
    }
    let mut missing: Vec<String> = [REGISTRY_BIN, "/bin/busybox"]
        .into_iter()
        .map(String::from)
        .chain(
            ["bridge", "host-local", "portmap", "loopback"]
                .iter()
                .map(|p| format!("{}/{p}", network::CNI_BIN)),
        )
        .filter(|p| !Path::new(p).exists())
        .collect();
    for tool in ["runc", "iptables", "ip"] {
        let found = std::process::Command::new(tool)
            .arg(if tool == "ip" { "-V" } else { "--version" })
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        if !found {
            missing.push(tool.to_string());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "missing: {} (`make deps` installs them)",
            missing.join(", ")
        ))
    }
}

/// Copies berth's binaries into `dir`: a rebuild in the tree during the run
/// (cargo replaces files) must not change what the bench measures. Written back
/// at once, so that no page of theirs counts as private dirty memory.
fn copy_binaries(bins: &Binaries, dir: &Path) -> Result<Binaries> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let copy = |from: &Path| {
        let to = dir.join(from.file_name().unwrap_or_default());
        std::fs::copy(from, &to)
            .map(|_| to)
            .map_err(|e| format!("copying {}: {e}", from.display()))
    };
    let copied = Binaries {
        berthd: copy(&bins.berthd)?,
        shim: copy(&bins.shim)?,
        pause: copy(&bins.pause)?,
    };
    unsafe { libc::sync() };
    Ok(copied)
}

/// Whether an ELF64 executable names a program interpreter (PT_INTERP), i.e. is
/// dynamically linked.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let phoff = elf
        .get(0x20..0x28)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()) as usize);
    let (Some(phoff), Some(size), Some(count)) = (phoff, u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..count).any(|i| {
        let at = phoff + i * size;
        elf.get(at..at + 4)
            .is_some_and(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) == PT_INTERP)
    })
}

/// A seed from the clock, odd (xorshift must not start at 0).
fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1
}

/// Reaps what was orphaned onto the bench (floor containers, exited shims).
fn reap_children() {
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_executables_have_an_interpreter() {
        let sh = std::fs::read("/bin/sh").unwrap();
        assert!(has_interpreter(&sh));
        if let Ok(busybox) = std::fs::read("/bin/busybox") {
            assert!(!has_interpreter(&busybox), "Debian's busybox is static");
        }
    }
}
