//! The sessions Exec, Attach and PortForward have promised, by the token in their
//! URL. A token is random, redeemable once, and expires after a minute, as the
//! kubelet's streaming server and containerd's do; so a URL seen in a log is
//! worth nothing.
//!
//! Unredeemed tokens are bounded per target and in all, fairly: containerd keeps
//! [`MAX_PENDING`] in one pool, so a thousand Exec calls on one container refuse
//! every other exec on the node for the minute the tokens live. Here a target
//! (the container of an exec or attach, the pod of a port forward) holds at most
//! [`MAX_PENDING_PER_TARGET`], past which its calls get ResourceExhausted; and
//! when the pool is full, room is made by dropping the oldest token of the
//! target holding the most, so a target with few tokens is never refused for
//! others' floods.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

use super::{AttachRequest, ExecRequest, PortForwardRequest};
use crate::error::{Error, Result};

/// How long a URL stays valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Unredeemed tokens per target: each `kubectl exec` takes one and redeems it
/// at once, so dozens waiting on one container is already a flood.
pub const MAX_PENDING_PER_TARGET: usize = 64;
/// Unredeemed tokens in all (containerd's `maxInFlight`).
pub const MAX_PENDING: usize = 1000;
/// Bytes of requests (mostly exec commands) kept in all: with commands up to
/// [`super::MAX_EXEC_CMD_BYTES`], 128 of the largest.
pub const MAX_PENDING_BYTES: usize = 16 << 20;

/// A session waiting for its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Session {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

impl Session {
    /// The first segment of the session's URL path.
    pub fn kind(&self) -> &'static str {
        match self {
            Session::Exec(_) => "exec",
            Session::Attach(_) => "attach",
            Session::PortForward(_) => "portforward",
        }
    }

    /// What the session runs against: a container, or a pod for port forwarding.
    pub fn target(&self) -> &str {
        match self {
            Session::Exec(r) => &r.container_id,
            Session::Attach(r) => &r.container_id,
            Session::PortForward(r) => &r.sandbox_id,
        }
    }

    /// What tokens are counted by: the kind of target and its id.
    fn owner(&self) -> (&'static str, &str) {
        (target_kind(self), self.target())
    }

    /// Roughly the bytes the waiting session holds.
    fn size(&self) -> usize {
        let cmd = match self {
            Session::Exec(r) => r.cmd.iter().map(|a| a.len() + 24).sum(),
            _ => 0,
        };
        std::mem::size_of::<Session>() + self.target().len() + cmd
    }
}

struct Pending {
    session: Session,
    at: Instant,
    size: usize,
}

#[derive(Default)]
pub struct Tokens {
    pending: Mutex<HashMap<String, Pending>>,
}

impl Tokens {
    /// Keeps `session` and returns its token.
    pub fn issue(&self, session: Session) -> Result<String> {
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|_, p| now.duration_since(p.at) < TOKEN_TTL);
        let (kind, target) = session.owner();
        let held = pending
            .values()
            .filter(|p| p.session.owner() == (kind, target))
            .count();
        if held >= MAX_PENDING_PER_TARGET {
            return Err(Error::ResourceExhausted(format!(
                "{kind} {target}: {MAX_PENDING_PER_TARGET} streaming sessions already wait for \
                 their clients (the limit per target); they are used or expire within {}s",
                TOKEN_TTL.as_secs()
            )));
        }
        let token =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        let size = session.size();
        pending.insert(
            token.clone(),
            Pending {
                session,
                at: now,
                size,
            },
        );
        while pending.len() > MAX_PENDING {
            evict_from_largest(&mut pending, |_| 1);
        }
        while pending.values().map(|p| p.size).sum::<usize>() > MAX_PENDING_BYTES {
            evict_from_largest(&mut pending, |p| p.size);
        }
        Ok(token)
    }

    /// Takes the session of `token` if it is of `kind` and has not expired.
    pub fn redeem(&self, kind: &str, token: &str) -> Option<Session> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let Pending { session, at, .. } = pending.remove(token)?;
        (session.kind() == kind && at.elapsed() < TOKEN_TTL).then_some(session)
    }
}

fn target_kind(session: &Session) -> &'static str {
    match session {
        Session::PortForward(_) => "pod sandbox",
        _ => "container",
    }
}

/// Drops the oldest token of the target holding the most, by `weight`.
fn evict_from_largest(pending: &mut HashMap<String, Pending>, weight: impl Fn(&Pending) -> usize) {
    let mut held: HashMap<(&str, &str), usize> = HashMap::new();
    for p in pending.values() {
        *held.entry(p.session.owner()).or_default() += weight(p);
    }
    let Some((kind, target)) = held.into_iter().max_by_key(|(_, w)| *w).map(|(o, _)| o) else {
        return;
    };
    let (kind, target) = (kind.to_string(), target.to_string());
    let oldest = pending
        .iter()
        .filter(|(_, p)| p.session.owner() == (kind.as_str(), target.as_str()))
        .min_by_key(|(_, p)| p.at)
        .map(|(token, _)| token.clone());
    if let Some(token) = oldest {
        tracing::debug!(%kind, %target, "streaming: dropped a waiting session to make room");
        pending.remove(&token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(id: &str) -> Session {
        Session::PortForward(PortForwardRequest {
            sandbox_id: id.into(),
        })
    }

    #[test]
    fn a_token_is_redeemed_once_for_its_own_kind() {
        let tokens = Tokens::default();
        let a = tokens.issue(forward("a")).unwrap();
        let b = tokens.issue(forward("b")).unwrap();
        assert_ne!(a, b);
        assert!(
            a.len() >= 22
                && a.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(tokens.redeem("portforward", &a), Some(forward("a")));
        assert_eq!(tokens.redeem("portforward", &a), None);
        // The wrong path burns the token too.
        assert_eq!(tokens.redeem("exec", &b), None);
        assert_eq!(tokens.redeem("portforward", &b), None);
        assert_eq!(tokens.redeem("portforward", "bogus"), None);
    }

    #[test]
    fn expired_tokens_are_refused_and_pruned() {
        let tokens = Tokens::default();
        let old = tokens.issue(forward("old")).unwrap();
        let past = Instant::now() - TOKEN_TTL - Duration::from_secs(1);
        tokens.pending.lock().unwrap().get_mut(&old).unwrap().at = past;
        assert_eq!(tokens.redeem("portforward", &old), None);

        let stale = tokens.issue(forward("stale")).unwrap();
        tokens.pending.lock().unwrap().get_mut(&stale).unwrap().at = past;
        tokens.issue(forward("new")).unwrap();
        assert_eq!(tokens.pending.lock().unwrap().len(), 1);
    }

    fn exec(container: &str, cmd_len: usize) -> Session {
        Session::Exec(ExecRequest {
            container_id: container.into(),
            cmd: vec!["x".repeat(cmd_len)],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: false,
        })
    }

    #[test]
    fn one_target_cannot_take_every_token() {
        let tokens = Tokens::default();
        for _ in 0..MAX_PENDING_PER_TARGET {
            tokens.issue(exec("flood", 4)).unwrap();
        }
        let refused = tokens.issue(exec("flood", 4)).unwrap_err();
        assert!(
            matches!(&refused, Error::ResourceExhausted(m)
                if m.contains("container flood") && m.contains("limit per target")),
            "{refused:?}"
        );
        // Everyone else still gets theirs.
        let other = tokens.issue(exec("other", 4)).unwrap();
        assert_eq!(tokens.redeem("exec", &other), Some(exec("other", 4)));
        assert!(
            tokens.issue(forward("flood")).is_ok(),
            "another kind of target"
        );
    }

    #[test]
    fn a_full_pool_sheds_the_largest_holder() {
        let tokens = Tokens::default();
        let mine = tokens.issue(exec("quiet", 4)).unwrap();
        // Many targets flooding to their cap fill the pool and go on.
        for i in 0.. {
            let target = format!("flood-{}", i / MAX_PENDING_PER_TARGET);
            tokens.issue(exec(&target, 4)).unwrap();
            if i > MAX_PENDING + 2 * MAX_PENDING_PER_TARGET {
                break;
            }
        }
        assert_eq!(tokens.pending.lock().unwrap().len(), MAX_PENDING);
        assert_eq!(tokens.redeem("exec", &mine), Some(exec("quiet", 4)));
        // Bytes too: large commands shed, the small one stays.
        let small = tokens.issue(exec("small", 4)).unwrap();
        for i in 0..200 {
            tokens
                .issue(exec(
                    &format!("big-{}", i % 8),
                    super::super::MAX_EXEC_CMD_BYTES - 64,
                ))
                .unwrap();
        }
        let held: usize = tokens
            .pending
            .lock()
            .unwrap()
            .values()
            .map(|p| p.size)
            .sum();
        assert!(held <= MAX_PENDING_BYTES, "{held}");
        assert_eq!(tokens.redeem("exec", &small), Some(exec("small", 4)));
    }
}
