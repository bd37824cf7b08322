//! Filling, emptying and measuring this client's caches for given slices: the work
//! behind `nectar warmup`.
//!
//! The mount does the work, so blocks land in the caches of the client that will read
//! them (the command only walks the paths and asks the mount, file by file). A block is
//! warmed the way a read fetches it: through the table of fetches in flight, so a
//! warmup and a reader of the same block share one GET. Unlike a read, the fetched
//! block is written to the disk cache before the call returns (not in the background,
//! where it could be dropped when the disk is behind), and regardless of
//! `--cache-partial-only`: the user asked for these blocks. The bytes in flight count
//! against `buffer_size`, so warming a large tree holds no more memory than writers may.
//! Without a disk cache the memory cache is the one filled, emptied or measured.

use crate::store::{Inner, Lookup};
use crate::{ChunkStore, Error, Result};
use futures::StreamExt;
use std::sync::Arc;

/// What [`ChunkStore::cache_action`] does to each block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheAction {
    /// Fetch every block that is not cached into the cache.
    Warm,
    /// Drop every cached block (staged blocks stay until they are uploaded).
    Evict,
    /// Only count the cached blocks.
    Check,
}

/// The blocks an action looked at, and how many of them were cached before it ran
/// (so for [`CacheAction::Warm`], `bytes - cached_bytes` were fetched; for
/// [`CacheAction::Evict`], `cached_bytes` were dropped).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheReport {
    pub blocks: u64,
    pub bytes: u64,
    pub cached_blocks: u64,
    pub cached_bytes: u64,
}

impl CacheReport {
    pub fn add(&mut self, other: &CacheReport) {
        self.blocks += other.blocks;
        self.bytes += other.bytes;
        self.cached_blocks += other.cached_blocks;
        self.cached_bytes += other.cached_bytes;
    }
}

/// The text form, one line of `key=value` pairs, in which the mount hands a report to
/// `nectar warmup`.
impl std::fmt::Display for CacheReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "blocks={} bytes={} cached_blocks={} cached_bytes={}",
            self.blocks, self.bytes, self.cached_blocks, self.cached_bytes
        )
    }
}

impl std::str::FromStr for CacheReport {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let mut r = CacheReport::default();
        for pair in s.split_whitespace() {
            let bad = || Error::Invalid(format!("not a cache report: {s:?}"));
            let (k, v) = pair.split_once('=').ok_or_else(bad)?;
            let v: u64 = v.parse().map_err(|_| bad())?;
            match k {
                "blocks" => r.blocks = v,
                "bytes" => r.bytes = v,
                "cached_blocks" => r.cached_blocks = v,
                "cached_bytes" => r.cached_bytes = v,
                _ => {} // a newer mount may say more
            }
        }
        Ok(r)
    }
}

impl ChunkStore {
    /// Runs `action` on every block holding bytes `[off, off+len)` of the slices
    /// `(id, size, off, len)` (each block once), up to `max_downloads` blocks at once.
    /// The first error (a block that cannot be fetched) is returned after the other
    /// blocks were tried.
    pub async fn cache_action(
        &self,
        action: CacheAction,
        ranges: &[(u64, u32, u32, u32)],
    ) -> Result<CacheReport> {
        let inner = &self.inner;
        let bs = inner.cfg.block_size as u64;
        let mut seen = std::collections::HashSet::new();
        let mut blocks: Vec<(String, u32)> = Vec::new();
        for &(id, size, off, len) in ranges {
            let end = (off as u64 + len as u64).min(size as u64);
            if off as u64 >= end {
                continue;
            }
            for i in (off as u64 / bs)..=((end - 1) / bs) {
                let blen = crate::key::block_len(size, bs as usize, i as u32);
                let key = inner.key(id, i as u32, blen);
                if seen.insert(key.clone()) {
                    blocks.push((key, blen));
                }
            }
        }
        let results: Vec<Result<(u32, bool)>> = futures::stream::iter(blocks)
            .map(|(key, len)| inner.clone().block_action(action, key, len))
            .buffer_unordered(inner.cfg.max_downloads)
            .collect()
            .await;
        let mut report = CacheReport::default();
        let mut first_err = None;
        for r in results {
            match r {
                Ok((len, cached)) => {
                    report.blocks += 1;
                    report.bytes += len as u64;
                    if cached {
                        report.cached_blocks += 1;
                        report.cached_bytes += len as u64;
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(report), Err)
    }
}

impl Inner {
    /// `action` on block `key` of length `len`; returns the length and whether the
    /// block was cached before.
    async fn block_action(
        self: Arc<Self>,
        action: CacheAction,
        key: String,
        len: u32,
    ) -> Result<(u32, bool)> {
        let cached = match self.disk.clone() {
            Some(d) => {
                let k = key.clone();
                blocking(move || d.holds(&k)).await?
            }
            None => self.cache.contains(&key),
        };
        match action {
            CacheAction::Check => {}
            CacheAction::Evict => {
                self.cache.remove(&key);
                if let Some(d) = self.disk.clone() {
                    blocking(move || d.evict(&key)).await?;
                }
            }
            CacheAction::Warm if cached => {}
            CacheAction::Warm => {
                let _reservation = self.buffer.reserve(len as usize).await?;
                let block = match self.lookup_or_fetch(&key, len, None) {
                    Lookup::Cached(b) => b,
                    Lookup::Fetching(f) => f.await?,
                };
                if let Some(d) = self.disk.clone() {
                    blocking(move || d.put(&key, &block)).await?;
                }
            }
        }
        Ok((len, cached))
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("cache task: {e}")))
}
