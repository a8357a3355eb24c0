//! RunPodSandbox: reserve the name, record the pod as Creating, write its files and
//! mount its shm, create its netns, then attach the network and start the infra
//! container at the same time, and record it Ready. Each step pushes its undo on
//! a stack; any failure unwinds the stack in reverse.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::Instrument;

use super::infra::{self, Runtime};
use super::{SandboxService, files, names, net, userns};
use crate::config::CgroupDriver;
use crate::domain::ImageConfigView;
use crate::domain::SandboxPhase;
use crate::domain::config::SandboxConfig;
use crate::error::{Error, IoContext, Result};
use crate::image::{ContainerRootfs, PullProgress};
use crate::shim::TaskClient;
use crate::snapshot::overlay::Mount;
use crate::spec::{SandboxSpecInputs, UserFiles, join_user_namespace, sandbox_spec};
use crate::store::SandboxRecord;
use crate::userns::PodUserns;

/// The image name the infra container's annotation carries for the built-in pause.
const BUILTIN_PAUSE: &str = "berth/pause:builtin";

/// What is undone, newest first, when a run fails.
enum Undo {
    Name(String),
    Record,
    Bundle,
    Shm,
    Netns(PathBuf),
    Cni(PathBuf),
    Infra(TaskClient),
    /// The writable layer of a `sandbox_image`.
    Rootfs,
    /// The pod's user namespace and its id-mapped views.
    Userns,
}

impl SandboxService {
    /// Runs a pod and returns its id. Runs to the end (success or full undo) even if
    /// the caller goes away, so a cancelled call leaves nothing behind.
    pub async fn run(self: &Arc<Self>, config: SandboxConfig, handler: &str) -> Result<String> {
        let this = Arc::clone(self);
        let handler = handler.to_string();
        let span = tracing::info_span!("run_pod_sandbox", pod_id = tracing::field::Empty);
        tokio::spawn(async move { this.run_to_end(config, &handler).await }.instrument(span))
            .await?
    }

    async fn run_to_end(&self, config: SandboxConfig, handler: &str) -> Result<String> {
        if let (true, Err(why)) = (self.config.sandbox_image.is_empty(), &self.pause_rootfs) {
            return Err(Error::FailedPrecondition(format!("no pause rootfs: {why}")));
        }
        // `runc create` moves the pause into its cgroups.
        crate::cgroup_warmup::warm();
        net::bandwidth(&config.annotations)?;
        crate::spec::check_profile_location(
            &config.linux.security_context.seccomp,
            &self.config.seccomp_profile_roots,
            "linux.security_context.seccomp",
        )?;
        crate::spec::lsm::check_apparmor(
            "linux.security_context.apparmor",
            &config.linux.security_context.apparmor,
            false,
            self.host.lsm,
            &crate::spec::lsm::apparmor_profile_loaded,
        )?;
        let requested_handler = Some(handler.to_string());
        let (handler_name, handler) = self.config.runtime_handler(handler)?;
        let runtime = Runtime {
            shim: infra::resolve_shim(handler)?,
            binary_name: handler.runtime.clone(),
            root: self.runtime_root(),
            systemd_cgroup: self.config.cgroup_driver == CgroupDriver::Systemd,
        };
        let id = new_id();
        tracing::Span::current().record("pod_id", id.as_str());
        let _userns_claim = self.claim_userns(&id, &config)?;
        let mut record = SandboxRecord {
            id: id.clone(),
            config,
            phase: SandboxPhase::Creating,
            created_at: crate::image::now_nanos(),
            runtime_handler: handler_name,
            requested_handler,
            shim: runtime.shim.clone(),
            bundle: self.bundle(&id),
            ..Default::default()
        };
        let mut undo = Vec::new();
        let outcome = async {
            let task = self.run_steps(&mut record, &runtime, &mut undo).await?;
            record.phase = SandboxPhase::Ready;
            self.save(record.clone(), Some(task))
        }
        .await;
        match outcome {
            Ok(()) => {
                tracing::info!(ips = ?record.ips, pid = record.pid, "pod sandbox ready");
                Ok(id)
            }
            Err(e) => {
                self.unwind(&record, undo).await;
                Err(e)
            }
        }
    }

    async fn run_steps(
        &self,
        record: &mut SandboxRecord,
        runtime: &Runtime,
        undo: &mut Vec<Undo>,
    ) -> Result<TaskClient> {
        let id = record.id.clone();
        let name = names::sandbox_name(&record.config);
        self.names.reserve(&name, &id)?;
        undo.push(Undo::Name(name));
        self.store.write(|tx| tx.put(&*record))?;
        undo.push(Undo::Record);

        let bundle = record.bundle.clone();
        let config = record.config.clone();
        undo.push(Undo::Bundle);
        tokio::task::spawn_blocking(move || files::write(&bundle, &config)).await??;
        if files::wants_shm(&record.config) {
            let bundle = record.bundle.clone();
            tokio::task::spawn_blocking(move || files::mount_shm(&bundle)).await??;
            record.shm_mounted = true;
            undo.push(Undo::Shm);
        }
        if let Some(userns) = userns::requested(&record.config).cloned() {
            let with_netns = !record.config.host_network();
            let netns = self
                .setup_userns(&id, &record.bundle, &userns, with_netns)
                .await?;
            undo.push(Undo::Userns);
            if let Some(netns) = netns {
                undo.push(Undo::Netns(netns.clone()));
                record.netns = Some(netns);
            }
        } else if !record.config.host_network() {
            let netns = self.create_netns(&id).await?;
            undo.push(Undo::Netns(netns.clone()));
            record.netns = Some(netns);
        }
        let image = self.infra_image(record).await?;
        if image.is_some() {
            undo.push(Undo::Rootfs);
        }
        self.write_spec(record, image.as_ref()).await?;
        let mounts = match &image {
            Some((_, rootfs)) => vec![self.infra_rootfs_mount(record, rootfs).await?],
            None => Vec::new(),
        };
        self.follow_shim_log(&id, &record.bundle);

        // The infra container needs only the netns; CNI and the shim run side by side.
        let network = async {
            match &record.netns {
                Some(netns) => self.cni_add(&id, netns, &record.config).await.map(Some),
                None => Ok(None),
            }
        };
        let infra = infra::start(
            &self.shims,
            &*self.connector,
            runtime,
            &id,
            &record.bundle,
            mounts,
        );
        let (network, infra) = tokio::join!(network, infra);
        if let (Ok(Some(_)), Some(netns)) = (&network, &record.netns) {
            undo.push(Undo::Cni(netns.clone()));
        }
        let (task, pid) = infra?;
        undo.push(Undo::Infra(task.clone()));
        if let Some(attached) = network? {
            record.ips = attached.ips;
            record.cni_result = Some(attached.result);
        }
        record.pid = pid;
        Ok(task)
    }

    /// With `sandbox_image` configured: that image (pulled if it is not there yet)
    /// and a writable layer on it, leased under the pod's id; `None` for the
    /// built-in pause.
    async fn infra_image(
        &self,
        record: &mut SandboxRecord,
    ) -> Result<Option<(ImageConfigView, ContainerRootfs)>> {
        let reference = &self.config.sandbox_image;
        if reference.is_empty() {
            return Ok(None);
        }
        let image = match self.images.get(reference)? {
            Some(image) => image,
            None => self
                .images
                .pull(reference, None, Arc::new(PullProgress::default()))
                .await
                .map_err(|e| e.within(&format!("pulling sandbox_image {reference:?}")))?,
        };
        let view = self.images.config_view(&image)?;
        let dir = record.bundle.join("rootfs");
        tokio::fs::create_dir_all(&dir)
            .await
            .context(|| format!("creating {}", dir.display()))?;
        let rootfs = self.images.prepare_rootfs(&record.id, &image).await?;
        record.image_id = image.id;
        Ok(Some((view, rootfs)))
    }

    /// Writes the infra container's config.json into the bundle.
    async fn write_spec(
        &self,
        record: &SandboxRecord,
        image: Option<&(ImageConfigView, ContainerRootfs)>,
    ) -> Result<()> {
        let pause = ImageConfigView {
            entrypoint: vec!["/pause".to_string()],
            ..Default::default()
        };
        // In a user namespace the built-in pause is run from its id-mapped view.
        let pause_view = userns::requested(&record.config)
            .map(|_| PodUserns::of(&self.config.state, &record.id).pause_rootfs());
        let (view, rootfs, user_files, image_name) = match image {
            Some((view, rootfs)) => (
                view,
                std::path::Path::new("rootfs"),
                crate::spec::user_files(rootfs)?,
                self.config.sandbox_image.as_str(),
            ),
            None => {
                let rootfs = self
                    .pause_rootfs
                    .as_ref()
                    .map_err(|why| Error::FailedPrecondition(format!("no pause rootfs: {why}")))?;
                (
                    &pause,
                    pause_view.as_deref().unwrap_or(rootfs.as_path()),
                    UserFiles::read(std::slice::from_ref(rootfs))?,
                    BUILTIN_PAUSE,
                )
            }
        };
        let pod_files = files::pod_files(&record.bundle, record.shm_mounted);
        let mut spec = sandbox_spec(&SandboxSpecInputs {
            id: &record.id,
            config: &record.config,
            image: view,
            image_name,
            rootfs,
            user_files: &user_files,
            netns_path: record.netns.as_deref(),
            pod_files: &pod_files,
            host: self.host,
        })?;
        if let Some(userns) = userns::requested(&record.config) {
            let path = PodUserns::of(&self.config.state, &record.id).ns_path();
            join_user_namespace(&mut spec, &path, userns)?;
        }
        let json = serde_json::to_vec_pretty(&spec)
            .map_err(|e| Error::Internal(format!("encoding the infra spec: {e}")))?;
        let path = record.bundle.join("config.json");
        tokio::task::spawn_blocking(move || crate::layout::write_private_file(&path, &json)).await?
    }

    /// The overlay of a `sandbox_image`'s writable layer; in a user namespace,
    /// with the image's layers read through the pod's id-mapped view.
    async fn infra_rootfs_mount(
        &self,
        record: &SandboxRecord,
        rootfs: &ContainerRootfs,
    ) -> Result<Mount> {
        let mut mount = rootfs.mount.clone();
        if let Some(userns) = userns::requested(&record.config) {
            mount.options = self
                .userns_rootfs_options(&record.id, userns, rootfs)
                .await?;
        }
        Ok(mount)
    }

    /// Undoes a failed run, newest step first; failures are logged, not returned,
    /// so every step gets its chance.
    async fn unwind(&self, record: &SandboxRecord, undo: Vec<Undo>) {
        for step in undo.into_iter().rev() {
            let result = match step {
                Undo::Infra(task) => {
                    let stopped = self.stop_infra(record, Some(&task)).await;
                    stopped.and(self.shutdown_shim(record, Some(&task)).await)
                }
                Undo::Cni(netns) => self.cni_del(&record.id, &netns, &record.config).await,
                Undo::Rootfs => self.images.release_rootfs(&record.id).await,
                Undo::Userns => self.teardown_userns(&record.id).await,
                Undo::Netns(netns) => self.remove_netns(&netns).await,
                Undo::Shm => {
                    let bundle = record.bundle.clone();
                    flatten(tokio::task::spawn_blocking(move || files::unmount_shm(&bundle)).await)
                }
                Undo::Bundle => {
                    self.unfollow_shim_log(&record.id);
                    let bundle = record.bundle.clone();
                    flatten(tokio::task::spawn_blocking(move || files::remove(&bundle)).await)
                }
                Undo::Record => self
                    .store
                    .write(|tx| tx.delete::<SandboxRecord>(&record.id)),
                Undo::Name(name) => {
                    self.names.release(&name, &record.id);
                    Ok(())
                }
            };
            if let Err(e) = result {
                tracing::warn!(pod_id = %record.id, error = %e, "undoing a failed RunPodSandbox");
            }
        }
    }
}

fn flatten(r: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    r.map_err(Error::from).and_then(|r| r)
}

/// 64 random hex digits, as containerd makes ids.
fn new_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}
