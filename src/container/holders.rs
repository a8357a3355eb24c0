//! Finding and killing the processes of a container that hold a given file open:
//! what an exec left running in the background with its output.

use std::fs;
use std::os::unix::fs::MetadataExt;

/// SIGKILLs every process in the PID namespace of `container_pid` that has one of
/// `files` (device, inode) open, and returns how many it killed. Processes outside
/// that namespace (the shim, berthd) are never touched.
pub fn kill_holders(container_pid: u32, files: &[(u64, u64)]) -> usize {
    let Ok(pid_ns) = fs::read_link(format!("/proc/{container_pid}/ns/pid")) else {
        return 0;
    };
    let Ok(procs) = fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if fs::read_link(format!("/proc/{pid}/ns/pid")).ok().as_ref() != Some(&pid_ns) {
            continue;
        }
        if holds_any(pid, files)
            && nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
        {
            killed += 1;
        }
    }
    killed
}

fn holds_any(pid: i32, files: &[(u64, u64)]) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| fs::metadata(fd.path()).is_ok_and(|m| files.contains(&(m.dev(), m.ino()))))
}
