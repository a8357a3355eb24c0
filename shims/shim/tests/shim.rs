//! The berth shim under real runc, driven over ttrpc as containerd drives it.

mod common;

use std::time::Duration;

use common::*;
use containerd_shim_protos::api::{
    CloseIORequest, ConnectRequest, ExecProcessRequest, ResizePtyRequest, ShutdownRequest,
    StatsRequest,
};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::types::task::Status;
use serde_json::json;

#[test]
fn lifecycle_with_fifos_exit_code_and_events_in_order() {
    let Some(env) = Env::new() else { return };
    let b = env.bundle(
        "life",
        &[
            "sh",
            "-c",
            "echo hello; echo oops >&2; seq 1 100000; exit 3",
        ],
        |_| {},
    );
    let address = env.start_shim(&b);
    assert_eq!(
        std::fs::read_to_string(b.path.join("address")).unwrap(),
        address
    );
    let client = connect(&address);
    let io = Stdio3::fifos(&env.path().join("io"), "life", false);
    // A slow stdout reader: the process must block, not lose output.
    let out = read_fifo(&io.stdout, Duration::from_millis(500));
    let err = read_fifo(&io.stderr, Duration::ZERO);

    let pid = client
        .create(ctx(), &env.create_request(&b, &io))
        .expect("create")
        .pid;
    assert!(pid > 0);
    assert!(b.rootfs_mounted(), "rootfs mounted on create");
    assert_eq!(
        state(&client, "life", "").status.enum_value(),
        Ok(Status::CREATED)
    );
    assert_eq!(start(&client, "life", ""), pid);
    assert_eq!(wait(&client, "life", ""), 3);

    let stdout = out.join().unwrap();
    let expected: String = std::iter::once("hello".to_string())
        .chain((1..=100000).map(|i| i.to_string()))
        .map(|l| l + "\n")
        .collect();
    assert_eq!(stdout.len(), expected.len(), "no output lost");
    assert_eq!(stdout, expected);
    assert_eq!(err.join().unwrap(), "oops\n");

    let st = state(&client, "life", "");
    assert_eq!(st.status.enum_value(), Ok(Status::STOPPED));
    assert_eq!(st.exit_status, 3);

    let del = delete(&client, "life", "").expect("delete");
    assert_eq!(del.exit_status, 3);
    assert_eq!(del.pid, pid);
    assert!(!b.rootfs_mounted(), "rootfs unmounted on delete");
    assert!(!runc_knows(&env, "life"));

    assert!(env.wait_topic("/tasks/delete", 1));
    assert_eq!(
        env.topics(),
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
    let exit = &env.events.lock().unwrap()[2];
    assert_eq!(exit.1, "containerd.events.TaskExit");

    client.shutdown(ctx(), &ShutdownRequest::default()).ok();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !std::path::Path::new(address.trim_start_matches("unix://")).exists(),
        "socket removed on shutdown"
    );
}
