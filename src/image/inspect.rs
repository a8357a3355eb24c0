//! What verbose ImageStatus shows of an image beyond its record: its config
//! document, read from the content store.

use super::ImageService;
use crate::store::ImageRecord;

impl ImageService {
    /// The image's config as stored; `Null` when it cannot be read (verbose
    /// status is best effort). Read off the executor, bounded by the size a
    /// pull accepts for a config (`registry.max_config_bytes`).
    pub async fn config_document(&self, image: &ImageRecord) -> serde_json::Value {
        let content = self.content.clone();
        let digest = image.config.digest.clone();
        let limit = self.config.max_config_bytes;
        tokio::task::spawn_blocking(move || content.read(&digest, limit))
            .await
            .ok()
            .and_then(|read| read.ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(serde_json::Value::Null)
    }
}
