//! The pull floor: manifest and config, then every layer downloaded at once,
//! each gunzipped and untarred as it streams into a directory of its own, with
//! and without a final syncfs. No content store, no digest check, no metadata.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;

use super::super::Result;
use berth_testkit::Registry;

/// The pull floor for `repo:tag`: manifest, config, then every layer at once,
/// each gunzipped and untarred into `dest/<n>` as it streams in; with `sync`, a
/// syncfs at the end. Returns the wall time.
pub async fn pull(
    registry: &Registry,
    repo: &str,
    tag: &str,
    dest: &Path,
    sync: bool,
) -> Result<Duration> {
    let http = &reqwest::Client::new();
    let t = Instant::now();
    let manifest = http
        .get(format!("{}/v2/{repo}/manifests/{tag}", registry.url()))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("manifest: {e}"))?
        .bytes()
        .await
        .map_err(|e| format!("manifest: {e}"))?;
    let manifest: Value =
        serde_json::from_slice(&manifest).map_err(|e| format!("manifest: {e}"))?;
    let blob_url = |d: &Value| {
        format!(
            "{}/v2/{repo}/blobs/{}",
            registry.url(),
            d.as_str().unwrap_or("")
        )
    };
    http.get(blob_url(&manifest["config"]["digest"]))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("config: {e}"))?
        .bytes()
        .await
        .map_err(|e| format!("config: {e}"))?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let downloads = layers.iter().enumerate().map(|(n, layer)| {
        let url = blob_url(&layer["digest"]);
        let dir = dest.join(n.to_string());
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
            let unpack = std::thread::spawn(move || unpack_stream(rx, &dir));
            let response = http
                .get(&url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| format!("{url}: {e}"))?;
            let mut body = response.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| format!("{url}: {e}"))?;
                if tx.send(chunk).await.is_err() {
                    break; // the unpacker failed; its error follows
                }
            }
            drop(tx);
            tokio::task::spawn_blocking(move || unpack.join())
                .await
                .map_err(|e| e.to_string())?
                .unwrap_or_else(|_| Err("unpack thread panicked".into()))
        }
    });
    futures::future::try_join_all(downloads).await?;
    if sync {
        let dir = std::fs::File::open(dest).map_err(|e| e.to_string())?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
        tokio::task::spawn_blocking(move || {
            let _keep = dir;
            unsafe { libc::syncfs(fd) }
        })
        .await
        .map_err(|e| e.to_string())?;
    }
    Ok(t.elapsed())
}

/// gunzip + untar of a layer arriving in chunks.
fn unpack_stream(rx: tokio::sync::mpsc::Receiver<Bytes>, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let reader = ChunkReader {
        rx,
        chunk: Bytes::new(),
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    archive.set_preserve_permissions(true);
    archive
        .unpack(dir)
        .map_err(|e| format!("untar into {}: {e}", dir.display()))
}

struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.chunk = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}
