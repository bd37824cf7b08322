//! The read side: ranged GETs for small parts of uncompressed blocks, one shared GET per
//! block for concurrent readers, the memory cache's byte limit, prefetch, remove, and
//! damaged blocks reported as `Corrupt`.

mod common;

use bytes::Bytes;
use common::*;
use nectar_chunk::{block_key, ChunkConfig, ChunkStore, Compression, Error};
use nectar_object::ObjectStore;
use std::sync::Arc;

const BS: usize = 1 << 20;

/// Writes a slice with one client and returns a fresh client over the same bucket.
async fn written(
    backend: &Arc<CountingStore>,
    conf: ChunkConfig,
    id: u64,
    bytes: &[u8],
) -> (Arc<ChunkStore>, u32) {
    let w = ChunkStore::new(backend.clone(), conf.clone());
    let size = write_slice(&w, id, bytes, 1 << 20).await;
    (ChunkStore::new(backend.clone(), conf), size)
}

#[tokio::test]
async fn small_read_of_uncompressed_block_uses_a_ranged_get() {
    let backend = CountingStore::new();
    let bytes = data(3 * BS, 1);
    let no_prefetch = ChunkConfig {
        prefetch: 0,
        ..cfg(BS, Compression::None)
    };
    let (r, size) = written(&backend, no_prefetch, 5, &bytes).await;

    let off = BS + 100_000;
    let got = r.read(5, size, off as u32, 4096).await.unwrap();
    assert_eq!(&got[..], &bytes[off..off + 4096]);
    assert_eq!(backend.gets(), 1);
    assert_eq!(backend.ranged_gets(), 1);
    assert_eq!(backend.get_bytes(), 4096, "only the range was transferred");
    assert_eq!(r.cached_bytes(), 0, "a ranged read does not fill the cache");

    // A whole-block read fetches the block once and caches it ...
    let got = r.read(5, size, BS as u32, BS).await.unwrap();
    assert_eq!(&got[..], &bytes[BS..2 * BS]);
    assert_eq!((backend.gets(), backend.ranged_gets()), (2, 1));
    assert_eq!(backend.get_bytes(), 4096 + BS as u64);
    // ... and then small reads of it are served from memory.
    r.read(5, size, off as u32, 4096).await.unwrap();
    assert_eq!(backend.gets(), 2);

    // A read of more than a quarter of a block takes the whole block.
    r.read(5, size, 0, BS / 2).await.unwrap();
    assert_eq!((backend.gets(), backend.ranged_gets()), (3, 1));
}

/// With `--prefetch` (1 by default) a small read is answered by its ranged GET and the
/// whole block is fetched in the background, so the next read of the block costs no GET.
#[tokio::test]
async fn a_small_read_prefetches_its_whole_block() {
    let backend = CountingStore::new();
    let bytes = data(3 * BS, 4);
    let (r, size) = written(&backend, cfg(BS, Compression::None), 7, &bytes).await;
    let got = r.read(7, size, 100, 4096).await.unwrap();
    assert_eq!(&got[..], &bytes[100..4196]);
    eventually("block 0 prefetched", || r.cached_bytes() == BS as u64).await;
    assert_eq!((backend.gets(), backend.ranged_gets()), (2, 1));
    let got = r.read(7, size, 50_000, 4096).await.unwrap();
    assert_eq!(&got[..], &bytes[50_000..54_096]);
    assert_eq!(backend.gets(), 2, "the prefetched block served the read");
}

#[tokio::test]
async fn compressed_blocks_are_never_range_read() {
    for c in [Compression::Lz4, Compression::Zstd] {
        let backend = CountingStore::new();
        let bytes = data(2 * BS, 2);
        let (r, size) = written(&backend, cfg(BS, c), 6, &bytes).await;
        let got = r.read(6, size, 1000, 10).await.unwrap();
        assert_eq!(&got[..], &bytes[1000..1010]);
        assert_eq!((backend.gets(), backend.ranged_gets()), (1, 0), "{c}");
    }
}

#[tokio::test]
async fn without_a_cache_partial_reads_are_ranged() {
    let backend = CountingStore::new();
    let bytes = data(2 * BS, 3);
    let conf = ChunkConfig {
        mem_cache_size: 0,
        ..cfg(BS, Compression::None)
    };
    let (r, size) = written(&backend, conf, 7, &bytes).await;
    let got = r.read(7, size, 10, BS - 20).await.unwrap();
    assert_eq!(&got[..], &bytes[10..BS - 10]);
    assert_eq!((backend.gets(), backend.ranged_gets()), (1, 1));
    assert_eq!(backend.get_bytes(), (BS - 20) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_of_one_block_share_one_get() {
    for cache in [256u64 << 20, 0] {
        for c in COMPRESSIONS {
            let backend = CountingStore::new();
            let bytes = Arc::new(data(BS + 10, 4));
            let conf = ChunkConfig {
                mem_cache_size: cache,
                ..cfg(BS, c)
            };
            let (r, size) = written(&backend, conf, 8, &bytes).await;
            backend.set_get_delay(200);
            let readers: Vec<_> = (0..32)
                .map(|i| {
                    let (r, bytes) = (r.clone(), bytes.clone());
                    // Large reads at varying offsets all need the whole block 0 — but
                    // with neither a cache nor compression a partial read is a ranged
                    // GET by design, so there every reader reads the whole block.
                    let (off, len) = if cache == 0 && c == Compression::None {
                        (0, BS)
                    } else {
                        (i * 1000, BS / 2)
                    };
                    tokio::spawn(async move {
                        let got = r.read(8, size, off as u32, len).await.unwrap();
                        assert_eq!(&got[..], &bytes[off..off + len]);
                    })
                })
                .collect();
            for t in readers {
                t.await.unwrap();
            }
            assert_eq!(
                backend.gets(),
                1,
                "cache {cache} {c}: one GET for 32 readers"
            );
            // Once the shared GET is over, a reader without a cache must fetch again.
            r.read(8, size, 0, BS).await.unwrap();
            assert_eq!(backend.gets(), if cache > 0 { 1 } else { 2 });
        }
    }
}

#[tokio::test]
async fn a_cancelled_reader_does_not_cancel_the_shared_get() {
    let backend = CountingStore::new();
    let bytes = data(BS, 5);
    let (r, size) = written(&backend, cfg(BS, Compression::Lz4), 9, &bytes).await;
    // The GET outlasts the reader by far, so a stalled runtime cannot let it finish
    // before the abort.
    backend.set_get_delay(1000);
    let first = {
        let r = r.clone();
        tokio::spawn(async move { r.read(9, size, 0, BS).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    first.abort();
    let got = r.read(9, size, 0, BS).await.unwrap();
    assert_eq!(&got[..], &bytes[..]);
    assert_eq!(backend.gets(), 1);
}

#[tokio::test]
async fn memory_cache_stays_within_its_limit() {
    let bs = 64 << 10;
    let limit = (bs * 5 / 2) as u64; // room for two blocks
    let backend = CountingStore::new();
    let bytes = data(10 * bs, 6);
    let conf = ChunkConfig {
        mem_cache_size: limit,
        ..cfg(bs, Compression::Zstd)
    };
    // Blocks written are not kept in memory: readers of this client have the page
    // cache, and the memory cache is for what is read.
    let w = ChunkStore::new(backend.clone(), conf.clone());
    let size = write_slice(&w, 10, &bytes, 50_000).await;
    assert_eq!(w.cached_bytes(), 0);

    let r = ChunkStore::new(backend.clone(), conf);
    for i in 0..10 {
        let got = r.read(10, size, (i * bs) as u32, bs).await.unwrap();
        assert_eq!(&got[..], &bytes[i * bs..(i + 1) * bs]);
        assert!(r.cached_bytes() <= limit, "{} > {limit}", r.cached_bytes());
    }
    assert_eq!(backend.gets(), 10);
    assert_eq!(r.cached_bytes(), 2 * bs as u64);
    // The most recent block is still cached; the first one was evicted.
    r.read(10, size, (9 * bs) as u32, bs).await.unwrap();
    assert_eq!(backend.gets(), 10);
    r.read(10, size, 0, bs).await.unwrap();
    assert_eq!(backend.gets(), 11);
}

#[tokio::test]
async fn prefetch_fills_the_cache_once() {
    let backend = CountingStore::new();
    let bs = 64 << 10;
    let bytes = data(6 * bs + 5, 7);
    let (r, size) = written(&backend, cfg(bs, Compression::Lz4), 11, &bytes).await;
    backend.set_get_delay(50);
    r.prefetch(11, size, 0, size);
    r.prefetch(11, size, 0, size); // joins the fetches already running
    let got = r.read(11, size, 0, size as usize).await.unwrap();
    assert_eq!(&got[..], &bytes[..]);
    eventually("prefetch to finish", || r.buffered() == 0).await;
    assert_eq!(backend.gets(), 7, "one GET per block");
    assert_eq!(r.cached_bytes(), size as u64);
    r.prefetch(11, size, 0, size); // everything cached: nothing to do
    r.read(11, size, 0, size as usize).await.unwrap();
    assert_eq!(backend.gets(), 7);
}

/// The blocks that end inside a range a reader is done with leave the memory cache;
/// a block that ends after it stays.
#[tokio::test]
async fn blocks_a_reader_is_done_with_leave_the_memory_cache() {
    let backend = CountingStore::new();
    let bs = 64 << 10;
    let bytes = data(3 * bs + 10, 8);
    let (r, size) = written(&backend, cfg(bs, Compression::Lz4), 12, &bytes).await;
    let got = r.read(12, size, 0, size as usize).await.unwrap();
    assert_eq!(&got[..], &bytes[..]);
    assert_eq!(r.cached_bytes(), size as u64);
    r.consumed(12, size, 0, bs as u32 + 1);
    assert_eq!(r.cached_bytes(), size as u64 - bs as u64, "block 0 only");
    let gets = backend.gets();
    r.read(12, size, bs as u32, 1).await.unwrap();
    assert_eq!(backend.gets(), gets, "block 1 is still cached");
    r.read(12, size, 0, 1).await.unwrap();
    assert_eq!(backend.gets(), gets + 1, "block 0 was dropped");
    // The short last block ends at the slice's end.
    r.consumed(12, size, 2 * bs as u32, size);
    assert_eq!(r.cached_bytes(), 2 * bs as u64, "blocks 2 and 3 dropped");
}

#[tokio::test]
async fn prefetch_is_bounded_by_the_buffer_and_errors_are_only_logged() {
    let backend = CountingStore::new();
    let bs = 64 << 10;
    let bytes = data(8 * bs, 8);
    let conf = ChunkConfig {
        buffer_size: 2 * bs as u64,
        ..cfg(bs, Compression::None)
    };
    let (r, size) = written(&backend, conf, 12, &bytes).await;
    backend.set_get_delay(100);
    r.prefetch(12, size, 0, size);
    assert!(r.buffered() <= 2 * bs as u64);
    assert_eq!(r.buffered(), 2 * bs as u64, "the budget was used");
    eventually("prefetch to finish", || r.buffered() == 0).await;
    assert_eq!(backend.gets(), 2, "blocks beyond the budget are skipped");

    // Prefetching a slice that does not exist fails quietly.
    r.prefetch(999, size, 0, size);
    eventually("failed prefetch to end", || r.buffered() == 0).await;
    assert!(r.read(999, size, 0, 10).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn remove_deletes_every_block_and_forgets_the_cache() {
    for hp in [false, true] {
        let backend = CountingStore::new();
        let bs = 64 << 10;
        let bytes = data(5 * bs - 3, 9);
        let conf = ChunkConfig {
            hash_prefix: hp,
            ..cfg(bs, Compression::Zstd)
        };
        let cs = ChunkStore::new(backend.clone(), conf);
        let size = write_slice(&cs, 13, &bytes, 100_000).await;
        let other = write_slice(&cs, 14, &bytes[..100], 100).await;
        assert_eq!(backend.objects(), 6);
        // Both slices read once, so both are in the memory cache.
        cs.read(13, size, 0, bytes.len()).await.unwrap();
        cs.read(14, other, 0, 100).await.unwrap();
        assert_eq!(cs.cached_bytes(), bytes.len() as u64 + 100);
        cs.remove(13, size).await.unwrap();
        assert_eq!(backend.objects(), 1, "only the other slice is left");
        assert_eq!(cs.cached_bytes(), 100);
        let e = cs.read(13, size, 0, 10).await.unwrap_err();
        assert!(e.is_not_found(), "{e}");
        // Missing blocks are fine.
        cs.remove(13, size).await.unwrap();
        cs.remove(14, other).await.unwrap();
        assert_eq!(backend.objects(), 0);
    }
}

#[tokio::test]
async fn damaged_blocks_are_corrupt_not_a_panic() {
    let backend = CountingStore::new();
    let bs = 4096;
    let key = block_key(20, 0, bs as u32, false);
    let corrupt = |e: Error| {
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains(&key), "{e}");
        assert!(!e.is_temporary());
    };
    // A short uncompressed block: whole-block read and a ranged read past its end.
    backend
        .put(&key, Bytes::from(vec![1u8; 1000]))
        .await
        .unwrap();
    let plain = ChunkStore::new(backend.clone(), cfg(bs, Compression::None));
    corrupt(plain.read(20, bs as u32, 0, bs).await.unwrap_err());
    corrupt(plain.read(20, bs as u32, 2000, 100).await.unwrap_err());
    // A longer one too.
    backend
        .put(&key, Bytes::from(vec![1u8; bs + 1]))
        .await
        .unwrap();
    corrupt(plain.read(20, bs as u32, 0, bs).await.unwrap_err());

    // Garbage and truncated frames for the compressed codecs.
    for c in [Compression::Lz4, Compression::Zstd] {
        let cs = ChunkStore::new(backend.clone(), cfg(bs, c));
        backend
            .put(&key, Bytes::from_static(b"\xff\xffnot a block"))
            .await
            .unwrap();
        corrupt(cs.read(20, bs as u32, 0, 10).await.unwrap_err());
        let good = nectar_chunk::Codec::new(c)
            .encode(&key, Bytes::from(data(bs, 1)))
            .unwrap();
        backend
            .put(&key, good.slice(..good.len() - 8))
            .await
            .unwrap();
        corrupt(cs.read(20, bs as u32, 0, 10).await.unwrap_err());
        // Nothing bad was cached: after a repair the block reads.
        backend.put(&key, good).await.unwrap();
        assert_eq!(
            &cs.read(20, bs as u32, 0, bs).await.unwrap()[..],
            &data(bs, 1)[..]
        );
    }
}
