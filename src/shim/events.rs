//! The events endpoint shims forward to (`containerd.services.events.ttrpc.v1.Events`),
//! and the `publish` path for shims that exec a binary instead. berthd cares about
//! exits and OOM kills; the rest is logged at debug level.

use std::path::Path;
use std::sync::Arc;

use containerd_shim_protos::events::task::{TaskExit, TaskOOM};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::{Events, EventsClient, create_events};
use containerd_shim_protos::ttrpc;
use containerd_shim_protos::ttrpc::asynchronous::{Server, TtrpcContext};
use tokio::sync::broadcast;

use crate::error::{Error, Result};

pub const TOPIC_EXIT: &str = "/tasks/exit";
pub const TOPIC_OOM: &str = "/tasks/oom";

/// What berthd acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShimEvent {
    Exit {
        container_id: String,
        /// The exec id, or the container id for the container's init process.
        process_id: String,
        pid: u32,
        exit_status: u32,
        exited_at: i64,
    },
    Oom {
        container_id: String,
    },
}

/// Decodes an envelope's event; `None` for topics berthd does not act on.
pub fn decode(topic: &str, event: &Any) -> Result<Option<ShimEvent>> {
    let bad = |e: containerd_shim_protos::protobuf::Error| {
        Error::InvalidArgument(format!("event {topic}: {e}"))
    };
    Ok(match topic {
        TOPIC_EXIT => {
            let exit = TaskExit::parse_from_bytes(&event.value).map_err(bad)?;
            let exited_at = super::client::timestamp_nanos(exit.exited_at.as_ref());
            Some(ShimEvent::Exit {
                container_id: exit.container_id,
                process_id: exit.id,
                pid: exit.pid,
                exit_status: exit.exit_status,
                exited_at,
            })
        }
        TOPIC_OOM => {
            let oom = TaskOOM::parse_from_bytes(&event.value).map_err(bad)?;
            Some(ShimEvent::Oom {
                container_id: oom.container_id,
            })
        }
        _ => None,
    })
}

struct Forwarder {
    events: broadcast::Sender<ShimEvent>,
}

#[tonic::async_trait]
impl Events for Forwarder {
    async fn forward(&self, _ctx: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
        let Some(envelope) = req.envelope.into_option() else {
            return Ok(Empty::new());
        };
        let Some(event) = envelope.event.as_ref() else {
            return Ok(Empty::new());
        };
        match decode(&envelope.topic, event) {
            Ok(Some(e)) => {
                tracing::debug!(topic = %envelope.topic, event = ?e, "shim event");
                // No receiver yet is fine: nothing is waiting on this container.
                let _ = self.events.send(e);
            }
            Ok(None) => tracing::debug!(topic = %envelope.topic, "shim event ignored"),
            Err(e) => tracing::warn!(error = %e, "undecodable shim event"),
        }
        Ok(Empty::new())
    }
}

/// The listening events endpoint; stops serving when dropped.
pub struct EventServer {
    server: Server,
    address: String,
}

impl EventServer {
    /// Serves the events service on a unix socket at `path`, replacing a stale one.
    pub async fn start(path: &Path, events: broadcast::Sender<ShimEvent>) -> Result<EventServer> {
        let _ = std::fs::remove_file(path);
        let address = format!("unix://{}", path.display());
        let service = create_events(Arc::new(Forwarder { events }));
        let mut server = Server::new()
            .bind(&address)
            .map_err(|e| Error::Unavailable(format!("binding {address}: {e}")))?
            .register_service(service);
        server
            .start()
            .await
            .map_err(|e| Error::Unavailable(format!("serving {address}: {e}")))?;
        Ok(EventServer { server, address })
    }

    /// What shims get as `-address` and `TTRPC_ADDRESS`.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub async fn stop(mut self) {
        let _ = self.server.shutdown().await;
    }
}

/// `berthd publish`: what a shim execs to publish an event. Reads the event (a
/// protobuf `Any`) from stdin and forwards it to berthd's events endpoint.
pub async fn publish(address: &str, topic: &str, namespace: &str, event: &[u8]) -> Result<()> {
    let any = Any::parse_from_bytes(event)
        .map_err(|e| Error::InvalidArgument(format!("event on stdin: {e}")))?;
    let client = ttrpc::asynchronous::Client::connect(address)
        .await
        .map_err(|e| Error::Unavailable(format!("connecting to {address}: {e}")))?;
    let mut envelope = Envelope::new();
    envelope.topic = topic.to_string();
    envelope.namespace = namespace.to_string();
    envelope.event = Some(any).into();
    let mut req = ForwardRequest::new();
    req.envelope = Some(envelope).into();
    EventsClient::new(client)
        .forward(ttrpc::context::with_timeout(5_000_000_000), &req)
        .await
        .map_err(|e| Error::Unavailable(format!("forwarding event {topic}: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_of(msg: &impl Message, type_url: &str) -> Any {
        let mut any = Any::new();
        any.type_url = type_url.to_string();
        any.value = msg.write_to_bytes().unwrap();
        any
    }

    #[test]
    fn exits_and_ooms_are_decoded() {
        let mut exit = TaskExit::new();
        exit.container_id = "c1".into();
        exit.id = "e1".into();
        exit.pid = 42;
        exit.exit_status = 137;
        let event = decode(TOPIC_EXIT, &any_of(&exit, "containerd.events.TaskExit")).unwrap();
        assert_eq!(
            event,
            Some(ShimEvent::Exit {
                container_id: "c1".into(),
                process_id: "e1".into(),
                pid: 42,
                exit_status: 137,
                exited_at: 0
            })
        );
        let mut oom = TaskOOM::new();
        oom.container_id = "c2".into();
        assert_eq!(
            decode(TOPIC_OOM, &any_of(&oom, "containerd.events.TaskOOM")).unwrap(),
            Some(ShimEvent::Oom {
                container_id: "c2".into()
            })
        );
        assert_eq!(decode("/tasks/start", &Any::new()).unwrap(), None);
        let mut garbage = Any::new();
        garbage.value = vec![0xff, 0xff, 0xff];
        assert!(decode(TOPIC_EXIT, &garbage).is_err());
    }

    #[tokio::test]
    async fn published_events_reach_subscribers() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = broadcast::channel(8);
        let server = EventServer::start(&dir.path().join("events.sock"), tx)
            .await
            .unwrap();
        let mut oom = TaskOOM::new();
        oom.container_id = "c9".into();
        let any = any_of(&oom, "containerd.events.TaskOOM");
        publish(
            server.address(),
            TOPIC_OOM,
            "k8s.io",
            &any.write_to_bytes().unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(
            rx.recv().await.unwrap(),
            ShimEvent::Oom {
                container_id: "c9".into()
            }
        );
        server.stop().await;
    }
}
