//! The sessions running at once, by target: each holds a connection, its
//! buffers (about a megabyte at most, see the transports' budgets) and, for an
//! exec, a process in the container, so one caller with exec rights cannot open
//! them without end. A target (a container, or a pod for port forwarding) runs
//! at most [`MAX_SESSIONS_PER_TARGET`], the node [`MAX_SESSIONS`]; past either a
//! call is refused with ResourceExhausted, and a client redeeming a token gets
//! `429 Too Many Requests`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// Sessions on one target at once: far more than people typing `kubectl exec`
/// into one container, and room for CI agents running parallel steps in one pod.
pub const MAX_SESSIONS_PER_TARGET: usize = 32;
/// Sessions on the node at once: with about a megabyte of buffers each at
/// worst, a quarter of a gigabyte; eight flooded targets to fill it.
pub const MAX_SESSIONS: usize = 256;

/// The running sessions' count per target.
#[derive(Default)]
pub struct Sessions {
    running: Mutex<HashMap<String, usize>>,
}

/// A running session's place; it is given back when dropped.
pub struct Slot {
    sessions: Arc<Sessions>,
    target: String,
}

impl Sessions {
    /// Whether `target` could start a session now.
    pub fn check(&self, target: &str) -> Result<()> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        room(&running, target)
    }

    /// Takes a place for a session on `target`.
    pub fn start(self: &Arc<Self>, target: &str) -> Result<Slot> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        room(&running, target)?;
        *running.entry(target.to_string()).or_default() += 1;
        Ok(Slot {
            sessions: self.clone(),
            target: target.to_string(),
        })
    }
}

fn room(running: &HashMap<String, usize>, target: &str) -> Result<()> {
    if running.get(target).copied().unwrap_or(0) >= MAX_SESSIONS_PER_TARGET {
        return Err(Error::ResourceExhausted(format!(
            "{target}: {MAX_SESSIONS_PER_TARGET} streaming sessions are already running \
             (the limit per target)"
        )));
    }
    if running.values().sum::<usize>() >= MAX_SESSIONS {
        return Err(Error::ResourceExhausted(format!(
            "{MAX_SESSIONS} streaming sessions are already running on the node (the limit)"
        )));
    }
    Ok(())
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = self
            .sessions
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = running.get_mut(&self.target) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.target);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_bounded_per_target_and_in_all() {
        let sessions = Arc::new(Sessions::default());
        let mut slots: Vec<Slot> = (0..MAX_SESSIONS_PER_TARGET)
            .map(|_| sessions.start("busy").unwrap())
            .collect();
        assert!(matches!(
            sessions.start("busy"),
            Err(Error::ResourceExhausted(m)) if m.contains("busy") && m.contains("per target")
        ));
        assert!(sessions.check("busy").is_err());
        sessions.check("quiet").unwrap();
        // A session that ends gives its place back.
        slots.pop();
        slots.push(sessions.start("busy").unwrap());

        for i in MAX_SESSIONS_PER_TARGET..MAX_SESSIONS {
            slots.push(sessions.start(&format!("t{}", i / 16)).unwrap());
        }
        assert!(matches!(
            sessions.start("quiet"),
            Err(Error::ResourceExhausted(m)) if m.contains("on the node")
        ));
        drop(slots);
        assert!(sessions.running.lock().unwrap().is_empty());
        sessions.start("quiet").unwrap();
    }
}
