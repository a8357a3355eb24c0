//! Pulling: resolve the reference, fetch manifest and config, then for every layer
//! at once (up to `max_concurrent_downloads`), download it into the content store,
//! verify it and unpack it into its snapshot; finally record the image.
//!
//! Imports share everything after the top manifest: only the blob source differs.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;

use super::archive::Archive;
use super::oci::{self, Parsed};
use super::progress::{LayerPhase, LayerProgress, PullProgress};
use super::reference::Reference;
use super::registry::{Credentials, RegistryClient, RegistryError};
use super::{ImageService, hosts, now_nanos};
use crate::content::{ContentStore, sha256_digest};
use crate::error::{Error, Result};
use crate::snapshot::SnapshotStore;
use crate::snapshot::apply::{ApplyError, Compression, apply_layer};
use crate::store::{ContentRecord, Descriptor, ImageRecord, LeaseRecord, SnapshotRecord};

/// Where blobs come from.
pub(super) enum Source {
    Registry(RegistryClient),
    Archive(Arc<Archive>),
}

/// A manifest or index as fetched, with the digest it was verified against.
pub(super) struct Fetched {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: String,
}

/// Attempts in a row that get no byte of a blob before the download gives up.
const FRUITLESS_ATTEMPTS: usize = 3;
/// Attempts at one blob in all, progress or not: a host that breaks off
/// every response after a few bytes must not keep a pull going for ever.
const MAX_DOWNLOAD_ATTEMPTS: usize = 16;
/// Pause before resuming a broken download, times the attempts in a row
/// without progress: long enough not to hammer a host that just failed.
const RESUME_PAUSE: Duration = Duration::from_millis(200);

/// Layer unpacks running at once, across all pulls. Each is decompression, hashing and
/// file creation on a blocking thread holding up to ~130 MiB (the zstd window, buffers,
/// extension headers): a few at once keep the disk busy; more only add memory and threads.
pub(super) const MAX_CONCURRENT_UNPACKS: usize = 4;

/// Longest layer error passed on, in characters: entry names come from the layer (a PAX path
/// may be 1 MiB) and the message travels back to the kubelet in a gRPC header.
const MAX_LAYER_ERROR_CHARS: usize = 1024;

/// Layers an image may have. overlayfs stacks at most 500 lower layers (`OVL_MAX_STACK`), so
/// no image with more could run; refusing it up front spares unpacking it.
const MAX_IMAGE_LAYERS: usize = 500;

impl ImageService {
    /// Pulls `reference` and returns the recorded image.
    pub async fn pull(
        &self,
        reference: &str,
        credentials: Option<Credentials>,
        progress: Arc<PullProgress>,
    ) -> Result<ImageRecord> {
        let timer = crate::metrics::Timer::start();
        let span = tracing::info_span!("pull", image = %reference);
        let pulled = self
            .pull_unmeasured(reference, credentials, progress)
            .instrument(span)
            .await;
        crate::metrics::image_pull(pulled.is_ok(), timer.elapsed());
        // The layers' buffers are free now: hand the heap's free top back.
        crate::malloc::trim_soon();
        pulled
    }

    async fn pull_unmeasured(
        &self,
        reference: &str,
        credentials: Option<Credentials>,
        progress: Arc<PullProgress>,
    ) -> Result<ImageRecord> {
        let reference = Reference::parse(reference)?;
        let hosts = hosts::hosts_for(&self.config.config_path, &reference.registry)?;
        let client = RegistryClient::new(
            &reference.registry,
            hosts,
            &reference.repository,
            credentials,
            Duration::from_secs(self.config.stall_timeout_seconds),
        )?;
        let manifest = client
            .fetch_manifest(reference.object(), self.config.max_manifest_bytes)
            .await?;
        let top = Fetched {
            media_type: manifest.media_type,
            digest: manifest.digest,
            bytes: manifest.bytes,
        };
        tracing::debug!(reference = %reference, digest = %top.digest, "resolved");
        let source = Source::Registry(client);
        let image = self.install(&source, &top, &progress).await?;
        let names = Names::of(&reference, &top.digest);
        let image = self.record(image, &names, Some(&pull_lease(&top.digest)))?;
        tracing::info!(reference = %reference, image = %image.id, "pulled image");
        Ok(image)
    }

    /// Fetches what `top` refers to, unpacks it and returns the image record to be
    /// (names not yet set).
    pub(super) async fn install(
        &self,
        source: &Source,
        top: &Fetched,
        progress: &PullProgress,
    ) -> Result<ImageRecord> {
        let max_manifest = self.config.max_manifest_bytes;
        let _pin_top = self.pins.pin([top.digest.clone()]);
        // What this pull commits is leased until the image is recorded, so that a crash
        // or a failure does not throw away verified work the next attempt can reuse.
        let lease = pull_lease(&top.digest);
        self.write_lease(&lease, vec![top.digest.clone()], Vec::new())?;
        self.store_small_blob(&top.digest, &top.media_type, &top.bytes)
            .await?;
        let mut blobs = vec![top.digest.clone()];

        let manifest = match oci::parse_manifest(&top.bytes, &top.media_type, &top.digest)? {
            Parsed::Index(entries) => {
                let chosen = oci::choose_platform(&entries, &oci::host_platform(), &top.digest)?;
                let fetched = source.manifest(&chosen, max_manifest).await?;
                self.store_small_blob(&fetched.digest, &fetched.media_type, &fetched.bytes)
                    .await?;
                blobs.push(fetched.digest.clone());
                fetched
            }
            Parsed::Image { .. } => Fetched {
                bytes: top.bytes.clone(),
                media_type: top.media_type.clone(),
                digest: top.digest.clone(),
            },
        };
        let _pin_manifest = self.pins.pin([manifest.digest.clone()]);
        let Parsed::Image { config, layers } =
            oci::parse_manifest(&manifest.bytes, &manifest.media_type, &manifest.digest)?
        else {
            return Err(Error::InvalidArgument(format!(
                "index {} lists another index instead of an image manifest",
                top.digest
            )));
        };

        if layers.len() > MAX_IMAGE_LAYERS {
            return Err(Error::InvalidArgument(format!(
                "manifest {} lists {} layers, over the limit of {MAX_IMAGE_LAYERS} \
                 (what overlayfs can stack)",
                manifest.digest,
                layers.len()
            )));
        }
        if config.size > self.config.max_config_bytes {
            return Err(Error::InvalidArgument(format!(
                "image config {} is {} bytes, over the limit of {} (registry.max_config_bytes)",
                config.digest, config.size, self.config.max_config_bytes
            )));
        }
        let _pin_blobs = self.pins.pin(
            std::iter::once(config.digest.clone()).chain(layers.iter().map(|l| l.digest.clone())),
        );
        self.ensure_blob(source, &config, None).await?;
        let config_bytes = self
            .content
            .read(&config.digest, self.config.max_config_bytes)?;
        let image_config = oci::parse_config(&config_bytes, &config.digest)?;
        let diff_ids = image_config.rootfs.diff_ids;
        if diff_ids.len() != layers.len() {
            return Err(Error::InvalidArgument(format!(
                "image config {} lists {} layers but manifest {} has {}",
                config.digest,
                diff_ids.len(),
                manifest.digest,
                layers.len()
            )));
        }
        let chain_ids = oci::chain_ids(&diff_ids);
        let _pin_snapshots = self.pins.pin(chain_ids.iter().cloned());
        let mut leased = blobs.clone();
        leased.push(manifest.digest.clone());
        leased.push(config.digest.clone());
        leased.extend(layers.iter().map(|l| l.digest.clone()));
        self.write_lease(&lease, leased, chain_ids.clone())?;

        let trackers: Vec<Arc<LayerProgress>> = layers
            .iter()
            .map(|l| progress.add_layer(&l.digest, l.size))
            .collect();
        let downloads = Semaphore::new(self.config.max_concurrent_downloads);
        let tasks = layers.iter().enumerate().map(|(i, layer)| {
            let parent = i.checked_sub(1).map(|p| chain_ids[p].clone());
            let (diff_id, chain_id, tracker) = (&diff_ids[i], &chain_ids[i], &trackers[i]);
            let downloads = &downloads;
            async move {
                if self.has_snapshot(chain_id) && self.content.exists(&layer.digest) {
                    tracker.set_phase(LayerPhase::Exists);
                    return Ok(());
                }
                {
                    let _permit = downloads
                        .acquire()
                        .await
                        .map_err(|_| Error::Internal("download limiter closed".into()))?;
                    let span =
                        tracing::info_span!("download", digest = %layer.digest, size = layer.size);
                    self.ensure_blob(source, layer, Some(tracker))
                        .instrument(span)
                        .await?;
                }
                let span =
                    tracing::info_span!("unpack", digest = %layer.digest, chain_id = %chain_id);
                self.ensure_snapshot(layer, diff_id, chain_id, parent, tracker)
                    .instrument(span)
                    .await
            }
        });
        futures::future::try_join_all(tasks).await?;

        blobs.push(config.digest.clone());
        blobs.extend(layers.iter().map(|l| l.digest.clone()));
        blobs.sort();
        blobs.dedup();
        let size = blobs_size(top, &manifest, &config, &layers);
        Ok(ImageRecord {
            id: config.digest.clone(),
            repo_tags: Vec::new(),
            repo_digests: Vec::new(),
            manifest: Descriptor {
                media_type: manifest.media_type.clone(),
                digest: manifest.digest.clone(),
                size: manifest.bytes.len() as u64,
            },
            config,
            layers,
            chain_ids,
            blobs,
            size,
            user: image_config.config.and_then(|c| c.user).unwrap_or_default(),
            pinned: false,
            created_at: now_nanos(),
        })
    }

    /// Records `image` under `names`, merging with an earlier record of the same image
    /// and moving tags away from images that held them before; the pull's lease, if
    /// any, ends in the same transaction.
    pub(super) fn record(
        &self,
        mut image: ImageRecord,
        names: &Names,
        lease: Option<&str>,
    ) -> Result<ImageRecord> {
        let mut images = self.write_images();
        if let Some(existing) = images.get(&image.id) {
            image.repo_tags = existing.repo_tags.clone();
            image.repo_digests = existing.repo_digests.clone();
            image.created_at = existing.created_at;
            image.pinned = existing.pinned;
        }
        for tag in &names.tags {
            if !image.repo_tags.contains(tag) {
                image.repo_tags.push(tag.clone());
            }
        }
        for digest in &names.digests {
            if !image.repo_digests.contains(digest) {
                image.repo_digests.push(digest.clone());
            }
        }
        let untagged: Vec<ImageRecord> = images
            .values()
            .filter(|other| other.id != image.id)
            .filter(|other| other.repo_tags.iter().any(|t| names.tags.contains(t)))
            .map(|other| {
                let mut other = other.clone();
                other.repo_tags.retain(|t| !names.tags.contains(t));
                other
            })
            .collect();
        self.store.write(|tx| {
            tx.put(&image)?;
            untagged.iter().try_for_each(|o| tx.put(o))?;
            match lease {
                Some(id) => tx.delete::<LeaseRecord>(id),
                None => Ok(()),
            }
        })?;
        for other in untagged {
            images.insert(other.id.clone(), other);
        }
        images.insert(image.id.clone(), image.clone());
        Ok(image)
    }

    async fn store_small_blob(&self, digest: &str, media_type: &str, bytes: &Bytes) -> Result<()> {
        let _guard = self.locks.lock(digest).await;
        if self.content.exists(digest) {
            return Ok(());
        }
        // Off the executor: the commit fsyncs.
        let (content, owned, blob) = (self.content.clone(), digest.to_string(), bytes.clone());
        tokio::task::spawn_blocking(move || content.write_blob(&owned, &blob)).await??;
        self.record_content(digest, bytes.len() as u64, media_type)
    }

    fn record_content(&self, digest: &str, size: u64, media_type: &str) -> Result<()> {
        let record = ContentRecord {
            digest: digest.to_string(),
            size,
            media_type: media_type.to_string(),
            committed_at: now_nanos(),
        };
        self.store.write(|tx| tx.put(&record))
    }

    /// Makes sure the blob is in the content store, fetching it once however many
    /// pulls want it at the same time.
    async fn ensure_blob(
        &self,
        source: &Source,
        desc: &Descriptor,
        tracker: Option<&LayerProgress>,
    ) -> Result<()> {
        let _guard = self.locks.lock(&desc.digest).await;
        if self.content.exists(&desc.digest) {
            if let Some(t) = tracker {
                t.set_downloaded(desc.size);
            }
            return Ok(());
        }
        if let Some(t) = tracker {
            t.set_phase(LayerPhase::Downloading);
        }
        match source {
            Source::Registry(client) => self.download(client, desc, tracker).await?,
            Source::Archive(archive) => {
                copy_from_archive(archive.clone(), self.content.clone(), desc.clone()).await?;
                if let Some(t) = tracker {
                    t.set_downloaded(desc.size);
                }
            }
        }
        self.record_content(&desc.digest, desc.size, &desc.media_type)
    }

    /// Downloads a blob, resuming from what is already in ingest when the
    /// connection breaks or stalls (the resumed request goes to the next host
    /// if there is one: see `RegistryClient::fetch_blob`).
    async fn download(
        &self,
        client: &RegistryClient,
        desc: &Descriptor,
        tracker: Option<&LayerProgress>,
    ) -> Result<()> {
        let mut fruitless = 0;
        let mut attempts = 1;
        loop {
            let before = self.content.ingest_len(&desc.digest);
            let error = match download_once(&self.content, client, desc, tracker).await {
                Err(error @ Error::Interrupted(_)) => error,
                other => return other,
            };
            // An attempt that got bytes in is progress: only attempts that got
            // nothing count against FRUITLESS_ATTEMPTS.
            if self.content.ingest_len(&desc.digest) > before {
                fruitless = 0;
            } else {
                fruitless += 1;
            }
            if fruitless >= FRUITLESS_ATTEMPTS || attempts >= MAX_DOWNLOAD_ATTEMPTS {
                return Err(error);
            }
            tracing::warn!(digest = %desc.digest, %error, attempts, "download broke off; resuming");
            tokio::time::sleep(RESUME_PAUSE * fruitless.max(1) as u32).await;
            attempts += 1;
        }
    }

    /// Unpacks a downloaded layer into its snapshot, once per chain ID.
    async fn ensure_snapshot(
        &self,
        layer: &Descriptor,
        diff_id: &str,
        chain_id: &str,
        parent: Option<String>,
        tracker: &LayerProgress,
    ) -> Result<()> {
        let _guard = self.locks.lock(chain_id).await;
        if self.has_snapshot(chain_id) {
            tracker.set_phase(LayerPhase::Done);
            return Ok(());
        }
        // A manifest may list one blob many times, each a layer of its own: those unpack
        // one after the other, not all at once on the blocking pool.
        let _same_layer = self.locks.lock(&format!("unpack {diff_id}")).await;
        let _permit = self
            .unpacks
            .acquire()
            .await
            .map_err(|_| Error::Internal("unpack limiter closed".into()))?;
        tracker.set_phase(LayerPhase::Unpacking);
        let (content, snapshots) = (self.content.clone(), self.snapshots.clone());
        let (store, index) = (self.store.clone(), self.snapshot_index.clone());
        let (layer, diff_id, chain_id) = (layer.clone(), diff_id.to_string(), chain_id.to_string());
        // Unpacked and recorded in one blocking task, which runs to its end even if
        // the pull is cancelled meanwhile: the layer is then recorded (the pull's
        // lease keeps it for the next attempt) rather than a directory without a
        // record.
        tokio::task::spawn_blocking(move || {
            let timer = crate::metrics::Timer::start();
            let (id, size) = unpack(&content, &snapshots, &layer, &diff_id)?;
            crate::metrics::layer_unpack(timer.elapsed());
            let (disk_bytes, inodes) = snapshots.usage_of(id);
            let record = SnapshotRecord {
                chain_id,
                id,
                parent,
                diff_id,
                size,
                disk_bytes,
                inodes,
                created_at: now_nanos(),
            };
            // Under the index's lock: after a cancellation freed the chain's key
            // lock, another pull may have unpacked the same layer meanwhile; the
            // first recorded stays, the other goes.
            let mut index = index.lock().unwrap_or_else(|e| e.into_inner());
            if index.contains_key(&record.chain_id) {
                return snapshots.remove(id);
            }
            // A crash before this commit leaves a directory without a record, which
            // recovery deletes; the next pull unpacks the layer again.
            store.write(|tx| tx.put(&record))?;
            index.insert(record.chain_id.clone(), record);
            Ok::<_, Error>(())
        })
        .await??;
        tracker.set_phase(LayerPhase::Done);
        Ok(())
    }
}

impl Source {
    /// Fetches a manifest named by a descriptor and checks it against it.
    async fn manifest(&self, desc: &Descriptor, limit: u64) -> Result<Fetched> {
        if desc.size > limit {
            return Err(Error::InvalidArgument(format!(
                "manifest {} is {} bytes, over the limit of {limit} (registry.max_manifest_bytes)",
                desc.digest, desc.size
            )));
        }
        let bytes = match self {
            Source::Registry(client) => client.fetch_manifest(&desc.digest, limit).await?.bytes,
            Source::Archive(archive) => read_archive_blob(archive, &desc.digest, limit)?,
        };
        let digest = sha256_digest(&bytes);
        if digest != desc.digest || bytes.len() as u64 != desc.size {
            return Err(Error::DataLoss(format!(
                "manifest {} failed verification: got {} bytes with digest {digest}",
                desc.digest,
                bytes.len()
            )));
        }
        Ok(Fetched {
            bytes,
            media_type: desc.media_type.clone(),
            digest,
        })
    }
}

/// The lease of a pull, named by what it pulls so that a retry takes over the lease
/// of the attempt that failed.
pub(super) fn pull_lease(top_digest: &str) -> String {
    format!("pull:{top_digest}")
}

/// The names an image is recorded under.
#[derive(Debug, Default)]
pub(super) struct Names {
    pub tags: Vec<String>,
    pub digests: Vec<String>,
}

impl Names {
    /// A pull of `reference` that resolved to the top-level manifest `digest`.
    pub fn of(reference: &Reference, digest: &str) -> Names {
        let name = reference.name();
        Names {
            tags: reference
                .tag
                .iter()
                .map(|t| format!("{name}:{t}"))
                .collect(),
            digests: vec![format!("{name}@{digest}")],
        }
    }
}

pub(super) fn read_archive_blob(archive: &Archive, digest: &str, limit: u64) -> Result<Bytes> {
    let (_, reader) = archive.blob(digest)?;
    let mut bytes = Vec::new();
    reader
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| archive_read_error(digest, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::InvalidArgument(format!(
            "manifest {digest} is over the limit of {limit} bytes"
        )));
    }
    Ok(Bytes::from(bytes))
}

/// Compressed size of everything the image refers to.
fn blobs_size(
    top: &Fetched,
    manifest: &Fetched,
    config: &Descriptor,
    layers: &[Descriptor],
) -> u64 {
    let mut manifests = top.bytes.len() as u64;
    if manifest.digest != top.digest {
        manifests += manifest.bytes.len() as u64;
    }
    manifests + config.size + layers.iter().map(|l| l.size).sum::<u64>()
}

enum Chunk {
    Data(Bytes),
    End,
}

/// One download attempt: resume the ingest where it stopped, stream the rest into it
/// on a blocking thread (hashing and writing stay off the executor), verify, commit.
async fn download_once(
    content: &Arc<ContentStore>,
    client: &RegistryClient,
    desc: &Descriptor,
    tracker: Option<&LayerProgress>,
) -> Result<()> {
    let (store, digest, size) = (content.clone(), desc.digest.clone(), desc.size);
    let mut ingest = tokio::task::spawn_blocking(move || store.ingest(&digest, size)).await??;
    if ingest.offset() == desc.size {
        // Everything arrived before a crash; only the commit is missing.
        return tokio::task::spawn_blocking(move || ingest.commit()).await?;
    }
    let response = match client.fetch_blob(&desc.digest, ingest.offset()).await {
        // The registry cannot serve the range: start over.
        Err(RegistryError::Http { status: 416, .. }) => {
            ingest.reset()?;
            client.fetch_blob(&desc.digest, 0).await?
        }
        other => other?,
    };
    if response.offset != ingest.offset() {
        ingest.reset()?;
    }
    if let Err(error) = check_declared_length(desc, response.offset, response.length) {
        // The source sends something else than this blob: start the next pull afresh.
        ingest.discard();
        return Err(error);
    }
    if ingest.offset() > 0 {
        tracing::info!(digest = %desc.digest, offset = ingest.offset(), "resuming download");
    }
    if let Some(t) = tracker {
        t.set_downloaded(ingest.offset());
    }

    let (tx, mut rx) = mpsc::channel::<Chunk>(16);
    let writer = tokio::task::spawn_blocking(move || -> Result<()> {
        while let Some(chunk) = rx.blocking_recv() {
            match chunk {
                Chunk::Data(bytes) => {
                    if let Err(e) = ingest.write(&bytes) {
                        ingest.discard();
                        return Err(e);
                    }
                }
                Chunk::End => return ingest.commit(),
            }
        }
        // The download stopped early: keep what was written for the next attempt.
        Err(Error::Cancelled("download interrupted".into()))
    });
    let mut stream = response.stream;
    let fed: Result<()> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            let len = chunk.len() as u64;
            if tx.send(Chunk::Data(chunk)).await.is_err() {
                return Ok(()); // the writer failed; its error is the one to report
            }
            crate::metrics::image_pull_bytes(len);
            if let Some(t) = tracker {
                t.add_downloaded(len);
            }
        }
        let _ = tx.send(Chunk::End).await;
        Ok(())
    }
    .await;
    drop(tx);
    let written = writer.await?;
    fed?;
    written
}

/// Refuses a response that declares more bytes than the descriptor leaves
/// from `offset`, before reading any of it. One that declares nothing (or
/// lies) is cut off at the descriptor's size as it is written
/// ([`crate::content::Ingest::write`]).
fn check_declared_length(desc: &Descriptor, offset: u64, length: Option<u64>) -> Result<()> {
    match length {
        Some(length) if offset.saturating_add(length) > desc.size => Err(Error::DataLoss(format!(
            "blob {}: the registry sends {length} bytes from offset {offset}, but its \
             descriptor's size is {} bytes; refused",
            desc.digest, desc.size
        ))),
        _ => Ok(()),
    }
}

async fn copy_from_archive(
    archive: Arc<Archive>,
    content: Arc<ContentStore>,
    desc: Descriptor,
) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        let (_, mut reader) = archive.blob(&desc.digest)?;
        let mut ingest = content.ingest(&desc.digest, desc.size)?;
        ingest.reset()?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| archive_read_error(&desc.digest, e))?;
            if n == 0 {
                break;
            }
            if let Err(e) = ingest.write(&buf[..n]) {
                ingest.discard();
                return Err(e);
            }
        }
        ingest.commit()
    })
    .await?
}

/// Unpacks a verified layer blob into a new snapshot, checking its diff ID.
fn unpack(
    content: &ContentStore,
    snapshots: &SnapshotStore,
    layer: &Descriptor,
    diff_id: &str,
) -> Result<(u64, u64)> {
    let file = content.open_blob(&layer.digest)?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let compression = match Compression::from_media_type(&layer.media_type) {
        Some(c) => c,
        None => Compression::detect(reader.fill_buf().map_err(|e| Error::Io {
            context: format!("reading layer {}", layer.digest),
            source: e,
        })?),
    };
    let staging = snapshots.stage()?;
    let applied = apply_layer(reader, compression, &staging.fs())
        .map_err(|e| layer_error(&layer.digest, e))?;
    if applied.dropped_xattrs > 0 {
        tracing::info!(
            layer = %layer.digest,
            dropped = applied.dropped_xattrs,
            "dropped extended attributes an image may not set (trusted.*, security.* labels)"
        );
    }
    if applied.diff_id != diff_id {
        return Err(Error::DataLoss(format!(
            "layer {} unpacks to diff ID {} but the image config says {diff_id}",
            layer.digest, applied.diff_id
        )));
    }
    let id = snapshots.commit(staging)?;
    Ok((id, applied.unpacked_bytes))
}

/// What went wrong applying a layer, as the layer module classifies it (the
/// layer's fault, or an I/O failure of the node such as a full disk), with the
/// layer named.
fn layer_error(digest: &str, e: ApplyError) -> Error {
    match Error::from(e) {
        Error::InvalidArgument(m) => {
            Error::InvalidArgument(bounded(format!("layer {digest}: {m}")))
        }
        Error::Io { context, source } => Error::Io {
            context: bounded(format!("layer {digest}: {context}")),
            source,
        },
        other => other.within(&format!("layer {digest}")),
    }
}

/// A failed read of an archive member: the node's I/O failure, or an archive
/// that is not what it says (truncated, corrupt).
fn archive_read_error(digest: &str, e: std::io::Error) -> Error {
    let context = format!("reading {digest} from the archive");
    if crate::error::is_node_failure(&e) {
        Error::Io { context, source: e }
    } else {
        Error::InvalidArgument(format!("{context}: {e}"))
    }
}

/// `message`, or its start and end if it is over [`MAX_LAYER_ERROR_CHARS`]: the start names
/// the layer, the end the file and the reason.
fn bounded(message: String) -> String {
    let chars = message.chars().count();
    if chars <= MAX_LAYER_ERROR_CHARS {
        return message;
    }
    let half = MAX_LAYER_ERROR_CHARS / 2;
    let head: String = message.chars().take(half).collect();
    let tail: String = message.chars().skip(chars - half).collect();
    format!("{head}[... {} characters ...]{tail}", chars - 2 * half)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_errors_are_bounded_but_keep_both_ends() {
        let short = "layer sha256:1: entry \"a\" refused".to_string();
        assert_eq!(bounded(short.clone()), short);
        let long = format!(
            "layer sha256:1: entry \"{}é/file\" refused: why",
            "d/".repeat(500_000)
        );
        let cut = bounded(long);
        assert!(
            cut.chars().count() < MAX_LAYER_ERROR_CHARS + 40,
            "{}",
            cut.len()
        );
        assert!(cut.starts_with("layer sha256:1: entry"), "{cut}");
        assert!(cut.ends_with("é/file\" refused: why"), "{cut}");
    }
}
