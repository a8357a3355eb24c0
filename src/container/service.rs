//! The container service: the index of containers that serves Status and List, a
//! lock per container for calls that change it, and recovery after a restart.
//! Lifecycle calls live in `create.rs`, `lifecycle.rs` and `exec.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, broadcast};

use super::events;
use super::index::ContainerIndex;
use super::io::{LogOpening, Output};
use crate::config::Config;
use crate::counted::Counted;
use crate::domain::ContainerPhase;
use crate::error::{Error, Result};
use crate::id_locks::{IdGuard, IdLocks};
use crate::image::ImageService;
use crate::sandbox::{ContainerEvent, ContainerEventKind};
use crate::sandbox::{NameIndex, Sandbox, SandboxService};
use crate::shim::features::{self, HandlerFeatures};
use crate::shim::{ShimEvent, TaskClient};
use crate::spec::HostFacts;
use crate::store::{Batch, ContainerRecord, Store};

pub struct ContainerService {
    pub(super) config: Config,
    pub(super) store: Arc<Store>,
    pub(super) images: Arc<ImageService>,
    pub(super) sandboxes: Arc<SandboxService>,
    pub(super) names: Arc<NameIndex>,
    /// What this host imposes on every spec, read once at start.
    pub(super) host: HostFacts,
    /// Shared, so that a listing copies pointers rather than records.
    containers: Counted<ContainerIndex>,
    /// Output copiers of containers that may still write.
    pub(super) outputs: Mutex<HashMap<String, Arc<Output>>>,
    /// Containers the kernel OOM-killed, until their exit is recorded.
    pub(super) oom_killed: Mutex<HashSet<String>>,
    /// Woken whenever one is added to `oom_killed`.
    pub(super) oom_seen: Notify,
    pub(super) sampler: Arc<super::stats::Sampler>,
    events: broadcast::Sender<ContainerEvent>,
    /// What each OCI runtime binary can do, by binary.
    features: BTreeMap<String, HandlerFeatures>,
    locks: IdLocks,
}

/// Which containers List returns (CRI `ContainerFilter`).
#[derive(Debug, Clone, Default)]
pub struct ContainerFilter {
    /// An id or a unique prefix of one.
    pub id: String,
    pub sandbox_id: String,
    pub phase: Option<ContainerPhase>,
    pub labels: HashMap<String, String>,
}

impl ContainerFilter {
    /// Whether it narrows nothing: the List is every container (but the
    /// half-created ones, which no List shows).
    pub fn narrows_nothing(&self) -> bool {
        self.id.is_empty()
            && self.sandbox_id.is_empty()
            && self.phase.is_none()
            && self.labels.is_empty()
    }
}

impl ContainerService {
    pub async fn open(
        config: Config,
        store: Arc<Store>,
        images: Arc<ImageService>,
        sandboxes: Arc<SandboxService>,
        names: Arc<NameIndex>,
        host: HostFacts,
        events: &broadcast::Sender<ShimEvent>,
    ) -> Result<Arc<ContainerService>> {
        let runtimes = config
            .runtimes
            .values()
            .map(|h| h.runtime.clone())
            .collect();
        let (root, state) = (config.root.clone(), config.state.clone());
        let features = tokio::task::spawn_blocking(move || {
            // Before the runtimes: their user namespace feature needs its answer.
            crate::userns::probe::probe(&root, &state);
            features::probe_all(runtimes)
        })
        .await?;
        Self::open_with(
            config, store, images, sandboxes, names, host, events, features,
        )
        .await
    }

    /// `open` with the runtimes' features already known (tests give none).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn open_with(
        config: Config,
        store: Arc<Store>,
        images: Arc<ImageService>,
        sandboxes: Arc<SandboxService>,
        names: Arc<NameIndex>,
        host: HostFacts,
        events: &broadcast::Sender<ShimEvent>,
        features: BTreeMap<String, HandlerFeatures>,
    ) -> Result<Arc<ContainerService>> {
        // One channel for pod and container events, so they stay in order.
        let lifecycle = sandboxes.events().clone();
        let service = Arc::new(ContainerService {
            config,
            store,
            images,
            sandboxes,
            names,
            host,
            containers: Counted::default(),
            outputs: Mutex::new(HashMap::new()),
            oom_killed: Mutex::new(HashSet::new()),
            oom_seen: Notify::new(),
            sampler: Arc::new(super::stats::Sampler::new()),
            events: lifecycle,
            features,
            locks: IdLocks::default(),
        });
        service.clone().watch_ooms(events.subscribe());
        let weak = Arc::downgrade(&service);
        service.sandboxes.on_pod_containers(Box::new(move |pod_id| {
            weak.upgrade()
                .map(|s| s.pod_containers(pod_id))
                .unwrap_or_default()
        }));
        service.recover().await?;
        Ok(service)
    }

    /// Remembers OOM kills so that the exit that follows is reported as OOMKilled.
    fn watch_ooms(self: Arc<Self>, mut events: broadcast::Receiver<ShimEvent>) {
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(ShimEvent::Oom { container_id }) => {
                        self.oom_killed
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(container_id);
                        self.oom_seen.notify_waiters();
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "shim events missed");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// The features of runtime handler `name` ("" is the default one).
    pub fn handler_features(&self, name: &str) -> HandlerFeatures {
        self.config
            .runtime_handler(name)
            .ok()
            .and_then(|(_, handler)| self.features.get(&handler.runtime))
            .copied()
            .unwrap_or_default()
    }

    /// The container with this id or unique id prefix.
    pub fn get(&self, id: &str) -> Result<ContainerRecord> {
        self.get_shared(id).map(|c| ContainerRecord::clone(&c))
    }

    /// The same, as the index shares it.
    pub(super) fn get_shared(&self, id: &str) -> Result<Arc<ContainerRecord>> {
        let containers = self.containers.read();
        if let Some(c) = containers.get(id) {
            return Ok(Arc::clone(c));
        }
        let mut matches = containers
            .values()
            .filter(|c| !id.is_empty() && c.id.starts_with(id));
        match (matches.next(), matches.next()) {
            (Some(c), None) => Ok(Arc::clone(c)),
            (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
                "container id prefix {id:?} is ambiguous"
            ))),
            _ => Err(Error::NotFound(format!("container {id:?} not found"))),
        }
    }

    /// A count that moves whenever a container is indexed, replaced or
    /// removed: what was built from `list` is still right while it stands.
    pub fn list_changes(&self) -> u64 {
        self.containers.changes()
    }

    pub fn list(&self, filter: &ContainerFilter) -> Vec<Arc<ContainerRecord>> {
        let containers = self.containers.read();
        let mut out: Vec<Arc<ContainerRecord>> = containers
            .candidates(filter)
            .filter(|c| !c.phase.is_half_created())
            .filter(|c| filter.id.is_empty() || c.id.starts_with(&filter.id))
            .filter(|c| {
                filter.sandbox_id.is_empty() || c.sandbox_id.starts_with(&filter.sandbox_id)
            })
            .filter(|c| filter.phase.is_none_or(|p| c.phase == p))
            .filter(|c| {
                filter
                    .labels
                    .iter()
                    .all(|(k, v)| c.config.labels.get(k) == Some(v))
            })
            .cloned()
            .collect();
        out.sort_by_key(|c| c.created_at);
        out
    }

    /// Ids of a pod's containers.
    pub fn of_sandbox(&self, sandbox_id: &str) -> Vec<String> {
        let containers = self.containers.read();
        containers
            .of_pod(sandbox_id)
            .map(|c| c.id.clone())
            .collect()
    }

    pub fn reopen_log(&self, id: &str) -> Result<()> {
        let c = self.get(id)?;
        if !c.phase.can_reopen_log() {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        let output = self.output(&c.id).ok_or_else(|| {
            Error::FailedPrecondition(format!("container {} has no log open", c.id))
        })?;
        output.reopen()
    }

    /// Starts copying the container's fifos into its log.
    pub(super) fn attach_output(
        &self,
        record: &ContainerRecord,
        opening: LogOpening,
    ) -> Result<()> {
        let output = Output::start(
            &record.bundle,
            record.config.tty,
            record.config.stdin,
            record.log_path.as_deref(),
            opening,
        )?;
        self.outputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(record.id.clone(), Arc::new(output));
        Ok(())
    }

    pub(super) fn output(&self, id: &str) -> Option<Arc<Output>> {
        self.outputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// The pod of a container, and its shim.
    pub(super) fn task_of(&self, c: &ContainerRecord) -> Result<(Arc<Sandbox>, TaskClient)> {
        let sandbox = self.sandboxes.get(&c.sandbox_id)?;
        let task = sandbox.task.clone().ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "the shim of pod sandbox {} is not connected",
                c.sandbox_id
            ))
        })?;
        Ok((sandbox, task))
    }

    pub(super) fn bundle(&self, id: &str) -> PathBuf {
        self.config.state.join("containers").join(id)
    }

    /// Serialises calls on one container. Held across shim calls on purpose: it
    /// guards only this container.
    pub(super) async fn lock(&self, id: &str) -> IdGuard {
        self.locks.write(id).await
    }

    /// Commits `record` (one transaction), then shows it in the index.
    pub(super) fn save(&self, record: &ContainerRecord) -> Result<()> {
        self.store.write(|tx| tx.put(record))?;
        self.show(record);
        Ok(())
    }

    /// Commits `record` through the store's writer thread (grouped with the
    /// commits of concurrent calls, off the executor), then shows it in the
    /// index. Durable when it returns, as `save`.
    pub(super) async fn persist(&self, record: &ContainerRecord) -> Result<()> {
        self.commit_and_show(record, true).await
    }

    /// [`Self::persist`] without waiting for the disk: only for a change that
    /// recovery rebuilds from the shim when a crash loses it (see
    /// [`crate::store::Store::commit_volatile`]).
    pub(super) async fn persist_volatile(&self, record: &ContainerRecord) -> Result<()> {
        self.commit_and_show(record, false).await
    }

    async fn commit_and_show(&self, record: &ContainerRecord, durable: bool) -> Result<()> {
        let mut batch = Batch::new();
        batch.put(record)?;
        if durable {
            self.store.commit(batch).await?;
        } else {
            self.store.commit_volatile(batch).await?;
        }
        self.show(record);
        Ok(())
    }

    /// Shows a committed `record` in the index, with the event its change of
    /// phase means.
    pub(super) fn show(&self, record: &ContainerRecord) {
        let before = self
            .containers
            .write()
            .insert(record.id.clone(), Arc::new(record.clone()))
            .map(|r| r.phase);
        if let Some(kind) = events::transition(before, record.phase) {
            self.publish(record, kind);
        }
    }

    /// Lifecycle events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ContainerEvent> {
        self.events.subscribe()
    }

    /// The containers of pod `pod_id`, for the statuses an event carries.
    fn pod_containers(&self, pod_id: &str) -> Vec<Arc<ContainerRecord>> {
        let containers = self.containers.read();
        let mut out: Vec<Arc<ContainerRecord>> = containers
            .of_pod(pod_id)
            .filter(|c| c.phase != ContainerPhase::Creating)
            .cloned()
            .collect();
        out.sort_by_key(|c| c.created_at);
        out
    }

    fn publish(&self, record: &ContainerRecord, kind: ContainerEventKind) {
        // No subscriber, no snapshot to take: the kubelet may not use events.
        if self.events.receiver_count() == 0 {
            return;
        }
        let _ = self.events.send(ContainerEvent {
            container_id: record.id.clone(),
            sandbox_id: record.sandbox_id.clone(),
            kind,
            at: crate::image::now_nanos(),
            pod: self.sandboxes.get(&record.sandbox_id).ok(),
            containers: self.pod_containers(&record.sandbox_id),
        });
    }

    pub(super) fn forget(&self, id: &str) -> Result<()> {
        self.store.write(|tx| tx.delete::<ContainerRecord>(id))?;
        let removed = self.containers.write().remove(id);
        if let Some(record) = removed.filter(|r| !r.phase.is_half_created()) {
            self.publish(&record, ContainerEventKind::Deleted);
        }
        self.outputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        // An OOM whose exit was never recorded (removed first) is not kept either.
        self.oom_killed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.sampler.forget(id);
        Ok(())
    }

    /// Loads recorded containers: running ones get their output copiers and exit
    /// waiters back; ones that exited while berthd was away get their exit status;
    /// ones whose shim is gone are Exited with reason Unknown; half-created ones are
    /// undone.
    async fn recover(self: &Arc<Self>) -> Result<()> {
        for record in self.store.all::<ContainerRecord>()? {
            self.images
                .restore_volume_holds(&record.id, &record.image_volumes);
            self.containers
                .write()
                .insert(record.id.clone(), Arc::new(record.clone()));
            if let Err(e) = self.clone().recover_one(record).await {
                tracing::warn!(error = %e, "recovering a container");
            }
        }
        Ok(())
    }
}

/// `<name>_<pod name>_<pod namespace>_<pod uid>_<attempt>`, as containerd reserves.
pub(super) fn container_name(
    config: &crate::domain::config::ContainerConfig,
    pod: &crate::domain::config::SandboxConfig,
) -> String {
    format!(
        "{}_{}_{}_{}_{}",
        config.name, pod.name, pod.namespace, pod.uid, config.attempt
    )
}
