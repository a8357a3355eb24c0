//! CreateContainer: reserve the name, prepare a writable layer on the image, build
//! the OCI spec, open the output fifos and create the task in the pod's shim. A
//! failure undoes each step in reverse.

use std::path::Path;
use std::sync::Arc;

use oci_spec::runtime::Spec;

use super::io;
use super::service::{ContainerService, container_name};
use crate::config::CgroupDriver;
use crate::domain::config::ContainerConfig;
use crate::domain::{ContainerPhase, ProcessUser};
use crate::error::{Error, IoContext, Result};
use crate::sandbox::Sandbox;
use crate::shim::{CreateTask, RuntimeOptions, TaskClient};
use crate::spec::{self, ContainerSpecInputs, HostDevices};
use crate::store::{Batch, ContainerRecord};

impl ContainerService {
    /// Creates a container in a Ready pod and returns its id. Runs to the end
    /// (Created, or fully undone) even if the caller goes away, so a cancelled
    /// call leaves no half-created container holding the pod's shim.
    pub async fn create(
        self: &Arc<Self>,
        sandbox_id: &str,
        config: ContainerConfig,
    ) -> Result<String> {
        let this = Arc::clone(self);
        let sandbox_id = sandbox_id.to_string();
        tokio::spawn(async move { this.create_to_end(&sandbox_id, config).await }).await?
    }

    async fn create_to_end(
        self: &Arc<Self>,
        sandbox_id: &str,
        config: ContainerConfig,
    ) -> Result<String> {
        if config.name.is_empty() {
            return Err(Error::InvalidArgument(
                "config.metadata.name is empty".into(),
            ));
        }
        // `runc create` moves the container's init into its cgroups.
        crate::cgroup_warmup::warm();
        // Held until the container is recorded Created (or undone): a pod's stop
        // or removal waits for it, and then stops or removes it with the pod.
        let pod = self.sandboxes.hold_ready(sandbox_id).await?;
        let (sandbox, task) = (&pod.pod, &pod.task);
        spec::check_profile_location(
            &config.linux.security_context.seccomp,
            &self.config.seccomp_profile_roots,
            "linux.security_context.seccomp",
        )?;
        spec::lsm::check_apparmor(
            "linux.security_context.apparmor",
            &config.linux.security_context.apparmor,
            config.linux.security_context.privileged,
            self.host.lsm,
            &spec::lsm::apparmor_profile_loaded,
        )?;
        spec::check_supported(&config.linux.resources, &self.host)?;
        let handler = &sandbox.record.runtime_handler;
        if let Some(m) = config.mounts.iter().find(|m| m.recursive_read_only)
            && !self.handler_features(handler).recursive_read_only_mounts
        {
            return Err(Error::InvalidArgument(format!(
                "mount {}: runtime handler {handler:?} does not support recursive read-only mounts",
                m.container_path
            )));
        }
        let id = new_id();
        let name = container_name(&config, &sandbox.record.config);
        self.names.reserve(&name, &id)?;
        let _guard = self.lock(&id).await;
        let result = self.create_in(&id, sandbox, task, config).await;
        if result.is_err() {
            self.undo_create(&id, task).await;
            self.names.release(&name, &id);
        }
        result.map(|()| id)
    }

    async fn create_in(
        &self,
        id: &str,
        sandbox: &Sandbox,
        task: &TaskClient,
        config: ContainerConfig,
    ) -> Result<()> {
        let image = self.images.get(&config.image)?.ok_or_else(|| {
            Error::NotFound(format!(
                "image {:?} not found; pull it before creating a container",
                config.image
            ))
        })?;
        let view = self.images.config_view(&image)?;
        let bundle = self.bundle(id);
        let pod = &sandbox.record.config;
        super::log_location::check(&pod.log_directory, &config.log_path)?;
        let log_path = (!pod.log_directory.is_empty() && !config.log_path.is_empty())
            .then(|| Path::new(&pod.log_directory).join(&config.log_path));
        let mut record = ContainerRecord {
            id: id.to_string(),
            sandbox_id: sandbox.id().to_string(),
            config,
            phase: ContainerPhase::Creating,
            image_id: image.id.clone(),
            bundle: bundle.clone(),
            log_path,
            stop_signal: view.stop_signal.clone(),
            created_at: crate::image::now_nanos(),
            ..Default::default()
        };
        record.image_name = record.config.image.clone();
        let joined = self.joined_userns(sandbox, &record.config)?;
        // Recorded in the writable layer's own commit, before anything else is
        // made: a crash before it leaves a layer directory without a record
        // (start-up deletes it), and from it on start-up undoes the container.
        let mut creating = Batch::new();
        creating.put(&record)?;
        let rootfs = self
            .images
            .prepare_rootfs_with(id, &image, creating)
            .await?;
        self.show(&record);
        std::fs::create_dir_all(bundle.join("rootfs"))
            .context(|| format!("creating {}", bundle.display()))?;
        let held = self.hold_image_volumes(&mut record)?;
        if !held.is_empty() {
            self.persist(&record).await?;
        }
        create_mount_sources(&record.config)?;
        let spec_config = self
            .prepare_volumes(&record, &view.volumes, rootfs.lowers.clone(), held)
            .await?;
        crate::fault::crash_point("after-volumes");
        // In a user namespace the rootfs and the volumes are read through
        // id-mapped views.
        let (rootfs_options, spec_config) = match &joined {
            Some(joined) => {
                self.userns_prepare(id, sandbox, joined, &bundle, &rootfs, &spec_config)
                    .await?
            }
            None => (rootfs.mount.options.clone(), spec_config),
        };
        let user_files = spec::user_files(&rootfs)?;
        let node_hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let pod_files = sandbox.pod_files();
        let mut spec = spec::container_spec(&ContainerSpecInputs {
            id,
            sandbox_id: sandbox.id(),
            config: &spec_config,
            sandbox: pod,
            image: &view,
            image_name: &record.image_name,
            rootfs: Path::new("rootfs"),
            user_files: &user_files,
            sandbox_pid: sandbox.infra_pid(),
            target_pid: self.target_pid(&record),
            pod_files: &pod_files,
            node_hostname: &node_hostname,
            devices: &HostDevices,
            host: self.host,
        })?;
        if let Some(joined) = &joined {
            super::userns::join(&mut spec, joined)?;
        }
        let spec = self.inject_cdi(spec, &record.config.cdi_devices).await?;
        record.user = spec.process().as_ref().map(|p| ProcessUser {
            uid: p.user().uid(),
            gid: p.user().gid(),
            additional_gids: p.user().additional_gids().clone().unwrap_or_default(),
        });
        let spec_json = serde_json::to_vec(&spec)
            .map_err(|e| Error::Internal(format!("encoding the OCI spec: {e}")))?;
        crate::layout::write_private_file(&bundle.join("config.json"), &spec_json)?;

        let tty = record.config.tty;
        io::make_fifos(&bundle, tty, record.config.stdin)?;
        self.attach_output(&record, io::LogOpening::Required)?;
        let request = CreateTask {
            id: id.to_string(),
            bundle: bundle.clone(),
            rootfs: vec![crate::snapshot::overlay::Mount {
                options: rootfs_options,
                ..rootfs.mount.clone()
            }],
            terminal: tty,
            stdin: record.config.stdin.then(|| io::stdin_path(&bundle)),
            stdout: Some(io::stdout_path(&bundle)),
            stderr: (!tty).then(|| io::stderr_path(&bundle)),
            options: self.task_options(&sandbox.record.runtime_handler)?,
        };
        record.pid = task.create(&request).await?;
        record.phase = ContainerPhase::Created;
        self.persist(&record).await
    }

    /// Removes what a failed or interrupted create left: the task, the output,
    /// the bundle, the writable layer, the record.
    pub(super) async fn undo_create(&self, id: &str, task: &TaskClient) {
        if let Err(e) = self.delete_task(id, task).await {
            tracing::warn!(container_id = id, error = %e, "undoing create: deleting the task");
        }
        self.remove_files(id).await;
    }

    /// Deletes the container's task in its shim. A task that is gone already is
    /// fine, and so is a shim that is gone (its binary's `delete` cleans up
    /// without it); a shim that refuses (the process still runs) is
    /// FailedPrecondition, and the caller must leave the container's files alone.
    pub(super) async fn delete_task(&self, id: &str, task: &TaskClient) -> Result<()> {
        match task.delete(id, "").await {
            Ok(_) | Err(Error::NotFound(_)) => Ok(()),
            Err(Error::Unavailable(e)) => {
                tracing::info!(container_id = id, error = %e, "shim gone; deleting the task without it");
                self.delete_without_shim(id).await;
                Ok(())
            }
            Err(e) => Err(Error::FailedPrecondition(format!(
                "container {id}: its shim did not delete the task, so its bundle, \
                 writable layer and record are kept: {e}"
            ))),
        }
    }

    /// Removes the container's bundle, writable layer and record, once its task is
    /// deleted.
    pub(super) async fn remove_files(&self, id: &str) {
        let bundle = self.bundle(id);
        let rootfs = bundle.join("rootfs");
        let _ = tokio::task::spawn_blocking(move || {
            nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH)
        })
        .await;
        self.release_volumes(id, &bundle).await;
        let dir = bundle.clone();
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        if let Ok(Err(e)) = removed
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(container_id = id, error = %e, "removing the bundle");
        }
        self.userns_release(id).await;
        if let Err(e) = self.images.release_rootfs(id).await {
            tracing::warn!(container_id = id, error = %e, "releasing the rootfs");
        }
        if let Err(e) = self.forget(id) {
            tracing::warn!(container_id = id, error = %e, "forgetting the record");
        }
    }

    /// The task's shim is unreachable: without this, the container's processes
    /// would outlive its removal, as containerd avoids with the same `delete`.
    pub(super) async fn delete_without_shim(&self, id: &str) {
        let bundle = self.bundle(id);
        if !bundle.join("config.json").exists() {
            return;
        }
        let Ok(record) = self.get(id) else { return };
        let Ok(sandbox) = self.sandboxes.get(&record.sandbox_id) else {
            return;
        };
        if let Err(e) = self
            .sandboxes
            .delete_task_without_shim(&sandbox, id, &bundle)
            .await
        {
            tracing::warn!(container_id = id, error = %e, "deleting the task without its shim");
        }
    }

    /// Applies the CDI devices the container asks for, off the executor: it reads
    /// the spec directories and stats host device nodes.
    async fn inject_cdi(&self, mut spec: Spec, devices: &[String]) -> Result<Spec> {
        if devices.is_empty() {
            return Ok(spec);
        }
        let devices = devices.to_vec();
        let dirs = self.config.cdi_spec_dirs.clone();
        tokio::task::spawn_blocking(move || {
            super::cdi::inject(&mut spec, &devices, &dirs, &HostDevices)?;
            Ok(spec)
        })
        .await?
    }

    /// The options Create carries: the OCI runtime binary and its state directory,
    /// the same as for the pod's infra container.
    fn task_options(&self, handler: &str) -> Result<RuntimeOptions> {
        let (_, runtime) = self.config.runtime_handler(handler)?;
        Ok(RuntimeOptions {
            binary_name: runtime.runtime.clone(),
            root: self.config.state.join("runc"),
            systemd_cgroup: self.config.cgroup_driver == CgroupDriver::Systemd,
        })
    }

    /// For PID namespace mode Target: the pid of the target container.
    fn target_pid(&self, record: &ContainerRecord) -> Option<u32> {
        let target = &record
            .config
            .linux
            .security_context
            .namespace_options
            .target_id;
        if target.is_empty() {
            return None;
        }
        self.get(target).ok().map(|c| c.pid).filter(|&pid| pid != 0)
    }
}

/// CRI mounts of host directories that do not exist yet are created, 0755, as
/// containerd and the kubelet's hostPath DirectoryOrCreate expect. Image volumes
/// have no host path of the kubelet's.
fn create_mount_sources(config: &ContainerConfig) -> Result<()> {
    for mount in config.mounts.iter().filter(|m| m.image.is_empty()) {
        let source = Path::new(&mount.host_path);
        if !source.exists() {
            crate::layout::shared_dir_all(source)
                .context(|| format!("creating the host path {} of a mount", source.display()))?;
        }
    }
    Ok(())
}

pub(super) fn new_id() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}
