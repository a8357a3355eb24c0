//! OOM kill detection: one thread waits on every container's memory cgroup.
//!
//! cgroup v1 signals an eventfd registered through `cgroup.event_control`
//! against `memory.oom_control`; v2 modifies `memory.events`, watched with
//! inotify. Either way the kernel's `oom_kill` counter is read and an event is
//! published only when it grew since the container was watched, so each kill
//! is reported once, for the container whose cgroup it happened in.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::cgroup::{self, Cgroup};
use crate::error::{Context, Result};
use crate::events::Publisher;

/// How long an OOM notification may precede the kill it announces.
const KILL_POLLS: u32 = 50;
const KILL_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The descriptor epoll waits on for one container.
enum Source {
    /// v1: the eventfd, and memory.oom_control which must stay open with it.
    V1 {
        event: EventFd,
        _control: File,
    },
    V2 {
        inotify: Inotify,
    },
}

impl Source {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Source::V1 { event, .. } => event.as_fd(),
            Source::V2 { inotify } => inotify.as_fd(),
        }
    }

    /// Consumes the pending notification so epoll does not fire again.
    fn drain(&self) {
        match self {
            Source::V1 { event, .. } => {
                let _ = event.read();
            }
            Source::V2 { inotify } => {
                let _ = inotify.read_events();
            }
        }
    }
}

struct Watch {
    container_id: String,
    dir: PathBuf,
    v2: bool,
    source: Source,
    kills: u64,
}

pub struct OomWatcher {
    epoll: Epoll,
    watches: Mutex<HashMap<u64, Watch>>,
    next: AtomicU64,
    publisher: Publisher,
}

impl OomWatcher {
    pub fn start(publisher: Publisher) -> Result<Arc<OomWatcher>> {
        let epoll =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context(|| "epoll_create".to_string())?;
        let watcher = Arc::new(OomWatcher {
            epoll,
            watches: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            publisher,
        });
        let w = Arc::clone(&watcher);
        thread::Builder::new()
            .name("oom".into())
            .stack_size(64 * 1024)
            .spawn(move || w.run())
            .context(|| "spawn oom thread".to_string())?;
        Ok(watcher)
    }

    /// Starts reporting OOM kills in `cg` as events for `container_id`.
    pub fn watch(&self, container_id: &str, cg: &Cgroup) -> Result<()> {
        let Some(dir) = cg.memory_dir().map(PathBuf::from) else {
            return Ok(());
        };
        let v2 = cg.is_v2();
        let source = if v2 {
            let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
                .context(|| "inotify_init".to_string())?;
            let events = dir.join("memory.events");
            inotify
                .add_watch(&events, AddWatchFlags::IN_MODIFY)
                .context(|| format!("watch {}", events.display()))?;
            Source::V2 { inotify }
        } else {
            let event =
                EventFd::from_flags(EfdFlags::EFD_CLOEXEC).context(|| "eventfd".to_string())?;
            let control_path = dir.join("memory.oom_control");
            let control =
                File::open(&control_path).context(|| format!("open {}", control_path.display()))?;
            let line = format!("{} {}", event.as_fd().as_raw_fd(), control.as_raw_fd());
            let ec = dir.join("cgroup.event_control");
            std::fs::write(&ec, line).context(|| format!("write {}", ec.display()))?;
            Source::V1 {
                event,
                _control: control,
            }
        };
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let kills = cgroup::oom_kills(&dir, v2).unwrap_or(0);
        log::debug!(
            "watching {} for OOM kills of {container_id} (now {kills})",
            dir.display()
        );
        let watch = Watch {
            container_id: container_id.to_string(),
            dir,
            v2,
            source,
            kills,
        };
        let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        self.epoll
            .add(
                watch.source.fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, token),
            )
            .context(|| "epoll_ctl add".to_string())?;
        watches.insert(token, watch);
        Ok(())
    }

    /// Stops watching a container (on Delete).
    pub fn forget(&self, container_id: &str) {
        let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        watches.retain(|_, w| {
            let keep = w.container_id != container_id;
            if !keep {
                let _ = self.epoll.delete(w.source.fd());
            }
            keep
        });
    }

    fn run(&self) {
        let mut events = [EpollEvent::empty(); 16];
        loop {
            let n = match self.epoll.wait(&mut events, EpollTimeout::NONE) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("oom watcher stopped: epoll_wait: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                self.check(ev.data());
            }
        }
    }

    fn check(&self, token: u64) {
        let (dir, v2, before) = {
            let watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
            let Some(w) = watches.get(&token) else {
                return;
            };
            w.source.drain();
            (w.dir.clone(), w.v2, w.kills)
        };
        // v1 signals when the cgroup enters OOM, a moment before the kernel
        // picks and kills a victim; give the counter that moment to move.
        let mut kills = cgroup::oom_kills(&dir, v2);
        for _ in 0..KILL_POLLS {
            if kills.is_none_or(|k| k > before) {
                break;
            }
            thread::sleep(KILL_POLL_INTERVAL);
            kills = cgroup::oom_kills(&dir, v2);
        }
        let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        match kills {
            Some(kills) => {
                let Some(w) = watches.get_mut(&token) else {
                    return;
                };
                if kills > w.kills {
                    log::info!(
                        "container {} OOM killed ({} kills)",
                        w.container_id,
                        kills - w.kills
                    );
                    w.kills = kills;
                    self.publisher.oom(&w.container_id);
                }
            }
            // The cgroup is gone (v1 signals its removal on the eventfd).
            None => {
                if let Some(w) = watches.remove(&token) {
                    let _ = self.epoll.delete(w.source.fd());
                }
            }
        }
    }
}
