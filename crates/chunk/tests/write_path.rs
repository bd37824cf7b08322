//! The write side: bounded buffers under a slow store, uploads that start while the
//! slice is still being written, the upload concurrency limit, abort and drop cleanup,
//! and misuse of a writer.

mod common;

use common::*;
use nectar_chunk::{ChunkConfig, ChunkStore, Compression, Error};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const BS: usize = 64 << 10;

/// Samples `cs.buffered()` every millisecond until stopped; returns the maximum seen.
fn sample_buffered(cs: Arc<ChunkStore>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let max = AtomicU64::new(0);
        while !stop.load(Ordering::SeqCst) {
            max.fetch_max(cs.buffered(), Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        max.load(Ordering::SeqCst)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_size_is_never_exceeded_with_a_slow_store() {
    let backend = CountingStore::new();
    backend.set_put_delay(20);
    let limit = 4 * BS as u64;
    let conf = ChunkConfig {
        buffer_size: limit,
        max_uploads: 2,
        ..cfg(BS, Compression::Lz4)
    };
    let cs = ChunkStore::new(backend.clone(), conf);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_buffered(cs.clone(), stop.clone());
    let bytes = data(64 * BS + 123, 1);
    // Two writers at once, appends not aligned to blocks.
    let (a, b) = tokio::join!(
        write_slice(&cs, 1, &bytes, 100_000),
        write_slice(&cs, 2, &bytes[..20 * BS], 7_000)
    );
    stop.store(true, Ordering::SeqCst);
    let max = sampler.await.unwrap();
    assert!(max <= limit, "buffered {max} > {limit}");
    assert!(max >= 2 * BS as u64, "the buffer was never used ({max})");
    assert_eq!(cs.buffered(), 0, "every byte released");
    assert_eq!(backend.puts(), 65 + 20);
    let r = ChunkStore::new(backend.clone(), cfg(BS, Compression::Lz4));
    assert_eq!(&r.read(1, a, 0, a as usize).await.unwrap()[..], &bytes[..]);
    assert_eq!(
        &r.read(2, b, 0, b as usize).await.unwrap()[..],
        &bytes[..20 * BS]
    );
}

#[tokio::test]
async fn one_append_larger_than_the_buffer_makes_progress() {
    let backend = CountingStore::new();
    backend.set_put_delay(5);
    let conf = ChunkConfig {
        buffer_size: BS as u64, // exactly one block
        ..cfg(BS, Compression::None)
    };
    let cs = ChunkStore::new(backend.clone(), conf);
    let bytes = data(16 * BS + 1, 2);
    let mut w = cs.writer(3);
    w.append(&bytes).await.unwrap();
    assert!(cs.buffered() <= BS as u64);
    assert_eq!(w.finish().await.unwrap() as usize, bytes.len());
    assert_eq!(cs.buffered(), 0);
    let r = ChunkStore::new(backend.clone(), cfg(BS, Compression::None));
    assert_eq!(
        &r.read(3, bytes.len() as u32, 0, bytes.len()).await.unwrap()[..],
        &bytes[..]
    );
}

#[tokio::test]
async fn a_buffer_smaller_than_a_block_is_raised_to_one_block() {
    let backend = CountingStore::new();
    let conf = ChunkConfig {
        buffer_size: 10,
        ..cfg(BS, Compression::None)
    };
    assert!(conf.validate().is_err());
    let cs = ChunkStore::new(backend.clone(), conf);
    assert_eq!(cs.buffer_capacity(), BS as u64);
    write_slice(&cs, 4, &data(3 * BS, 3), 50_000).await;
}

#[tokio::test]
async fn full_blocks_upload_before_finish() {
    let backend = CountingStore::new();
    let cs = ChunkStore::new(backend.clone(), cfg(BS, Compression::Zstd));
    let bytes = data(3 * BS + 10, 4);
    let mut w = cs.writer(5);
    w.append(&bytes).await.unwrap();
    assert_eq!(w.len() as usize, bytes.len());
    // Without calling finish, the three full blocks reach the store.
    eventually("full blocks to be uploaded", || backend.puts() == 3).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(backend.puts(), 3, "the partial block waits for finish");
    assert!(cs.buffered() >= 10, "the partial block is still buffered");
    assert_eq!(
        backend.syncs(),
        0,
        "nothing asks for durability before finish"
    );
    assert_eq!(w.finish().await.unwrap() as usize, bytes.len());
    assert_eq!(backend.puts(), 4);
    // One barrier for the whole slice, after its last block.
    assert_eq!(backend.syncs(), 1);
    assert_eq!(backend.puts_at_sync.load(Ordering::SeqCst), 4);
    // finish is idempotent; appending after it is refused.
    assert_eq!(w.finish().await.unwrap() as usize, bytes.len());
    assert_eq!(backend.syncs(), 1);
    assert!(matches!(w.append(b"x").await, Err(Error::Invalid(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_respect_max_uploads() {
    let backend = CountingStore::new();
    backend.set_put_delay(20);
    let conf = ChunkConfig {
        max_uploads: 3,
        ..cfg(BS, Compression::None)
    };
    let cs = ChunkStore::new(backend.clone(), conf);
    let bytes = data(24 * BS, 5);
    tokio::join!(
        write_slice(&cs, 6, &bytes, 1 << 20),
        write_slice(&cs, 7, &bytes, 1 << 20)
    );
    let max = backend.max_concurrent_puts.load(Ordering::SeqCst);
    assert!(max <= 3, "{max} PUTs at once");
    assert!(max >= 2, "uploads did not overlap ({max})");
}

#[tokio::test]
async fn abort_deletes_uploaded_blocks_and_releases_buffers() {
    let backend = CountingStore::new();
    let cs = ChunkStore::new(backend.clone(), cfg(BS, Compression::Lz4));
    let bytes = data(5 * BS + 100, 6);

    // Uploads finished before abort.
    let mut w = cs.writer(8);
    w.append(&bytes).await.unwrap();
    eventually("uploads", || backend.puts() == 5).await;
    w.abort().await;
    assert_eq!(backend.objects(), 0);
    assert_eq!(cs.buffered(), 0);
    assert_eq!(
        cs.cached_bytes(),
        0,
        "aborted blocks are dropped from the cache"
    );

    // Uploads still on the wire when abort is called: none may survive it.
    backend.set_put_delay(30);
    let mut w = cs.writer(9);
    w.append(&bytes).await.unwrap();
    w.abort().await;
    assert_eq!(backend.objects(), 0);
    assert_eq!(cs.buffered(), 0);

    // After a successful finish whose commit failed, abort cleans up too.
    backend.set_put_delay(0);
    let mut w = cs.writer(10);
    w.append(&bytes).await.unwrap();
    w.finish().await.unwrap();
    assert_eq!(backend.objects(), 6);
    w.abort().await;
    assert_eq!(backend.objects(), 0);
}

#[tokio::test]
async fn dropping_an_unfinished_writer_cleans_up() {
    let backend = CountingStore::new();
    backend.set_put_delay(10);
    let cs = ChunkStore::new(backend.clone(), cfg(BS, Compression::None));
    let mut w = cs.writer(11);
    w.append(&data(4 * BS + 5, 7)).await.unwrap();
    drop(w);
    eventually("cleanup after drop", || {
        backend.objects() == 0 && cs.buffered() == 0 && backend.puts() >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(backend.objects(), 0);

    // A finished writer is left alone when dropped (its slice may be committed).
    let size = {
        let mut w = cs.writer(12);
        w.append(&data(2 * BS, 8)).await.unwrap();
        w.finish().await.unwrap()
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(backend.objects(), 2);
    assert_eq!(cs.read(12, size, 0, 10).await.unwrap().len(), 10);
}

/// A store that cannot make the blocks durable fails the slice: its caller must not
/// commit it.
#[tokio::test]
async fn a_failed_sync_fails_finish() {
    let backend = CountingStore::new();
    backend.fail_syncs.store(true, Ordering::SeqCst);
    let cs = ChunkStore::new(backend.clone(), cfg(BS, Compression::None));
    let mut w = cs.writer(9);
    w.append(&data(BS + 1, 9)).await.unwrap();
    let e = w.finish().await.unwrap_err();
    assert!(e.to_string().contains("sync failed"), "{e}");
    backend.fail_syncs.store(false, Ordering::SeqCst);
    assert!(w.finish().await.is_err(), "a failed slice stays failed");
    w.abort().await;
    assert_eq!(backend.objects(), 0);
}

#[tokio::test]
async fn an_empty_slice_stores_nothing() {
    let backend = CountingStore::new();
    let cs = ChunkStore::new(backend.clone(), ChunkConfig::default());
    let mut w = cs.writer(13);
    assert!(w.is_empty());
    w.append(&[]).await.unwrap();
    assert_eq!(w.finish().await.unwrap(), 0);
    assert_eq!(backend.puts(), 0);
    assert!(cs.block_keys(13, 0).is_empty());
    assert_eq!(cs.read(13, 0, 0, 100).await.unwrap().len(), 0);
}

/// The blocks of a dead client's unfinished slices are found by listing, in both key
/// forms, and only ids inside the ranges and not kept are deleted.
#[tokio::test]
async fn unfinished_slices_are_deleted_by_listing() {
    for hash_prefix in [false, true] {
        let backend = CountingStore::new();
        let conf = ChunkConfig {
            hash_prefix,
            ..cfg(BS, Compression::None)
        };
        let cs = ChunkStore::new(backend.clone(), conf);
        // Ids on both sides of a thousand (and of a hash bucket) boundary.
        let ids = [998u64, 999, 1000, 1001, 1256, 5000];
        let mut sizes = std::collections::HashMap::new();
        for id in ids {
            sizes.insert(id, write_slice(&cs, id, &data(3 * BS + 5, id), BS).await);
        }
        assert_eq!(backend.objects(), ids.len() * 4);
        let keep: std::collections::HashSet<u64> = [1000].into();
        let deleted = cs
            .delete_unfinished(&[(999, 1002), (1256, 1257)], &keep)
            .await
            .unwrap();
        assert_eq!(deleted, 3 * 4, "hash prefix {hash_prefix}");
        for id in ids {
            let gone = [999, 1001, 1256].contains(&id);
            let read = cs.read(id, sizes[&id], 0, 10).await;
            assert_eq!(read.is_err(), gone, "slice {id}, hash prefix {hash_prefix}");
        }
        assert_eq!(backend.objects(), 3 * 4);
    }
}
