//! Air-gapped import: every image of an OCI image layout tar or a `docker save` tar,
//! through the same verify-and-unpack path as a pull.

use std::path::Path;
use std::sync::Arc;

use super::ImageService;
use super::archive::Archive;
use super::progress::PullProgress;
use super::pull::{Fetched, Names, Source, pull_lease, read_archive_blob};
use super::reference::Reference;
use crate::content::sha256_digest;
use crate::error::{Error, Result};
use crate::store::ImageRecord;

impl ImageService {
    pub async fn import(&self, path: &Path) -> Result<Vec<ImageRecord>> {
        let owned = path.to_path_buf();
        let archive = Arc::new(tokio::task::spawn_blocking(move || Archive::open(&owned)).await??);
        let entries = archive.images()?;
        if entries.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "archive {} holds no images",
                path.display()
            )));
        }
        let source = Source::Archive(archive.clone());
        let mut imported = Vec::new();
        for entry in entries {
            let bytes = read_archive_blob(
                &archive,
                &entry.target.digest,
                self.config.max_manifest_bytes,
            )?;
            let digest = sha256_digest(&bytes);
            if digest != entry.target.digest {
                return Err(Error::DataLoss(format!(
                    "archive {}: manifest {} has digest {digest}",
                    path.display(),
                    entry.target.digest
                )));
            }
            let top = Fetched {
                bytes,
                media_type: entry.target.media_type.clone(),
                digest,
            };
            let image = self
                .install(&source, &top, &PullProgress::default())
                .await?;
            let names = names_of(&entry.names, &top.digest);
            let image = self.record(image, &names, Some(&pull_lease(&top.digest)))?;
            tracing::info!(image = %image.id, tags = ?image.repo_tags, archive = %path.display(), "imported image");
            imported.push(image);
        }
        Ok(imported)
    }
}

/// Normalised tags and digests for the names an archive gives; names that are not
/// valid references are skipped with a warning rather than failing the import.
fn names_of(raw: &[String], digest: &str) -> Names {
    let mut names = Names::default();
    for name in raw {
        match Reference::parse(name) {
            Ok(reference) => {
                let of = Names::of(&reference, digest);
                names.tags.extend(of.tags);
                names.digests.extend(of.digests);
            }
            Err(e) => tracing::warn!(%name, error = %e, "ignoring an image name in the archive"),
        }
    }
    names.tags.dedup();
    names.digests.dedup();
    names
}
