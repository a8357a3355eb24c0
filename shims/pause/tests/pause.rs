//! berth-pause behaviour: exits 0 on SIGTERM/SIGINT, reaps orphans as PID 1.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const PAUSE: &str = env!("CARGO_BIN_EXE_berth-pause");

fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code();
        }
        sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    None
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, sig) };
}

#[test]
fn exits_zero_on_sigterm_and_sigint() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut child = Command::new(PAUSE).spawn().expect("spawn berth-pause");
        sleep(Duration::from_millis(100));
        assert!(
            child.try_wait().unwrap().is_none(),
            "pause must keep running"
        );
        signal(&child, sig);
        assert_eq!(
            wait_exit(&mut child, Duration::from_secs(5)),
            Some(0),
            "signal {sig}"
        );
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Children of `pid` that are zombies.
fn zombie_children(pid: u32) -> Vec<String> {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .filter(|c| {
            std::fs::read_to_string(format!("/proc/{c}/stat"))
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(false)
        })
        .map(String::from)
        .collect()
}

#[test]
fn reaps_orphans_as_pid_one() {
    if !is_root() || !Path::new("/usr/bin/unshare").exists() {
        eprintln!("skipping: needs root and unshare(1)");
        return;
    }
    // unshare forks pause as PID 1 of a new PID namespace.
    let mut unshare = Command::new("unshare")
        .args(["--pid", "--fork", PAUSE])
        .spawn()
        .expect("unshare");
    sleep(Duration::from_millis(200));
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id())).unwrap();
    let pause_pid: u32 = children.trim().parse().expect("pause pid");
    // A shell in the namespace leaves orphans behind; they reparent to pause.
    let status = Command::new("nsenter")
        .args([
            "-t",
            &pause_pid.to_string(),
            "-p",
            "--",
            "/bin/sh",
            "-c",
            "sleep 0.2 & sleep 0.2 & exit 0",
        ])
        .stdout(Stdio::null())
        .status()
        .expect("nsenter");
    assert!(status.success());
    sleep(Duration::from_millis(300));
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let zombies = zombie_children(pause_pid);
        if zombies.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "pause left zombies: {zombies:?}");
        sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on a pid we just read.
    unsafe { libc::kill(pause_pid as i32, libc::SIGTERM) };
    assert_eq!(wait_exit(&mut unshare, Duration::from_secs(5)), Some(0));
}

/// Checks the shipped binary when `shims/pause/build-static.sh` has built it.
#[test]
fn static_build_is_small_and_static() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/x86_64-unknown-linux-gnu/release/berth-pause");
    let Ok(meta) = std::fs::metadata(&path) else {
        eprintln!("skipping: run shims/pause/build-static.sh first");
        return;
    };
    assert!(
        meta.len() < 1024 * 1024,
        "berth-pause is {} bytes",
        meta.len()
    );
    let elf = std::fs::read(&path).unwrap();
    assert!(!has_interpreter(&elf), "berth-pause is dynamically linked");
    let mut child = Command::new(&path).spawn().unwrap();
    sleep(Duration::from_millis(100));
    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(5)), Some(0));
}

/// Whether an ELF64 file has a PT_INTERP program header (names a dynamic loader).
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == PT_INTERP
    })
}
