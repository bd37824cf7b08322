//! Write/read round trips: every interesting slice size, every compression, both key
//! layouts, read back by the writing client (from its cache) and by a fresh client (from
//! the object store), whole and in random sub-ranges.

mod common;

use common::*;
use nectar_chunk::{block_key, ChunkConfig, ChunkStore, Compression};
use nectar_object::ObjectStore;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

const BS: usize = 64 << 10;

async fn check_round_trip(size: usize, c: Compression, hash_prefix: bool, id: u64) {
    let backend = CountingStore::new();
    let conf = ChunkConfig {
        hash_prefix,
        ..cfg(BS, c)
    };
    let writer = ChunkStore::new(backend.clone(), conf.clone());
    let bytes = data(size, id);
    let got = write_slice(&writer, id, &bytes, 10_000).await;
    assert_eq!(got as usize, size);

    // Exactly the expected objects exist, under the expected keys and lengths.
    let keys = writer.block_keys(id, got);
    assert_eq!(keys.len(), size.div_ceil(BS));
    assert_eq!(backend.objects(), keys.len());
    for (i, k) in keys.iter().enumerate() {
        let len = (size - i * BS).min(BS) as u32;
        assert_eq!(k, &block_key(id, i as u32, len, hash_prefix));
        assert!(backend.head(k).await.unwrap().is_some(), "{k} missing");
    }

    // The writer reads its writes back (written blocks are not kept in memory: a
    // reader of the same client has the kernel's page cache).
    let all = writer.read(id, got, 0, size).await.unwrap();
    assert_eq!(&all[..], &bytes[..], "{c} {size}");

    // Another client reads from the object store.
    let reader = ChunkStore::new(backend.clone(), conf);
    let all = reader.read(id, got, 0, size + 100).await.unwrap();
    assert_eq!(&all[..], &bytes[..], "{c} {size} (fresh client)");
    assert_eq!(reader.read(id, got, got, 10).await.unwrap().len(), 0);
    assert_eq!(reader.read(id, got, got + 5, 10).await.unwrap().len(), 0);
}

#[tokio::test]
async fn every_size_and_compression() {
    let sizes = [0, 1, BS - 1, BS, BS + 1, 3 * BS + BS / 2];
    let mut id = 1;
    for c in COMPRESSIONS {
        for size in sizes {
            for hp in [false, true] {
                check_round_trip(size, c, hp, id).await;
                id += 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_64_mib_slice_with_small_blocks() {
    let size = 64 << 20;
    let bytes = Arc::new(data(size, 64));
    for (n, c) in COMPRESSIONS.into_iter().enumerate() {
        let backend = CountingStore::new();
        let conf = ChunkConfig {
            mem_cache_size: 0,
            ..cfg(256 << 10, c)
        };
        let cs = ChunkStore::new(backend.clone(), conf);
        let id = 1_000_000 + n as u64;
        let got = write_slice(&cs, id, &bytes, 1 << 20).await;
        assert_eq!(got, 64 << 20);
        assert_eq!(backend.objects(), 256);
        // One more byte would cross the chunk boundary.
        let mut w = cs.writer(id + 10);
        w.append(&bytes[..1000]).await.unwrap();
        assert!(
            w.append(&bytes).await.is_err(),
            "slice over 64 MiB accepted"
        );
        w.abort().await;
        let back = cs.read(id, got, 0, size).await.unwrap();
        assert!(back[..] == bytes[..], "{c}: 64 MiB differ");
        assert_eq!(cs.buffered(), 0);
    }
}

#[tokio::test]
async fn random_sub_ranges_match_the_written_bytes() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for c in COMPRESSIONS {
        let backend = CountingStore::new();
        let size = 5 * BS + 777;
        let bytes = data(size, 99);
        let w = ChunkStore::new(backend.clone(), cfg(BS, c));
        let got = write_slice(&w, 42, &bytes, 3333).await;
        // Three readers: the writer (cache), a fresh one with a cache, one without.
        let readers = [
            w.clone(),
            ChunkStore::new(backend.clone(), cfg(BS, c)),
            ChunkStore::new(
                backend.clone(),
                ChunkConfig {
                    mem_cache_size: 0,
                    ..cfg(BS, c)
                },
            ),
        ];
        for r in &readers {
            for _ in 0..150 {
                let off = rng.gen_range(0..size + 10);
                let len = match rng.gen_range(0..4) {
                    0 => rng.gen_range(0..100),
                    1 => rng.gen_range(0..BS / 4),
                    2 => rng.gen_range(0..2 * BS),
                    _ => rng.gen_range(0..size + 10),
                };
                let got_bytes = r.read(42, got, off as u32, len).await.unwrap();
                let lo = off.min(size);
                let hi = (off + len).min(size);
                assert_eq!(&got_bytes[..], &bytes[lo..hi], "{c} off {off} len {len}");
            }
        }
    }
}
