//! Paying the kernel's toll for a cgroup migration ahead of runc.
//!
//! Moving a process into a cgroup (a write to `cgroup.procs`: runc makes one per
//! hierarchy for every container it creates and every process it execs) takes the
//! kernel's global `cgroup_threadgroup_rwsem` for writing. Unless some writer took
//! it within about the last RCU grace period, that first waits a whole grace
//! period, 10 ms and more on a small VM. Measured here (2 vCPUs): `runc create`
//! of one bundle took 18 ms within 10 ms of another create, 28-30 ms 20-50 ms
//! after one. cgroup2's `favordynmods` mount option removes the wait (forks and
//! exits pay instead); hosts rarely set it.
//!
//! So a call that will run runc first starts a migration of berthd into the cgroup
//! it is already in, on a blocking thread. That changes nothing but the lock's
//! state: its grace period passes while berthd does its own part of the call and
//! runc starts, and runc's migrations find the lock warm. One runs at a time; one
//! that fails (berthd's cgroup not visible, no permission) costs only its head
//! start.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use berth_cgroup::{Cgroup, Hierarchies};

/// Starts warming the lock for runc's migrations, unless a warm-up is under way.
/// Needs a tokio runtime.
pub fn warm() {
    static RUNNING: AtomicBool = AtomicBool::new(false);
    if RUNNING.swap(true, Ordering::AcqRel) {
        return;
    }
    // Off the executor: the first call reads mountinfo to find the file.
    tokio::task::spawn_blocking(|| {
        if let Some(procs) = own_procs_file()
            && let Err(e) = rejoin(procs)
        {
            tracing::debug!(path = %procs.display(), error = %e, "cgroup warm-up");
        }
        RUNNING.store(false, Ordering::Release);
    });
}

/// Moves berthd (all its threads) into the cgroup whose `cgroup.procs` is `procs`.
fn rejoin(procs: &Path) -> std::io::Result<()> {
    std::fs::write(procs, std::process::id().to_string())
}

/// The `cgroup.procs` of berthd's own cgroup (v1: the pids hierarchy's, or any
/// other mounted one), found once.
fn own_procs_file() -> Option<&'static PathBuf> {
    static PROCS: OnceLock<Option<PathBuf>> = OnceLock::new();
    PROCS
        .get_or_init(|| {
            let cgroup = Hierarchies::of_this_host()
                .ok()?
                .of_process(std::process::id())?;
            procs_file(&cgroup)
        })
        .as_ref()
}

fn procs_file(cgroup: &Cgroup) -> Option<PathBuf> {
    let dir = match cgroup {
        Cgroup::V2(dir) => dir.as_path(),
        Cgroup::V1(v1) => v1.pids().or_else(|| v1.memory()).or_else(|| v1.cpuacct())?,
    };
    Some(dir.join("cgroup.procs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The warm-up names this process's own cgroup, and moving the process there
    /// leaves it where it was.
    #[test]
    fn berthd_rejoins_the_cgroup_it_is_in() {
        let Some(procs) = own_procs_file() else {
            eprintln!("skipped: this process's cgroup is not visible here");
            return;
        };
        let pid = std::process::id().to_string();
        let listed = || {
            std::fs::read_to_string(procs)
                .unwrap()
                .lines()
                .any(|p| p == pid)
        };
        assert!(listed(), "{} does not list this process", procs.display());
        let before = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        rejoin(procs).unwrap();
        assert!(listed());
        assert_eq!(
            std::fs::read_to_string("/proc/self/cgroup").unwrap(),
            before
        );
    }

    #[test]
    fn a_v1_cgroup_is_rejoined_through_pids_or_else_memory() {
        let mountinfo = "30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                         31 25 0:27 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";
        let hierarchies = Hierarchies::parse(mountinfo);
        let both = hierarchies.locate("4:memory:/a\n8:pids:/b\n").unwrap();
        assert_eq!(
            procs_file(&both).unwrap(),
            Path::new("/sys/fs/cgroup/pids/b/cgroup.procs")
        );
        let memory_only = hierarchies.locate("4:memory:/a\n").unwrap();
        assert_eq!(
            procs_file(&memory_only).unwrap(),
            Path::new("/sys/fs/cgroup/memory/a/cgroup.procs")
        );
    }
}
