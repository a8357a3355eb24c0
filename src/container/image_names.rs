//! The image names ContainerStatus reports, which the kubelet shows users as a
//! pod's `image` and `imageID`: the image as the pod spec named it, its repo
//! digest and its id. Read from the image record at status time, as containerd
//! does, so a tag or digest recorded after the container was created shows.

use super::service::ContainerService;
use crate::store::{ContainerRecord, ImageRecord};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageNames {
    /// `image.image`: what the user wrote (the kubelet's `user_specified_image`),
    /// else the image's first tag, else what the kubelet sent when the image is
    /// gone, else the id.
    pub image: String,
    /// `image.user_specified_image`, echoed back.
    pub user_specified_image: String,
    /// `image_ref`: the first repo digest (`repo@sha256:<manifest>`), else the id.
    pub image_ref: String,
    /// `image_id`: the image id (its config digest).
    pub image_id: String,
}

impl ContainerService {
    pub fn image_names(&self, record: &ContainerRecord) -> ImageNames {
        let image = self.images.get(&record.image_id).ok().flatten();
        image_names(record, image.as_ref())
    }
}

/// `image` is the container's image record, `None` once the image is removed.
pub fn image_names(record: &ContainerRecord, image: Option<&ImageRecord>) -> ImageNames {
    let user_specified = &record.config.user_specified_image;
    let shown = if !user_specified.is_empty() {
        user_specified.clone()
    } else {
        match image {
            Some(i) => i.repo_tags.first().unwrap_or(&record.image_id).clone(),
            None if !record.image_name.is_empty() => record.image_name.clone(),
            None => record.image_id.clone(),
        }
    };
    let image_ref = image
        .and_then(|i| i.repo_digests.first())
        .unwrap_or(&record.image_id)
        .clone();
    ImageNames {
        image: shown,
        user_specified_image: user_specified.clone(),
        image_ref,
        image_id: record.image_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "sha256:1111";

    fn record(user_specified: &str) -> ContainerRecord {
        let mut r = ContainerRecord {
            image_id: ID.into(),
            image_name: ID.into(),
            ..Default::default()
        };
        r.config.user_specified_image = user_specified.into();
        r
    }

    fn image(tags: &[&str], digests: &[&str]) -> ImageRecord {
        ImageRecord {
            id: ID.into(),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_user_specified_image_wins_then_the_first_tag_then_the_id() {
        let tagged = image(&["r/a:1", "r/a:2"], &["r/a@sha256:m"]);
        let names = image_names(&record("a:1"), Some(&tagged));
        assert_eq!(
            names,
            ImageNames {
                image: "a:1".into(),
                user_specified_image: "a:1".into(),
                image_ref: "r/a@sha256:m".into(),
                image_id: ID.into(),
            }
        );
        assert_eq!(image_names(&record(""), Some(&tagged)).image, "r/a:1");
        let untagged = image(&[], &[]);
        let names = image_names(&record(""), Some(&untagged));
        assert_eq!((names.image.as_str(), names.image_ref.as_str()), (ID, ID));
    }

    #[test]
    fn a_removed_image_shows_what_the_kubelet_sent() {
        let mut r = record("");
        r.image_name = "r/a:1".into();
        let names = image_names(&r, None);
        assert_eq!(names.image, "r/a:1");
        assert_eq!(names.image_ref, ID);
    }
}
