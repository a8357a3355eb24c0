//! berth as an operator installs it (issue 14 item 1): `make install` with
//! DESTDIR and PREFIX, the systemd unit (checked with `systemd-analyze verify`:
//! PID 1 here is not systemd), readiness through NOTIFY_SOCKET, and `make deb`
//! (opt-in with BERTH_TEST_DEB=1 where cargo-deb is installed: it builds the
//! release binaries, 10-25 minutes on a shared CI machine, so it is not part of
//! the default run).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::daemon::{BERTH, BERTHD, Cri, TestEnv};

const WORKSPACE: &str = env!("CARGO_MANIFEST_DIR");
const BINARIES: &[&str] = &["berthd", "berth", "containerd-shim-berth-v2", "berth-pause"];
/// How long berthd may take to report ready or stopping.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(15);

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A build dir holding the four binaries `make install` installs (links to
/// the ones the tests built).
fn build_dir(dir: &Path) -> PathBuf {
    let (shim, pause) = common::pod::binaries();
    let bin = dir.join("build");
    fs::create_dir_all(&bin).unwrap();
    for (name, from) in [
        ("berthd", Path::new(BERTHD)),
        ("berth", Path::new(BERTH)),
        ("containerd-shim-berth-v2", shim.as_path()),
        ("berth-pause", pause.as_path()),
    ] {
        std::os::unix::fs::symlink(from, bin.join(name)).unwrap();
    }
    bin
}

fn make_install(build: &Path, vars: &[String]) -> Output {
    run(Command::new("make")
        .current_dir(WORKSPACE)
        .args(["-s", "install"])
        .arg(format!("BUILD_DIR={}", build.display()))
        .args(vars))
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn make_install_places_files_and_keeps_an_existing_config() {
    if !common::prerequisites_met() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let build = build_dir(tmp.path());
    let dest = tmp.path().join("dest");
    make_install(&build, &[format!("DESTDIR={}", dest.display())]);

    for name in BINARIES {
        let path = dest.join("usr/local/bin").join(name);
        assert!(
            fs::symlink_metadata(&path).unwrap().is_file(),
            "{name} is a copy"
        );
        assert_eq!(mode(&path), 0o755, "{name}");
    }
    let config = dest.join("etc/berth/config.toml");
    assert_eq!(mode(&config), 0o644);
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        fs::read_to_string(Path::new(WORKSPACE).join("config/config.toml")).unwrap()
    );
    let unit = dest.join("usr/local/lib/systemd/system/berthd.service");
    assert_eq!(mode(&unit), 0o644);
    let text = fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains("\nExecStart=/usr/local/bin/berthd\n"),
        "{text}"
    );

    // An operator's config survives a reinstall; everything else is replaced.
    fs::write(&config, "log_level = \"debug\"\n").unwrap();
    fs::write(dest.join("usr/local/bin/berthd"), "old").unwrap();
    let out = make_install(&build, &[format!("DESTDIR={}", dest.display())]);
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        "log_level = \"debug\"\n"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("keeping the existing"));
    assert_eq!(
        fs::metadata(dest.join("usr/local/bin/berthd"))
            .unwrap()
            .len(),
        fs::metadata(BERTHD).unwrap().len()
    );

    // Packagers' PREFIX=/usr: the unit starts the berthd installed beside it.
    let packaged = tmp.path().join("packaged");
    make_install(
        &build,
        &[
            format!("DESTDIR={}", packaged.display()),
            "PREFIX=/usr".into(),
        ],
    );
    assert!(packaged.join("usr/bin/berth-pause").is_file());
    let text = fs::read_to_string(packaged.join("usr/lib/systemd/system/berthd.service")).unwrap();
    assert!(text.contains("\nExecStart=/usr/bin/berthd\n"), "{text}");
}

/// `systemd-analyze verify` exits 0 on unknown values and prints warnings, so
/// the check is that it prints nothing.
fn assert_unit_verifies(unit: &Path) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "{}: {said}",
        unit.display()
    );
}

#[test]
fn the_installed_unit_verifies_and_keeps_containers_across_restarts() {
    if !common::prerequisites_met() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let build = build_dir(tmp.path());
    // verify checks that ExecStart exists on this machine: install under a
    // prefix of the test's own, with no DESTDIR.
    let prefix = tmp.path().join("prefix");
    make_install(
        &build,
        &[
            format!("PREFIX={}", prefix.display()),
            format!("SYSCONFDIR={}", prefix.join("etc").display()),
        ],
    );
    let unit = prefix.join("lib/systemd/system/berthd.service");
    assert_unit_verifies(&unit);

    let text = fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "Delegate=yes",
        "KillMode=process",
        "Restart=always",
        "LimitNOFILE=1048576",
        "OOMScoreAdjust=-999",
    ] {
        assert!(text.lines().any(|l| l == line), "the unit lacks {line}");
    }

    // The check itself catches a broken unit.
    let broken = tmp.path().join("broken.service");
    fs::write(&broken, text.replace("KillMode=process", "KillMode=proces")).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&broken)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("kill mode"),
        "{out:?}"
    );
}

/// Waits for one datagram on `socket`; panics with berthd's log (`log`) if none comes.
async fn next_notification(socket: &UnixDatagram, log: &Path, what: &str) -> String {
    let socket = socket.try_clone().unwrap();
    let got = tokio::task::spawn_blocking(move || {
        socket.set_read_timeout(Some(NOTIFY_TIMEOUT)).unwrap();
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .await
    .unwrap();
    got.unwrap_or_else(|| {
        panic!(
            "no {what} notification from berthd in {NOTIFY_TIMEOUT:?}; its log:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn berthd_notifies_ready_once_serving_and_stopping_on_sigterm() {
    if !common::prerequisites_met() {
        return;
    }
    let env = TestEnv::new();
    let notify_path = env.outside.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let log = fs::File::create(&env.log).unwrap();
    let mut child = env
        .berthd_command()
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let ready = next_notification(&notify, &env.log, "ready").await;
    assert_eq!(ready, "READY=1\n");
    // Ready means serving: the first call, without retrying, is answered.
    let cri = Cri::connect(&env.socket)
        .await
        .expect("socket accepts after READY=1");
    assert_eq!(cri.version().await.runtime_name, "berth");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(
        next_notification(&notify, &env.log, "stopping").await,
        "STOPPING=1\n"
    );
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "berthd exited with {status}");
}

#[test]
fn make_deb_builds_a_package_of_the_installed_files() {
    if !common::prerequisites_met() {
        return;
    }
    if std::env::var_os("BERTH_TEST_DEB").is_none() {
        eprintln!("SKIPPED: set BERTH_TEST_DEB=1 to build the release binaries and the package");
        return;
    }
    let has_cargo_deb = Command::new(env!("CARGO"))
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cargo_deb {
        eprintln!(
            "SKIPPED: cargo-deb is not installed (`cargo install cargo-deb`; make deb installs it)"
        );
        return;
    }
    let debian = Path::new(WORKSPACE).join("target/debian");
    let _ = fs::remove_dir_all(&debian);
    run(Command::new("make").current_dir(WORKSPACE).arg("deb"));
    let deb = fs::read_dir(&debian)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("berth_") && name.ends_with(".deb")
        })
        .expect("target/debian/berth_*.deb");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root));
    for name in BINARIES {
        assert_eq!(mode(&root.join("usr/bin").join(name)), 0o755, "{name}");
    }
    assert_eq!(mode(&root.join("etc/berth/config.toml")), 0o644);
    let unit = root.join("usr/lib/systemd/system/berthd.service");
    let text = fs::read_to_string(&unit).unwrap();
    assert!(text.contains("\nExecStart=/usr/bin/berthd\n"), "{text}");
    let control = tmp.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let conffiles = fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(
        conffiles.lines().any(|l| l == "/etc/berth/config.toml"),
        "{conffiles}"
    );
    let postinst = fs::read_to_string(control.join("postinst")).unwrap();
    assert!(
        postinst.contains("berthd.service"),
        "the unit is enabled: {postinst}"
    );
}
