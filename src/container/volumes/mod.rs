//! A container's volumes that berthd makes itself, as opposed to the kubelet's host
//! paths: the volumes its image declares ([`image_declared`]) and images mounted as
//! volumes ([`image_volume`]). CreateContainer calls [`ContainerService::hold_image_volumes`]
//! then [`ContainerService::prepare_volumes`]; removing the container's files calls
//! [`ContainerService::release_volumes`]. Image volumes are mounted in the
//! container's bundle (state); image-declared volumes hold data, possibly much, so
//! they live on the root's disk rather than the state's tmpfs, in
//! `<root>/containers/<id>/volumes/<n>`, and go with the container.

mod copy_up;
mod image_declared;
mod image_volume;

use std::path::{Path, PathBuf};

use super::service::ContainerService;
use crate::domain::config::ContainerConfig;
use crate::error::{Error, Result};
use crate::store::{ContainerRecord, ImageRecord};

/// Where a container's image-declared volumes live, in its directory under the root.
const DECLARED_DIR: &str = "volumes";

/// An image volume to mount: the CRI mount's index, and the image it names.
pub(super) struct HeldImage {
    index: usize,
    image: ImageRecord,
}

impl ContainerService {
    /// Resolves the images of the container's image volumes and holds them against
    /// removal; the record lists them, so a restart holds them again. A missing
    /// image is NotFound naming the mount.
    pub(super) fn hold_image_volumes(
        &self,
        record: &mut ContainerRecord,
    ) -> Result<Vec<HeldImage>> {
        let mut held = Vec::new();
        for (index, mount) in record.config.mounts.iter().enumerate() {
            if mount.image.is_empty() {
                continue;
            }
            let image = self
                .images
                .hold_for_volume(&mount.image, &record.id)
                .map_err(|e| e.within(&format!("mounts[{index}].image.image")))?
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "mounts[{index}].image.image: image {:?} of the image volume at {} \
                         not found; pull it before creating the container",
                        mount.image, mount.container_path
                    ))
                })?;
            record.image_volumes.push(image.id.clone());
            held.push(HeldImage { index, image });
        }
        Ok(held)
    }

    /// Mounts the held image volumes and makes the image-declared ones (unless the
    /// config turns them off), off the executor. Returns the config the OCI spec is
    /// built from: the CRI config with the image volumes' host paths filled in and a
    /// mount per image-declared volume added.
    pub(super) async fn prepare_volumes(
        &self,
        record: &ContainerRecord,
        declared: &[String],
        image_lowers: Vec<PathBuf>,
        held: Vec<HeldImage>,
    ) -> Result<ContainerConfig> {
        let mut config = record.config.clone();
        let declared = if self.config.ignore_image_defined_volumes {
            Vec::new()
        } else {
            image_declared::paths(declared, &config.mounts)?
        };
        let mut volumes = Vec::new();
        for h in held {
            let lowers = self.images.lower_dirs(&h.image)?;
            volumes.push((h.index, lowers));
        }
        let bundle = record.bundle.clone();
        let declared_dir = self.data_dir(&record.id).join(DECLARED_DIR);
        let mounts = tokio::task::spawn_blocking(move || -> Result<_> {
            let mut host_paths = Vec::new();
            for (index, lowers) in volumes {
                let target = image_volume::target(&bundle, index);
                image_volume::mount(&bundle, &target, &lowers, &format!("mounts[{index}].image"))?;
                host_paths.push((index, target));
            }
            let added = image_declared::prepare(&declared_dir, &image_lowers, &declared)?;
            Ok((host_paths, added))
        })
        .await??;
        let (host_paths, added) = mounts;
        for (index, target) in host_paths {
            config.mounts[index].host_path = target.display().to_string();
        }
        config.mounts.extend(added);
        Ok(config)
    }

    /// Unmounts the container's image volumes (before its bundle is removed), lets
    /// go of their images, and removes its image-declared volumes.
    pub(super) async fn release_volumes(&self, id: &str, bundle: &Path) {
        image_volume::unmount_all(bundle);
        self.images.release_volume_holds(id);
        let dir = self.data_dir(id);
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        match removed {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Ok(Err(e)) => {
                tracing::warn!(container_id = id, error = %e, "removing the image-declared volumes");
            }
            Err(e) => {
                tracing::warn!(container_id = id, error = %e, "removing the image-declared volumes")
            }
        }
    }

    /// The container's directory under the root (0700, as every one there).
    fn data_dir(&self, id: &str) -> PathBuf {
        self.config.root.join("containers").join(id)
    }
}
