//! Failures of the object store, injected with `nectar_object::FaultStore`: permanent
//! PUT failures make `finish` fail (and keep failing), temporary ones are retried with
//! backoff until they succeed or the retries run out, GETs likewise.

mod common;

use common::*;
use nectar_chunk::{ChunkConfig, ChunkStore, Compression};
use nectar_object::{FaultStore, MemStore};
use std::sync::Arc;
use std::time::Duration;

const BS: usize = 64 << 10;

fn stores(conf: ChunkConfig) -> (Arc<MemStore>, Arc<FaultStore>, Arc<ChunkStore>) {
    let mem = Arc::new(MemStore::new());
    let fault = Arc::new(FaultStore::new(mem.clone()));
    let cs = ChunkStore::new(fault.clone(), conf);
    (mem, fault, cs)
}

#[tokio::test]
async fn a_permanent_put_failure_fails_finish_for_good() {
    let (mem, fault, cs) = stores(cfg(BS, Compression::Lz4));
    fault.break_puts(true);
    let bytes = data(3 * BS + 10, 1);
    let mut w = cs.writer(1);
    // The append may or may not already see the failure; finish must.
    let appended = w.append(&bytes).await;
    let e = w.finish().await.unwrap_err();
    assert!(!e.is_temporary(), "{e}");
    assert!(e.to_string().contains("injected"), "{e}");
    if let Err(a) = appended {
        assert!(!a.is_temporary());
    }
    // Nothing claims success afterwards.
    fault.break_puts(false);
    assert!(w.finish().await.is_err());
    assert!(w.append(b"more").await.is_err());
    assert!(
        fault.puts() <= 4,
        "permanent errors are not retried ({})",
        fault.puts()
    );
    assert_eq!(cs.buffered(), 0);
    w.abort().await;
    assert!(mem.is_empty());
}

#[tokio::test]
async fn a_failure_midway_stops_appends_and_abort_removes_what_was_stored() {
    let (mem, fault, cs) = stores(cfg(BS, Compression::None));
    let mut w = cs.writer(2);
    w.append(&data(2 * BS, 2)).await.unwrap();
    eventually("first blocks stored", || mem.len() == 2).await;
    fault.break_puts(true);
    w.append(&data(BS, 3)).await.unwrap(); // block 2 fails in the background
    eventually("the failed put", || fault.puts() == 3).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let e = w.append(&data(BS, 4)).await.unwrap_err();
    assert!(!e.is_temporary(), "{e}");
    assert!(w.finish().await.is_err());
    fault.break_puts(false);
    w.abort().await;
    assert!(
        mem.is_empty(),
        "blocks of a failed slice are deleted on abort"
    );
    assert_eq!(cs.buffered(), 0);
}

#[tokio::test]
async fn temporary_put_failures_are_retried_and_succeed() {
    let (_mem, fault, cs) = stores(cfg(BS, Compression::Zstd));
    fault.fail_puts(3);
    let bytes = data(2 * BS + 1, 5);
    let size = write_slice(&cs, 3, &bytes, 50_000).await;
    assert_eq!(fault.puts(), 3 + 3, "three blocks, three retries");
    let r = ChunkStore::new(fault.clone(), cfg(BS, Compression::Zstd));
    assert_eq!(
        &r.read(3, size, 0, bytes.len()).await.unwrap()[..],
        &bytes[..]
    );
}

#[tokio::test]
async fn temporary_failures_past_io_retries_fail_as_temporary() {
    let conf = ChunkConfig {
        io_retries: 2,
        ..cfg(BS, Compression::None)
    };
    let (mem, fault, cs) = stores(conf);
    fault.fail_puts(1000);
    let mut w = cs.writer(4);
    w.append(&data(100, 6)).await.unwrap();
    let e = w.finish().await.unwrap_err();
    assert!(e.is_temporary(), "{e}");
    assert_eq!(fault.puts(), 3, "one try and two retries");
    assert!(mem.is_empty());
    assert_eq!(cs.buffered(), 0);
}

#[tokio::test]
async fn gets_are_retried_on_temporary_errors_only() {
    let (_mem, fault, w) = stores(cfg(BS, Compression::Lz4));
    let bytes = data(BS, 7);
    let size = write_slice(&w, 5, &bytes, BS).await;
    let r = ChunkStore::new(fault.clone(), cfg(BS, Compression::Lz4));
    fault.fail_gets(2);
    assert_eq!(&r.read(5, size, 0, BS).await.unwrap()[..], &bytes[..]);
    assert_eq!(fault.gets(), 3);

    let r = ChunkStore::new(fault.clone(), cfg(BS, Compression::Lz4));
    fault.break_gets(true);
    let e = r.read(5, size, 0, 10).await.unwrap_err();
    assert!(!e.is_temporary(), "{e}");
    assert_eq!(fault.gets(), 4, "a permanent error is not retried");
    // The failure was not cached: once the store recovers the read succeeds.
    fault.break_gets(false);
    assert_eq!(r.read(5, size, 0, 10).await.unwrap().len(), 10);
}

#[tokio::test]
async fn a_slow_store_still_completes_within_the_buffer() {
    let conf = ChunkConfig {
        buffer_size: 3 * BS as u64,
        max_uploads: 4,
        ..cfg(BS, Compression::Lz4)
    };
    let (mem, fault, cs) = stores(conf);
    fault.set_put_delay(Duration::from_millis(15));
    let mut w = cs.writer(6);
    let bytes = data(12 * BS, 8);
    for p in bytes.chunks(40_000) {
        w.append(p).await.unwrap();
        assert!(cs.buffered() <= 3 * BS as u64);
    }
    assert_eq!(w.finish().await.unwrap() as usize, bytes.len());
    assert_eq!(mem.len(), 12);
    assert_eq!(cs.buffered(), 0);
}
