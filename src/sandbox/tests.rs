//! SandboxService's decisions against an in-memory shim: what stopping a pod asks
//! of its shim and the phase it records. No root, runc or shim needed.

use std::time::Duration;

use tokio::sync::broadcast;

use super::testing::TestNode;
use crate::domain::SandboxPhase;
use crate::error::Error;
use crate::shim::ShimEvent;
use crate::shim::fake::FakeTasks;
use crate::store::SandboxRecord;

/// How long a test waits for an event to be acted on.
const EVENT_HANDLED_WITHIN: Duration = Duration::from_secs(5);

#[tokio::test]
async fn stop_kills_and_deletes_the_infra_task_and_leaves_the_pod_not_ready() {
    let node = TestNode::open().await;
    let shim = FakeTasks::new();
    node.ready_pod("p1", &shim);

    let held = node.sandboxes.hold("p1").await.unwrap().unwrap();
    node.sandboxes.stop_held(&held).await.unwrap();
    drop(held);
    let calls = shim.calls();
    assert!(
        calls.contains(&format!("kill p1 {}", libc::SIGKILL)),
        "{calls:?}"
    );
    assert!(calls.contains(&"delete p1".to_string()), "{calls:?}");
    assert!(shim.task("p1").is_none());
    let pod = node.sandboxes.get("p1").unwrap();
    assert_eq!(pod.record.phase, SandboxPhase::NotReady);
    let stored: SandboxRecord = node.store.get("p1").unwrap().unwrap();
    assert_eq!(stored.phase, SandboxPhase::NotReady);
    // No container may be created in it any more.
    let refused = node.sandboxes.hold_ready("p1").await.err().unwrap();
    assert!(
        matches!(refused, Error::FailedPrecondition(_)),
        "{refused:?}"
    );
}

#[tokio::test]
async fn stop_of_a_pod_whose_infra_exited_deletes_without_signalling() {
    let node = TestNode::open().await;
    let shim = FakeTasks::new();
    node.ready_pod("p1", &shim);
    shim.exit("p1", 0);

    let held = node.sandboxes.hold("p1").await.unwrap().unwrap();
    node.sandboxes.stop_held(&held).await.unwrap();
    let calls = shim.calls();
    assert!(!calls.iter().any(|c| c.starts_with("kill")), "{calls:?}");
    assert!(calls.contains(&"delete p1".to_string()), "{calls:?}");
}

#[tokio::test]
async fn an_infra_exit_makes_a_ready_pod_not_ready() {
    let node = TestNode::open().await;
    let shim = FakeTasks::new();
    node.ready_pod("p1", &shim);
    let (events, _) = broadcast::channel(16);
    node.sandboxes.watch_exits(events.subscribe());

    events
        .send(ShimEvent::Exit {
            container_id: "p1".into(),
            process_id: "p1".into(),
            pid: 1,
            exit_status: 0,
            exited_at: 1,
        })
        .unwrap();
    let deadline = tokio::time::Instant::now() + EVENT_HANDLED_WITHIN;
    while node.sandboxes.get("p1").unwrap().record.phase == SandboxPhase::Ready {
        assert!(tokio::time::Instant::now() < deadline, "pod still Ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        node.sandboxes.get("p1").unwrap().record.phase,
        SandboxPhase::NotReady
    );
}

#[tokio::test]
async fn recovery_reconnects_a_ready_pod_whose_infra_runs() {
    let node = TestNode::open().await;
    let shim = FakeTasks::new();
    node.recorded_pod("p1", &shim);

    let sandboxes = node.restart_sandboxes().await;
    let pod = sandboxes.get("p1").unwrap();
    assert_eq!(pod.record.phase, SandboxPhase::Ready);
    assert!(pod.task.is_some());
    assert!(shim.calls().contains(&"state p1".to_string()));
    // Containers can be created in it again, through the same shim.
    let ready = sandboxes.hold_ready("p1").await.unwrap();
    ready.task.state("p1", "").await.unwrap();
}

#[tokio::test]
async fn recovery_marks_a_pod_whose_infra_or_shim_is_gone_not_ready() {
    let node = TestNode::open().await;
    let exited = FakeTasks::new();
    node.recorded_pod("p1", &exited);
    exited.exit("p1", 0);
    let gone = FakeTasks::new();
    node.recorded_pod("p2", &gone);
    gone.go_away();

    let sandboxes = node.restart_sandboxes().await;
    for id in ["p1", "p2"] {
        let pod = sandboxes.get(id).unwrap();
        assert_eq!(pod.record.phase, SandboxPhase::NotReady, "{id}");
        let stored: SandboxRecord = node.store.get(id).unwrap().unwrap();
        assert_eq!(stored.phase, SandboxPhase::NotReady, "{id}");
        let refused = sandboxes.hold_ready(id).await.err().unwrap();
        assert!(
            matches!(refused, Error::FailedPrecondition(_)),
            "{refused:?}"
        );
    }
    // A shim that answers is kept, so Stop and Remove can use it.
    assert!(sandboxes.get("p1").unwrap().task.is_some());
}
