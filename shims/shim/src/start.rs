//! The `start` subcommand: find or launch the pod's shim and print its address.
//!
//! Containers carrying the same `io.kubernetes.cri.sandbox-id` annotation share
//! one shim: the socket path is derived from containerd's address, the
//! namespace and that grouping id, so a second `start` for the pod finds the
//! live socket and returns it. A new shim gets the already-listening socket
//! as fd 3, so the address is connectable the moment it is printed.

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::args::Args;
use crate::error::{Context, Error, Result};

/// Annotation CRI puts on every container of a pod (and on the sandbox).
const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";
/// Where shim sockets live; overridable for tests and for berthd.
const SOCKET_DIR_ENV: &str = "BERTH_SHIM_SOCKET_DIR";
const DEFAULT_SOCKET_DIR: &str = "/run/berth/s";

/// The id shims are grouped by: the pod's sandbox id, else the container id.
pub fn grouping_id(bundle: &Path, id: &str) -> String {
    #[derive(serde::Deserialize, Default)]
    struct Spec {
        #[serde(default)]
        annotations: std::collections::HashMap<String, String>,
    }
    let spec: Spec = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    spec.annotations
        .get(SANDBOX_ID_ANNOTATION)
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| id.to_string())
}

pub fn socket_path(containerd_address: &str, namespace: &str, group: &str) -> PathBuf {
    let dir = std::env::var_os(SOCKET_DIR_ENV)
        .map_or_else(|| PathBuf::from(DEFAULT_SOCKET_DIR), PathBuf::from);
    let digest = Sha256::digest(format!("{containerd_address}{namespace}{group}").as_bytes());
    // 32 hex digits keep the path well inside a unix socket address.
    dir.join(hex(&digest[..16]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn bundle_dir(args: &Args) -> Result<PathBuf> {
    match &args.bundle {
        Some(b) => Ok(PathBuf::from(b)),
        None => std::env::current_dir().context(|| "current directory".to_string()),
    }
}

pub fn start(args: &Args) -> Result<String> {
    if args.namespace.is_empty() || args.id.is_empty() {
        return Err(Error::InvalidArgument(
            "start needs -namespace and -id".to_string(),
        ));
    }
    let bundle = bundle_dir(args)?;
    let group = grouping_id(&bundle, &args.id);
    let socket = socket_path(&args.address, &args.namespace, &group);
    let address = format!("unix://{}", socket.display());
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).context(|| format!("create {}", dir.display()))?;
    }
    let listener = loop {
        if UnixStream::connect(&socket).is_ok() {
            // The pod's shim is alive: share it.
            write_address(&bundle, &address)?;
            return Ok(address);
        }
        match UnixListener::bind(&socket) {
            Ok(l) => break l,
            // A dead shim left its socket behind; a live one would have answered.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                std::fs::remove_file(&socket)
                    .context(|| format!("remove stale socket {}", socket.display()))?;
            }
            Err(e) => return Err(Error::io(format!("bind {}", socket.display()), e)),
        }
    };
    if let Err(e) = launch(args, &bundle, &listener) {
        let _ = std::fs::remove_file(&socket);
        return Err(e);
    }
    write_address(&bundle, &address)?;
    Ok(address)
}

/// Starts the serving shim in its own session, detached from containerd.
fn launch(args: &Args, bundle: &Path, listener: &UnixListener) -> Result<()> {
    let exe = std::env::current_exe().context(|| "find own executable".to_string())?;
    let mut cmd = Command::new(exe);
    cmd.arg("-namespace")
        .arg(&args.namespace)
        .arg("-id")
        .arg(&args.id)
        .arg("-address")
        .arg(&args.address)
        .arg("-publish-binary")
        .arg(&args.publish_binary);
    if args.debug {
        cmd.arg("-debug");
    }
    cmd.current_dir(bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let fd = listener.as_raw_fd();
    // SAFETY: only async-signal-safe calls (setsid, dup2, fcntl) run between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if fd == 3 {
                // dup2 onto itself keeps CLOEXEC; clear it instead.
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().context(|| "launch shim".to_string())?;
    let pid_file = bundle.join("shim.pid");
    std::fs::write(&pid_file, child.id().to_string())
        .context(|| format!("write {}", pid_file.display()))?;
    Ok(())
}

/// containerd reads `address` from the bundle to reconnect after a restart.
fn write_address(bundle: &Path, address: &str) -> Result<()> {
    let path = bundle.join("address");
    let tmp = bundle.join(".address.tmp");
    std::fs::write(&tmp, address).context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_sandbox_annotation() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(grouping_id(dir.path(), "c1"), "c1");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#,
        )
        .unwrap();
        assert_eq!(grouping_id(dir.path(), "c1"), "pod1");
        std::fs::write(dir.path().join("config.json"), "not json").unwrap();
        assert_eq!(grouping_id(dir.path(), "c1"), "c1");
    }

    #[test]
    fn socket_depends_on_group_only() {
        let a = socket_path("/run/c.sock", "k8s.io", "pod1");
        assert_eq!(a, socket_path("/run/c.sock", "k8s.io", "pod1"));
        assert_ne!(a, socket_path("/run/c.sock", "k8s.io", "pod2"));
        assert!(a.as_os_str().len() < 100);
    }
}
