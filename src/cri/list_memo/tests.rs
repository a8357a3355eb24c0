//! The kept CRI form must equal the one built from scratch after every kind of
//! change a record goes through.

use std::sync::Arc;

use k8s_cri::v1 as cri;

use super::*;
use crate::cri::{container, sandbox};
use crate::domain::{ContainerPhase, SandboxPhase};
use crate::sandbox::Sandbox;
use crate::store::{ContainerRecord, SandboxRecord};

type Containers = ListMemo<ContainerRecord>;

fn record(id: &str, pod: &str) -> ContainerRecord {
    let mut r = ContainerRecord {
        id: id.into(),
        sandbox_id: pod.into(),
        phase: ContainerPhase::Created,
        image_id: "sha256:aa".into(),
        image_name: "busybox:latest".into(),
        created_at: 7,
        ..Default::default()
    };
    r.config.name = format!("name-{id}");
    r.config.labels.insert("app".into(), "web".into());
    r.config.annotations.insert("note".into(), id.into());
    r
}

/// What the memo serves must decode to what a fresh build gives (the bytes
/// may differ: the generated types keep labels in a `HashMap`, whose order
/// differs between two builds).
fn check(memo: &Containers, records: &[Arc<ContainerRecord>]) {
    served_as_rebuilt(memo, records, container::list_item, |containers| {
        cri::ListContainersResponse { containers }
    });
}

/// The memo's response for `records` decodes to `response` of items built
/// afresh with `build`.
fn served_as_rebuilt<R, M, L>(
    memo: &ListMemo<R>,
    records: &[Arc<R>],
    build: impl Fn(&R) -> M,
    response: impl FnOnce(Vec<M>) -> L,
) where
    M: prost::Message,
    L: prost::Message + Default + PartialEq + std::fmt::Debug,
{
    let served = memo.response(records, &build);
    let rebuilt = response(records.iter().map(|r| build(r)).collect());
    assert_eq!(served.to_response::<L>().unwrap(), rebuilt);
}

/// The service's move: the record is replaced by a changed copy.
fn change(slot: &mut Arc<ContainerRecord>, f: impl FnOnce(&mut ContainerRecord)) {
    let mut next = ContainerRecord::clone(slot);
    f(&mut next);
    *slot = Arc::new(next);
}

#[test]
fn every_change_is_served_as_rebuilt() {
    let memo = Containers::default();
    let mut records = vec![Arc::new(record("a1", "p1")), Arc::new(record("b2", "p1"))];
    check(&memo, &records); // create
    check(&memo, &records); // unchanged: served from the memo
    change(&mut records[0], |c| {
        c.phase = ContainerPhase::Running;
        c.started_at = 9;
        c.pid = 42;
    });
    check(&memo, &records); // start
    change(&mut records[0], |c| {
        c.phase = ContainerPhase::Exited;
        c.finished_at = 11;
        c.exit_code = 137;
        c.reason = "OOMKilled".into();
    });
    check(&memo, &records); // exit
    change(&mut records[1], |c| c.phase = ContainerPhase::Unknown);
    check(&memo, &records); // shim gone at recovery
    records.remove(1);
    check(&memo, &records); // remove
    // Restart recovery: equal records, freshly loaded, in a fresh memo and the
    // old one alike.
    let reloaded: Vec<Arc<ContainerRecord>> = records
        .iter()
        .map(|c| Arc::new(serde_json::from_str(&serde_json::to_string(&**c).unwrap()).unwrap()))
        .collect();
    check(&memo, &reloaded);
    check(&Containers::default(), &reloaded);
}

#[test]
fn a_new_record_under_a_kept_id_is_rebuilt() {
    // Removed and created again under the same id (a restarted attempt keeps
    // no id, but nothing else rules it out): the old item must not be served.
    let memo = Containers::default();
    let first = vec![Arc::new(record("a1", "p1"))];
    check(&memo, &first);
    let mut again = record("a1", "p2");
    again.config.labels.insert("tier".into(), "db".into());
    check(&memo, &[Arc::new(again)]);
}

#[test]
fn an_unchanged_record_is_not_built_again() {
    let memo = Containers::default();
    let records = vec![Arc::new(record("a1", "p1"))];
    let builds = std::cell::Cell::new(0);
    let build = |c: &ContainerRecord| {
        builds.set(builds.get() + 1);
        container::list_item(c)
    };
    memo.response(&records, build);
    memo.response(&records, build);
    assert_eq!(builds.get(), 1);
}

#[test]
fn entries_of_removed_records_are_swept() {
    let memo = Containers::default();
    let many: Vec<Arc<ContainerRecord>> = (0..SWEEP_SLACK + 10)
        .map(|n| Arc::new(record(&format!("c{n}"), "p")))
        .collect();
    check(&memo, &many);
    drop(many);
    let one = vec![Arc::new(record("z", "p"))];
    check(&memo, &one);
    assert_eq!(memo.len(), 1);
}

#[test]
fn pods_are_served_as_rebuilt_across_changes() {
    let memo: ListMemo<Sandbox> = ListMemo::default();
    let mut r = SandboxRecord {
        id: "p1".into(),
        phase: SandboxPhase::Ready,
        runtime_handler: "runc".into(),
        created_at: 3,
        ..Default::default()
    };
    r.config.labels.insert("app".into(), "web".into());
    let check = |pods: &[Arc<Sandbox>]| {
        served_as_rebuilt(&memo, pods, sandbox::list_item, |items| {
            cri::ListPodSandboxResponse { items }
        });
    };
    let pod = |record: &SandboxRecord| {
        Arc::new(Sandbox {
            record: record.clone(),
            task: None,
        })
    };
    check(&[pod(&r)]);
    r.phase = SandboxPhase::NotReady;
    check(&[pod(&r)]); // stop
    check(&[]); // remove
}

/// The whole unfiltered response of `records` at `changes`, as the generated
/// type.
fn whole_at(
    memo: &Containers,
    changes: u64,
    records: &[Arc<ContainerRecord>],
) -> cri::ListContainersResponse {
    memo.list(Some(changes), || records.to_vec(), container::list_item)
        .to_response()
        .unwrap()
}

/// The whole response kept at `changes`; listing anything fails the test.
fn kept_at(memo: &Containers, changes: u64) -> cri::ListContainersResponse {
    memo.list(
        Some(changes),
        || unreachable!("listed though the count stands"),
        container::list_item,
    )
    .to_response()
    .unwrap()
}

fn rebuilt(records: &[Arc<ContainerRecord>]) -> cri::ListContainersResponse {
    cri::ListContainersResponse {
        containers: records.iter().map(|r| container::list_item(r)).collect(),
    }
}

#[test]
fn a_whole_response_is_kept_while_the_count_stands() {
    let memo = Containers::default();
    let mut records = vec![Arc::new(record("a1", "p1")), Arc::new(record("b2", "p1"))];
    assert_eq!(whole_at(&memo, 1, &records), rebuilt(&records));
    // The count stands: the kept bytes, without listing anything.
    assert_eq!(kept_at(&memo, 1), rebuilt(&records));
    // A change moves the count: listed and built again.
    change(&mut records[0], |c| c.phase = ContainerPhase::Running);
    assert_eq!(whole_at(&memo, 2, &records), rebuilt(&records));
    records.remove(1);
    assert_eq!(whole_at(&memo, 3, &records), rebuilt(&records));
    assert_eq!(whole_at(&memo, 4, &[]), rebuilt(&[]));
    // A filtered List is never answered with the kept whole, nor keeps one.
    let two = vec![Arc::new(record("c3", "p2")), Arc::new(record("d4", "p2"))];
    let filtered = memo.list(None, || two.clone(), container::list_item);
    assert_eq!(filtered.chunks.len(), 2, "one frame per item");
    assert_eq!(kept_at(&memo, 4), rebuilt(&[]), "count 4 still kept");
}

#[test]
fn a_slower_call_does_not_replace_a_newer_whole_response() {
    let memo = Containers::default();
    let old = vec![Arc::new(record("a1", "p1"))];
    let new = vec![Arc::new(record("a1", "p1")), Arc::new(record("b2", "p1"))];
    // A call that read count 6 kept its response before one that read 5.
    whole_at(&memo, 6, &new);
    whole_at(&memo, 5, &old);
    assert_eq!(kept_at(&memo, 6), rebuilt(&new));
}
