//! CRI Exec, Attach and PortForward requests as the streaming service takes them.

use k8s_cri::v1 as cri;

use crate::streaming::{AttachRequest, ExecRequest, PortForwardRequest};

pub fn exec_request(r: cri::ExecRequest) -> ExecRequest {
    ExecRequest {
        container_id: r.container_id,
        cmd: r.cmd,
        tty: r.tty,
        stdin: r.stdin,
        stdout: r.stdout,
        stderr: r.stderr,
    }
}

pub fn attach_request(r: cri::AttachRequest) -> AttachRequest {
    AttachRequest {
        container_id: r.container_id,
        tty: r.tty,
        stdin: r.stdin,
        stdout: r.stdout,
        stderr: r.stderr,
    }
}

/// The ports are not needed up front: each forwarded connection names its own.
pub fn port_forward_request(r: cri::PortForwardRequest) -> PortForwardRequest {
    PortForwardRequest {
        sandbox_id: r.pod_sandbox_id,
    }
}
