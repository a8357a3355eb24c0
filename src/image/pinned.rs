//! Pinned images: the kubelet's image garbage collector never removes an image
//! that ImageStatus / ListImages report `pinned`. berth pins the configured
//! `sandbox_image` (as containerd pins its `pinned_images.sandbox`), so a node
//! that runs pods from it never has to pull it again mid-pod-start.

use super::ImageService;
use super::reference::Reference;
use crate::store::ImageRecord;

impl ImageService {
    /// Pins the images these references name (tags or digests, as configured);
    /// a reference that does not parse pins nothing. Decided when an image is
    /// read, so an image pulled or retagged later is pinned too.
    pub fn with_pinned(mut self, references: &[&str]) -> Self {
        self.pinned = references
            .iter()
            .filter(|r| !r.is_empty())
            .filter_map(|r| Reference::parse(r).ok())
            .map(|r| r.to_string())
            .collect();
        self
    }

    /// `image`, with `pinned` set when a pinned reference names it.
    pub(super) fn mark_pinned(&self, mut image: ImageRecord) -> ImageRecord {
        image.pinned = image.pinned || is_pinned(&image, &self.pinned);
        image
    }
}

/// Whether one of `pinned` (normalised references) is a tag or digest of `image`.
fn is_pinned(image: &ImageRecord, pinned: &[String]) -> bool {
    pinned
        .iter()
        .any(|p| image.repo_tags.contains(p) || image.repo_digests.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(tags: &[&str], digests: &[&str]) -> ImageRecord {
        ImageRecord {
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_pinned_tag_or_digest_pins_the_image_and_nothing_else() {
        let pinned = vec![
            "registry.k8s.io/pause:3.10".to_string(),
            "example.com/a@sha256:aa".to_string(),
        ];
        assert!(is_pinned(
            &image(&["registry.k8s.io/pause:3.10"], &[]),
            &pinned
        ));
        assert!(is_pinned(
            &image(&[], &["example.com/a@sha256:aa"]),
            &pinned
        ));
        assert!(!is_pinned(
            &image(&["registry.k8s.io/pause:3.9"], &[]),
            &pinned
        ));
        assert!(!is_pinned(
            &image(&["docker.io/library/busybox:1"], &[]),
            &[]
        ));
    }
}
