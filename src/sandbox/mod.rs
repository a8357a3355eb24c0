//! Pod sandboxes: their lifecycle (run, stop, remove), the in-memory index that
//! serves Status and List, and recovery after a berthd restart.
//!
//! A pod is a record in the store ([`SandboxRecord`]), a bundle directory
//! `<state>/pods/<id>/` (config.json, hostname, hosts, resolv.conf, the shm tmpfs,
//! the shim's `address`), a network namespace under `<state>/netns/`, a CNI
//! attachment and an infra (pause) task in the pod's shim. Calls that change a pod
//! hold its id exclusively; creating or starting a container holds it shared
//! ([`ReadyPod`]), so a pod never stops or goes in the middle of one. List and
//! Status read the index without it.

mod events;
mod files;
mod infra;
mod list;
mod names;
mod net;
mod observe;
mod pause;
mod pod_cidr;
mod port_forward;
mod recover;
mod run;
mod shim_log;
mod stop;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
mod userns;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::config::Config;
use crate::counted::Counted;
use crate::error::{Error, Result};
use crate::id_locks::{IdGuard, IdLocks};
use crate::image::ImageService;
use crate::network::Cni;
use crate::shim::{Connect, ShimEnv, TaskClient, TtrpcConnect};
use crate::spec::{HostFacts, PodFiles};
use crate::store::{SandboxRecord, Store};

pub use events::{ContainerEvent, ContainerEventKind, EVENT_BACKLOG};
pub use list::SandboxFilter;
pub use names::{NameIndex, sandbox_name};
pub use observe::ObservedSandbox;
pub use stop::{ExclusivePod, ReadyPod};

/// A pod as the index holds it: its record and, while its shim answers, a client.
#[derive(Clone)]
pub struct Sandbox {
    pub record: SandboxRecord,
    /// The pod's shim; containers of the pod are created through the same one.
    pub task: Option<TaskClient>,
}

impl Sandbox {
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// The pinned network namespace; `None` with host network or once stopped.
    pub fn netns(&self) -> Option<&Path> {
        self.record.netns.as_deref()
    }

    /// The infra process, whose namespaces the pod's containers join.
    pub fn infra_pid(&self) -> u32 {
        self.record.pid
    }

    /// The pod's shared files, for the specs of its containers.
    pub fn pod_files(&self) -> PodFiles {
        files::pod_files(&self.record.bundle, self.record.shm_mounted)
    }
}

pub struct SandboxService {
    config: Config,
    store: Arc<Store>,
    cni: Cni,
    shims: ShimEnv,
    /// How the pods' shims are reached: over ttrpc, or an in-memory fake in tests.
    connector: Arc<dyn Connect>,
    /// The built-in infra rootfs, or why there is none.
    pause_rootfs: std::result::Result<PathBuf, String>,
    /// For a configured `sandbox_image`.
    images: Arc<ImageService>,
    host: HostFacts,
    names: Arc<NameIndex>,
    /// Shared, so a List copies pointers rather than every pod's config.
    pods: Counted<HashMap<String, Arc<Sandbox>>>,
    /// Calls that change a pod hold its id exclusively; CreateContainer and
    /// StartContainer hold it shared, so a pod stops or goes only between them.
    locks: IdLocks,
    /// Readers of each pod's shim log, dropped with the pod.
    shim_logs: Mutex<HashMap<String, shim_log::ShimLog>>,
    /// Pod and container lifecycle events (GetContainerEvents).
    events: tokio::sync::broadcast::Sender<ContainerEvent>,
    pod_containers: OnceLock<events::PodContainers>,
    /// User namespaces of pods being run, not indexed yet.
    userns_claims: userns::Claims,
}

impl SandboxService {
    /// Installs the pause rootfs and loads the recorded pods, reconnecting to their
    /// shims and undoing pods a crash left half-created.
    pub async fn open(
        config: Config,
        store: Arc<Store>,
        shims: ShimEnv,
        names: Arc<NameIndex>,
        images: Arc<ImageService>,
        host: HostFacts,
    ) -> Result<Arc<SandboxService>> {
        let connector = Arc::new(TtrpcConnect);
        Self::open_with(config, store, shims, names, images, host, connector).await
    }

    /// `open` with the way to reach shims given (tests give a fake).
    pub(crate) async fn open_with(
        config: Config,
        store: Arc<Store>,
        shims: ShimEnv,
        names: Arc<NameIndex>,
        images: Arc<ImageService>,
        host: HostFacts,
        connector: Arc<dyn Connect>,
    ) -> Result<Arc<SandboxService>> {
        // Without a pause binary berthd still serves images; RunPodSandbox says why not.
        let root = config.root.clone();
        let configured = config.pause_binary.clone();
        let pause_rootfs = tokio::task::spawn_blocking(move || {
            pause::install(&root, &pause::pause_binary(&configured)?)
        })
        .await?
        .map_err(|e| {
            tracing::warn!(error = %e, "no pause rootfs; pods cannot run");
            e.to_string()
        });
        let cni = Cni::new(
            &config.cni.conf_dir,
            &config.cni.bin_dirs,
            &config.root.join("cni/results"),
        );
        let service = Arc::new(SandboxService {
            host,
            config,
            store,
            cni,
            shims,
            connector,
            pause_rootfs,
            images,
            userns_claims: Default::default(),
            names,
            pods: Counted::default(),
            locks: IdLocks::default(),
            shim_logs: Mutex::new(HashMap::new()),
            events: events::channel(),
            pod_containers: OnceLock::new(),
        });
        service.load_pod_cidrs()?;
        service.recover().await?;
        Ok(service)
    }

    /// The CNI caller, for NetworkReady.
    pub fn cni(&self) -> &Cni {
        &self.cni
    }

    /// The pod with this id or unique id prefix.
    pub fn get(&self, id: &str) -> Result<Arc<Sandbox>> {
        let pods = self.pods.read();
        if let Some(pod) = pods.get(id) {
            return Ok(Arc::clone(pod));
        }
        let mut matches = pods
            .values()
            .filter(|p| !id.is_empty() && p.id().starts_with(id));
        match (matches.next(), matches.next()) {
            (Some(pod), None) => Ok(Arc::clone(pod)),
            (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
                "pod sandbox id prefix {id:?} is ambiguous"
            ))),
            _ => Err(Error::NotFound(format!("pod sandbox {id:?} not found"))),
        }
    }

    fn bundle(&self, id: &str) -> PathBuf {
        self.config.state.join("pods").join(id)
    }

    fn netns_dir(&self) -> PathBuf {
        self.config.state.join("netns")
    }

    /// The OCI runtime's state directory, for every handler.
    fn runtime_root(&self) -> PathBuf {
        self.config.state.join("runc")
    }

    /// Serialises calls that change one pod. Held across shim and CNI calls on
    /// purpose: it guards only this pod.
    async fn lock(&self, id: &str) -> IdGuard {
        self.locks.write(id).await
    }

    /// Commits `record` (one transaction), then shows it in the index.
    /// Then sends the events the change of phase means.
    fn save(&self, record: SandboxRecord, task: Option<TaskClient>) -> Result<()> {
        self.store.write(|tx| tx.put(&record))?;
        let after = record.phase;
        let pod = Arc::new(Sandbox { record, task });
        let before = self
            .pods
            .write()
            .insert(pod.id().to_string(), Arc::clone(&pod))
            .map(|p| p.record.phase);
        self.publish(&pod, events::transition(before, after));
        Ok(())
    }

    /// Starts copying the pod's shim log into berthd's; a failure costs only logs.
    fn follow_shim_log(&self, id: &str, bundle: &Path) {
        match shim_log::ShimLog::open(bundle, id) {
            Ok(log) => {
                let mut logs = self.shim_logs.lock().unwrap_or_else(|p| p.into_inner());
                logs.insert(id.to_string(), log);
            }
            Err(e) => tracing::warn!(pod_id = %id, error = %e, "cannot read the shim's log"),
        }
    }

    fn unfollow_shim_log(&self, id: &str) {
        let mut logs = self.shim_logs.lock().unwrap_or_else(|p| p.into_inner());
        logs.remove(id);
    }

    /// Records and indexes a pod as a test sets it up, with `task` as its shim.
    #[cfg(test)]
    pub(crate) fn put_for_tests(
        &self,
        record: SandboxRecord,
        task: Option<TaskClient>,
    ) -> Result<()> {
        self.save(record, task)
    }

    fn unindex(&self, id: &str) {
        let mut pods = self.pods.write();
        pods.remove(id);
    }
}
