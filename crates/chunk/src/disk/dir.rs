//! One cache directory: its files, its index, its room, and its health.
//!
//! Blocks live under `<dir>/<volume UUID>/raw/` at their object keys, written to a
//! temporary name and renamed, mode 0600, so a reader never sees half a file under a
//! block's name. The index is rebuilt by [`CacheDir::scan`] in the background when a
//! client starts; until it is done a miss in the index still tries the file, so the
//! first reads after a restart hit the cache without waiting for the scan.
//!
//! Room: before a block is written, blocks are evicted until the cache stays within its
//! size (down to 95% of it, so eviction runs in batches, not per block) and the disk
//! keeps `free_space_ratio` of its space and inodes free. A disk that is still short
//! (policy `none`, or space taken by others) is *full*: writes are skipped, reads go on.
//! A disk that fails (any I/O error but a missing file or a full disk) is *failed*: the
//! directory is out of use for reads and writes, and readers go to object storage,
//! until a probe (every 30 s, [`CacheDir::probe_again`]) can write there again. Each
//! change of state is one log line, never one per block.

use super::file::{self, ReadError, VerifyChecksum};
use super::index::{now_secs, BlockId, Eviction, Index};
use bytes::Bytes;
use nectar_object::DirectWrites;
use parking_lot::Mutex;
use std::fs::{self, DirBuilder, File};
use std::io::{self, Write};
use std::ops::{ControlFlow, Range};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Temporary files older than this found by a scan are leftovers of a crash (a live
/// writer, maybe another client sharing the directory, finishes within seconds).
const STALE_TMP: Duration = Duration::from_secs(600);
/// Marks temporary files: `<key>.tmp.<pid>.<n>`.
const TMP_MARK: &str = ".tmp.";

/// Settings of one directory (the cache's size is split evenly among directories).
#[derive(Debug, Clone)]
pub(crate) struct DirConfig {
    pub(crate) capacity: u64,
    pub(crate) free_space_ratio: f64,
    pub(crate) eviction: Eviction,
    pub(crate) verify: VerifyChecksum,
    pub(crate) hash_prefix: bool,
}

pub(crate) struct CacheDir {
    /// `<dir>/<uuid>/raw`.
    root: PathBuf,
    cfg: DirConfig,
    index: Mutex<Index>,
    /// The background scan has put every file found into the index.
    scanned: AtomicBool,
    full: AtomicBool,
    pub(super) failed: AtomicBool,
    /// For unique temporary names.
    seq: AtomicU64,
    direct: DirectWrites,
}

fn tmp_name(path: &Path, seq: u64) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!("{TMP_MARK}{}.{seq}", std::process::id()));
    PathBuf::from(s)
}

impl CacheDir {
    /// The directory for `root` (`<dir>/<uuid>/raw`), created if missing (mode 0700)
    /// and checked writable. An error says what is wrong with it.
    pub(crate) fn open(root: PathBuf, cfg: DirConfig) -> io::Result<Self> {
        probe(&root)?;
        Ok(Self {
            root,
            cfg,
            index: Mutex::new(Index::default()),
            scanned: AtomicBool::new(false),
            full: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            seq: AtomicU64::new(0),
            direct: DirectWrites::new("cached blocks"),
        })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn in_use(&self) -> bool {
        !self.failed.load(Ordering::Relaxed)
    }

    /// Blocks and bytes held.
    pub(crate) fn usage(&self) -> (usize, u64) {
        let ix = self.index.lock();
        (ix.len(), ix.used())
    }

    fn file_len(&self, id: &BlockId) -> u64 {
        file::file_len(id.2 as usize)
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn key(&self, id: &BlockId) -> String {
        crate::block_key(id.0, id.1, id.2, self.cfg.hash_prefix)
    }

    /// Takes the directory out of use after an I/O error (logged once).
    pub(super) fn fail(&self, what: &str, e: &io::Error) {
        if !self.failed.swap(true, Ordering::Relaxed) {
            tracing::error!(
                "cache directory {} failed ({what}: {e}); it is out of use until a probe finds it working again, blocks are read from object storage",
                self.root.display()
            );
        }
    }

    /// Brings a failed directory back into use if it can be written again (a disk
    /// replaced or remounted, a directory an operator recreated): its index is rebuilt
    /// from what is on disk now. Returns whether the directory is in use.
    pub(crate) fn probe_again(&self) -> bool {
        if self.in_use() {
            return true;
        }
        if probe(&self.root).is_err() {
            return false;
        }
        *self.index.lock() = Index::default();
        self.scanned.store(false, Ordering::Release);
        self.failed.store(false, Ordering::Relaxed);
        tracing::info!(
            "cache directory {} works again; it is back in use",
            self.root.display()
        );
        self.scan();
        self.in_use()
    }

    fn set_full(&self, full: bool, why: &str) {
        if self.full.swap(full, Ordering::Relaxed) != full {
            if full {
                tracing::warn!(
                    "cache directory {} is full ({why}); no new blocks are cached there until room frees up",
                    self.root.display()
                );
            } else {
                tracing::info!("cache directory {} has room again", self.root.display());
            }
        }
    }

    /// Bytes `range` of block `id` (key `key`), or `None` if it is not here, damaged
    /// (then dropped), or the directory is out of use.
    pub(crate) fn get(&self, key: &str, id: BlockId, range: Range<usize>) -> Option<Bytes> {
        if !self.may_have(&id) {
            return None;
        }
        let result = File::open(self.path(key))
            .map_err(ReadError::from)
            .and_then(|f| file::read(&f, id.2 as usize, range, self.cfg.verify));
        match result {
            Ok(data) => {
                let mut ix = self.index.lock();
                if !ix.contains(&id) {
                    // Found before the scan got to it.
                    ix.insert(id, self.file_len(&id), now_secs());
                }
                ix.touch(&id, now_secs());
                Some(data)
            }
            Err(ReadError::Missing) => {
                self.index.lock().remove(&id, self.file_len(&id));
                None
            }
            Err(ReadError::Corrupt(why)) => {
                tracing::warn!(
                    "cached block {key} in {} is damaged ({why}): dropped, reading it from object storage",
                    self.root.display()
                );
                self.remove(key, id);
                None
            }
            Err(ReadError::Io(e)) => {
                self.fail(&format!("reading {key}"), &e);
                None
            }
        }
    }

    pub(crate) fn contains(&self, id: &BlockId) -> bool {
        self.in_use() && self.index.lock().contains(id)
    }

    /// Whether a [`CacheDir::get`] of block `id` may find it: false only when the
    /// index, complete, says it is not here (a miss then costs no system call).
    pub(crate) fn may_have(&self, id: &BlockId) -> bool {
        self.in_use() && (!self.scanned.load(Ordering::Acquire) || self.index.lock().contains(id))
    }

    /// Whether block `id` is here: in the index, or, before the scan is done, a file
    /// of the right length (then indexed).
    pub(crate) fn holds(&self, key: &str, id: BlockId) -> bool {
        if !self.may_have(&id) {
            return false;
        }
        if self.contains(&id) {
            return true;
        }
        let len = self.file_len(&id);
        let found = fs::metadata(self.path(key)).is_ok_and(|m| m.len() == len);
        if found {
            self.index.lock().insert(id, len, now_secs());
        }
        found
    }

    /// Stores block `id` (key `key`) unless it is here already, making room first.
    pub(crate) fn put(&self, key: &str, id: BlockId, data: &Bytes) {
        if !self.in_use() || self.index.lock().contains(&id) {
            return;
        }
        let need = self.file_len(&id);
        if !self.make_room(need) {
            return;
        }
        match self.write(key, data) {
            Ok(()) => {
                self.index.lock().insert(id, need, now_secs());
                self.set_full(false, "");
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                self.set_full(true, "the disk has no space left");
            }
            Err(e) => self.fail(&format!("writing {key}"), &e),
        }
    }

    fn write(&self, key: &str, data: &Bytes) -> io::Result<()> {
        let path = self.path(key);
        let tmp = tmp_name(&path, self.seq.fetch_add(1, Ordering::Relaxed));
        file::write(&path, &tmp, data, &self.direct)
    }

    /// Evicts until `need` more bytes fit in the cache's size and leave the disk its
    /// free share; false (and the directory full) if they cannot.
    fn make_room(&self, need: u64) -> bool {
        let disk_short = match disk_shortfall(&self.root, self.cfg.free_space_ratio, need) {
            Ok(short) => short,
            Err(e) => {
                self.fail("checking free space", &e);
                return false;
            }
        };
        let victims = {
            let mut ix = self.index.lock();
            let mut target = ix.used();
            if ix.used() + need > self.cfg.capacity {
                // Down to 95% so eviction runs once per many blocks.
                target = (self.cfg.capacity / 20 * 19).saturating_sub(need);
            }
            if disk_short > 0 {
                target = target.min(ix.used().saturating_sub(disk_short));
            }
            let victims = ix.evict_to(target, self.cfg.eviction, |id| self.file_len(id));
            if ix.used() > target || ix.used() + need > self.cfg.capacity {
                drop(ix);
                self.delete_files(&victims);
                let why = if disk_short > 0 {
                    format!(
                        "the disk is below its free-space ratio of {}",
                        self.cfg.free_space_ratio
                    )
                } else {
                    format!("it holds its cache size of {} MiB", self.cfg.capacity >> 20)
                };
                self.set_full(true, &why);
                return false;
            }
            victims
        };
        self.delete_files(&victims);
        true
    }

    fn delete_files(&self, ids: &[BlockId]) {
        for id in ids {
            match fs::remove_file(self.path(&self.key(id))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    self.fail("deleting an evicted block", &e);
                    return;
                }
                _ => {}
            }
        }
    }

    /// Takes the file at `from` (an uploaded staging file, in the same file system) as
    /// the cache file of block `id`; false if it cannot (the caller deletes it).
    pub(crate) fn adopt(&self, key: &str, id: BlockId, from: &Path) -> bool {
        let need = self.file_len(&id);
        if !self.in_use() || self.index.lock().contains(&id) || !self.make_room(need) {
            return false;
        }
        let path = self.path(key);
        let moved = path
            .parent()
            .map_or(Ok(()), |p| {
                DirBuilder::new().recursive(true).mode(0o700).create(p)
            })
            .and_then(|()| fs::rename(from, &path));
        if moved.is_ok() {
            self.index.lock().insert(id, need, now_secs());
        }
        moved.is_ok()
    }

    /// Drops block `id` from the index and the disk.
    pub(crate) fn remove(&self, key: &str, id: BlockId) {
        self.index.lock().remove(&id, self.file_len(&id));
        let _ = fs::remove_file(self.path(key));
    }

    /// Drops blocks not used since `cutoff` (`--cache-expire`).
    pub(crate) fn expire(&self, cutoff: u32) {
        let old = self.index.lock().expire(cutoff, |id| self.file_len(id));
        if !old.is_empty() {
            tracing::debug!(
                "cache directory {}: {} blocks expired",
                self.root.display(),
                old.len()
            );
        }
        self.delete_files(&old);
    }

    /// Rebuilds the index from the files on disk (the background start-up scan):
    /// every block file of the right length is indexed with its file's access time;
    /// files of the wrong length are torn writes and deleted, as are stale temporary
    /// files. Ends with an eviction if the cache holds more than its size now allows.
    pub(crate) fn scan(&self) {
        let start = Instant::now();
        let mut dropped = 0usize;
        let walked = file::walk_files(&self.root, |rel, path, meta| {
            if !self.in_use() {
                return ControlFlow::Break(());
            }
            if rel.contains(TMP_MARK) {
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|m| SystemTime::now().duration_since(m).ok());
                if age.is_some_and(|a| a > STALE_TMP) {
                    let _ = fs::remove_file(&path);
                }
                return ControlFlow::Continue(());
            }
            let Some(id) = crate::parse_block_key(rel) else {
                return ControlFlow::Continue(());
            };
            if meta.len() != self.file_len(&id) {
                let _ = fs::remove_file(&path);
                dropped += 1;
                return ControlFlow::Continue(());
            }
            let atime = meta.atime().max(meta.mtime()).clamp(0, u32::MAX as i64) as u32;
            self.index.lock().insert(id, meta.len(), atime);
            ControlFlow::Continue(())
        });
        if let Err(e) = walked {
            return self.fail("scanning", &e);
        }
        if !self.in_use() {
            return;
        }
        self.scanned.store(true, Ordering::Release);
        let (blocks, bytes) = self.usage();
        tracing::info!(
            "cache directory {}: {blocks} blocks ({} MiB) found in {:.1} s{}",
            self.root.display(),
            bytes >> 20,
            start.elapsed().as_secs_f64(),
            if dropped > 0 {
                format!(", {dropped} torn files deleted")
            } else {
                String::new()
            }
        );
        if bytes > self.cfg.capacity {
            self.make_room(0);
        }
    }
}

/// Creates `root` if missing (mode 0700) and checks that a file can be written there.
fn probe(root: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(root)?;
    let probe = root.join(format!(".probe{TMP_MARK}{}", std::process::id()));
    let written = File::create(&probe).and_then(|mut f| f.write_all(b"nectar"));
    let _ = fs::remove_file(&probe);
    written
}

/// Bytes that must be freed so that writing `need` more leaves `ratio` of the disk's
/// space (and of its inodes, counted as a block each) free.
fn disk_shortfall(root: &Path, ratio: f64, need: u64) -> io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(root).map_err(io::Error::from)?;
    let frsize = st.fragment_size() as u64;
    let total = st.blocks() as u64 * frsize;
    let avail = st.blocks_available() as u64 * frsize;
    let want = (total as f64 * ratio) as u64 + need;
    let mut short = want.saturating_sub(avail);
    let files = st.files() as u64;
    if files > 0 && (st.files_available() as f64) < files as f64 * ratio + 1.0 {
        // Out of inodes: free at least one block's worth.
        short = short.max(need.max(1));
    }
    Ok(short)
}

/// Total and available bytes of the disk holding `path`.
pub(crate) fn disk_space(path: &Path) -> io::Result<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    let frsize = st.fragment_size() as u64;
    Ok((
        st.blocks() as u64 * frsize,
        st.blocks_available() as u64 * frsize,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(capacity: u64, eviction: Eviction) -> DirConfig {
        DirConfig {
            capacity,
            free_space_ratio: 0.0,
            eviction,
            verify: VerifyChecksum::Extend,
            hash_prefix: false,
        }
    }

    fn dir(capacity: u64, eviction: Eviction) -> (tempfile::TempDir, CacheDir) {
        let t = tempfile::tempdir().unwrap();
        let d = CacheDir::open(t.path().join("uuid/raw"), config(capacity, eviction)).unwrap();
        (t, d)
    }

    fn block(id: u64, len: u32) -> (String, BlockId, Bytes) {
        let data: Vec<u8> = (0..len).map(|i| (i as u64 * 31 + id) as u8).collect();
        (
            crate::block_key(id, 0, len, false),
            (id, 0, len),
            Bytes::from(data),
        )
    }

    #[test]
    fn blocks_are_stored_private_and_read_back() {
        let (_t, d) = dir(1 << 20, Eviction::TwoRandom);
        let (key, id, data) = block(7, 100_000);
        assert!(d.get(&key, id, 0..10).is_none());
        d.put(&key, id, &data);
        assert_eq!(d.get(&key, id, 0..100_000).unwrap(), data);
        assert_eq!(d.get(&key, id, 500..600).unwrap(), data.slice(500..600));
        let meta = fs::metadata(d.root().join(&key)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(d.usage(), (1, file::file_len(100_000)));
        // No temporary file is left beside it.
        let names: Vec<_> = fs::read_dir(d.root().join(&key).parent().unwrap())
            .unwrap()
            .collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn the_size_is_kept_by_evicting() {
        let (_t, d) = dir(10 * 10_100, Eviction::Lru);
        for i in 0..30 {
            let (key, id, data) = block(i, 10_000);
            d.put(&key, id, &data);
            assert!(d.usage().1 <= 10 * 10_100);
        }
        // The newest block is there; the oldest went.
        let (key, id, _) = block(29, 10_000);
        assert!(d.get(&key, id, 0..1).is_some());
        let (key, id, _) = block(0, 10_000);
        assert!(d.get(&key, id, 0..1).is_none());
        assert!(!d.root().join(&key).exists());
    }

    #[test]
    fn with_eviction_none_a_full_cache_takes_nothing_new() {
        let (_t, d) = dir(2 * 10_100, Eviction::None);
        for i in 0..3 {
            let (key, id, data) = block(i, 10_000);
            d.put(&key, id, &data);
        }
        assert_eq!(d.usage().0, 2);
        assert!(d.full.load(Ordering::Relaxed));
        let (key, id, _) = block(2, 10_000);
        assert!(d.get(&key, id, 0..1).is_none());
    }

    #[test]
    fn a_failed_directory_comes_back_when_it_can_be_written_again() {
        let (_t, d) = dir(1 << 20, Eviction::TwoRandom);
        let (key, id, data) = block(2, 10_000);
        d.put(&key, id, &data);
        d.fail("test", &io::Error::other("disk gone"));
        assert!(!d.in_use());
        assert!(
            d.get(&key, id, 0..10).is_none(),
            "a failed directory serves nothing"
        );
        // Still broken: the directory is a file now.
        let aside = d.root().with_extension("aside");
        fs::rename(d.root(), &aside).unwrap();
        fs::write(d.root(), b"not a directory").unwrap();
        assert!(!d.probe_again());
        assert!(!d.in_use());
        // Repaired: back in use, with the blocks still on disk found again.
        fs::remove_file(d.root()).unwrap();
        fs::rename(&aside, d.root()).unwrap();
        assert!(d.probe_again());
        assert!(d.in_use());
        assert_eq!(d.usage(), (1, d.file_len(&id)));
        assert_eq!(d.get(&key, id, 0..10_000).unwrap(), data);
    }

    #[test]
    fn a_damaged_or_torn_file_is_dropped_not_returned() {
        let (_t, d) = dir(1 << 20, Eviction::TwoRandom);
        let (key, id, data) = block(1, 70_000);
        d.put(&key, id, &data);
        let path = d.root().join(&key);
        let mut bytes = fs::read(&path).unwrap();
        bytes[40_000] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(d.get(&key, id, 0..70_000).is_none());
        assert!(!path.exists(), "the damaged file is deleted");
        assert_eq!(d.usage(), (0, 0));
        d.put(&key, id, &data);
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(1000)
            .unwrap();
        assert!(d.get(&key, id, 0..10).is_none());
        assert!(!path.exists());
    }

    #[test]
    fn a_scan_finds_blocks_again_and_clears_torn_and_stale_files() {
        let t = tempfile::tempdir().unwrap();
        let cfg = config(1 << 20, Eviction::TwoRandom);
        let root = t.path().join("uuid/raw");
        let (key, id, data) = block(3, 50_000);
        {
            let d = CacheDir::open(root.clone(), cfg.clone()).unwrap();
            d.put(&key, id, &data);
            let (k2, id2, d2) = block(4, 50_000);
            d.put(&k2, id2, &d2);
            fs::OpenOptions::new()
                .write(true)
                .open(root.join(&k2))
                .unwrap()
                .set_len(10)
                .unwrap();
        }
        let stale = root.join("chunks/0/0/9_0_5.tmp.1.1");
        fs::write(&stale, b"x").unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let d = CacheDir::open(root.clone(), cfg).unwrap();
        // Before the scan, a read still finds the file.
        assert_eq!(d.get(&key, id, 0..50_000).unwrap(), data);
        d.scan();
        assert_eq!(d.usage(), (1, file::file_len(50_000)));
        assert!(!stale.exists());
        assert!(!root.join(crate::block_key(4, 0, 50_000, false)).exists());
    }

    #[test]
    fn an_unwritable_directory_is_refused_with_the_reason() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("plain-file");
        fs::write(&file, b"").unwrap();
        let cfg = config(1 << 20, Eviction::TwoRandom);
        assert!(CacheDir::open(file.join("uuid/raw"), cfg).is_err());
    }
}
