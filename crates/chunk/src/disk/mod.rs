//! The local disk cache of blocks: the level between the memory cache and object
//! storage.
//!
//! JuiceFS's design and flags, kept so operators can move between the two: blocks are
//! spread over one or more directories (`--cache-dir a:b:c`) by rendezvous hashing of
//! their keys, a consistent hash: adding or losing a directory moves only that
//! directory's share, and a directory out of use hands its share to the next one in
//! each key's order. `--cache-size` is split evenly among the directories. What is
//! cached: every block fetched from object storage (with `--cache-partial-only`, only
//! blocks shorter than a full block), and of blocks written, those shorter than a full
//! block (all of them with `--cache-large-write`), so a small file written here is read
//! back from disk.
//!
//! All file I/O is blocking and runs on the runtime's blocking threads; writes to the
//! cache happen in the background and are dropped, not queued without end, when more
//! than [`MAX_PENDING`] bytes are waiting. A background thread rebuilds each
//! directory's index at start (see [`dir`]), then expires old blocks and probes failed
//! directories back into use every [`MAINTENANCE`].
//!
//! The cache never makes a read fail: a miss, a damaged file, a full or failed disk all
//! end in a read from object storage.

mod dir;
mod file;
mod index;
mod stage;

pub use file::VerifyChecksum;
pub use index::Eviction;

use crate::{parse_block_key, Error, Result};
use bytes::Bytes;
use dir::{CacheDir, DirConfig};
use stage::{staging_root, Staging};
use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Bytes of cache writes that may wait for the disk; beyond that new ones are dropped.
pub(crate) const MAX_PENDING: u64 = 64 << 20;
/// How often blocks are expired (`--cache-expire`).
const MAINTENANCE: Duration = Duration::from_secs(30);

/// Settings of the disk cache (the `--cache-*` flags of `mount`).
#[derive(Debug, Clone, PartialEq)]
pub struct DiskCacheConfig {
    /// Directories; each gets `<volume UUID>/raw/` below it.
    pub dirs: Vec<PathBuf>,
    /// The volume's UUID, so volumes sharing a directory never share blocks.
    pub volume_uuid: String,
    /// Bytes for all directories together (JuiceFS's `--cache-size`, default 100 GiB).
    pub size: u64,
    /// Share of each disk kept free (`--free-space-ratio`, default 0.1).
    pub free_space_ratio: f64,
    pub eviction: Eviction,
    /// Blocks unused this long are dropped (`--cache-expire`; `None` keeps them).
    pub expire: Option<Duration>,
    pub verify: VerifyChecksum,
    /// Cache fetched blocks only if shorter than a full block (`--cache-partial-only`).
    pub partial_only: bool,
    /// Cache full blocks written here too (`--cache-large-write`).
    pub large_write: bool,
    /// Stage written blocks here and upload them in the background (`--writeback`).
    pub writeback: bool,
    /// Staged blocks wait this long before their upload (`--upload-delay`).
    pub upload_delay: Duration,
    /// Uploads of staged blocks only between these hours, local time, `[start, end)`,
    /// across midnight if `start > end` (`--upload-hours`).
    pub upload_hours: Option<(u8, u8)>,
}

/// Staged blocks found in one staging directory ([`DiskCacheConfig::staged_on_disk`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StagedUsage {
    /// `<cache-dir>/<volume UUID>/rawstaging`.
    pub dir: PathBuf,
    pub blocks: usize,
    /// Bytes of block data (without the cache files' checksums).
    pub bytes: u64,
    /// When the oldest staged block was written.
    pub oldest: Option<std::time::SystemTime>,
}

impl DiskCacheConfig {
    /// Defaults for `dirs` (JuiceFS's, except the directories).
    pub fn new(dirs: Vec<PathBuf>, volume_uuid: impl Into<String>) -> Self {
        Self {
            dirs,
            volume_uuid: volume_uuid.into(),
            size: 100 << 30,
            free_space_ratio: 0.1,
            eviction: Eviction::default(),
            expire: None,
            verify: VerifyChecksum::default(),
            partial_only: false,
            large_write: false,
            writeback: false,
            upload_delay: Duration::ZERO,
            upload_hours: None,
        }
    }

    /// Whether an upload of a staged block may start at `hour` (0-23, local time).
    pub fn upload_allowed_at(&self, hour: u8) -> bool {
        match self.upload_hours {
            None => true,
            Some((start, end)) if start == end => true,
            Some((start, end)) if start < end => (start..end).contains(&hour),
            Some((start, end)) => hour >= start || hour < end,
        }
    }

    /// The blocks staged by `--writeback` clients of this volume in each directory and
    /// not uploaded yet, found on disk (so a client that was killed counts too). Only
    /// reads: temporary files of a client writing now are left alone.
    pub fn staged_on_disk(&self) -> Vec<StagedUsage> {
        self.roots()
            .into_iter()
            .map(|raw| {
                let root = staging_root(&raw);
                let found = stage::scan(&root, stage::Temporary::Keep);
                StagedUsage {
                    blocks: found.len(),
                    bytes: found.iter().map(|b| b.len).sum(),
                    oldest: found.first().map(|b| b.since),
                    dir: root,
                }
            })
            .collect()
    }

    /// `<dir>/<uuid>/raw` for each directory.
    fn roots(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.join(&self.volume_uuid).join("raw"))
            .collect()
    }

    /// Checks the settings and every directory (created if missing, then written to),
    /// and returns warnings worth showing the user: a size larger than a disk can hold,
    /// a disk already below its free-space ratio. An error says what to change.
    pub fn check(&self) -> Result<Vec<String>> {
        if self.dirs.is_empty() {
            return Err(Error::Invalid("no cache directory given".into()));
        }
        if !(0.0..1.0).contains(&self.free_space_ratio) {
            return Err(Error::Invalid(format!(
                "free-space-ratio {} is out of range: use 0 to below 1 (default 0.1)",
                self.free_space_ratio
            )));
        }
        let mut warnings = Vec::new();
        let share = self.size / self.dirs.len() as u64;
        for root in self.roots() {
            CacheDir::open(root.clone(), self.dir_config(false)).map_err(|e| {
                Error::CacheDir {
                    dir: root.display().to_string(),
                    reason: format!(
                        "{e}; give a directory this user can write with --cache-dir, or turn the disk cache off with --cache-size 0"
                    ),
                }
            })?;
            if let Ok((total, avail)) = dir::disk_space(&root) {
                let usable = (total as f64 * (1.0 - self.free_space_ratio)) as u64;
                if share > usable {
                    warnings.push(format!(
                        "cache size {} MiB for {} is more than its disk can hold ({} MiB with free-space-ratio {}); the cache stops at the disk's limit",
                        share >> 20,
                        root.display(),
                        usable >> 20,
                        self.free_space_ratio
                    ));
                }
                if (avail as f64) < total as f64 * self.free_space_ratio {
                    warnings.push(format!(
                        "the disk of {} has {} MiB free, less than free-space-ratio {} keeps free: blocks are cached there only as room frees up",
                        root.display(),
                        avail >> 20,
                        self.free_space_ratio
                    ));
                }
            }
        }
        Ok(warnings)
    }

    fn dir_config(&self, hash_prefix: bool) -> DirConfig {
        DirConfig {
            capacity: self.size / self.dirs.len().max(1) as u64,
            free_space_ratio: self.free_space_ratio,
            eviction: self.eviction,
            verify: self.verify,
            hash_prefix,
        }
    }
}

/// The disk cache of a volume. See the module documentation.
pub(crate) struct DiskCache {
    dirs: Vec<CacheDir>,
    cfg: DiskCacheConfig,
    block_size: usize,
    pending: AtomicU64,
    /// Blocks written and not yet uploaded (`--writeback` only).
    staging: Option<Staging>,
}

impl DiskCache {
    /// Opens every directory that can be used (logging those that cannot) and starts
    /// the background scan; `None` if no directory is usable.
    pub(crate) fn open(
        cfg: DiskCacheConfig,
        block_size: usize,
        hash_prefix: bool,
    ) -> Option<Arc<Self>> {
        let dirs: Vec<CacheDir> = cfg
            .roots()
            .into_iter()
            .filter_map(
                |root| match CacheDir::open(root.clone(), cfg.dir_config(hash_prefix)) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        tracing::error!(
                            "cache directory {} is not usable: {e}; it is left out",
                            root.display()
                        );
                        None
                    }
                },
            )
            .collect();
        if dirs.is_empty() {
            tracing::error!("no cache directory is usable: the disk cache is off");
            return None;
        }
        let cache = Arc::new(Self {
            dirs,
            block_size,
            pending: AtomicU64::new(0),
            staging: cfg.writeback.then(Staging::default),
            cfg,
        });
        let weak = Arc::downgrade(&cache);
        let spawned = std::thread::Builder::new()
            .name("nectar-cache-scan".into())
            .spawn(move || maintain(weak));
        if let Err(e) = spawned {
            tracing::warn!("cannot start the cache scan thread ({e}): the cache starts empty");
        }
        Some(cache)
    }

    /// The directories in the order `key` prefers them: the first in use serves it.
    fn dir_for(&self, key: &str) -> Option<&CacheDir> {
        if self.dirs.len() == 1 {
            return self.dirs.first().filter(|d| d.in_use());
        }
        self.dirs
            .iter()
            .enumerate()
            .filter(|(_, d)| d.in_use())
            .max_by_key(|(i, _)| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                key.hash(&mut h);
                i.hash(&mut h);
                h.finish()
            })
            .map(|(_, d)| d)
    }

    /// Whether a block fetched from object storage should be cached.
    pub(crate) fn keeps_fetched(&self, len: u32) -> bool {
        !self.cfg.partial_only || (len as usize) < self.block_size
    }

    /// Whether a block written here should be cached.
    pub(crate) fn keeps_written(&self, len: u32) -> bool {
        self.cfg.large_write || (len as usize) < self.block_size
    }

    /// Bytes `range` of the block `key`, if staged or cached and intact. Blocking.
    pub(crate) fn get(&self, key: &str, range: Range<usize>) -> Option<Bytes> {
        if let Some(data) = self
            .staging
            .as_ref()
            .and_then(|s| s.read(key, range.clone()))
        {
            return Some(data);
        }
        let id = parse_block_key(key)?;
        self.dir_for(key)?.get(key, id, range)
    }

    /// Whether a [`DiskCache::get`] of `key` may find it (see [`CacheDir::may_have`]).
    pub(crate) fn may_have(&self, key: &str) -> bool {
        self.is_staged(key)
            || parse_block_key(key)
                .zip(self.dir_for(key))
                .is_some_and(|(id, d)| d.may_have(&id))
    }

    /// Whether written blocks are staged here for a later upload.
    pub(crate) fn writeback(&self) -> bool {
        self.staging.is_some()
    }

    /// How long staged blocks wait, and when they may be uploaded.
    pub(crate) fn config(&self) -> &DiskCacheConfig {
        &self.cfg
    }

    /// Stages block `key` for a later upload. Blocking.
    pub(crate) fn stage(&self, key: &str, data: &Bytes) -> std::io::Result<()> {
        let (Some(staging), Some(dir)) = (&self.staging, self.dir_for(key)) else {
            return Err(std::io::Error::other("no cache directory in use"));
        };
        staging.stage(&staging_root(dir.root()), key, data)
    }

    pub(crate) fn is_staged(&self, key: &str) -> bool {
        self.staging.as_ref().is_some_and(|s| s.contains(key))
    }

    /// When block `key` was staged, if it still is.
    pub(crate) fn staged_since(&self, key: &str) -> Option<std::time::SystemTime> {
        self.staging.as_ref()?.get(key).map(|s| s.since)
    }

    /// The whole staged block `key` (to upload it). Blocking.
    pub(crate) fn read_staged(&self, key: &str) -> Option<Bytes> {
        let staging = self.staging.as_ref()?;
        let len = staging.get(key)?.len as usize;
        staging.read(key, 0..len)
    }

    /// Block `key` is in object storage now: its staging file becomes a cache file
    /// (when written blocks of its size are cached) or goes. Blocking.
    pub(crate) fn uploaded(&self, key: &str) {
        let Some(staged) = self.staging.as_ref().and_then(|s| s.take(key)) else {
            return;
        };
        let adopted = match (parse_block_key(key), self.dir_for(key)) {
            (Some(id), Some(dir)) if self.keeps_written(id.2) => dir.adopt(key, id, &staged.path),
            _ => false,
        };
        if !adopted {
            let _ = std::fs::remove_file(&staged.path);
        }
    }

    /// Blocks and bytes staged and not yet uploaded.
    pub(crate) fn staged(&self) -> (usize, u64) {
        self.staging.as_ref().map_or((0, 0), Staging::usage)
    }

    /// Finds the staging files an earlier client left and returns their keys, oldest
    /// first, for upload. Blocking.
    pub(crate) fn recover_staged(&self) -> Vec<String> {
        let Some(staging) = &self.staging else {
            return Vec::new();
        };
        self.dirs
            .iter()
            .flat_map(|d| staging.recover(&staging_root(d.root())))
            .collect()
    }

    /// Whether block `key` is in the cache's index.
    pub(crate) fn contains(&self, key: &str) -> bool {
        parse_block_key(key)
            .zip(self.dir_for(key))
            .is_some_and(|(id, d)| d.contains(&id))
    }

    /// Whether block `key` is here (staged or cached), looking on disk when the
    /// start-up scan has not reached it yet. Blocking.
    pub(crate) fn holds(&self, key: &str) -> bool {
        self.is_staged(key)
            || parse_block_key(key)
                .zip(self.dir_for(key))
                .is_some_and(|(id, d)| d.holds(key, id))
    }

    /// Stores block `key` now (unless it is here already). Blocking.
    pub(crate) fn put(&self, key: &str, data: &Bytes) {
        if let (Some(id), Some(d)) = (parse_block_key(key), self.dir_for(key)) {
            d.put(key, id, data);
        }
    }

    /// Drops cached block `key` now; a staged block stays (it is not in object storage
    /// yet). Blocking.
    pub(crate) fn evict(&self, key: &str) {
        if let (Some(id), Some(d)) = (parse_block_key(key), self.dir_for(key)) {
            d.remove(key, id);
        }
    }

    /// Stores the block in the background (dropped if too much is waiting already).
    pub(crate) fn put_background(self: &Arc<Self>, key: &str, data: Bytes) {
        let len = data.len() as u64;
        if self.pending.fetch_add(len, Ordering::Relaxed) + len > MAX_PENDING {
            self.pending.fetch_sub(len, Ordering::Relaxed);
            tracing::debug!("cache write of {key} dropped: the disk is behind");
            return;
        }
        let (cache, key) = (self.clone(), key.to_string());
        tokio::task::spawn_blocking(move || {
            cache.put(&key, &data);
            cache.pending.fetch_sub(len, Ordering::Relaxed);
        });
    }

    /// Drops block `key` in the background (its slice was deleted); a staged block is
    /// then never uploaded.
    pub(crate) fn remove_background(self: &Arc<Self>, key: &str) {
        if let Some(staged) = self.staging.as_ref().and_then(|s| s.take(key)) {
            let _ = std::fs::remove_file(&staged.path);
        }
        let (cache, key) = (self.clone(), key.to_string());
        tokio::task::spawn_blocking(move || cache.evict(&key));
    }

    /// [`DiskCache::remove_background`] of many blocks, in one blocking task: a
    /// removal of many files frees thousands of blocks, and a task each cost more in
    /// thread wake-ups than the removals themselves.
    pub(crate) fn remove_many_background(self: &Arc<Self>, keys: &[String]) {
        if let Some(staging) = self.staging.as_ref() {
            for key in keys {
                if let Some(staged) = staging.take(key) {
                    let _ = std::fs::remove_file(&staged.path);
                }
            }
        }
        let (cache, keys) = (self.clone(), keys.to_vec());
        tokio::task::spawn_blocking(move || {
            for key in &keys {
                cache.evict(key);
            }
        });
    }

    /// Blocks and bytes held, over all directories in use.
    pub(crate) fn usage(&self) -> (usize, u64) {
        self.dirs
            .iter()
            .filter(|d| d.in_use())
            .map(CacheDir::usage)
            .fold((0, 0), |(n, b), (dn, db)| (n + dn, b + db))
    }
}

/// The background thread: scans every directory once, then until the cache is dropped
/// expires old blocks and probes failed directories back into use.
fn maintain(cache: Weak<DiskCache>) {
    if let Some(c) = cache.upgrade() {
        for d in &c.dirs {
            d.scan();
        }
    }
    loop {
        std::thread::sleep(MAINTENANCE);
        let Some(c) = cache.upgrade() else { return };
        for d in &c.dirs {
            d.probe_again();
        }
        if let Some(expire) = c.cfg.expire {
            let cutoff = index::now_secs().saturating_sub(expire.as_secs() as u32);
            for d in c.dirs.iter().filter(|d| d.in_use()) {
                d.expire(cutoff);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dirs: Vec<PathBuf>) -> DiskCacheConfig {
        DiskCacheConfig {
            free_space_ratio: 0.0,
            size: 100 << 20,
            ..DiskCacheConfig::new(dirs, "uuid-1")
        }
    }

    #[tokio::test]
    async fn blocks_spread_over_directories_and_survive_losing_one() {
        let t = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..3).map(|i| t.path().join(format!("d{i}"))).collect();
        let cache = DiskCache::open(config(dirs.clone()), 4 << 20, false).unwrap();
        let keys: Vec<String> = (0..60)
            .map(|i| crate::block_key(i, 0, 1000, false))
            .collect();
        for k in &keys {
            let d = cache.dir_for(k).unwrap();
            d.put(
                k,
                parse_block_key(k).unwrap(),
                &Bytes::from(vec![1u8; 1000]),
            );
        }
        let per_dir: Vec<usize> = cache.dirs.iter().map(|d| d.usage().0).collect();
        assert_eq!(per_dir.iter().sum::<usize>(), 60);
        assert!(per_dir.iter().all(|&n| n >= 5), "uneven spread {per_dir:?}");
        // Each block lives under its volume's UUID, at its object key.
        for k in &keys {
            assert!(cache.get(k, 0..1000).is_some());
            assert!(dirs.iter().any(|d| d.join("uuid-1/raw").join(k).exists()));
        }
        // Directory 0 fails: its keys move on, the others stay where they were.
        let before: Vec<PathBuf> = keys
            .iter()
            .map(|k| cache.dir_for(k).unwrap().root().to_path_buf())
            .collect();
        cache.dirs[0].failed.store(true, Ordering::Relaxed);
        for (k, was) in keys.iter().zip(&before) {
            let now = cache.dir_for(k).unwrap().root();
            if was != cache.dirs[0].root() {
                assert_eq!(now, was, "{k} moved although its directory is fine");
            } else {
                assert_ne!(now, was);
            }
        }
    }

    #[test]
    fn check_creates_directories_and_explains_failures() {
        let t = tempfile::tempdir().unwrap();
        let fresh = t.path().join("a/b/c");
        assert!(config(vec![fresh.clone()]).check().is_ok());
        assert!(fresh.join("uuid-1/raw").is_dir());
        let blocker = t.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        let err = config(vec![blocker]).check().unwrap_err().to_string();
        assert!(err.contains("--cache-size 0"), "{err}");
        let huge = DiskCacheConfig {
            size: u64::MAX / 2,
            ..config(vec![fresh])
        };
        let warnings = huge.check().unwrap();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("more than its disk can hold")),
            "{warnings:?}"
        );
        let bad_ratio = DiskCacheConfig {
            free_space_ratio: 1.5,
            ..config(vec![t.path().into()])
        };
        assert!(bad_ratio.check().is_err());
    }
}
