//! Direct file I/O for the `file` storage: whole-object puts and gets without OpenDAL's
//! chunked asynchronous file layer, and a durability barrier instead of a sync per
//! object.
//!
//! A put writes the object to a temporary file under [`FS_TMP_DIR`] and renames it into
//! place, so a crash never leaves a half-written object under its key. Its bytes go
//! straight to the device (`O_DIRECT`), in pieces copied into one reused aligned buffer
//! (`O_DIRECT` wants addresses, lengths and offsets aligned to the device's blocks;
//! 4 KiB covers every device): written through the page cache, a 4 MiB block cost the
//! client a copy into freshly allocated page-cache memory and then the kernel's
//! writeback, and on this project's test machines that ran at 180-1,200 MiB/s from
//! one run to the next where direct writes of the same blocks ran at 640-1,170. An
//! object's last bytes past the last aligned 4 KiB, and objects smaller than
//! [`DIRECT_MIN`], are written through the page cache; a file system that refuses
//! `O_DIRECT` (tmpfs, some network file systems) gets every put that way, after one log
//! line. Either way a put does not fsync: [`LocalFiles::sync`] is the barrier that makes
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

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

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
    direct: Arc<DirectWrites>,
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
            direct: Arc::new(DirectWrites::new("objects")),
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
        let direct = self.direct.clone();
        blocking(move || write_then_rename(&tmp, &path, &data, &direct)).await?;
        self.stored.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Reads object `key`, or `range` of it cut at its end.
    pub(crate) async fn get(&self, key: &str, range: Option<Range<u64>>) -> io::Result<Bytes> {
        let path = self.root.join(key);
        blocking(move || read_range(&path, range)).await
    }

    /// Deletes objects `keys` (already validated) in one blocking task; missing ones
    /// are fine. The first error is returned after all were tried.
    pub(crate) async fn delete_many(&self, keys: Vec<String>) -> io::Result<()> {
        let root = self.root.clone();
        blocking(move || {
            let mut first = None;
            for k in keys {
                match std::fs::remove_file(root.join(&k)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        first.get_or_insert(io::Error::new(e.kind(), format!("{k}: {e}")));
                    }
                }
            }
            first.map_or(Ok(()), Err)
        })
        .await
    }

    /// The entries of directory `dir` (a key prefix ending in `/`, or empty for the
    /// root), read in one blocking task: `(path, is_dir, size)`, a directory's path
    /// ending in `/`. OpenDAL stats each entry in a task of its own; a listing of a
    /// million objects spent most of its time handing those tasks around.
    pub(crate) async fn list_dir(&self, dir: &str) -> io::Result<Vec<(String, bool, u64)>> {
        let (root, dir) = (self.root.clone(), dir.to_string());
        blocking(move || {
            let entries = match std::fs::read_dir(root.join(&dir)) {
                Ok(e) => e,
                // A directory removed since its parent was listed holds nothing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            let mut out = Vec::new();
            for e in entries {
                let e = e?;
                let Some(name) = e.file_name().to_str().map(str::to_string) else {
                    continue; // not a key: keys are UTF-8
                };
                let md = match e.metadata() {
                    Ok(md) => md,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                if md.is_dir() {
                    out.push((format!("{dir}{name}/"), true, 0));
                } else if md.is_file() {
                    out.push((format!("{dir}{name}"), false, md.len()));
                }
            }
            Ok(out)
        })
        .await
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

/// Alignment of `O_DIRECT` addresses, lengths and file offsets.
const DIRECT_ALIGN: usize = 4096;
/// Objects shorter than this are written through the page cache: a direct write would
/// wait for the device for a few bytes, and small files are what the page cache is for.
pub(crate) const DIRECT_MIN: usize = 64 << 10;
/// The largest piece written at once; the size of each aligned buffer.
const DIRECT_PIECE: usize = 1 << 20;
/// Aligned buffers kept for reuse; more concurrent puts allocate and free their own.
const DIRECT_POOL: usize = 8;

/// Writing new files with `O_DIRECT` (see the module documentation): whether the file
/// system takes it, and the aligned buffers the bytes are copied through. The file
/// store uses one for its objects; the disk cache one per cache directory, for cached
/// and staged blocks.
pub struct DirectWrites {
    enabled: AtomicBool,
    /// Each holds `DIRECT_PIECE` aligned bytes somewhere inside (see [`aligned`]).
    pool: Mutex<Vec<Vec<u8>>>,
    /// What the files are, for the one log line of a refusal.
    what: &'static str,
}

impl DirectWrites {
    /// `what` names the files in the log line of a refusal ("objects", "cached blocks").
    pub fn new(what: &'static str) -> Self {
        Self {
            enabled: AtomicBool::new(true),
            pool: Mutex::new(Vec::new()),
            what,
        }
    }

    /// Writes `data` at the start of a new, empty file `path` that `open` creates (told
    /// whether to ask for `O_DIRECT`): directly when `data` is large enough and the file
    /// system takes it, through the page cache otherwise, and again that way after a
    /// refusal. Returns the file positioned after `data`, with `O_DIRECT` off, for the
    /// caller to append to.
    pub fn write_new(
        &self,
        path: &Path,
        open: impl Fn(bool) -> io::Result<File>,
        data: &[u8],
    ) -> io::Result<File> {
        if data.len() >= DIRECT_MIN && self.enabled.load(Ordering::Relaxed) {
            match open(true) {
                Ok(mut f) => match self.write(&mut f, data) {
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        // Start again on the same file, through the page cache.
                        self.refused(&e);
                        stop_direct(&f)?;
                        f.set_len(0)?;
                        f.seek(SeekFrom::Start(0))?;
                        f.write_all(data)?;
                        return Ok(f);
                    }
                    r => return r.map(|()| f),
                },
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.refused(&e);
                    // Linux checks O_DIRECT after creating the file: an exclusive
                    // create would now find it there.
                    let _ = fs::remove_file(path);
                }
                Err(e) => return Err(e),
            }
        }
        let mut f = open(false)?;
        f.write_all(data)?;
        Ok(f)
    }

    /// Writes `data` to `f` (open with `O_DIRECT`, empty): the aligned part directly,
    /// the rest after turning `O_DIRECT` off (off at the end in any case).
    fn write(&self, f: &mut File, data: &[u8]) -> io::Result<()> {
        let aligned_len = data.len() / DIRECT_ALIGN * DIRECT_ALIGN;
        let mut buf = self
            .pool
            .lock()
            .pop()
            .unwrap_or_else(|| vec![0; DIRECT_PIECE + DIRECT_ALIGN]);
        let written = data[..aligned_len]
            .chunks(DIRECT_PIECE)
            .try_for_each(|piece| {
                let window = &mut aligned(&mut buf)[..piece.len()];
                window.copy_from_slice(piece);
                f.write_all(window)
            });
        let mut pool = self.pool.lock();
        if pool.len() < DIRECT_POOL {
            pool.push(buf);
        }
        drop(pool);
        written?;
        stop_direct(f)?;
        f.write_all(&data[aligned_len..])
    }

    /// Turns direct writes off for good after a file system refused them.
    fn refused(&self, e: &io::Error) {
        if self.enabled.swap(false, Ordering::Relaxed) {
            tracing::info!(
                "a file system refuses O_DIRECT ({e}); {} are written through the page cache",
                self.what
            );
        }
    }
}

/// The `DIRECT_PIECE` bytes of `buf` that start on an aligned address.
fn aligned(buf: &mut [u8]) -> &mut [u8] {
    let skip = buf.as_ptr().align_offset(DIRECT_ALIGN);
    &mut buf[skip..skip + DIRECT_PIECE]
}

/// Turns `O_DIRECT` off on an open file, for writes that are not aligned.
fn stop_direct(f: &File) -> io::Result<()> {
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on a descriptor `f` keeps open; F_GETFL/F_SETFL touch no memory.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Creates (truncating) the temporary file of a put, with `O_DIRECT` when asked.
fn create_tmp(tmp: &Path, direct: bool) -> io::Result<File> {
    let open = || {
        let mut o = OpenOptions::new();
        o.write(true).create(true).truncate(true);
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        o.open(tmp)
    };
    match open() {
        // The temporary directory was removed under a running client.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(tmp.parent().unwrap_or(Path::new(".")))?;
            open()
        }
        r => r,
    }
}

fn write_then_rename(
    tmp: &Path,
    path: &Path,
    data: &[u8],
    direct: &DirectWrites,
) -> io::Result<()> {
    let written = (|| {
        direct.write_new(tmp, |d| create_tmp(tmp, d), data)?;
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

    /// Objects large enough to go direct, with and without a tail past the last
    /// aligned 4 KiB and longer than one aligned piece, read back exactly; so do they
    /// once direct writes are off (as after a file system refused them).
    #[tokio::test]
    async fn direct_puts_read_back_with_any_tail() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalFiles::new(dir.path());
        let sizes = [
            DIRECT_MIN,
            DIRECT_MIN + 1,
            DIRECT_PIECE * 2 + DIRECT_ALIGN * 3 + 123,
            4 << 20,
        ];
        for round in 0..2 {
            for (i, &size) in sizes.iter().enumerate() {
                let data: Vec<u8> = (0..size).map(|b| (b * 7 + i + round) as u8).collect();
                let key = format!("r{round}/o{i}");
                files.put(&key, Bytes::from(data.clone())).await.unwrap();
                assert_eq!(files.get(&key, None).await.unwrap(), data, "{key}");
                let mid = size as u64 / 3;
                assert_eq!(
                    files.get(&key, Some(mid..mid + 5000)).await.unwrap(),
                    data[mid as usize..mid as usize + 5000],
                );
            }
            if round == 0 && !files.direct.enabled.load(Ordering::Relaxed) {
                eprintln!(
                    "this file system refuses O_DIRECT: both rounds went through the page cache"
                );
            }
            files.direct.enabled.store(false, Ordering::Relaxed);
        }
        assert_eq!(fs::read_dir(files.tmp_dir()).unwrap().count(), 0);
    }

    /// A file system that refuses `O_DIRECT` at open, after creating the file as Linux
    /// does: the write goes through the page cache into a file created afresh, and
    /// later writes do not try again.
    #[test]
    fn a_refused_direct_open_falls_back_to_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let direct = DirectWrites::new("test files");
        let tries = std::cell::Cell::new(0);
        let open = |odirect: bool| {
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            if odirect {
                tries.set(tries.get() + 1);
                drop(f);
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            Ok(f)
        };
        let data = vec![7u8; DIRECT_MIN * 2];
        for _ in 0..2 {
            direct.write_new(&path, open, &data).unwrap();
            assert_eq!(fs::read(&path).unwrap(), data);
            fs::remove_file(&path).unwrap();
        }
        assert_eq!(tries.get(), 1, "O_DIRECT was asked again after a refusal");
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
