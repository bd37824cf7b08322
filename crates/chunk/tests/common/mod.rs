//! Helpers shared by the integration tests: a counting, optionally slow object store
//! (to observe which GETs and PUTs the block store makes, and how many at once) and
//! deterministic test data that is partly compressible, so every codec does real work.

#![allow(dead_code)]

use async_trait::async_trait;
use bytes::Bytes;
use nectar_chunk::{ChunkConfig, ChunkStore, Compression, SliceWriter};
use nectar_object::{MemStore, ObjectInfo, ObjectStore, Result};
use rand::{Rng, SeedableRng};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const COMPRESSIONS: [Compression; 3] = [Compression::None, Compression::Lz4, Compression::Zstd];

/// Wraps a [`MemStore`] and counts what reaches it.
#[derive(Default)]
pub struct CountingStore {
    pub mem: MemStore,
    pub gets: AtomicUsize,
    pub ranged_gets: AtomicUsize,
    pub get_bytes: AtomicU64,
    pub puts: AtomicUsize,
    pub deletes: AtomicUsize,
    /// Durability barriers asked, and the puts done when the last one was asked.
    pub syncs: AtomicUsize,
    pub puts_at_sync: AtomicUsize,
    /// While set, every sync fails (a disk that lost writes).
    pub fail_syncs: std::sync::atomic::AtomicBool,
    puts_now: AtomicUsize,
    pub max_concurrent_puts: AtomicUsize,
    get_delay_ms: AtomicU64,
    put_delay_ms: AtomicU64,
}

impl CountingStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn set_get_delay(&self, ms: u64) {
        self.get_delay_ms.store(ms, Ordering::SeqCst);
    }

    pub fn set_put_delay(&self, ms: u64) {
        self.put_delay_ms.store(ms, Ordering::SeqCst);
    }

    pub fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }

    pub fn ranged_gets(&self) -> usize {
        self.ranged_gets.load(Ordering::SeqCst)
    }

    pub fn get_bytes(&self) -> u64 {
        self.get_bytes.load(Ordering::SeqCst)
    }

    pub fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }

    pub fn objects(&self) -> usize {
        self.mem.len()
    }

    pub fn syncs(&self) -> usize {
        self.syncs.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    fn describe(&self) -> String {
        "counting+memory://".into()
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let now = self.puts_now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_concurrent_puts.fetch_max(now, Ordering::SeqCst);
        let ms = self.put_delay_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let r = self.mem.put(key, data).await;
        self.puts_now.fetch_sub(1, Ordering::SeqCst);
        self.puts.fetch_add(1, Ordering::SeqCst);
        r
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        if range.is_some() {
            self.ranged_gets.fetch_add(1, Ordering::SeqCst);
        }
        let ms = self.get_delay_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let data = self.mem.get(key, range).await?;
        self.get_bytes
            .fetch_add(data.len() as u64, Ordering::SeqCst);
        Ok(data)
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        self.mem.head(key).await
    }

    async fn sync(&self) -> Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        self.puts_at_sync.store(self.puts(), Ordering::SeqCst);
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(nectar_object::Error::Permanent(
                "injected: sync failed".into(),
            ));
        }
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.deletes.fetch_add(1, Ordering::SeqCst);
        self.mem.delete(key).await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectInfo>> {
        self.mem.list(prefix, start_after, limit).await
    }
}

/// `n` bytes: runs of repeated text (compressible) and random bytes, from `seed`.
pub fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let run = rng.gen_range(1..4096).min(n - v.len());
        if rng.gen_bool(0.5) {
            let b: u8 = rng.gen();
            v.extend(std::iter::repeat_n(b, run));
        } else {
            v.extend((0..run).map(|_| rng.gen::<u8>()));
        }
    }
    v
}

/// A small-block configuration for tests.
pub fn cfg(block_size: usize, compression: Compression) -> ChunkConfig {
    ChunkConfig {
        block_size,
        compression,
        ..ChunkConfig::default()
    }
}

/// Writes `bytes` as slice `id` in appends of `piece` bytes and finishes it.
pub async fn write_slice(cs: &Arc<ChunkStore>, id: u64, bytes: &[u8], piece: usize) -> u32 {
    let mut w: SliceWriter = cs.writer(id);
    for p in bytes.chunks(piece.max(1)) {
        w.append(p).await.expect("append");
    }
    let size = w.finish().await.expect("finish");
    assert_eq!(size as usize, bytes.len());
    size
}

/// Waits (up to 10 s) until `cond` holds.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}
