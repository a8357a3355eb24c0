//! StartContainer, StopContainer, RemoveContainer, and the waiter that records how a
//! container ended.

use std::sync::Arc;
use std::time::Duration;

use super::io::LogOpening;
use super::service::ContainerService;
use crate::domain::ContainerPhase;
use crate::error::{Error, Result};
use crate::shim::{Exit, TaskClient, TaskStatus};
use crate::store::ContainerRecord;

/// How long a SIGKILLed container may take to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// The exit status of a process killed by SIGKILL, as the OOM killer does.
pub(super) const SIGKILLED: u32 = 128 + libc::SIGKILL as u32;
/// How long an OOM event may trail the exit it explains.
pub(super) const OOM_EVENT_GRACE: Duration = Duration::from_secs(1);

impl ContainerService {
    /// Starts a Created container of a Ready pod. The pod is held shared, so a
    /// racing StopPodSandbox stops the container after, or refuses the start.
    /// Runs to the end even if the caller goes away, so a process the shim
    /// started is always recorded Running and waited for.
    pub async fn start(self: &Arc<Self>, id: &str) -> Result<()> {
        let this = Arc::clone(self);
        let id = id.to_string();
        tokio::spawn(async move { this.start_to_end(&id).await }).await?
    }

    async fn start_to_end(self: &Arc<Self>, id: &str) -> Result<()> {
        let record = self.get(id)?;
        let id = record.id;
        let pod = self.sandboxes.hold_ready(&record.sandbox_id).await?;
        let _guard = self.lock(&id).await;
        let mut record = self.get(&id)?;
        if !record.phase.can_start() {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is {:?}, not Created",
                record.phase
            )));
        }
        let task = pod.task.clone();
        match task.start(&id, "").await {
            Ok(pid) => {
                crate::fault::crash_point("after-shim-start");
                record.pid = pid;
                record.phase = ContainerPhase::Running;
                record.started_at = crate::image::now_nanos();
                // Not waited onto disk: the shim's task is the durable proof of
                // the start, and recovery records a Created container whose
                // task runs (or ran) as started (`recover_one`), so a crash
                // that loses this commit loses nothing. It saves the call an fsync.
                self.persist_volatile(&record).await?;
                self.clone().wait_for_exit(id, task);
                Ok(())
            }
            Err(e) => {
                // The process never ran: the container is over, with the reason.
                record.phase = ContainerPhase::Exited;
                record.finished_at = crate::image::now_nanos();
                record.exit_code = 128;
                record.reason = "StartError".into();
                record.message = e.to_string();
                self.persist(&record).await?;
                if let Some(output) = self.output(&id) {
                    output.finish();
                }
                Err(e)
            }
        }
    }

    /// Waits in the background for the container's exit and records it.
    ///
    /// The record is written under the container's lock, which StopContainer
    /// holds while it waits for the same exit: whichever comes second finds the
    /// exit recorded and writes nothing.
    pub(super) fn wait_for_exit(self: Arc<Self>, id: String, task: TaskClient) {
        tokio::spawn(async move {
            match task.wait(&id, "").await {
                Ok(exit) => {
                    if exit.status == SIGKILLED {
                        self.await_oom_event(&id).await;
                    }
                    let _guard = self.lock(&id).await;
                    self.record_exit(&id, exit).await
                }
                Err(e) => {
                    tracing::warn!(container_id = %id, error = %e, "lost the container's shim");
                    crate::metrics::shim_death();
                    let _guard = self.lock(&id).await;
                    self.record_lost(&id, &e.to_string()).await;
                }
            }
        });
    }

    /// Wait answers as soon as the process is reaped, while the shim's OOM event
    /// travels separately and may come a moment later; a SIGKILLed container gets
    /// that moment before its reason is decided. It sleeps until an OOM event
    /// comes or the moment is over, not in rounds: a pod's teardown SIGKILLs all
    /// of its containers, and every one of them waits here.
    async fn await_oom_event(&self, id: &str) {
        let deadline = tokio::time::Instant::now() + OOM_EVENT_GRACE;
        loop {
            // Registered before the check, so an event between the two still wakes it.
            let seen = self.oom_seen.notified();
            tokio::pin!(seen);
            seen.as_mut().enable();
            let killed = self
                .oom_killed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(id);
            if killed || tokio::time::timeout_at(deadline, seen).await.is_err() {
                return;
            }
        }
    }

    /// Records an exit once; later calls for the same exit change nothing.
    /// Callers hold the container's lock, or are recovery (which runs before
    /// any call).
    pub(super) async fn record_exit(&self, id: &str, exit: Exit) {
        let Ok(mut record) = self.get(id) else { return };
        if !record.phase.can_record_exit() {
            return;
        }
        let oom = self
            .oom_killed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        crate::metrics::container_exit(oom);
        record.phase = ContainerPhase::Exited;
        record.exit_code = exit.status as i32;
        record.finished_at = if exit.at > 0 {
            exit.at
        } else {
            crate::image::now_nanos()
        };
        record.reason = if oom {
            "OOMKilled"
        } else if exit.status == 0 {
            "Completed"
        } else {
            "Error"
        }
        .to_string();
        if let Err(e) = self.persist(&record).await {
            tracing::error!(container_id = id, error = %e, "recording an exit");
        }
        if let Some(output) = self.output(id) {
            output.finish();
        }
    }

    /// The shim is gone: what became of the container cannot be known.
    /// Callers hold the lock, as for [`Self::record_exit`].
    pub(super) async fn record_lost(&self, id: &str, why: &str) {
        let Ok(mut record) = self.get(id) else { return };
        if !record.phase.can_record_exit() {
            return;
        }
        record.phase = ContainerPhase::Exited;
        record.exit_code = 255;
        record.finished_at = crate::image::now_nanos();
        record.reason = "Unknown".into();
        record.message = format!("the container's shim is gone: {why}");
        if let Err(e) = self.persist(&record).await {
            tracing::error!(container_id = id, error = %e, "recording a lost container");
        }
        if let Some(output) = self.output(id) {
            output.finish();
        }
    }

    /// Signals the container (its image's STOPSIGNAL, else SIGTERM), waits up to
    /// `timeout`, then SIGKILLs it. Stopping a container that is not running, or
    /// one that does not exist, succeeds.
    pub async fn stop(&self, id: &str, timeout: Duration) -> Result<()> {
        let id = match self.get(id) {
            Ok(c) => c.id,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _guard = self.lock(&id).await;
        self.stop_locked(&id, timeout).await
    }

    async fn stop_locked(&self, id: &str, timeout: Duration) -> Result<()> {
        let record = match self.get(id) {
            Ok(r) => r,
            // Removed while this call waited for the lock: stopped, then.
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if !record.phase.must_signal_to_stop() {
            return Ok(());
        }
        let (_, task) = self.task_of(&record)?;
        if !timeout.is_zero() {
            let signal = stop_signal(&record.stop_signal);
            if let Some(exit) = self
                .signal_and_wait(&task, id, signal, false, timeout)
                .await?
            {
                self.record_exit(id, exit).await;
                return Ok(());
            }
        }
        match self
            .signal_and_wait(&task, id, libc::SIGKILL as u32, true, KILL_WAIT)
            .await?
        {
            Some(exit) => {
                self.record_exit(id, exit).await;
                Ok(())
            }
            None => Err(Error::Unavailable(format!(
                "container {id} did not exit {KILL_WAIT:?} after SIGKILL"
            ))),
        }
    }

    /// Sends `signal`; the exit if it came within `timeout`.
    async fn signal_and_wait(
        &self,
        task: &TaskClient,
        id: &str,
        signal: u32,
        all: bool,
        timeout: Duration,
    ) -> Result<Option<Exit>> {
        match task.kill(id, "", signal, all).await {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        match tokio::time::timeout(timeout, task.wait(id, "")).await {
            Ok(result) => result.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Removes the container, killing it first if it runs. Removing one that does
    /// not exist succeeds.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let id = match self.get(id) {
            Ok(c) => c.id,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _guard = self.lock(&id).await;
        let record = match self.get(&id) {
            Ok(r) => r,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if record.phase.must_signal_to_stop() {
            self.stop_locked(&id, Duration::ZERO).await?;
        }
        match self.task_of(&record) {
            Ok((_, task)) => {
                // Only once the shim has let go of the task may its files go: a
                // process that still runs keeps its bundle, layer and record.
                self.delete_task(&id, &task).await?;
                self.remove_files(&id).await;
            }
            // The pod's shim is gone with its tasks; clean up what is ours.
            Err(_) => self.remove_leftovers(&id).await,
        }
        let name = super::service::container_name(&record.config, &self.pod_config(&record));
        self.names.release(&name, &id);
        tracing::info!(container_id = %id, "removed container");
        Ok(())
    }

    async fn remove_leftovers(&self, id: &str) {
        self.delete_without_shim(id).await;
        self.remove_files(id).await;
    }

    fn pod_config(&self, record: &ContainerRecord) -> crate::domain::config::SandboxConfig {
        self.sandboxes
            .get(&record.sandbox_id)
            .map(|s| s.record.config.clone())
            .unwrap_or_default()
    }

    /// Brings one recorded container back after a restart.
    pub(super) async fn recover_one(self: Arc<Self>, mut record: ContainerRecord) -> Result<()> {
        let id = record.id.clone();
        let task = self.task_of(&record).map(|(_, t)| t);
        if record.phase.is_half_created() {
            tracing::info!(container_id = %id, "undoing a container a crash left half-created");
            match &task {
                Ok(task) => self.undo_create(&id, task).await,
                Err(_) => self.remove_leftovers(&id).await,
            }
            return Ok(());
        }
        if !record.phase.has_live_task() {
            return Ok(());
        }
        let task = match task {
            Ok(t) => t,
            Err(e) => {
                self.record_lost(&id, &e.to_string()).await;
                return Ok(());
            }
        };
        let state = match task.state(&id, "").await {
            Ok(s) => s,
            Err(e) => {
                self.record_lost(&id, &e.to_string()).await;
                return Ok(());
            }
        };
        if state.status == TaskStatus::Stopped {
            let at = state.exit.at;
            if record.phase.can_start() {
                // Started, then exited, while the record still said Created: a
                // crash came between the start and its record. When it started is
                // lost with its process; its end is the closest known time.
                record.started_at = at;
                self.save(&record)?;
            }
            // Drain what it wrote while berthd was away before recording the end.
            self.attach_output(&record, LogOpening::Retried)?;
            self.record_exit(&id, state.exit).await;
            return Ok(());
        }
        self.attach_output(&record, LogOpening::Retried)?;
        if state.status == TaskStatus::Running {
            if record.phase.can_start() {
                tracing::info!(container_id = %id, pid = state.pid, "started before a crash; recording it Running");
                record.phase = ContainerPhase::Running;
                record.started_at =
                    process_start_nanos(state.pid).unwrap_or_else(crate::image::now_nanos);
            }
            record.pid = state.pid;
            self.save(&record)?;
            self.clone().wait_for_exit(id, task);
        }
        Ok(())
    }
}

/// When process `pid` started, in nanoseconds since the epoch: now, less the time
/// since its start tick (`/proc/<pid>/stat`, ticks since boot) by `/proc/uptime`.
fn process_start_nanos(pid: u32) -> Option<i64> {
    if pid == 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    start_nanos(
        &stat,
        &uptime,
        u64::try_from(ticks_per_sec).ok()?,
        crate::image::now_nanos(),
    )
}

/// The arithmetic of [`process_start_nanos`], on the files' contents.
fn start_nanos(pid_stat: &str, uptime: &str, ticks_per_sec: u64, now: i64) -> Option<i64> {
    // The command name (field 2) may hold spaces and parentheses: count fields
    // after its closing one. `starttime` is field 22, the 20th after it.
    let after_comm = &pid_stat[pid_stat.rfind(')')? + 1..];
    let start_ticks: u64 = after_comm.split_whitespace().nth(19)?.parse().ok()?;
    let up_secs: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    if ticks_per_sec == 0 {
        return None;
    }
    let started_after_boot = start_ticks as f64 / ticks_per_sec as f64;
    let ago = (up_secs - started_after_boot).max(0.0);
    Some(now - (ago * 1e9) as i64)
}

/// A STOPSIGNAL as images write it ("SIGQUIT", "QUIT", "3"); SIGTERM otherwise.
fn stop_signal(name: &str) -> u32 {
    let name = name.trim();
    if let Ok(n) = name.parse::<u32>() {
        return n;
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<nix::sys::signal::Signal>()
        .map(|s| s as u32)
        .unwrap_or(libc::SIGTERM as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals_in_every_spelling() {
        assert_eq!(stop_signal(""), libc::SIGTERM as u32);
        assert_eq!(stop_signal("SIGQUIT"), libc::SIGQUIT as u32);
        assert_eq!(stop_signal("quit"), libc::SIGQUIT as u32);
        assert_eq!(stop_signal("9"), 9);
        assert_eq!(stop_signal("SIGBOGUS"), libc::SIGTERM as u32);
    }

    #[test]
    fn start_time_from_proc() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 250 1000";
        let now = 1_700_000_000_000_000_000;
        // Started 2.5 s after boot, 10 s ago.
        assert_eq!(
            start_nanos(stat, "12.50 40.00\n", 100, now),
            Some(now - 10_000_000_000)
        );
        assert_eq!(start_nanos("4242 (x) S 1", "12.50 1\n", 100, now), None);
        assert_eq!(start_nanos(stat, "", 100, now), None);
    }
}
