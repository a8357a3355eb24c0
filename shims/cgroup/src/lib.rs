//! A process's cgroups as berthd and the shim both need them: where they are
//! (from `/proc/<pid>/cgroup` and this host's cgroup mounts, in v1, hybrid and
//! unified layouts) and what their counter files say.
//!
//! Parsing is kept apart from reading so both are tested from fixtures, and
//! nothing here knows about protobuf or the CRI: the daemon turns readings
//! into CRI stats, the shim into containerd's metrics.

mod locate;
mod read;

pub use locate::{Cgroup, CgroupV1, Hierarchies};
pub use read::{Memory, Usage, oom_kills, read_flat, read_limit, read_u64};
