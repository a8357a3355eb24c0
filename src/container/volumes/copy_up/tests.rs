use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use super::{Budget, CopyError, copy_dir};
use crate::snapshot::view::LayeredView;
use crate::snapshot::view::tree::DirLookup;

fn write(root: &Path, rel: &str, content: &str, mode: u32) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Copies `/data` of the two layers (top first) into a fresh directory.
fn copy(layers: &[PathBuf], budget: &mut Budget) -> (tempfile::TempDir, Result<(), CopyError>) {
    let out = tempfile::tempdir().unwrap();
    fs::create_dir(out.path().join("v")).unwrap();
    let dest = OwnedFd::from(fs::File::open(out.path().join("v")).unwrap());
    let view = LayeredView::new(layers);
    let DirLookup::Dir(src) = view.dir("/data").unwrap() else {
        panic!("/data is a directory")
    };
    let result = copy_dir(&src, &dest, budget, 0);
    (out, result)
}

fn two_layers() -> (tempfile::TempDir, Vec<PathBuf>) {
    let t = tempfile::tempdir().unwrap();
    let layers: Vec<PathBuf> = ["top", "base"].iter().map(|n| t.path().join(n)).collect();
    for l in &layers {
        fs::create_dir(l).unwrap();
    }
    (t, layers)
}

#[test]
fn copies_the_merged_tree_with_modes_links_and_xattrs() {
    let (_t, l) = two_layers();
    write(&l[1], "data/base.txt", "from the base", 0o640);
    write(&l[1], "data/deleted", "whited out", 0o644);
    write(&l[0], "data/sub/top.txt", "from the top", 0o4755);
    fs::set_permissions(l[0].join("data/sub"), fs::Permissions::from_mode(0o711)).unwrap();
    fs::set_permissions(l[0].join("data"), fs::Permissions::from_mode(0o1777)).unwrap();
    symlink("/etc/shadow", l[0].join("data/escape")).unwrap();
    mknod(
        &l[0].join("data/deleted"),
        SFlag::S_IFCHR,
        Mode::empty(),
        makedev(0, 0),
    )
    .unwrap();
    nix::unistd::mkfifo(&l[0].join("data/pipe"), Mode::from_bits_truncate(0o600)).unwrap();
    fs::set_permissions(l[0].join("data/pipe"), fs::Permissions::from_mode(0o620)).unwrap();
    let xattr_set = xattr(&l[1].join("data/base.txt"));
    let root = nix::unistd::geteuid().is_root();
    if root {
        std::os::unix::fs::chown(l[1].join("data/base.txt"), Some(1234), Some(5678)).unwrap();
    }
    let (out, result) = copy(&l, &mut Budget::default());
    result.unwrap();
    let v = out.path().join("v");
    assert_eq!(
        fs::read_to_string(v.join("base.txt")).unwrap(),
        "from the base"
    );
    assert_eq!(
        fs::read_to_string(v.join("sub/top.txt")).unwrap(),
        "from the top"
    );
    assert!(
        !v.join("deleted").exists(),
        "a whiteout hides the base's file"
    );
    let mode = |p: &str| fs::symlink_metadata(v.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("base.txt"), 0o640);
    assert_eq!(mode("sub/top.txt"), 0o4755, "set-id bits survive the chown");
    assert_eq!(mode("sub"), 0o711);
    assert_eq!(
        fs::metadata(&v).unwrap().mode() & 0o7777,
        0o1777,
        "the root takes the image's mode"
    );
    assert_eq!(mode("pipe"), 0o620);
    assert!(
        fs::symlink_metadata(v.join("pipe"))
            .unwrap()
            .file_type()
            .is_fifo_like()
    );
    assert_eq!(
        fs::read_link(v.join("escape")).unwrap(),
        Path::new("/etc/shadow")
    );
    if root {
        let meta = fs::metadata(v.join("base.txt")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    }
    if xattr_set {
        assert_eq!(
            xattr_value(&v.join("base.txt")).as_deref(),
            Some(&b"kept"[..])
        );
    }
}

#[test]
fn the_budget_stops_a_copy_that_is_too_big() {
    let (_t, l) = two_layers();
    write(&l[0], "data/a", &"x".repeat(100), 0o644);
    write(&l[0], "data/b", &"y".repeat(100), 0o644);
    let (_out, result) = copy(
        &l,
        &mut Budget {
            bytes: 150,
            entries: 100,
        },
    );
    assert!(matches!(result, Err(CopyError::TooMuch { .. })), "bytes");
    let (_out, result) = copy(
        &l,
        &mut Budget {
            bytes: 1000,
            entries: 1,
        },
    );
    assert!(matches!(result, Err(CopyError::TooMuch { .. })), "entries");
    let (_out, result) = copy(
        &l,
        &mut Budget {
            bytes: 200,
            entries: 2,
        },
    );
    result.unwrap();
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}

impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}

const NAME: &[u8] = b"user.berth-test\0";

/// Sets a user xattr, if the filesystem takes them.
fn xattr(path: &Path) -> bool {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: NUL-terminated strings and a 4-byte value.
    unsafe {
        libc::setxattr(
            c.as_ptr(),
            NAME.as_ptr().cast(),
            b"kept".as_ptr().cast(),
            4,
            0,
        ) == 0
    }
}

fn xattr_value(path: &Path) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = [0u8; 16];
    // SAFETY: NUL-terminated strings and a buffer of the given size.
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            NAME.as_ptr().cast(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}
