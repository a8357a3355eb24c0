//! The bench's images, built here from nothing but this host's files and a seed:
//!
//! - busybox: Debian's static `/bin/busybox` with every applet as a hard link,
//!   what the bench's containers run (`sh`, `sleep`, `true`);
//! - pause: berth's static `berth-pause` as `/pause`, containerd's sandbox image;
//! - big: about 100 MB of gzip layers in five layers of uneven size, many files of
//!   varied sizes, part incompressible (like media and compressed archives), part
//!   text-like (a skewed pseudo-word vocabulary, compressing about 3:1), from a
//!   seed so that every run pushes the same bytes, and every pull run its own
//!   image (cold for every side without deleting anything between runs).

use std::path::Path;

use berth_testkit::image::{Image, ImageBuilder, Layer, LayerBlob};

use super::Result;

/// gzip level of the bench's layers: gzip's default, as image builders use, so
/// the big image is the size (about 100 MB) a registry would serve.
const GZIP_LEVEL: u32 = 6;

/// An image as pushed (the test kit's), and what its layers hold uncompressed.
pub struct ImageBlobs {
    pub image: Image,
    /// Sizes of the uncompressed tars, layer by layer.
    pub tar_sizes: Vec<u64>,
    /// Regular files and hard links in all layers.
    pub files: usize,
}

impl ImageBlobs {
    pub fn compressed_size(&self) -> u64 {
        self.image.layers.iter().map(LayerBlob::size).sum()
    }

    pub fn tar_size(&self) -> u64 {
        self.tar_sizes.iter().sum()
    }
}

/// An uncompressed layer and how many files (regular files and hard links) it holds.
pub struct Tarball {
    pub tar: Vec<u8>,
    pub files: usize,
}

/// An uncompressed layer tar under construction: the test kit's layer
/// builder (fixed owner and mtime, so a seed gives the same digests), counting
/// the files it is given.
struct LayerTar {
    layer: Layer,
    files: usize,
}

impl LayerTar {
    fn new() -> LayerTar {
        LayerTar {
            layer: Layer::new(),
            files: 0,
        }
    }

    fn with(&mut self, add: impl FnOnce(Layer) -> Layer) {
        self.layer = add(std::mem::take(&mut self.layer));
    }

    fn dir(&mut self, path: &str, mode: u32) {
        self.with(|l| l.dir_with(path, mode, 0, 0));
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.files += 1;
        self.with(|l| l.file_with(path, data, mode, 0, 0));
    }

    fn hard_link(&mut self, path: &str, target: &str) {
        self.files += 1;
        // Every link here is to an executable (busybox); see `hardlink_with`.
        self.with(|l| l.hardlink_with(path, target, 0o755));
    }

    fn finish(self) -> Tarball {
        Tarball {
            tar: self.layer.into_tar(),
            files: self.files,
        }
    }
}

/// The busybox layer (uncompressed): `/bin/busybox`, an applet link for each
/// of its applets, a root-only /etc/passwd and /etc/group, a /tmp.
pub fn busybox_layer() -> Result<Tarball> {
    let busybox = std::fs::read("/bin/busybox")
        .map_err(|e| format!("/bin/busybox (Debian's busybox-static): {e}"))?;
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .map_err(|e| format!("busybox --list: {e}"))?;
    let mut layer = LayerTar::new();
    for (dir, mode) in [("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777)] {
        layer.dir(dir, mode);
    }
    layer.file("bin/busybox", 0o755, &busybox);
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if !applet.is_empty() && applet != "busybox" && !applet.contains('/') {
            layer.hard_link(&format!("bin/{applet}"), "bin/busybox");
        }
    }
    layer.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n");
    layer.file("etc/group", 0o644, b"root:x:0:\n");
    Ok(layer.finish())
}

/// The pause layer (uncompressed): the static pause binary as `/pause`.
pub fn pause_layer(binary: &Path) -> Result<Tarball> {
    let data = std::fs::read(binary).map_err(|e| format!("{}: {e}", binary.display()))?;
    let mut layer = LayerTar::new();
    layer.file("pause", 0o755, &data);
    Ok(layer.finish())
}

pub fn busybox_image(layer: &Tarball) -> Result<ImageBlobs> {
    image(std::slice::from_ref(layer), Image::oci().cmd(&["sh"]))
}

pub fn pause_image(layer: &Tarball) -> Result<ImageBlobs> {
    image(
        std::slice::from_ref(layer),
        Image::oci().entrypoint(&["/pause"]).cmd(&[]),
    )
}

/// The crash loop's extra image: one layer of 256 KiB of bytes of its own (as
/// tests/faults.rs pulls), shared with no other image, so pulling and removing it
/// makes and frees a blob and a snapshot of its own.
pub fn extra_image(seed: u64) -> Result<ImageBlobs> {
    let mut rng = SplitMix(seed);
    let data: Vec<u8> = (0..EXTRA_BYTES / 8)
        .flat_map(|_| rng.next().to_le_bytes())
        .collect();
    let mut layer = LayerTar::new();
    layer.dir("extra", 0o755);
    layer.file("extra/data", 0o644, &data);
    image(&[layer.finish()], Image::oci().cmd(&["sh"]))
}

/// The extra image's payload: the size tests/faults.rs uses.
const EXTRA_BYTES: usize = 256 << 10;

/// Uncompressed bytes of the big image: with the mix below, gzip (level 6)
/// brings it to about 100 MB.
const BIG_TAR_BYTES: u64 = 150 << 20;
/// How the big image's bytes are split over its five layers (a base OS layer
/// first, application layers after).
const BIG_LAYER_SHARES: [f64; 5] = [0.38, 0.26, 0.16, 0.12, 0.08];

/// The big image for `seed`; every seed gives different bytes of the same shape.
/// Its base layer carries busybox as `/bin/sh` and `/bin/true`, so that a
/// container can be created from it (berth creates the task at CreateContainer).
pub fn big_image(seed: u64) -> Result<ImageBlobs> {
    let busybox = std::fs::read("/bin/busybox").map_err(|e| format!("/bin/busybox: {e}"))?;
    let busybox = busybox.as_slice();
    let layers = std::thread::scope(|s| {
        let handles: Vec<_> = BIG_LAYER_SHARES
            .iter()
            .enumerate()
            .map(|(k, share)| {
                let bytes = (BIG_TAR_BYTES as f64 * share) as u64;
                let base = (k == 0).then_some(busybox);
                s.spawn(move || big_layer(seed * 16 + k as u64, k, bytes, base))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("layer thread panicked".into()))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    image(&layers, Image::oci().cmd(&["/bin/true"]))
}

/// One layer of about `bytes` (plus busybox, when given): directories of 24
/// files each; most files small (100 B to 128 KiB, log-uniform; a quarter of them
/// incompressible, the rest text), one in 100 large (1 to 8 MiB, in 64 KiB
/// blocks, half of them incompressible).
fn big_layer(seed: u64, index: usize, bytes: u64, busybox: Option<&[u8]>) -> Result<Tarball> {
    let mut rng = SplitMix(seed);
    let vocabulary = Vocabulary::new(&mut rng);
    let mut layer = LayerTar::new();
    if let Some(busybox) = busybox {
        layer.dir("bin", 0o755);
        layer.file("bin/busybox", 0o755, busybox);
        layer.hard_link("bin/sh", "bin/busybox");
        layer.hard_link("bin/true", "bin/busybox");
    }
    let top = format!("usr/share/bench{index}");
    layer.dir("usr", 0o755);
    layer.dir("usr/share", 0o755);
    layer.dir(&top, 0o755);
    let (mut written, mut file, mut dir) = (0u64, 0usize, String::new());
    let mut content = Vec::new();
    while written < bytes {
        if file % 24 == 0 {
            dir = format!("{top}/d{:03}", file / 24);
            layer.dir(&dir, 0o755);
        }
        let large = rng.below(100) == 0;
        let size = if large {
            rng.log_uniform(1 << 20, 8 << 20)
        } else {
            rng.log_uniform(100, 128 << 10)
        };
        let size = size.min(bytes - written).max(1) as usize;
        content.clear();
        let ext = if large {
            while content.len() < size {
                let block = (content.len() + (64 << 10)).min(size);
                if rng.below(2) == 0 {
                    rng.fill_random(&mut content, block);
                } else {
                    vocabulary.fill_text(&mut rng, &mut content, block);
                }
            }
            ["so", "bin", "jar", "dat"][rng.below(4) as usize]
        } else if rng.below(4) == 0 {
            rng.fill_random(&mut content, size);
            ["png", "gz", "woff", "pyc"][rng.below(4) as usize]
        } else {
            vocabulary.fill_text(&mut rng, &mut content, size);
            ["py", "txt", "json", "html"][rng.below(4) as usize]
        };
        layer.file(&format!("{dir}/f{file:05}.{ext}"), 0o644, &content);
        written += size as u64;
        file += 1;
    }
    Ok(layer.finish())
}

/// Gzips the layers (in parallel) and adds them to `builder`'s image.
fn image(layers: &[Tarball], builder: ImageBuilder) -> Result<ImageBlobs> {
    let compressed = std::thread::scope(|s| {
        let handles: Vec<_> = layers
            .iter()
            .map(|layer| s.spawn(move || LayerBlob::gzip_at(&layer.tar, GZIP_LEVEL)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "gzip thread panicked".to_string()))
            .collect::<Result<Vec<_>>>()
    })?;
    let image = compressed
        .into_iter()
        .fold(builder, ImageBuilder::layer)
        .build();
    Ok(ImageBlobs {
        image,
        tar_sizes: layers.iter().map(|l| l.tar.len() as u64).collect(),
        files: layers.iter().map(|l| l.files).sum(),
    })
}

/// splitmix64: small, fast, and the same sequence on every machine and version.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn log_uniform(&mut self, low: u64, high: u64) -> u64 {
        let (l, h) = ((low as f64).ln(), (high as f64).ln());
        (l + (h - l) * self.unit()).exp() as u64
    }

    fn fill_random(&mut self, out: &mut Vec<u8>, len: usize) {
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
    }
}

/// 1024 pseudo-words of 2 to 9 letters, drawn with a skew towards the first
/// ones, as words in source and prose are: gzip brings such text to about a third.
struct Vocabulary {
    words: Vec<Vec<u8>>,
}

impl Vocabulary {
    fn new(rng: &mut SplitMix) -> Vocabulary {
        let words = (0..1024)
            .map(|_| {
                let len = 2 + rng.below(8) as usize;
                (0..len).map(|_| b'a' + rng.below(26) as u8).collect()
            })
            .collect();
        Vocabulary { words }
    }

    fn fill_text(&self, rng: &mut SplitMix, out: &mut Vec<u8>, len: usize) {
        while out.len() < len {
            let u = rng.unit();
            let word = &self.words[(u * u * u * self.words.len() as f64) as usize];
            out.extend_from_slice(word);
            out.push(match rng.below(12) {
                0 => b'\n',
                1 => b',',
                _ => b' ',
            });
        }
        out.truncate(len);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn big_layers_are_deterministic_and_compress_partly() {
        let a = big_layer(7, 0, 4 << 20, None).unwrap();
        let b = big_layer(7, 0, 4 << 20, None).unwrap();
        let c = big_layer(8, 0, 4 << 20, None).unwrap();
        assert_eq!(a.tar, b.tar);
        assert_ne!(a.tar, c.tar);
        assert!(a.files > 10, "{} files", a.files);
        let ratio = LayerBlob::gzip_at(&a.tar, GZIP_LEVEL).size() as f64 / a.tar.len() as f64;
        assert!((0.3..0.9).contains(&ratio), "gzip ratio {ratio}");
    }

    #[test]
    fn image_names_every_layer_and_its_diff_id() {
        let layer = Tarball {
            tar: b"not really a tar".to_vec(),
            files: 1,
        };
        let blobs = pause_image(&layer).unwrap();
        let image = &blobs.image;
        let manifest: Value = serde_json::from_slice(&image.manifest.data).unwrap();
        assert_eq!(manifest["layers"][0]["digest"], image.layers[0].digest);
        let config: Value = serde_json::from_slice(&image.config.data).unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            image.layers[0].diff_id.as_str()
        );
        assert_eq!(config["config"]["Entrypoint"][0], "/pause");
        assert_eq!((blobs.tar_size(), blobs.files), (16, 1));
    }
}
