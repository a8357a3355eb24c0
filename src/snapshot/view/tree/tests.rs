use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use super::{DirLookup, TreeEntry};
use crate::snapshot::view::LayeredView;

/// Two layer directories, top first.
fn layers() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths: Vec<PathBuf> = ["top", "base"]
        .iter()
        .map(|n| {
            let p = dir.path().join(n);
            fs::create_dir(&p).unwrap();
            p
        })
        .collect();
    (dir, paths)
}

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn dir_at(view: &LayeredView, path: &str) -> super::ViewDir {
    match view.dir(path).unwrap() {
        DirLookup::Dir(d) => d,
        DirLookup::Missing => panic!("{path}: missing"),
        DirLookup::NotDir => panic!("{path}: not a directory"),
    }
}

#[test]
fn names_merge_the_layers_and_drop_whiteouts() {
    let (_t, l) = layers();
    write(&l[1], "data/a", "base a");
    write(&l[1], "data/gone", "hidden");
    write(&l[0], "data/b", "top b");
    mknod(
        &l[0].join("data/gone"),
        SFlag::S_IFCHR,
        Mode::empty(),
        makedev(0, 0),
    )
    .unwrap();
    let view = LayeredView::new(&l);
    let dir = dir_at(&view, "/data/");
    let kept: Vec<String> = dir
        .names(100)
        .unwrap()
        .into_iter()
        .filter(|n| dir.entry(n).unwrap().is_some())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    assert_eq!(kept, ["a", "b"]);
    assert!(dir.names(1).is_err(), "the name bound holds");
}

#[test]
fn a_symlinked_volume_path_resolves_inside_the_view() {
    let (_t, l) = layers();
    write(&l[1], "var/data/f", "x");
    symlink("var/data", l[0].join("data")).unwrap();
    symlink("/var/data", l[0].join("abs")).unwrap();
    let view = LayeredView::new(&l);
    assert_eq!(dir_at(&view, "/data").path(), Path::new("/var/data"));
    assert_eq!(dir_at(&view, "abs/").path(), Path::new("/var/data"));
    // A link that climbs out of the view leads nowhere.
    symlink("../../..", l[0].join("up")).unwrap();
    assert!(matches!(view.dir("/up/etc").unwrap(), DirLookup::Missing));
    write(&l[0], "file", "x");
    assert!(matches!(view.dir("/file").unwrap(), DirLookup::NotDir));
}

#[test]
fn entries_report_links_without_following_them() {
    let (_t, l) = layers();
    fs::create_dir_all(l[0].join("data")).unwrap();
    symlink("/etc/shadow", l[0].join("data/link")).unwrap();
    write(&l[0], "data/file", "content");
    let view = LayeredView::new(&l);
    let dir = dir_at(&view, "/data");
    match dir.entry("link".as_ref()).unwrap() {
        Some(TreeEntry::Link(target, _)) => assert_eq!(target, "/etc/shadow"),
        _ => panic!("link expected"),
    }
    match dir.entry("file".as_ref()).unwrap() {
        Some(TreeEntry::File(_, stat)) => assert_eq!(stat.st_size, 7),
        _ => panic!("file expected"),
    }
}
