//! A container of a pod with its own user namespace joins it: its rootfs reads
//! the image's layers through the pod's id-mapped view, each volume (host_path
//! mount) is bound through an id-mapped view of its own (so what the host's root
//! owns is the container root's), and its bundle is the pod root's to traverse.
//! The kernel work is in `crate::userns`; this only says when.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use super::service::ContainerService;
use crate::domain::config::ContainerConfig;
use crate::error::{Error, Result};
use crate::image::ContainerRootfs;
use crate::sandbox::Sandbox;
use crate::userns::{PodUserns, UserNamespace, pod};

const FIELD: &str = "linux.security_context.namespace_options.userns_options";

/// The pod's user namespace a container joins, and where it is pinned.
pub(super) struct Joined {
    pub path: PathBuf,
    pub userns: UserNamespace,
}

impl ContainerService {
    /// The pod's user namespace for a new container; a container asking for
    /// another one (or for none in a pod that has one) is refused, as every
    /// container shares the pod's network namespace, which that one owns.
    pub(super) fn joined_userns(
        &self,
        sandbox: &Sandbox,
        config: &ContainerConfig,
    ) -> Result<Option<Joined>> {
        let own = config
            .linux
            .security_context
            .namespace_options
            .userns
            .as_ref();
        let pod = sandbox.userns(&self.config.state);
        match (pod, own) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(Error::InvalidArgument(format!(
                "{FIELD}: pod {} runs in the host's user namespace",
                sandbox.id()
            ))),
            (Some((_, pod)), Some(own)) if own != pod => Err(Error::InvalidArgument(format!(
                "{FIELD}: the mappings differ from pod {}'s",
                sandbox.id()
            ))),
            (Some((path, userns)), _) => Ok(Some(Joined {
                path,
                userns: userns.clone(),
            })),
        }
    }

    /// Prepares container `id`'s files for the pod's user namespace: the bundle
    /// traversable by the pod's root, the rootfs overlay options through the
    /// pod's view, and `config` with each volume's host path replaced by its
    /// id-mapped view, for the spec.
    pub(super) async fn userns_prepare(
        &self,
        id: &str,
        sandbox: &Sandbox,
        joined: &Joined,
        bundle: &Path,
        rootfs: &ContainerRootfs,
        config: &ContainerConfig,
    ) -> Result<(Vec<String>, ContainerConfig)> {
        let options = self
            .sandboxes
            .userns_rootfs_options(sandbox.id(), &joined.userns, rootfs)
            .await?;
        let dirs = PodUserns::of(&self.config.state, sandbox.id());
        let (id, userns, bundle) = (id.to_string(), joined.userns.clone(), bundle.to_path_buf());
        let mut config = config.clone();
        let sources: Vec<PathBuf> = config
            .mounts
            .iter()
            .map(|m| PathBuf::from(&m.host_path))
            .collect();
        let views = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<PathBuf>> {
            pod::share_dir(&bundle, &userns)?;
            let sources: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
            dirs.volume_views(&id, &sources)
        })
        .await?
        .map_err(|e| Error::Internal(format!("id-mapping the container's volumes: {e}")))?;
        for (mount, view) in config.mounts.iter_mut().zip(views) {
            mount.host_path = view.display().to_string();
        }
        Ok((options, config))
    }

    /// Removes container `id`'s volume views, whichever pod it was in; idempotent.
    pub(super) async fn userns_release(&self, id: &str) {
        let (state, id) = (self.config.state.clone(), id.to_string());
        let released = tokio::task::spawn_blocking(move || {
            pod::all(&state)
                .iter()
                .try_for_each(|dirs| dirs.release_container(&id))
        })
        .await;
        match released {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "removing a container's volume views"),
            Err(e) => tracing::warn!(error = %e, "removing a container's volume views"),
        }
    }
}

/// Joins `spec` to the pod's user namespace, refusing a process user the
/// namespace does not map (runc would fail on it less clearly).
pub(super) fn join(spec: &mut Spec, joined: &Joined) -> Result<()> {
    if let Some(process) = spec.process() {
        let user = process.user();
        if joined.userns.host_uid(user.uid()).is_none() {
            return Err(Error::InvalidArgument(format!(
                "linux.security_context.run_as_user: uid {} is not mapped in the pod's user namespace",
                user.uid()
            )));
        }
        if joined.userns.host_gid(user.gid()).is_none() {
            return Err(Error::InvalidArgument(format!(
                "linux.security_context.run_as_group: gid {} is not mapped in the pod's user namespace",
                user.gid()
            )));
        }
    }
    crate::spec::join_user_namespace(spec, &joined.path, &joined.userns)?;
    Ok(())
}
