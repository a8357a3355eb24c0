//! ContainerService's decisions against an in-memory shim: what each call asks of
//! the shim, and the phase, pid and exit it records. No root, runc or shim needed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::ContainerService;
use crate::domain::ContainerPhase;
use crate::domain::config::ContainerConfig;
use crate::error::Error;
use crate::sandbox::testing::TestNode;
use crate::shim::fake::FakeTasks;
use crate::shim::{ShimEvent, TaskState, TaskStatus};
use crate::store::ContainerRecord;

/// How long a test waits for a background waiter to record an exit.
const EXIT_RECORDED_WITHIN: Duration = Duration::from_secs(5);
/// How long a test waits for a signal to reach the shim: well under KILL_WAIT,
/// the time a stop gives a SIGKILLed container.
const SIGNALLED_WITHIN: Duration = Duration::from_secs(5);

async fn containers(node: &TestNode) -> Arc<ContainerService> {
    containers_with_events(node).await.0
}

/// The service and the sender of the shim events it watches.
async fn containers_with_events(
    node: &TestNode,
) -> (Arc<ContainerService>, broadcast::Sender<ShimEvent>) {
    let (events, _) = broadcast::channel(16);
    let service = ContainerService::open_with(
        node.config.clone(),
        node.store.clone(),
        node.images.clone(),
        node.sandboxes.clone(),
        node.names.clone(),
        node.host,
        &events,
        Default::default(),
    )
    .await
    .unwrap();
    (service, events)
}

fn record(node: &TestNode, id: &str, phase: ContainerPhase) -> ContainerRecord {
    ContainerRecord {
        id: id.to_string(),
        sandbox_id: "p1".to_string(),
        config: ContainerConfig {
            name: format!("name-{id}"),
            ..Default::default()
        },
        phase,
        bundle: node.config.state.join("containers").join(id),
        created_at: 1,
        ..Default::default()
    }
}

fn task(status: TaskStatus, pid: u32) -> TaskState {
    TaskState {
        pid,
        status,
        exit: Default::default(),
    }
}

fn called(shim: &FakeTasks, prefix: &str) -> bool {
    shim.calls().iter().any(|c| c.starts_with(prefix))
}

async fn until_exited(containers: &ContainerService, id: &str) -> ContainerRecord {
    let deadline = tokio::time::Instant::now() + EXIT_RECORDED_WITHIN;
    loop {
        let record = containers.get(id).unwrap();
        if record.phase == ContainerPhase::Exited {
            return record;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "exit of {id} not recorded"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn start_runs_a_created_container_records_its_pid_then_its_exit() {
    let node = TestNode::open().await;
    let shim = FakeTasks::new();
    node.ready_pod("p1", &shim);
    let containers = containers(&node).await;
    shim.set_task("c1", task(TaskStatus::Created, 4321));
    containers
        .save(&record(&node, "c1", ContainerPhase::Created))
        .unwrap();

    containers.start("c1").await.unwrap();
    let running = containers.get("c1").unwrap();
    assert_eq!(running.phase, ContainerPhase::Running);
    assert_eq!(running.pid, 4321);
    assert!(running.started_at > 0);
    assert_eq!(shim.task("c1").unwrap().status, TaskStatus::Running);
    // Committed before the reply, not only indexed.
    let stored: ContainerRecord = node.store.get("c1").unwrap().unwrap();
    assert_eq!(stored.phase, ContainerPhase::Running);

    shim.exit("c1", 0);
    let exited = until_exited(&containers, "c1").await;
    assert_eq!((exited.exit_code, exited.reason.as_str()), (0, "Completed"));
}

/// The shim's OOM event may trail the SIGKILL exit it explains: the exit waits
/// for it and is decided when it comes, not at the end of the grace; with no
/// event the exit is an Error, once the grace is over.
#[tokio::test]
async fn a_sigkill_exit_waits_for_a_trailing_oom_event_and_no_longer() {
    let node = TestNode::open().await;
    let shim = FakeTasks::new();
    node.ready_pod("p1", &shim);
    let (containers, events) = containers_with_events(&node).await;
    for id in ["oom", "killed"] {
        shim.set_task(id, task(TaskStatus::Created, 4321));
        containers
            .save(&record(&node, id, ContainerPhase::Created))
            .unwrap();
        containers.start(id).await.unwrap();
    }
    let grace = super::lifecycle::OOM_EVENT_GRACE;
    let start = tokio::time::Instant::now();
    shim.exit("oom", super::lifecycle::SIGKILLED);
    shim.exit("killed", super::lifecycle::SIGKILLED);

    // A quarter into the grace, after another container's event.
    tokio::time::sleep(grace / 4).await;
    assert_eq!(
        containers.get("oom").unwrap().phase,
        ContainerPhase::Running
    );
    for id in ["elsewhere", "oom"] {
        let container_id = id.to_string();
        events.send(ShimEvent::Oom { container_id }).unwrap();
    }
    let oom = until_exited(&containers, "oom").await;
    assert_eq!((oom.exit_code, oom.reason.as_str()), (137, "OOMKilled"));
    assert!(
        start.elapsed() < grace * 3 / 4,
        "decided {:?} after the exit, though its event came at {:?}",
        start.elapsed(),
        grace / 4
    );
    assert_eq!(
        containers.get("killed").unwrap().phase,
        ContainerPhase::Running,
        "a SIGKILL with no OOM event was decided before its grace was over"
    );

    let killed = until_exited(&containers, "killed").await;
    assert_eq!((killed.exit_code, killed.reason.as_str()), (137, "Error"));
    assert!(start.elapsed() >= grace);
}

#[tokio::test]
async fn a_failed_shim_start_leaves_the_container_exited_with_the_reason() {
    let node = TestNode::open().await;
    let shim = FakeTasks::new();
    node.ready_pod("p1", &shim);
    let containers = containers(&node).await;
    shim.set_task("c1", task(TaskStatus::Created, 4321));
    containers
        .save(&record(&node, "c1", ContainerPhase::Created))
        .unwrap();
    shim.fail("start", || {
        Error::Runtime("shim Start: exec: \"nope\": not found".into())
    });

    let err = containers.start("c1").await.unwrap_err();
    assert!(matches!(err, Error::Runtime(_)), "{err:?}");
    let record = containers.get("c1").unwrap();
    assert_eq!(record.phase, ContainerPhase::Exited);
    assert_eq!(
        (record.exit_code, record.reason.as_str()),
        (128, "StartError")
    );
    assert!(record.message.contains("not found"), "{}", record.message);
    assert!(record.finished_at > 0);
    // Over for good: a second start is refused without asking the shim.
    let again = containers.start("c1").await.unwrap_err();
    assert!(matches!(again, Error::FailedPrecondition(_)), "{again:?}");
    assert_eq!(shim.calls().iter().filter(|c| *c == "start c1").count(), 1);
}

#[tokio::test]
async fn start_refuses_a_container_that_is_not_created() {
    let node = TestNode::open().await;
    let shim = FakeTasks::new();
    node.ready_pod("p1", &shim);
    let containers = containers(&node).await;
    containers
        .save(&record(&node, "c1", ContainerPhase::Running))
        .unwrap();

    let err = containers.start("c1").await.unwrap_err();
    assert_eq!(err.to_string(), "container c1 is Running, not Created");
    assert!(!called(&shim, "start c1"));
}

#[tokio::test]
async fn stop_of_an_exited_container_does_not_signal_it() {
    let node = TestNode::open().await;
    let shim = FakeTasks::new();
    node.ready_pod("p1", &shim);
    let containers = containers(&node).await;
    containers
        .save(&record(&node, "c1", ContainerPhase::Exited))
        .unwrap();

    containers
        .stop("c1", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(!called(&shim, "kill"), "{:?}", shim.calls());
    assert_eq!(containers.get("c1").unwrap().phase, ContainerPhase::Exited);
    // And an unknown container stops as well.
    containers.stop("nope", Duration::ZERO).await.unwrap();
}

#[tokio::test]
async fn stop_sends_the_stop_signal_and_records_the_exit() {
    let node = TestNode::open().await;
    let shim = FakeTasks::new();
    node.ready_pod("p1", &shim);
    let containers = containers(&node).await;
    shim.set_task("c1", task(TaskStatus::Running, 4321));
    containers
        .save(&record(&node, "c1", ContainerPhase::Running))
        .unwrap();

    containers.stop("c1", Duration::from_secs(5)).await.unwrap();
    let calls = shim.calls();
    assert!(
        calls.contains(&format!("kill c1 {}", libc::SIGTERM)),
        "{calls:?}"
    );
    assert!(
        !calls.contains(&format!("kill c1 {}", libc::SIGKILL)),
        "{calls:?}"
    );
    let record = containers.get("c1").unwrap();
    assert_eq!(record.phase, ContainerPhase::Exited);
    assert_eq!(
        (record.exit_code, record.reason.as_str()),
        (128 + libc::SIGTERM, "Error")
    );
}

/// A pod's containers are stopped together: one that does not die at once does
/// not hold back the SIGKILL of the next (one after the other, the second was
/// signalled only after the first's KILL_WAIT of 10 s).
#[tokio::test]
async fn stop_pod_sandbox_signals_its_containers_together() {
    let node = TestNode::open().await;
    let shim = FakeTasks::new();
    node.ready_pod("p1", &shim);
    let containers = containers(&node).await;
    for id in ["c1", "c2"] {
        shim.set_task(id, task(TaskStatus::Running, 4321));
        shim.make_unkillable(id);
        containers
            .save(&record(&node, id, ContainerPhase::Running))
            .unwrap();
    }
    let both_killed = async {
        let killed = |id: &str| {
            shim.calls()
                .contains(&format!("kill {id} {}", libc::SIGKILL))
        };
        while !(killed("c1") && killed("c2")) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };

    tokio::select! {
        stopped = containers.stop_pod_sandbox("p1") => {
            panic!("the pod stopped though its containers live: {stopped:?}")
        }
        signalled = tokio::time::timeout(SIGNALLED_WITHIN, both_killed) => {
            assert!(signalled.is_ok(), "{:?}", shim.calls());
        }
    }
}

#[tokio::test]
async fn remove_kills_a_running_container_deletes_its_task_and_forgets_it() {
    let node = TestNode::open().await;
    let shim = FakeTasks::new();
    node.ready_pod("p1", &shim);
    let containers = containers(&node).await;
    shim.set_task("c1", task(TaskStatus::Running, 4321));
    containers
        .save(&record(&node, "c1", ContainerPhase::Running))
        .unwrap();

    containers.remove("c1").await.unwrap();
    let calls = shim.calls();
    let kill = calls
        .iter()
        .position(|c| *c == format!("kill c1 {}", libc::SIGKILL));
    let delete = calls.iter().position(|c| c == "delete c1");
    assert!(kill.is_some() && kill < delete, "{calls:?}");
    assert!(shim.task("c1").is_none());
    assert!(matches!(containers.get("c1"), Err(Error::NotFound(_))));
    assert!(node.store.get::<ContainerRecord>("c1").unwrap().is_none());
}

#[tokio::test]
async fn remove_keeps_everything_when_the_shim_will_not_delete_the_task() {
    let node = TestNode::open().await;
    let shim = FakeTasks::new();
    node.ready_pod("p1", &shim);
    let containers = containers(&node).await;
    shim.set_task("c1", task(TaskStatus::Stopped, 4321));
    containers
        .save(&record(&node, "c1", ContainerPhase::Exited))
        .unwrap();
    shim.fail("delete", || {
        Error::Runtime("shim Delete: runc: busy".into())
    });

    let err = containers.remove("c1").await.unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err:?}");
    assert!(err.to_string().contains("record are kept"), "{err}");
    assert_eq!(containers.get("c1").unwrap().phase, ContainerPhase::Exited);
    assert!(node.store.get::<ContainerRecord>("c1").unwrap().is_some());
}

#[tokio::test]
async fn recovery_marks_a_container_whose_shim_is_gone_exited_unknown() {
    let node = TestNode::open().await;
    // The pod came back from its record, but its shim did not.
    let mut pod = node.ready_pod("p1", &FakeTasks::new());
    pod.phase = crate::domain::SandboxPhase::NotReady;
    node.put_pod(pod, None);
    let running = record(&node, "c1", ContainerPhase::Running);
    node.store.write(|tx| tx.put(&running)).unwrap();

    let containers = containers(&node).await;
    let record = containers.get("c1").unwrap();
    assert_eq!(record.phase, ContainerPhase::Exited);
    assert_eq!((record.exit_code, record.reason.as_str()), (255, "Unknown"));
    assert!(
        record.message.contains("shim is gone"),
        "{}",
        record.message
    );
    let stored: ContainerRecord = node.store.get("c1").unwrap().unwrap();
    assert_eq!(stored.phase, ContainerPhase::Exited);
}

#[tokio::test]
async fn recovery_marks_a_container_its_shim_no_longer_knows_exited_unknown() {
    let node = TestNode::open().await;
    let shim = FakeTasks::new();
    node.ready_pod("p1", &shim);
    let created = record(&node, "c1", ContainerPhase::Created);
    node.store.write(|tx| tx.put(&created)).unwrap();

    let containers = containers(&node).await;
    assert!(called(&shim, "state c1"), "{:?}", shim.calls());
    let record = containers.get("c1").unwrap();
    assert_eq!(
        (record.phase, record.reason.as_str()),
        (ContainerPhase::Exited, "Unknown")
    );
}

#[tokio::test]
async fn recovery_undoes_a_half_created_container() {
    let node = TestNode::open().await;
    let shim = FakeTasks::new();
    node.ready_pod("p1", &shim);
    shim.set_task("c1", task(TaskStatus::Created, 4321));
    let creating = record(&node, "c1", ContainerPhase::Creating);
    std::fs::create_dir_all(&creating.bundle).unwrap();
    node.store.write(|tx| tx.put(&creating)).unwrap();

    let containers = containers(&node).await;
    assert!(called(&shim, "delete c1"), "{:?}", shim.calls());
    assert!(shim.task("c1").is_none());
    assert!(matches!(containers.get("c1"), Err(Error::NotFound(_))));
    assert!(node.store.get::<ContainerRecord>("c1").unwrap().is_none());
    assert!(!creating.bundle.exists());
}

#[tokio::test]
async fn a_shim_that_dies_under_a_running_container_leaves_it_exited_unknown() {
    let node = TestNode::open().await;
    let shim = FakeTasks::new();
    node.ready_pod("p1", &shim);
    let containers = containers(&node).await;
    shim.set_task("c1", task(TaskStatus::Created, 4321));
    containers
        .save(&record(&node, "c1", ContainerPhase::Created))
        .unwrap();
    containers.start("c1").await.unwrap();

    shim.go_away();
    let record = until_exited(&containers, "c1").await;
    assert_eq!((record.exit_code, record.reason.as_str()), (255, "Unknown"));
}
