use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use super::{LayeredView, ViewError};

const LIMIT: u64 = 1 << 20;

struct Layers {
    _dir: tempfile::TempDir,
    paths: Vec<PathBuf>,
}

/// `n` empty layer directories, top first.
fn layers(n: usize) -> Layers {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = (0..n)
        .map(|i| {
            let p = dir.path().join(format!("l{i}"));
            fs::create_dir(&p).expect("layer");
            p
        })
        .collect();
    Layers { _dir: dir, paths }
}

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn link(root: &Path, rel: &str, target: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    symlink(target, path).unwrap();
}

fn read(l: &Layers, path: &str) -> Option<String> {
    LayeredView::new(&l.paths)
        .read(path, LIMIT)
        .expect("read")
        .map(|b| String::from_utf8(b).unwrap())
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn the_topmost_layer_with_the_file_wins() {
    let l = layers(2);
    write(&l.paths[1], "etc/passwd", "lower");
    assert_eq!(read(&l, "/etc/passwd").as_deref(), Some("lower"));
    write(&l.paths[0], "etc/passwd", "upper");
    assert_eq!(read(&l, "etc/passwd").as_deref(), Some("upper"));
    assert_eq!(read(&l, "/etc/group"), None);
    assert_eq!(read(&l, "/etc"), None, "a directory is not a file");
}

#[test]
fn an_absolute_link_resolves_inside_the_view_never_on_the_host() {
    let l = layers(1);
    // The host has /etc/hostname; the view does not: no file.
    link(&l.paths[0], "etc/passwd", "/etc/hostname");
    assert!(Path::new("/etc/hostname").exists());
    assert_eq!(read(&l, "/etc/passwd"), None);
    // With the target inside the view, the link is followed there.
    write(&l.paths[0], "etc/hostname", "in the image");
    assert_eq!(read(&l, "/etc/passwd").as_deref(), Some("in the image"));
}

#[test]
fn climbing_out_of_the_view_is_no_such_file() {
    let l = layers(1);
    link(&l.paths[0], "etc/passwd", "../../../../../../etc/hostname");
    assert_eq!(read(&l, "/etc/passwd"), None);
    assert_eq!(read(&l, "/../etc/hostname"), None);
    // `..` inside the view is fine.
    write(&l.paths[0], "usr/lib/passwd", "moved");
    link(&l.paths[0], "etc/passwd2", "../usr/lib/passwd");
    assert_eq!(read(&l, "/etc/passwd2").as_deref(), Some("moved"));
}

#[test]
fn a_linked_directory_stays_inside_the_view() {
    let l = layers(1);
    // etc -> / of the host would expose /etc/hostname as etc/etc/hostname... only
    // inside the view: `/` is the view's root.
    link(&l.paths[0], "etc", "/");
    assert_eq!(read(&l, "/etc/etc/hostname"), None);
    write(&l.paths[0], "passwd", "root-level");
    assert_eq!(read(&l, "/etc/passwd").as_deref(), Some("root-level"));
}

#[test]
fn a_link_in_one_layer_may_point_into_another() {
    let l = layers(2);
    link(&l.paths[0], "etc/passwd", "/usr/share/passwd");
    write(&l.paths[1], "usr/share/passwd", "from below");
    assert_eq!(read(&l, "/etc/passwd").as_deref(), Some("from below"));
}

#[test]
fn link_loops_are_an_error() {
    let l = layers(1);
    link(&l.paths[0], "a", "b");
    link(&l.paths[0], "b", "a");
    let err = LayeredView::new(&l.paths).read("/a", LIMIT).unwrap_err();
    assert!(matches!(err, ViewError::Loop { .. }), "{err}");
}

#[test]
fn a_file_over_the_limit_is_an_error_and_special_files_are_not_read() {
    let l = layers(1);
    write(&l.paths[0], "etc/passwd", &"x".repeat(100));
    let err = LayeredView::new(&l.paths)
        .read("/etc/passwd", 99)
        .unwrap_err();
    assert!(
        matches!(err, ViewError::TooLarge { limit: 99, .. }),
        "{err}"
    );
    nix::unistd::mkfifo(
        &l.paths[0].join("etc/group"),
        Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    // Would block for ever if opened for reading.
    assert_eq!(read(&l, "/etc/group"), None);
    write(&l.paths[0], "etc/file", "f");
    assert_eq!(
        read(&l, "/etc/file/passwd"),
        None,
        "a file is not a directory"
    );
}

#[test]
fn whiteouts_and_opaque_directories_hide_what_is_below() {
    if !is_root() {
        eprintln!("skipping: whiteouts need root");
        return;
    }
    let l = layers(2);
    write(&l.paths[1], "etc/passwd", "hidden");
    write(&l.paths[1], "etc/group", "lower group");
    fs::create_dir_all(l.paths[0].join("etc")).unwrap();
    mknod(
        &l.paths[0].join("etc/passwd"),
        SFlag::S_IFCHR,
        Mode::empty(),
        makedev(0, 0),
    )
    .unwrap();
    assert_eq!(read(&l, "/etc/passwd"), None);
    assert_eq!(read(&l, "/etc/group").as_deref(), Some("lower group"));
    xattr::set(l.paths[0].join("etc"), "trusted.overlay.opaque", b"y").unwrap();
    assert_eq!(read(&l, "/etc/group"), None);
}

#[test]
fn a_directory_above_a_link_ends_the_merge() {
    let l = layers(3);
    fs::create_dir_all(l.paths[0].join("etc")).unwrap();
    link(&l.paths[1], "etc", "/elsewhere");
    write(&l.paths[2], "etc/passwd", "below the link");
    write(&l.paths[1], "elsewhere/passwd", "through the link");
    // overlayfs: etc is the top layer's directory, merged with nothing below it.
    assert_eq!(read(&l, "/etc/passwd"), None);
}
