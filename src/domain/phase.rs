//! Where pods and containers are in their lives, as recorded.

use serde::{Deserialize, Serialize};

/// Where a pod is in its life, as recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxPhase {
    /// RunPodSandbox has begun; a record left in this phase by a crash is undone
    /// at start-up.
    #[default]
    Creating,
    /// The infra container runs and the network is attached.
    Ready,
    /// Stopped, or its infra container or shim is gone.
    NotReady,
}

/// Where a container is in its life, as CRI names the states.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerPhase {
    /// CreateContainer has begun; a record left in this phase by a crash is undone
    /// at start-up.
    #[default]
    Creating,
    Created,
    Running,
    Exited,
    /// Its shim is gone and its fate cannot be known.
    Unknown,
}

/// What each phase of a pod allows. Callers ask these rather than compare phases,
/// so the rules live in one table (tested below).
impl SandboxPhase {
    /// CreateContainer and StartContainer: only in a Ready pod.
    pub fn can_hold_containers(self) -> bool {
        self == SandboxPhase::Ready
    }

    /// Port forwarding and exec/attach/port-forward sessions that target the pod.
    pub fn can_port_forward(self) -> bool {
        self == SandboxPhase::Ready
    }

    /// Whether the infra container is meant to run: a pod whose infra exits (or is
    /// found gone at start-up) goes NotReady from here only.
    pub fn expects_infra(self) -> bool {
        self == SandboxPhase::Ready
    }

    /// A RunPodSandbox that never finished: undone at start-up rather than resumed.
    pub fn is_half_created(self) -> bool {
        self == SandboxPhase::Creating
    }
}

/// What each phase of a container allows. Callers ask these rather than compare
/// phases, so the rules live in one table (tested below).
impl ContainerPhase {
    /// StartContainer: only a container that was created and never started. Also
    /// what tells recovery that a task the shim reports started was started by a
    /// call whose record a crash cut short.
    pub fn can_start(self) -> bool {
        self == ContainerPhase::Created
    }

    /// Exec and ExecSync need a running process to join.
    pub fn can_exec(self) -> bool {
        self == ContainerPhase::Running
    }

    /// Attach joins the running process's own stdio.
    pub fn can_attach(self) -> bool {
        self == ContainerPhase::Running
    }

    /// ReopenContainerLog: only a running container has its log open.
    pub fn can_reopen_log(self) -> bool {
        self == ContainerPhase::Running
    }

    /// Stop (and Remove, before it deletes) has a process to signal. Stopping any
    /// other phase succeeds without a call to the shim.
    pub fn must_signal_to_stop(self) -> bool {
        self == ContainerPhase::Running
    }

    /// CPU and memory usage exist only while the process runs.
    pub fn has_usage(self) -> bool {
        self == ContainerPhase::Running
    }

    /// The shim holds a task for it (created or running): new limits go to the
    /// shim as well as to the record, and recovery asks the shim what became of it.
    pub fn has_live_task(self) -> bool {
        matches!(self, ContainerPhase::Created | ContainerPhase::Running)
    }

    /// An exit (or a lost shim) is recorded once; an Exited record keeps its first.
    pub fn can_record_exit(self) -> bool {
        self != ContainerPhase::Exited
    }

    /// A CreateContainer that never finished: not listed, no events, and undone
    /// at start-up.
    pub fn is_half_created(self) -> bool {
        self == ContainerPhase::Creating
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_each_container_phase_allows() {
        use ContainerPhase::*;
        // start, exec, attach, reopen, signal, usage, live task, record exit, half-created
        let table = [
            (Creating, [0, 0, 0, 0, 0, 0, 0, 1, 1]),
            (Created, [1, 0, 0, 0, 0, 0, 1, 1, 0]),
            (Running, [0, 1, 1, 1, 1, 1, 1, 1, 0]),
            (Exited, [0, 0, 0, 0, 0, 0, 0, 0, 0]),
            (Unknown, [0, 0, 0, 0, 0, 0, 0, 1, 0]),
        ];
        for (phase, want) in table {
            let got = [
                phase.can_start(),
                phase.can_exec(),
                phase.can_attach(),
                phase.can_reopen_log(),
                phase.must_signal_to_stop(),
                phase.has_usage(),
                phase.has_live_task(),
                phase.can_record_exit(),
                phase.is_half_created(),
            ];
            assert_eq!(got, want.map(|w| w == 1), "{phase:?}");
        }
    }

    #[test]
    fn what_each_sandbox_phase_allows() {
        use SandboxPhase::*;
        // containers, port-forward, expects infra, half-created
        let table = [
            (Creating, [0, 0, 0, 1]),
            (Ready, [1, 1, 1, 0]),
            (NotReady, [0, 0, 0, 0]),
        ];
        for (phase, want) in table {
            let got = [
                phase.can_hold_containers(),
                phase.can_port_forward(),
                phase.expects_infra(),
                phase.is_half_created(),
            ];
            assert_eq!(got, want.map(|w| w == 1), "{phase:?}");
        }
    }
}
