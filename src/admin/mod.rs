//! berth's admin API (proto/berth/admin/v1): what the `berth` CLI needs beyond CRI.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::image::{Credentials, ImageService, PullProgress};

#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("berth.admin.v1");
}

use proto::admin_server::Admin;

/// How often a pull's progress is sent to the client.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

pub struct AdminService {
    images: Arc<ImageService>,
}

impl AdminService {
    pub fn new(images: Arc<ImageService>) -> Self {
        AdminService { images }
    }
}

fn progress_message(progress: &PullProgress, reference: &str) -> proto::PullProgress {
    proto::PullProgress {
        layers: progress
            .snapshot()
            .into_iter()
            .map(|l| proto::LayerProgress {
                digest: l.digest,
                size: l.size,
                downloaded: l.downloaded,
                state: l.phase.as_str().to_string(),
            })
            .collect(),
        image_id: String::new(),
        reference: reference.to_string(),
    }
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<proto::PullProgress, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for AdminService {
    type PullImageStream = ProgressStream;

    async fn pull_image(
        &self,
        request: Request<proto::PullImageRequest>,
    ) -> Result<Response<Self::PullImageStream>, Status> {
        let req = request.into_inner();
        let credentials = match req.credentials.split_once(':') {
            Some((user, pass)) => Some(Credentials {
                username: user.to_string(),
                password: pass.to_string(),
                ..Default::default()
            }),
            None if req.credentials.is_empty() => None,
            None => {
                return Err(Status::invalid_argument(
                    "credentials must be \"user:password\"",
                ));
            }
        };
        let progress = Arc::new(PullProgress::default());
        let (tx, rx) = mpsc::channel(16);
        let images = self.images.clone();
        let reference = req.reference.clone();
        tokio::spawn(async move {
            let pull = images.pull(&reference, credentials, progress.clone());
            tokio::pin!(pull);
            let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
            let result = loop {
                tokio::select! {
                    result = &mut pull => break result,
                    _ = ticker.tick() => {
                        if tx.send(Ok(progress_message(&progress, &reference))).await.is_err() {
                            // The client went away; the pull goes on so its work is kept.
                        }
                    }
                }
            };
            let last = match result {
                Ok(image) => {
                    let mut msg = progress_message(&progress, &reference);
                    msg.image_id = image.id;
                    Ok(msg)
                }
                Err(e) => Err(Status::from(
                    e.within(&format!("pulling image {reference:?}")),
                )),
            };
            let _ = tx.send(last).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn import_image(
        &self,
        request: Request<proto::ImportImageRequest>,
    ) -> Result<Response<proto::ImportImageResponse>, Status> {
        let path = PathBuf::from(request.into_inner().path);
        if !path.is_absolute() {
            return Err(Status::invalid_argument(format!(
                "path {} must be absolute",
                path.display()
            )));
        }
        let images = self
            .images
            .import(&path)
            .await
            .map_err(|e| e.within(&format!("importing {}", path.display())))?;
        Ok(Response::new(proto::ImportImageResponse {
            images: images
                .into_iter()
                .map(|i| proto::ImportedImage {
                    id: i.id,
                    repo_tags: i.repo_tags,
                })
                .collect(),
        }))
    }

    async fn disk_usage(
        &self,
        _request: Request<proto::DiskUsageRequest>,
    ) -> Result<Response<proto::DiskUsageResponse>, Status> {
        let images = self.images.clone();
        let usage = tokio::task::spawn_blocking(move || images.disk_usage())
            .await
            .map_err(crate::error::Error::from)?;
        Ok(Response::new(usage))
    }
}

impl ImageService {
    /// Space by image, snapshots and content, for `berth du`.
    fn disk_usage(&self) -> proto::DiskUsageResponse {
        let snapshots = self.snapshot_records();
        let images = self.list();
        let per_snapshot: std::collections::HashMap<String, u64> = snapshots
            .iter()
            .map(|s| (s.chain_id.clone(), self.snapshot_store().usage_of(s.id).0))
            .collect();
        let image_usage = images
            .iter()
            .map(|image| {
                let unique = image
                    .chain_ids
                    .iter()
                    .filter(|c| {
                        !images
                            .iter()
                            .any(|o| o.id != image.id && o.chain_ids.contains(c))
                    })
                    .filter_map(|c| per_snapshot.get(c))
                    .sum();
                proto::ImageUsage {
                    id: image.id.clone(),
                    repo_tags: image.repo_tags.clone(),
                    size: image.size,
                    unique_snapshot_bytes: unique,
                }
            })
            .collect();
        let (content_bytes, content_blobs) = self.content_store().usage();
        let (ingest_bytes, _) = self.content_store().ingest_usage();
        let (snapshot_bytes, snapshot_inodes) = self.snapshot_store().usage();
        proto::DiskUsageResponse {
            images: image_usage,
            content_bytes,
            content_blobs,
            snapshot_bytes,
            snapshot_inodes,
            snapshots: snapshots.len() as u64,
            ingest_bytes,
        }
    }
}
