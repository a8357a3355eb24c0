//! What runs at once, by target: sessions, each holding a connection, its
//! buffers (about a megabyte at most, see the transports' budgets) and, for an
//! exec, a process and its fifos; and forwarded connections, each holding a
//! descriptor. One caller with exec or port-forward rights cannot open them
//! without end: a target (a container, or a pod for port forwarding) runs at
//! most [`MAX_SESSIONS_PER_TARGET`] sessions and [`MAX_FORWARDS_PER_POD`]
//! forwards, the node [`MAX_SESSIONS`] and [`MAX_FORWARDS`]; past a bound a call
//! is refused with ResourceExhausted, a client redeeming a token gets
//! `429 Too Many Requests`, a forward gets the error on its error stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// Sessions on one target at once: far more than people typing `kubectl exec`
/// into one container, and room for CI agents running parallel steps in one pod.
pub const MAX_SESSIONS_PER_TARGET: usize = 32;
/// Sessions on the node at once: with about a megabyte of buffers and four
/// descriptors each at worst, 128 MiB and half of a default 1024-descriptor
/// limit; four flooded targets to fill it.
pub const MAX_SESSIONS: usize = 128;
/// Connections forwarded into one pod at once, all its sessions together: a
/// browser opens six per host.
pub const MAX_FORWARDS_PER_POD: usize = 64;
/// Connections forwarded at once on the node: a descriptor each.
pub const MAX_FORWARDS: usize = 256;

/// A count per target, bounded per target and in all.
pub struct Sessions {
    what: &'static str,
    per_target: usize,
    total: usize,
    running: Mutex<HashMap<String, usize>>,
}

impl Default for Sessions {
    /// Streaming sessions.
    fn default() -> Self {
        Sessions::new("streaming sessions", MAX_SESSIONS_PER_TARGET, MAX_SESSIONS)
    }
}

/// A running session's place; it is given back when dropped.
pub struct Slot {
    sessions: Arc<Sessions>,
    target: String,
}

impl Sessions {
    fn new(what: &'static str, per_target: usize, total: usize) -> Sessions {
        Sessions {
            what,
            per_target,
            total,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Forwarded connections.
    pub fn forwards() -> Sessions {
        Sessions::new("forwarded connections", MAX_FORWARDS_PER_POD, MAX_FORWARDS)
    }

    /// Whether `target` could start a session now.
    pub fn check(&self, target: &str) -> Result<()> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        self.room(&running, target)
    }

    /// Takes a place for a session on `target`.
    pub fn start(self: &Arc<Self>, target: &str) -> Result<Slot> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        self.room(&running, target)?;
        *running.entry(target.to_string()).or_default() += 1;
        Ok(Slot {
            sessions: self.clone(),
            target: target.to_string(),
        })
    }

    fn room(&self, running: &HashMap<String, usize>, target: &str) -> Result<()> {
        let what = self.what;
        if running.get(target).copied().unwrap_or(0) >= self.per_target {
            return Err(Error::ResourceExhausted(format!(
                "{target}: {} {what} are already running (the limit per target)",
                self.per_target
            )));
        }
        if running.values().sum::<usize>() >= self.total {
            return Err(Error::ResourceExhausted(format!(
                "{} {what} are already running on the node (the limit)",
                self.total
            )));
        }
        Ok(())
    }
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
