//! A pod as it is now. The record says what berth did; some of what
//! PodSandboxStatus reports can change from outside (an administrator or a
//! test unmounting the network namespace, as `ip netns delete` does), so it is
//! looked at when asked, as containerd checks its `NetNS.Closed()`.

use std::sync::Arc;

use super::{Sandbox, SandboxService};
use crate::error::Result;
use crate::network::netns;

/// A pod and what was observed of it at the time of the call.
pub struct ObservedSandbox {
    pub pod: Arc<Sandbox>,
    /// No network namespace of its own is there: the pod is on the host's
    /// network, stopped, or its namespace was unmounted from outside.
    pub netns_closed: bool,
}

impl ObservedSandbox {
    /// The pod as its record has it, with no look at the kernel: for a snapshot
    /// taken when an event happened, where only the record's word is known.
    pub fn recorded(pod: Arc<Sandbox>) -> Self {
        let netns_closed = pod.record.netns.is_none();
        Self { pod, netns_closed }
    }
}

impl SandboxService {
    /// The pod `id` with its network namespace's state as it is now.
    pub async fn observe(&self, id: &str) -> Result<ObservedSandbox> {
        let pod = self.get(id)?;
        let netns_closed = match pod.record.netns.clone() {
            None => true,
            // statfs on a path: off the executor, as every mount check.
            Some(path) => !tokio::task::spawn_blocking(move || netns::is_mounted(&path)).await?,
        };
        Ok(ObservedSandbox { pod, netns_closed })
    }
}
