//! Publishing task events to containerd, in order, with retries.
//!
//! Events are queued on a channel and sent by one thread, so they leave in
//! the order they were published. Two transports, as containerd supports:
//! ttrpc `containerd.services.events.ttrpc.v1.Events/Forward` to
//! `TTRPC_ADDRESS`, or running the publish binary (`containerd publish`) with
//! the event on stdin. A failed send is retried with backoff before the next
//! event goes, so a containerd restart delays events rather than reordering them.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, SystemTime};

use containerd_shim_protos::EventsClient;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskStart,
};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::ttrpc;

use crate::reaper::Reaper;

const ATTEMPTS: u32 = 8;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// One send, by either transport: containerd answers a Forward at once, so a
/// send that takes longer is retried (and a hung publish binary killed).
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// How events reach containerd.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    /// ttrpc Events.Forward on this address (TTRPC_ADDRESS).
    Ttrpc(String),
    /// `<binary> --address <address> publish --topic T --namespace N`.
    Binary { binary: String, address: String },
    /// Nowhere (tests without containerd).
    None,
}

/// One event, ready to send.
pub struct Event {
    topic: &'static str,
    event: Any,
    at: SystemTime,
}

/// The queue's sending side; cheap to share.
#[derive(Clone)]
pub struct Publisher {
    tx: Sender<Event>,
}

impl Publisher {
    pub fn start(
        transport: Transport,
        namespace: String,
        reaper: Arc<Reaper>,
    ) -> std::io::Result<Publisher> {
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("events".into())
            .stack_size(128 * 1024)
            .spawn(move || Courier::new(transport, namespace, reaper).run(rx))?;
        Ok(Publisher { tx })
    }

    /// `type_name` is the bare message name: containerd 1.6 resolves that,
    /// not a type.googleapis.com/ URL. It is spelled out rather than taken
    /// from the message descriptor, whose construction costs the shim
    /// hundreds of KiB of heap.
    fn publish<M: Message>(&self, topic: &'static str, type_name: &str, msg: &M) {
        let event = Any {
            type_url: type_name.to_string(),
            value: msg.write_to_bytes().unwrap_or_default(),
            ..Default::default()
        };
        let _ = self.tx.send(Event {
            topic,
            event,
            at: SystemTime::now(),
        });
    }

    pub fn task_create(&self, id: &str, bundle: &str, io: TaskIO, pid: u32) {
        let msg = TaskCreate {
            container_id: id.to_string(),
            bundle: bundle.to_string(),
            io: Some(io).into(),
            pid,
            ..Default::default()
        };
        self.publish("/tasks/create", "containerd.events.TaskCreate", &msg);
    }

    pub fn task_start(&self, id: &str, pid: u32) {
        let msg = TaskStart {
            container_id: id.to_string(),
            pid,
            ..Default::default()
        };
        self.publish("/tasks/start", "containerd.events.TaskStart", &msg);
    }

    pub fn task_exit(&self, id: &str, exec_id: &str, pid: u32, status: u32, at: SystemTime) {
        let msg = TaskExit {
            container_id: id.to_string(),
            // containerd names the init process by the container id.
            id: if exec_id.is_empty() { id } else { exec_id }.to_string(),
            pid,
            exit_status: status,
            exited_at: Some(timestamp(at)).into(),
            ..Default::default()
        };
        self.publish("/tasks/exit", "containerd.events.TaskExit", &msg);
    }

    pub fn task_delete(&self, id: &str, pid: u32, status: u32, at: Option<SystemTime>) {
        let msg = TaskDelete {
            container_id: id.to_string(),
            id: id.to_string(),
            pid,
            exit_status: status,
            exited_at: at.map(timestamp).into(),
            ..Default::default()
        };
        self.publish("/tasks/delete", "containerd.events.TaskDelete", &msg);
    }

    pub fn exec_added(&self, id: &str, exec_id: &str) {
        let msg = TaskExecAdded {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        self.publish("/tasks/exec-added", "containerd.events.TaskExecAdded", &msg);
    }

    pub fn exec_started(&self, id: &str, exec_id: &str, pid: u32) {
        let msg = TaskExecStarted {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            pid,
            ..Default::default()
        };
        self.publish(
            "/tasks/exec-started",
            "containerd.events.TaskExecStarted",
            &msg,
        );
    }

    pub fn oom(&self, id: &str) {
        let msg = TaskOOM {
            container_id: id.to_string(),
            ..Default::default()
        };
        self.publish("/tasks/oom", "containerd.events.TaskOOM", &msg);
    }
}

pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

/// The sending thread's state: the transport and a lazily (re)made client.
struct Courier {
    transport: Transport,
    namespace: String,
    reaper: Arc<Reaper>,
    client: Option<EventsClient>,
}

impl Courier {
    fn new(transport: Transport, namespace: String, reaper: Arc<Reaper>) -> Self {
        Courier {
            transport,
            namespace,
            reaper,
            client: None,
        }
    }

    fn run(mut self, rx: Receiver<Event>) {
        for event in rx {
            let mut backoff = FIRST_BACKOFF;
            for attempt in 1..=ATTEMPTS {
                match self.send(&event) {
                    Ok(()) => break,
                    Err(e) if attempt == ATTEMPTS => {
                        log::error!(
                            "dropping event {} after {ATTEMPTS} attempts: {e}",
                            event.topic
                        );
                    }
                    Err(e) => {
                        log::warn!("publish {} (attempt {attempt}): {e}", event.topic);
                        self.client = None;
                        thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }
    }

    fn send(&mut self, event: &Event) -> Result<(), String> {
        match &self.transport {
            Transport::None => Ok(()),
            Transport::Ttrpc(address) => {
                if self.client.is_none() {
                    let addr = if address.contains("://") {
                        address.clone()
                    } else {
                        format!("unix://{address}")
                    };
                    let client = ttrpc::Client::connect(&addr)
                        .map_err(|e| format!("connect {addr}: {e}"))?;
                    self.client = Some(EventsClient::new(client));
                }
                let req = ForwardRequest {
                    envelope: Some(Envelope {
                        timestamp: Some(timestamp(event.at)).into(),
                        namespace: self.namespace.clone(),
                        topic: event.topic.to_string(),
                        event: Some(event.event.clone()).into(),
                        ..Default::default()
                    })
                    .into(),
                    ..Default::default()
                };
                let client = self.client.as_ref().ok_or("no client")?;
                client
                    .forward(
                        ttrpc::context::with_timeout(SEND_TIMEOUT.as_nanos() as i64),
                        &req,
                    )
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Transport::Binary { binary, address } => {
                let payload = event.event.write_to_bytes().map_err(|e| e.to_string())?;
                let mut cmd = Command::new(binary);
                cmd.args([
                    "--address",
                    address,
                    "publish",
                    "--topic",
                    event.topic,
                    "--namespace",
                ])
                .arg(&self.namespace)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
                let (mut child, exit) = self
                    .reaper
                    .spawn(&mut cmd)
                    .map_err(|e| format!("run {binary}: {e}"))?;
                let pid = child.id();
                if let Some(mut stdin) = child.stdin.take() {
                    // An event is a few hundred bytes: far below a pipe's
                    // buffer, so this never waits for the reader.
                    stdin.write_all(&payload).map_err(|e| e.to_string())?;
                }
                drop(child);
                match self.reaper.wait_for(pid, &exit, SEND_TIMEOUT) {
                    Some(0) => Ok(()),
                    Some(status) => Err(format!("{binary} publish exited with {status}")),
                    None => Err(format!("{binary} publish timed out after {SEND_TIMEOUT:?}")),
                }
            }
        }
    }
}
