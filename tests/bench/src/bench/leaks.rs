//! The leak check: what a runtime holds on the host (network namespaces, mounts,
//! shims, runc containers, pod addresses, bridge ports, the daemon's open files),
//! taken when idle and again after every pod is gone.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::procfs;
use super::runtimes::Runtime;

/// How long teardown may take to settle (shims exit after the RPC returns).
const SETTLE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    pub netns: usize,
    pub overlay_mounts: usize,
    /// nsfs (pinned namespaces), tmpfs (pod /dev/shm) and bind mounts.
    pub other_mounts: usize,
    pub shims: usize,
    pub runc_containers: usize,
    pub ips: usize,
    pub bridge_ports: usize,
    pub daemon_fds: usize,
}

impl Footprint {
    pub fn of(rt: &Runtime) -> Footprint {
        // berth makes its netns directory a mount point of its own once, as
        // `ip netns` does with /run/netns: that one is not per pod.
        let netns_dir = rt.state.join("netns");
        let mounts: Vec<_> = procfs::mounts_under(&rt.dir)
            .into_iter()
            .filter(|m| Path::new(&m.point) != netns_dir)
            .collect();
        let overlay_mounts = mounts.iter().filter(|m| m.fstype == "overlay").count();
        // berth pins namespaces in state/netns, containerd (told so) in state/netns too.
        let netns = procfs::entries(&netns_dir).len();
        Footprint {
            netns,
            overlay_mounts,
            other_mounts: mounts.len() - overlay_mounts,
            shims: rt.shims().len(),
            runc_containers: rt.runc_containers().len(),
            ips: rt.net.allocated_ips(),
            bridge_ports: rt.net.bridge_ports(),
            daemon_fds: rt.pid().and_then(procfs::fd_count).unwrap_or(0),
        }
    }

    fn fields(&self) -> [(&'static str, usize); 8] {
        [
            ("netns", self.netns),
            ("overlay_mounts", self.overlay_mounts),
            ("other_mounts", self.other_mounts),
            ("shims", self.shims),
            ("runc_containers", self.runc_containers),
            ("ips", self.ips),
            ("bridge_ports", self.bridge_ports),
            ("daemon_fds", self.daemon_fds),
        ]
    }

    pub fn to_json(&self) -> Value {
        Value::Object(
            self.fields()
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect(),
        )
    }

    /// What grew over `idle`, as `name +n`.
    fn grown(&self, idle: &Footprint) -> Vec<String> {
        self.fields()
            .iter()
            .zip(idle.fields())
            .filter(|((_, now), (_, then))| now > then)
            .map(|((name, now), (_, then))| format!("{name} +{}", now - then))
            .collect()
    }
}

/// The leak check of one runtime after one teardown.
#[derive(Debug, Clone)]
pub struct LeakCheck {
    pub runtime: &'static str,
    pub after: &'static str,
    pub idle: Footprint,
    pub now: Footprint,
    pub leaked: Vec<String>,
}

impl LeakCheck {
    pub fn to_json(&self) -> Value {
        json!({
            "runtime": self.runtime,
            "after": self.after,
            "idle": self.idle.to_json(),
            "now": self.now.to_json(),
            "leaked": self.leaked,
        })
    }
}

/// Waits (up to 10 s) for `rt`'s footprint to come back to `idle`, and says what
/// did not.
pub async fn check(rt: &Runtime, idle: &Footprint, after: &'static str) -> LeakCheck {
    let deadline = Instant::now() + SETTLE;
    let now = loop {
        let now = Footprint::of(rt);
        if now.grown(idle).is_empty() || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    LeakCheck {
        runtime: rt.name(),
        after,
        idle: idle.clone(),
        leaked: now.grown(idle),
        now,
    }
}
