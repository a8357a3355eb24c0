//! The content store: blobs addressed by digest. A blob is written to `ingest/` first,
//! verified against its digest and size, and only then renamed into `blobs/sha256/`, so
//! a partial or corrupt blob is never visible. Partial downloads stay in `ingest/` and
//! resume where they stopped, until they are old enough to count as abandoned (see
//! [`ContentStore::stale_ingests`]).
//!
//! Durability: a blob's data is fsynced before its rename into `blobs/`, and the
//! directory after it, all before [`Ingest::commit`] returns and so before any
//! record names the blob. A blob file found without a record after a crash is
//! adopted only if its content still has its digest ([`ContentStore::verify_blob`]).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, IoContext, Result};

pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

/// Checks a digest is `sha256:<64 lowercase hex>` and returns the hex part.
pub fn digest_hex(digest: &str) -> Result<&str> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
        Error::InvalidArgument(format!(
            "digest {digest:?}: only sha256 digests are supported"
        ))
    })?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(Error::InvalidArgument(format!(
            "digest {digest:?}: not a sha256 digest"
        )));
    }
    Ok(hex)
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl ContentStore {
    pub fn open(dir: &Path) -> Result<ContentStore> {
        let store = ContentStore {
            blobs: dir.join("blobs/sha256"),
            ingest: dir.join("ingest"),
        };
        for d in [&store.blobs, &store.ingest] {
            fs::create_dir_all(d).context(|| format!("creating {}", d.display()))?;
        }
        Ok(store)
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.blobs.join(digest_hex(digest)?))
    }

    pub fn exists(&self, digest: &str) -> bool {
        self.blob_path(digest).map(|p| p.exists()).unwrap_or(false)
    }

    /// Starts or resumes writing the blob `digest` of `size` bytes.
    pub fn ingest(&self, digest: &str, size: u64) -> Result<Ingest> {
        let hex = digest_hex(digest)?;
        Ingest::open(self.ingest.join(hex), self.blobs.join(hex), digest, size)
    }

    /// Bytes written so far to the partial download of `digest` (0 if none).
    pub fn ingest_len(&self, digest: &str) -> u64 {
        digest_hex(digest)
            .ok()
            .and_then(|hex| fs::metadata(self.ingest.join(hex)).ok())
            .map_or(0, |meta| meta.len())
    }

    /// Writes a small blob held in memory, verifying it first.
    pub fn write_blob(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        if self.exists(digest) {
            return Ok(());
        }
        let mut ingest = self.ingest(digest, bytes.len() as u64)?;
        ingest.reset()?;
        ingest.write(bytes)?;
        ingest.commit()
    }

    /// Reads a whole blob, refusing one larger than `limit`.
    pub fn read(&self, digest: &str, limit: u64) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let file = File::open(&path).context(|| format!("opening blob {digest}"))?;
        let mut bytes = Vec::new();
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .context(|| format!("reading blob {digest}"))?;
        if bytes.len() as u64 > limit {
            return Err(Error::InvalidArgument(format!(
                "blob {digest} is larger than the limit of {limit} bytes"
            )));
        }
        Ok(bytes)
    }

    pub fn open_blob(&self, digest: &str) -> Result<File> {
        File::open(self.blob_path(digest)?).context(|| format!("opening blob {digest}"))
    }

    /// Whether the blob file's content has its digest: what recovery asks of a file
    /// it finds without a record before adopting it. Reads the whole file: call it
    /// off the executor.
    pub fn verify_blob(&self, digest: &str) -> Result<bool> {
        let mut file = self.open_blob(digest)?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).context(|| format!("reading blob {digest}"))?;
        Ok(format!("sha256:{}", hex::encode(hasher.finalize())) == digest)
    }

    /// Deletes a blob file; a missing one is fine.
    pub fn remove(&self, digest: &str) -> Result<()> {
        match fs::remove_file(self.blob_path(digest)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).context(|| format!("removing blob {digest}"))
            }
            _ => Ok(()),
        }
    }

    /// Digests of the blob files on disk.
    pub fn blob_files(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.blobs).context(|| "listing blobs".into())? {
            let entry = entry.context(|| "listing blobs".into())?;
            if let Some(name) = entry.file_name().to_str() {
                out.push(format!("sha256:{name}"));
            }
        }
        Ok(out)
    }

    /// Bytes and count of committed blobs.
    pub fn usage(&self) -> (u64, u64) {
        dir_usage(&self.blobs)
    }

    /// Bytes held by partial downloads.
    pub fn ingest_usage(&self) -> (u64, u64) {
        dir_usage(&self.ingest)
    }

    /// Names of the files in `ingest/` last written more than `max_age` ago:
    /// partial downloads nobody resumed. A download in progress writes all the
    /// time, so it is never among them.
    pub fn stale_ingests(&self, max_age: Duration) -> Result<Vec<String>> {
        let listing = || format!("listing {}", self.ingest.display());
        let mut stale = Vec::new();
        for entry in fs::read_dir(&self.ingest).context(listing)? {
            let entry = entry.context(listing)?;
            let Ok(meta) = entry.metadata() else {
                continue; // gone meanwhile
            };
            if !meta.is_dir()
                && is_older_than(&meta, max_age)
                && let Some(name) = entry.file_name().to_str()
            {
                stale.push(name.to_string());
            }
        }
        Ok(stale)
    }

    /// Removes the partial download `name` (from [`ContentStore::stale_ingests`]) if it
    /// is still older than `max_age`; returns whether it did.
    pub fn remove_stale_ingest(&self, name: &str, max_age: Duration) -> Result<bool> {
        let path = self.ingest.join(name);
        match fs::symlink_metadata(&path) {
            Ok(meta) if !meta.is_dir() && is_older_than(&meta, max_age) => {}
            _ => return Ok(false),
        }
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).context(|| format!("removing {}", path.display()))
            }
            _ => Ok(true),
        }
    }
}

/// Makes a rename or creation in `path`'s directory durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Whether a file was last modified more than `age` ago (a time in the future is not).
fn is_older_than(meta: &fs::Metadata, age: Duration) -> bool {
    meta.modified()
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .is_some_and(|elapsed| elapsed > age)
}

fn dir_usage(dir: &Path) -> (u64, u64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return (0, 0);
    };
    entries
        .filter_map(|e| e.ok()?.metadata().ok())
        .fold((0, 0), |(bytes, n), m| (bytes + m.len(), n + 1))
}

/// A blob being written: hashed as it goes, verified on commit.
pub struct Ingest {
    file: File,
    path: PathBuf,
    target: PathBuf,
    digest: String,
    size: u64,
    hasher: Sha256,
    offset: u64,
}

impl Ingest {
    fn open(path: PathBuf, target: PathBuf, digest: &str, size: u64) -> Result<Ingest> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(&path)
            .context(|| format!("opening ingest for {digest}"))?;
        // Resume: re-hash what an earlier attempt wrote. A partial file longer than the
        // blob cannot be right; start over.
        let mut hasher = Sha256::new();
        let mut offset = 0;
        let existing = file
            .metadata()
            .context(|| format!("ingest {digest}"))?
            .len();
        if existing > size {
            file.set_len(0)
                .context(|| format!("truncating ingest {digest}"))?;
        } else if existing > 0 {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = file
                    .read(&mut buf)
                    .context(|| format!("reading ingest {digest}"))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                offset += n as u64;
            }
        }
        Ok(Ingest {
            file,
            path,
            target,
            digest: digest.to_string(),
            size,
            hasher,
            offset,
        })
    }

    /// Bytes already written (where a resumed download starts).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Throws away what was written: the source did not honour a range request.
    pub fn reset(&mut self) -> Result<()> {
        if self.offset > 0 {
            self.file
                .set_len(0)
                .context(|| format!("truncating ingest {}", self.digest))?;
            self.hasher = Sha256::new();
            self.offset = 0;
        }
        Ok(())
    }

    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.offset + data.len() as u64 > self.size {
            return Err(Error::DataLoss(format!(
                "blob {} is larger than its descriptor's size of {} bytes",
                self.digest, self.size
            )));
        }
        self.file
            .write_all(data)
            .context(|| format!("writing ingest {}", self.digest))?;
        self.hasher.update(data);
        self.offset += data.len() as u64;
        Ok(())
    }

    /// Throws the partial blob away: its content can never verify.
    pub fn discard(self) {
        let _ = fs::remove_file(&self.path);
    }

    /// Verifies size and digest, then makes the blob visible. A blob that fails is
    /// deleted from ingest, so the next attempt starts clean.
    pub fn commit(self) -> Result<()> {
        let actual = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        let failure = if self.offset != self.size {
            Some(format!(
                "blob {} has {} bytes, its descriptor says {}",
                self.digest, self.offset, self.size
            ))
        } else if actual != self.digest {
            Some(format!(
                "blob {} failed verification: its content has digest {actual}",
                self.digest
            ))
        } else {
            None
        };
        if let Some(message) = failure {
            let _ = fs::remove_file(&self.path);
            return Err(Error::DataLoss(message));
        }
        // Data first, then the name: a crash can leave the blob missing, never a
        // name in `blobs/` whose data did not reach the disk.
        self.file
            .sync_all()
            .context(|| format!("syncing blob {}", self.digest))?;
        fs::rename(&self.path, &self.target)
            .context(|| format!("committing blob {}", self.digest))?;
        sync_parent(&self.target)
            .context(|| format!("syncing the directory of blob {}", self.digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_is_visible_only_after_verification() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let data = b"hello world";
        let digest = sha256_digest(data);
        let mut ingest = store.ingest(&digest, data.len() as u64).unwrap();
        ingest.write(&data[..5]).unwrap();
        assert!(!store.exists(&digest));
        ingest.write(&data[5..]).unwrap();
        ingest.commit().unwrap();
        assert!(store.exists(&digest));
        assert_eq!(store.read(&digest, 100).unwrap(), data);
        assert!(store.read(&digest, 3).is_err());
    }

    #[test]
    fn partial_ingest_resumes_with_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let data = vec![7u8; 200_000];
        let digest = sha256_digest(&data);
        {
            let mut ingest = store.ingest(&digest, data.len() as u64).unwrap();
            ingest.write(&data[..123_456]).unwrap();
            // Dropped without commit, as a killed daemon would leave it.
        }
        assert_eq!(store.ingest_len(&digest), 123_456);
        let mut ingest = store.ingest(&digest, data.len() as u64).unwrap();
        assert_eq!(ingest.offset(), 123_456);
        ingest.write(&data[123_456..]).unwrap();
        ingest.commit().unwrap();
        assert_eq!(store.read(&digest, 1 << 20).unwrap(), data);
        assert_eq!(store.ingest_usage().1, 0);
        assert_eq!(store.ingest_len(&digest), 0);
    }

    #[test]
    fn wrong_content_is_never_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let digest = sha256_digest(b"right");
        let mut ingest = store.ingest(&digest, 5).unwrap();
        ingest.write(b"wrong").unwrap();
        let err = ingest.commit().unwrap_err().to_string();
        assert!(err.contains(&digest), "{err}");
        assert!(!store.exists(&digest));
        assert_eq!(store.ingest_usage().1, 0);

        let mut ingest = store.ingest(&digest, 5).unwrap();
        assert!(ingest.write(b"toolong").is_err());
    }

    #[test]
    fn only_old_partial_downloads_are_stale() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let day = Duration::from_secs(24 * 3600);
        let old = sha256_digest(b"old");
        store.ingest(&old, 10).unwrap().write(b"ol").unwrap();
        let fresh = sha256_digest(b"fresh");
        store.ingest(&fresh, 10).unwrap().write(b"fr").unwrap();
        let old_name = digest_hex(&old).unwrap().to_string();
        let two_days_ago = SystemTime::now() - 2 * day;
        File::options()
            .write(true)
            .open(dir.path().join("ingest").join(&old_name))
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
        assert_eq!(
            store.stale_ingests(day).unwrap(),
            std::slice::from_ref(&old_name)
        );
        assert!(store.remove_stale_ingest(&old_name, day).unwrap());
        assert!(!store.remove_stale_ingest(&old_name, day).unwrap());
        let fresh_name = digest_hex(&fresh).unwrap();
        assert!(!store.remove_stale_ingest(fresh_name, day).unwrap());
        assert_eq!(store.ingest(&fresh, 10).unwrap().offset(), 2);
    }

    #[test]
    fn a_blob_file_is_verified_against_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let digest = sha256_digest(b"content");
        store.write_blob(&digest, b"content").unwrap();
        assert!(store.verify_blob(&digest).unwrap());
        // What a crash can leave of a blob whose data never reached the disk.
        fs::write(store.blob_path(&digest).unwrap(), [0u8; 7]).unwrap();
        assert!(!store.verify_blob(&digest).unwrap());
    }

    #[test]
    fn digests_are_validated() {
        assert!(digest_hex("sha512:abc").is_err());
        assert!(digest_hex("sha256:../../etc/passwd").is_err());
        assert!(digest_hex(&sha256_digest(b"x")).is_ok());
    }
}
