//! What a client remembers of the files it closed: with `--open-cache` a read-only
//! reopen does not ask metadata (shown by another client's change staying unseen until
//! the time is up), the page cache is kept only while a file is unchanged, this
//! client's own changes are never hidden, and slices that another client deleted are
//! read again instead of failing the read.

mod common;

use nectar_chunk::{ChunkConfig, ChunkStore};
use nectar_meta::{Ctx, Meta, SessionInfo, SetAttr, ROOT_INODE};
use nectar_object::{MemStore, ObjectStore};
use nectar_vfs::{Vfs, VfsConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Two clients of one volume (memory metadata and one in-memory bucket).
struct Volume {
    name: String,
    objects: Arc<MemStore>,
    rt: tokio::runtime::Runtime,
}

impl Volume {
    fn new() -> Volume {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!("open-cache-{}", N.fetch_add(1, Ordering::Relaxed));
        common::memory_volume(&name);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .worker_threads(2)
            .build()
            .unwrap();
        Volume {
            name,
            objects: Arc::new(MemStore::new()),
            rt,
        }
    }

    /// A client with `--open-cache open_cache` and no memory cache of blocks (so a
    /// read shows which slices it used).
    fn client(&self, open_cache: Duration) -> Arc<Vfs> {
        self.client_remembering(open_cache, VfsConfig::default().open_cache_limit)
    }

    fn client_remembering(&self, open_cache: Duration, limit: usize) -> Arc<Vfs> {
        let meta = Meta::connect(&format!("memory://{}", self.name)).unwrap();
        meta.new_session(&SessionInfo::default()).unwrap();
        let cfg = ChunkConfig {
            block_size: 64 << 10,
            mem_cache_size: 0,
            io_retries: 1,
            ..ChunkConfig::default()
        };
        let store = {
            let _g = self.rt.enter();
            ChunkStore::new(self.objects.clone() as Arc<dyn ObjectStore>, cfg)
        };
        let vfs_cfg = VfsConfig {
            delete_delay: Duration::ZERO,
            open_cache,
            open_cache_limit: limit,
            ..VfsConfig::default()
        };
        Vfs::new(meta, store, self.rt.handle().clone(), vfs_cfg, ROOT_INODE)
    }
}

fn ctx() -> Ctx {
    Ctx::root()
}

/// Creates `name` holding `data` through `v`; returns its inode.
fn write_file(v: &Vfs, name: &str, data: &[u8]) -> u64 {
    let (ino, o) = v
        .create(&ctx(), ROOT_INODE, name.as_bytes(), 0o644, 0, libc::O_RDWR)
        .unwrap();
    assert_eq!(v.write(o.fh, 0, data).unwrap(), data.len());
    v.release(o.fh).unwrap();
    ino
}

/// Overwrites the whole of `ino` through `v`.
fn overwrite(v: &Vfs, ino: u64, data: &[u8]) {
    let o = v.open(&ctx(), ino, libc::O_WRONLY).unwrap();
    v.write(o.fh, 0, data).unwrap();
    v.release(o.fh).unwrap();
}

/// Opens `ino` read-only, reads it whole, closes; returns the length the open saw,
/// whether the page cache may be kept, and the bytes.
fn read_file(v: &Vfs, ino: u64) -> (u64, bool, Vec<u8>) {
    let o = v.open(&ctx(), ino, libc::O_RDONLY).unwrap();
    let data = v.read(o.fh, 0, 1 << 20).unwrap().to_vec();
    v.release(o.fh).unwrap();
    (o.attr.length, o.keep_cache, data)
}

#[test]
fn a_reopen_within_the_open_cache_does_not_ask_metadata() {
    let vol = Volume::new();
    let a = vol.client(Duration::from_secs(2));
    let b = vol.client(Duration::ZERO);
    let ino = write_file(&b, "f", &[1; 1000]);
    assert_eq!(read_file(&a, ino), (1000, false, vec![1; 1000]));
    // Another client makes the file longer.
    let o = b.open(&ctx(), ino, libc::O_WRONLY).unwrap();
    b.write(o.fh, 1000, &[2; 500]).unwrap();
    b.release(o.fh).unwrap();
    // Within the time, the reopen is served from memory: the old length, and the page
    // cache kept. This is what `--open-cache` trades for the round trip.
    let (len, keep, data) = read_file(&a, ino);
    assert_eq!((len, keep), (1000, true));
    assert_eq!(data, vec![1; 1000]);
    // A client without the open cache sees the change at once.
    let c = vol.client(Duration::ZERO);
    assert_eq!(read_file(&c, ino).0, 1500);
    // Once the time is up, the reopen asks metadata again, sees the change and drops
    // the page cache.
    std::thread::sleep(Duration::from_millis(2100));
    let (len, keep, data) = read_file(&a, ino);
    assert_eq!((len, keep), (1500, false));
    assert_eq!(&data[1000..], &[2; 500][..]);
    // An open for writing always asks.
    b.setattr(&ctx(), ino, &SetAttr::default(), Some(0))
        .unwrap();
    let o = a.open(&ctx(), ino, libc::O_RDWR).unwrap();
    assert_eq!(o.attr.length, 0);
    a.release(o.fh).unwrap();
}

#[test]
fn the_page_cache_is_kept_only_while_the_file_is_unchanged() {
    let vol = Volume::new();
    let a = vol.client(Duration::ZERO);
    let b = vol.client(Duration::ZERO);
    let ino = write_file(&b, "f", &[1; 1000]);
    assert!(!read_file(&a, ino).1, "first open here");
    assert!(read_file(&a, ino).1, "reopened unchanged");
    overwrite(&b, ino, &[3; 10]);
    let (len, keep, data) = read_file(&a, ino);
    assert!(!keep, "changed by another client");
    assert_eq!(len, 1000);
    assert_eq!(&data[..10], &[3; 10][..]);
    assert_eq!(&data[10..], &[1; 990][..]);
    // A client that remembers no closed file keeps no page cache across opens, and
    // with room for one file, only for the last one closed.
    let none = vol.client_remembering(Duration::from_secs(60), 0);
    read_file(&none, ino);
    assert!(!read_file(&none, ino).1);
    let one = vol.client_remembering(Duration::ZERO, 1);
    let other = write_file(&b, "g", &[4; 10]);
    read_file(&one, ino);
    read_file(&one, other);
    assert!(!read_file(&one, ino).1, "{ino} was pushed out by {other}");
    assert!(read_file(&one, ino).1);
}

#[test]
fn this_clients_own_changes_are_never_hidden() {
    let vol = Volume::new();
    let a = vol.client(Duration::from_secs(60));
    let ino = write_file(&a, "f", &[1; 1000]);
    assert_eq!(read_file(&a, ino).0, 1000);
    // A truncate of the closed file, then a reopen within the time.
    let set = SetAttr::default();
    a.setattr(&ctx(), ino, &set, Some(300)).unwrap();
    let (len, _, data) = read_file(&a, ino);
    assert_eq!((len, data.len()), (300, 300));
    // A write through another handle, closed before the reopen.
    overwrite(&a, ino, &[5; 700]);
    let (len, _, data) = read_file(&a, ino);
    assert_eq!((len, data), (700, vec![5; 700]));
}

#[test]
fn slices_deleted_by_another_client_are_read_again() {
    let vol = Volume::new();
    let a = vol.client(Duration::from_secs(60));
    let b = vol.client(Duration::ZERO);
    let ino = write_file(&b, "f", &[1; 200_000]);
    assert_eq!(read_file(&a, ino).2, vec![1; 200_000]);
    // B truncates and writes the file again: the old slice loses its last reference
    // and its blocks are deleted. A still holds the old slice list (and, with the open
    // cache, the old attributes: the same length).
    b.setattr(&ctx(), ino, &SetAttr::default(), Some(0))
        .unwrap();
    overwrite(&b, ino, &[7; 200_000]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while vol
        .rt
        .block_on(vol.objects.list("", None, 100))
        .unwrap()
        .len()
        > 4
    {
        assert!(
            std::time::Instant::now() < deadline,
            "old blocks not deleted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (len, _, data) = read_file(&a, ino);
    assert_eq!(len, 200_000);
    assert_eq!(
        data,
        vec![7; 200_000],
        "not the new bytes, or the read failed"
    );
}
