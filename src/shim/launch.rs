//! Starting and cleaning up shim processes the way containerd does: exec the shim
//! binary with `start` (it daemonises and prints its ttrpc address) or `delete` (it
//! cleans up after a task whose shim is gone).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::error::{Error, Result};

/// The containerd namespace CRI uses; shims key their state by it.
pub const NAMESPACE: &str = "k8s.io";
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a shim needs to know about berthd.
#[derive(Debug, Clone)]
pub struct ShimEnv {
    /// berthd's events endpoint (`unix:///...`), given as `-address` and `TTRPC_ADDRESS`.
    pub events_address: String,
    /// What the shim may exec to publish events (berthd itself, `publish` subcommand).
    pub publish_binary: PathBuf,
    /// Where berth's own shim puts its sockets (`BERTH_SHIM_SOCKET_DIR`).
    pub socket_dir: PathBuf,
}

impl ShimEnv {
    fn command(&self, binary: &Path, id: &str, bundle: &Path, action: &str) -> Command {
        let mut cmd = Command::new(binary);
        cmd.args(["-namespace", NAMESPACE, "-address", &self.events_address])
            .arg("-publish-binary")
            .arg(&self.publish_binary)
            .args(["-id", id])
            .arg("-bundle")
            .arg(bundle)
            .arg(action)
            .current_dir(bundle)
            .env("TTRPC_ADDRESS", &self.events_address)
            .env("NAMESPACE", NAMESPACE)
            .env("BERTH_SHIM_SOCKET_DIR", &self.socket_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        crate::layout::with_child_umask(&mut cmd);
        cmd
    }

    /// Starts (or, for a pod that has one, finds) the shim for task `id` and returns
    /// its ttrpc address.
    pub async fn start(&self, binary: &Path, id: &str, bundle: &Path) -> Result<String> {
        let cmd = self.command(binary, id, bundle, "start");
        let output = run(cmd, binary, "start").await?;
        crate::metrics::shim_start();
        parse_address(&output).ok_or_else(|| {
            Error::Unavailable(format!(
                "shim {} printed no address: {output:?}",
                binary.display()
            ))
        })
    }

    /// Lets the shim binary clean up task `id` when its shim process is gone.
    pub async fn delete(&self, binary: &Path, id: &str, bundle: &Path) -> Result<()> {
        let cmd = self.command(binary, id, bundle, "delete");
        run(cmd, binary, "delete").await.map(|_| ())
    }
}

async fn run(mut cmd: Command, binary: &Path, action: &str) -> Result<String> {
    let child = cmd.spawn().map_err(|e| {
        Error::FailedPrecondition(format!("cannot run shim {}: {e}", binary.display()))
    })?;
    let output = tokio::time::timeout(START_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            Error::Unavailable(format!(
                "shim {} {action} did not finish in {START_TIMEOUT:?}",
                binary.display()
            ))
        })?
        .map_err(|e| Error::Unavailable(format!("shim {} {action}: {e}", binary.display())))?;
    if !output.status.success() {
        return Err(Error::Unavailable(format!(
            "shim {} {action} failed ({}): {}",
            binary.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// A shim prints its address plainly (containerd 1.x shims) or as bootstrap JSON
/// (`{"version":3,"address":"unix://...","protocol":"ttrpc"}`, containerd 2.x shims).
fn parse_address(output: &str) -> Option<String> {
    let output = output.trim();
    if output.starts_with('{') {
        let params: serde_json::Value = serde_json::from_str(output).ok()?;
        return params["address"].as_str().map(str::to_string);
    }
    (!output.is_empty()).then(|| output.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_both_forms() {
        assert_eq!(
            parse_address("unix:///run/berth/s/abc\n").as_deref(),
            Some("unix:///run/berth/s/abc")
        );
        assert_eq!(
            parse_address(r#"{"version":3,"address":"unix:///x","protocol":"ttrpc"}"#).as_deref(),
            Some("unix:///x")
        );
        assert_eq!(parse_address("  "), None);
        assert_eq!(parse_address("{garbage"), None);
    }
}
