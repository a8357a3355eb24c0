//! CRI ImageService: PullImage, ListImages, ImageStatus, RemoveImage, ImageFsInfo.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use tonic::{Request, Response, Status};

use super::{now_nanos, span};
use crate::error::Error;
use crate::image::{Credentials, ImageService as Images, PullProgress, oci};
use crate::store::ImageRecord;

pub struct CriImageService {
    images: Arc<Images>,
}

impl CriImageService {
    pub fn new(images: Arc<Images>) -> Self {
        CriImageService { images }
    }
}

fn image_spec(req: Option<&cri::ImageSpec>, field: &str) -> Result<String, Error> {
    match req.map(|s| s.image.trim()) {
        Some(image) if !image.is_empty() => Ok(image.to_string()),
        _ => Err(Error::InvalidArgument(format!("{field} is empty"))),
    }
}

fn to_cri(image: &ImageRecord) -> cri::Image {
    let (uid, username) = oci::user_of(&image.user);
    cri::Image {
        id: image.id.clone(),
        repo_tags: image.repo_tags.clone(),
        repo_digests: image.repo_digests.clone(),
        size: image.size,
        uid: uid.map(|value| cri::Int64Value { value }),
        username,
        spec: Some(cri::ImageSpec {
            image: image.id.clone(),
            ..Default::default()
        }),
        pinned: image.pinned,
    }
}

/// Credentials from a CRI AuthConfig; an empty one means anonymous.
fn credentials(auth: Option<&cri::AuthConfig>) -> Result<Option<Credentials>, Error> {
    let Some(a) = auth else { return Ok(None) };
    Credentials::from_cri(
        &a.username,
        &a.password,
        &a.auth,
        &a.identity_token,
        &a.registry_token,
        &a.server_address,
    )
    .map_err(Error::from)
}

#[tonic::async_trait]
impl ImageService for CriImageService {
    async fn list_images(
        &self,
        request: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let filter = request
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let images = match filter {
            Some(spec) => self.images.get(&spec)?.into_iter().collect(),
            None => self.images.list(),
        };
        Ok(Response::new(cri::ListImagesResponse {
            images: images.iter().map(to_cri).collect(),
        }))
    }

    async fn image_status(
        &self,
        request: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        span::record(&request);
        let req = request.into_inner();
        let spec = image_spec(req.image.as_ref(), "image")?;
        let Some(image) = self.images.get(&spec)? else {
            // CRI: an unknown image is not an error, just no image.
            return Ok(Response::new(cri::ImageStatusResponse::default()));
        };
        let mut info = HashMap::new();
        if req.verbose {
            let config = self.images.config_document(&image).await;
            info.insert("info".to_string(), verbose_info(&image, config));
        }
        Ok(Response::new(cri::ImageStatusResponse {
            image: Some(to_cri(&image)),
            info,
        }))
    }

    async fn pull_image(
        &self,
        request: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        span::record(&request);
        let req = request.into_inner();
        let reference = image_spec(req.image.as_ref(), "image")?;
        let credentials = credentials(req.auth.as_ref())?;
        let image = self
            .images
            .pull(&reference, credentials, Arc::new(PullProgress::default()))
            .await
            .map_err(|e| e.within(&format!("pulling image {reference:?}")))?;
        Ok(Response::new(cri::PullImageResponse {
            image_ref: image.id,
        }))
    }

    async fn remove_image(
        &self,
        request: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        span::record(&request);
        let spec = image_spec(request.get_ref().image.as_ref(), "image")?;
        self.images.remove(&spec).await?;
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let usage = self.images.fs_usage().await?;
        let fs = |used_bytes, inodes_used| cri::FilesystemUsage {
            timestamp: now_nanos(),
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: usage.mountpoint.display().to_string(),
            }),
            used_bytes: Some(cri::UInt64Value { value: used_bytes }),
            inodes_used: Some(cri::UInt64Value { value: inodes_used }),
        };
        // Everything under the snapshots dir is the image filesystem, as containerd
        // reports it; the writable layers are also reported on their own as the
        // container filesystem. Its mountpoint is the same, which tells the kubelet
        // the two are not split.
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![fs(usage.used_bytes, usage.inodes_used)],
            container_filesystems: vec![fs(usage.writable_bytes, usage.writable_inodes)],
        }))
    }
}

/// The verbose `info` of ImageStatus: the image config and how it is stored.
fn verbose_info(image: &ImageRecord, config: serde_json::Value) -> String {
    serde_json::json!({
        "imageSpec": config,
        "manifestDigest": image.manifest.digest,
        "chainIDs": image.chain_ids,
        "snapshotter": "overlayfs",
    })
    .to_string()
}
