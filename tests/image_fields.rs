//! The image fields the kubelet shows users (issue 12 item 5): ContainerStatus's
//! `image` (as the user named it), `image_ref` (the repo digest) and `image_id`,
//! which `kubectl get pod -o yaml` prints as `image` and `imageID`; and
//! `pinned`, which keeps the kubelet's image GC off the sandbox image.

mod common;

use k8s_cri::v1 as cri;

use common::world::{self, World};

/// What the kubelet sends since 1.30: the resolved image (its id) and the image
/// as the pod spec wrote it.
fn image_spec(id: &str, user_specified: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: id.to_string(),
        user_specified_image: user_specified.to_string(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn container_status_names_the_image_as_the_user_did_with_its_digest_and_id() {
    let Some(w) = World::start().await else {
        return;
    };
    let pod = w.run_pod("image-fields").await;
    let tagged = w.cri.image(&w.image).await.expect("busybox pulled");
    let repo = w.image.rsplit_once(':').unwrap().0.to_string();
    let repo_digest = tagged.repo_digests.first().cloned().expect("a repo digest");
    assert!(
        repo_digest.starts_with(&format!("{repo}@sha256:")),
        "{repo_digest}"
    );

    // Pulled by tag, created by id with nothing user-specified: the first tag.
    let mut config = w.container_config("by-id", "exec sleep 1000");
    config.image = image_spec(&tagged.id, "");
    let id = w.create(&pod, config).await.expect("CreateContainer");
    let st = w.status(&id).await;
    assert_eq!(st.image.as_ref().unwrap().image, w.image);
    assert_eq!(st.image_ref, repo_digest);
    assert_eq!(st.image_id, tagged.id);

    // The same image under a second tag: what the user wrote wins over the first tag.
    let alias = format!("{repo}:alias");
    world::busybox_image()
        .push(&w.registry, "test/busybox", "alias")
        .await;
    w.cri.pull(&alias).await.expect("pull the alias");
    let mut config = w.container_config("user-specified", "exec sleep 1000");
    config.image = image_spec(&tagged.id, &alias);
    let id = w.create(&pod, config).await.expect("CreateContainer");
    let st = w.status(&id).await;
    let spec = st.image.as_ref().unwrap();
    assert_eq!(
        (spec.image.as_str(), spec.user_specified_image.as_str()),
        (alias.as_str(), alias.as_str())
    );
    assert_eq!(st.image_ref, repo_digest);
    assert_eq!(st.image_id, tagged.id);

    // Pulled by digest only: no tag to show, so the id; image_ref is that digest.
    let other = common::Image::oci()
        .layer(
            world::busybox_layer(&["sh", "sleep"], world::PASSWD, world::GROUP)
                .file("by-digest.marker", "x")
                .gzip(),
        )
        .cmd(&["sh"])
        .build();
    other.push(&w.registry, "test/bydigest", "1").await;
    let by_digest = w.registry.digest_reference("test/bydigest", other.digest());
    w.cri.pull(&by_digest).await.expect("pull by digest");
    let mut config = w.container_config("by-digest", "exec sleep 1000");
    config.image = image_spec(other.id(), "");
    let id = w.create(&pod, config).await.expect("CreateContainer");
    let st = w.status(&id).await;
    assert_eq!(st.image.as_ref().unwrap().image, other.id());
    assert_eq!(st.image_ref, by_digest);
    assert_eq!(st.image_id, other.id());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_image_is_pinned_and_others_are_not() {
    let Some(mut w) = World::start().await else {
        return;
    };
    let pause = w.registry.reference("test/pause", "3.10");
    // An image of its own, so the pause image is not busybox under another tag.
    let pause_image = common::Image::oci()
        .layer(
            world::busybox_layer(&["sleep"], world::PASSWD, world::GROUP)
                .file("pause.marker", "x")
                .gzip(),
        )
        .cmd(&["sleep", "1000000"])
        .build();
    pause_image.push(&w.registry, "test/pause", "3.10").await;
    let config = std::fs::read_to_string(&w.env.config).unwrap();
    std::fs::write(
        &w.env.config,
        format!("sandbox_image = {pause:?}\n{config}"),
    )
    .unwrap();
    w.berthd.restart().await;
    w.cri = w.berthd.cri().await;
    w.cri.pull(&pause).await.expect("pull the sandbox image");

    assert!(w.cri.image(&pause).await.expect("pause pulled").pinned);
    assert!(!w.cri.image(&w.image).await.expect("busybox").pinned);
    let listed: Vec<(String, bool)> = w
        .cri
        .list_images()
        .await
        .into_iter()
        .map(|i| (i.id, i.pinned))
        .collect();
    assert!(
        listed.contains(&(pause_image.id().to_string(), true)),
        "{listed:?}"
    );
    assert_eq!(
        listed.iter().filter(|(_, pinned)| *pinned).count(),
        1,
        "{listed:?}"
    );
}
