//! Running one CNI plugin binary: the CNI_* environment, the config on stdin, a
//! deadline that kills it, and its stdout read as a result or a CNI error object.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::NetworkError;
use super::error::Call;

/// The CNI_* environment of one call, shared by every plugin of a network.
#[derive(Debug, Clone)]
pub struct Env<'a> {
    pub command: &'static str,
    pub container_id: &'a str,
    /// Empty for a DEL whose namespace is gone, as the spec asks.
    pub netns: &'a Path,
    pub ifname: &'a str,
    pub args: &'a str,
    pub bin_dirs: &'a [PathBuf],
}

/// The first `bin_dirs` entry holding an executable file named `plugin`.
pub fn find(bin_dirs: &[PathBuf], plugin: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    // A type with a slash would escape the bin dirs.
    if plugin.contains('/') {
        return None;
    }
    bin_dirs.iter().map(|d| d.join(plugin)).find(|p| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// Runs `binary` with `config` on stdin. Returns the JSON it printed (None when it
/// printed nothing, as DEL and CHECK may), or the plugin's error.
pub async fn run(
    call: &Call,
    binary: &Path,
    env: &Env<'_>,
    config: &Value,
    timeout: Duration,
) -> Result<Option<Value>, NetworkError> {
    let exec_err = |reason: String| NetworkError::Exec {
        call: Box::new(call.clone()),
        reason,
    };
    let cni_path = std::env::join_paths(env.bin_dirs)
        .map_err(|e| exec_err(format!("bin dirs do not make a CNI_PATH: {e}")))?;
    let stdin_bytes = serde_json::to_vec(config)
        .map_err(|e| exec_err(format!("cannot serialise config: {e}")))?;

    let mut child = crate::layout::with_child_umask(&mut tokio::process::Command::new(binary))
        .env("CNI_COMMAND", env.command)
        .env("CNI_CONTAINERID", env.container_id)
        .env("CNI_NETNS", env.netns)
        .env("CNI_IFNAME", env.ifname)
        .env("CNI_ARGS", env.args)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Dropping the child on timeout kills it.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| exec_err(format!("cannot start {}: {e}", binary.display())))?;

    let mut stdin = child.stdin.take();
    let feed = async move {
        if let Some(stdin) = stdin.as_mut() {
            // A plugin that exits without reading stdin breaks the pipe; its exit
            // status and output say more than the write error would.
            let _ = stdin.write_all(&stdin_bytes).await;
        }
        drop(stdin);
    };
    let outcome = tokio::time::timeout(timeout, async {
        let (_, output) = tokio::join!(feed, child.wait_with_output());
        output
    })
    .await;
    let output = match outcome {
        Err(_) => {
            return Err(NetworkError::Timeout {
                call: Box::new(call.clone()),
                timeout,
            });
        }
        Ok(output) => output.map_err(|e| exec_err(format!("waiting for plugin: {e}")))?,
    };

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let parsed: Option<Value> = if stdout.trim().is_empty() {
        None
    } else {
        serde_json::from_str(stdout.trim()).ok()
    };
    if output.status.success() {
        if !stdout.trim().is_empty() && parsed.is_none() {
            return Err(NetworkError::BadResult {
                call: Box::new(call.clone()),
                reason: format!("stdout is not JSON: {}", excerpt(&stdout)),
            });
        }
        return Ok(parsed);
    }
    if let Some(err) = parsed.as_ref().and_then(error_object) {
        return Err(NetworkError::Plugin {
            call: Box::new(call.clone()),
            code: err.code,
            msg: err.msg,
            details: err.details,
        });
    }
    Err(exec_err(format!(
        "plugin exited with {}; stdout: {}; stderr: {}",
        output.status,
        excerpt(&stdout),
        excerpt(&stderr)
    )))
}

/// The spec's error object: `{"cniVersion", "code", "msg", "details"}`.
#[derive(Debug, PartialEq, Eq)]
pub struct ErrorObject {
    pub code: u64,
    pub msg: String,
    pub details: String,
}

/// Reads stdout as a CNI error object; a JSON value without a numeric `code` is not one.
pub fn error_object(value: &Value) -> Option<ErrorObject> {
    let code = value.get("code")?.as_u64()?;
    let text = |key| {
        value
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Some(ErrorObject {
        code,
        msg: text("msg"),
        details: text("details"),
    })
}

/// At most a few hundred characters of a plugin's output, for an error message.
fn excerpt(text: &str) -> String {
    const MAX: usize = 400;
    let text = text.trim();
    if text.is_empty() {
        return "(empty)".into();
    }
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call() -> Call {
        Call {
            command: "ADD",
            network: "n".into(),
            plugin: "fake".into(),
            pod_id: "p1".into(),
        }
    }

    /// Written by a child `sh`, not by this process: a write descriptor open here
    /// would be inherited by a plugin another test forks meanwhile, and exec of
    /// the script would then fail with ETXTBSY.
    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::io::Write;
        let path = dir.join(name);
        let mut writer = std::process::Command::new("sh")
            .args(["-c", "cat > \"$0\" && chmod 755 \"$0\""])
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = writer.stdin.take().unwrap();
        stdin
            .write_all(format!("#!/bin/sh\n{body}\n").as_bytes())
            .unwrap();
        drop(stdin);
        assert!(
            writer.wait().unwrap().success(),
            "writing {}",
            path.display()
        );
        path
    }

    fn env(dirs: &[PathBuf]) -> Env<'_> {
        Env {
            command: "ADD",
            container_id: "p1",
            netns: Path::new("/run/x"),
            ifname: "eth0",
            args: "IgnoreUnknown=1",
            bin_dirs: dirs,
        }
    }

    #[test]
    fn error_objects_are_read() {
        let v = json!({"cniVersion": "1.0.0", "code": 7, "msg": "bad", "details": "why"});
        assert_eq!(
            error_object(&v),
            Some(ErrorObject {
                code: 7,
                msg: "bad".into(),
                details: "why".into()
            })
        );
        assert_eq!(
            error_object(&json!({"code": 999, "msg": "m"}))
                .unwrap()
                .details,
            ""
        );
        assert_eq!(error_object(&json!({"ips": []})), None);
    }

    #[test]
    fn plugins_are_found_in_order_and_must_be_executable() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("bridge"), "not executable").unwrap();
        let exe = script(b.path(), "bridge", "true");
        let dirs = [a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(find(&dirs, "bridge"), Some(exe));
        assert_eq!(find(&dirs, "portmap"), None);
        assert_eq!(find(&dirs, "../b/bridge"), None);
    }

    #[tokio::test]
    async fn environment_and_stdin_reach_the_plugin() {
        let dir = tempfile::tempdir().unwrap();
        let bin = script(
            dir.path(),
            "echo",
            r#"conf=$(cat); printf '{"env":"%s %s %s %s %s","conf":%s}' \
               "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" "$CNI_ARGS" "$conf""#,
        );
        let dirs = [dir.path().to_path_buf()];
        let out = run(
            &call(),
            &bin,
            &env(&dirs),
            &json!({"x": 1}),
            Duration::from_secs(10),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(out["env"], "ADD p1 /run/x eth0 IgnoreUnknown=1");
        assert_eq!(out["conf"], json!({"x": 1}));
    }

    #[tokio::test]
    async fn failures_carry_the_plugin_message() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = [dir.path().to_path_buf()];
        let bin = script(
            dir.path(),
            "fail",
            r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"no IPs left","details":"pool full"}'; exit 1"#,
        );
        let err = run(
            &call(),
            &bin,
            &env(&dirs),
            &json!({}),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, NetworkError::Plugin { code: 11, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("no IPs left (pool full)"), "{err}");

        let bin = script(dir.path(), "crash", "echo boom >&2; exit 2");
        let err = run(
            &call(),
            &bin,
            &env(&dirs),
            &json!({}),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("stderr: boom"), "{err}");

        let bin = script(dir.path(), "garbage", "echo not-json");
        let err = run(
            &call(),
            &bin,
            &env(&dirs),
            &json!({}),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, NetworkError::BadResult { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_hung_plugin_is_killed_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = [dir.path().to_path_buf()];
        let bin = script(dir.path(), "hang", "exec sleep 30");
        // Well under the plugin's 30 s: a run that waited for it fails here
        // instead of passing slowly.
        let guard = Duration::from_secs(15);
        let call = call();
        let env = env(&dirs);
        let config = json!({});
        let run = run(&call, &bin, &env, &config, Duration::from_millis(300));
        let err = tokio::time::timeout(guard, run)
            .await
            .expect("the hung plugin was waited for")
            .unwrap_err();
        assert!(matches!(err, NetworkError::Timeout { .. }), "{err:?}");
    }
}
