//! Round trips per file-system operation, held to a budget: a change that adds one fails
//! here. The engine beneath is wrapped to count its calls (`nectar_kv::counting`); the
//! calls are the same on every engine, and each read call or commit is one round trip
//! to a server engine (see that module). The client has a session, as a mount does, so
//! usage counters are deferred.
//!
//! The budgets are today's counts; beside each, what JuiceFS 1.4 makes on its
//! transactional-KV engines (pkg/meta/tkv.go and base.go: its reads, plus one commit for
//! a read-write transaction; on TiKV a commit is two round trips, prewrite and commit).
//! Nectar reads a directory, its entry and any other key it already knows in one batch
//! (`gets`), and releases a small file's data in the unlink itself (JuiceFS queues it
//! for a later transaction), which costs the unlink its chunk read.

mod common;
use common::new_format;
use nectar_kv::counting::{Counting, Counts, Tally};
use nectar_meta::kv::open_engine;
use nectar_meta::meta::MetaConfig;
use nectar_meta::*;
use std::sync::Arc;

fn ctx() -> Ctx {
    Ctx {
        uid: 0,
        gid: 0,
        gids: vec![],
        pid: 1,
        check_permission: true,
    }
}

/// A formatted volume on the memory engine, with a session, and its call counts.
fn counted_volume(name: &str) -> (Arc<Meta>, Arc<Counts>) {
    let url = format!("memory://round-trips-{name}");
    let engine = Counting::new(open_engine(&url, &keys::LAYOUT).unwrap());
    let counts = engine.counts();
    let m = Meta::with_engine(Box::new(engine), &url, MetaConfig::default());
    m.format(new_format(name), false).unwrap();
    m.load().unwrap();
    m.new_session(&SessionInfo::default()).unwrap();
    counts.take();
    (m, counts)
}

/// Runs `op` and returns what it cost.
fn cost<T>(counts: &Counts, op: impl FnOnce() -> T) -> (T, Tally) {
    counts.take();
    let out = op();
    (out, counts.take())
}

fn mknod(m: &Meta, parent: Ino, name: &str, typ: FileType) -> Ino {
    m.mknod(&ctx(), parent, name.as_bytes(), typ, 0o755, 0o022, 0, b"")
        .unwrap()
        .0
}

/// Asserts that an operation stayed within `budget` round trips; `juicefs` is what
/// JuiceFS 1.4 makes for it, for the report.
fn check(report: &mut Vec<String>, what: &str, tally: Tally, budget: u64, juicefs: &str) {
    report.push(format!(
        "{what}: {} round trips (JuiceFS {juicefs}); {tally:?}",
        tally.round_trips()
    ));
    assert!(
        tally.attempts <= 1,
        "{what} ran more than one attempt: {tally:?}"
    );
    assert!(
        tally.round_trips() <= budget,
        "{what} costs {} round trips, its budget is {budget}: {tally:?}",
        tally.round_trips()
    );
}

#[test]
fn every_operation_within_its_round_trip_budget() {
    let (m, counts) = counted_volume("ops");
    let dir = mknod(&m, ROOT_INODE, "d", FileType::Directory);
    for i in 0..20 {
        mknod(&m, dir, &format!("f{i}"), FileType::File);
    }
    let f0 = m.lookup(&ctx(), dir, b"f0").unwrap().0;
    let (c, r) = (&counts, &mut Vec::new());

    // One on Redis: the entry is followed to its inode in the same script, as JuiceFS's
    // Lua lookup does; two reads (counted here) on the other engines.
    let t = cost(c, || m.lookup(&ctx(), dir, b"f1").unwrap()).1;
    check(r, "lookup", t, 2, "2");
    let t = cost(c, || m.lookup(&ctx(), dir, b"none").unwrap_err()).1;
    check(r, "lookup of a missing name", t, 1, "1");
    let t = cost(c, || m.get_attr(f0).unwrap()).1;
    check(r, "getattr", t, 1, "1");
    let t = cost(c, || mknod(&m, dir, "new", FileType::File)).1;
    check(r, "create", t, 2, "2");
    let t = cost(c, || mknod(&m, dir, "sub", FileType::Directory)).1;
    check(r, "mkdir", t, 2, "2");
    let chmod = SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    let t = cost(c, || m.setattr(&ctx(), f0, &chmod).unwrap()).1;
    check(r, "chmod", t, 2, "2");
    let t = cost(c, || m.open(&ctx(), f0, libc::O_RDWR).unwrap()).1;
    check(r, "open", t, 1, "1");
    let ticket = m.new_slice().unwrap();
    let slice = Slice {
        pos: 0,
        id: ticket.id(),
        size: 100,
        off: 0,
        len: 100,
    };
    let t = cost(c, || m.write_slice(f0, 0, slice, Time::now()).unwrap()).1;
    check(r, "write (commit a slice)", t, 2, "2");
    let t = cost(c, || m.read_chunk(f0, 0).unwrap()).1;
    check(r, "read a chunk", t, 1, "1");
    // Only this client sustains what it has open: it knows f0 was not unlinked.
    let t = cost(c, || m.close(f0).unwrap()).1;
    check(r, "close", t, 0, "0");
    let t = cost(c, || m.truncate(&ctx(), f0, 10).unwrap()).1;
    check(r, "truncate", t, 3, "3");
    let t = cost(c, || m.setxattr(&ctx(), f0, b"user.a", b"1", 0).unwrap()).1;
    check(r, "setxattr", t, 2, "2, without updating ctime");
    let t = cost(c, || m.getxattr(f0, b"user.a").unwrap()).1;
    check(r, "getxattr", t, 1, "1");
    // The directory's attributes (permission), the entries, their attributes.
    let (page, t) = cost(c, || m.readdir(&ctx(), dir, None, 100, true).unwrap());
    assert_eq!(page.len(), 22);
    check(r, "readdir with attributes, one page", t, 3, "3");
    let t = cost(c, || m.rename(&ctx(), dir, b"f1", dir, b"g1", 0).unwrap()).1;
    check(r, "rename", t, 3, "3");
    // The replaced file goes as in unlink.
    let t = cost(c, || m.rename(&ctx(), dir, b"f2", dir, b"g1", 0).unwrap()).1;
    check(r, "rename over a file", t, 5, "5");
    // Directory and entry, the inode, its xattrs (deleted with it), its data.
    let t = cost(c, || m.unlink(&ctx(), dir, b"f3").unwrap()).1;
    check(r, "unlink", t, 5, "4-5");
    let t = cost(c, || m.rmdir(&ctx(), dir, b"sub").unwrap()).1;
    check(r, "rmdir", t, 5, "4-5");
    // A file getting its second name also gets one parent counter per directory.
    let t = cost(c, || m.link(&ctx(), f0, dir, b"hard").unwrap()).1;
    check(r, "link", t, 4, "2-4");
    let t = cost(c, || m.statfs().unwrap()).1;
    check(r, "statfs", t, 1, "2, one per counter");
    eprintln!("{}", r.join("\n"));
}
