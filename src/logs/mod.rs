//! Container logs in the CRI format the kubelet reads:
//! `<RFC3339Nano time> <stdout|stderr> <P|F> <content>\n`, one entry per line of
//! output; lines longer than the limit are split into partial (`P`) entries ending
//! with a full (`F`) one, and output that ends without a newline is a last `P`. Both streams of a container append to one file, which
//! `ReopenContainerLog` reopens after the kubelet rotated it.

mod time;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::is_out_of_space;

pub use time::rfc3339_nano;

/// containerd's default `max_container_log_line_size`.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// While writes fail, how often the file is tried again: a full or failing disk
/// is asked once a second per container, not once per line, and at most about a
/// second of output is dropped after space frees.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// A container's log file, shared by its stdout and stderr copiers.
///
/// A write that fails (a full disk, EIO) never stops the copiers: the container
/// would block on its stdout once the fifo filled. The entry is dropped and
/// counted, one warning marks the start of the outage, the file is tried again
/// every [`RETRY_INTERVAL`], and a note with the count marks its end.
pub struct LogFile {
    path: PathBuf,
    sink: Mutex<Sink>,
}

struct Sink {
    /// `None` until a log that could not be opened at first opens.
    file: Option<File>,
    /// Set while writes fail.
    outage: Option<Outage>,
    /// A cut-short entry that could not be taken back ends in the file without
    /// its newline; the next write ends that line first.
    torn: bool,
}

/// One episode of failed writes: what was dropped, and when to try again.
struct Outage {
    since: Instant,
    retry_at: Instant,
    /// The file may be the trouble rather than the disk (EIO, a stale handle):
    /// the retry opens the path again.
    reopen: bool,
    entries: u64,
    bytes: u64,
}

impl LogFile {
    pub fn open(path: &Path) -> io::Result<Arc<LogFile>> {
        if let Some(dir) = path.parent() {
            crate::layout::shared_dir_all(dir)?;
        }
        Ok(LogFile::with_file(path, open_append(path)?))
    }

    /// Opens the log of a container that already runs (berthd restarted): its
    /// output must be drained whatever the log disk does, so a log that cannot
    /// be opened now starts as an outage that keeps trying to open it.
    pub fn open_or_retry(path: &Path) -> Arc<LogFile> {
        LogFile::open(path).unwrap_or_else(|e| {
            let log = LogFile::unopened(path);
            log.lock().failed(path, None, &e, Instant::now());
            log
        })
    }

    fn with_file(path: &Path, file: File) -> Arc<LogFile> {
        let log = LogFile::unopened(path);
        log.lock().file = Some(file);
        log
    }

    fn unopened(path: &Path) -> Arc<LogFile> {
        Arc::new(LogFile {
            path: path.to_path_buf(),
            sink: Mutex::new(Sink {
                file: None,
                outage: None,
                torn: false,
            }),
        })
    }

    /// Opens the path again: after a rotation the old file was renamed away and
    /// new entries must go to a new file at the same path. During an outage the
    /// next entry tries the fresh file at once.
    pub fn reopen(&self) -> io::Result<()> {
        let fresh = open_append(&self.path)?;
        let mut sink = self.lock();
        sink.file = Some(fresh);
        sink.torn = false;
        if let Some(outage) = &mut sink.outage {
            outage.retry_at = Instant::now();
            outage.reopen = false;
        }
        Ok(())
    }

    /// Entries dropped so far in the current outage; 0 while writes succeed.
    pub fn dropped(&self) -> u64 {
        self.lock().outage.as_ref().map_or(0, |o| o.entries)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sink> {
        self.sink.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one entry with a single write, so entries of the two streams never
    /// interleave within a line. Appends go to the page cache; they do not block
    /// the executor the way an fsync would. An entry the file does not take is
    /// dropped (see [`LogFile`]).
    fn append(&self, stream: Stream, partial: bool, content: &[u8]) {
        let mut entry = Vec::with_capacity(content.len() + 48);
        entry.extend_from_slice(rfc3339_nano(std::time::SystemTime::now()).as_bytes());
        entry.push(b' ');
        entry.extend_from_slice(stream.as_str().as_bytes());
        entry.extend_from_slice(if partial { b" P " } else { b" F " });
        entry.extend_from_slice(content);
        entry.push(b'\n');
        self.lock().append(&self.path, &entry);
    }
}

impl Sink {
    fn append(&mut self, path: &Path, entry: &[u8]) {
        let now = Instant::now();
        if let Some(outage) = &mut self.outage {
            if now < outage.retry_at {
                outage.count(entry);
                return;
            }
            if outage.reopen {
                match open_append(path) {
                    Ok(fresh) => {
                        self.file = Some(fresh);
                        self.torn = false;
                    }
                    Err(e) => return self.failed(path, Some(entry), &e, now),
                }
            }
        }
        match self.write(entry) {
            Ok(()) => self.resumed(path),
            Err(e) => self.failed(path, Some(entry), &e, now),
        }
    }

    /// Writes the entry whole or not at all: what a failed write left of it is
    /// cut off again, so a reader never meets half an entry glued to the next.
    fn write(&mut self, entry: &[u8]) -> io::Result<()> {
        let file = self.file.as_mut().ok_or(io::ErrorKind::NotFound)?;
        if self.torn {
            file.write_all(b"\n")?;
            self.torn = false;
        }
        let (written, result) = write_counted(file, entry);
        if let Err(e) = result {
            if written > 0 && self.take_back(written).is_err() {
                self.torn = true;
            }
            return Err(e);
        }
        Ok(())
    }

    /// Cuts the last `written` bytes off the file: appends are serialised by the
    /// sink's lock, so they are the end of the cut-short entry.
    fn take_back(&mut self, written: usize) -> io::Result<()> {
        let file = self.file.as_mut().ok_or(io::ErrorKind::NotFound)?;
        let len = file.metadata()?.len();
        file.set_len(len.saturating_sub(written as u64))
    }

    /// Starts or continues an outage; `entry` is what was not written, if any.
    fn failed(&mut self, path: &Path, entry: Option<&[u8]>, error: &io::Error, now: Instant) {
        // A full disk frees up in place; any other error may be the file's own
        // (EIO on a dying disk, a stale handle), so its retry reopens the path.
        let reopen = self.file.is_none() || !is_out_of_space(error);
        let outage = self.outage.get_or_insert_with(|| {
            tracing::warn!(
                path = %path.display(),
                error = %error,
                "container log unwritable: dropping the container's output until it takes writes again"
            );
            Outage {
                since: now,
                retry_at: now,
                reopen: false,
                entries: 0,
                bytes: 0,
            }
        });
        if let Some(entry) = entry {
            outage.count(entry);
        }
        outage.retry_at = now + RETRY_INTERVAL;
        outage.reopen = reopen;
    }

    fn resumed(&mut self, path: &Path) {
        if let Some(outage) = self.outage.take() {
            tracing::info!(
                path = %path.display(),
                dropped_entries = outage.entries,
                dropped_bytes = outage.bytes,
                after = ?outage.since.elapsed(),
                "container log writable again; entries were dropped"
            );
        }
    }
}

impl Outage {
    fn count(&mut self, entry: &[u8]) {
        self.entries += 1;
        self.bytes += entry.len() as u64;
    }
}

/// `write_all` that says how much went out before an error.
fn write_counted(w: &mut impl Write, mut buf: &[u8]) -> (usize, io::Result<()>) {
    let mut written = 0;
    while !buf.is_empty() {
        match w.write(buf) {
            Ok(0) => return (written, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                written += n;
                buf = &buf[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Err(e)),
        }
    }
    (written, Ok(()))
}

/// Opens the log for appending, 0640 (as containerd): a log holds whatever the
/// container prints, secrets included; the group is for log agents. The mode is set
/// on every open, so a file an older berth made wider is repaired when reattached.
fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(crate::layout::LOG_FILE)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(crate::layout::LOG_FILE))?;
    Ok(file)
}

/// Splits a byte stream into log entries: complete lines, and pieces of lines
/// longer than `max`.
struct Lines {
    max: usize,
    pending: Vec<u8>,
}

impl Lines {
    fn new(max: usize) -> Lines {
        Lines {
            max,
            pending: Vec::new(),
        }
    }

    /// Feeds bytes; calls `emit(partial, content)` for each entry now complete.
    fn push(&mut self, mut data: &[u8], emit: &mut impl FnMut(bool, &[u8])) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(end) if self.pending.len() + end <= self.max => {
                    self.pending.extend_from_slice(&data[..end]);
                    emit(false, strip_cr(&self.pending));
                    self.pending.clear();
                    data = &data[end + 1..];
                }
                _ => {
                    let room = self.max - self.pending.len();
                    let take = room.min(data.len());
                    self.pending.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.pending.len() == self.max {
                        emit(true, &self.pending);
                        self.pending.clear();
                    }
                }
            }
        }
    }

    /// The stream ended: an unterminated last line is a partial (`P`) entry, as
    /// the CRI format and containerd have it, so that `kubectl logs` shows no
    /// newline the program never wrote (a prompt, `printf abcd`).
    fn finish(&mut self, emit: &mut impl FnMut(bool, &[u8])) {
        if !self.pending.is_empty() {
            emit(true, &self.pending);
            self.pending.clear();
        }
    }
}

/// As the kubelet's own parser does, a line's `\r\n` ending is one newline.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Turns one stream's bytes into log entries; with no log file (the kubelet asked
/// for none) the output is read and dropped, so the container never blocks on it.
/// Nor does it block on a log the disk does not take: see [`LogFile`].
pub struct LineWriter {
    stream: Stream,
    log: Option<Arc<LogFile>>,
    lines: Lines,
}

impl LineWriter {
    pub fn new(stream: Stream, log: Option<Arc<LogFile>>) -> LineWriter {
        LineWriter {
            stream,
            log,
            lines: Lines::new(MAX_LINE),
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        let (stream, log) = (self.stream, &self.log);
        self.lines.push(data, &mut |partial, content| {
            if let Some(log) = log {
                log.append(stream, partial, content);
            }
        })
    }

    /// The stream ended: an unterminated last line is written as a partial entry.
    pub fn finish(&mut self) {
        let (stream, log) = (self.stream, &self.log);
        self.lines.finish(&mut |partial, content| {
            if let Some(log) = log {
                log.append(stream, partial, content);
            }
        })
    }
}

/// Copies one stream of a container into its log until the stream ends (the
/// container and everything holding its output have exited). Only a read error
/// ends it early: output the log does not take is dropped, never waited on.
pub async fn copy(
    mut reader: impl AsyncRead + Unpin,
    stream: Stream,
    log: Arc<LogFile>,
) -> io::Result<()> {
    let mut writer = LineWriter::new(stream, Some(log));
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            writer.finish();
            return Ok(());
        }
        writer.push(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<(bool, String)> {
        let mut out = Vec::new();
        let mut emit = |p: bool, c: &[u8]| out.push((p, String::from_utf8_lossy(c).into_owned()));
        let mut lines = Lines::new(max);
        for chunk in chunks {
            lines.push(chunk, &mut emit);
        }
        lines.finish(&mut emit);
        out
    }

    #[test]
    fn lines_split_across_chunks_and_at_the_limit() {
        assert_eq!(
            split(100, &[b"hel", b"lo\nwor", b"ld\r\n", b"tail"]),
            vec![
                (false, "hello".into()),
                (false, "world".into()),
                (true, "tail".into())
            ]
        );
        assert_eq!(
            split(4, &[b"abcdefghij\nxy\n"]),
            vec![
                (true, "abcd".into()),
                (true, "efgh".into()),
                (false, "ij".into()),
                (false, "xy".into())
            ]
        );
        // A line of exactly the limit is one full entry.
        assert_eq!(split(4, &[b"abcd\n"]), vec![(false, "abcd".into())]);
        assert_eq!(
            split(4, &[b"\n\n"]),
            vec![(false, "".into()), (false, "".into())]
        );
    }

    #[tokio::test]
    async fn copies_both_streams_in_cri_format_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pod/c/0.log");
        let log = LogFile::open(&path).unwrap();
        copy(&b"out 1\nout 2\n"[..], Stream::Stdout, log.clone())
            .await
            .unwrap();
        copy(&b"err"[..], Stream::Stderr, log.clone())
            .await
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let entries: Vec<Vec<&str>> = text.lines().map(|l| l.splitn(4, ' ').collect()).collect();
        assert_eq!(entries.len(), 3, "{text}");
        for (entry, stream) in entries.iter().zip([
            ("stdout", "F", "out 1"),
            ("stdout", "F", "out 2"),
            ("stderr", "P", "err"),
        ]) {
            assert!(entry[0].ends_with('Z') && entry[0].contains('T'), "{text}");
            assert_eq!(&entry[1..], &[stream.0, stream.1, stream.2]);
        }

        // The kubelet rotates by renaming; after a reopen new entries go to a new file.
        std::fs::rename(&path, dir.path().join("rotated")).unwrap();
        log.reopen().unwrap();
        copy(&b"after\n"[..], Stream::Stdout, log).await.unwrap();
        let fresh = std::fs::read_to_string(&path).unwrap();
        assert!(fresh.ends_with(" stdout F after\n"), "{fresh}");
        assert_eq!(fresh.lines().count(), 1);
    }

    fn entries(path: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_log_the_disk_refuses_drops_entries_and_resumes_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        // /dev/full fails every write with ENOSPC, as a full disk does.
        let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
        let log = LogFile::with_file(&path, full);
        let mut writer = LineWriter::new(Stream::Stdout, Some(log.clone()));
        for i in 0..1000 {
            writer.push(format!("line {i}\n").as_bytes());
        }
        assert_eq!(log.dropped(), 1000, "every entry dropped, none waited on");
        assert!(log.lock().outage.as_ref().unwrap().retry_at > Instant::now());

        // ReopenContainerLog during the outage: the next entry tries the new file.
        log.reopen().unwrap();
        writer.push(b"after\n");
        assert_eq!(log.dropped(), 0, "the outage is over");
        assert_eq!(entries(&path), ["after"]);
    }

    #[test]
    fn a_failing_file_is_retried_by_reopening_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, "").unwrap();
        // A handle that refuses writes (EBADF) stands for a file gone bad.
        let bad = File::open(&path).unwrap();
        let log = LogFile::with_file(&path, bad);
        log.append(Stream::Stderr, false, b"lost");
        assert_eq!(log.dropped(), 1);
        log.append(Stream::Stderr, false, b"lost too, before the retry is due");
        assert_eq!(log.dropped(), 2);
        log.lock().outage.as_mut().unwrap().retry_at = Instant::now();
        log.append(Stream::Stderr, false, b"kept");
        assert_eq!(log.dropped(), 0);
        assert_eq!(entries(&path), ["kept"]);
    }

    #[test]
    fn a_log_that_cannot_be_opened_yet_is_opened_on_a_retry() {
        let dir = tempfile::tempdir().unwrap();
        let pod = dir.path().join("pod");
        // A file where the log's directory belongs: opening fails (ENOTDIR).
        std::fs::write(&pod, "").unwrap();
        let path = pod.join("0.log");
        let log = LogFile::open_or_retry(&path);
        log.append(Stream::Stdout, false, b"lost");
        assert_eq!(log.dropped(), 1);

        std::fs::remove_file(&pod).unwrap();
        std::fs::create_dir(&pod).unwrap();
        log.lock().outage.as_mut().unwrap().retry_at = Instant::now();
        log.append(Stream::Stdout, false, b"kept");
        assert_eq!(log.dropped(), 0);
        assert_eq!(entries(&path), ["kept"]);
    }

    /// Takes `room` bytes, then fails as a full disk does.
    struct Filling {
        room: usize,
        out: Vec<u8>,
    }

    impl Write for Filling {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min(self.room).min(3);
            self.room -= n;
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_entry_cut_short_is_taken_back_whole() {
        let mut disk = Filling {
            room: 7,
            out: Vec::new(),
        };
        let (written, result) = write_counted(&mut disk, b"0123456789");
        assert_eq!((written, disk.out.as_slice()), (7, &b"0123456"[..]));
        assert!(is_out_of_space(&result.unwrap_err()));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, "whole\ncut sh").unwrap();
        let mut sink = Sink {
            file: Some(open_append(&path).unwrap()),
            outage: None,
            torn: false,
        };
        sink.take_back("cut sh".len()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "whole\n");

        // Where the cut cannot be taken back, the next entry starts a new line.
        std::fs::write(&path, "whole\ncut sh").unwrap();
        sink.torn = true;
        sink.write(b"next\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "whole\ncut sh\nnext\n"
        );
    }
}
