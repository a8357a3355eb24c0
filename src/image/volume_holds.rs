//! Images held by image volumes (CRI `Mount.image`): while a container has an image
//! mounted as a volume, RemoveImage refuses that image, naming the container, so
//! the kubelet's image GC (which asks and moves on) cannot pull the layers out from
//! under a live mount. Untagging is still allowed: the image stays.
//!
//! The holds live in memory; each container's record lists the image ids it holds,
//! and start-up puts them back before any CRI call is served.

use std::collections::{BTreeSet, HashMap};

use super::ImageService;
use crate::error::{Error, Result};
use crate::store::ImageRecord;

/// Image id -> ids of the containers whose volumes mount it.
pub(super) type VolumeHolds = std::sync::Mutex<HashMap<String, BTreeSet<String>>>;

impl ImageService {
    /// Finds the image `spec` names (id, digest or tag) and holds it for a volume
    /// of container `container_id`. `Ok(None)` when there is no such image.
    pub fn hold_for_volume(&self, spec: &str, container_id: &str) -> Result<Option<ImageRecord>> {
        let Some(image) = self.get(spec)? else {
            return Ok(None);
        };
        // Images, then holds: the order `remove` takes them in. Looked up again
        // under the lock, so a removal that won the race is seen.
        let images = self.read_images();
        if !images.contains_key(&image.id) {
            return Ok(None);
        }
        self.holds()
            .entry(image.id.clone())
            .or_default()
            .insert(container_id.to_string());
        Ok(Some(image))
    }

    /// Puts back the holds of a recorded container at start-up.
    pub fn restore_volume_holds(&self, container_id: &str, image_ids: &[String]) {
        let mut holds = self.holds();
        for id in image_ids {
            holds
                .entry(id.clone())
                .or_default()
                .insert(container_id.to_string());
        }
    }

    /// Drops every hold of container `container_id`.
    pub fn release_volume_holds(&self, container_id: &str) {
        self.holds().retain(|_, holders| {
            holders.remove(container_id);
            !holders.is_empty()
        });
    }

    /// FailedPrecondition naming a container when image `id` is held. Called with
    /// the images' write lock held.
    pub(super) fn check_not_held(&self, id: &str) -> Result<()> {
        match self.holds().get(id).and_then(|h| h.first()) {
            None => Ok(()),
            Some(container) => Err(Error::FailedPrecondition(format!(
                "image {id} is in use by an image volume of container {container}; \
                 remove the container first"
            ))),
        }
    }

    fn holds(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeSet<String>>> {
        self.volume_holds.lock().unwrap_or_else(|e| e.into_inner())
    }
}
