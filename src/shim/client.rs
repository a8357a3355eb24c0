//! A client for the shim v2 Task service over ttrpc.
//!
//! Requests are built by hand rather than through the generated client, because the
//! protos crate generates the `containerd.task.v3.Task` service name while shims for
//! containerd 1.6 (Debian's `containerd-shim-runc-v2` among them) serve only
//! `containerd.task.v2.Task`; the messages are the same in both.

use std::time::Duration;

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::ttrpc;
use containerd_shim_protos::ttrpc::asynchronous::Client;

use crate::error::{Error, Result};

const TASK_SERVICE: &str = "containerd.task.v2.Task";
/// Calls that should answer at once; Wait is the one that may block for long.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to one shim, shared by every container of its pod.
#[derive(Clone)]
pub struct TaskClient {
    client: Client,
    address: String,
}

impl TaskClient {
    /// Connects to a shim address as shims print it (`unix:///run/...`).
    pub async fn connect(address: &str) -> Result<TaskClient> {
        let client = Client::connect(address)
            .await
            .map_err(|e| Error::Unavailable(format!("connecting to shim at {address}: {e}")))?;
        Ok(TaskClient {
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

    pub async fn create(&self, req: &api::CreateTaskRequest) -> Result<u32> {
        let resp: api::CreateTaskResponse = self.call("Create", req, Some(CALL_TIMEOUT)).await?;
        Ok(resp.pid)
    }

    pub async fn start(&self, id: &str, exec_id: &str) -> Result<u32> {
        let req = api::StartRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let resp: api::StartResponse = self.call("Start", &req, Some(CALL_TIMEOUT)).await?;
        Ok(resp.pid)
    }

    pub async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
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

    /// Blocks until the process exits; returns its exit status and when it exited
    /// (nanoseconds since the epoch).
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<(u32, i64)> {
        let req = api::WaitRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let resp: api::WaitResponse = self.call("Wait", &req, None).await?;
        Ok((resp.exit_status, timestamp_nanos(resp.exited_at.as_ref())))
    }

    pub async fn state(&self, id: &str, exec_id: &str) -> Result<api::StateResponse> {
        let req = api::StateRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        self.call("State", &req, Some(CALL_TIMEOUT)).await
    }

    /// Removes the task (or exec process) and returns its exit status and time.
    pub async fn delete(&self, id: &str, exec_id: &str) -> Result<(u32, i64)> {
        let req = api::DeleteRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        let resp: api::DeleteResponse = self.call("Delete", &req, Some(CALL_TIMEOUT)).await?;
        Ok((resp.exit_status, timestamp_nanos(resp.exited_at.as_ref())))
    }

    pub async fn exec(&self, req: &api::ExecProcessRequest) -> Result<()> {
        let _: api::Empty = self.call("Exec", req, Some(CALL_TIMEOUT)).await?;
        Ok(())
    }

    pub async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        let req = api::CloseIORequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            stdin: true,
            ..Default::default()
        };
        let _: api::Empty = self.call("CloseIO", &req, Some(CALL_TIMEOUT)).await?;
        Ok(())
    }

    pub async fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
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

    /// New cgroup limits for a container: `resources` is an OCI `LinuxResources`.
    pub async fn update(
        &self,
        id: &str,
        resources: containerd_shim_protos::protobuf::well_known_types::any::Any,
    ) -> Result<()> {
        let req = api::UpdateTaskRequest {
            id: id.to_string(),
            resources: Some(resources).into(),
            ..Default::default()
        };
        let _: api::Empty = self.call("Update", &req, Some(CALL_TIMEOUT)).await?;
        Ok(())
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

    /// Asks the shim to exit once it has no tasks left.
    pub async fn shutdown(&self, id: &str) -> Result<()> {
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

fn timestamp_nanos(
    ts: Option<&containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp>,
) -> i64 {
    ts.map_or(0, |t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
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
