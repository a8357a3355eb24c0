//! The real [`Tasks`]: a client for a shim's v2 Task service over ttrpc, which
//! alone turns the domain requests into protobuf and back.
//!
//! Requests are built by hand rather than through the generated client, because the
//! protos crate generates the `containerd.task.v3.Task` service name while shims for
//! containerd 1.6 (Debian's `containerd-shim-runc-v2` among them) serve only
//! `containerd.task.v2.Task`; the messages are the same in both.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::ttrpc;
use containerd_shim_protos::ttrpc::asynchronous::Client;
use oci_spec::runtime::LinuxResources;

use super::options::{rootfs_mount, runc_options};
use super::task::{CreateTask, ExecTask, Exit, TaskClient, TaskState, TaskStatus, Tasks};
use crate::error::{Error, Result};

const TASK_SERVICE: &str = "containerd.task.v2.Task";
/// Calls that should answer at once; Wait is the one that may block for long.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How containerd names an OCI `LinuxResources` carried as JSON in an `Any`.
const RESOURCES_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";
/// The same for an OCI `Process`.
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// Connects to a shim address as shims print it (`unix:///run/...`).
pub async fn connect(address: &str) -> Result<TaskClient> {
    Ok(Arc::new(TtrpcTasks::connect(address).await?))
}

/// Connects over ttrpc: real shims.
pub struct TtrpcConnect;

#[async_trait]
impl super::task::Connect for TtrpcConnect {
    async fn connect(&self, address: &str) -> Result<TaskClient> {
        connect(address).await
    }
}

/// A connection to one shim, shared by every container of its pod.
#[derive(Clone)]
pub struct TtrpcTasks {
    client: Client,
    address: String,
}

impl TtrpcTasks {
    pub async fn connect(address: &str) -> Result<TtrpcTasks> {
        let client = Client::connect(address)
            .await
            .map_err(|e| Error::Unavailable(format!("connecting to shim at {address}: {e}")))?;
        Ok(TtrpcTasks {
            client,
            address: address.to_string(),
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    async fn call<Q: Message, R: Message>(
        &self,
        method: &str,
        req: &Q,
        timeout: Option<Duration>,
    ) -> Result<R> {
        let payload = req
            .write_to_bytes()
            .map_err(|e| Error::Internal(format!("encoding shim {method} request: {e}")))?;
        let request = ttrpc::Request {
            service: TASK_SERVICE.to_string(),
            method: method.to_string(),
            payload,
            timeout_nano: timeout.map_or(0, |t| t.as_nanos() as i64),
            ..Default::default()
        };
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| shim_error(&self.address, method, e))?;
        R::parse_from_bytes(&response.payload)
            .map_err(|e| Error::Internal(format!("decoding shim {method} response: {e}")))
    }

    /// The shim's own pid, and its task's.
    pub async fn connect_info(&self, id: &str) -> Result<(u32, u32)> {
        let req = api::ConnectRequest {
            id: id.to_string(),
            ..Default::default()
        };
        let resp: api::ConnectResponse = self.call("Connect", &req, Some(CALL_TIMEOUT)).await?;
        Ok((resp.shim_pid, resp.task_pid))
    }
}

#[async_trait]
impl Tasks for TtrpcTasks {
    async fn create(&self, request: &CreateTask) -> Result<u32> {
        let req = api::CreateTaskRequest {
            id: request.id.clone(),
            bundle: request.bundle.display().to_string(),
            rootfs: request.rootfs.iter().map(rootfs_mount).collect(),
            terminal: request.terminal,
            stdin: path_or_empty(request.stdin.as_deref()),
            stdout: path_or_empty(request.stdout.as_deref()),
            stderr: path_or_empty(request.stderr.as_deref()),
            options: Some(runc_options(&request.options)?).into(),
            ..Default::default()
        };
        let resp: api::CreateTaskResponse = self.call("Create", &req, Some(CALL_TIMEOUT)).await?;
        Ok(resp.pid)
    }

    async fn start(&self, id: &str, exec_id: &str) -> Result<u32> {
        let req = api::StartRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let resp: api::StartResponse = self.call("Start", &req, Some(CALL_TIMEOUT)).await?;
        Ok(resp.pid)
    }

    async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let req = api::KillRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            signal,
            all,
            ..Default::default()
        };
        let _: api::Empty = self.call("Kill", &req, Some(CALL_TIMEOUT)).await?;
        Ok(())
    }

    async fn wait(&self, id: &str, exec_id: &str) -> Result<Exit> {
        let req = api::WaitRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let resp: api::WaitResponse = self.call("Wait", &req, None).await?;
        Ok(Exit {
            status: resp.exit_status,
            at: timestamp_nanos(resp.exited_at.as_ref()),
        })
    }

    async fn state(&self, id: &str, exec_id: &str) -> Result<TaskState> {
        let req = api::StateRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let resp: api::StateResponse = self.call("State", &req, Some(CALL_TIMEOUT)).await?;
        Ok(TaskState {
            pid: resp.pid,
            status: task_status(resp.status.value()),
            exit: Exit {
                status: resp.exit_status,
                at: timestamp_nanos(resp.exited_at.as_ref()),
            },
        })
    }

    async fn delete(&self, id: &str, exec_id: &str) -> Result<Exit> {
        let req = api::DeleteRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let resp: api::DeleteResponse = self.call("Delete", &req, Some(CALL_TIMEOUT)).await?;
        Ok(Exit {
            status: resp.exit_status,
            at: timestamp_nanos(resp.exited_at.as_ref()),
        })
    }

    async fn exec(&self, request: &ExecTask) -> Result<()> {
        let process = serde_json::to_vec(&request.process)
            .map_err(|e| Error::Internal(format!("encoding the exec process: {e}")))?;
        let req = api::ExecProcessRequest {
            id: request.id.clone(),
            exec_id: request.exec_id.clone(),
            terminal: request.terminal,
            stdin: path_or_empty(request.stdin.as_deref()),
            stdout: path_or_empty(request.stdout.as_deref()),
            stderr: path_or_empty(request.stderr.as_deref()),
            spec: Some(Any {
                type_url: PROCESS_TYPE_URL.to_string(),
                value: process,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let _: api::Empty = self.call("Exec", &req, Some(CALL_TIMEOUT)).await?;
        Ok(())
    }

    async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        let req = api::CloseIORequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            stdin: true,
            ..Default::default()
        };
        let _: api::Empty = self.call("CloseIO", &req, Some(CALL_TIMEOUT)).await?;
        Ok(())
    }

    async fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let req = api::ResizePtyRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            width,
            height,
            ..Default::default()
        };
        let _: api::Empty = self.call("ResizePty", &req, Some(CALL_TIMEOUT)).await?;
        Ok(())
    }

    async fn update(&self, id: &str, resources: &LinuxResources) -> Result<()> {
        let value = serde_json::to_vec(resources)
            .map_err(|e| Error::Internal(format!("encoding resources of {id}: {e}")))?;
        let req = api::UpdateTaskRequest {
            id: id.to_string(),
            resources: Some(Any {
                type_url: RESOURCES_TYPE_URL.to_string(),
                value,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let _: api::Empty = self.call("Update", &req, Some(CALL_TIMEOUT)).await?;
        Ok(())
    }

    async fn shutdown(&self, id: &str) -> Result<()> {
        let req = api::ShutdownRequest {
            id: id.to_string(),
            now: false,
            ..Default::default()
        };
        match self
            .call::<_, api::Empty>("Shutdown", &req, Some(CALL_TIMEOUT))
            .await
        {
            // The shim exits while answering; a closed connection means it went.
            Ok(_) | Err(Error::Unavailable(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A stdio path as shim v2 carries it: empty for none.
fn path_or_empty(path: Option<&Path>) -> String {
    path.map(|p| p.display().to_string()).unwrap_or_default()
}

fn task_status(value: i32) -> TaskStatus {
    match value {
        v if v == api::Status::CREATED as i32 => TaskStatus::Created,
        v if v == api::Status::RUNNING as i32 => TaskStatus::Running,
        v if v == api::Status::STOPPED as i32 => TaskStatus::Stopped,
        v if v == api::Status::PAUSED as i32 => TaskStatus::Paused,
        v if v == api::Status::PAUSING as i32 => TaskStatus::Pausing,
        _ => TaskStatus::Unknown,
    }
}

const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// A shim's timestamp in nanoseconds since the epoch; 0 for none, and for one that
/// nanoseconds in an i64 cannot hold: shims written in Go send the zero
/// `time.Time` (year 1) for a process that has not exited.
pub(super) fn timestamp_nanos(
    ts: Option<&containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp>,
) -> i64 {
    ts.and_then(|t| {
        t.seconds
            .checked_mul(NANOS_PER_SECOND)?
            .checked_add(i64::from(t.nanos))
    })
    .unwrap_or(0)
}

/// Maps a ttrpc failure to the domain error of the same meaning.
fn shim_error(address: &str, method: &str, err: ttrpc::Error) -> Error {
    match err {
        ttrpc::Error::RpcStatus(status) => {
            let message = format!("shim {method}: {}", status.message);
            match status.code.value() {
                c if c == ttrpc::Code::NOT_FOUND as i32 => Error::NotFound(message),
                c if c == ttrpc::Code::ALREADY_EXISTS as i32 => Error::AlreadyExists(message),
                c if c == ttrpc::Code::FAILED_PRECONDITION as i32 => {
                    Error::FailedPrecondition(message)
                }
                c if c == ttrpc::Code::INVALID_ARGUMENT as i32 => Error::InvalidArgument(message),
                c if c == ttrpc::Code::UNIMPLEMENTED as i32 => Error::FailedPrecondition(message),
                c if c == ttrpc::Code::DEADLINE_EXCEEDED as i32 => {
                    Error::Unavailable(format!("{message} (timed out)"))
                }
                // What berth's shim (and containerd's) answers when runc failed.
                c if c == ttrpc::Code::UNKNOWN as i32 => Error::Runtime(message),
                _ => Error::Unavailable(message),
            }
        }
        other => Error::Unavailable(format!("shim at {address}, {method}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;

    use super::*;

    #[test]
    fn timestamps_out_of_range_read_as_none() {
        let at = |seconds, nanos| Timestamp {
            seconds,
            nanos,
            ..Default::default()
        };
        assert_eq!(timestamp_nanos(None), 0);
        assert_eq!(timestamp_nanos(Some(&at(2, 5))), 2_000_000_005);
        // Go's zero time.Time, as containerd-shim-runc-v2 reports a running task.
        assert_eq!(timestamp_nanos(Some(&at(-62_135_596_800, 0))), 0);
        assert_eq!(timestamp_nanos(Some(&at(i64::MAX, 0))), 0);
    }
}
