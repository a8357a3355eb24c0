//! Layer compression: recognising it, and the decoder that undoes it.

use std::io::{self, Read};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From an OCI / Docker layer media type, e.g. application/vnd.oci.image.layer.v1.tar+gzip,
    /// application/vnd.docker.image.rootfs.diff.tar.gzip, ...tar+zstd, ...tar, and the
    /// nondistributable variants. None for an unknown media type.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        // Media types are case-insensitive and may carry parameters after `;`.
        let essence = media_type.split(';').next().unwrap_or_default().trim();
        match essence.to_ascii_lowercase().as_str() {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// From the first bytes of a blob (gzip 1f 8b, zstd 28 b5 2f fd, else None).
    pub fn detect(magic: &[u8]) -> Compression {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Largest zstd window accepted, as a power of two (128 MiB): the window is memory the
/// decoder allocates as the frame asks. 27 is zstd's own default limit and what `zstd --long`
/// writes; layers compressed by container tools use 8 MiB or less.
const ZSTD_MAX_WINDOW_LOG: u32 = 27;

/// Wraps `reader` in the decoder for `compression`.
pub(super) fn decompress<'r, R: Read + 'r>(
    reader: R,
    compression: Compression,
) -> io::Result<Box<dyn Read + 'r>> {
    Ok(match compression {
        Compression::None => Box::new(reader),
        // Multi-member: pigz and friends write concatenated gzip members.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::new(reader)?;
            decoder.window_log_max(ZSTD_MAX_WINDOW_LOG)?;
            Box::new(decoder)
        }
    })
}
