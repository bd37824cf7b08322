//! How a client reads a large file: a streaming reader whose requests arrive slightly
//! out of order (as the kernel's parallel readahead sends them) keeps its readahead,
//! fetches every block once, and does not pile up in the memory cache the blocks it
//! has left behind; its window grows only when it outruns the fetches ahead of it; a
//! reader that jumps around gets no readahead.

mod common;

use nectar_chunk::{ChunkConfig, ChunkStore};
use nectar_meta::{Ctx, Meta, SessionInfo, ROOT_INODE};
use nectar_object::{FaultStore, MemStore, ObjectStore};
use nectar_vfs::{Vfs, VfsConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BLOCK: u64 = 64 << 10;
const READ: u64 = 128 << 10;
const WINDOW: u64 = 1 << 20;
const FILE: u64 = 16 << 20;
/// The VFS's `CONSUMED_LAG`.
const LAG: u64 = 4 << 20;

struct Client {
    vfs: Arc<Vfs>,
    objects: Arc<FaultStore>,
    _rt: tokio::runtime::Runtime,
}

/// A volume holding one file of `FILE` bytes, written in 1 MiB commits (so it is made
/// of slices shorter than the lag), and a fresh client (cold memory cache of 64 MiB,
/// readahead up to `WINDOW`) that counts its GETs. Returns the file's inode.
fn volume_with_a_file(name: &str) -> (Client, u64) {
    volume_with_a_file_and_buffer(name, 64 << 20)
}

/// As [`volume_with_a_file`], the reading client with a `--buffer-size` of `buffer`.
fn volume_with_a_file_and_buffer(name: &str, buffer: usize) -> (Client, u64) {
    let url = common::memory_volume(name);
    let mem = Arc::new(MemStore::new());
    let client = |mem: &Arc<MemStore>, buffer: usize| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .worker_threads(2)
            .build()
            .unwrap();
        let meta = Meta::connect(&url).unwrap();
        meta.new_session(&SessionInfo::default()).unwrap();
        let objects = Arc::new(FaultStore::new(mem.clone() as Arc<dyn ObjectStore>));
        let cfg = ChunkConfig {
            block_size: BLOCK as usize,
            mem_cache_size: 64 << 20,
            buffer_size: buffer as u64,
            ..ChunkConfig::default()
        };
        let store = {
            let _g = rt.enter();
            ChunkStore::new(objects.clone() as Arc<dyn ObjectStore>, cfg)
        };
        let vfs_cfg = VfsConfig {
            max_readahead: WINDOW,
            ..VfsConfig::default()
        };
        let vfs = Vfs::new(meta, store, rt.handle().clone(), vfs_cfg, ROOT_INODE);
        Client {
            vfs,
            objects,
            _rt: rt,
        }
    };
    let writer = client(&mem, 64 << 20);
    let (ino, o) = writer
        .vfs
        .create(&Ctx::root(), ROOT_INODE, b"f", 0o644, 0, libc::O_RDWR)
        .unwrap();
    let data: Vec<u8> = (0..FILE).map(|i| (i % 251) as u8).collect();
    for (i, piece) in data.chunks(1 << 20).enumerate() {
        writer.vfs.write(o.fh, (i << 20) as u64, piece).unwrap();
        writer.vfs.flush(o.fh).unwrap();
    }
    writer.vfs.release(o.fh).unwrap();
    (client(&mem, buffer), ino)
}

fn expected(off: u64, len: u64) -> Vec<u8> {
    (off..off + len).map(|i| (i % 251) as u8).collect()
}

/// Waits until the prefetches started so far have ended.
fn settle(c: &Client) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.vfs.store().buffered() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_streaming_reader_out_of_order_keeps_readahead_and_leaves_blocks_behind() {
    let (c, ino) = volume_with_a_file("read-ahead-stream");
    let o = c.vfs.open(&Ctx::root(), ino, libc::O_RDONLY).unwrap();
    let bound = LAG + WINDOW + 2 * READ;
    let mut peak = 0;
    // Pairs of requests, the second of each pair served first.
    let mut off = 0;
    while off < FILE {
        for at in [off + READ, off] {
            if at >= FILE {
                continue;
            }
            let got = c.vfs.read(o.fh, at, READ as usize).unwrap();
            assert_eq!(&got[..], &expected(at, READ)[..], "at {at}");
        }
        settle(&c);
        peak = peak.max(c.vfs.store().cached_bytes());
        off += 2 * READ;
    }
    assert!(
        peak <= bound,
        "the memory cache held {peak} bytes, more than the {bound} a streaming reader needs"
    );
    assert_eq!(
        c.objects.gets() as u64,
        FILE / BLOCK,
        "every block is fetched once: none was dropped before the reader was done with it"
    );
    c.vfs.release(o.fh).unwrap();
}

#[test]
fn a_reader_that_jumps_around_gets_no_readahead() {
    let (c, ino) = volume_with_a_file("read-ahead-random");
    let o = c.vfs.open(&Ctx::root(), ino, libc::O_RDONLY).unwrap();
    // Each read 4 MiB away from the one before, in a different block.
    let offsets = [0, 8 << 20, 4 << 20, 12 << 20, 2 << 20];
    for at in offsets {
        let got = c.vfs.read(o.fh, at, 4096).unwrap();
        assert_eq!(&got[..], &expected(at, 4096)[..]);
        settle(&c);
    }
    // Each small read costs a ranged GET and a whole-block prefetch; the first one, at
    // 0, also starts a window of one block. A window at every read would be 16 more.
    assert!(
        c.objects.gets() <= 2 * offsets.len() + 2,
        "{} GETs for {} random reads",
        c.objects.gets(),
        offsets.len()
    );
    c.vfs.release(o.fh).unwrap();
}

/// How many blocks a reader that has read up to `done` has fetched beyond it.
fn blocks_ahead(c: &Client, done: u64) -> i64 {
    c.objects.gets() as i64 - done.div_ceil(BLOCK) as i64
}

#[test]
fn the_window_grows_only_for_a_reader_that_outruns_it() {
    const SPAN: u64 = 4 << 20;
    // Every prefetch lands before the reader gets there: a window of one read (two
    // blocks here) is enough.
    let (c, ino) = volume_with_a_file("read-ahead-fast");
    let o = c.vfs.open(&Ctx::root(), ino, libc::O_RDONLY).unwrap();
    let mut most = 0;
    for at in (0..SPAN).step_by(READ as usize) {
        c.vfs.read(o.fh, at, READ as usize).unwrap();
        settle(&c);
        most = most.max(blocks_ahead(&c, at + READ));
    }
    assert!(
        most <= 4,
        "a reader never kept waiting fetched {most} blocks ahead"
    );
    c.vfs.release(o.fh).unwrap();

    // Every GET takes 20 ms and the reader does not wait for them: the window grows
    // to the largest one.
    let (c, ino) = volume_with_a_file("read-ahead-slow");
    c.objects.set_get_delay(Duration::from_millis(20));
    let o = c.vfs.open(&Ctx::root(), ino, libc::O_RDONLY).unwrap();
    let mut most = 0;
    for at in (0..SPAN).step_by(READ as usize) {
        let got = c.vfs.read(o.fh, at, READ as usize).unwrap();
        assert_eq!(&got[..], &expected(at, READ)[..], "at {at}");
        most = most.max(blocks_ahead(&c, at + READ));
    }
    let widest = (WINDOW / BLOCK) as i64;
    assert!(
        most >= widest / 2,
        "a reader waiting for every block fetched only {most} blocks ahead (window {widest})"
    );
    c.vfs.release(o.fh).unwrap();
}

/// Streaming readers share a fifth of the buffer: with 2 MiB of buffer, one slow
/// reader's window grows to 400 KiB (6 blocks), four readers' to 100 KiB each.
#[test]
fn streaming_readers_share_the_readahead_budget() {
    const SPAN: u64 = 2 << 20;
    let (c, ino) = volume_with_a_file_and_buffer("read-ahead-shared", 2 << 20);
    c.objects.set_get_delay(Duration::from_millis(10));
    let handles: Vec<u64> = (0..4)
        .map(|_| c.vfs.open(&Ctx::root(), ino, libc::O_RDONLY).unwrap().fh)
        .collect();
    // Each reader streams its own quarter of the file, the four in turns.
    let start = |i: usize| i as u64 * (FILE / 4);
    let mut most = 0;
    for step in (0..SPAN).step_by(READ as usize) {
        for (i, &fh) in handles.iter().enumerate() {
            let at = start(i) + step;
            let got = c.vfs.read(fh, at, READ as usize).unwrap();
            assert_eq!(&got[..], &expected(at, READ)[..], "at {at}");
        }
        let done = (step + READ).div_ceil(BLOCK) * 4;
        most = most.max(c.objects.gets() as i64 - done as i64);
    }
    // Four windows of under 2 blocks, plus a read's worth each that the window may
    // trail.
    assert!(
        most <= 4 * (2 + 2),
        "four readers fetched {most} blocks ahead with a budget of 6"
    );
    for fh in handles {
        c.vfs.release(fh).unwrap();
    }
}
