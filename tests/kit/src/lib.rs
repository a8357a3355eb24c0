//! What berth's integration tests (`tests/common`) and its benchmark
//! (`tests/bench`) share, so that neither keeps a copy of its own:
//!
//! - [`registry`]: a throwaway `docker-registry` (distribution v2.8) on loopback,
//!   its access log parsed so tests can count blob fetches;
//! - [`image`]: layers, images and indexes built in memory and pushed over the
//!   distribution API;
//! - [`cri`]: a gRPC channel to a CRI endpoint on a unix socket;
//! - [`daemon`]: the wait until a daemon just started serves;
//! - [`rng`]: the replayable generator of the randomised tests and the crash loop;
//! - [`prerequisites_met`]: whether this machine can run them at all.

pub mod cri;
pub mod daemon;
pub mod image;
pub mod registry;
pub mod rng;

use std::path::Path;

pub use image::{Compression, Format, Image, Index, Layer};
pub use registry::{Registry, RegistryOpts};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// What every integration test needs beyond root: the registry, htpasswd for
/// its basic auth, skopeo for archives.
pub const REGISTRY_TOOLS: [&str; 3] = [REGISTRY_BIN, "/usr/bin/htpasswd", "/usr/bin/skopeo"];

/// Why this machine cannot run tests that need `paths`, if it cannot: not
/// root, or a path missing. `None` when it can.
pub fn missing_prerequisites<S: AsRef<str>>(paths: impl IntoIterator<Item = S>) -> Option<String> {
    let mut missing = Vec::new();
    if unsafe { libc::geteuid() } != 0 {
        missing.push("must run as root".to_string());
    }
    for path in paths {
        let path = path.as_ref();
        if !Path::new(path).exists() {
            missing.push(format!("{path} is not installed"));
        }
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// Whether this machine can run tests that need root and `paths`. Prints why
/// not. Panics instead under CI (`CI` set), where the tests must really run,
/// so a suite can never pass by skipping.
pub fn prerequisites_met_for<S: AsRef<str>>(paths: impl IntoIterator<Item = S>) -> bool {
    let Some(reason) = missing_prerequisites(paths) else {
        return true;
    };
    if std::env::var_os("CI").is_some() {
        panic!("integration test prerequisites missing under CI: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
    false
}

/// Whether this machine can run the tests that need a registry and berthd.
pub fn prerequisites_met() -> bool {
    prerequisites_met_for(REGISTRY_TOOLS)
}

/// `hex` of `sha256:hex`.
pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// sha256 digest in `sha256:<hex>` form.
pub fn sha256_digest(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
