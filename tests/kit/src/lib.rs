//! What berth's integration tests (`tests/common`) and its benchmark
//! (`tests/bench`) share, so that neither keeps a copy of its own:
//!
//! - [`registry`]: a throwaway `docker-registry` (distribution v2.8) on loopback,
//!   its access log parsed so tests can count blob fetches;
//! - [`image`]: layers, images and indexes built in memory and pushed over the
//!   distribution API;
//! - [`cri`]: a gRPC channel to a CRI endpoint on a unix socket;
//! - [`prerequisites_met`]: whether this machine can run them at all.

pub mod cri;
pub mod image;
pub mod registry;

use std::path::Path;

pub use image::{Compression, Format, Image, Index, Layer};
pub use registry::{Registry, RegistryOpts};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// What the integration tests need beyond root: the registry, htpasswd for its
/// basic auth, skopeo for archives.
const REQUIRED_TOOLS: [&str; 3] = [REGISTRY_BIN, "/usr/bin/htpasswd", "/usr/bin/skopeo"];

/// Why this machine cannot run the integration tests, if it cannot: not root,
/// or a tool missing. `None` when it can.
pub fn missing_prerequisites() -> Option<String> {
    let mut missing = Vec::new();
    if unsafe { libc::geteuid() } != 0 {
        missing.push("must run as root".to_string());
    }
    for tool in REQUIRED_TOOLS {
        if !Path::new(tool).exists() {
            missing.push(format!("{tool} is not installed"));
        }
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// Whether this machine can run the integration tests. Prints why not.
/// Panics instead when running under CI (`CI` set), where the tests must
/// really run, so the suite can never pass by skipping.
pub fn prerequisites_met() -> bool {
    let Some(reason) = missing_prerequisites() else {
        return true;
    };
    if std::env::var_os("CI").is_some() {
        panic!("integration test prerequisites missing under CI: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
    false
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
