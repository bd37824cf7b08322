//! Direct file I/O for the `file` storage: whole-object puts and gets without OpenDAL's
//! chunked asynchronous file layer, and a durability barrier instead of a sync per
//! object.
//!
//! A put writes the object to a temporary file under [`FS_TMP_DIR`] and renames it into
//! place, so a crash never leaves a half-written object under its key. It does not
//! fsync: like every file written on a local file system, a new object sits in the page
//! cache until the kernel writes it back. [`LocalFiles::sync`] is the barrier that makes
//! every object put so far durable: one `syncfs(2)` of the file system holding the
//! bucket. The data path calls it (through [`crate::ObjectStore::sync`]) after a slice's
//! blocks are stored and before the slice is committed to metadata, so metadata never
//! names an object that a power loss could take back; and a sequential writer pays one
//! sync per commit instead of one per block (OpenDAL's writer fsyncs every object, which
//! cost a quarter to a third of the disk's write bandwidth in `bench/seq-io.sh`).
//!
//! Barriers coalesce: a caller's puts are covered by any `syncfs` that starts after
//! they completed, so concurrent commits share one, and a caller waits for at most the
//! one running plus its own.
//!
//! A get opens the file and reads the range into a buffer of its exact length: one copy
//! from the page cache, where OpenDAL read in chunks and joined them.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

/// Directory under the root of a file store where an object is written before it is
/// renamed into place.
pub(crate) const FS_TMP_DIR: &str = ".nectar-tmp";

/// The objects of a local directory, read and written with plain file calls.
pub(crate) struct LocalFiles {
    root: PathBuf,
    tmp: PathBuf,
    /// Puts completed so far.
    stored: AtomicU64,
    /// How many of them the last finished barrier covered; held while one runs.
    synced: tokio::sync::Mutex<u64>,
    /// Makes temporary names unique within the process; a random prefix makes them
    /// unique among processes sharing the directory (PIDs repeat across containers).
    tmp_seq: AtomicU64,
    tmp_prefix: u64,
}

impl LocalFiles {
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            tmp: root.join(FS_TMP_DIR),
            stored: AtomicU64::new(0),
            synced: tokio::sync::Mutex::new(0),
            tmp_seq: AtomicU64::new(0),
            tmp_prefix: rand::random(),
        }
    }

    pub(crate) fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Writes `data` as object `key` (already validated), replacing any older one.
    pub(crate) async fn put(&self, key: &str, data: Bytes) -> io::Result<()> {
        let path = self.root.join(key);
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(format!("{:016x}-{seq}", self.tmp_prefix));
        blocking(move || write_then_rename(&tmp, &path, &data)).await?;
        self.stored.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Reads object `key`, or `range` of it cut at its end.
    pub(crate) async fn get(&self, key: &str, range: Option<Range<u64>>) -> io::Result<Bytes> {
        let path = self.root.join(key);
        blocking(move || read_range(&path, range)).await
    }

    /// Makes every object whose put completed before this call durable.
    pub(crate) async fn sync(&self) -> io::Result<()> {
        let target = self.stored.load(Ordering::Acquire);
        let mut synced = self.synced.lock().await;
        if *synced >= target {
            return Ok(());
        }
        // Everything counted here completed before the syncfs below starts.
        let covered = self.stored.load(Ordering::Acquire);
        let root = self.root.clone();
        blocking(move || syncfs(&root)).await?;
        *synced = covered;
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("file I/O task: {e}")))?
}

fn write_then_rename(tmp: &Path, path: &Path, data: &[u8]) -> io::Result<()> {
    let written = (|| {
        let mut f = match File::create(tmp) {
            // The temporary directory was removed under a running client.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(tmp.parent().unwrap_or(Path::new(".")))?;
                File::create(tmp)?
            }
            r => r?,
        };
        f.write_all(data)?;
        drop(f);
        match fs::rename(tmp, path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
                fs::rename(tmp, path)
            }
            r => r,
        }
    })();
    if written.is_err() {
        let _ = fs::remove_file(tmp);
    }
    written
}

fn read_range(path: &Path, range: Option<Range<u64>>) -> io::Result<Bytes> {
    let mut f = File::open(path)?;
    let size = f.metadata()?.len();
    let (start, end) = match range {
        Some(r) => (r.start, r.end.min(size)),
        None => (0, size),
    };
    let len = end.saturating_sub(start);
    if start > 0 {
        f.seek(SeekFrom::Start(start))?;
    }
    // Sized by the file, not by the range asked (which may reach far past the end);
    // `read_to_end` fills the spare capacity without zeroing it first.
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    f.take(len).read_to_end(&mut buf)?;
    Ok(Bytes::from(buf))
}

fn syncfs(dir: &Path) -> io::Result<()> {
    let f = File::open(dir)?;
    // SAFETY: syncfs only reads the descriptor, which `f` keeps open for the call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_ranges_and_sync() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalFiles::new(dir.path());
        files
            .put("a/b/c", Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        assert_eq!(&files.get("a/b/c", None).await.unwrap()[..], b"0123456789");
        assert_eq!(&files.get("a/b/c", Some(2..5)).await.unwrap()[..], b"234");
        // Cut at the end, as every store does.
        assert_eq!(&files.get("a/b/c", Some(8..20)).await.unwrap()[..], b"89");
        assert_eq!(
            &files.get("a/b/c", Some(4..u64::MAX)).await.unwrap()[..],
            b"456789"
        );
        assert!(files.get("a/b/c", Some(20..30)).await.unwrap().is_empty());
        assert_eq!(
            files.get("a/b/d", None).await.unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        // Replacing an object leaves no temporary file behind.
        files.put("a/b/c", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(&files.get("a/b/c", None).await.unwrap()[..], b"x");
        assert_eq!(fs::read_dir(files.tmp_dir()).unwrap().count(), 0);
        files.sync().await.unwrap();
        assert_eq!(*files.synced.lock().await, 2);
        // Nothing new: no second syncfs.
        files.sync().await.unwrap();
        assert_eq!(*files.synced.lock().await, 2);
    }

    #[tokio::test]
    async fn a_removed_temporary_directory_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalFiles::new(dir.path());
        assert!(!files.tmp_dir().exists());
        files.put("k", Bytes::from_static(b"v")).await.unwrap();
        fs::remove_dir(files.tmp_dir()).unwrap();
        files.put("k2", Bytes::from_static(b"v2")).await.unwrap();
        assert_eq!(&files.get("k2", None).await.unwrap()[..], b"v2");
    }
}
