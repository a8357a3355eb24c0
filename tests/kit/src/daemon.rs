//! Starting a CRI daemon (berthd, or containerd in the benchmark) and waiting
//! until it serves: the one readiness loop both the tests and the bench use.

use std::future::Future;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How often readiness is probed: a daemon is ready in tens of milliseconds.
const PROBE_INTERVAL: Duration = Duration::from_millis(25);

/// Why a daemon never served.
#[derive(Debug)]
pub enum NotServing {
    /// It exited while starting.
    Exited(ExitStatus),
    /// It was still not ready after the timeout (it is left running).
    TimedOut(Duration),
}

/// Probes `ready` until it says yes, `child` exits, or `timeout` passes.
pub async fn wait_serving<F, Fut>(
    child: &mut Child,
    timeout: Duration,
    mut ready: F,
) -> Result<(), NotServing>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(NotServing::Exited(status));
        }
        if ready().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(NotServing::TimedOut(timeout));
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[tokio::test]
    async fn a_daemon_that_exits_is_not_waited_for() {
        let mut child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let r = wait_serving(&mut child, Duration::from_secs(30), || async { false }).await;
        assert!(
            matches!(r, Err(NotServing::Exited(s)) if s.code() == Some(3)),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn readiness_and_the_deadline() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let mut probes = 0;
        let r = wait_serving(&mut child, Duration::from_secs(30), || {
            probes += 1;
            let ready = probes == 3;
            async move { ready }
        })
        .await;
        assert!(r.is_ok() && probes == 3, "{r:?} after {probes}");
        let r = wait_serving(&mut child, Duration::ZERO, || async { false }).await;
        assert!(matches!(r, Err(NotServing::TimedOut(_))), "{r:?}");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
