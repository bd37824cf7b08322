//! File-system level tests and measurements on a Redis server (scripts/start-redis.sh;
//! `NECTAR_TEST_REDIS_URL`): what the engine's own tests in `nectar-kv` cannot see,
//! such as a failover under load and the memory a file costs.

mod common;
use common::new_format;
use nectar_meta::{Ctx, FileType, Format, Meta, ROOT_INODE};
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

/// The URL of a test server, or None to skip.
fn server() -> Option<String> {
    let url = std::env::var("NECTAR_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("skipped: NECTAR_TEST_REDIS_URL is not set");
    }
    url
}

/// The test server's URL with another database.
fn with_db(url: &str, db: &str) -> String {
    let base = url.split('?').next().unwrap_or(url);
    let host = base.rsplit_once('/').map_or(base, |(h, _)| h);
    format!("{host}/{db}")
}

/// The server's `used_memory`, asked over a plain connection (`redis://HOST:PORT/...`
/// without a password, as the test server runs).
fn used_memory(url: &str) -> u64 {
    let authority = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap();
    let mut conn = std::net::TcpStream::connect(authority).unwrap();
    conn.write_all(b"INFO memory\r\n").unwrap();
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "no used_memory in INFO"
        );
        if let Some(v) = line.strip_prefix("used_memory:") {
            return v.trim().parse().unwrap();
        }
    }
}

/// Prints what `Meta::connect` + `load` say for each URL in `NECTAR_REDIS_PROBE_URLS`
/// (space separated): for checking error messages by hand.
#[test]
fn probe_urls() {
    let Ok(urls) = std::env::var("NECTAR_REDIS_PROBE_URLS") else {
        return;
    };
    for url in urls.split_whitespace() {
        let r = Meta::connect(url).and_then(|m| m.load());
        match r {
            Ok(f) => eprintln!("{url}\n  -> volume {:?}", f.name),
            Err(e) => eprintln!("{url}\n  -> {e} (temporary: {})", e.is_temporary()),
        }
    }
}

/// Keeps creating and looking up files for `NECTAR_REDIS_TOPOLOGY_SECS` seconds on
/// `NECTAR_TEST_REDIS_TOPOLOGY_URL` (a Sentinel or Cluster URL) while someone fails the
/// master over or migrates the volume's slot by hand; every operation must succeed.
#[test]
fn survives_topology_changes() {
    let (Some(url), Some(secs)) = (
        std::env::var("NECTAR_TEST_REDIS_TOPOLOGY_URL").ok(),
        std::env::var("NECTAR_REDIS_TOPOLOGY_SECS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok()),
    ) else {
        eprintln!("skipped: NECTAR_TEST_REDIS_TOPOLOGY_URL / NECTAR_REDIS_TOPOLOGY_SECS not set");
        return;
    };
    let m = Meta::connect(&url).unwrap();
    m.kv().reset().unwrap();
    let mut f = Format {
        uuid: "00000000-0000-0000-0000-000000000003".into(),
        ..new_format("topo")
    };
    f = m.format(f, false).unwrap();
    assert_eq!(f.name, "topo");
    let ctx = Ctx::root();
    let start = std::time::Instant::now();
    let mut i = 0u64;
    let mut slow = 0;
    while start.elapsed().as_secs() < secs {
        let t = std::time::Instant::now();
        let name = format!("f{i}");
        let ino = m
            .mknod(
                &ctx,
                ROOT_INODE,
                name.as_bytes(),
                FileType::File,
                0o644,
                0,
                0,
                b"",
            )
            .unwrap()
            .0;
        assert_eq!(m.lookup(&ctx, ROOT_INODE, name.as_bytes()).unwrap().0, ino);
        if t.elapsed() > Duration::from_millis(500) {
            slow += 1;
            eprintln!("file {i} took {:?}", t.elapsed());
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let n = m
        .readdir(&ctx, ROOT_INODE, None, 1_000_000, false)
        .unwrap()
        .len() as u64;
    eprintln!("{i} files created, {n} listed, {slow} slow operations");
    assert_eq!(n, i);
    m.kv().reset().unwrap();
}

/// Memory per file: `NECTAR_REDIS_MEMORY_FILES=100000 cargo test -p nectar-meta --test redis
/// memory_per_file -- --nocapture` (uses database 13 of the test
/// server).
#[test]
fn memory_per_file() {
    let Some(url) = server() else { return };
    let Some(n) = std::env::var("NECTAR_REDIS_MEMORY_FILES")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
    else {
        eprintln!("skipped: NECTAR_REDIS_MEMORY_FILES is not set");
        return;
    };
    let url = with_db(&url, "13");
    let m = Meta::connect(&url).unwrap();
    m.kv().reset().unwrap();
    let mut f = Format {
        uuid: "00000000-0000-0000-0000-000000000002".into(),
        ..new_format("mem")
    };
    f = m.format(f, false).unwrap();
    assert_eq!(f.name, "mem");
    let used = || used_memory(&url);
    let dir = m
        .mknod(
            &Ctx::root(),
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
    let before = used();
    let start = std::time::Instant::now();
    for i in 0..n {
        m.mknod(
            &Ctx::root(),
            dir,
            format!("file-{i:08}").as_bytes(),
            FileType::File,
            0o644,
            0o022,
            0,
            b"",
        )
        .unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let after = used();
    let listed = m
        .readdir(&Ctx::root(), dir, None, 100, false)
        .unwrap()
        .len();
    assert_eq!(listed, 100);
    eprintln!(
        "redis memory: {n} files, used_memory {before} -> {after}: {} bytes per file; {:.0} creates/s",
        (after - before) / n,
        n as f64 / secs
    );
    m.kv().reset().unwrap();
}
