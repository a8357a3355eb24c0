//! Fuzz-style tests that run in CI in seconds: valid layers mutated by a small
//! deterministic generator are fed to the unpacker, which must answer each with a result or
//! an error, never a panic, and must stay under a stated heap bound. The helpers (the
//! generator, the mutators and the heap meter) serve the parser fuzz tests of `image` too.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use tar::{Builder, EntryType, Header};

use super::{Compression, MAX_EXTENSION_BYTES, apply_layer};

/// Heap a layer's unpacking may hold at once: a long name, a long link, a PAX header and
/// its parsed records (each at most [`MAX_EXTENSION_BYTES`]), and room for buffers and paths.
pub(crate) const UNPACK_HEAP_BOUND: usize = 4 * MAX_EXTENSION_BYTES as usize + (1 << 20);

/// Counts the heap each thread holds, so a test can measure what one call allocates.
struct MeteredAllocator;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated.
unsafe impl GlobalAlloc for MeteredAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static METERED: MeteredAllocator = MeteredAllocator;

/// Runs `f` and returns its result with the most heap it held at once on this thread.
pub(crate) fn peak_heap<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get) - base;
    (out, usize::try_from(peak).unwrap_or(0))
}

/// SplitMix64: tiny, deterministic, good enough to pick mutations.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick(&mut self, from: &[u8]) -> u8 {
        from[self.below(from.len())]
    }
}

/// Bytes that tend to matter to parsers: NUL, high bytes, octal digits, separators, and
/// tar type flags.
const INTERESTING: &[u8] = b"\0\x01\x7f\x80\xff0123457 \n=\"{}[]:,xgLKS5126";

/// A few random byte-level edits of `seed`: flips, overwrites, inserts, deletes, copies and
/// truncation.
pub(crate) fn mutate_bytes(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(4) {
        if data.is_empty() {
            data.push(rng.pick(INTERESTING));
            continue;
        }
        let at = rng.below(data.len());
        match rng.below(7) {
            0 => data[at] ^= 1 << rng.below(8),
            1 => data[at] = rng.pick(INTERESTING),
            2 => data.truncate(at),
            3 => {
                let extra: Vec<u8> = (0..=rng.below(16)).map(|_| rng.pick(INTERESTING)).collect();
                data.splice(at..at, extra);
            }
            4 => {
                let end = (at + 1 + rng.below(64)).min(data.len());
                data.drain(at..end);
            }
            5 => {
                let from = rng.below(data.len());
                let len = (1 + rng.below(512)).min(data.len() - from);
                let copied = data[from..from + len].to_vec();
                data.splice(at..at, copied);
            }
            _ => data[at] = rng.next() as u8,
        }
    }
    data
}

/// Header fields worth aiming at: (offset, length).
const HEADER_FIELDS: &[(usize, usize)] = &[
    (0, 100),   // name
    (100, 8),   // mode
    (108, 8),   // uid
    (124, 12),  // size
    (136, 12),  // mtime
    (156, 1),   // type flag
    (157, 100), // link name
    (257, 8),   // magic and version
    (345, 155), // ustar prefix
];

/// Values for numeric fields: huge octal, base-256, empty, garbage.
const NUMBERS: &[&[u8]] = &[
    b"77777777777\0",
    b"\x80\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
    b"00000004000\0",
    b"00004000000\0",
    b"           \0",
    b"9999\0",
];

/// Edits a tar built by the tests at the header level (a field set to an odd value, then
/// usually a correct checksum, so the edit gets past the checksum), or at the byte level.
pub(crate) fn mutate_tar(rng: &mut Rng, seed: &[u8], headers: &[usize]) -> Vec<u8> {
    if headers.is_empty() || rng.below(4) == 0 {
        return mutate_bytes(rng, seed);
    }
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(2) {
        let header = headers[rng.below(headers.len())];
        let (offset, len) = HEADER_FIELDS[rng.below(HEADER_FIELDS.len())];
        let field = &mut data[header + offset..header + offset + len];
        if len == 1 {
            field[0] = rng.pick(INTERESTING);
        } else if len <= 12 {
            let value = NUMBERS[rng.below(NUMBERS.len())];
            let n = value.len().min(len);
            field[..n].copy_from_slice(&value[..n]);
        } else {
            let at = rng.below(len);
            field[at] = rng.pick(INTERESTING);
        }
        if rng.below(10) != 0 {
            fix_checksum(&mut data[header..header + 512]);
        }
    }
    data
}

fn fix_checksum(block: &mut [u8]) {
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// Where each header of a well-formed tar starts (extension headers included).
pub(crate) fn header_offsets(tar: &[u8]) -> Vec<usize> {
    let mut archive = tar::Archive::new(tar);
    let entries = archive.entries().expect("seed tar").raw(true);
    entries
        .map(|e| e.expect("seed entry").raw_header_position() as usize)
        .collect()
}

/// Layers covering every kind of entry and extension the unpacker handles.
fn seed_layers() -> Vec<Vec<u8>> {
    let entry = |kind: EntryType, size: usize| {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o755);
        h.set_size(size as u64);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    };
    let mut plain = Builder::new(Vec::new());
    plain
        .append_data(&mut entry(EntryType::Directory, 0), "d", std::io::empty())
        .expect("dir");
    plain
        .append_data(&mut entry(EntryType::Regular, 5), "d/f", &b"hello"[..])
        .expect("file");
    plain
        .append_link(&mut entry(EntryType::Symlink, 0), "d/s", "f")
        .expect("symlink");
    plain
        .append_link(&mut entry(EntryType::Link, 0), "d/h", "d/f")
        .expect("hard link");
    plain
        .append_data(&mut entry(EntryType::Fifo, 0), "p", std::io::empty())
        .expect("fifo");
    plain
        .append_data(
            &mut entry(EntryType::Regular, 0),
            "d/.wh.gone",
            std::io::empty(),
        )
        .expect("whiteout");

    let mut extended = Builder::new(Vec::new());
    let long = format!("{}/{}", "n".repeat(120), "f".repeat(40));
    extended
        .append_data(&mut entry(EntryType::Regular, 3), &long, &b"abc"[..])
        .expect("long name");
    extended
        .append_link(&mut entry(EntryType::Symlink, 0), "l", "t".repeat(150))
        .expect("long link");
    extended
        .append_pax_extensions([
            ("SCHILY.xattr.user.k", &b"v"[..]),
            ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
            ("mtime", &b"1600000000.5"[..]),
            ("path", &b"pax/named"[..]),
        ])
        .expect("pax");
    extended
        .append_data(&mut entry(EntryType::Regular, 2), "short", &b"xy"[..])
        .expect("file after pax");
    extended
        .append_data(
            &mut entry(EntryType::Regular, 0),
            "o/.wh..wh..opq",
            std::io::empty(),
        )
        .expect("opaque");
    vec![
        plain.into_inner().expect("plain"),
        extended.into_inner().expect("extended"),
    ]
}

/// Runs `f` on one input, turning a panic into a test failure that shows the input.
pub(crate) fn no_panic<T>(what: &str, case: usize, input: &[u8], f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(out) => out,
        Err(_) => panic!(
            "{what}: case {case} panicked on input {:?}",
            String::from_utf8_lossy(&input[..input.len().min(2048)])
        ),
    }
}

#[test]
fn mutated_layers_never_panic_and_stay_bounded() {
    const CASES: usize = 1500;
    let scratch = tempfile::TempDir::new().expect("tempdir");
    let seeds: Vec<(Vec<u8>, Vec<usize>)> = seed_layers()
        .into_iter()
        .map(|tar| {
            let headers = header_offsets(&tar);
            (tar, headers)
        })
        .collect();
    for (seed, _) in &seeds {
        let dest = scratch.path().join("seed");
        fs::create_dir(&dest).expect("dest");
        apply_layer(seed.as_slice(), Compression::None, &dest).expect("seed layer");
        clear(&dest);
    }
    let mut rng = Rng::new(0x6265_7274_6821);
    let (mut applied, mut refused) = (0, 0);
    for case in 0..CASES {
        let (seed, headers) = &seeds[case % seeds.len()];
        let input = mutate_tar(&mut rng, seed, headers);
        let dest = scratch.path().join(case.to_string());
        fs::create_dir(&dest).expect("dest");
        let (result, peak) = no_panic("apply_layer", case, &input, || {
            peak_heap(|| apply_layer(input.as_slice(), Compression::None, &dest))
        });
        assert!(
            peak <= UNPACK_HEAP_BOUND,
            "case {case}: {peak} bytes of heap for a {}-byte layer",
            input.len()
        );
        match result {
            Ok(_) => applied += 1,
            Err(e) => {
                refused += 1;
                assert!(!e.to_string().is_empty(), "case {case}: empty error");
            }
        }
        clear(&dest);
    }
    // Both outcomes must be exercised, or the mutations are too weak or too strong.
    assert!(
        applied > CASES / 20 && refused > CASES / 20,
        "{applied} applied, {refused} refused"
    );
}

/// Removes what a case left, through any permissions the layer set.
fn clear(dir: &Path) {
    make_writable(dir);
    let _ = fs::remove_dir_all(dir);
}

fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            make_writable(&entry.path());
        }
    }
}
