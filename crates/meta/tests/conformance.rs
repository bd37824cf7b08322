//! The metadata conformance suite: one test body, run on every engine.
//!
//! Memory and SQLite always run. Other engines run when `NECTAR_TEST_META_URLS` holds a
//! space-separated list of META-URLs of real servers (CI starts them); each scenario
//! wipes its own key space there (a prefix, table or path derived from the URL), so
//! never point it at a server holding a volume you care about.

mod common;
use common::new_format;
use nectar_meta::kv::KvTxn;
use nectar_meta::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

fn root() -> Ctx {
    Ctx::root()
}

fn user(uid: u32) -> Ctx {
    Ctx {
        uid,
        gid: uid,
        gids: vec![],
        pid: 1,
        check_permission: true,
    }
}

type Deleted = Arc<Mutex<Vec<(u64, u32)>>>;

/// A client of `url` whose cache is on where the engine has a change feed (Redis,
/// etcd): every scenario runs with it, so answers from the cache must be as right as
/// answers from the database.
fn connect(url: &str) -> Arc<Meta> {
    let m = Meta::connect(url).unwrap();
    if m.follow_changes(Arc::new(|_: &[nectar_meta::Change]| {})) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !m.feed_live() {
            assert!(
                std::time::Instant::now() < deadline,
                "the change feed never came up"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    m
}

fn setup(url: &str) -> (Arc<Meta>, Deleted) {
    let m = connect(url);
    m.kv().reset().unwrap();
    m.format(new_format("test"), false).unwrap();
    let deleted: Deleted = Default::default();
    let d = deleted.clone();
    m.set_slice_deleter(Arc::new(move |s| d.lock().unwrap().extend(s)));
    (m, deleted)
}

fn errno<T: std::fmt::Debug>(r: Result<T>) -> i32 {
    match r {
        Err(e) => e.errno(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

fn create(m: &Meta, parent: Ino, name: &str) -> Ino {
    m.mknod(
        &root(),
        parent,
        name.as_bytes(),
        FileType::File,
        0o644,
        0o022,
        0,
        b"",
    )
    .unwrap()
    .0
}

fn mkdir(m: &Meta, parent: Ino, name: &str) -> Ino {
    m.mknod(
        &root(),
        parent,
        name.as_bytes(),
        FileType::Directory,
        0o755,
        0,
        0,
        b"",
    )
    .unwrap()
    .0
}

fn write(m: &Meta, ino: Ino, index: u32, pos: u32, id: u64, len: u32) -> Attr {
    let s = Slice {
        pos,
        id,
        size: len,
        off: 0,
        len,
    };
    m.write_slice(ino, index, s, Time::now()).unwrap().0
}

/// One test per engine and scenario, `<engine>::<scenario>`, so that a failure names
/// both: memory and SQLite always, the servers when `NECTAR_TEST_META_URLS` names them
/// (each scenario in its own key space there, see `common::server_url`).
macro_rules! on_every_engine {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(#[test]
            fn $scenario() {
                super::$scenario(concat!("memory://conformance-", stringify!($scenario)));
            })*
        }
        mod sqlite {
            $(#[test]
            fn $scenario() {
                let dir = tempfile::tempdir().unwrap();
                super::$scenario(&format!("sqlite3://{}/meta.db", dir.path().display()));
            })*
        }
        on_every_engine!(@server redis; $($scenario),*);
        on_every_engine!(@server postgres; $($scenario),*);
        on_every_engine!(@server mysql; $($scenario),*);
        on_every_engine!(@server etcd; $($scenario),*);
        on_every_engine!(@server tikv; $($scenario),*);
    };
    (@server $engine:ident; $($scenario:ident),*) => {
        mod $engine {
            $(#[test]
            fn $scenario() {
                let space = stringify!($scenario);
                if let Some(url) = crate::common::server_url(stringify!($engine), space) {
                    super::$scenario(&url);
                }
            })*
        }
    };
}

on_every_engine!(
    format_and_load,
    create_lookup_and_errors,
    directories_and_nlink,
    unlink_releases_data,
    open_file_survives_unlink,
    hard_links,
    rename_rules,
    readdir_paging,
    xattrs,
    truncate_and_holes,
    truncate_of_many_chunks,
    fallocate_and_copy,
    permissions,
    acls,
    counters_are_exact,
    deferred_counters,
    sessions,
    locks_between_clients,
    unfinished_slices_of_a_dead_client,
    concurrent_transactions,
    trash_keeps_restores_and_expires,
    delayed_slices,
    remove_a_tree,
    compaction_of_a_long_chunk,
    directory_quotas,
    readers_on_other_clients,
);

fn format_and_load(url: &str) {
    let m = Meta::connect(url).unwrap();
    m.kv().reset().unwrap();
    assert!(matches!(m.load(), Err(Error::NotFormatted(_))));
    let f = m.format(new_format("vol"), false).unwrap();
    let err = m.format(new_format("vol"), false).unwrap_err().to_string();
    assert!(err.contains("already formatted"), "{err}");
    let mut again = new_format("vol");
    again.uuid = "other".into();
    again.trash_days = 3;
    let f2 = m.format(again, true).unwrap();
    assert_eq!(f2.uuid, f.uuid, "--force keeps the UUID");
    assert_eq!(f2.trash_days, 3);
    assert!(m.format(new_format("renamed"), true).is_err());
    let m2 = Meta::connect(url).unwrap();
    assert_eq!(m2.load().unwrap(), f2);
    let root = m2.get_attr(ROOT_INODE).unwrap();
    assert_eq!(root.typ, FileType::Directory);
    assert_eq!(root.nlink, 2);
}

fn create_lookup_and_errors(url: &str) {
    let (m, _) = setup(url);
    let (ino, attr) = m
        .mknod(
            &user(5),
            ROOT_INODE,
            b"f",
            FileType::File,
            0o666,
            0o022,
            0,
            b"",
        )
        .unwrap();
    assert_eq!(attr.mode, 0o644);
    assert_eq!((attr.uid, attr.gid, attr.parent), (5, 5, ROOT_INODE));
    let (i2, a2) = m.lookup(&root(), ROOT_INODE, b"f").unwrap();
    assert_eq!((i2, a2), (ino, attr));
    assert_eq!(
        errno(m.lookup(&root(), ROOT_INODE, b"missing")),
        libc::ENOENT
    );
    assert_eq!(
        errno(m.mknod(&root(), ROOT_INODE, b"f", FileType::File, 0o644, 0, 0, b"")),
        libc::EEXIST
    );
    let long = vec![b'x'; 256];
    assert_eq!(
        errno(m.mknod(&root(), ROOT_INODE, &long, FileType::File, 0o644, 0, 0, b"")),
        libc::ENAMETOOLONG
    );
    assert!(m
        .mknod(
            &root(),
            ROOT_INODE,
            &long[..255],
            FileType::File,
            0o644,
            0,
            0,
            b""
        )
        .is_ok());
    assert_eq!(
        errno(m.mknod(&root(), ino, b"x", FileType::File, 0o644, 0, 0, b"")),
        libc::ENOTDIR
    );
    assert_eq!(
        errno(m.mknod(
            &root(),
            ROOT_INODE,
            b"a/b",
            FileType::File,
            0o644,
            0,
            0,
            b""
        )),
        libc::EINVAL
    );
    let (s, sattr) = m
        .mknod(
            &root(),
            ROOT_INODE,
            b"link",
            FileType::Symlink,
            0o777,
            0,
            0,
            b"/target/path",
        )
        .unwrap();
    assert_eq!(sattr.length, 12);
    assert_eq!(m.readlink(s).unwrap(), b"/target/path");
    assert_eq!(errno(m.readlink(ino)), libc::EINVAL);
    let (dev, dattr) = m
        .mknod(
            &root(),
            ROOT_INODE,
            b"dev",
            FileType::CharDev,
            0o600,
            0,
            0x0103,
            b"",
        )
        .unwrap();
    assert_eq!(dattr.rdev, 0x0103);
    assert_eq!(m.get_attr(dev).unwrap().typ, FileType::CharDev);
}

fn directories_and_nlink(url: &str) {
    let (m, _) = setup(url);
    let d = mkdir(&m, ROOT_INODE, "d");
    assert_eq!(m.get_attr(ROOT_INODE).unwrap().nlink, 3);
    let sub = mkdir(&m, d, "sub");
    assert_eq!(m.get_attr(d).unwrap().nlink, 3);
    assert_eq!(m.lookup(&root(), sub, b"..").unwrap().0, d);
    assert_eq!(m.lookup(&root(), d, b".").unwrap().0, d);
    create(&m, sub, "file");
    assert_eq!(errno(m.rmdir(&root(), d, b"sub")), libc::ENOTEMPTY);
    assert_eq!(errno(m.unlink(&root(), d, b"sub")), libc::EISDIR);
    assert_eq!(errno(m.rmdir(&root(), sub, b"file")), libc::ENOTDIR);
    m.unlink(&root(), sub, b"file").unwrap();
    m.rmdir(&root(), d, b"sub").unwrap();
    assert_eq!(m.get_attr(d).unwrap().nlink, 2);
    assert_eq!(errno(m.get_attr(sub)), libc::ENOENT);
    // A setgid directory passes its group and the bit on.
    m.setattr(
        &root(),
        d,
        &SetAttr {
            mode: Some(0o2777),
            gid: Some(77),
            ..Default::default()
        },
    )
    .unwrap();
    let (_, a) = m
        .mknod(
            &user(5),
            d,
            b"inherits",
            FileType::Directory,
            0o755,
            0,
            0,
            b"",
        )
        .unwrap();
    assert_eq!(a.gid, 77);
    assert_eq!(a.mode & 0o2000, 0o2000);
}

fn unlink_releases_data(url: &str) {
    let (m, deleted) = setup(url);
    let f = create(&m, ROOT_INODE, "f");
    let id1 = m.new_slice().unwrap().id();
    let id2 = m.new_slice().unwrap().id();
    assert_ne!(id1, id2);
    write(&m, f, 0, 0, id1, 1000);
    let a = write(&m, f, 1, 5, id2, 10);
    assert_eq!(a.length, CHUNK_SIZE + 15);
    m.unlink(&root(), ROOT_INODE, b"f").unwrap();
    let mut d = deleted.lock().unwrap().clone();
    d.sort();
    assert_eq!(d, vec![(id1, 1000), (id2, 10)]);
    assert!(m.read_chunk(f, 0).unwrap().is_empty());
    assert_eq!(m.cleanup_deleted_files().unwrap(), 0, "no D key left");
    // A small file (one chunk, a few slices) is released by the unlink's own
    // transaction; one with many slices in its chunk the same way as a large file.
    for (name, slices) in [("small", 3u32), ("many", 40)] {
        deleted.lock().unwrap().clear();
        let f = create(&m, ROOT_INODE, name);
        let mut ids = Vec::new();
        for i in 0..slices {
            let id = m.new_slice().unwrap().id();
            write(&m, f, 0, i * 10, id, 10);
            ids.push((id, 10));
        }
        m.unlink(&root(), ROOT_INODE, name.as_bytes()).unwrap();
        let mut d = deleted.lock().unwrap().clone();
        d.sort();
        assert_eq!(d, ids, "{name}");
        assert!(m.read_chunk(f, 0).unwrap().is_empty(), "{name}");
        assert_eq!(
            m.cleanup_deleted_files().unwrap(),
            0,
            "{name}: no D key left"
        );
    }
}

fn open_file_survives_unlink(url: &str) {
    let (m, deleted) = setup(url);
    let sid = m.new_session(&SessionInfo::default()).unwrap();
    let f = create(&m, ROOT_INODE, "f");
    m.opened(f);
    let id = m.new_slice().unwrap().id();
    write(&m, f, 0, 0, id, 100);
    m.unlink(&root(), ROOT_INODE, b"f").unwrap();
    assert!(deleted.lock().unwrap().is_empty(), "data kept while open");
    let a = m.get_attr(f).unwrap();
    assert_eq!((a.nlink, a.length), (0, 100));
    // Still writable through the handle.
    write(&m, f, 0, 100, m.new_slice().unwrap().id(), 50);
    let sessions = m.list_sessions().unwrap();
    let me = sessions.iter().find(|s| s.sid == sid).unwrap();
    assert_eq!(me.sustained, vec![f]);
    m.close(f).unwrap();
    assert_eq!(errno(m.get_attr(f)), libc::ENOENT);
    assert_eq!(deleted.lock().unwrap().len(), 2);
    // A session that dies with an open unlinked file is cleaned by another client.
    let g = create(&m, ROOT_INODE, "g");
    m.opened(g);
    m.unlink(&root(), ROOT_INODE, b"g").unwrap();
    m.close_session().unwrap();
    assert_eq!(errno(m.get_attr(g)), libc::ENOENT);
    m.close(g).unwrap();
}

fn hard_links(url: &str) {
    let (m, deleted) = setup(url);
    let d = mkdir(&m, ROOT_INODE, "d");
    let f = create(&m, ROOT_INODE, "f");
    write(&m, f, 0, 0, m.new_slice().unwrap().id(), 10);
    let a = m.link(&root(), f, d, b"f2").unwrap();
    assert_eq!((a.nlink, a.parent), (2, 0));
    assert_eq!(m.lookup(&root(), d, b"f2").unwrap().0, f);
    assert_eq!(
        errno(m.link(&root(), d, ROOT_INODE, b"dirlink")),
        libc::EPERM
    );
    assert_eq!(errno(m.link(&root(), f, d, b"f2")), libc::EEXIST);
    // Renaming one name over another name of the same file does nothing.
    m.rename(&root(), ROOT_INODE, b"f", d, b"f2", 0).unwrap();
    assert_eq!(m.get_attr(f).unwrap().nlink, 2);
    assert!(m.lookup(&root(), ROOT_INODE, b"f").is_ok());
    m.unlink(&root(), ROOT_INODE, b"f").unwrap();
    assert_eq!(m.get_attr(f).unwrap().nlink, 1);
    assert!(deleted.lock().unwrap().is_empty());
    m.unlink(&root(), d, b"f2").unwrap();
    assert_eq!(deleted.lock().unwrap().len(), 1);
    assert_eq!(errno(m.get_attr(f)), libc::ENOENT);
}

fn rename_rules(url: &str) {
    let (m, deleted) = setup(url);
    let a = mkdir(&m, ROOT_INODE, "a");
    let b = mkdir(&m, ROOT_INODE, "b");
    let sub = mkdir(&m, a, "sub");
    let f = create(&m, a, "f");
    // Across directories.
    m.rename(&root(), a, b"f", b, b"g", 0).unwrap();
    assert_eq!(m.lookup(&root(), b, b"g").unwrap().0, f);
    assert_eq!(errno(m.lookup(&root(), a, b"f")), libc::ENOENT);
    assert_eq!(m.get_attr(f).unwrap().parent, b);
    // A directory moves and the link counts follow.
    m.rename(&root(), a, b"sub", b, b"sub", 0).unwrap();
    assert_eq!(m.get_attr(a).unwrap().nlink, 2);
    assert_eq!(m.get_attr(b).unwrap().nlink, 3);
    assert_eq!(m.lookup(&root(), sub, b"..").unwrap().0, b);
    // Into its own subtree.
    assert_eq!(
        errno(m.rename(&root(), ROOT_INODE, b"b", sub, b"x", 0)),
        libc::EINVAL
    );
    // Over an existing file: the victim's data goes.
    let h = create(&m, b, "h");
    write(&m, h, 0, 0, 999, 5);
    m.rename(&root(), b, b"g", b, b"h", 0).unwrap();
    assert_eq!(m.lookup(&root(), b, b"h").unwrap().0, f);
    assert_eq!(errno(m.get_attr(h)), libc::ENOENT);
    assert_eq!(*deleted.lock().unwrap(), vec![(999, 5)]);
    // Type mismatches and non-empty targets.
    create(&m, sub, "inside");
    let empty = mkdir(&m, b, "empty");
    assert_eq!(
        errno(m.rename(&root(), b, b"h", b, b"empty", 0)),
        libc::EISDIR
    );
    assert_eq!(
        errno(m.rename(&root(), b, b"empty", b, b"h", 0)),
        libc::ENOTDIR
    );
    assert_eq!(
        errno(m.rename(&root(), b, b"empty", b, b"sub", 0)),
        libc::ENOTEMPTY
    );
    m.rename(&root(), b, b"sub", b, b"empty", 0).unwrap();
    assert_eq!(errno(m.get_attr(empty)), libc::ENOENT);
    assert_eq!(m.get_attr(b).unwrap().nlink, 3);
    // NOREPLACE and EXCHANGE.
    let x = create(&m, a, "x");
    let y = mkdir(&m, b, "y");
    assert_eq!(
        errno(m.rename(&root(), a, b"x", b, b"h", RENAME_NOREPLACE)),
        libc::EEXIST
    );
    assert_eq!(
        errno(m.rename(&root(), a, b"x", b, b"none", RENAME_EXCHANGE)),
        libc::ENOENT
    );
    m.rename(&root(), a, b"x", b, b"y", RENAME_EXCHANGE)
        .unwrap();
    assert_eq!(m.lookup(&root(), a, b"x").unwrap().0, y);
    assert_eq!(m.lookup(&root(), b, b"y").unwrap().0, x);
    assert_eq!(m.get_attr(y).unwrap().parent, a);
    assert_eq!(m.get_attr(a).unwrap().nlink, 3);
    assert_eq!(m.get_attr(b).unwrap().nlink, 3);
    assert_eq!(errno(m.rename(&root(), a, b"x", b, b"y", 7)), libc::EINVAL);
    // A failed rename loses neither name.
    assert!(m.lookup(&root(), a, b"x").is_ok() && m.lookup(&root(), b, b"y").is_ok());
}

fn readdir_paging(url: &str) {
    let (m, _) = setup(url);
    let d = mkdir(&m, ROOT_INODE, "d");
    let mut names: Vec<String> = (0..250).map(|i| format!("n{i:04}")).collect();
    for n in &names {
        create(&m, d, n);
    }
    let mut seen = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = m.readdir(&root(), d, after.as_deref(), 64, true).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page
            .iter()
            .all(|e| e.attr.as_ref().map(|a| a.typ) == Some(FileType::File)));
        after = Some(page.last().unwrap().name.clone());
        // Entries added and removed while listing do not break paging.
        if seen.is_empty() {
            m.unlink(&root(), d, b"n0200").unwrap();
            create(&m, d, "zzz");
        }
        seen.extend(page.into_iter().map(|e| String::from_utf8(e.name).unwrap()));
    }
    names.retain(|n| n != "n0200");
    names.push("zzz".into());
    assert_eq!(seen, names);
}

fn xattrs(url: &str) {
    let (m, _) = setup(url);
    let root = Ctx::root();
    let f = create(&m, ROOT_INODE, "f");
    assert_eq!(errno(m.getxattr(f, b"user.a")), libc::ENODATA);
    m.setxattr(&root, f, b"user.a", b"1", 0).unwrap();
    assert_eq!(
        errno(m.setxattr(&root, f, b"user.a", b"2", 1)),
        libc::EEXIST
    );
    assert_eq!(
        errno(m.setxattr(&root, f, b"user.b", b"2", 2)),
        libc::ENODATA
    );
    m.setxattr(&root, f, b"user.a", b"3", 2).unwrap();
    m.setxattr(&root, f, b"user.b", b"", 0).unwrap();
    assert_eq!(m.getxattr(f, b"user.a").unwrap(), b"3");
    assert_eq!(m.getxattr(f, b"user.b").unwrap(), b"");
    assert_eq!(m.listxattr(f).unwrap(), b"user.a\0user.b\0");
    m.removexattr(&root, f, b"user.a").unwrap();
    assert_eq!(errno(m.removexattr(&root, f, b"user.a")), libc::ENODATA);
    assert_eq!(m.listxattr(f).unwrap(), b"user.b\0");
    assert_eq!(
        errno(m.setxattr(&root, f, b"user.big", &vec![0; 65537], 0)),
        libc::E2BIG
    );
    assert_eq!(errno(m.getxattr(12345678, b"user.a")), libc::ENOENT);
}

fn truncate_and_holes(url: &str) {
    let (m, deleted) = setup(url);
    let f = create(&m, ROOT_INODE, "f");
    write(&m, f, 0, 0, 11, 1000);
    write(&m, f, 2, 0, 12, 1000);
    let a = m.truncate(&root(), f, 500).unwrap();
    assert_eq!(a.length, 500);
    assert_eq!(*deleted.lock().unwrap(), vec![(12, 1000)]);
    let view = slice::resolve(&m.read_chunk(f, 0).unwrap());
    assert_eq!(
        view.last().unwrap().id,
        0,
        "the cut tail is a hole: {view:?}"
    );
    assert_eq!(view.last().unwrap().pos, 500);
    let a = m.truncate(&root(), f, 3 * CHUNK_SIZE).unwrap();
    assert_eq!(a.length, 3 * CHUNK_SIZE);
    assert_eq!(
        errno(m.truncate(&root(), f, MAX_FILE_SIZE + 1)),
        libc::EFBIG
    );
    let d = mkdir(&m, ROOT_INODE, "d");
    assert_eq!(errno(m.truncate(&root(), d, 0)), libc::EISDIR);
}

/// A truncate dropping far more chunks than one etcd transaction may touch (128
/// operations) still works, and frees every slice exactly once.
fn truncate_of_many_chunks(url: &str) {
    let (m, deleted) = setup(url);
    let f = create(&m, ROOT_INODE, "sparse");
    const CHUNKS: u32 = 300;
    for index in 0..CHUNKS {
        write(&m, f, index, 1000, 1000 + index as u64, 100);
    }
    let space_before = m.counter("usedSpace").unwrap();
    let a = m.truncate(&root(), f, 1050).unwrap();
    assert_eq!(a.length, 1050);
    let mut freed = deleted.lock().unwrap().clone();
    freed.sort();
    let want: Vec<(u64, u32)> = (1..CHUNKS).map(|i| (1000 + i as u64, 100)).collect();
    assert_eq!(freed, want, "every cut slice freed once");
    for index in 1..CHUNKS {
        assert!(
            m.read_chunk(f, index).unwrap().is_empty(),
            "chunk {index} left"
        );
    }
    let view = slice::resolve(&m.read_chunk(f, 0).unwrap());
    assert_eq!(
        view.last().unwrap().id,
        0,
        "the cut tail is a hole: {view:?}"
    );
    assert_eq!(view.last().unwrap().pos, 1050);
    let space_after = m.counter("usedSpace").unwrap();
    let old_len = (CHUNKS as u64 - 1) * CHUNK_SIZE + 1100;
    assert_eq!(
        space_before - space_after,
        (old_len.div_ceil(4096) * 4096 - 4096) as i64,
        "usage follows the cut"
    );

    // Fragmented chunks (many slices each, as many small appends leave them): cut
    // short, and deleted.
    let fragmented = |name: &str, first_id: u64| {
        let f = create(&m, ROOT_INODE, name);
        for index in 0..12u32 {
            for k in 0..60u32 {
                let id = first_id + (index * 60 + k) as u64;
                write(&m, f, index, k * 10, id, 10);
            }
        }
        f
    };
    let all =
        |first_id: u64| -> Vec<(u64, u32)> { (0..12 * 60).map(|i| (first_id + i, 10)).collect() };
    deleted.lock().unwrap().clear();
    let g = fragmented("fragmented", 100_000);
    assert_eq!(m.truncate(&root(), g, 0).unwrap().length, 0);
    let mut freed = std::mem::take(&mut *deleted.lock().unwrap());
    freed.sort();
    assert_eq!(
        freed,
        all(100_000),
        "a cut of fragmented chunks frees each slice once"
    );
    let h = fragmented("doomed", 200_000);
    m.unlink(&root(), ROOT_INODE, b"doomed").unwrap();
    let mut freed = std::mem::take(&mut *deleted.lock().unwrap());
    freed.sort();
    assert_eq!(
        freed,
        all(200_000),
        "deleting fragmented chunks frees each slice once"
    );
    assert!(m.read_chunk(h, 0).unwrap().is_empty());
}

fn fallocate_and_copy(url: &str) {
    use nectar_meta::data::{FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE};
    let (m, deleted) = setup(url);
    let f = create(&m, ROOT_INODE, "f");
    write(&m, f, 0, 0, 21, 1000);
    // Default mode grows the length; KEEP_SIZE does not.
    assert_eq!(m.fallocate(&root(), f, 0, 0, 5000).unwrap().length, 5000);
    assert_eq!(
        m.fallocate(&root(), f, FALLOC_FL_KEEP_SIZE, 0, 9000)
            .unwrap()
            .length,
        5000
    );
    assert_eq!(
        m.fallocate(&root(), f, 0, 100, 10).unwrap().length,
        5000,
        "allocation inside the file keeps the length"
    );
    // Punch a hole: length kept, the range reads as zeros.
    let a = m
        .fallocate(
            &root(),
            f,
            FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
            100,
            200,
        )
        .unwrap();
    assert_eq!(a.length, 5000);
    let view = slice::resolve(&m.read_chunk(f, 0).unwrap());
    let hole = view.iter().find(|s| s.pos == 100).unwrap();
    assert_eq!((hole.id, hole.len), (0, 200));
    assert_eq!(view.iter().find(|s| s.pos == 300).unwrap().off, 300);
    // Zero a range past the end: the length grows.
    assert_eq!(
        m.fallocate(&root(), f, FALLOC_FL_ZERO_RANGE, 4000, 3000)
            .unwrap()
            .length,
        7000
    );
    assert_eq!(
        errno(m.fallocate(&root(), f, FALLOC_FL_PUNCH_HOLE, 0, 10)),
        libc::EOPNOTSUPP
    );
    assert_eq!(
        errno(m.fallocate(&root(), f, 0x08, 0, 10)),
        libc::EOPNOTSUPP
    );
    assert_eq!(errno(m.fallocate(&root(), f, 0, 0, 0)), libc::EINVAL);
    let d = mkdir(&m, ROOT_INODE, "d");
    assert_eq!(errno(m.fallocate(&root(), d, 0, 0, 10)), libc::EISDIR);
    // Copy shares slices: the source's slice gains a reference.
    let g = create(&m, ROOT_INODE, "g");
    let (n, ga) = m
        .copy_file_range(&root(), f, 0, g, CHUNK_SIZE - 50, 1000)
        .unwrap();
    assert_eq!((n, ga.length), (1000, CHUNK_SIZE + 950));
    let c0 = slice::resolve(&m.read_chunk(g, 0).unwrap());
    let c1 = slice::resolve(&m.read_chunk(g, 1).unwrap());
    assert_eq!(
        (c0[0].pos, c0[0].id, c0[0].off, c0[0].len),
        ((CHUNK_SIZE - 50) as u32, 21, 0, 50)
    );
    assert_eq!((c1[0].pos, c1[0].id, c1[0].off, c1[0].len), (0, 21, 50, 50));
    assert_eq!(
        (c1[1].pos, c1[1].id, c1[1].len),
        (50, 0, 200),
        "the punched hole is copied as a hole"
    );
    assert_eq!(
        m.copy_file_range(&root(), f, 7000, g, 0, 10).unwrap().0,
        0,
        "nothing past the source end"
    );
    assert_eq!(
        errno(m.copy_file_range(&root(), f, 0, f, 10, 100)),
        libc::EINVAL,
        "overlapping ranges of one file"
    );
    // Deleting the source keeps the shared slice; deleting the copy too releases it.
    m.unlink(&root(), ROOT_INODE, b"f").unwrap();
    assert!(
        deleted.lock().unwrap().is_empty(),
        "a slice still used by the copy was deleted"
    );
    m.unlink(&root(), ROOT_INODE, b"g").unwrap();
    assert_eq!(*deleted.lock().unwrap(), vec![(21, 1000)]);
}

fn permissions(url: &str) {
    let (m, _) = setup(url);
    let d = m
        .mknod(
            &user(5),
            ROOT_INODE,
            b"private",
            FileType::Directory,
            0o700,
            0,
            0,
            b"",
        )
        .unwrap()
        .0;
    assert_eq!(
        errno(m.mknod(&user(6), d, b"x", FileType::File, 0o644, 0, 0, b"")),
        libc::EACCES
    );
    assert_eq!(errno(m.lookup(&user(6), d, b"x")), libc::EACCES);
    assert!(m
        .mknod(&root(), d, b"x", FileType::File, 0o600, 0, 0, b"")
        .is_ok());
    let f = m
        .mknod(&user(5), d, b"mine", FileType::File, 0o600, 0, 0, b"")
        .unwrap()
        .0;
    assert_eq!(errno(m.open(&user(6), f, libc::O_RDONLY)), libc::EACCES);
    assert!(m.open(&user(5), f, libc::O_RDWR).is_ok());
    assert_eq!(
        errno(m.setattr(
            &user(6),
            f,
            &SetAttr {
                mode: Some(0o777),
                ..Default::default()
            }
        )),
        libc::EPERM
    );
    assert_eq!(
        errno(m.setattr(
            &user(5),
            f,
            &SetAttr {
                uid: Some(6),
                ..Default::default()
            }
        )),
        libc::EPERM
    );
    assert!(m.access(&user(5), f, 6).is_ok());
    assert_eq!(errno(m.access(&user(6), f, 4)), libc::EACCES);
    // Sticky directory: others may not remove what they do not own.
    let t = mkdir(&m, ROOT_INODE, "tmp");
    m.setattr(
        &root(),
        t,
        &SetAttr {
            mode: Some(0o1777),
            ..Default::default()
        },
    )
    .unwrap();
    m.mknod(&user(5), t, b"owned", FileType::File, 0o644, 0, 0, b"")
        .unwrap();
    assert_eq!(errno(m.unlink(&user(6), t, b"owned")), libc::EPERM);
    m.unlink(&user(5), t, b"owned").unwrap();
    m.close(f).unwrap();
}

fn acls(url: &str) {
    let (m, _) = setup(url);
    let f = create(&m, ROOT_INODE, "f");
    // A volume formatted without ACLs refuses them.
    assert_eq!(errno(m.get_facl(f, AclType::Access)), libc::EOPNOTSUPP);
    let mut fmt = new_format("test");
    fmt.enable_acl = true;
    m.format(fmt, true).unwrap();
    assert_eq!(errno(m.get_facl(f, AclType::Access)), libc::ENODATA);

    let named = |users: &[(u32, u16)], owner: u16, group: u16, mask: u16, other: u16| Rule {
        owner,
        group,
        mask,
        other,
        named_users: users
            .iter()
            .map(|&(id, perm)| AclEntry { id, perm })
            .collect(),
        named_groups: Vec::new(),
    };
    // An access ACL: the mode shows the mask; the named user may read, a stranger not.
    let shared = named(&[(7, 6)], 6, 0, 4, 0);
    let attr = m
        .set_facl(&root(), f, AclType::Access, Some(shared.clone()))
        .unwrap();
    assert_eq!(attr.mode, 0o640);
    assert_eq!(m.get_facl(f, AclType::Access).unwrap(), shared);
    assert!(m.access(&user(7), f, 4).is_ok());
    assert_eq!(
        errno(m.access(&user(7), f, 2)),
        libc::EACCES,
        "the mask limits"
    );
    assert!(m.open(&user(7), f, libc::O_RDONLY).is_ok());
    m.close(f).unwrap();
    assert_eq!(errno(m.access(&user(8), f, 4)), libc::EACCES);
    // Only the owner sets ACLs.
    assert_eq!(
        errno(m.set_facl(&user(7), f, AclType::Access, None)),
        libc::EPERM
    );
    // chmod moves the mask, and the ACL follows.
    m.setattr(
        &root(),
        f,
        &SetAttr {
            mode: Some(0o660),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(m.get_facl(f, AclType::Access).unwrap().mask, 6);
    assert!(m.access(&user(7), f, 6).is_ok());
    // An ACL no richer than a mode is kept as the mode.
    let attr = m
        .set_facl(&root(), f, AclType::Access, Some(Rule::from_mode(0o604)))
        .unwrap();
    assert_eq!((attr.mode, attr.access_acl), (0o604, 0));
    assert_eq!(errno(m.get_facl(f, AclType::Access)), libc::ENODATA);
    assert_eq!(
        errno(m.set_facl(&root(), f, AclType::Default, Some(shared.clone()))),
        libc::EACCES,
        "a default ACL needs a directory"
    );

    // A default ACL passes on, masked by the mode asked for; the umask is ignored.
    let d = mkdir(&m, ROOT_INODE, "d");
    let default = named(&[(7, 7)], 7, 5, 7, 5);
    m.set_facl(&root(), d, AclType::Default, Some(default.clone()))
        .unwrap();
    let (child, cattr) = m
        .mknod(&root(), d, b"c", FileType::File, 0o666, 0o077, 0, b"")
        .unwrap();
    assert_eq!(cattr.mode, 0o664);
    assert_eq!(
        m.get_facl(child, AclType::Access).unwrap(),
        named(&[(7, 7)], 6, 5, 6, 4)
    );
    let (sub, sattr) = m
        .mknod(&root(), d, b"s", FileType::Directory, 0o777, 0o077, 0, b"")
        .unwrap();
    assert_eq!(sattr.mode, 0o775);
    assert_eq!(sattr.default_acl, m.get_attr(d).unwrap().default_acl);
    assert_eq!(m.get_facl(sub, AclType::Default).unwrap(), default);
    // Without a default ACL the umask applies.
    let (_, plain) = m
        .mknod(
            &root(),
            ROOT_INODE,
            b"plain",
            FileType::File,
            0o666,
            0o077,
            0,
            b"",
        )
        .unwrap();
    assert_eq!(plain.mode, 0o600);
    // The xattr form: the ACLs are listed, read and removed as system.posix_acl_*.
    let names = m.listxattr(sub).unwrap();
    assert_eq!(
        names,
        b"system.posix_acl_access\0system.posix_acl_default\0"
    );
    let x = m.getxattr(sub, b"system.posix_acl_default").unwrap();
    assert_eq!(Rule::from_xattr(&x).unwrap(), Some(default.clone()));
    m.removexattr(&root(), sub, b"system.posix_acl_default")
        .unwrap();
    assert_eq!(m.get_attr(sub).unwrap().default_acl, 0);
    assert_eq!(
        errno(m.removexattr(&root(), sub, b"system.posix_acl_default")),
        libc::ENODATA
    );

    // Equal rules are stored once, also by another client.
    let (c2, a2) = m
        .mknod(&root(), d, b"c2", FileType::File, 0o666, 0, 0, b"")
        .unwrap();
    assert_eq!(a2.access_acl, cattr.access_acl);
    let other = Meta::connect(url).unwrap();
    other.load().unwrap();
    let f3 = create(&other, ROOT_INODE, "f3");
    let attr = other
        .set_facl(
            &root(),
            f3,
            AclType::Access,
            Some(m.get_facl(c2, AclType::Access).unwrap()),
        )
        .unwrap();
    assert_eq!(attr.access_acl, cattr.access_acl);
    assert_eq!(
        other.get_facl(child, AclType::Access).unwrap(),
        m.get_facl(child, AclType::Access).unwrap()
    );
}

fn counters_are_exact(url: &str) {
    let (m, _) = setup(url);
    let base_inodes = m.counter("totalInodes").unwrap();
    let base_space = m.counter("usedSpace").unwrap();
    let d = mkdir(&m, ROOT_INODE, "d");
    let f = create(&m, d, "f");
    write(&m, f, 0, 0, 1, 10_000);
    assert_eq!(m.counter("totalInodes").unwrap(), base_inodes + 2);
    assert_eq!(m.counter("usedSpace").unwrap(), base_space + 4096 + 12288);
    m.truncate(&root(), f, 0).unwrap();
    assert_eq!(m.counter("usedSpace").unwrap(), base_space + 8192);
    m.unlink(&root(), d, b"f").unwrap();
    m.rmdir(&root(), ROOT_INODE, b"d").unwrap();
    assert_eq!(m.counter("totalInodes").unwrap(), base_inodes);
    assert_eq!(m.counter("usedSpace").unwrap(), base_space);
    let st = m.statfs().unwrap();
    assert_eq!(st.used_inodes as i64, base_inodes);
    // Limits.
    let mut fmt = m.get_format().unwrap();
    fmt.inodes = base_inodes as u64 + 1;
    fmt.capacity = 1 << 20;
    m.format(fmt, true).unwrap();
    let g = create(&m, ROOT_INODE, "g");
    assert_eq!(
        errno(m.mknod(&root(), ROOT_INODE, b"h", FileType::File, 0o644, 0, 0, b"")),
        libc::ENOSPC
    );
    assert_eq!(
        errno(m.write_slice(
            g,
            0,
            Slice {
                pos: 0,
                id: 5,
                size: 2 << 20,
                off: 0,
                len: 2 << 20
            },
            Time::now()
        )),
        libc::ENOSPC
    );
    assert_eq!(m.statfs().unwrap().total_space, 1 << 20);
}

/// With a session, usage changes stay in memory until flushed (by the background thread
/// or `close_session`), and two clients creating at once lose none of them.
fn deferred_counters(url: &str) {
    let (m, _) = setup(url);
    let info = SessionInfo::default();
    let reader = Meta::connect(url).unwrap();
    reader.load().unwrap();
    let base_inodes = reader.counter("totalInodes").unwrap();
    let base_space = reader.counter("usedSpace").unwrap();
    m.new_session(&info).unwrap();
    let d = mkdir(&m, ROOT_INODE, "d");
    let f = create(&m, d, "f");
    write(&m, f, 0, 0, 1, 10_000);
    // This client counts its own changes at once; the database has them within ~1 s.
    assert_eq!(m.counter("totalInodes").unwrap(), base_inodes + 2);
    assert_eq!(m.counter("usedSpace").unwrap(), base_space + 4096 + 12288);
    assert_eq!(m.statfs().unwrap().used_inodes as i64, base_inodes + 2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // The flusher commits the counters, then takes what it committed off the pending
    // sums: both must be seen done.
    while reader.counter("totalInodes").unwrap() != base_inodes + 2 || m.pending_usage() != (0, 0) {
        assert!(std::time::Instant::now() < deadline, "usage never flushed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        reader.counter("usedSpace").unwrap(),
        base_space + 4096 + 12288
    );
    // Two clients with sessions, four threads each, creating and removing at once.
    let other = Meta::connect(url).unwrap();
    other.load().unwrap();
    other.new_session(&info).unwrap();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let c = if t.is_multiple_of(2) {
                m.clone()
            } else {
                other.clone()
            };
            std::thread::spawn(move || {
                for i in 0..20u64 {
                    let name = format!("c{t}-{i}");
                    let ino = create(&c, d, &name);
                    write(&c, ino, 0, 0, 1000 + 100 * t + i, 5000 + i as u32);
                    if i.is_multiple_of(4) {
                        c.unlink(&root(), d, name.as_bytes()).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    m.close_session().unwrap();
    other.close_session().unwrap();
    assert_eq!((m.pending_usage(), other.pending_usage()), ((0, 0), (0, 0)));
    // 8 x 15 files of 5000..5019 bytes (8 KiB each) are left, plus d and f.
    assert_eq!(
        reader.counter("totalInodes").unwrap(),
        base_inodes + 2 + 120
    );
    assert_eq!(
        reader.counter("usedSpace").unwrap(),
        base_space + 4096 + 12288 + 120 * 8192
    );
}

fn sessions(url: &str) {
    let (m, _) = setup(url);
    let info = SessionInfo {
        version: "test".into(),
        host_name: "h".into(),
        ip_addrs: vec![],
        mount_point: "/mnt/x".into(),
        process_id: 42,
    };
    let sid = m.new_session(&info).unwrap();
    m.refresh_session().unwrap();
    let list = m.list_sessions().unwrap();
    let s = list.iter().find(|s| s.sid == sid).unwrap();
    assert_eq!(s.info.mount_point, "/mnt/x");
    assert_eq!(s.info.process_id, 42);
    // Another client sees an expired session and cleans it.
    m.kv()
        .txn(|tx| Ok(tx.set(&keys::session_expire(sid), &1i64.to_be_bytes())?))
        .unwrap();
    let other = Meta::connect(url).unwrap();
    other.load().unwrap();
    assert_eq!(other.clean_stale_sessions().unwrap(), 1);
    assert!(m.list_sessions().unwrap().iter().all(|s| s.sid != sid));
}

/// Number of keys under `prefix`.
fn count_keys(m: &Meta, prefix: &[u8]) -> usize {
    let end = nectar_meta::kv::prefix_end(prefix);
    m.kv()
        .read(|tx| Ok(tx.scan(prefix, &end, usize::MAX)?))
        .unwrap()
        .len()
}

/// Every slice record of a session: ranges, commits, mark.
fn slice_records(m: &Meta, sid: u64) -> [usize; 3] {
    [
        keys::session_ranges_prefix(sid),
        keys::session_commits_prefix(sid),
        keys::session_mark(sid),
    ]
    .map(|p| count_keys(m, &p))
}

type Swept = Arc<Mutex<Vec<(Vec<(u64, u64)>, std::collections::HashSet<u64>)>>>;

/// A client killed between storing a slice's blocks and committing it leaves blocks no
/// chunk refers to. Whoever cleans its session hands the sweeper exactly the ids it drew
/// and never committed, whatever became of the committed ones (shared by
/// copy_file_range and gone from their first file, or written by compaction), and from
/// then on nothing drawn under the dead session can be committed.
fn unfinished_slices_of_a_dead_client(url: &str) {
    let (a, _) = setup(url);
    let sid = a.new_session(&SessionInfo::default()).unwrap();
    let f = create(&a, ROOT_INODE, "first");
    let g = create(&a, ROOT_INODE, "copy");
    let h = create(&a, ROOT_INODE, "compacted");

    // Committed and settled before the last heartbeat: its record is pruned.
    let early = a.new_slice().unwrap();
    let early_id = early.id();
    write(&a, f, 0, 0, early_id, 10);
    drop(early);
    a.refresh_session().unwrap();
    assert_eq!(
        count_keys(&a, &keys::session_commits_prefix(sid)),
        0,
        "pruned below the mark"
    );
    assert_eq!(count_keys(&a, &keys::session_ranges_prefix(sid)), 1);

    // Committed after the heartbeat, shared, then dropped from its first file.
    let shared = a.new_slice().unwrap();
    write(&a, f, 0, 0, shared.id(), 100);
    a.copy_file_range(&root(), f, 0, g, 0, 100).unwrap();
    a.truncate(&root(), f, 0).unwrap();
    // Committed by a compaction.
    let parts = [a.new_slice().unwrap(), a.new_slice().unwrap()];
    write(&a, h, 0, 0, parts[0].id(), 50);
    write(&a, h, 0, 50, parts[1].id(), 50);
    let compacted = a.new_slice().unwrap();
    let old = a.read_chunk(h, 0).unwrap();
    let new = Slice {
        pos: 0,
        id: compacted.id(),
        size: 100,
        off: 0,
        len: 100,
    };
    assert!(a.replace_chunk_prefix(h, 0, &old, Some(new)).unwrap());
    // Stored, never committed.
    let lost = [a.new_slice().unwrap(), a.new_slice().unwrap()];
    assert_eq!(count_keys(&a, &keys::session_commits_prefix(sid)), 4);

    // The client dies holding all of them. A sweeper that fails leaves the session to
    // clean again.
    a.kv()
        .txn(|tx| Ok(tx.set(&keys::session_expire(sid), &1i64.to_be_bytes())?))
        .unwrap();
    let b = Meta::connect(url).unwrap();
    b.load().unwrap();
    b.set_slice_sweeper(Arc::new(|_, _| Err("bucket unreachable".into())));
    let e = b.clean_stale_sessions().unwrap_err().to_string();
    assert!(
        e.contains(&format!("session {sid}")) && e.contains("bucket unreachable"),
        "{e}"
    );
    assert!(b.list_sessions().unwrap().iter().any(|s| s.sid == sid));
    let swept: Swept = Default::default();
    let log = swept.clone();
    b.set_slice_sweeper(Arc::new(move |ranges, keep| {
        log.lock().unwrap().push((ranges.to_vec(), keep.clone()));
        Ok(0)
    }));
    assert_eq!(b.clean_stale_sessions().unwrap(), 1);
    let calls = swept.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    let (ranges, keep) = &calls[0];
    let doomed = |id: u64| !keep.contains(&id) && ranges.iter().any(|&(s, e)| s <= id && id < e);
    for l in &lost {
        assert!(doomed(l.id()), "uncommitted slice {} not swept", l.id());
    }
    let live: Vec<u64> = [g, h]
        .iter()
        .flat_map(|&ino| a.read_chunk(ino, 0).unwrap())
        .map(|s| s.id)
        .collect();
    assert!(live.contains(&shared.id()) && live.contains(&compacted.id()));
    for id in live {
        assert!(!doomed(id), "slice {id} is referenced but was swept");
    }
    assert!(
        !ranges.iter().any(|&(s, e)| s <= early_id && early_id < e),
        "settled before the mark, yet handed to the sweeper: {ranges:?}"
    );
    assert_eq!(
        slice_records(&b, sid),
        [0, 0, 0],
        "records left after cleaning"
    );
    assert!(b.list_sessions().unwrap().iter().all(|s| s.sid != sid));

    // The client was not dead after all: what it drew under the old session cannot be
    // committed, and its next heartbeat continues under a new session.
    let late = Slice {
        pos: 0,
        id: lost[0].id(),
        size: 10,
        off: 0,
        len: 10,
    };
    let e = a.write_slice(g, 1, late, Time::now()).unwrap_err();
    assert!(matches!(e, Error::SessionLost(s) if s == sid), "{e}");
    assert_eq!(e.errno(), libc::EIO);
    a.refresh_session().unwrap();
    let sid2 = a.session_id();
    assert_ne!(sid2, sid);
    let fresh = a.new_slice().unwrap();
    write(&a, g, 1, 0, fresh.id(), 10);
    assert_eq!(count_keys(&a, &keys::session_ranges_prefix(sid2)), 1);
    assert_eq!(count_keys(&a, &keys::session_commits_prefix(sid2)), 1);
    drop(fresh);
    a.close_session().unwrap();
    assert_eq!(
        slice_records(&a, sid2),
        [0, 0, 0],
        "records left by a clean close"
    );
}

/// Two clients (sessions) of one volume contend for flock and POSIX locks exactly as two
/// processes do; the locks of a session that expires are released by whoever cleans it.
fn locks_between_clients(url: &str) {
    use nectar_meta::locks::{F_RDLCK, F_UNLCK, F_WRLCK};
    let (a, _) = setup(url);
    a.new_session(&SessionInfo::default()).unwrap();
    let b = Meta::connect(url).unwrap();
    b.load().unwrap();
    b.new_session(&SessionInfo::default()).unwrap();
    let f = create(&a, ROOT_INODE, "locked");

    // flock: shared with shared, exclusive against everything, upgrade when alone.
    assert!(a.try_flock(f, 1, F_RDLCK).unwrap());
    assert!(b.try_flock(f, 1, F_RDLCK).unwrap());
    assert!(!b.try_flock(f, 1, F_WRLCK).unwrap());
    assert!(a.try_flock(f, 1, F_UNLCK).unwrap());
    assert!(b.try_flock(f, 1, F_WRLCK).unwrap());
    assert!(!a.try_flock(f, 2, F_RDLCK).unwrap());
    assert_eq!(errno(a.try_flock(f, 2, 99)), libc::EINVAL);

    // POSIX ranges: disjoint ranges coexist, overlaps conflict, F_GETLK names the holder.
    assert!(a.try_setlk(f, 7, F_WRLCK, 0, 99, 1000).unwrap());
    assert!(b.try_setlk(f, 7, F_WRLCK, 100, 199, 2000).unwrap());
    assert!(!b.try_setlk(f, 7, F_RDLCK, 50, 60, 2000).unwrap());
    let held = b.getlk(f, 7, F_RDLCK, 50, 60).unwrap().unwrap();
    assert_eq!(
        (held.typ, held.start, held.end, held.pid),
        (F_WRLCK, 0, 99, 1000)
    );
    assert!(
        a.getlk(f, 7, F_WRLCK, 0, 99).unwrap().is_none(),
        "own locks never conflict"
    );
    // Unlocking the middle of a's range lets b lock exactly that hole.
    assert!(a.try_setlk(f, 7, F_UNLCK, 40, 59, 1000).unwrap());
    assert!(b.try_setlk(f, 7, F_WRLCK, 40, 59, 2000).unwrap());
    assert!(!b.try_setlk(f, 7, F_WRLCK, 39, 40, 2000).unwrap());
    assert_eq!(errno(a.try_setlk(f, 7, F_WRLCK, 10, 5, 1000)), libc::EINVAL);
    let tables = a.list_locks(f).unwrap();
    assert_eq!(tables.flocks.len(), 1);
    let a_ranges: Vec<(u64, u64)> = tables
        .plocks
        .iter()
        .find(|(o, _)| o.sid == a.session_id())
        .unwrap()
        .1
        .iter()
        .map(|r| (r.start, r.end))
        .collect();
    assert_eq!(a_ranges, vec![(0, 39), (60, 99)]);

    // b's session expires: a cleans it and b's flock and ranges are gone.
    b.kv()
        .txn(|tx| Ok(tx.set(&keys::session_expire(b.session_id()), &1i64.to_be_bytes())?))
        .unwrap();
    assert_eq!(a.clean_stale_sessions().unwrap(), 1);
    assert!(a.try_flock(f, 2, F_WRLCK).unwrap());
    assert!(a
        .try_setlk(f, 8, F_WRLCK, 0, u64::MAX >> 1, 1001)
        .is_ok_and(|ok| !ok));
    assert!(a.try_setlk(f, 7, F_WRLCK, 0, u64::MAX >> 1, 1000).unwrap());
    // Closing a's session leaves no lock table behind.
    a.close_session().unwrap();
    let tables = b.list_locks(f).unwrap();
    assert!(tables.flocks.is_empty() && tables.plocks.is_empty());
}

fn concurrent_transactions(url: &str) {
    let (m, _) = setup(url);
    let d = mkdir(&m, ROOT_INODE, "d");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let m = m.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    create(&m, d, &format!("t{t}-{i}"));
                    m.kv().txn(|tx| Ok(tx.incr_by(b"Ctest", 1)?)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(m.counter("test").unwrap(), 100);
    assert_eq!(m.readdir(&root(), d, None, 1000, false).unwrap().len(), 100);
    let mut inos: HashMap<Ino, ()> = HashMap::new();
    for e in m.readdir(&root(), d, None, 1000, false).unwrap() {
        assert!(
            inos.insert(e.ino, ()).is_none(),
            "inode {} handed out twice",
            e.ino
        );
    }
}

#[test]
fn sqlite_bad_paths() {
    let e = Meta::connect("sqlite3:///nonexistent-dir/x/meta.db")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
    let e = Meta::connect("nosuch://x").err().unwrap().to_string();
    assert!(e.contains("unknown metadata engine"), "{e}");
    let e = Meta::connect("just-a-path").err().unwrap().to_string();
    assert!(e.contains("invalid META-URL"), "{e}");
}

#[allow(dead_code)]
fn assert_txn_trait_object(_: &mut dyn KvTxn) {}

#[test]
fn compaction_swaps_a_chunk_prefix() {
    let (m, deleted) = setup("memory://compaction");
    let f = create(&m, ROOT_INODE, "f");
    write(&m, f, 0, 0, 31, 100);
    write(&m, f, 0, 50, 32, 100);
    let old = m.read_chunk(f, 0).unwrap();
    write(&m, f, 0, 10, 33, 5); // lands after the compaction read
    let new = Slice {
        pos: 0,
        id: 34,
        size: 150,
        off: 0,
        len: 150,
    };
    assert!(m.replace_chunk_prefix(f, 0, &old, Some(new)).unwrap());
    let now = m.read_chunk(f, 0).unwrap();
    assert_eq!(
        now,
        vec![
            new,
            Slice {
                pos: 10,
                id: 33,
                size: 5,
                off: 0,
                len: 5
            }
        ]
    );
    let mut d = deleted.lock().unwrap().clone();
    d.sort();
    assert_eq!(d, vec![(31, 100), (32, 100)]);
    // A stale view is refused.
    assert!(!m.replace_chunk_prefix(f, 0, &old, Some(new)).unwrap());
}

/// The names in a directory, sorted.
fn names(m: &Meta, dir: Ino) -> Vec<String> {
    let mut n: Vec<String> = m
        .readdir(&root(), dir, None, usize::MAX, false)
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect();
    n.sort();
    n
}

/// Formats the test volume again with the trash on for `days` days.
fn with_trash(m: &Meta, days: u32) {
    let mut fmt = m.get_format().unwrap();
    fmt.trash_days = days;
    m.format(fmt, true).unwrap();
}

fn trash_keeps_restores_and_expires(url: &str) {
    let (m, deleted) = setup(url);
    // Made by format once the trash is on, and found by name in the root only.
    assert_eq!(
        errno(m.lookup(&root(), ROOT_INODE, b".trash")),
        libc::ENOENT
    );
    with_trash(&m, 1);
    let (t, ta) = m.lookup(&root(), ROOT_INODE, b".trash").unwrap();
    assert_eq!(
        (t, ta.mode, ta.typ),
        (TRASH_INODE, 0o555, FileType::Directory)
    );
    assert!(
        names(&m, ROOT_INODE).is_empty(),
        ".trash is no entry of the root"
    );
    assert_eq!(
        errno(m.mknod(
            &root(),
            ROOT_INODE,
            b".trash",
            FileType::File,
            0o644,
            0,
            0,
            b""
        )),
        libc::EPERM
    );
    let inodes = m.counter("totalInodes").unwrap();

    // A tree removed as `rm -rf` removes it, a file with two names, a replaced file.
    let d = mkdir(&m, ROOT_INODE, "d");
    let sub = mkdir(&m, d, "sub");
    let f = create(&m, d, "f");
    let g = create(&m, sub, "g");
    let (fid, gid) = (m.new_slice().unwrap().id(), m.new_slice().unwrap().id());
    write(&m, f, 0, 0, fid, 100);
    write(&m, g, 0, 0, gid, 200);
    let top = create(&m, ROOT_INODE, "top");
    m.link(&root(), top, ROOT_INODE, b"top2").unwrap();
    let x = create(&m, ROOT_INODE, "x");
    let xid = m.new_slice().unwrap().id();
    write(&m, x, 0, 0, xid, 300);
    let y = create(&m, ROOT_INODE, "y");
    m.opened(f);
    m.unlink(&root(), sub, b"g").unwrap();
    m.rmdir(&root(), d, b"sub").unwrap();
    m.unlink(&root(), d, b"f").unwrap();
    m.rmdir(&root(), ROOT_INODE, b"d").unwrap();
    m.unlink(&root(), ROOT_INODE, b"top").unwrap();
    assert_eq!(
        m.get_attr(top).unwrap().nlink,
        1,
        "another name remains: no trash"
    );
    m.unlink(&root(), ROOT_INODE, b"top2").unwrap();
    m.rename(&root(), ROOT_INODE, b"y", ROOT_INODE, b"x", 0)
        .unwrap();
    m.close(f).unwrap();
    assert!(deleted.lock().unwrap().is_empty(), "nothing is freed");
    assert_eq!(names(&m, ROOT_INODE), ["x"]);
    assert_eq!(m.lookup(&root(), ROOT_INODE, b"x").unwrap().0, y);

    let hours = m.trash_hours().unwrap();
    assert_eq!(hours.len(), 1, "{hours:?}");
    let (hour, h) = hours[0].clone();
    assert_eq!(hour, Utc::from_secs(Time::now().sec).hour_name());
    assert!(h > TRASH_INODE);
    let mut want = vec![
        format!("1-{d}-d"),
        format!("1-{top}-top2"),
        format!("1-{x}-x"),
        format!("{d}-{f}-f"),
        format!("{d}-{sub}-sub"),
        format!("{sub}-{g}-g"),
    ];
    want.sort();
    assert_eq!(names(&m, h), want);
    // Nodes keep their attributes and data; their parent is the hour.
    assert_eq!(m.get_attr(f).unwrap().parent, h);
    assert_eq!(m.get_attr(f).unwrap().nlink, 1);
    assert_eq!(m.read_chunk(f, 0).unwrap()[0].id, fid);
    assert_eq!(
        m.counter("totalInodes").unwrap(),
        inodes + 7 + 1,
        "the hour directory counts"
    );

    // The trash's rules.
    let name = format!("{d}-{f}-f");
    assert_eq!(
        errno(m.unlink(&user(1000), h, name.as_bytes())),
        libc::EPERM
    );
    assert_eq!(
        errno(m.rmdir(&root(), TRASH_INODE, hour.as_bytes())),
        libc::EPERM
    );
    assert_eq!(
        errno(m.mknod(&root(), h, b"new", FileType::File, 0o644, 0, 0, b"")),
        libc::EPERM
    );
    assert_eq!(
        errno(m.mknod(&root(), d, b"new", FileType::File, 0o644, 0, 0, b"")),
        libc::ENOENT,
        "nothing is created in a removed directory"
    );
    assert_eq!(
        errno(m.rename(&root(), ROOT_INODE, b"x", h, b"x", 0)),
        libc::EPERM
    );
    assert_eq!(
        errno(m.rename(&user(1000), h, name.as_bytes(), ROOT_INODE, b"f", 0)),
        libc::EPERM
    );
    assert_eq!(errno(m.open(&root(), f, libc::O_WRONLY)), libc::EPERM);
    assert_eq!(errno(m.truncate(&root(), f, 0)), libc::EPERM);
    m.open(&root(), f, libc::O_RDONLY).unwrap();
    m.close(f).unwrap();

    // Restore rebuilds the removed tree inside the trash, then puts it back; `x` was
    // taken again meanwhile.
    let r = m.restore_hour(&hour, false, 4).unwrap();
    assert_eq!((r.restored, r.need_put_back, r.failed), (3, 3, 0), "{r:?}");
    assert_eq!(names(&m, d), ["f", "sub"]);
    let r = m.restore_hour(&hour, true, 4).unwrap();
    assert_eq!((r.restored, r.conflicts, r.failed), (2, 1, 0), "{r:?}");
    assert_eq!(names(&m, ROOT_INODE), ["d", "top2", "x"]);
    assert_eq!(names(&m, sub), ["g"]);
    let da = m.get_attr(d).unwrap();
    assert_eq!((da.parent, da.nlink), (ROOT_INODE, 3));
    assert_eq!(m.get_attr(ROOT_INODE).unwrap().nlink, 3);
    assert_eq!(m.get_attr(g).unwrap().parent, sub);
    assert_eq!(names(&m, h), [format!("1-{x}-x")]);
    assert!(m.restore_hour("2000-01-01-00", true, 1).is_err());

    // Expiry: nothing before the hour is over, then everything of it, for good.
    m.unlink(&root(), sub, b"g").unwrap();
    let now = Time::now().sec;
    let none = m.expire_trash(now - 3600, 2, &Default::default()).unwrap();
    assert_eq!(none.entries, 0);
    let done = m.expire_trash(now + 1, 2, &Default::default()).unwrap();
    assert_eq!((done.entries, done.hours), (2, 1), "{done:?}");
    assert!(m.trash_hours().unwrap().is_empty());
    let mut d2 = deleted.lock().unwrap().clone();
    d2.sort();
    let mut want = vec![(gid, 200), (xid, 300)];
    want.sort();
    assert_eq!(d2, want);
    assert_eq!(errno(m.get_attr(x)), libc::ENOENT);
    assert_eq!(m.get_attr(TRASH_INODE).unwrap().nlink, 2);
    assert_eq!(
        m.counter("totalInodes").unwrap(),
        inodes + 5,
        "d f sub top y"
    );

    // One client per hour cleans; with the trash off, removal frees at once.
    assert!(m.cleanup_trash_if_due(now, 1).unwrap().is_some());
    assert!(m.cleanup_trash_if_due(now + 60, 1).unwrap().is_none());
    with_trash(&m, 0);
    deleted.lock().unwrap().clear();
    m.unlink(&root(), d, b"f").unwrap();
    assert_eq!(*deleted.lock().unwrap(), vec![(fid, 100)]);
    assert!(m.trash_hours().unwrap().is_empty());
}

fn delayed_slices(url: &str) {
    let (m, deleted) = setup(url);
    with_trash(&m, 1);
    let f = create(&m, ROOT_INODE, "f");
    let (a, b) = (m.new_slice().unwrap().id(), m.new_slice().unwrap().id());
    write(&m, f, 0, 0, a, 4096);
    write(&m, f, 1, 0, b, 4096);
    // Truncate and compaction replace data: kept for the trash time.
    m.truncate(&root(), f, 10).unwrap();
    let c = m.new_slice().unwrap();
    let first = m.read_chunk(f, 0).unwrap();
    let merged = Slice {
        pos: 0,
        id: c.id(),
        size: 10,
        off: 0,
        len: 10,
    };
    assert!(m.replace_chunk_prefix(f, 0, &first, Some(merged)).unwrap());
    drop(c);
    assert!(deleted.lock().unwrap().is_empty());
    let now = Time::now().sec;
    assert_eq!(m.expire_delayed_slices(now - 10).unwrap(), 0);
    assert_eq!(m.expire_delayed_slices(now + 1).unwrap(), 2);
    let mut d = deleted.lock().unwrap().clone();
    d.sort();
    assert_eq!(d, vec![(a, 4096), (b, 4096)]);
    assert_eq!(
        m.expire_delayed_slices(now + 1).unwrap(),
        0,
        "released once"
    );
}

fn remove_a_tree(url: &str) {
    let (m, deleted) = setup(url);
    let top = mkdir(&m, ROOT_INODE, "top");
    // More files than a page of the walk, a few with data, one with another name.
    let mut ids = Vec::new();
    for i in 0..1500 {
        let f = create(&m, top, &format!("f{i:04}"));
        if i % 500 == 0 {
            let id = m.new_slice().unwrap().id();
            write(&m, f, 0, 0, id, 10);
            ids.push((id, 10));
        }
    }
    let linked = m.lookup(&root(), top, b"f0001").unwrap().0;
    m.link(&root(), linked, ROOT_INODE, b"kept").unwrap();
    // Two names of one file, removed in one batch: the file goes with the second.
    let pair = create(&m, top, "p1");
    let pair_id = m.new_slice().unwrap().id();
    write(&m, pair, 0, 0, pair_id, 10);
    ids.push((pair_id, 10));
    m.link(&root(), pair, top, b"p2").unwrap();
    let mut dir = top;
    for depth in 0..4 {
        dir = mkdir(&m, dir, &format!("d{depth}"));
        for j in 0..3 {
            create(&m, dir, &format!("g{j}"));
        }
        mkdir(&m, dir, "empty");
    }
    let removed = std::sync::atomic::AtomicU64::new(0);
    m.empty_dir(&root(), top, 3, false, &removed).unwrap();
    assert_eq!(removed.into_inner(), 1500 + 2 + 4 * (1 + 3 + 1));
    assert_eq!(errno(m.get_attr(pair)), libc::ENOENT);
    assert!(names(&m, top).is_empty());
    let mut d = deleted.lock().unwrap().clone();
    d.sort();
    assert_eq!(d, ids);
    let kept = m.get_attr(linked).unwrap();
    assert_eq!((kept.nlink, kept.parent), (1, 0));
    assert_eq!(m.get_attr(top).unwrap().nlink, 2);
    // Another user may not; into the trash, everything is kept.
    let sub = mkdir(&m, top, "sub");
    for i in 0..120 {
        create(&m, sub, &format!("h{i}"));
    }
    assert_eq!(
        errno(m.empty_dir(&user(1000), sub, 2, true, &Default::default())),
        libc::EACCES
    );
    assert_eq!(names(&m, sub).len(), 120);
    with_trash(&m, 1);
    m.empty_dir(&root(), top, 2, true, &Default::default())
        .unwrap();
    assert!(names(&m, top).is_empty());
    let (_, hour) = m.trash_hours().unwrap()[0];
    assert_eq!(names(&m, hour).len(), 121);
}

/// A chunk of many records compacts in swaps of at most `compaction_limit` records,
/// each a transaction the engine accepts (etcd caps them at 128 operations).
fn compaction_of_a_long_chunk(url: &str) {
    let (m, deleted) = setup(url);
    m.load().unwrap();
    let f = create(&m, ROOT_INODE, "f");
    let sid = m.new_session(&SessionInfo::default()).unwrap();
    assert!(sid > 0);
    for i in 0..150u32 {
        let s = m.new_slice().unwrap();
        write(&m, f, 0, i * 10, s.id(), 10);
    }
    let mut swaps = 0;
    loop {
        let all = m.read_chunk(f, 0).unwrap();
        let take = all.len().min(m.compaction_limit());
        if take < 2 {
            break;
        }
        let prefix = &all[..take];
        let end = prefix.iter().map(|s| s.pos + s.len).max().unwrap();
        let new = m.new_slice().unwrap();
        let merged = Slice {
            pos: 0,
            id: new.id(),
            size: end,
            off: 0,
            len: end,
        };
        assert!(
            m.replace_chunk_prefix(f, 0, prefix, Some(merged)).unwrap(),
            "swap {swaps}"
        );
        drop(new);
        swaps += 1;
    }
    assert_eq!(m.read_chunk(f, 0).unwrap().len(), 1);
    assert!(swaps >= 1);
    assert!(
        deleted.lock().unwrap().len() >= 150,
        "the replaced slices are released"
    );
    m.close_session().unwrap();
}

/// Directory quotas: usage follows creates, writes, links, renames and removals; a
/// change past a limit fails with EDQUOT; clients with sessions (spending credit from
/// memory) never take a quota past its limit together.
fn directory_quotas(url: &str) {
    let (m, _) = setup(url);
    let d = mkdir(&m, ROOT_INODE, "d");
    let sub = mkdir(&m, d, "sub");
    let f = create(&m, sub, "f");
    write(&m, f, 0, 0, 1, 10_000);
    // A new quota counts its tree: sub, f (12 KiB).
    let q = m.set_quota(d, Some(1 << 20), Some(6), 2).unwrap();
    assert_eq!((q.used_space, q.used_inodes), (4096 + 12288, 2));
    let used = |m: &Meta| {
        let q = m.get_quota(d).unwrap().unwrap();
        (q.used_space, q.used_inodes)
    };
    // Creates and writes below it are charged; past a limit they fail.
    let g = create(&m, sub, "g");
    write(&m, g, 0, 0, 2, 100_000);
    assert_eq!(used(&m), (4096 + 12288 + 102400, 3));
    let s = Slice {
        pos: 0,
        id: 3,
        size: 1 << 20,
        off: 0,
        len: 1 << 20,
    };
    assert_eq!(errno(m.write_slice(g, 0, s, Time::now())), libc::EDQUOT);
    assert_eq!(
        errno(m.truncate(&root(), g, 2 << 20)),
        libc::EDQUOT,
        "a truncate that grows is charged too"
    );
    for name in ["h1", "h2", "h3"] {
        create(&m, d, name);
    }
    assert_eq!(
        errno(m.mknod(&root(), d, b"h4", FileType::File, 0o644, 0, 0, b"")),
        libc::EDQUOT
    );
    assert_eq!(
        errno(m.mknod(&root(), sub, b"h4", FileType::Directory, 0o755, 0, 0, b"")),
        libc::EDQUOT,
        "a subdirectory is covered by its ancestor's quota"
    );
    // Outside the quota nothing is refused.
    let outside = create(&m, ROOT_INODE, "outside");
    // A removal gives its usage back; a hard link into the quota is charged.
    m.unlink(&root(), d, b"h1").unwrap();
    assert_eq!(used(&m).1, 5);
    m.link(&root(), outside, d, b"linked").unwrap();
    assert_eq!(used(&m).1, 6);
    m.unlink(&root(), d, b"linked").unwrap();
    // Renames move usage across quotas, a directory's whole tree.
    m.rename(&root(), sub, b"g", ROOT_INODE, b"g", 0).unwrap();
    assert_eq!(used(&m), (4096 + 12288 + 2 * 4096, 4));
    let tree = mkdir(&m, ROOT_INODE, "tree");
    let t1 = create(&m, tree, "t1");
    write(&m, t1, 0, 0, 4, 5000);
    mkdir(&m, tree, "t2");
    assert_eq!(
        errno(m.rename(&root(), ROOT_INODE, b"tree", d, b"tree", 0)),
        libc::EDQUOT,
        "three inodes do not fit in two"
    );
    m.unlink(&root(), d, b"h2").unwrap();
    m.rename(&root(), ROOT_INODE, b"tree", d, b"tree", 0)
        .unwrap();
    // sub, f, h3; tree, t1 (8 KiB), t2.
    assert_eq!(used(&m), (4096 + 12288 + 4096 + 4096 + 8192 + 4096, 6));
    // The stored usage is what the tree holds.
    let (stored, counted) = m.check_quota(d, false, 2).unwrap();
    assert_eq!(
        (stored.used_space, stored.used_inodes),
        (counted.used_space, counted.used_inodes)
    );
    // `df` of the directory shows the quota.
    let st = m.quota_statfs(sub).unwrap().expect("covered by d's quota");
    assert_eq!(st.total_space, 1 << 20);
    assert_eq!(st.avail_inodes, 0);
    assert!(m.quota_statfs(ROOT_INODE).unwrap().is_none());
    // A repair writes the counted usage over a wrong one.
    m.kv()
        .txn(|tx| {
            let q = Quota {
                max_space: 1 << 20,
                max_inodes: 6,
                used_space: 7,
                used_inodes: 70,
            };
            let mut v = Vec::new();
            for n in [q.max_space, q.max_inodes, q.used_space, q.used_inodes] {
                v.extend_from_slice(&n.to_be_bytes());
            }
            Ok(tx.set(&keys::dir_quota(d), &v)?)
        })
        .unwrap();
    let (stored, counted) = m.check_quota(d, true, 2).unwrap();
    assert_eq!((stored.used_space, stored.used_inodes), (7, 70));
    assert_eq!(used(&m), (counted.used_space, counted.used_inodes));
    // Raising the limit lets creates in again; removing the directory drops its quota.
    m.set_quota(d, None, Some(1000), 2).unwrap();
    create(&m, d, "h4");
    assert_eq!(m.list_quotas().unwrap().len(), 1);
    assert_eq!(m.dir_path(sub).unwrap(), "/d/sub");

    // Two clients with sessions spend credit from memory, in parallel: together they
    // stop exactly at the limit, and give back what they did not spend.
    let q = mkdir(&m, ROOT_INODE, "q");
    m.set_quota(q, Some(1 << 30), Some(40), 2).unwrap();
    let clients = session_clients(url, 2);
    let made = create_until_refused(&clients, q, "c", 30, libc::EDQUOT);
    assert!(
        (36..=40).contains(&made),
        "{made} files made under a quota of 40 inodes"
    );
    for c in &clients {
        c.close_session().unwrap();
    }
    let after = m.get_quota(q).unwrap().unwrap();
    assert_eq!(
        (after.used_inodes, after.used_space),
        (made as i64, made as i64 * 4096),
        "credit not spent was given back"
    );

    // The volume's inode limit, the same way: clients with sessions stop exactly at it
    // and give back the grants they did not use.
    let mut fmt = m.get_format().unwrap();
    let before = m.counter("totalInodes").unwrap();
    fmt.inodes = before as u64 + 30;
    m.format(fmt, true).unwrap();
    let clients = session_clients(url, 2);
    let made = create_until_refused(&clients, ROOT_INODE, "v", 20, libc::ENOSPC);
    assert!(
        (26..=30).contains(&made),
        "{made} inodes made under a limit of 30 more"
    );
    for c in &clients {
        c.close_session().unwrap();
    }
    assert_eq!(m.counter("totalInodes").unwrap(), before + made as i64);
    let grants = m.get_quota(ROOT_INODE).unwrap().unwrap();
    assert_eq!(
        (grants.used_space, grants.used_inodes),
        (0, 0),
        "grants given back"
    );
}

/// `n` clients of `url`, each with a session.
fn session_clients(url: &str, n: usize) -> Vec<Arc<Meta>> {
    (0..n)
        .map(|_| {
            let c = Meta::connect(url).unwrap();
            c.load().unwrap();
            c.new_session(&SessionInfo::default()).unwrap();
            c
        })
        .collect()
}

/// Four threads, two per client in turn, each creating `per_thread` files in `dir`
/// (named `<tag><thread>-<i>`) where a refusal must be `refused`; how many were made.
fn create_until_refused(
    clients: &[Arc<Meta>],
    dir: Ino,
    tag: &str,
    per_thread: usize,
    refused: i32,
) -> usize {
    let made = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (c, made) = (&clients[t % clients.len()], &made);
            s.spawn(move || {
                for i in 0..per_thread {
                    let name = format!("{tag}{t}-{i}");
                    let mode = FileType::File;
                    match c.mknod(&root(), dir, name.as_bytes(), mode, 0o644, 0, 0, b"") {
                        Ok(_) => {
                            made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(e) => assert_eq!(e.errno(), refused),
                    }
                }
            });
        }
    });
    made.into_inner()
}

/// A file removed while another client may read it keeps its data until that client
/// closes it (published at its heartbeat) or, unpublished, for the grace period.
fn readers_on_other_clients(url: &str) {
    let (_m, _) = setup(url);
    let cfg = nectar_meta::meta::MetaConfig {
        session_timeout: std::time::Duration::from_secs(2),
        ..nectar_meta::meta::MetaConfig::default()
    };
    let client = || {
        let c = Meta::connect_with(url, cfg.clone()).unwrap();
        c.load().unwrap();
        let deleted: Deleted = Default::default();
        let d = deleted.clone();
        c.set_slice_deleter(Arc::new(move |s| d.lock().unwrap().extend(s)));
        c.new_session(&SessionInfo::default()).unwrap();
        (c, deleted)
    };
    let (a, a_deleted) = client();
    let (b, _) = client();
    a.refresh_session().unwrap();
    let f = create(&a, ROOT_INODE, "f");
    let g = create(&a, ROOT_INODE, "g");
    let (idf, idg) = (a.new_slice().unwrap().id(), a.new_slice().unwrap().id());
    write(&a, f, 0, 0, idf, 1000);
    write(&a, g, 0, 0, idg, 1000);
    // B reads f, and its heartbeat publishes that; g it never opens.
    b.open(&root(), f, libc::O_RDONLY).unwrap();
    b.refresh_session().unwrap();
    let usage = a.counter("usedSpace").unwrap();
    a.unlink(&root(), ROOT_INODE, b"f").unwrap();
    a.unlink(&root(), ROOT_INODE, b"g").unwrap();
    assert_eq!(
        a.counter("usedSpace").unwrap(),
        usage - 2 * 4096,
        "freed at once"
    );
    assert_eq!(errno(a.lookup(&root(), ROOT_INODE, b"f")), libc::ENOENT);
    // Both are still readable by inode, as B's open handle reads them.
    assert_eq!(b.get_attr(f).unwrap().nlink, 0);
    assert_eq!(b.read_chunk(f, 0).unwrap().len(), 1);
    assert_eq!(b.read_chunk(g, 0).unwrap().len(), 1);
    assert_eq!(
        a.cleanup_deleted_files().unwrap(),
        0,
        "within the grace period"
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    for c in [&a, &b] {
        c.refresh_session().unwrap();
    }
    // Past the grace period: g goes; f stays while B has it open.
    assert_eq!(a.cleanup_deleted_files().unwrap(), 1);
    assert_eq!(a_deleted.lock().unwrap().clone(), vec![(idg, 1000)]);
    assert_eq!(errno(b.get_attr(g)), libc::ENOENT);
    assert_eq!(b.read_chunk(f, 0).unwrap().len(), 1, "B still reads f");
    b.close(f).unwrap();
    b.refresh_session().unwrap();
    assert_eq!(a.cleanup_deleted_files().unwrap(), 1);
    assert_eq!(errno(b.get_attr(f)), libc::ENOENT);
    assert!(a_deleted.lock().unwrap().contains(&(idf, 1000)));
    // Alone on the volume, a client deletes at once.
    b.close_session().unwrap();
    a.refresh_session().unwrap();
    let h = create(&a, ROOT_INODE, "h");
    write(&a, h, 0, 0, a.new_slice().unwrap().id(), 10);
    a.unlink(&root(), ROOT_INODE, b"h").unwrap();
    assert_eq!(errno(a.get_attr(h)), libc::ENOENT);
    a.close_session().unwrap();
}
