use super::fuzz::peak_heap;
use super::meta::{image_may_set, parse_pax_time};
use super::whiteout::OPAQUE_XATTR;
use super::*;
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use nix::sys::stat::makedev;
use tar::{Builder, Header};
use tempfile::TempDir;

const MTIME: u64 = 1_500_000_000;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The owner to give test entries: one only root can set, else our own.
fn owner() -> (u32, u32) {
    if is_root() {
        (1234, 5678)
    } else {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    }
}

/// A scratch area holding `dest` (the layer root) and `outside`, a
/// sibling that must stay untouched.
struct Scratch {
    root: TempDir,
}

impl Scratch {
    fn new() -> Self {
        let root = TempDir::new().expect("tempdir");
        fs::create_dir(root.path().join("dest")).expect("dest");
        fs::create_dir(root.path().join("outside")).expect("outside");
        Scratch { root }
    }
    fn dest(&self) -> PathBuf {
        self.root.path().join("dest")
    }
    fn outside(&self) -> PathBuf {
        self.root.path().join("outside")
    }
    fn apply(&self, tar: &[u8]) -> Result<Applied, ApplyError> {
        apply_layer(tar, Compression::None, &self.dest())
    }
    fn assert_outside_untouched(&self) {
        let left: Vec<_> = fs::read_dir(self.outside())
            .expect("read outside")
            .map(|e| e.expect("dirent").file_name())
            .collect();
        assert!(left.is_empty(), "outside was written: {left:?}");
        let mut top: Vec<_> = fs::read_dir(self.root.path())
            .expect("read root")
            .map(|e| e.expect("dirent").file_name())
            .collect();
        top.sort();
        assert_eq!(
            top,
            ["dest", "outside"],
            "something was created next to dest"
        );
    }
}

fn header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(MTIME);
    let (uid, gid) = owner();
    h.set_uid(uid.into());
    h.set_gid(gid.into());
    h
}

fn file(b: &mut Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) {
    let mut h = header(EntryType::Regular, mode, data.len() as u64);
    b.append_data(&mut h, path, data).expect("append file");
}

fn dir(b: &mut Builder<Vec<u8>>, path: &str, mode: u32, mtime: u64) {
    let mut h = header(EntryType::Directory, mode, 0);
    h.set_mtime(mtime);
    b.append_data(&mut h, path, io::empty())
        .expect("append dir");
}

fn link(b: &mut Builder<Vec<u8>>, kind: EntryType, path: &str, target: &str) {
    let mut h = header(kind, 0o777, 0);
    h.set_link_name(target).expect("link name");
    b.append_data(&mut h, path, io::empty())
        .expect("append link");
}

/// An entry whose name the tar builder would refuse (`..`, absolute).
fn raw(b: &mut Builder<Vec<u8>>, name: &[u8], kind: EntryType, data: &[u8]) {
    let mut h = header(kind, 0o644, data.len() as u64);
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_cksum();
    b.append(&h, data).expect("append raw");
}

fn tar(build: impl FnOnce(&mut Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().expect("finish tar")
}

fn mtime_of(path: &Path) -> (i64, i64) {
    let m = fs::symlink_metadata(path).expect("lstat");
    (m.mtime(), m.mtime_nsec())
}

fn expect_unsafe(result: Result<Applied, ApplyError>, entry: &str) {
    match result {
        Err(ApplyError::Unsafe { entry: e, reason }) => {
            assert_eq!(e, entry, "wrong entry named ({reason})");
        }
        other => panic!("expected {entry:?} to be refused, got {other:?}"),
    }
}

#[test]
fn round_trip_files_dirs_links_and_metadata() {
    let s = Scratch::new();
    let layer = tar(|b| {
        dir(b, "./", 0o711, 1_000);
        dir(b, "d", 0o750, 1_111_111_111);
        file(b, "d/f", 0o4755, b"hello");
        file(b, "d/sticky", 0o1777, b"");
        link(b, EntryType::Symlink, "d/l", "../nowhere/f");
        link(b, EntryType::Link, "d/h", "./d/f");
        b.append_pax_extensions([
            ("SCHILY.xattr.user.test", b"value".as_slice()),
            ("mtime", b"1600000000.25".as_slice()),
        ])
        .expect("pax");
        file(b, "d/x", 0o600, b"xattr");
        file(b, "implicit/parent/f", 0o644, b"1");
    });
    let applied = s.apply(&layer).expect("apply");
    assert_eq!(applied.entries, 8, "the PAX header belongs to d/x");
    assert_eq!(applied.unpacked_bytes, 5 + 5 + 1);

    let d = s.dest().join("d");
    let (uid, gid) = owner();
    let f = fs::symlink_metadata(d.join("f")).expect("f");
    assert_eq!(fs::read(d.join("f")).expect("read f"), b"hello");
    assert_eq!(f.mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!((f.uid(), f.gid()), (uid, gid));
    assert_eq!(f.mtime(), MTIME as i64);
    assert_eq!(
        fs::symlink_metadata(d.join("sticky"))
            .expect("sticky")
            .mode()
            & 0o7777,
        0o1777
    );

    let dm = fs::symlink_metadata(&d).expect("d");
    assert!(dm.is_dir());
    assert_eq!(dm.mode() & 0o7777, 0o750);
    assert_eq!((dm.uid(), dm.gid()), (uid, gid));
    assert_eq!(
        mtime_of(&d),
        (1_111_111_111, 0),
        "dir mtime survives its children"
    );
    let root = fs::symlink_metadata(s.dest()).expect("dest");
    assert_eq!(root.mode() & 0o7777, 0o711, "./ applies to dest");
    assert_eq!(root.mtime(), 1_000);

    assert_eq!(
        fs::read_link(d.join("l")).expect("readlink"),
        Path::new("../nowhere/f")
    );
    assert_eq!(fs::symlink_metadata(d.join("h")).expect("h").ino(), f.ino());

    let x = d.join("x");
    assert_eq!(
        xattr::get(&x, "user.test").expect("getxattr"),
        Some(b"value".to_vec())
    );
    assert_eq!(mtime_of(&x), (1_600_000_000, 250_000_000), "PAX mtime wins");

    let implicit = fs::symlink_metadata(s.dest().join("implicit/parent")).expect("implicit");
    assert_eq!(implicit.mode() & 0o7777, 0o755);
    if is_root() {
        assert_eq!((implicit.uid(), implicit.gid()), (0, 0));
    }
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    if !is_root() {
        eprintln!("skipping whiteouts_become_overlay_whiteouts: needs root");
        return;
    }
    let s = Scratch::new();
    let layer = tar(|b| {
        dir(b, "a", 0o755, MTIME);
        file(b, "a/.wh.gone", 0o644, b"");
        file(b, "b/.wh..wh..opq", 0o644, b"");
        file(b, ".wh..wh..opq", 0o644, b"");
        file(b, "a/.wh..wh.plnk", 0o644, b"");
    });
    let applied = s.apply(&layer).expect("apply");
    assert_eq!(applied.entries, 5);

    let gone = fs::symlink_metadata(s.dest().join("a/gone")).expect("whiteout");
    assert!(gone.file_type().is_char_device());
    assert_eq!(gone.rdev(), 0);
    assert_eq!((gone.uid(), gone.gid()), owner());
    assert!(!s.dest().join("a/.wh.gone").exists());
    assert!(!s.dest().join("a/.wh..wh.plnk").exists());
    assert_eq!(
        mtime_of(&s.dest().join("a")),
        (MTIME as i64, 0),
        "whiteout kept dir mtime"
    );

    let b = s.dest().join("b");
    assert!(b.is_dir(), "opaque marker creates its directory");
    assert_eq!(
        xattr::get(&b, OPAQUE_XATTR).expect("getxattr"),
        Some(b"y".to_vec())
    );
    assert!(!b.join(".wh..wh..opq").exists());
    assert_eq!(
        xattr::get(s.dest(), OPAQUE_XATTR).expect("getxattr"),
        Some(b"y".to_vec())
    );
}

#[test]
fn whiteout_of_nothing_is_refused() {
    let s = Scratch::new();
    for name in [".wh.", "a/.wh..", "a/.wh..."] {
        let layer = tar(|b| raw(b, name.as_bytes(), EntryType::Regular, b""));
        expect_unsafe(s.apply(&layer), name);
    }
    s.assert_outside_untouched();
}

#[test]
fn device_nodes_and_fifos() {
    let s = Scratch::new();
    let layer = tar(|b| {
        let mut h = header(EntryType::Fifo, 0o640, 0);
        b.append_data(&mut h, "fifo", io::empty()).expect("fifo");
    });
    s.apply(&layer).expect("apply fifo");
    let fifo = fs::symlink_metadata(s.dest().join("fifo")).expect("fifo");
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o640);

    if !is_root() {
        eprintln!("skipping device part of device_nodes_and_fifos: needs root");
        return;
    }
    let layer = tar(|b| {
        for (kind, path, major, minor) in [
            (EntryType::Char, "null", 1, 3),
            (EntryType::Block, "loop0", 7, 0),
        ] {
            let mut h = header(kind, 0o666, 0);
            h.set_device_major(major).expect("major");
            h.set_device_minor(minor).expect("minor");
            b.append_data(&mut h, path, io::empty()).expect("device");
        }
    });
    let s = Scratch::new();
    s.apply(&layer).expect("apply devices");
    let null = fs::symlink_metadata(s.dest().join("null")).expect("null");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let lo = fs::symlink_metadata(s.dest().join("loop0")).expect("loop0");
    assert!(lo.file_type().is_block_device());
    assert_eq!(lo.rdev(), makedev(7, 0));
}

#[test]
fn compressions_share_the_diff_id() {
    let mut layer = tar(|b| {
        dir(b, "etc", 0o755, MTIME);
        file(b, "etc/hostname", 0o644, b"berth\n");
    });
    // Writers pad to a 10 KiB record: the diff ID covers that padding too.
    layer.resize(10240, 0);
    let expected = format!("sha256:{}", hex::encode(Sha256::digest(&layer)));

    let mut gzip = Vec::new();
    for half in [&layer[..700], &layer[700..]] {
        // Two gzip members, as pigz may write.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(half).expect("gzip");
        gzip.extend(enc.finish().expect("gzip"));
    }
    let zstd = zstd::encode_all(layer.as_slice(), 3).expect("zstd");

    for (blob, compression) in [
        (&layer, Compression::None),
        (&gzip, Compression::Gzip),
        (&zstd, Compression::Zstd),
    ] {
        assert_eq!(Compression::detect(blob), compression);
        let s = Scratch::new();
        let applied = apply_layer(blob.as_slice(), compression, &s.dest()).expect("apply");
        assert_eq!(applied.diff_id, expected, "{compression:?}");
        assert_eq!(applied.entries, 2);
        assert_eq!(
            fs::read(s.dest().join("etc/hostname")).expect("read"),
            b"berth\n"
        );
    }
}

#[test]
fn media_types() {
    use Compression as C;
    let cases = [
        ("application/vnd.oci.image.layer.v1.tar", Some(C::None)),
        ("application/vnd.oci.image.layer.v1.tar+gzip", Some(C::Gzip)),
        ("application/vnd.oci.image.layer.v1.tar+zstd", Some(C::Zstd)),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
            Some(C::None),
        ),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            Some(C::Gzip),
        ),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
            Some(C::Zstd),
        ),
        (
            "application/vnd.docker.image.rootfs.diff.tar",
            Some(C::None),
        ),
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Some(C::Gzip),
        ),
        (
            "application/vnd.docker.image.rootfs.diff.tar.zstd",
            Some(C::Zstd),
        ),
        (
            "application/vnd.docker.image.rootfs.foreign.diff.tar",
            Some(C::None),
        ),
        (
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            Some(C::Gzip),
        ),
        (
            "Application/VND.OCI.Image.Layer.v1.tar+gzip; x=y",
            Some(C::Gzip),
        ),
        (
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
            None,
        ),
        ("application/vnd.oci.image.config.v1+json", None),
        ("", None),
    ];
    for (media_type, expected) in cases {
        assert_eq!(
            Compression::from_media_type(media_type),
            expected,
            "{media_type}"
        );
    }
    assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), C::Gzip);
    assert_eq!(Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]), C::Zstd);
    assert_eq!(Compression::detect(b"ustar"), C::None);
    assert_eq!(Compression::detect(&[0x1f]), C::None);
}

#[test]
fn dotdot_is_refused() {
    for name in ["../escape", "a/../../escape", "a/..", "./../escape"] {
        let s = Scratch::new();
        let layer = tar(|b| raw(b, name.as_bytes(), EntryType::Regular, b"x"));
        expect_unsafe(s.apply(&layer), name);
        s.assert_outside_untouched();
    }
}

#[test]
fn absolute_paths_are_confined() {
    let s = Scratch::new();
    let layer = tar(|b| raw(b, b"/etc/x", EntryType::Regular, b"confined"));
    s.apply(&layer).expect("apply");
    assert_eq!(fs::read(s.dest().join("etc/x")).expect("read"), b"confined");
    s.assert_outside_untouched();
}

#[test]
fn writing_through_a_symlinked_parent_is_refused() {
    type Layer = fn(&mut Builder<Vec<u8>>, &str);
    // Each layer gets the absolute path of this case's `outside` dir.
    let cases: [(&str, Layer); 6] = [
        ("evil/pwned", |b, outside| {
            link(b, EntryType::Symlink, "evil", outside);
            file(b, "evil/pwned", 0o644, b"x");
        }),
        ("evil/x", |b, _| {
            link(b, EntryType::Symlink, "evil", "..");
            file(b, "evil/x", 0o644, b"x");
        }),
        ("a/evil/f", |b, _| {
            dir(b, "a", 0o755, MTIME);
            link(b, EntryType::Symlink, "a/evil", "../../outside");
            file(b, "a/evil/f", 0o644, b"x");
        }),
        ("evil/sub/x", |b, outside| {
            link(b, EntryType::Symlink, "evil", outside);
            file(b, "evil/sub/x", 0o644, b"x");
        }),
        ("evil/.wh.x", |b, outside| {
            link(b, EntryType::Symlink, "evil", outside);
            file(b, "evil/.wh.x", 0o644, b"");
        }),
        ("evil/.wh..wh..opq", |b, outside| {
            link(b, EntryType::Symlink, "evil", outside);
            file(b, "evil/.wh..wh..opq", 0o644, b"");
        }),
    ];
    for (entry, build) in cases {
        let s = Scratch::new();
        let outside = s.outside();
        let outside = outside.to_str().expect("utf-8 temp path");
        let layer = tar(|b| build(b, outside));
        expect_unsafe(s.apply(&layer), entry);
        s.assert_outside_untouched();
    }
}

#[test]
fn hard_links_must_stay_inside() {
    // Outside the layer, next to `outside`, so the latter can be checked empty.
    let secret_dir = TempDir::new().expect("secret dir");
    let secret = secret_dir.path().join("secret");
    fs::write(&secret, "secret").expect("secret");
    let secret_parent = secret_dir.path().to_str().expect("utf-8").to_owned();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "h",
            tar(|b| link(b, EntryType::Link, "h", "../../etc/passwd")),
        ),
        (
            "h",
            tar(|b| {
                link(b, EntryType::Symlink, "ln", &secret_parent);
                link(b, EntryType::Link, "h", "ln/secret");
            }),
        ),
        (
            "h",
            tar(|b| link(b, EntryType::Link, "h", &format!("{secret_parent}/secret"))),
        ),
        (
            "h",
            tar(|b| {
                dir(b, "d", 0o755, MTIME);
                link(b, EntryType::Link, "h", "d");
            }),
        ),
        ("h", tar(|b| link(b, EntryType::Link, "h", "h"))),
        ("h", tar(|b| link(b, EntryType::Link, "h", "./"))),
    ];
    for (i, (entry, layer)) in cases.into_iter().enumerate() {
        let s = Scratch::new();
        match s.apply(&layer) {
            Err(ApplyError::Unsafe { entry: e, .. }) => assert_eq!(e, entry),
            // A target that is not in the layer (an absolute path confined to dest).
            Err(ApplyError::Entry { entry: e, source }) if i == 2 => {
                assert_eq!(e, entry);
                assert_eq!(source.kind(), ErrorKind::NotFound);
            }
            other => panic!("case {i}: expected a refusal, got {other:?}"),
        }
        assert!(!s.dest().join("h").exists(), "case {i}");
        s.assert_outside_untouched();
    }

    // A hard link to a symlink links the symlink itself, never what it points at.
    let s = Scratch::new();
    let layer = tar(|b| {
        link(
            b,
            EntryType::Symlink,
            "ln",
            &format!("{secret_parent}/secret"),
        );
        link(b, EntryType::Link, "h", "ln");
    });
    s.apply(&layer).expect("hard link to a symlink");
    let h = fs::symlink_metadata(s.dest().join("h")).expect("h");
    assert!(h.file_type().is_symlink());
    assert_eq!(h.nlink(), 2);
    assert_eq!(fs::metadata(&secret).expect("secret").nlink(), 1);
}

#[test]
fn later_entries_replace_earlier_ones() {
    let s = Scratch::new();
    let outside = s.outside().join("sub");
    fs::create_dir(&outside).expect("outside/sub");
    let before = mtime_of(&outside);
    let layer = tar(|b| {
        file(b, "x", 0o644, b"file");
        dir(b, "x", 0o755, MTIME);
        file(b, "x/child", 0o644, b"c");
        dir(b, "y", 0o755, MTIME);
        file(b, "y/child", 0o644, b"c");
        file(b, "y", 0o600, b"now a file");
        link(b, EntryType::Symlink, "z", "/etc/passwd");
        file(b, "z", 0o644, b"not through the link");
        dir(b, "v", 0o755, 1);
        file(b, "v/kept", 0o644, b"k");
        dir(b, "v", 0o700, 2);
        // A directory whose recorded times must not follow it once it is a symlink.
        dir(b, "w", 0o755, MTIME);
        dir(b, "w/sub", 0o755, 3);
        link(b, EntryType::Symlink, "w", "../outside");
    });
    s.apply(&layer).expect("apply");
    let dest = s.dest();
    assert!(fs::symlink_metadata(dest.join("x")).expect("x").is_dir());
    assert_eq!(fs::read(dest.join("x/child")).expect("x/child"), b"c");
    assert_eq!(fs::read(dest.join("y")).expect("y"), b"now a file");
    assert_eq!(
        fs::symlink_metadata(dest.join("y")).expect("y").mode() & 0o7777,
        0o600
    );
    assert!(fs::symlink_metadata(dest.join("z")).expect("z").is_file());
    assert_eq!(
        fs::read(dest.join("z")).expect("z"),
        b"not through the link"
    );
    let v = fs::symlink_metadata(dest.join("v")).expect("v");
    assert_eq!((v.mode() & 0o7777, v.mtime()), (0o700, 2));
    assert_eq!(fs::read(dest.join("v/kept")).expect("v/kept"), b"k");
    assert!(
        fs::symlink_metadata(dest.join("w"))
            .expect("w")
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        mtime_of(&outside),
        before,
        "dir times followed a replaced directory"
    );
}

#[test]
fn root_entry_must_be_a_directory() {
    let s = Scratch::new();
    // Type flag '0': a regular file, not an old-style directory.
    let layer = tar(|b| raw(b, b"./", EntryType::Regular, b"x"));
    expect_unsafe(s.apply(&layer), "./");
    s.assert_outside_untouched();
}

#[test]
fn old_style_directory_entries() {
    let s = Scratch::new();
    let layer = tar(|b| {
        let mut h = header(EntryType::Regular, 0o755, 0);
        h.as_old_mut().name[..7].copy_from_slice(b"olddir/");
        // A '\0' type flag with a trailing slash: a pre-POSIX directory.
        h.as_old_mut().linkflag[0] = 0;
        h.set_cksum();
        b.append(&h, io::empty()).expect("append");
    });
    s.apply(&layer).expect("apply");
    assert!(
        fs::symlink_metadata(s.dest().join("olddir"))
            .expect("olddir")
            .is_dir()
    );
}

#[test]
fn long_names() {
    let s = Scratch::new();
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
    let target = format!("{}/{}", "t".repeat(130), "x");
    let layer = tar(|b| {
        file(b, &long, 0o644, b"long");
        let mut h = header(EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, "l", &target).expect("long link");
    });
    s.apply(&layer).expect("apply");
    assert_eq!(fs::read(s.dest().join(&long)).expect("read"), b"long");
    assert_eq!(
        fs::read_link(s.dest().join("l")).expect("readlink"),
        Path::new(&target)
    );
}

#[test]
fn unsupported_entry_types_are_named() {
    let s = Scratch::new();
    let layer = tar(|b| {
        let mut h = header(EntryType::new(b'Z'), 0o644, 0);
        b.append_data(&mut h, "weird", io::empty()).expect("append");
    });
    match s.apply(&layer) {
        Err(ApplyError::Entry { entry, source }) => {
            assert_eq!(entry, "weird");
            assert_eq!(source.kind(), ErrorKind::Unsupported);
        }
        other => panic!("expected an unsupported entry error, got {other:?}"),
    }
}

#[test]
fn global_pax_headers_are_ignored() {
    let s = Scratch::new();
    let layer = tar(|b| {
        let mut h = header(EntryType::XGlobalHeader, 0o644, 0);
        let data = b"19 comment=berthxx\n";
        h.set_size(data.len() as u64);
        b.append_data(&mut h, "pax_global_header", data.as_slice())
            .expect("global");
        file(b, "f", 0o644, b"f");
    });
    let applied = s.apply(&layer).expect("apply");
    assert_eq!(applied.entries, 2);
    assert!(!s.dest().join("pax_global_header").exists());
}

#[test]
fn truncated_layers_fail() {
    let layer = tar(|b| file(b, "big", 0o644, &[7u8; 4000]));
    // Inside a header, inside the content, inside the padding after it.
    for cut in [300, 512 + 1000, 512 + 4050] {
        let s = Scratch::new();
        match s.apply(&layer[..cut]) {
            Err(ApplyError::Read(_)) => {}
            other => panic!("cut at {cut}: expected a read error, got {other:?}"),
        }
    }
    let gz = {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&layer).expect("gzip");
        enc.finish().expect("gzip")
    };
    let s = Scratch::new();
    let result = apply_layer(&gz[..gz.len() - 10], Compression::Gzip, &s.dest());
    assert!(matches!(result, Err(ApplyError::Read(_))), "{result:?}");
}

#[test]
fn entries_hidden_after_the_end_marker_are_refused() {
    let first = tar(|b| file(b, "a", 0o644, b"a"));
    let second = tar(|b| file(b, "hidden", 0o644, b"h"));
    // `a`, one zero block, then `hidden`: Go's tar reader rejects this.
    let mut layer = first[..1024].to_vec();
    layer.extend_from_slice(&[0u8; 512]);
    layer.extend_from_slice(&second);
    let s = Scratch::new();
    assert!(matches!(s.apply(&layer), Err(ApplyError::Read(_))));
    assert!(!s.dest().join("hidden").exists());
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let s = Scratch::new();
    let mut garbage = vec![0xa5u8; 2048];
    assert!(apply_layer(garbage.as_slice(), Compression::None, &s.dest()).is_err());
    assert!(apply_layer(garbage.as_slice(), Compression::Gzip, &s.dest()).is_err());
    assert!(apply_layer(garbage.as_slice(), Compression::Zstd, &s.dest()).is_err());
    garbage.truncate(0);
    let empty = apply_layer(garbage.as_slice(), Compression::None, &s.dest()).expect("empty");
    assert_eq!(empty.entries, 0);
}

#[test]
fn clean_path_rules() {
    let ok = |raw: &str| clean_path(raw.as_bytes(), "path").map_err(|f| format!("{f:?}"));
    assert_eq!(ok("./a/b/").expect("a/b"), Path::new("a/b"));
    assert_eq!(ok("/etc//x").expect("etc/x"), Path::new("etc/x"));
    assert_eq!(ok("a/./b").expect("a/b"), Path::new("a/b"));
    assert_eq!(ok("./").expect("root"), Path::new(""));
    assert_eq!(ok("/").expect("root"), Path::new(""));
    assert!(ok("a/../b").is_err());
    assert!(ok("..").is_err());
    assert!(clean_path(b"a\0b", "path").is_err());
    assert_eq!(
        ok("a/..b/c..").expect("dots in names"),
        Path::new("a/..b/c..")
    );
}

#[test]
fn pax_times() {
    let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec(), t.tv_nsec()));
    assert_eq!(t("1600000000").expect("int"), (1_600_000_000, 0));
    assert_eq!(
        t("1600000000.123456789123").expect("frac"),
        (1_600_000_000, 123_456_789)
    );
    assert_eq!(t("5.5").expect("half"), (5, 500_000_000));
    assert_eq!(t("-1.25").expect("negative"), (-2, 750_000_000));
    assert_eq!(t("-3").expect("negative int"), (-3, 0));
    for bad in ["", ".5", "1.2.3", "x", "1e9", "-", "99999999999999999999"] {
        assert!(t(bad).is_err(), "{bad:?}");
    }
}

/// `prefix`, then `len` bytes of `fill` made up as they are read: a stream as long as a
/// hostile layer's, with nothing behind it in memory.
struct Generated {
    prefix: io::Cursor<Vec<u8>>,
    left: u64,
    fill: u8,
}

impl Generated {
    fn new(prefix: Vec<u8>, len: u64, fill: u8) -> Self {
        Generated {
            prefix: io::Cursor::new(prefix),
            left: len,
            fill,
        }
    }
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.prefix.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        buf[..n].fill(self.fill);
        self.left -= n as u64;
        Ok(n)
    }
}

/// A PAX record, `"<len> <key>=<value>\n"`, its length counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

/// An extension header of `kind` with `body`, as writers name them.
fn extension(b: &mut Builder<Vec<u8>>, kind: EntryType, body: &[u8]) {
    let mut h = header(kind, 0o644, body.len() as u64);
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_cksum();
    b.append(&h, body).expect("extension");
}

fn expect_read_error(result: Result<Applied, ApplyError>, wanted: &[&str]) {
    match result {
        Err(ApplyError::Read(e)) => {
            let message = e.to_string();
            for w in wanted {
                assert!(message.contains(w), "{message:?} does not mention {w:?}");
            }
        }
        other => panic!("expected a read error mentioning {wanted:?}, got {other:?}"),
    }
}

#[test]
fn oversized_extension_headers_are_refused_before_reading() {
    // Declared and really there: the tar crate would read all of it into one buffer.
    const DECLARED: u64 = 64 << 20;
    for (kind, what) in [
        (EntryType::GNULongName, "GNU long name"),
        (EntryType::GNULongLink, "GNU long link name"),
        (EntryType::XHeader, "PAX header"),
        (EntryType::XGlobalHeader, "PAX global header"),
    ] {
        let mut h = header(kind, 0o644, DECLARED);
        h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        h.set_cksum();
        let layer = Generated::new(h.as_bytes().to_vec(), DECLARED, b'a');
        let s = Scratch::new();
        let (result, peak) = peak_heap(|| apply_layer(layer, Compression::None, &s.dest()));
        expect_read_error(result, &[what, "67108864", "over the limit of 1048576"]);
        assert!(peak < 1 << 20, "{what}: {peak} bytes of heap");
    }
}

#[test]
fn extension_headers_up_to_the_limit_are_read() {
    let limit = MAX_EXTENSION_BYTES as usize;
    // A PAX header of exactly the limit: a comment pads the records that matter.
    let mut records = pax_record("SCHILY.xattr.user.big", b"1");
    records.extend(pax_record("path", b"padded"));
    let rest = limit - records.len();
    let digits = rest.to_string().len();
    records.extend(pax_record(
        "comment",
        &vec![b'c'; rest - digits - "  comment=\n".len() + 1],
    ));
    assert_eq!(records.len(), limit);

    let s = Scratch::new();
    let layer = tar(|b| {
        extension(b, EntryType::XHeader, &records);
        file(b, "ignored", 0o644, b"p");
    });
    let (result, peak) = peak_heap(|| s.apply(&layer));
    result.expect("a PAX header of exactly the limit");
    assert!(peak < 2 * limit + (1 << 20), "{peak} bytes of heap");
    assert_eq!(fs::read(s.dest().join("padded")).expect("padded"), b"p");
    assert_eq!(
        xattr::get(s.dest().join("padded"), "user.big").expect("getxattr"),
        Some(b"1".to_vec())
    );

    // One byte more is refused, for long names too.
    records.push(b'\n');
    for kind in [EntryType::XHeader, EntryType::GNULongName] {
        let layer = tar(|b| {
            extension(b, kind, &records);
            file(b, "f", 0o644, b"p");
        });
        expect_read_error(Scratch::new().apply(&layer), &["1048577", "over the limit"]);
    }
}

#[test]
fn ambiguous_extension_headers_are_refused() {
    let name = |n: &str| format!("{n}\0").into_bytes();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a second GNU long name",
            tar(|b| {
                extension(b, EntryType::GNULongName, &name("one"));
                extension(b, EntryType::GNULongName, &name("two"));
                file(b, "f", 0o644, b"x");
            }),
        ),
        (
            "a second PAX header",
            tar(|b| {
                extension(b, EntryType::XHeader, &pax_record("path", b"one"));
                extension(b, EntryType::XHeader, &pax_record("path", b"two"));
                file(b, "f", 0o644, b"x");
            }),
        ),
        (
            "extension headers before a global header",
            tar(|b| {
                extension(b, EntryType::GNULongName, &name("one"));
                extension(b, EntryType::XGlobalHeader, &pax_record("comment", b"x"));
            }),
        ),
        (
            "with no entry after them",
            tar(|b| extension(b, EntryType::XHeader, &pax_record("path", b"one"))),
        ),
        (
            "malformed PAX record",
            tar(|b| {
                extension(b, EntryType::XHeader, b"99 path=short\n");
                file(b, "f", 0o644, b"x");
            }),
        ),
        (
            "malformed PAX record",
            tar(|b| {
                extension(b, EntryType::XHeader, &pax_record("path", b"a\0b"));
                file(b, "f", 0o644, b"x");
            }),
        ),
    ];
    for (wanted, layer) in cases {
        let s = Scratch::new();
        expect_read_error(s.apply(&layer), &[wanted]);
        assert!(!s.dest().join("f").exists(), "{wanted}: entry applied");
    }
}

#[test]
fn pax_and_gnu_extensions_override_the_header_as_in_go() {
    let s = Scratch::new();
    let (uid, gid) = owner();
    let layer = tar(|b| {
        // PAX path, linkpath, uid, gid and size win over the header...
        let mut records = pax_record("path", b"pax/file");
        records.extend(pax_record("size", b"5"));
        records.extend(pax_record("uid", uid.to_string().as_bytes()));
        records.extend(pax_record("gid", gid.to_string().as_bytes()));
        extension(b, EntryType::XHeader, &records);
        let mut h = header(EntryType::Regular, 0o644, 0);
        h.set_uid(1);
        h.set_gid(1);
        b.append_data(&mut h, "header-name", &b"12345"[..])
            .expect("file");
        // ...(the header said 0 bytes; the data follows as PAX sizes it)...
        extension(b, EntryType::XHeader, &pax_record("linkpath", b"pax/file"));
        link(b, EntryType::Symlink, "pax/link", "header-target");
        // ...and a GNU long name wins over a PAX path, ending at its first NUL.
        extension(b, EntryType::GNULongName, b"gnu/name\0ignored");
        extension(b, EntryType::XHeader, &pax_record("path", b"pax/loser"));
        file(b, "header-name-2", 0o644, b"g");
    });
    s.apply(&layer).expect("apply");
    let dest = s.dest();
    assert_eq!(fs::read(dest.join("pax/file")).expect("pax/file"), b"12345");
    let m = fs::symlink_metadata(dest.join("pax/file")).expect("stat");
    assert_eq!((m.uid(), m.gid()), (uid, gid));
    assert_eq!(
        fs::read_link(dest.join("pax/link")).expect("readlink"),
        Path::new("pax/file")
    );
    assert_eq!(fs::read(dest.join("gnu/name")).expect("gnu/name"), b"g");
    for absent in ["header-name", "header-target", "pax/loser", "header-name-2"] {
        assert!(!dest.join(absent).exists(), "{absent} exists");
    }
}

#[test]
fn entries_without_data_have_none_whatever_their_size_says() {
    // Go's archive/tar reads no data for links, devices, directories and fifos: a size
    // field on them must not hide the next header from berth while containerd sees it.
    let hidden = tar(|b| file(b, "seen-by-go", 0o644, b""));
    let s = Scratch::new();
    let layer = tar(|b| {
        let mut h = header(EntryType::Symlink, 0o777, 512);
        h.set_link_name("target").expect("link name");
        h.set_path("link").expect("path");
        h.set_cksum();
        // The file's header stands where a reader trusting the size sees data.
        b.append(&h, &hidden[..512]).expect("symlink");
    });
    s.apply(&layer).expect("apply");
    assert!(fs::symlink_metadata(s.dest().join("link")).is_ok());
    assert!(
        s.dest().join("seen-by-go").is_file(),
        "the entry Go sees is missing"
    );
}

#[test]
fn pax_sparse_files_are_refused() {
    let layer = tar(|b| {
        let mut records = pax_record("GNU.sparse.major", b"1");
        records.extend(pax_record("GNU.sparse.minor", b"0"));
        records.extend(pax_record("GNU.sparse.name", b"real"));
        extension(b, EntryType::XHeader, &records);
        file(b, "GNUSparseFile.0/real", 0o644, b"1\n0\n0\n");
    });
    let s = Scratch::new();
    match s.apply(&layer) {
        Err(ApplyError::Entry { source, .. }) => {
            assert_eq!(source.kind(), ErrorKind::Unsupported);
            assert!(source.to_string().contains("sparse"), "{source}");
        }
        other => panic!("expected a sparse file to be refused, got {other:?}"),
    }
}

#[test]
fn xattrs_an_image_may_not_set_are_dropped() {
    // file capabilities v2: CAP_NET_RAW permitted and effective.
    let mut capability = 0x0200_0001u32.to_le_bytes().to_vec();
    capability.extend((1u32 << 13).to_le_bytes());
    capability.extend([0; 12]);
    let mut wanted: Vec<(&str, &[u8])> = vec![("user.kept", b"1")];
    if is_root() {
        wanted.push(("security.capability", &capability));
    }
    let unwanted: [(&str, &[u8]); 5] = [
        ("trusted.overlay.opaque", b"y"),
        ("trusted.overlay.redirect", b"/elsewhere"),
        ("trusted.overlay.metacopy", b""),
        ("security.selinux", b"system_u:object_r:shadow_t:s0"),
        ("user.overlay.opaque", b"y"),
    ];
    let records: Vec<u8> = wanted
        .iter()
        .chain(&unwanted)
        .flat_map(|(name, value)| pax_record(&format!("SCHILY.xattr.{name}"), value))
        .collect();
    let layer = tar(|b| {
        extension(b, EntryType::XHeader, &records);
        dir(b, "d", 0o755, MTIME);
        extension(b, EntryType::XHeader, &records);
        file(b, "d/f", 0o755, b"#!/bin/sh\n");
    });
    let s = Scratch::new();
    let applied = s.apply(&layer).expect("apply");
    assert_eq!(applied.dropped_xattrs, 2 * unwanted.len() as u64);
    for path in ["d", "d/f"] {
        let path = s.dest().join(path);
        for (name, value) in &wanted {
            assert_eq!(
                xattr::get(&path, name).expect("getxattr").as_deref(),
                Some(*value),
                "{name} lost on {path:?}"
            );
        }
        for (name, _) in &unwanted {
            assert_eq!(
                xattr::get(&path, name).expect("getxattr"),
                None,
                "{name} set on {path:?}"
            );
        }
    }
}

#[test]
fn xattr_names_an_image_may_set() {
    for name in [
        "user.mime_type",
        "security.capability",
        "system.posix_acl_access",
        "system.posix_acl_default",
    ] {
        assert!(image_may_set(name.as_bytes()), "{name}");
    }
    for name in [
        "trusted.overlay.opaque",
        "trusted.anything",
        "security.selinux",
        "security.SMACK64EXEC",
        "security.ima",
        "security.evm",
        "security.capability2",
        "user.overlay.redirect",
        "system.nfs4_acl",
        "other.namespace",
        "",
    ] {
        assert!(!image_may_set(name.as_bytes()), "{name}");
    }
}
