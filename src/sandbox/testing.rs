//! A node for unit tests of the pod and container services: real store, image
//! service and sandbox service on temporary directories, pods indexed by hand with
//! an in-memory shim ([`FakeTasks`]) instead of a started one. Needs no root.

use std::sync::Arc;

use super::{NameIndex, SandboxService};
use crate::config::Config;
use crate::domain::SandboxPhase;
use crate::domain::config::{NamespaceMode, SandboxConfig};
use crate::image::ImageService;
use crate::shim::fake::{FakeShims, FakeTasks};
use crate::shim::{ShimEnv, TaskClient};
use crate::spec::HostFacts;
use crate::store::{SandboxRecord, Store};

pub(crate) struct TestNode {
    pub config: Config,
    pub store: Arc<Store>,
    pub images: Arc<ImageService>,
    pub names: Arc<NameIndex>,
    pub sandboxes: Arc<SandboxService>,
    pub host: HostFacts,
    /// The shims pods reconnect to, by the address in their bundle.
    pub shims: Arc<FakeShims>,
    _dir: tempfile::TempDir,
}

impl TestNode {
    pub async fn open() -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            root: dir.path().join("root"),
            state: dir.path().join("state"),
            // Not there: no pause rootfs is installed, none is needed.
            pause_binary: dir.path().join("no-pause"),
            ..Config::default()
        };
        std::fs::create_dir_all(&config.root).unwrap();
        std::fs::create_dir_all(&config.state).unwrap();
        let store = Arc::new(Store::open(&config.root.join("meta.redb")).unwrap());
        let images = Arc::new(
            ImageService::open(&config.root, config.registry.clone(), store.clone()).unwrap(),
        );
        let names = Arc::new(NameIndex::default());
        // Whatever this host allows, so that no spec check refuses.
        let host = HostFacts {
            min_oom_score_adj: -1000,
            cgroup_v2: false,
            capabilities: u64::MAX,
            lsm: Default::default(),
        };
        let shims = Arc::new(FakeShims::default());
        let sandboxes = open_sandboxes(&config, &store, &images, &names, host, &shims).await;
        TestNode {
            config,
            store,
            images,
            names,
            sandboxes,
            host,
            shims,
            _dir: dir,
        }
    }

    /// A Ready pod on the host's network (no netns, no CNI) whose shim is `shim`;
    /// the fake holds its running infra task.
    pub fn ready_pod(&self, id: &str, shim: &Arc<FakeTasks>) -> SandboxRecord {
        let record = self.ready_pod_record(id, shim);
        self.put_pod(record.clone(), Some(shim.client()));
        record
    }

    /// The same pod, only recorded in the store (as a restarted berthd finds it),
    /// with the address of `shim` in its bundle.
    pub fn recorded_pod(&self, id: &str, shim: &Arc<FakeTasks>) -> SandboxRecord {
        let record = self.ready_pod_record(id, shim);
        std::fs::create_dir_all(&record.bundle).unwrap();
        let address = format!("fake://{id}");
        std::fs::write(record.bundle.join("address"), format!("{address}\n")).unwrap();
        self.shims.serve(&address, shim);
        self.store.write(|tx| tx.put(&record)).unwrap();
        record
    }

    fn ready_pod_record(&self, id: &str, shim: &Arc<FakeTasks>) -> SandboxRecord {
        shim.set_task(
            id,
            crate::shim::TaskState {
                pid: 1,
                status: crate::shim::TaskStatus::Running,
                exit: Default::default(),
            },
        );
        let mut config = SandboxConfig {
            name: format!("pod-{id}"),
            uid: id.to_string(),
            namespace: "default".into(),
            ..Default::default()
        };
        config.linux.security_context.namespace_options.network = NamespaceMode::Node;
        SandboxRecord {
            id: id.to_string(),
            config,
            phase: SandboxPhase::Ready,
            bundle: self.config.state.join("pods").join(id),
            pid: 1,
            ..Default::default()
        }
    }

    pub fn put_pod(&self, record: SandboxRecord, task: Option<TaskClient>) {
        self.sandboxes.put_for_tests(record, task).unwrap();
    }

    /// A second sandbox service on the same store, as berthd's after a restart:
    /// it recovers the recorded pods.
    pub async fn restart_sandboxes(&self) -> Arc<SandboxService> {
        let names = Arc::new(NameIndex::default());
        open_sandboxes(
            &self.config,
            &self.store,
            &self.images,
            &names,
            self.host,
            &self.shims,
        )
        .await
    }
}

async fn open_sandboxes(
    config: &Config,
    store: &Arc<Store>,
    images: &Arc<ImageService>,
    names: &Arc<NameIndex>,
    host: HostFacts,
    shims: &Arc<FakeShims>,
) -> Arc<SandboxService> {
    let env = ShimEnv {
        events_address: String::new(),
        publish_binary: config.root.join("no-berthd"),
        socket_dir: config.state.join("s"),
    };
    SandboxService::open_with(
        config.clone(),
        store.clone(),
        env,
        names.clone(),
        images.clone(),
        host,
        shims.clone(),
    )
    .await
    .unwrap()
}
