//! The disk cache under the block store, counted at the object store: a second read
//! costs no GET, a restarted client finds its cache again at once, small written
//! blocks are cached and large ones only when asked, and a cache directory that fails
//! under a running client only sends reads back to object storage; warmup fills the
//! disk cache before it returns, and evict and check do what they say.

mod common;

use common::*;
use nectar_chunk::{
    CacheAction, CacheReport, ChunkConfig, ChunkStore, Compression, DiskCacheConfig,
};
use std::path::Path;
use std::sync::Arc;

const BS: usize = 64 << 10;

fn with_disk(dir: &Path, mem: u64) -> ChunkConfig {
    ChunkConfig {
        mem_cache_size: mem,
        disk_cache: Some(DiskCacheConfig {
            free_space_ratio: 0.0,
            size: 64 << 20,
            ..DiskCacheConfig::new(vec![dir.to_path_buf()], "uuid")
        }),
        ..cfg(BS, Compression::Lz4)
    }
}

async fn write_with(backend: &Arc<CountingStore>, conf: ChunkConfig, id: u64, bytes: &[u8]) -> u32 {
    let w = ChunkStore::new(backend.clone(), conf);
    write_slice(&w, id, bytes, BS).await
}

/// Waits until `n` blocks are in the disk cache of `cs`.
async fn cached(cs: &ChunkStore, n: usize) {
    eventually("blocks in the disk cache", || {
        cs.disk_cache_usage().unwrap().0 >= n
    })
    .await;
}

#[tokio::test]
async fn a_second_read_costs_no_get_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let backend = CountingStore::new();
    let bytes = data(5 * BS + 1234, 1);
    let size = write_with(&backend, cfg(BS, Compression::Lz4), 1, &bytes).await;
    let r = ChunkStore::new(backend.clone(), with_disk(dir.path(), 0));
    assert_eq!(
        &r.read(1, size, 0, bytes.len()).await.unwrap()[..],
        &bytes[..]
    );
    assert_eq!(backend.gets(), 6);
    cached(&r, 6).await;
    // No memory cache: this read can only come from disk.
    assert_eq!(
        &r.read(1, size, 100, 3 * BS).await.unwrap()[..],
        &bytes[100..100 + 3 * BS]
    );
    assert_eq!(backend.gets(), 6);
    drop(r);
    // A new client over the same directory: hits at once, before or after its scan.
    let again = ChunkStore::new(backend.clone(), with_disk(dir.path(), 0));
    assert_eq!(
        &again.read(1, size, 0, bytes.len()).await.unwrap()[..],
        &bytes[..]
    );
    assert_eq!(
        backend.gets(),
        6,
        "the restarted client fetched what it had cached"
    );
    cached(&again, 6).await;
}

#[tokio::test]
async fn written_blocks_are_cached_when_small_or_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let backend = CountingStore::new();
    let w = ChunkStore::new(backend.clone(), with_disk(dir.path(), 0));
    // Two full blocks and a short one: only the short one is kept.
    let bytes = data(2 * BS + 500, 2);
    let size = write_slice(&w, 2, &bytes, BS).await;
    cached(&w, 1).await;
    assert_eq!(
        &w.read(2, size, 2 * BS as u32, 500).await.unwrap()[..],
        &bytes[2 * BS..]
    );
    assert_eq!(backend.gets(), 0, "the short block was read from the cache");
    let mut large = with_disk(dir.path(), 0);
    large.disk_cache.as_mut().unwrap().large_write = true;
    let w = ChunkStore::new(backend.clone(), large);
    let size = write_slice(&w, 3, &bytes, BS).await;
    cached(&w, 4).await;
    assert_eq!(
        &w.read(3, size, 0, bytes.len()).await.unwrap()[..],
        &bytes[..]
    );
    assert_eq!(backend.gets(), 0);
}

#[tokio::test]
async fn a_failed_cache_directory_sends_reads_to_object_storage() {
    let dir = tempfile::tempdir().unwrap();
    let backend = CountingStore::new();
    let bytes = data(4 * BS, 3);
    let size = write_with(&backend, cfg(BS, Compression::Lz4), 4, &bytes).await;
    let r = ChunkStore::new(backend.clone(), with_disk(dir.path(), 0));
    r.read(4, size, 0, bytes.len()).await.unwrap();
    cached(&r, 4).await;
    // The disk goes bad under the client: every cache file becomes unreadable (a
    // directory where a file was makes read() fail with EISDIR).
    let raw = dir.path().join("uuid/raw");
    let mut stack = vec![raw.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                std::fs::remove_file(&p).unwrap();
                std::fs::create_dir(&p).unwrap();
            }
        }
    }
    let before = backend.gets();
    for _ in 0..2 {
        assert_eq!(
            &r.read(4, size, 0, bytes.len()).await.unwrap()[..],
            &bytes[..]
        );
    }
    assert_eq!(
        backend.gets() - before,
        8,
        "both reads after the failure went to object storage"
    );
    // Caching the blocks again fails (a directory is in the way): out of use.
    eventually("the directory taken out of use", || {
        r.disk_cache_usage() == Some((0, 0))
    })
    .await;
    assert_eq!(
        &r.read(4, size, 0, bytes.len()).await.unwrap()[..],
        &bytes[..]
    );
}

/// Writeback: a slice is done once its blocks are staged on local disk; nothing is
/// uploaded while the upload is delayed, reads are served from the staging files, and
/// a new client over the same cache directory uploads what an earlier one staged.
#[tokio::test]
async fn writeback_stages_then_a_later_client_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let backend = CountingStore::new();
    let writeback = |delay: u64| {
        let mut c = with_disk(dir.path(), 0);
        let d = c.disk_cache.as_mut().unwrap();
        d.writeback = true;
        d.upload_delay = std::time::Duration::from_secs(delay);
        c
    };
    let bytes = data(3 * BS + 10, 5);
    let w = ChunkStore::new(backend.clone(), writeback(3600));
    let size = write_slice(&w, 6, &bytes, BS).await;
    assert_eq!(backend.puts(), 0, "an upload ran although it is delayed");
    assert_eq!(
        backend.syncs(),
        0,
        "staged blocks need no sync of the store"
    );
    assert_eq!(w.staged().0, 4);
    assert!(dir.path().join("uuid/rawstaging/chunks").is_dir());
    assert_eq!(
        &w.read(6, size, 0, bytes.len()).await.unwrap()[..],
        &bytes[..]
    );
    assert_eq!(backend.gets(), 0);
    drop(w);
    // The next client over the same directory uploads all four, and keeps the short
    // one as a cache file.
    let again = ChunkStore::new(backend.clone(), writeback(0));
    eventually("the staged blocks uploaded", || {
        backend.objects() == 4 && again.staged() == (0, 0)
    })
    .await;
    // Each staging file went only after the store synced its upload.
    assert!(backend.syncs() >= 4, "{} syncs", backend.syncs());
    let fresh = ChunkStore::new(backend.clone(), cfg(BS, Compression::Lz4));
    assert_eq!(
        &fresh.read(6, size, 0, bytes.len()).await.unwrap()[..],
        &bytes[..]
    );
    // A slice deleted before its upload is never uploaded.
    let w = ChunkStore::new(backend.clone(), writeback(3600));
    let size = write_slice(&w, 7, &bytes, BS).await;
    w.remove(7, size).await.unwrap();
    assert_eq!(w.staged(), (0, 0));
    drop(w);
    let again = ChunkStore::new(backend.clone(), writeback(0));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(backend.objects(), 4);
    drop(again);
}

#[tokio::test]
async fn warmup_fills_the_disk_before_it_returns_then_check_and_evict_agree() {
    let dir = tempfile::tempdir().unwrap();
    let backend = CountingStore::new();
    let bytes = data(3 * BS + 10, 5);
    let size = write_with(&backend, cfg(BS, Compression::Lz4), 5, &bytes).await;
    let mut conf = with_disk(dir.path(), 0);
    // Warmup caches what it is asked for, whatever reads would keep.
    conf.disk_cache.as_mut().unwrap().partial_only = true;
    let c = ChunkStore::new(backend.clone(), conf.clone());
    // Only the blocks holding bytes [BS, 2*BS+1) of the slice: blocks 1 and 2, and
    // block 1 named twice is warmed once.
    let ranges = [
        (5, size, BS as u32, BS as u32 + 1),
        (5, size, BS as u32, 10),
    ];
    let report = |blocks: u64, cached: u64| CacheReport {
        blocks,
        bytes: blocks * BS as u64,
        cached_blocks: cached,
        cached_bytes: cached * BS as u64,
    };
    let check = c.cache_action(CacheAction::Check, &ranges).await.unwrap();
    assert_eq!(check, report(2, 0));
    let warm = c.cache_action(CacheAction::Warm, &ranges).await.unwrap();
    assert_eq!(warm, report(2, 0));
    assert_eq!(backend.gets(), 2);
    assert_eq!(
        c.disk_cache_usage().unwrap().0,
        2,
        "on disk when warmup returns"
    );
    let again = c.cache_action(CacheAction::Warm, &ranges).await.unwrap();
    assert_eq!(again, report(2, 2));
    assert_eq!(backend.gets(), 2, "a warm block is not fetched again");
    drop(c);
    // A restarted client sees them, before its scan as after.
    let c = ChunkStore::new(backend.clone(), conf);
    let check = c.cache_action(CacheAction::Check, &ranges).await.unwrap();
    assert_eq!(check, report(2, 2));
    c.read(5, size, BS as u32, BS + 1).await.unwrap();
    assert_eq!(backend.gets(), 2, "read from the warmed cache");
    let evicted = c.cache_action(CacheAction::Evict, &ranges).await.unwrap();
    assert_eq!(evicted, report(2, 2));
    let check = c.cache_action(CacheAction::Check, &ranges).await.unwrap();
    assert_eq!(check, report(2, 0));
    assert_eq!(c.disk_cache_usage().unwrap().0, 0);
    c.read(5, size, BS as u32, BS + 1).await.unwrap();
    assert_eq!(backend.gets(), 4, "evicted blocks are fetched again");
    // The text form the mount answers with reads back the same.
    let text = warm.to_string();
    assert_eq!(text.parse::<CacheReport>().unwrap(), warm);
    assert!("blocks=x".parse::<CacheReport>().is_err());
}

/// Readahead of blocks the disk cache holds (the second epoch of a training run) reads
/// them from disk into memory ahead of the reader, without a GET.
#[tokio::test]
async fn readahead_brings_disk_cached_blocks_into_memory() {
    let dir = tempfile::tempdir().unwrap();
    let backend = CountingStore::new();
    let bytes = data(4 * BS, 3);
    let size = write_with(&backend, cfg(BS, Compression::Lz4), 1, &bytes).await;
    let first = ChunkStore::new(backend.clone(), with_disk(dir.path(), 0));
    first.read(1, size, 0, bytes.len()).await.unwrap();
    cached(&first, 4).await;
    drop(first);
    let gets = backend.gets();
    let r = ChunkStore::new(backend.clone(), with_disk(dir.path(), 16 << 20));
    cached(&r, 4).await;
    r.prefetch(1, size, 0, size);
    eventually("prefetched blocks in memory", || {
        (0..4).all(|i| r.in_memory(1, size, (i * BS) as u32))
    })
    .await;
    assert_eq!(backend.gets(), gets, "a cached block was fetched again");
    assert_eq!(
        &r.read(1, size, 0, bytes.len()).await.unwrap()[..],
        &bytes[..]
    );
}
