//! Shared harness for berth's integration tests. What the benchmark needs too
//! lives in the `berth-testkit` crate (`tests/kit`) and is re-exported here:
//!
//! - [`registry`]: a throwaway `docker-registry` (distribution v2.8) on loopback,
//!   with its access log parsed so tests can count blob fetches.
//! - [`image`]: layers, images and indexes built in memory and pushed over the
//!   distribution API.
//! - [`daemon`]: a `berthd` on a temporary root, and CRI clients for it.
//! - [`proxy`]: a throttling TCP proxy, to slow a pull down enough to kill it.
//! - [`recorder`]: an HTTP server that records request headers, replying or
//!   forwarding to a registry, to see where credentials go.
//! - [`static_registry`]: serves fixed manifests, for ones docker-registry refuses.
//! - [`spdy`]: a SPDY/3.1 client on berth's frame codec, for the streaming tests.
//! - [`world`]: a berthd with a pod network and a busybox image, for container tests.
//!
//! Tests start with [`TestBed::start`] (or `start_with`, `start_configured`,
//! `start_holding` for a registry, config or mount of their own) or
//! [`world::World::start`] (`World::builder()` for plugins, another image, no
//! image, a config), which return `None` (after printing why) when
//! [`prerequisites_met`] says no: not root, or docker-registry, htpasswd or
//! skopeo missing. Under CI (`CI` set) that is a failure instead, so the suite
//! can never pass by skipping.

// Each test binary uses a different part of the harness.
#![allow(dead_code, unused_imports)]

pub mod daemon;
pub mod metrics;
pub mod pod;
pub mod proxy;
pub mod recorder;
pub mod rng;
pub mod spdy;
pub mod static_registry;
pub mod world;

use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use berth_testkit::{
    Compression, Format, Image, Index, Layer, REGISTRY_BIN, Registry, RegistryOpts, hex_of, image,
    prerequisites_met, registry, sha256_digest,
};
pub use daemon::{Berthd, Cri, TestEnv};
pub use proxy::ThrottleProxy;
pub use static_registry::StaticRegistry;

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout`
/// with `what` in the message.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like [`wait_for`] for a plain condition.
pub async fn wait_until<F: FnMut() -> bool>(what: &str, timeout: Duration, mut cond: F) {
    wait_for(what, timeout, || {
        let ok = cond();
        async move { ok.then_some(()) }
    })
    .await
}

/// Deterministic incompressible bytes (xorshift), fast even in debug builds.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// All paths below `dir` (recursively, not following symlinks), `dir` excluded.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}

/// Regular files below `dir` whose whole content is exactly `content`.
pub fn files_with_content(dir: &Path, content: &[u8]) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| {
            std::fs::symlink_metadata(p)
                .map(|m| m.is_file() && m.len() == content.len() as u64)
                .unwrap_or(false)
                && std::fs::read(p).map(|c| c == content).unwrap_or(false)
        })
        .collect()
}

/// Paths below `dir` that are the same inode as `target`.
pub fn hard_links_to(dir: &Path, target: &Path) -> Vec<PathBuf> {
    let t = std::fs::metadata(target).expect("stat target");
    walk(dir)
        .into_iter()
        .filter(|p| {
            std::fs::symlink_metadata(p)
                .map(|m| m.dev() == t.dev() && m.ino() == t.ino())
                .unwrap_or(false)
        })
        .collect()
}

/// Names of the entries of a directory (empty if it does not exist), sorted.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// One test's world, the fixture every berthd test starts from: a fresh
/// registry, a fresh temp root, a berthd on it and a CRI client. Fields drop in
/// order: berthd is killed before its root goes. [`world::World`] is this with
/// a pod network and an image pulled.
pub struct TestBed {
    pub cri: Cri,
    pub berthd: Berthd,
    /// What the test set up on the root before berthd started (a filesystem
    /// mounted on it): dropped once berthd is killed, before the root goes.
    held: Option<Box<dyn std::any::Any + Send + Sync>>,
    pub env: TestEnv,
    pub registry: Registry,
}

impl TestBed {
    /// `None` (after printing why) when the machine cannot run the tests.
    pub async fn start() -> Option<TestBed> {
        Self::start_with(RegistryOpts::default()).await
    }

    pub async fn start_with(opts: RegistryOpts<'_>) -> Option<TestBed> {
        if !prerequisites_met() {
            return None;
        }
        Some(Self::launch(opts, |_| {}).await)
    }

    /// Like [`TestBed::start`], with `configure` run on the root before berthd
    /// starts (a config of the test's own).
    pub async fn start_configured(configure: impl FnOnce(&TestEnv)) -> Option<TestBed> {
        if !prerequisites_met() {
            return None;
        }
        Some(Self::launch(RegistryOpts::default(), configure).await)
    }

    /// Like [`TestBed::start_configured`], keeping what `configure` returns
    /// (see [`TestBed::held`]) until berthd is gone.
    pub async fn start_holding<T: Send + Sync + 'static>(
        configure: impl FnOnce(&TestEnv) -> T,
    ) -> Option<TestBed> {
        let mut held = None;
        let mut bed = Self::start_configured(|env| held = Some(configure(env))).await?;
        bed.held = held.map(|h| Box::new(h) as Box<dyn std::any::Any + Send + Sync>);
        Some(bed)
    }

    /// What [`TestBed::start_holding`]'s `configure` returned.
    pub fn held<T: 'static>(&self) -> &T {
        self.held
            .as_ref()
            .and_then(|h| h.downcast_ref())
            .expect("start_holding kept a value of this type")
    }

    /// The one construction every fixture goes through, prerequisites checked
    /// by the caller: `configure` sees the root before berthd starts on it (a
    /// pod network, a config of its own).
    pub(crate) async fn launch(
        opts: RegistryOpts<'_>,
        configure: impl FnOnce(&TestEnv),
    ) -> TestBed {
        let registry = Registry::start(opts).await;
        let env = TestEnv::new();
        configure(&env);
        let berthd = Berthd::start(&env).await;
        let cri = berthd.cri().await;
        TestBed {
            cri,
            berthd,
            held: None,
            env,
            registry,
        }
    }

    /// Pushes `image` as `repo:tag` to this bed's registry; returns the reference.
    pub async fn push(&self, image: &Image, repo: &str, tag: &str) -> String {
        image.push(&self.registry, repo, tag).await;
        self.registry.reference(repo, tag)
    }

    /// Restarts berthd (SIGTERM, or nothing if it was killed) and reconnects.
    pub async fn restart_berthd(&mut self) {
        self.berthd.restart().await;
        self.cri = self.berthd.cri().await;
    }
}

/// Runs skopeo (policy checks off); panics with its stderr on failure.
pub fn skopeo(args: &[&str]) -> String {
    let out = std::process::Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a gRPC error has `code` and mentions each of `needles`
/// (case-insensitively).
pub fn assert_error(status: &tonic::Status, code: tonic::Code, needles: &[&str]) {
    assert_eq!(status.code(), code, "unexpected error code: {status:?}");
    assert_mentions(status, needles);
}

/// Asserts a gRPC error message mentions each of `needles` (case-insensitively).
pub fn assert_mentions(status: &tonic::Status, needles: &[&str]) {
    let message = status.message().to_lowercase();
    for needle in needles {
        assert!(
            message.contains(&needle.to_lowercase()),
            "error message should mention {needle:?}: {status:?}"
        );
    }
}

/// Asserts a gRPC error message mentions at least one of `needles`.
pub fn assert_mentions_any(status: &tonic::Status, needles: &[&str]) {
    let message = status.message().to_lowercase();
    assert!(
        needles.iter().any(|n| message.contains(&n.to_lowercase())),
        "error message should mention one of {needles:?}: {status:?}"
    );
}

/// The command line of process `pid`, arguments joined by spaces (empty when
/// it is gone).
pub fn cmdline(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .trim_end_matches('\0')
        .replace('\0', " ")
}

/// An UpdateRuntimeConfig request setting the node's pod CIDR to `cidr`.
pub fn pod_cidr_request(cidr: &str) -> k8s_cri::v1::UpdateRuntimeConfigRequest {
    use k8s_cri::v1 as cri;
    cri::UpdateRuntimeConfigRequest {
        runtime_config: Some(cri::RuntimeConfig {
            network_config: Some(cri::NetworkConfig {
                pod_cidr: cidr.to_string(),
            }),
        }),
    }
}

/// The anonymous resident memory of process `pid` (heap, stacks), in KiB; 0 when
/// it is gone. This is what a leak grows. The file-backed rest is the binary's
/// pages, and in a debug build every code path a load first reaches adds its
/// pages there for good, by hundreds of KiB and a different amount each run.
pub fn anon_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
