//! Giving freed memory back to the kernel. glibc keeps what berthd frees in its
//! arenas for reuse and returns it only from the top of the heap, so after a
//! burst (many pods created and removed at once) berthd's RSS stayed at its peak
//! with the memory free inside. A trim after removals and after each pull hands
//! it back; it runs at most once per `TRIM_DELAY`, after the removals of a burst
//! have settled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long after a removal the trim runs: `crictl rmp -fa` removes pods one by
/// one, and one trim after the last is enough. Short enough that the memory is
/// back within seconds.
const TRIM_DELAY: Duration = Duration::from_secs(1);

static SCHEDULED: AtomicBool = AtomicBool::new(false);

/// Trims the allocator `TRIM_DELAY` from now, unless a trim is already due.
/// Needs a tokio runtime.
pub fn trim_soon() {
    if SCHEDULED.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::spawn(async {
        tokio::time::sleep(TRIM_DELAY).await;
        SCHEDULED.store(false, Ordering::Release);
        // Walks every arena: off the async workers.
        let _ = tokio::task::spawn_blocking(trim).await;
    });
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel; it is
    // thread-safe and takes the arenas' locks itself.
    unsafe {
        libc::malloc_trim(0);
    }
}
