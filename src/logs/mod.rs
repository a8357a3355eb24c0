//! Container logs in the CRI format the kubelet reads:
//! `<RFC3339Nano time> <stdout|stderr> <P|F> <content>\n`, one entry per line of
//! output; lines longer than the limit are split into partial (`P`) entries ending
//! with a full (`F`) one. Both streams of a container append to one file, which
//! `ReopenContainerLog` reopens after the kubelet rotated it.

mod time;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};

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

/// A container's log file, shared by its stdout and stderr copiers.
pub struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl LogFile {
    pub fn open(path: &Path) -> io::Result<Arc<LogFile>> {
        if let Some(dir) = path.parent() {
            crate::layout::shared_dir_all(dir)?;
        }
        Ok(Arc::new(LogFile {
            path: path.to_path_buf(),
            file: Mutex::new(open_append(path)?),
        }))
    }

    /// Opens the path again: after a rotation the old file was renamed away and
    /// new entries must go to a new file at the same path.
    pub fn reopen(&self) -> io::Result<()> {
        let fresh = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// Appends one entry with a single write, so entries of the two streams never
    /// interleave within a line. Appends go to the page cache; they do not block
    /// the executor the way an fsync would.
    fn append(&self, stream: Stream, partial: bool, content: &[u8]) -> io::Result<()> {
        let mut entry = Vec::with_capacity(content.len() + 48);
        entry.extend_from_slice(rfc3339_nano(std::time::SystemTime::now()).as_bytes());
        entry.push(b' ');
        entry.extend_from_slice(stream.as_str().as_bytes());
        entry.extend_from_slice(if partial { b" P " } else { b" F " });
        entry.extend_from_slice(content);
        entry.push(b'\n');
        self.file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(&entry)
    }
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
    fn push(
        &mut self,
        mut data: &[u8],
        emit: &mut impl FnMut(bool, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(end) if self.pending.len() + end <= self.max => {
                    self.pending.extend_from_slice(&data[..end]);
                    emit(false, strip_cr(&self.pending))?;
                    self.pending.clear();
                    data = &data[end + 1..];
                }
                _ => {
                    let room = self.max - self.pending.len();
                    let take = room.min(data.len());
                    self.pending.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.pending.len() == self.max {
                        emit(true, &self.pending)?;
                        self.pending.clear();
                    }
                }
            }
        }
        Ok(())
    }

    /// The stream ended: an unterminated last line is still a whole entry.
    fn finish(&mut self, emit: &mut impl FnMut(bool, &[u8]) -> io::Result<()>) -> io::Result<()> {
        if !self.pending.is_empty() {
            emit(false, strip_cr(&self.pending))?;
            self.pending.clear();
        }
        Ok(())
    }
}

/// As the kubelet's own parser does, a line's `\r\n` ending is one newline.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Turns one stream's bytes into log entries; with no log file (the kubelet asked
/// for none) the output is read and dropped, so the container never blocks on it.
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

    pub fn push(&mut self, data: &[u8]) -> io::Result<()> {
        let (stream, log) = (self.stream, &self.log);
        self.lines.push(data, &mut |partial, content| match log {
            Some(log) => log.append(stream, partial, content),
            None => Ok(()),
        })
    }

    /// The stream ended: an unterminated last line is written as a whole entry.
    pub fn finish(&mut self) -> io::Result<()> {
        let (stream, log) = (self.stream, &self.log);
        self.lines.finish(&mut |partial, content| match log {
            Some(log) => log.append(stream, partial, content),
            None => Ok(()),
        })
    }
}

/// Copies one stream of a container into its log until the stream ends (the
/// container and everything holding its output have exited). The reader is not
/// read faster than the file is written, so a slow disk slows the container
/// rather than losing output.
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
            return writer.finish();
        }
        writer.push(&buf[..n])?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<(bool, String)> {
        let mut out = Vec::new();
        let mut emit = |p: bool, c: &[u8]| {
            out.push((p, String::from_utf8_lossy(c).into_owned()));
            Ok(())
        };
        let mut lines = Lines::new(max);
        for chunk in chunks {
            lines.push(chunk, &mut emit).unwrap();
        }
        lines.finish(&mut emit).unwrap();
        out
    }

    #[test]
    fn lines_split_across_chunks_and_at_the_limit() {
        assert_eq!(
            split(100, &[b"hel", b"lo\nwor", b"ld\r\n", b"tail"]),
            vec![
                (false, "hello".into()),
                (false, "world".into()),
                (false, "tail".into())
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
        for (entry, (stream, content)) in
            entries
                .iter()
                .zip([("stdout", "out 1"), ("stdout", "out 2"), ("stderr", "err")])
        {
            assert!(entry[0].ends_with('Z') && entry[0].contains('T'), "{text}");
            assert_eq!(&entry[1..], &[stream, "F", content]);
        }

        // The kubelet rotates by renaming; after a reopen new entries go to a new file.
        std::fs::rename(&path, dir.path().join("rotated")).unwrap();
        log.reopen().unwrap();
        copy(&b"after\n"[..], Stream::Stdout, log).await.unwrap();
        let fresh = std::fs::read_to_string(&path).unwrap();
        assert!(fresh.ends_with(" stdout F after\n"), "{fresh}");
        assert_eq!(fresh.lines().count(), 1);
    }
}
