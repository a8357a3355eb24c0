//! `berth-pause`: the infra process of a berth pod.
//!
//! It holds the pod's namespaces open by existing. It sleeps in `sigwait`
//! until SIGTERM or SIGINT (exit 0), and reaps every child that dies, which
//! matters when it is PID 1 of a pod's shared PID namespace and orphans are
//! reparented to it. The signals are blocked rather than handled: a blocked
//! signal is queued even for a namespace's PID 1, which the kernel otherwise
//! shields from signals it has no handler for.
//!
//! The shipped binary is built by `build-static.sh` with `--cfg
//! berth_pause_static`: no Rust std, static glibc, panic=abort, which takes
//! it from 1.1 MiB (std + static glibc) to about 0.65 MiB. Plain `cargo
//! build`/`test`/`clippy` build the same loop with std, because a no_std
//! binary cannot be built with the default unwinding panic strategy.

#![cfg_attr(berth_pause_static, no_std, no_main)]

use core::mem::MaybeUninit;
use core::ptr;

/// Blocks SIGCHLD/SIGTERM/SIGINT and waits for them forever.
fn pause() -> ! {
    // SAFETY: plain libc calls on a sigset_t this function owns.
    unsafe {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(set.as_mut_ptr());
        let mut set = set.assume_init();
        for sig in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT] {
            libc::sigaddset(&mut set, sig);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, ptr::null_mut());
        loop {
            let mut sig = 0;
            if libc::sigwait(&set, &mut sig) != 0 {
                continue;
            }
            if sig == libc::SIGCHLD {
                while libc::waitpid(-1, ptr::null_mut(), libc::WNOHANG) > 0 {}
            } else {
                libc::_exit(0);
            }
        }
    }
}

#[cfg(not(berth_pause_static))]
fn main() {
    pause()
}

#[cfg(berth_pause_static)]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    pause()
}

#[cfg(berth_pause_static)]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: _exit is always safe to call.
    unsafe { libc::_exit(2) }
}
