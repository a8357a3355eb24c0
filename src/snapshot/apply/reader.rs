//! Reading a tar stream with every allocation bounded.
//!
//! The tar crate's entry iterator reads the body of every GNU long-name (`L`), long-link
//! (`K`) and PAX (`x`) header whole into memory, however large the header says it is: one
//! such header declaring gigabytes fits in a kilobyte-sized zstd blob. This reader parses the
//! headers itself (the crate's `Header` still decodes each 512-byte block) and follows Go's
//! archive/tar, which containerd uses, wherever the two readers could otherwise disagree:
//!
//! * extension bodies over [`MAX_EXTENSION_BYTES`] are refused before any of them is read;
//!   at most one of each kind (`L`, `K`, `x`) describes an entry, so an entry holds at most
//!   three such bodies in memory;
//! * PAX `path`, `linkpath`, `size`, `uid` and `gid` override the header; GNU long names
//!   override PAX ones; a long name ends at its first NUL;
//! * link, symlink, device, directory and fifo entries carry no data whatever their size
//!   field says;
//! * a zero block ends the archive only if the next block is zero too (or absent).

use std::io::{self, ErrorKind, Read, Seek, SeekFrom};

use tar::{EntryType, Header};

/// Largest body of a GNU long-name or long-link entry or of a PAX header. Go's archive/tar
/// (so containerd) refuses bigger ones as well (`maxSpecialFileSize`); real names are a few
/// KiB at most, and the xattrs of one file fit with room to spare.
pub const MAX_EXTENSION_BYTES: u64 = 1 << 20;

const BLOCK: usize = 512;

/// A PAX record: key and value, as bytes.
type PaxRecord = (Vec<u8>, Vec<u8>);
/// Offset of the GNU sparse `isextended` flag in a sparse extension block.
const SPARSE_EXT_FLAG: usize = 504;

/// Where a [`TarReader`] reads from, and how it gets past data nobody read.
pub trait TarSource: Read + Sized {
    /// Moves `n` bytes ahead; ending early is an error.
    fn skip(&mut self, n: u64) -> io::Result<()> {
        let skipped = io::copy(&mut self.by_ref().take(n), &mut io::sink())?;
        if skipped < n {
            return Err(truncated());
        }
        Ok(())
    }
}

/// A tar file read in place: data is seeked over, not read.
pub struct SeekingFile {
    file: std::fs::File,
    pos: u64,
    len: u64,
}

impl SeekingFile {
    pub fn new(file: std::fs::File) -> io::Result<SeekingFile> {
        let len = file.metadata()?.len();
        Ok(SeekingFile { file, pos: 0, len })
    }
}

impl Read for SeekingFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl TarSource for SeekingFile {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        // Seeking past the end succeeds, and the archive would then look complete.
        let to = self.pos.checked_add(n).filter(|&to| to <= self.len);
        let to = to.ok_or_else(truncated)?;
        self.file.seek(SeekFrom::Start(to))?;
        self.pos = to;
        Ok(())
    }
}

fn truncated() -> io::Error {
    io::Error::new(ErrorKind::UnexpectedEof, "the archive ends inside an entry")
}

fn invalid(offset: u64, message: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        ErrorKind::InvalidData,
        format!("tar header at offset {offset}: {message}"),
    )
}

/// One entry, with its extension headers applied.
#[derive(Debug)]
pub struct TarEntry {
    header: Header,
    path: Vec<u8>,
    link_name: Option<Vec<u8>>,
    pax: Vec<PaxRecord>,
    size: u64,
    /// PAX `uid` and `gid`, which override the header's.
    pax_uid: Option<u64>,
    pax_gid: Option<u64>,
    data_offset: u64,
}

impl TarEntry {
    /// The entry's own header block (type, mode, times, device numbers...).
    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn path_bytes(&self) -> &[u8] {
        &self.path
    }

    pub fn link_name_bytes(&self) -> Option<&[u8]> {
        self.link_name.as_deref()
    }

    /// The PAX records of the entry's `x` header, in order (a later duplicate key wins).
    pub fn pax_records(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.pax.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    /// Bytes of data the entry has in the archive.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn uid(&self) -> io::Result<u64> {
        self.pax_uid.map_or_else(|| self.header.uid(), Ok)
    }

    pub fn gid(&self) -> io::Result<u64> {
        self.pax_gid.map_or_else(|| self.header.gid(), Ok)
    }

    /// Where the entry's data starts in the archive.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }
}

/// Extension headers read so far for the entry to come.
#[derive(Default)]
struct Extensions {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<PaxRecord>>,
}

impl Extensions {
    fn any(&self) -> bool {
        self.long_name.is_some() || self.long_link.is_some() || self.pax.is_some()
    }

    fn pax_value(&self, key: &[u8]) -> Option<&[u8]> {
        let records = self.pax.as_deref()?;
        records
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
}

/// Reads entries one by one; [`TarReader::data`] reads the current entry's data, and
/// whatever is left of it is skipped when the next entry is asked for.
pub struct TarReader<R> {
    inner: R,
    /// Offset of the next byte `inner` yields.
    pos: u64,
    /// Data of the current entry not read yet.
    unread: u64,
    /// Padding after the current entry's data, up to the next block.
    padding: u64,
    ended: bool,
}

impl<R: TarSource> TarReader<R> {
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            pos: 0,
            unread: 0,
            padding: 0,
            ended: false,
        }
    }

    /// The source, positioned after the end-of-archive blocks once `next_entry` returned
    /// `None`.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The next entry, or `None` at the end of the archive.
    pub fn next_entry(&mut self) -> io::Result<Option<TarEntry>> {
        if self.ended {
            return Ok(None);
        }
        self.skip(self.unread + self.padding)?;
        (self.unread, self.padding) = (0, 0);
        let mut ext = Extensions::default();
        loop {
            let offset = self.pos;
            let Some(header) = self.read_header()? else {
                self.ended = true;
                if ext.any() {
                    return Err(invalid(
                        offset,
                        "extension headers with no entry after them",
                    ));
                }
                return Ok(None);
            };
            let declared = header
                .entry_size()
                .map_err(|e| invalid(offset, format!("size: {e}")))?;
            let kind = header.entry_type();
            let (slot, what) = match kind {
                EntryType::GNULongName => (Slot::LongName, "GNU long name"),
                EntryType::GNULongLink => (Slot::LongLink, "GNU long link name"),
                EntryType::XHeader => (Slot::Pax, "PAX header"),
                EntryType::XGlobalHeader => (Slot::None, "PAX global header"),
                _ => (Slot::None, ""),
            };
            if !what.is_empty() && declared > MAX_EXTENSION_BYTES {
                return Err(invalid(
                    offset,
                    format!(
                        "{what} of {declared} bytes is over the limit of {MAX_EXTENSION_BYTES}"
                    ),
                ));
            }
            match slot {
                Slot::LongName | Slot::LongLink | Slot::Pax => {
                    self.read_extension(&mut ext, slot, declared, offset, what)?;
                    continue;
                }
                Slot::None if kind == EntryType::XGlobalHeader && ext.any() => {
                    return Err(invalid(offset, "extension headers before a global header"));
                }
                Slot::None => {}
            }
            if kind.is_gnu_sparse() {
                self.skip_sparse_extensions(&header, offset)?;
            }
            let entry = self.entry(header, ext, declared, offset)?;
            self.unread = entry.size;
            self.padding = padding(entry.size).ok_or_else(|| invalid(offset, "size overflow"))?;
            return Ok(Some(entry));
        }
    }

    /// Reads the current entry's data (at most what is left of it).
    pub fn data(&mut self) -> Data<'_, R> {
        Data { reader: self }
    }

    fn entry(
        &mut self,
        header: Header,
        ext: Extensions,
        declared: u64,
        offset: u64,
    ) -> io::Result<TarEntry> {
        let number = |key: &str| -> io::Result<Option<u64>> {
            ext.pax_value(key.as_bytes())
                .map(|v| parse_decimal(v).ok_or_else(|| invalid(offset, format!("PAX {key}"))))
                .transpose()
        };
        let size = number("size")?.unwrap_or(declared);
        let (pax_uid, pax_gid) = (number("uid")?, number("gid")?);
        let path = match (&ext.long_name, ext.pax_value(b"path")) {
            (Some(name), _) => name.clone(),
            (None, Some(name)) => name.to_vec(),
            (None, None) => header.path_bytes().into_owned(),
        };
        let link_name = match (&ext.long_link, ext.pax_value(b"linkpath")) {
            (Some(link), _) => Some(link.clone()),
            (None, Some(link)) => Some(link.to_vec()),
            (None, None) => header.link_name_bytes().map(|l| l.into_owned()),
        };
        let size = if carries_no_data(header.entry_type()) {
            0
        } else {
            size
        };
        Ok(TarEntry {
            header,
            path,
            link_name,
            pax: ext.pax.unwrap_or_default(),
            size,
            pax_uid,
            pax_gid,
            data_offset: self.pos,
        })
    }

    /// Reads one extension body (at most [`MAX_EXTENSION_BYTES`], checked by the caller).
    fn read_extension(
        &mut self,
        ext: &mut Extensions,
        slot: Slot,
        size: u64,
        offset: u64,
        what: &str,
    ) -> io::Result<()> {
        let taken = match slot {
            Slot::LongName => ext.long_name.is_some(),
            Slot::LongLink => ext.long_link.is_some(),
            Slot::Pax => ext.pax.is_some(),
            Slot::None => false,
        };
        if taken {
            return Err(invalid(offset, format!("a second {what} for one entry")));
        }
        // At most MAX_EXTENSION_BYTES (checked by the caller), so allocated at once.
        let mut body = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        self.inner.by_ref().take(size).read_to_end(&mut body)?;
        self.pos += body.len() as u64;
        if (body.len() as u64) < size {
            return Err(truncated());
        }
        let pad = padding(size).ok_or_else(|| invalid(offset, "size overflow"))?;
        self.skip(pad)?;
        match slot {
            Slot::LongName => ext.long_name = Some(until_nul(body)),
            Slot::LongLink => ext.long_link = Some(until_nul(body)),
            Slot::Pax => ext.pax = Some(parse_pax(&body).map_err(|e| invalid(offset, e))?),
            Slot::None => {}
        }
        Ok(())
    }

    /// Old GNU sparse headers may be followed by blocks continuing the sparse map, before
    /// the data. They are passed over: no one here unpacks sparse files.
    fn skip_sparse_extensions(&mut self, header: &Header, offset: u64) -> io::Result<()> {
        let mut extended = header.as_gnu().is_some_and(|gnu| gnu.is_extended());
        while extended {
            let mut block = [0u8; BLOCK];
            self.read_exact(&mut block)
                .map_err(|_| invalid(offset, "the archive ends inside a sparse map"))?;
            extended = block[SPARSE_EXT_FLAG] == 1;
        }
        Ok(())
    }

    /// The next header block, checksum verified; `None` at the end of the archive.
    fn read_header(&mut self) -> io::Result<Option<Header>> {
        let offset = self.pos;
        let mut header = Header::new_old();
        if !self.read_block(header.as_mut_bytes())? {
            return Ok(None);
        }
        if header.as_bytes().iter().all(|&b| b == 0) {
            self.check_second_zero_block()?;
            return Ok(None);
        }
        check_checksum(&header).map_err(|e| invalid(offset, e))?;
        Ok(Some(header))
    }

    /// Go's archive/tar (so containerd) insists that the block after the first zero block
    /// is zero too, or absent; otherwise entries could hide after the end marker,
    /// invisible here but not to other tools.
    fn check_second_zero_block(&mut self) -> io::Result<()> {
        let mut block = Vec::with_capacity(BLOCK);
        self.inner
            .by_ref()
            .take(BLOCK as u64)
            .read_to_end(&mut block)?;
        self.pos += block.len() as u64;
        if block.iter().any(|&b| b != 0) {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "data after the tar end-of-archive block",
            ));
        }
        Ok(())
    }

    /// Fills `block`; `false` if the stream ended before its first byte.
    fn read_block(&mut self, block: &mut [u8]) -> io::Result<bool> {
        let mut filled = 0;
        while filled < block.len() {
            match self.inner.read(&mut block[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => {
                    return Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "the archive ends inside a header",
                    ));
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos += filled as u64;
        Ok(true)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact(buf)?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        if n > 0 {
            self.inner.skip(n)?;
            self.pos += n;
        }
        Ok(())
    }
}

/// The current entry's data.
pub struct Data<'r, R> {
    reader: &'r mut TarReader<R>,
}

impl<R: TarSource> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let reader = &mut *self.reader;
        let want = usize::try_from(reader.unread).map_or(buf.len(), |left| left.min(buf.len()));
        if want == 0 {
            return Ok(0);
        }
        let n = reader.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(truncated());
        }
        reader.unread -= n as u64;
        reader.pos += n as u64;
        Ok(n)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    LongName,
    LongLink,
    Pax,
    None,
}

/// Go's `isHeaderOnlyType`: these entries never have data in the archive.
fn carries_no_data(kind: EntryType) -> bool {
    matches!(
        kind,
        EntryType::Link
            | EntryType::Symlink
            | EntryType::Char
            | EntryType::Block
            | EntryType::Directory
            | EntryType::Fifo
    )
}

/// Zero bytes from the end of `size` bytes of data to the next block boundary.
fn padding(size: u64) -> Option<u64> {
    let rounded = size.checked_next_multiple_of(BLOCK as u64)?;
    Some(rounded - size)
}

/// The header checksum: the sum of its bytes with the checksum field as spaces. Like Go,
/// both the unsigned sum (POSIX) and the signed one (old Sun and GNU tars) are accepted.
fn check_checksum(header: &Header) -> Result<(), String> {
    let stored = header.cksum().map_err(|e| format!("checksum field: {e}"))?;
    let bytes = header.as_bytes();
    let field = 148..156;
    let (mut unsigned, mut signed) = (0u32, 0i32);
    for (i, &b) in bytes.iter().enumerate() {
        let b = if field.contains(&i) { b' ' } else { b };
        unsigned += u32::from(b);
        signed += i32::from(b as i8);
    }
    if stored == unsigned || i64::from(stored) == i64::from(signed) {
        Ok(())
    } else {
        Err("checksum mismatch".into())
    }
}

/// A GNU long name or link: up to its first NUL, as Go reads it.
fn until_nul(mut body: Vec<u8>) -> Vec<u8> {
    if let Some(end) = body.iter().position(|&b| b == 0) {
        body.truncate(end);
    }
    body
}

fn parse_decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// PAX records, `"<length> <key>=<value>\n"` each, checked as Go's `parsePAXRecord` does.
fn parse_pax(mut body: &[u8]) -> Result<Vec<PaxRecord>, String> {
    let mut records = Vec::new();
    while !body.is_empty() {
        let bad = || format!("malformed PAX record at {:?}", preview(body));
        let space = body.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let length = parse_decimal(&body[..space])
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n > space + 1 && n <= body.len())
            .ok_or_else(bad)?;
        let (record, rest) = body.split_at(length);
        let record = record[space + 1..].strip_suffix(b"\n").ok_or_else(bad)?;
        let equals = record.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        let (key, value) = (&record[..equals], &record[equals + 1..]);
        let names_a_path = matches!(key, b"path" | b"linkpath" | b"uname" | b"gname");
        if key.is_empty() || key.contains(&0) || (names_a_path && value.contains(&0)) {
            return Err(bad());
        }
        records.push((key.to_vec(), value.to_vec()));
        body = rest;
    }
    Ok(records)
}

/// The start of a malformed record, printable, for an error message.
fn preview(bytes: &[u8]) -> String {
    const PREVIEW_BYTES: usize = 32;
    String::from_utf8_lossy(&bytes[..bytes.len().min(PREVIEW_BYTES)]).into_owned()
}
