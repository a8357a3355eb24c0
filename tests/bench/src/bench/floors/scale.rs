//! Many pods on the floor: N pods of M containers started K at a time on K
//! threads (each pod as the runtimes get it: namespace, CNI ADD beside the
//! pause, then its containers one after another), then torn down K at a time.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::super::Result;
use super::{Floor, Pod};

pub struct ScaleTimes {
    pub start: Duration,
    /// Each pod's start, its containers included.
    pub per_pod: Vec<Duration>,
    pub teardown: Duration,
}

impl Floor {
    /// Blocking. Whatever started is torn down, also after a failure.
    pub fn scale(&self, pods: usize, containers: usize, concurrency: usize) -> Result<ScaleTimes> {
        let next = AtomicUsize::new(0);
        let running: Mutex<Vec<Pod>> = Mutex::new(Vec::new());
        let per_pod = Mutex::new(Vec::new());
        let error = Mutex::new(None);
        let fail = |e: String| {
            error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(e);
        };

        let t = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..concurrency {
                s.spawn(|| {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= pods {
                            break;
                        }
                        let t = Instant::now();
                        let (mut pod, _) = match self.pod_up(&format!("floor-scale-{n}")) {
                            Ok(up) => up,
                            Err(e) => break fail(e),
                        };
                        let started = (0..containers)
                            .try_for_each(|c| self.container_up(&mut pod, &format!("c{c}")));
                        running.lock().unwrap_or_else(|p| p.into_inner()).push(pod);
                        match started {
                            Ok(()) => per_pod
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(t.elapsed()),
                            Err(e) => break fail(e),
                        }
                    }
                });
            }
        });
        let start = t.elapsed();

        let t = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..concurrency {
                s.spawn(|| {
                    loop {
                        let pod = running.lock().unwrap_or_else(|p| p.into_inner()).pop();
                        let Some(pod) = pod else { break };
                        if let Err(e) = self.pod_down(pod) {
                            fail(e);
                        }
                    }
                });
            }
        });
        let teardown = t.elapsed();
        if let Some(e) = error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        Ok(ScaleTimes {
            start,
            per_pod: per_pod.into_inner().unwrap_or_else(|p| p.into_inner()),
            teardown,
        })
    }
}
