//! The ttrpc Task service: protobuf in, [`Tasks`] call, protobuf out.
//!
//! containerd 1.6 calls `containerd.task.v2.Task`, containerd 2 may call
//! `containerd.task.v3.Task`; their messages are identical, so one
//! implementation is registered under both names.

use std::collections::HashMap;
use std::sync::Arc;

use containerd_shim_protos::api::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, DeleteResponse, ExecProcessRequest, KillRequest,
    PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::{EnumOrUnknown, Message};
use containerd_shim_protos::shim::oci::ProcessDetails;
use containerd_shim_protos::ttrpc::{self, MethodHandler, TtrpcContext};
use containerd_shim_protos::types::task::{ProcessInfo, Status};
use containerd_shim_protos::{Task, create_task};

use crate::error::Error;
use crate::events::timestamp;
use crate::process::ProcState;
use crate::stdio::StdioPaths;
use crate::tasks::{CreateRequest, Tasks};

pub struct TaskService {
    tasks: Arc<Tasks>,
}

type Methods = HashMap<String, Box<dyn MethodHandler + Send + Sync>>;

/// The Task service's methods under both the v2 and the v3 service name.
pub fn methods(tasks: Arc<Tasks>) -> Methods {
    let service: Arc<dyn Task + Send + Sync> = Arc::new(TaskService { tasks });
    let mut methods = create_task(Arc::clone(&service));
    let v2: Methods = create_task(service)
        .into_iter()
        .map(|(path, h)| {
            (
                path.replace("/containerd.task.v3.Task/", "/containerd.task.v2.Task/"),
                h,
            )
        })
        .collect();
    methods.extend(v2);
    methods
}

/// One debug line per call, naming the container and process.
fn log_call(rpc: &str, id: &str, exec_id: &str) {
    log::debug!("{rpc} id={id} exec_id={exec_id}");
}

/// Logs a failed call once, here at the boundary, and converts it.
fn reply<T>(rpc: &str, id: &str, r: Result<T, Error>) -> ttrpc::Result<T> {
    r.map_err(|e| {
        match &e {
            Error::NotFound(_) | Error::FailedPrecondition(_) => log::debug!("{rpc} {id}: {e}"),
            _ => log::warn!("{rpc} {id}: {e}"),
        }
        e.into()
    })
}

impl Task for TaskService {
    fn create(
        &self,
        _: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        log_call("create", &req.id, "");
        if !req.checkpoint.is_empty() {
            return reply(
                "create",
                &req.id,
                Err(Error::Unimplemented("restore from checkpoint")),
            );
        }
        let id = req.id.clone();
        let create = CreateRequest {
            id: req.id,
            bundle: req.bundle.into(),
            rootfs: req.rootfs,
            stdio: StdioPaths {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                terminal: req.terminal,
            },
            options: req.options.into_option(),
        };
        let pid = reply("create", &id, self.tasks.create(create))?;
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(&self, _: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        log_call("start", &req.id, &req.exec_id);
        let pid = reply("start", &req.id, self.tasks.start(&req.id, &req.exec_id))?;
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn state(&self, _: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        let (s, bundle) = reply("state", &req.id, self.tasks.state(&req.id, &req.exec_id))?;
        let (status, exit_status, exited_at) = match s.state {
            ProcState::Creating | ProcState::Created => (Status::CREATED, 0, None),
            ProcState::Starting | ProcState::Running if s.paused => (Status::PAUSED, 0, None),
            ProcState::Starting | ProcState::Running => (Status::RUNNING, 0, None),
            ProcState::Exited { status, at } => (Status::STOPPED, status, Some(timestamp(at))),
        };
        Ok(StateResponse {
            id: req.id,
            exec_id: req.exec_id,
            bundle: bundle.to_string_lossy().into_owned(),
            pid: s.pid,
            status: EnumOrUnknown::new(status),
            stdin: s.stdio.stdin,
            stdout: s.stdio.stdout,
            stderr: s.stdio.stderr,
            terminal: s.stdio.terminal,
            exit_status,
            exited_at: exited_at.into(),
            ..Default::default()
        })
    }

    fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        log_call("delete", &req.id, &req.exec_id);
        let (pid, exit_status, at) =
            reply("delete", &req.id, self.tasks.delete(&req.id, &req.exec_id))?;
        Ok(DeleteResponse {
            pid,
            exit_status,
            exited_at: at.map(timestamp).into(),
            ..Default::default()
        })
    }

    fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        let pids = reply("pids", &req.id, self.tasks.pids(&req.id))?;
        let processes = pids
            .into_iter()
            .map(|(pid, exec_id)| ProcessInfo {
                pid,
                info: exec_id
                    .map(|exec_id| Any {
                        type_url: "containerd.runc.v1.ProcessDetails".into(),
                        value: ProcessDetails {
                            exec_id,
                            ..Default::default()
                        }
                        .write_to_bytes()
                        .unwrap_or_default(),
                        ..Default::default()
                    })
                    .into(),
                ..Default::default()
            })
            .collect();
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    fn pause(&self, _: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<Empty> {
        log_call("pause", &req.id, "");
        reply("pause", &req.id, self.tasks.set_paused(&req.id, true)).map(|()| Empty::new())
    }

    fn resume(&self, _: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<Empty> {
        log_call("resume", &req.id, "");
        reply("resume", &req.id, self.tasks.set_paused(&req.id, false)).map(|()| Empty::new())
    }

    fn checkpoint(&self, _: &TtrpcContext, req: CheckpointTaskRequest) -> ttrpc::Result<Empty> {
        reply(
            "checkpoint",
            &req.id,
            Err(Error::Unimplemented("checkpoint")),
        )
    }

    fn kill(&self, _: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        log_call("kill", &req.id, &req.exec_id);
        let r = self.tasks.kill(&req.id, &req.exec_id, req.signal, req.all);
        reply("kill", &req.id, r).map(|()| Empty::new())
    }

    fn exec(&self, _: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        log_call("exec", &req.id, &req.exec_id);
        let stdio = StdioPaths {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
        };
        let spec = req
            .spec
            .as_ref()
            .map(|s| s.value.as_slice())
            .unwrap_or_default();
        let r = if spec.is_empty() {
            Err(Error::InvalidArgument(
                "exec without a process spec".to_string(),
            ))
        } else {
            self.tasks.add_exec(&req.id, &req.exec_id, stdio, spec)
        };
        reply("exec", &req.id, r).map(|()| Empty::new())
    }

    fn resize_pty(&self, _: &TtrpcContext, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        let r = self
            .tasks
            .resize_pty(&req.id, &req.exec_id, req.width, req.height);
        reply("resize_pty", &req.id, r).map(|()| Empty::new())
    }

    fn close_io(&self, _: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        log_call("close_io", &req.id, &req.exec_id);
        let r = if req.stdin {
            self.tasks.close_io(&req.id, &req.exec_id)
        } else {
            Ok(())
        };
        reply("close_io", &req.id, r).map(|()| Empty::new())
    }

    fn update(&self, _: &TtrpcContext, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        log_call("update", &req.id, "");
        let resources = req
            .resources
            .as_ref()
            .map(|r| r.value.as_slice())
            .unwrap_or_default();
        reply("update", &req.id, self.tasks.update(&req.id, resources)).map(|()| Empty::new())
    }

    fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        log_call("wait", &req.id, &req.exec_id);
        let (exit_status, at) = reply("wait", &req.id, self.tasks.wait(&req.id, &req.exec_id))?;
        Ok(WaitResponse {
            exit_status,
            exited_at: Some(timestamp(at)).into(),
            ..Default::default()
        })
    }

    fn stats(&self, _: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        let stats = reply("stats", &req.id, self.tasks.stats(&req.id))?;
        Ok(StatsResponse {
            stats: Some(stats).into(),
            ..Default::default()
        })
    }

    fn connect(&self, _: &TtrpcContext, req: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: self.tasks.init_pid(&req.id),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _: &TtrpcContext, req: ShutdownRequest) -> ttrpc::Result<Empty> {
        log_call("shutdown", &req.id, "");
        self.tasks.shutdown();
        Ok(Empty::new())
    }
}
