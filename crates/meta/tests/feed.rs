//! The client cache kept fresh by the change feed, with two clients of one volume on
//! each engine (Redis, etcd, PostgreSQL, MySQL from NECTAR_TEST_META_URLS;
//! SQLite, whose two clients stand for two processes on one database file): one
//! changes, the other hears it, drops what it cached and answers the new state; a cut
//! feed stops the cache at once and a feed that comes back starts it empty.

mod common;
use common::{new_format, server_url};
use nectar_kv::counting::Counting;
use nectar_kv::open_engine;
use nectar_meta::meta::MetaConfig;
use nectar_meta::{keys, Change, Ctx, FileType, Meta, SetAttr, ROOT_INODE};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a change may take to reach the other client in these tests (the bound
/// measured on a loaded two-core machine is far below).
const BOUND: Duration = Duration::from_secs(2);

struct Follower {
    meta: Arc<Meta>,
    counts: Arc<nectar_kv::counting::Counts>,
    heard: mpsc::Receiver<Vec<Change>>,
}

impl Follower {
    fn new(url: &str) -> Follower {
        let engine = Counting::new(open_engine(url, &keys::LAYOUT).unwrap());
        let counts = engine.counts();
        let meta = Meta::with_engine(Box::new(engine), url, MetaConfig::default());
        meta.load().unwrap();
        let (tx, heard) = mpsc::channel();
        assert!(meta.feed_supported());
        assert!(meta.follow_changes(Arc::new(move |c: &[Change]| {
            let _ = tx.send(c.to_vec());
        })));
        let f = Follower {
            meta,
            counts,
            heard,
        };
        f.wait_for(|c| c == &Change::FeedLive);
        f
    }

    /// Waits until a change `wanted` selects, or "everything changed" (all that SQLite
    /// can tell), is heard; returns how long it took.
    fn wait_for(&self, wanted: impl Fn(&Change) -> bool) -> Duration {
        let wanted = |c: &Change| c == &Change::Everything || wanted(c);
        let start = Instant::now();
        loop {
            let left = BOUND.saturating_sub(start.elapsed());
            let changes = self
                .heard
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("nothing wanted heard within {BOUND:?}"));
            if changes.iter().any(&wanted) {
                return start.elapsed();
            }
        }
    }

    /// Waits until nothing more is heard for 200 ms (SQLite's poll may still report a
    /// change the test already waited for).
    fn settle(&self) {
        while self.heard.recv_timeout(Duration::from_millis(200)).is_ok() {}
    }

    /// Transactions run since the last call.
    fn transactions(&self) -> u64 {
        self.counts.take().attempts
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.meta.stop_following();
    }
}

fn file(meta: &Meta, name: &[u8]) -> u64 {
    meta.mknod(
        &Ctx::root(),
        ROOT_INODE,
        name,
        FileType::File,
        0o644,
        0,
        0,
        b"",
    )
    .unwrap()
    .0
}

fn another_clients_changes_reach_the_cache(engine: &str) {
    let Some(url) = server_url(engine, "feed") else {
        return;
    };
    changes_reach_the_cache(engine, &url);
}

fn changes_reach_the_cache(engine: &str, url: &str) {
    let url = url.to_string();
    let writer = Meta::connect(&url).unwrap();
    writer.kv().reset().unwrap();
    writer.format(new_format("feed"), false).unwrap();
    let ino = file(&writer, b"f");
    let reader = Follower::new(&url);
    let r = &reader.meta;
    let ctx = Ctx::root();

    // Looked up once, then answered from memory.
    assert_eq!(r.lookup(&ctx, ROOT_INODE, b"f").unwrap().0, ino);
    reader.transactions();
    for _ in 0..100 {
        assert_eq!(r.lookup(&ctx, ROOT_INODE, b"f").unwrap().1.mode, 0o644);
        r.get_attr(ino).unwrap();
    }
    assert_eq!(
        reader.transactions(),
        0,
        "cached lookups and stats are free"
    );

    // A listing, read once, then cut into pages from memory with the attributes kept.
    let names = |m: &Meta| -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = m
                .readdir(&ctx, ROOT_INODE, after.as_deref(), 2, true)
                .unwrap();
            assert!(page.iter().all(|e| e.attr.is_some()));
            out.extend(page.iter().map(|e| e.name.clone()));
            match page.last() {
                Some(last) if page.len() == 2 => after = Some(last.name.clone()),
                _ => return out,
            }
        }
    };
    for n in [b"l1", b"l2", b"l3"] {
        file(&writer, n);
    }
    reader.wait_for(|c| c == &Change::Entry(ROOT_INODE, b"l3".to_vec()));
    reader.settle();
    assert_eq!(names(r), [&b"f"[..], b"l1", b"l2", b"l3"]);
    reader.transactions();
    assert_eq!(names(r), [&b"f"[..], b"l1", b"l2", b"l3"]);
    assert_eq!(reader.transactions(), 0, "a kept listing is free");
    writer.unlink(&ctx, ROOT_INODE, b"l2").unwrap();
    reader.wait_for(|c| c == &Change::Entry(ROOT_INODE, b"l2".to_vec()));
    assert_eq!(names(r), [&b"f"[..], b"l1", b"l3"]);
    for n in [b"l1", b"l3"] {
        writer.unlink(&ctx, ROOT_INODE, n).unwrap();
    }
    reader.wait_for(|c| c == &Change::Entry(ROOT_INODE, b"l3".to_vec()));
    // This client's own change is seen at once.
    file(r, b"mine");
    assert_eq!(names(r), [&b"f"[..], b"mine"]);
    r.unlink(&ctx, ROOT_INODE, b"mine").unwrap();
    assert_eq!(names(r), [&b"f"[..]]);

    // A directory this client made, or listed whole, knows which names it lacks: the
    // lookup before each create costs nothing, until another client changes an entry.
    let make = |m: &Meta, parent, name: &[u8], typ| {
        m.mknod(&ctx, parent, name, typ, 0o755, 0, 0, b"")
            .unwrap()
            .0
    };
    let absent = |parent, name: &[u8]| {
        assert_eq!(
            r.lookup(&ctx, parent, name).unwrap_err().errno(),
            libc::ENOENT
        );
    };
    let nd = make(r, ROOT_INODE, b"nd", FileType::Directory);
    reader.transactions();
    absent(nd, b"x");
    assert_eq!(reader.transactions(), 0, "a new directory is empty");
    let x = make(r, nd, b"x", FileType::File);
    reader.transactions();
    assert_eq!(r.lookup(&ctx, nd, b"x").unwrap().0, x);
    absent(nd, b"y");
    assert_eq!(reader.transactions(), 0, "its own create keeps it complete");
    let y = make(&writer, nd, b"y", FileType::File);
    reader.wait_for(|c| c == &Change::Entry(nd, b"y".to_vec()));
    assert_eq!(r.lookup(&ctx, nd, b"y").unwrap().0, y, "another's create");
    r.unlink(&ctx, nd, b"x").unwrap();
    r.readdir(&ctx, nd, None, 10, false).unwrap();
    reader.transactions();
    absent(nd, b"x");
    absent(nd, b"z");
    assert_eq!(reader.transactions(), 0, "a whole listing completes it");
    r.rename(&ctx, nd, b"y", nd, b"y2", 0).unwrap();
    reader.transactions();
    absent(nd, b"y");
    assert_eq!(r.lookup(&ctx, nd, b"y2").unwrap().0, y);
    absent(nd, b"z");
    assert_eq!(reader.transactions(), 0, "its own rename keeps it complete");
    writer.unlink(&ctx, nd, b"y2").unwrap();
    reader.wait_for(|c| c == &Change::Entry(nd, b"y2".to_vec()));
    absent(nd, b"y2");
    r.rmdir(&ctx, ROOT_INODE, b"nd").unwrap();

    // An attribute change.
    let since = r.change_seq();
    let set = SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    writer.setattr(&ctx, ino, &set).unwrap();
    let took = reader.wait_for(|c| c == &Change::Attr(ino));
    eprintln!("{engine}: an attribute change reached the other client in {took:?}");
    assert!(r.changed_since(since, ino, None));
    assert_eq!(r.get_attr(ino).unwrap().mode, 0o600);
    assert_eq!(r.lookup(&ctx, ROOT_INODE, b"f").unwrap().1.mode, 0o600);

    // An entry renamed away, and one made.
    writer
        .rename(&ctx, ROOT_INODE, b"f", ROOT_INODE, b"g", 0)
        .unwrap();
    reader.wait_for(|c| c == &Change::Entry(ROOT_INODE, b"f".to_vec()));
    assert_eq!(
        r.lookup(&ctx, ROOT_INODE, b"f").unwrap_err().errno(),
        libc::ENOENT
    );
    assert_eq!(r.lookup(&ctx, ROOT_INODE, b"g").unwrap().0, ino);
    let other = file(&writer, b"f");
    reader.wait_for(|c| c == &Change::Entry(ROOT_INODE, b"f".to_vec()));
    assert_eq!(r.lookup(&ctx, ROOT_INODE, b"f").unwrap().0, other);

    // This client's own changes are seen by its own cache at once.
    r.setattr(
        &ctx,
        other,
        &SetAttr {
            mode: Some(0o640),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.lookup(&ctx, ROOT_INODE, b"f").unwrap().1.mode, 0o640);
    r.unlink(&ctx, ROOT_INODE, b"f").unwrap();
    assert_eq!(
        r.lookup(&ctx, ROOT_INODE, b"f").unwrap_err().errno(),
        libc::ENOENT
    );

    // An unlink of a name another client just pointed at another inode removes that
    // inode, whatever this client last saw the name naming.
    let old = file(&writer, b"a");
    let new = file(&writer, b"b");
    assert_eq!(r.lookup(&ctx, ROOT_INODE, b"a").unwrap().0, old);
    writer
        .rename(&ctx, ROOT_INODE, b"b", ROOT_INODE, b"a", 0)
        .unwrap();
    r.unlink(&ctx, ROOT_INODE, b"a").unwrap();
    for ino in [old, new] {
        assert_eq!(writer.get_attr(ino).unwrap_err().errno(), libc::ENOENT);
    }
    writer.kv().reset().unwrap();
}

/// A directory too large to keep is listed page by page, every entry once, in order,
/// its first page cut from the entries read to find out it is too large.
#[test]
fn a_directory_too_large_to_keep_is_listed_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite3://{}/v.db", dir.path().display());
    let writer = Meta::connect(&url).unwrap();
    writer.format(new_format("big"), false).unwrap();
    let ctx = Ctx::root();
    let d = writer
        .mknod(
            &ctx,
            ROOT_INODE,
            b"d",
            FileType::Directory,
            0o755,
            0,
            0,
            b"",
        )
        .unwrap()
        .0;
    let total = nectar_meta::cache::MAX_LISTING + 5;
    let names: Vec<Vec<u8>> = (0..total).map(|i| format!("{i:06}").into_bytes()).collect();
    for n in &names {
        writer
            .mknod(&ctx, d, n, FileType::File, 0o644, 0, 0, b"")
            .unwrap();
    }
    let reader = Follower::new(&url);
    let list = || {
        let mut seen = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = reader
                .meta
                .readdir(&ctx, d, after.as_deref(), 1024, true)
                .unwrap();
            assert!(page.iter().all(|e| e.attr.is_some()));
            seen.extend(page.iter().map(|e| e.name.clone()));
            if page.len() < 1024 {
                return seen;
            }
            after = Some(page.last().unwrap().name.clone());
        }
    };
    assert_eq!(list(), names);
    reader.transactions();
    assert_eq!(list(), names);
    assert!(reader.transactions() > 0, "not kept whole");
}

/// One test for both Redis scenarios: the cut kills every subscriber of the server.
#[test]
fn redis_changes_reach_the_cache_and_a_cut_stops_it() {
    another_clients_changes_reach_the_cache("redis");
    a_cut_redis_feed_stops_the_cache_until_it_is_back();
}

#[test]
fn etcd_changes_reach_the_cache() {
    another_clients_changes_reach_the_cache("etcd");
}

#[test]
fn postgres_changes_reach_the_cache() {
    another_clients_changes_reach_the_cache("postgres");
}

#[test]
fn mysql_changes_reach_the_cache() {
    another_clients_changes_reach_the_cache("mysql");
}

/// Two clients of one SQLite file hear that the other changed something.
#[test]
fn sqlite_changes_reach_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite3://{}/v.db", dir.path().display());
    changes_reach_the_cache("sqlite", &url);
}

/// Cutting the feed's connection stops the cache at once; when the feed is back, the
/// cache starts empty, so nothing changed meanwhile is answered from memory.
fn a_cut_redis_feed_stops_the_cache_until_it_is_back() {
    let Some(url) = server_url("redis", "feedcut") else {
        return;
    };
    let writer = Meta::connect(&url).unwrap();
    writer.kv().reset().unwrap();
    writer.format(new_format("feedcut"), false).unwrap();
    let ino = file(&writer, b"f");
    let reader = Follower::new(&url);
    let r = &reader.meta;
    assert_eq!(r.get_attr(ino).unwrap().mode, 0o644);
    let authority = url
        .trim_start_matches("redis://")
        .split(['/', '?'])
        .next()
        .unwrap();
    let kill = std::process::Command::new("redis-cli")
        .args(["-h", authority.split(':').next().unwrap()])
        .args(["-p", authority.split(':').nth(1).unwrap_or("6379")])
        .args(["CLIENT", "KILL", "TYPE", "pubsub"])
        .output()
        .expect("redis-cli");
    assert!(kill.status.success());
    reader.wait_for(|c| c == &Change::FeedLost);
    // Whatever happens next, the cache does not answer until the feed is back, and
    // then it starts empty.
    writer
        .setattr(
            &Ctx::root(),
            ino,
            &SetAttr {
                mode: Some(0o600),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(r.get_attr(ino).unwrap().mode, 0o600);
    reader.wait_for(|c| c == &Change::FeedLive);
    assert!(r.feed_live());
    assert_eq!(r.get_attr(ino).unwrap().mode, 0o600);
    writer.kv().reset().unwrap();
}
