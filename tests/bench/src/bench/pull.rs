//! Cold pulls of the big image (about 100 MB of gzip layers in five layers),
//! timed until the image is usable: PullImage returned and a container created
//! from it, since a runtime may answer before the layers are unpacked. Every
//! run pulls an image of its own (same shape, other seed), so every side pulls
//! cold without anything being deleted between runs. Before every timed pull,
//! on every side alike, the filesystem is synced and left to settle: on the
//! journal-less ext4 root, creating many files right after many were deleted
//! is several times slower for a minute or more.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_cri::v1::PodSandboxConfig;

use super::Result;
use super::client::{container_config, pod_config};
use super::floors;
use super::memory::side;
use super::report::{Report, Side};
use super::runtimes::Runtime;
use berth_testkit::Registry;

pub struct Options {
    pub settle: Duration,
}

/// A big image as pushed: `repo:tag` and the full reference.
pub struct BigImage {
    pub repo: String,
    pub tag: String,
    pub reference: String,
}

enum Puller<'a> {
    /// A runtime, with the pod to create the proving containers in.
    Runtime {
        rt: &'a Runtime,
        pod: String,
        config: Box<PodSandboxConfig>,
    },
    Floor {
        sync: bool,
    },
}

pub async fn run(
    runtimes: &[Runtime],
    registry: &Registry,
    images: &[BigImage],
    floor_dir: Option<&Path>,
    opts: &Options,
    report: &mut Report,
) {
    let mut pullers = Vec::new();
    for rt in runtimes {
        let config = pod_config("pull", &rt.logs);
        match rt.cri.run_pod(&config).await {
            Ok(pod) => pullers.push(Puller::Runtime {
                rt,
                pod,
                config: Box::new(config),
            }),
            Err(e) => report.fail("pull", side(rt.kind), &e),
        }
    }
    if floor_dir.is_some() {
        pullers.push(Puller::Floor { sync: false });
        pullers.push(Puller::Floor { sync: true });
    }
    for (i, image) in images.iter().enumerate() {
        for k in 0..pullers.len() {
            let k = (k + i) % pullers.len();
            settle(opts.settle).await;
            match &pullers[k] {
                Puller::Runtime { rt, pod, config } => {
                    eprintln!("pull {}/{}: {}", i + 1, images.len(), rt.name());
                    match pull_until_usable(rt, pod, config, image, i).await {
                        Ok((rpc, usable)) => {
                            report.record("pull", side(rt.kind), usable.as_secs_f64());
                            report.record("pull_sync", side(rt.kind), usable.as_secs_f64());
                            report.record("pull_rpc", side(rt.kind), rpc.as_secs_f64());
                        }
                        Err(e) => {
                            for key in ["pull", "pull_sync", "pull_rpc"] {
                                report.fail(key, side(rt.kind), &e);
                            }
                        }
                    }
                }
                Puller::Floor { sync } => {
                    let kind = if *sync { "sync" } else { "nosync" };
                    eprintln!("pull {}/{}: floor ({kind})", i + 1, images.len());
                    let dest = floor_dir
                        .expect("floor pullers only with a floor dir")
                        .join(format!("pull-{i}-{kind}"));
                    let key = if *sync { "pull_sync" } else { "pull" };
                    match floors::pull(registry, &image.repo, &image.tag, &dest, *sync).await {
                        Ok(took) => report.record(key, Side::Floor, took.as_secs_f64()),
                        Err(e) => report.fail(key, Side::Floor, &e),
                    }
                }
            }
        }
    }
    for puller in &pullers {
        if let Puller::Runtime { rt, pod, .. } = puller {
            let _ = rt.cri.tear_down(pod).await;
        }
    }
}

/// PullImage, then CreateContainer from the image (removed afterwards, untimed).
/// Returns the time to the RPC's answer and to the container's creation.
async fn pull_until_usable(
    rt: &Runtime,
    pod: &str,
    config: &PodSandboxConfig,
    image: &BigImage,
    i: usize,
) -> Result<(Duration, Duration)> {
    let t = Instant::now();
    rt.cri.pull(&image.reference).await?;
    let rpc = t.elapsed();
    let id = rt
        .cri
        .create(
            pod,
            container_config(&format!("big-{i}"), &image.reference, Some(&["/bin/true"])),
            config,
        )
        .await?;
    let usable = t.elapsed();
    rt.cri.remove(&id).await?;
    Ok((rpc, usable))
}

/// `sync`, then `settle` of quiet.
async fn settle(settle: Duration) {
    let _ = tokio::task::spawn_blocking(|| unsafe { libc::sync() }).await;
    tokio::time::sleep(settle).await;
}
