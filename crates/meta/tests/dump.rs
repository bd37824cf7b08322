//! Dump and load (JuiceFS's JSON format): a tree holding every kind of node is moved
//! through every engine in turn (memory, SQLite, then Redis, PostgreSQL, MySQL and etcd
//! when `NECTAR_TEST_META_URLS` names them), each load checked and dumped again, and
//! every dump must equal the first; malformed dumps are refused and leave the engine
//! empty.

mod common;
use common::{new_format, server_url};
use nectar_meta::*;
use std::sync::Arc;

fn root() -> Ctx {
    Ctx::root()
}

fn node(m: &Meta, parent: Ino, name: &[u8], typ: FileType, mode: u32, target: &[u8]) -> Ino {
    m.mknod(&root(), parent, name, typ, mode, 0, 0, target)
        .unwrap()
        .0
}

fn write(m: &Meta, ino: Ino, index: u32, pos: u32, id: u64, len: u32) {
    let s = Slice {
        pos,
        id,
        size: len,
        off: 0,
        len,
    };
    m.write_slice(ino, index, s, Time::now()).unwrap();
}

/// A fresh, empty engine at `url`.
fn empty(url: &str) -> Arc<Meta> {
    let m = Meta::connect(url).unwrap();
    m.kv().reset().unwrap();
    m
}

/// Builds a volume with directories, files with several chunks, a hole and an
/// overwrite, a slice two files share, hard links across directories, a symlink, a
/// fifo, a device, xattrs (one binary), access and default ACLs, and names that need
/// escaping.
fn build(m: &Meta) {
    let mut fmt = new_format("dumped");
    fmt.enable_acl = true;
    fmt.secret_key = Some("s3cr3t".into());
    fmt.other.insert("Shards".into(), serde_json::json!(0));
    m.format(fmt, false).unwrap();
    let d1 = node(m, ROOT_INODE, b"d1", FileType::Directory, 0o755, b"");
    let d2 = node(m, d1, b"d2", FileType::Directory, 0o700, b"");
    let big = node(m, ROOT_INODE, b"big", FileType::File, 0o644, b"");
    write(m, big, 0, 0, 11, 4 << 20);
    write(m, big, 0, 4096, 12, 100);
    write(m, big, 3, 1 << 20, 13, 5000);
    let copy = node(m, d2, b"copy", FileType::File, 0o600, b"");
    m.copy_file_range(&root(), big, 0, copy, 0, 8192).unwrap();
    let linked = node(m, d1, b"linked", FileType::File, 0o644, b"");
    write(m, linked, 0, 0, 14, 10);
    m.link(&root(), linked, d2, b"other name").unwrap();
    m.link(&root(), linked, ROOT_INODE, b"third").unwrap();
    node(m, d1, b"sym", FileType::Symlink, 0o777, b"../big\x01 %x");
    node(m, ROOT_INODE, b"fifo", FileType::Fifo, 0o644, b"");
    m.mknod(
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
    node(
        m,
        ROOT_INODE,
        b"we ird\"na%me\\\xff",
        FileType::File,
        0o644,
        b"",
    );
    m.setxattr(&root(), big, b"user.text", b"v a%l\"ue", 0)
        .unwrap();
    m.setxattr(&root(), big, b"user.bin", &[0, 1, 0xfe, 0xff], 0)
        .unwrap();
    let rule = Rule {
        owner: 6,
        group: 4,
        mask: 6,
        other: 4,
        named_users: vec![AclEntry { id: 1000, perm: 6 }],
        named_groups: vec![AclEntry { id: 50, perm: 4 }],
    };
    m.set_facl(&root(), linked, AclType::Access, Some(rule.clone()))
        .unwrap();
    m.set_facl(&root(), d2, AclType::Default, Some(rule))
        .unwrap();
    m.set_quota(d1, Some(1 << 30), Some(100), 2).unwrap();
    // More entries than one batch of the walk: on a server engine their nodes are read
    // by several threads and must still come out in name order.
    let many = node(m, ROOT_INODE, b"many", FileType::Directory, 0o755, b"");
    for i in 0..250 {
        node(
            m,
            many,
            format!("f{i:03}").as_bytes(),
            FileType::File,
            0o644,
            b"",
        );
    }
}

fn dump(m: &Meta) -> Vec<u8> {
    let mut out = Vec::new();
    m.dump(&mut out, &DumpOptions::default(), &|_| {}).unwrap();
    out
}

fn load(m: &Arc<Meta>, dump: &[u8]) -> Result<DumpSummary> {
    m.load_dump(&mut &dump[..], &LoadOptions { threads: 3 }, &|_| {})
}

/// A dump as a JSON value, without the counters that a load raises by one (next inode
/// and next slice id, so that no number of a deleted object is handed out again).
fn comparable(dump: &[u8]) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(dump).unwrap();
    let counters = v["Counters"].as_object_mut().unwrap();
    counters.remove("nextInodes");
    counters.remove("nextChunk");
    // Loaded without it, as the dump said: a mount then needs SECRET_KEY.
    v["Setting"].as_object_mut().unwrap().remove("SecretKey");
    v
}

/// What a loaded volume must hold besides what its dump shows.
fn check_loaded(m: &Meta, source: &Meta, url: &str) {
    m.load().unwrap();
    let (linked, attr) = m.lookup(&root(), ROOT_INODE, b"third").unwrap();
    assert_eq!(
        attr.nlink, 3,
        "{url}: link count of a file with three names"
    );
    assert_eq!(attr.parent, 0, "{url}: several parents");
    let d1 = m.lookup(&root(), ROOT_INODE, b"d1").unwrap().1;
    assert_eq!(d1.nlink, 3, "{url}: d1 holds one directory");
    let (big, _) = m.lookup(&root(), ROOT_INODE, b"big").unwrap();
    let refs = |m: &Meta| {
        m.kv()
            .read(|tx| Ok::<_, Error>(tx.get(&keys::slice_ref(11, 4 << 20))?))
            .unwrap()
            .map(|v| i64::from_le_bytes(v.try_into().unwrap()))
    };
    assert!(
        refs(source).is_some_and(|n| n > 0),
        "the copy shares slice 11"
    );
    assert_eq!(
        refs(m),
        refs(source),
        "{url}: the references to the slice two files share"
    );
    assert_eq!(
        m.kv()
            .read(|tx| Ok::<_, Error>(tx.get(&keys::slice_ref(13, 5000))?))
            .unwrap(),
        None,
        "{url}: a slice used once has no reference count"
    );
    assert_eq!(
        m.getxattr(big, b"user.bin").unwrap(),
        vec![0, 1, 0xfe, 0xff]
    );
    assert_eq!(
        m.get_facl(linked, AclType::Access).unwrap().named_users,
        vec![AclEntry { id: 1000, perm: 6 }]
    );
    let (d1, _) = m.lookup(&root(), ROOT_INODE, b"d1").unwrap();
    let quota = m.get_quota(d1).unwrap();
    assert!(quota.is_some_and(|q| q.max_inodes == 100 && q.used_inodes == 5));
    assert_eq!(
        quota,
        source.get_quota(d1).unwrap(),
        "{url}: the quota and its usage, counted again"
    );
    let fmt = m.get_format().unwrap();
    assert_eq!(fmt.secret_key, None, "{url}: the dump had no secret key");
    assert_eq!(fmt.other.get("Shards"), Some(&serde_json::json!(0)));
}

/// New inodes and slices of a loaded volume do not reuse numbers.
fn check_numbers_go_on(m: &Meta, url: &str) {
    let linked = m.lookup(&root(), ROOT_INODE, b"third").unwrap().0;
    let big = m.lookup(&root(), ROOT_INODE, b"big").unwrap().0;
    let (new, _) = m
        .mknod(
            &root(),
            ROOT_INODE,
            b"new",
            FileType::File,
            0o644,
            0,
            0,
            b"",
        )
        .unwrap();
    assert!(new > linked && new > big, "{url}: new inode {new}");
    assert!(m.new_slice().unwrap().id() > 14, "{url}: slice ids go on");
    m.unlink(&root(), ROOT_INODE, b"new").unwrap();
}

/// The engines a tree moves through: memory, SQLite, then the servers given.
fn engines(dir: &std::path::Path) -> Vec<String> {
    let mut urls = vec![
        "memory://dump-second".to_string(),
        format!("sqlite3://{}/meta.db", dir.display()),
    ];
    for engine in ["redis", "postgres", "mysql", "etcd"] {
        urls.extend(server_url(engine, "dump"));
    }
    urls
}

#[test]
fn a_tree_moves_through_every_engine_unchanged() {
    let source = empty("memory://dump-first");
    build(&source);
    let first = dump(&source);
    let text = String::from_utf8(first.clone()).unwrap();
    assert!(
        text.contains("\"SecretKey\":\"removed\""),
        "secrets stay out"
    );
    let mut kept = Vec::new();
    let opts = DumpOptions {
        keep_secret_key: true,
        ..DumpOptions::default()
    };
    source.dump(&mut kept, &opts, &|_| {}).unwrap();
    // Kept obfuscated, as JuiceFS keeps it (`KeyEncrypted`), and open once loaded.
    let kept_text = String::from_utf8(kept.clone()).unwrap();
    assert!(!kept_text.contains("s3cr3t") && kept_text.contains("\"KeyEncrypted\":true"));
    let with_key = empty(&format!(
        "sqlite3://{}/kept.db",
        tempfile::tempdir().unwrap().keep().display()
    ));
    load(&with_key, &kept).unwrap();
    assert_eq!(
        with_key.load().unwrap().secret_key.as_deref(),
        Some("s3cr3t")
    );
    assert!(text.contains("\"we%20ird%22na%25me%5C%FF\""), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let mut previous = first.clone();
    for url in engines(dir.path()) {
        eprintln!("loading into {url}");
        let m = empty(&url);
        let summary = load(&m, &previous).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(summary.entries, 263, "{url}: entries with the root");
        assert_eq!(
            summary.inodes, 261,
            "{url}: a file with three names is one inode"
        );
        check_loaded(&m, &source, &url);
        let again = dump(&m);
        assert_eq!(
            comparable(&again),
            comparable(&first),
            "{url}: the dump of the loaded volume differs"
        );
        assert_eq!(
            m.statfs().unwrap().used_inodes,
            source.statfs().unwrap().used_inodes,
            "{url}"
        );
        check_numbers_go_on(&m, &url);
        previous = again;
    }
}

#[test]
fn a_subdirectory_dumps_as_a_volume_of_its_own() {
    let source = empty("memory://dump-sub-first");
    build(&source);
    let (d1, _) = source.lookup(&root(), ROOT_INODE, b"d1").unwrap();
    let mut out = Vec::new();
    let opts = DumpOptions {
        root: d1,
        ..DumpOptions::default()
    };
    source.dump(&mut out, &opts, &|_| {}).unwrap();
    let m = empty("memory://dump-sub-second");
    load(&m, &out).unwrap();
    m.load().unwrap();
    let (_, attr) = m.lookup(&root(), ROOT_INODE, b"linked").unwrap();
    assert_eq!(attr.nlink, 2, "two of its three names are inside d1");
    assert!(m.lookup(&root(), ROOT_INODE, b"d2").is_ok());
    assert!(m.lookup(&root(), ROOT_INODE, b"big").is_err());
}

#[test]
fn malformed_dumps_are_refused_and_leave_the_engine_empty() {
    let source = empty("memory://dump-bad-source");
    build(&source);
    let good = String::from_utf8(dump(&source)).unwrap();
    let cases: Vec<(&str, String, &str)> =
        vec![
        ("truncated", good[..good.len() / 2].to_string(), "ends too soon"),
        ("not JSON", "hello".into(), "expected value at line 1 column 1"),
        (
            "unknown type",
            good.replacen("\"type\":\"fifo\"", "\"type\":\"pipe\"", 1),
            "unknown node type \"pipe\" (at /fifo)",
        ),
        (
            "no counters",
            good.replacen("\"Counters\"", "\"Kounters\"", 1),
            "no \"Counters\"",
        ),
        (
            "a name with a slash",
            good.replacen("\"fifo\":", "\"fi/fo\":", 1),
            "invalid name \"fi/fo\"",
        ),
        (
            "entries of a file",
            good.replacen(
                "\"type\":\"fifo\"",
                "\"type\":\"fifo\"},\"entries\":{\"x\":{\"attr\":{\"inode\":99,\"type\":\"fifo\"}",
                1,
            ),
            "not a directory",
        ),
        (
            "an unknown attribute field",
            good.replacen("\"nlink\"", "\"nlinks\"", 1),
            "unknown field `nlinks`",
        ),
    ];
    for (what, text, wanted) in cases {
        let m = empty("memory://dump-bad-target");
        let e = load(&m, text.as_bytes()).expect_err(what).to_string();
        assert!(e.contains(wanted), "{what}: {e}");
        assert!(e.starts_with("malformed dump"), "{what}: {e}");
        let left = m
            .kv()
            .read(|tx| Ok::<_, Error>(tx.scan(b"", b"\xff", 10)?))
            .unwrap();
        assert!(left.is_empty(), "{what}: the engine keeps {left:?}");
    }
    // A database that holds a volume is not loaded into.
    let e = load(&source, good.as_bytes()).unwrap_err().to_string();
    assert!(
        e.contains("is not empty: it holds volume \"dumped\""),
        "{e}"
    );
    assert!(source.lookup(&root(), ROOT_INODE, b"big").is_ok());
}
