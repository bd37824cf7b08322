//! [`ChunkStore`]: the shared state of the block store and its read side.
//!
//! One `ChunkStore` per mounted volume holds the object store, the codec, the memory
//! and disk caches, the buffer budget, the upload and download limits, and the table of block
//! fetches in flight. A read is split into the blocks it covers, which are fetched
//! concurrently: a cached block is served from memory; a small part of an uncompressed
//! block nobody is fetching is read with a ranged GET (cheap for random readers, and
//! sequential readers are served by the vfs readahead through [`ChunkStore::prefetch`]);
//! anything else fetches the whole block. Whole-block fetches run in their own tasks
//! registered in the in-flight table, so every concurrent reader (and prefetch) of a
//! block waits on the same GET, a reader that gives up does not cancel it for the
//! others, and the decoded block lands in the cache for the next reader. The task puts
//! the block in the cache *before* leaving the table, and a reader checks the cache
//! under the table's lock, so a block is never fetched twice at once. The disk cache
//! is asked before any GET (whole block or range), and a whole block fetched from
//! object storage is written to it in the background.

use crate::buffer::{BufferPool, Reservation};
use crate::cache::MemCache;
use crate::disk::DiskCache;
use crate::key::{block_len, blocks, listing_prefixes};
use crate::limit::Limiter;
use crate::retry::retry;
use crate::writer::SliceWriter;
use crate::{block_key, parse_block_key, ChunkConfig, Codec, Error, Result};
use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, Shared};
use futures::FutureExt;
use nectar_object::ObjectStore;
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Objects in one bulk delete ([`ChunkStore::remove_slices`]); S3 takes 1,000 per
/// DeleteObjects request.
const BULK_DELETE: usize = 1000;

/// A whole-block fetch that several readers can wait on.
type Fetch = Shared<BoxFuture<'static, Result<Bytes>>>;

/// The block store of a volume. See the crate documentation.
pub struct ChunkStore {
    pub(crate) inner: Arc<Inner>,
}

/// Where [`Inner::upload`] left a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// In the object store, durable once the store has synced (see `ObjectStore::sync`).
    InStore,
    /// In the writeback staging directory, uploaded later.
    Staged,
}

/// State shared by the store, its writers and its background tasks.
pub(crate) struct Inner {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) cfg: ChunkConfig,
    codec: Codec,
    pub(crate) cache: MemCache,
    pub(crate) disk: Option<Arc<DiskCache>>,
    pub(crate) buffer: BufferPool,
    uploads: Arc<Semaphore>,
    downloads: Semaphore,
    /// `--upload-limit` and `--download-limit`.
    upload_limit: Option<Limiter>,
    download_limit: Option<Limiter>,
    /// Keys of staged blocks for the background uploader (`--writeback` only).
    staged_tx: Option<mpsc::UnboundedSender<String>>,
    /// Slots for whole-block prefetches of partially read blocks (`--prefetch`).
    prefetches: Arc<Semaphore>,
    inflight: Mutex<HashMap<String, Fetch>>,
}

pub(crate) enum Lookup {
    Cached(Bytes),
    Fetching(Fetch),
}

impl ChunkStore {
    /// A block store over `store`. Settings out of range are clamped (see
    /// [`ChunkConfig::validate`] to report them instead).
    ///
    /// With writeback, blocks staged by an earlier client are queued for upload, and
    /// the uploader runs on the current tokio runtime; without a runtime, writeback is
    /// off (blocks are uploaded before their slice commits) and an error is logged.
    pub fn new(store: Arc<dyn ObjectStore>, cfg: ChunkConfig) -> Arc<Self> {
        let cfg = cfg.normalized();
        let disk = cfg
            .disk_cache
            .clone()
            .and_then(|d| DiskCache::open(d, cfg.block_size, cfg.hash_prefix));
        let mut staged_rx = None;
        let staged_tx = match (&disk, tokio::runtime::Handle::try_current()) {
            (Some(d), Ok(_)) if d.writeback() => {
                let (tx, rx) = mpsc::unbounded_channel();
                staged_rx = Some(rx);
                Some(tx)
            }
            (Some(d), Err(_)) if d.writeback() => {
                tracing::error!(
                    "writeback needs a tokio runtime: blocks are uploaded before they commit"
                );
                None
            }
            _ => None,
        };
        let this = Arc::new(Self {
            inner: Arc::new(Inner {
                store,
                codec: Codec::new(cfg.compression).with_encryption(cfg.encrypted),
                cache: MemCache::new(cfg.mem_cache_size),
                disk,
                staged_tx,
                buffer: BufferPool::new(cfg.buffer_size),
                uploads: Arc::new(Semaphore::new(cfg.max_uploads)),
                downloads: Semaphore::new(cfg.max_downloads),
                upload_limit: cfg.upload_limit.map(Limiter::new),
                download_limit: cfg.download_limit.map(Limiter::new),
                prefetches: Arc::new(Semaphore::new(cfg.prefetch)),
                inflight: Mutex::new(HashMap::new()),
                cfg,
            }),
        });
        if let Some(rx) = staged_rx {
            tokio::spawn(upload_staged(Arc::downgrade(&this.inner), rx));
            let inner = this.inner.clone();
            tokio::task::spawn_blocking(move || {
                let Some(disk) = &inner.disk else { return };
                let keys = disk.recover_staged();
                if !keys.is_empty() {
                    let (n, bytes) = disk.staged();
                    tracing::info!(
                        "{n} blocks ({} MiB) staged by an earlier client are being uploaded",
                        bytes >> 20
                    );
                }
                for key in keys {
                    inner.queue_upload(key);
                }
            });
        }
        this
    }

    /// The settings in effect (after clamping).
    pub fn config(&self) -> &ChunkConfig {
        &self.inner.cfg
    }

    /// The object store the blocks live in.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    /// Makes the blocks stored so far durable (see `ObjectStore::sync`). A slice
    /// writer's `finish` does this before its slice may be committed; calling it ahead,
    /// with no lock held, leaves that barrier little to wait for.
    pub async fn sync(&self) -> Result<()> {
        Ok(self.inner.store.sync().await?)
    }

    /// A writer for a new slice with the volume-unique `id`.
    pub fn writer(self: &Arc<Self>, id: u64) -> SliceWriter {
        SliceWriter::new(self.inner.clone(), id)
    }

    /// Bytes `[off, off+len)` of slice `(id, size)`, clamped to `size`.
    pub async fn read(&self, id: u64, size: u32, off: u32, len: usize) -> Result<Bytes> {
        let end = (off as u64).saturating_add(len as u64).min(size as u64);
        if off as u64 >= end {
            return Ok(Bytes::new());
        }
        let bs = self.inner.cfg.block_size as u64;
        let (first, last) = (off as u64 / bs, (end - 1) / bs);
        let mut parts: Vec<_> = (first..=last)
            .map(|i| {
                let index = i as u32;
                let blen = block_len(size, self.inner.cfg.block_size, index);
                let bstart = i * bs;
                let from = (off as u64).max(bstart) - bstart;
                let to = end.min(bstart + blen as u64) - bstart;
                let key = self.inner.key(id, index, blen);
                self.inner
                    .clone()
                    .read_block(key, blen, from as usize..to as usize)
            })
            .collect();
        if parts.len() == 1 {
            if let Some(one) = parts.pop() {
                // The common case: one block, handed out without a copy.
                return one.await;
            }
        }
        let parts = futures::future::try_join_all(parts).await?;
        let mut out = BytesMut::with_capacity((end - off as u64) as usize);
        for p in parts {
            out.extend_from_slice(&p);
        }
        Ok(out.freeze())
    }

    /// A sequential reader has gone past `[off, off+len)` of slice `(id, size)`: the
    /// blocks that end in that range leave the memory cache. The kernel's page cache
    /// holds what the reader got, and a stream of blocks kept here too would double what
    /// a streaming read costs in memory, and push out the blocks random readers reuse.
    /// (They stay in the disk cache.) The caller says when a reader is past a range;
    /// the VFS waits until it is 4 MiB further, since the kernel's readahead requests
    /// are served out of order.
    pub fn consumed(&self, id: u64, size: u32, off: u32, len: u32) {
        let end = (off as u64 + len as u64).min(size as u64);
        if off as u64 >= end || !self.inner.cache.enabled() {
            return;
        }
        let bs = self.inner.cfg.block_size as u64;
        for i in (off as u64 / bs)..=((end - 1) / bs) {
            let block_end = ((i + 1) * bs).min(size as u64);
            if block_end > off as u64 && block_end <= end {
                let index = i as u32;
                let blen = block_len(size, self.inner.cfg.block_size, index);
                self.inner.cache.remove(&self.inner.key(id, index, blen));
            }
        }
    }

    /// Whether the block holding byte `off` of slice `(id, size)` is in the memory
    /// cache, so a reader getting there does not wait (past the end: nothing to wait
    /// for).
    pub fn in_memory(&self, id: u64, size: u32, off: u32) -> bool {
        if off >= size {
            return true;
        }
        let index = off / self.inner.cfg.block_size as u32;
        let blen = block_len(size, self.inner.cfg.block_size, index);
        self.inner.cache.contains(&self.inner.key(id, index, blen))
    }

    /// Fetches the blocks covering `[off, off+len)` into the memory cache in the
    /// background, on the current tokio runtime (outside one it does nothing): from
    /// the disk cache when it has them, from object storage otherwise. A block already
    /// in memory or being fetched is skipped; the bytes in flight count
    /// against `buffer_size` and prefetching stops when it is full (a prefetch is a
    /// hint and never waits); errors are only logged.
    pub fn prefetch(self: &Arc<Self>, id: u64, size: u32, off: u32, len: u32) {
        let end = (off as u64 + len as u64).min(size as u64);
        if off as u64 >= end || (!self.inner.cache.enabled() && self.inner.disk.is_none()) {
            // Without a cache the fetched block would be thrown away at once.
            return;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            // A hint never panics: the fetch task needs a runtime to run on.
            tracing::debug!("prefetch outside a tokio runtime skipped");
            return;
        }
        let bs = self.inner.cfg.block_size as u64;
        for i in (off as u64 / bs)..=((end - 1) / bs) {
            let index = i as u32;
            let blen = block_len(size, self.inner.cfg.block_size, index);
            let key = self.inner.key(id, index, blen);
            if !self.inner.prefetch_block(&key, blen, None) {
                return;
            }
        }
    }

    /// Deletes every block of a slice (missing blocks are fine) and drops it from the
    /// cache. All blocks are tried; the first error is returned.
    pub async fn remove(&self, id: u64, size: u32) -> Result<()> {
        self.delete_all(self.block_keys(id, size)).await
    }

    /// [`ChunkStore::remove`] of many slices at once: what a removal of many files
    /// frees, in bulk deletes.
    pub async fn remove_slices(&self, slices: &[(u64, u32)]) -> Result<()> {
        let keys = slices
            .iter()
            .flat_map(|&(id, size)| self.block_keys(id, size))
            .collect();
        self.delete_all(keys).await
    }

    /// Deletes objects and their cached copies, in bulk deletes of up to
    /// [`BULK_DELETE`] objects (`ObjectStore::delete_many`), each retried on temporary
    /// errors. All are tried; the first error is returned.
    async fn delete_all(&self, keys: Vec<String>) -> Result<()> {
        let inner = &self.inner;
        let mut first = None;
        for batch in keys.chunks(BULK_DELETE) {
            for k in batch {
                inner.cache.remove(k);
            }
            if let Some(disk) = &inner.disk {
                disk.remove_many_background(batch);
            }
            let done = retry("delete", &batch[0], inner.cfg.other_policy(), None, || {
                inner.store.delete_many(batch)
            })
            .await;
            if let Err(e) = done {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Deletes every block of the slices with ids in `ranges` (each `[start, end)`),
    /// except those in `keep`, by listing where such blocks live; returns how many it
    /// deleted. For the blocks a dead client stored but never committed: the caller
    /// (metadata) guarantees no chunk refers to those ids.
    pub async fn delete_unfinished(
        &self,
        ranges: &[(u64, u64)],
        keep: &HashSet<u64>,
    ) -> Result<usize> {
        const PAGE: usize = 1000;
        let hash = self.inner.cfg.hash_prefix;
        let prefixes: BTreeSet<String> = ranges
            .iter()
            .flat_map(|&(start, end)| listing_prefixes(start, end, hash))
            .collect();
        let wanted = |id: u64| {
            !keep.contains(&id) && ranges.iter().any(|&(start, end)| start <= id && id < end)
        };
        let mut doomed = Vec::new();
        for prefix in &prefixes {
            let mut after: Option<String> = None;
            loop {
                let page = retry("list", prefix, self.inner.cfg.other_policy(), None, || {
                    self.inner.store.list(prefix, after.as_deref(), PAGE)
                })
                .await?;
                doomed.extend(
                    page.iter()
                        .filter(|o| parse_block_key(&o.key).is_some_and(|(id, ..)| wanted(id)))
                        .map(|o| o.key.clone()),
                );
                match page.last() {
                    Some(last) if page.len() == PAGE => after = Some(last.key.clone()),
                    _ => break,
                }
            }
        }
        let n = doomed.len();
        self.delete_all(doomed).await?;
        Ok(n)
    }

    /// Object keys of the blocks of a slice, for `nectar info`.
    pub fn block_keys(&self, id: u64, size: u32) -> Vec<String> {
        blocks(size, self.inner.cfg.block_size)
            .map(|(i, len)| self.inner.key(id, i, len))
            .collect()
    }

    /// Buffered bytes in use now: write buffers not yet uploaded plus prefetches in
    /// flight (for metrics and tests).
    pub fn buffered(&self) -> u64 {
        self.inner.buffer.used()
    }

    /// The buffer budget in effect (`buffer_size`, raised to one block).
    pub fn buffer_capacity(&self) -> u64 {
        self.inner.buffer.capacity()
    }

    /// Bytes of decoded blocks in the memory cache now.
    pub fn cached_bytes(&self) -> u64 {
        self.inner.cache.used()
    }

    /// Blocks and bytes written with writeback and not yet in object storage.
    pub fn staged(&self) -> (usize, u64) {
        self.inner.disk.as_ref().map_or((0, 0), |d| d.staged())
    }

    /// Blocks and bytes in the disk cache now (`None` without one).
    pub fn disk_cache_usage(&self) -> Option<(usize, u64)> {
        self.inner.disk.as_ref().map(|d| d.usage())
    }
}

impl fmt::Debug for ChunkStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkStore")
            .field("store", &self.inner.store.describe())
            .field("config", &self.inner.cfg)
            .finish()
    }
}

impl Inner {
    pub(crate) fn key(&self, id: u64, index: u32, len: u32) -> String {
        block_key(id, index, len, self.cfg.hash_prefix)
    }

    /// Encodes and stores one block (and keeps it in the disk cache when written blocks
    /// of its size are kept there). Stops early once `cancel` is set. With writeback
    /// the block is staged on local disk instead and uploaded later; a block that
    /// cannot be staged (a full or failed disk) is uploaded now.
    pub(crate) async fn upload(
        &self,
        key: &str,
        raw: Bytes,
        id: u64,
        cancel: &AtomicBool,
    ) -> Result<Stored> {
        if let (Some(disk), Some(_)) = (&self.disk, &self.staged_tx) {
            let (d, k, r) = (disk.clone(), key.to_string(), raw.clone());
            match tokio::task::spawn_blocking(move || d.stage(&k, &r)).await {
                Ok(Ok(())) => {
                    self.cache.insert(key, raw);
                    self.queue_upload(key.to_string());
                    return Ok(Stored::Staged);
                }
                Ok(Err(e)) => tracing::warn!("cannot stage {key} ({e}): uploading it now"),
                Err(e) => tracing::warn!("staging task of {key}: {e}: uploading it now"),
            }
        }
        let _permit = self
            .uploads
            .acquire()
            .await
            .map_err(|_| Error::Internal("upload semaphore closed".into()))?;
        let stored = self.encode(key, raw.clone()).await?;
        self.put_limited(key, stored, Some((cancel, id))).await?;
        // Not kept in the memory cache: a reader of this client has the kernel's page
        // cache, and keeping every block written would fill the memory cache (and
        // the process's memory) with data nobody reads, pushing out what readers use.
        if let Some(disk) = &self.disk {
            if disk.keeps_written(raw.len() as u32) {
                disk.put_background(key, raw);
            }
        }
        Ok(Stored::InStore)
    }

    /// Hands a staged block to the uploader.
    fn queue_upload(&self, key: String) {
        if let Some(tx) = &self.staged_tx {
            let _ = tx.send(key);
        }
    }

    /// Uploads staged block `key` and turns its staging file into a cache file. A
    /// failed upload is queued again after a pause; a block deleted meanwhile is not
    /// uploaded (or deleted again if it was deleted during its upload).
    async fn upload_staged_block(self: Arc<Self>, key: String) {
        let Some(disk) = self.disk.clone() else {
            return;
        };
        let d = disk.clone();
        let k = key.clone();
        let from_disk = tokio::task::spawn_blocking(move || d.read_staged(&k))
            .await
            .ok()
            .flatten();
        let Some(raw) = from_disk.or_else(|| self.cache.get(&key)) else {
            if disk.is_staged(&key) {
                tracing::error!(
                    "staged block {key} is lost: its staging file is gone or damaged (was the staging directory removed?) and it is no longer in memory"
                );
            }
            return;
        };
        let stored = match self.encode(&key, raw).await {
            Ok(s) => s,
            Err(e) => return tracing::error!("cannot encode staged block {key}: {e}"),
        };
        let put = self.put_limited(&key, stored, None).await;
        // The staging file is the block's only durable copy until the store has synced.
        let put = match put {
            Ok(()) => self.store.sync().await.map_err(Error::from),
            Err(e) => Err(e),
        };
        if let Err(e) = put {
            tracing::warn!("upload of staged block {key} failed ({e}); trying again in 10 s");
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            self.queue_upload(key);
            return;
        }
        if disk.is_staged(&key) {
            let _ = tokio::task::spawn_blocking(move || disk.uploaded(&key)).await;
        } else if let Err(e) = self.delete(&key, None).await {
            tracing::warn!(
                "block {key}, deleted while it was uploaded, is left in the bucket: {e}"
            );
        }
    }

    /// One PUT under the upload limit, with retries.
    async fn put_limited(
        &self,
        key: &str,
        stored: Bytes,
        cancel: Option<(&AtomicBool, u64)>,
    ) -> Result<()> {
        if let Some(limit) = &self.upload_limit {
            limit.take(stored.len()).await;
        }
        retry("put", key, self.cfg.put_policy(), cancel, || {
            self.store.put(key, stored.clone())
        })
        .await
    }

    /// Deletes one object, retrying temporary errors; a missing object is fine.
    pub(crate) async fn delete(&self, key: &str, cancel: Option<(&AtomicBool, u64)>) -> Result<()> {
        self.cache.remove(key);
        if let Some(disk) = &self.disk {
            disk.remove_background(key);
        }
        match retry("delete", key, self.cfg.other_policy(), cancel, || {
            self.store.delete(key)
        })
        .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            r => r,
        }
    }

    async fn encode(&self, key: &str, raw: Bytes) -> Result<Bytes> {
        if !self.codec.is_costly() {
            return self.codec.encode(key, raw);
        }
        // Compressing megabytes takes milliseconds: keep it off the async workers.
        let (codec, k) = (self.codec.clone(), key.to_string());
        tokio::task::spawn_blocking(move || codec.encode(&k, raw))
            .await
            .map_err(|e| Error::Internal(format!("encode task of {key}: {e}")))?
    }

    async fn decode(&self, key: &str, stored: Bytes, len: usize) -> Result<Bytes> {
        if !self.codec.is_costly() {
            return self.codec.decode(key, stored, len);
        }
        let (codec, k) = (self.codec.clone(), key.to_string());
        tokio::task::spawn_blocking(move || codec.decode(&k, stored, len))
            .await
            .map_err(|e| Error::Internal(format!("decode task of {key}: {e}")))?
    }

    /// Bytes `range` of block `key` from the disk cache, if it is there and intact.
    async fn disk_get(&self, key: &str, range: Range<usize>) -> Option<Bytes> {
        let disk = self.disk.as_ref().filter(|d| d.may_have(key))?.clone();
        let k = key.to_string();
        tokio::task::spawn_blocking(move || disk.get(&k, range))
            .await
            .ok()
            .flatten()
    }

    /// One GET (whole object or a range) under the download concurrency and bandwidth
    /// limits, with retries.
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        let _permit = self
            .downloads
            .acquire()
            .await
            .map_err(|_| Error::Internal("download semaphore closed".into()))?;
        let got = retry("get", key, self.cfg.get_policy(), None, || {
            self.store.get(key, range.clone())
        })
        .await?;
        if let Some(limit) = &self.download_limit {
            limit.take(got.len()).await;
        }
        Ok(got)
    }

    /// Bytes `range` of block `key` (of length `len`).
    async fn read_block(
        self: Arc<Self>,
        key: String,
        len: u32,
        range: Range<usize>,
    ) -> Result<Bytes> {
        if let Some(b) = self.cache.get(&key) {
            cache_hit("memory", range.len());
            return sub_range(&key, b, range);
        }
        // Without any cache a whole block would be fetched only to be thrown away.
        let cached = self.cache.enabled() || self.disk.is_some();
        let small = range.len() < len as usize && (!cached || range.len() <= len as usize / 4);
        if self.codec.is_identity() && small {
            // A whole-block GET already running serves this read at no extra cost.
            let running = self.inflight.lock().get(&key).cloned();
            if let Some(f) = running {
                return sub_range(&key, f.await?, range);
            }
            if let Some(data) = self.disk_get(&key, range.clone()).await {
                cache_hit("disk", data.len());
                return Ok(data);
            }
            // The whole block in the background too, for the next read of it, while a
            // `--prefetch` slot is free (a busy one means the reader is too random for
            // whole blocks to pay off).
            if cached {
                if let Ok(slot) = self.prefetches.clone().try_acquire_owned() {
                    self.prefetch_block(&key, len, Some(slot));
                }
            }
            let want = range.len();
            cache_miss(want);
            let data = self
                .get(&key, Some(range.start as u64..range.end as u64))
                .await?;
            if data.len() != want {
                return Err(Error::corrupt(
                    &key,
                    format!(
                        "ranged read of {want} bytes at {} returned {}: the block is shorter than its key says",
                        range.start,
                        data.len()
                    ),
                ));
            }
            return Ok(data);
        }
        let block = match self.lookup_or_fetch(&key, len, None) {
            Lookup::Cached(b) => {
                cache_hit("memory", range.len());
                b
            }
            Lookup::Fetching(f) => f.await?,
        };
        sub_range(&key, block, range)
    }

    /// Fetches block `key` into the caches in the background unless it is in memory or
    /// being fetched already. A block in the disk cache is read from there into memory
    /// (readahead of a cached dataset, the training epoch, waited for every block
    /// when such blocks were skipped), unless there is no memory cache to read it into.
    /// The bytes in flight count against `buffer_size`; false
    /// (nothing started) when the buffer is full, since a prefetch never waits. `slot`
    /// is held by the fetch until it ends (the `--prefetch` limit of partial reads).
    fn prefetch_block(
        self: &Arc<Self>,
        key: &str,
        len: u32,
        slot: Option<OwnedSemaphorePermit>,
    ) -> bool {
        let on_disk_only =
            !self.cache.enabled() && self.disk.as_ref().is_some_and(|d| d.contains(key));
        if on_disk_only || self.cache.contains(key) || self.inflight.lock().contains_key(key) {
            return true;
        }
        let Some(res) = self.buffer.try_reserve(len as usize) else {
            tracing::debug!("prefetch of {key} skipped: buffer full");
            return false;
        };
        // Not awaited: the task runs on its own and fills the caches.
        let _ = self.lookup_or_fetch(
            key,
            len,
            Some(Background {
                _res: res,
                _slot: slot,
            }),
        );
        true
    }

    /// The cached block, or the whole-block fetch in flight for it, started now if
    /// there is none. `bg` (prefetches only) is what the fetch holds until it ends.
    pub(crate) fn lookup_or_fetch(
        self: &Arc<Self>,
        key: &str,
        len: u32,
        bg: Option<Background>,
    ) -> Lookup {
        let mut inflight = self.inflight.lock();
        if let Some(f) = inflight.get(key) {
            return Lookup::Fetching(f.clone());
        }
        // Checked under the table's lock: a fetch task caches its block before it
        // leaves the table, so a block missing from both is really not here.
        if let Some(b) = self.cache.get(key) {
            return Lookup::Cached(b);
        }
        let background = bg.is_some();
        let (inner, k) = (self.clone(), key.to_string());
        let task = tokio::spawn(async move {
            let _bg = bg;
            // Made inside the task, not under the table's lock: its drop takes the lock.
            let guard = Unregister { inner, key: k };
            let inner = &guard.inner;
            let r = inner.fetch_block(&guard.key, len).await;
            match &r {
                Ok(b) => inner.cache.insert(&guard.key, b.clone()),
                Err(e) if background => tracing::warn!("prefetch of {} failed: {e}", guard.key),
                Err(_) => {}
            }
            // `guard` drops here (or on a panic) and takes the entry out of the table.
            r
        });
        let k = key.to_string();
        let fetch: Fetch = async move {
            task.await
                .unwrap_or_else(|e| Err(Error::Internal(format!("fetch task of {k}: {e}"))))
        }
        .boxed()
        .shared();
        inflight.insert(key.to_string(), fetch.clone());
        Lookup::Fetching(fetch)
    }

    /// The whole block from the disk cache, or else GET and decoded (its length
    /// checked) and written to the disk cache in the background.
    async fn fetch_block(&self, key: &str, len: u32) -> Result<Bytes> {
        if let Some(block) = self.disk_get(key, 0..len as usize).await {
            cache_hit("disk", block.len());
            return Ok(block);
        }
        cache_miss(len as usize);
        let stored = self.get(key, None).await?;
        let block = self.decode(key, stored, len as usize).await?;
        if let Some(disk) = &self.disk {
            if disk.keeps_fetched(len) {
                disk.put_background(key, block.clone());
            }
        }
        Ok(block)
    }
}

/// The writeback uploader: takes staged blocks in the order they were queued, waits
/// out `--upload-delay` and `--upload-hours`, and uploads up to `max_uploads` at once.
/// Ends when the store is dropped.
async fn upload_staged(inner: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<String>) {
    use std::time::{Duration, SystemTime};
    while let Some(key) = rx.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        let Some(disk) = inner.disk.clone() else {
            return;
        };
        let Some(since) = disk.staged_since(&key) else {
            continue;
        };
        let due = since + disk.config().upload_delay;
        if let Ok(wait) = due.duration_since(SystemTime::now()) {
            tokio::time::sleep(wait).await;
        }
        while !disk.config().upload_allowed_at(local_hour()) {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        let Ok(permit) = inner.uploads.clone().acquire_owned().await else {
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            inner.upload_staged_block(key).await;
        });
    }
}

/// The hour of the day on this machine's clock (for `--upload-hours`).
fn local_hour() -> u8 {
    // SAFETY: time(NULL) and localtime_r into a zeroed struct of our own.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        tm.tm_hour.clamp(0, 23) as u8
    }
}

/// What a background fetch holds until it ends: its buffer bytes, and for the
/// prefetch of a partially read block, one of the `--prefetch` slots.
pub(crate) struct Background {
    _res: Reservation,
    _slot: Option<OwnedSemaphorePermit>,
}

/// Removes a fetch from the in-flight table when its task ends, however it ends.
struct Unregister {
    inner: Arc<Inner>,
    key: String,
}

impl Drop for Unregister {
    fn drop(&mut self) {
        self.inner.inflight.lock().remove(&self.key);
    }
}

/// Counts bytes served by the memory or the disk cache
/// (`nectar_blockcache_hits_total` and `..._hit_bytes_total`, by `level`). A block
/// fetched once for several readers counts once, when it is fetched.
fn cache_hit(level: &'static str, bytes: usize) {
    metrics::counter!("nectar_blockcache_hits_total", "level" => level).increment(1);
    metrics::counter!("nectar_blockcache_hit_bytes_total", "level" => level)
        .increment(bytes as u64);
}

/// Counts bytes that had to come from object storage.
fn cache_miss(bytes: usize) {
    metrics::counter!("nectar_blockcache_misses_total").increment(1);
    metrics::counter!("nectar_blockcache_miss_bytes_total").increment(bytes as u64);
}

/// `range` of a decoded block, checked rather than trusted.
fn sub_range(key: &str, block: Bytes, range: Range<usize>) -> Result<Bytes> {
    if range.end > block.len() {
        return Err(Error::corrupt(
            key,
            format!(
                "block has {} bytes, wanted up to {}",
                block.len(),
                range.end
            ),
        ));
    }
    Ok(block.slice(range))
}
