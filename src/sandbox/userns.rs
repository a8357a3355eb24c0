//! A pod's own user namespace, when CRI asks for one (mode POD): checked against
//! the host and the other pods, made before the infra container (with the
//! network namespace it owns), and torn down with the pod. The kernel work is in
//! `crate::userns`; this only says when.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Sandbox, SandboxService, files};
use crate::domain::config::SandboxConfig;
use crate::error::{Error, Result};
use crate::userns::{PodUserns, UserNamespace, pod, probe};

/// The field the kubelet fills, for messages.
const FIELD: &str = "config.linux.security_context.namespace_options.userns_options";

/// The user namespaces of pods being run, by pod id: checked with the indexed
/// pods', so two pods run at once cannot both take the same host ids.
#[derive(Default)]
pub(super) struct Claims(Arc<Mutex<HashMap<String, UserNamespace>>>);

/// A pod's claim, released when its run ends (by then a run that worked has
/// indexed the pod, whose user namespace the check sees from there on).
pub(super) struct Claim {
    claims: Arc<Mutex<HashMap<String, UserNamespace>>>,
    pod_id: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        claims.remove(&self.pod_id);
    }
}

/// The pod's requested user namespace, if any.
pub(super) fn requested(config: &SandboxConfig) -> Option<&UserNamespace> {
    config
        .linux
        .security_context
        .namespace_options
        .userns
        .as_ref()
}

impl Sandbox {
    /// The pod's user namespace and where it is pinned, if it has one.
    pub fn userns(&self, state: &Path) -> Option<(PathBuf, &UserNamespace)> {
        requested(&self.record.config)
            .map(|userns| (PodUserns::of(state, self.id()).ns_path(), userns))
    }
}

impl SandboxService {
    /// Refuses a user namespace this host cannot give, or whose host ids another
    /// live pod (or one being run) has; else claims them for pod `id` until the
    /// returned claim is dropped.
    pub(super) fn claim_userns(&self, id: &str, config: &SandboxConfig) -> Result<Option<Claim>> {
        let Some(userns) = requested(config) else {
            return Ok(None);
        };
        if !probe::supported() {
            return Err(Error::FailedPrecondition(format!(
                "{FIELD}: this host cannot id-map overlay layers, so pods cannot have \
                 user namespaces (see the runtime handler's features in Status)"
            )));
        }
        // Claims first, then the index: a run indexes its pod before dropping
        // its claim, so no pod is ever in neither.
        let mut claims = self
            .userns_claims
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let pods = self.pods.read();
        let indexed = pods
            .values()
            .filter_map(|p| requested(&p.record.config).map(|u| (p.id(), u)));
        let claimed = claims.iter().map(|(id, u)| (id.as_str(), u));
        for (other, theirs) in indexed.chain(claimed) {
            if let Some(which) = userns.overlaps(theirs) {
                return Err(Error::InvalidArgument(format!(
                    "{FIELD}.{which}: host ids overlap those of pod {other}"
                )));
            }
        }
        claims.insert(id.to_string(), userns.clone());
        Ok(Some(Claim {
            claims: Arc::clone(&self.userns_claims.0),
            pod_id: id.to_string(),
        }))
    }

    /// Makes the pod's user namespace and, unless on the host network, its
    /// network namespace pinned at the usual place; the pod's files are given to
    /// its root. Returns the network namespace.
    pub(super) async fn setup_userns(
        &self,
        id: &str,
        bundle: &Path,
        userns: &UserNamespace,
        with_netns: bool,
    ) -> Result<Option<PathBuf>> {
        let dirs = PodUserns::of(&self.config.state, id);
        let netns = with_netns.then(|| self.netns_dir().join(id));
        let netns_dir = self.netns_dir();
        let snapshots = self.config.root.join("snapshots");
        // The built-in pause's directory is not the pod root's to reach: a view is.
        let pause = match (self.config.sandbox_image.is_empty(), &self.pause_rootfs) {
            (true, Ok(rootfs)) => Some(rootfs.clone()),
            _ => None,
        };
        let (userns, bundle, made_netns) = (userns.clone(), bundle.to_path_buf(), netns.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            pod::share_dir(&bundle, &userns)?;
            for file in files::owned_by_pod_root(&bundle) {
                pod::give_file(&file, &userns)?;
            }
            if made_netns.is_some() {
                crate::network::netns::prepare_dir(&netns_dir)?;
            }
            dirs.setup(&userns, made_netns.as_deref(), &snapshots, pause.as_deref())
        })
        .await?
        .map_err(|e| Error::Internal(format!("setting up the pod's user namespace: {e}")))?;
        Ok(netns)
    }

    /// Unmounts and removes the pod's user namespace and views; idempotent.
    pub(super) async fn teardown_userns(&self, id: &str) -> Result<()> {
        let dirs = PodUserns::of(&self.config.state, id);
        tokio::task::spawn_blocking(move || dirs.teardown())
            .await?
            .map_err(|e| Error::Internal(format!("removing pod {id}'s user namespace: {e}")))
    }

    /// Removes the user-namespace directories of pods that are no more (a crash
    /// between their removal and that of their record).
    pub(super) async fn sweep_userns(&self) {
        let live: Vec<String> = {
            let pods = self.pods.read();
            pods.keys().cloned().collect()
        };
        let state = self.config.state.clone();
        let swept = tokio::task::spawn_blocking(move || {
            for dirs in pod::all(&state) {
                if !live.iter().any(|id| dirs.is_of(id))
                    && let Err(e) = dirs.teardown()
                {
                    tracing::warn!(error = %e, "removing a gone pod's user namespace");
                }
            }
        })
        .await;
        if let Err(e) = swept {
            tracing::warn!(error = %e, "sweeping user namespaces");
        }
    }
}

impl SandboxService {
    /// A writable layer's overlay options with the image's layers read through
    /// pod `id`'s id-mapped view, its root given to the pod's root.
    pub async fn userns_rootfs_options(
        &self,
        id: &str,
        userns: &UserNamespace,
        rootfs: &crate::image::ContainerRootfs,
    ) -> Result<Vec<String>> {
        let dirs = PodUserns::of(&self.config.state, id);
        let snapshots = self.config.root.join("snapshots");
        let (userns, rootfs) = (userns.clone(), rootfs.clone());
        tokio::task::spawn_blocking(move || {
            dirs.rootfs_options(&userns, &snapshots, &rootfs.mount.options, &rootfs.upper)
        })
        .await?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidInput => Error::FailedPrecondition(e.to_string()),
            _ => Error::Internal(format!("id-mapping the rootfs: {e}")),
        })
    }
}
