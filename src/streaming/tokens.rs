//! The sessions Exec, Attach and PortForward have promised, by the token in their
//! URL. A token is random, redeemable once, and expires after a minute, as the
//! kubelet's streaming server and containerd's do; so a URL seen in a log is
//! worth nothing, and at most [`MAX_PENDING`] unredeemed ones are kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

use super::{AttachRequest, ExecRequest, PortForwardRequest};
use crate::error::{Error, Result};

/// How long a URL stays valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Unredeemed tokens kept at once (containerd's `maxInFlight`).
pub const MAX_PENDING: usize = 1000;

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
}

#[derive(Default)]
pub struct Tokens {
    pending: Mutex<HashMap<String, (Session, Instant)>>,
}

impl Tokens {
    /// Keeps `session` and returns its token.
    pub fn issue(&self, session: Session) -> Result<String> {
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|_, (_, at)| now.duration_since(*at) < TOKEN_TTL);
        if pending.len() >= MAX_PENDING {
            return Err(Error::Unavailable(format!(
                "{MAX_PENDING} streaming sessions are already waiting for their clients"
            )));
        }
        let token =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        pending.insert(token.clone(), (session, now));
        Ok(token)
    }

    /// Takes the session of `token` if it is of `kind` and has not expired.
    pub fn redeem(&self, kind: &str, token: &str) -> Option<Session> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (session, at) = pending.remove(token)?;
        (session.kind() == kind && at.elapsed() < TOKEN_TTL).then_some(session)
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
        tokens.pending.lock().unwrap().get_mut(&old).unwrap().1 = past;
        assert_eq!(tokens.redeem("portforward", &old), None);

        let stale = tokens.issue(forward("stale")).unwrap();
        tokens.pending.lock().unwrap().get_mut(&stale).unwrap().1 = past;
        tokens.issue(forward("new")).unwrap();
        assert_eq!(tokens.pending.lock().unwrap().len(), 1);
    }

    #[test]
    fn pending_sessions_are_bounded() {
        let tokens = Tokens::default();
        for _ in 0..MAX_PENDING {
            tokens.issue(forward("p")).unwrap();
        }
        assert!(matches!(
            tokens.issue(forward("p")),
            Err(Error::Unavailable(_))
        ));
    }
}
