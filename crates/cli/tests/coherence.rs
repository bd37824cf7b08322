//! Two mounts of one volume with long kernel timeouts (`--attr-cache 60` and the
//! entry caches): on every engine (Redis, etcd, PostgreSQL, MySQL; servers from
//! NECTAR_TEST_META_URLS; and SQLite, two processes on one database file), one
//! mount's change of a file's attributes, data, name or a directory's entries shows on
//! the other within [`BOUND`], not after 60 s; with the feed cut, within the 1 s
//! fallback. Each test prints the time each change took to show.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest time a change may take to show on the other mount with the feed live.
const BOUND: Duration = Duration::from_secs(2);
/// ... and with the feed cut (the 1 s fallback timeout, plus margin for a loaded CI).
const FALLBACK_BOUND: Duration = Duration::from_secs(4);

const LONG: &[&str] = &[
    "--attr-cache",
    "60",
    "--entry-cache",
    "60",
    "--dir-entry-cache",
    "60",
];

/// Waits until `seen` holds on the other mount; returns how long that took.
fn shows_within(what: &str, bound: Duration, seen: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !seen() {
        assert!(
            start.elapsed() < bound,
            "{what}: not visible on the other mount after {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = start.elapsed();
    eprintln!("{what}: visible on the other mount after {took:?}");
    took
}

/// The names in directory `p`, sorted.
fn names(p: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn mode(p: &Path) -> Option<u32> {
    std::fs::metadata(p)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

fn len(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.len())
}

fn server(engine: &str, tag: &str) -> Option<String> {
    let urls = server_meta_urls()
        .map_err(|e| eprintln!("skipped: {e}"))
        .ok()?;
    let url = urls.iter().find(|u| u.starts_with(&format!("{engine}://")));
    if url.is_none() {
        eprintln!("skipped: no {engine} server in NECTAR_TEST_META_URLS");
    }
    isolated_url(url?, tag)
}

/// Every kind of change, one mount to the other.
fn changes_show_on_the_other_mount(url: &str) {
    changes_show_between_mounts_of(&Volume::on(url, &[]));
}

fn changes_show_between_mounts_of(vol: &Volume) {
    let a = vol.mount("a", LONG);
    let b = vol.mount("b", LONG);
    // The follower says so once it is connected, which may be just after the mount.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.log_text().contains("following other clients' changes") {
        assert!(Instant::now() < deadline, "no feed: {}", b.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::create_dir(a.path("d")).unwrap();
    std::fs::write(a.path("d/f"), b"one").unwrap();
    // The other mount looks everything up once: its kernel now keeps it for 60 s.
    assert_eq!(std::fs::read(b.path("d/f")).unwrap(), b"one");
    assert_eq!(mode(&b.path("d/f")), Some(0o644));

    std::fs::set_permissions(a.path("d/f"), std::fs::Permissions::from_mode(0o600)).unwrap();
    shows_within("chmod", BOUND, || mode(&b.path("d/f")) == Some(0o600));

    std::fs::write(a.path("d/f"), b"two, longer").unwrap();
    shows_within("a new length", BOUND, || len(&b.path("d/f")) == Some(11));
    assert_eq!(std::fs::read(b.path("d/f")).unwrap(), b"two, longer");

    std::fs::rename(a.path("d/f"), a.path("d/g")).unwrap();
    shows_within("a rename (old name gone)", BOUND, || {
        !b.path("d/f").exists()
    });
    assert_eq!(std::fs::read(b.path("d/g")).unwrap(), b"two, longer");

    std::fs::write(a.path("d/f"), b"three").unwrap();
    shows_within("a new file under the old name", BOUND, || {
        std::fs::read(b.path("d/f")).is_ok_and(|d| d == b"three")
    });
    assert_eq!(names(&b.path("d")), ["f", "g"]);
    // Listed once more, the kernel keeps the listing; another client's create and
    // unlink in the directory show in it.
    assert_eq!(names(&b.path("d")), ["f", "g"]);
    std::fs::write(a.path("d/h"), b"four").unwrap();
    shows_within("a create in a listing", BOUND, || {
        names(&b.path("d")) == ["f", "g", "h"]
    });
    std::fs::remove_file(a.path("d/h")).unwrap();
    shows_within("an unlink in a listing", BOUND, || {
        names(&b.path("d")) == ["f", "g"]
    });

    std::fs::remove_file(a.path("d/g")).unwrap();
    shows_within("an unlink", BOUND, || !b.path("d/g").exists());
    shows_within("an unlink in a listing", BOUND, || {
        names(&b.path("d")) == ["f"]
    });
    std::fs::remove_file(a.path("d/f")).unwrap();
    std::fs::remove_dir(a.path("d")).unwrap();
    shows_within("an rmdir", BOUND, || !b.path("d").exists());
    a.unmount();
    b.unmount();
}

#[test]
fn redis_changes_show_on_the_other_mount_and_a_cut_feed_falls_back() {
    require_fuse!();
    let Some(url) = server("redis", "coherence") else {
        return;
    };
    changes_show_on_the_other_mount(&url);

    // Cut the feed of both mounts: the kernel's long-kept answers are dropped and new
    // ones get the 1 s fallback, so a change shows within it; then the feed comes back.
    let vol = Volume::on(&url, &[]);
    let a = vol.mount("a", LONG);
    let b = vol.mount("b", LONG);
    std::fs::write(a.path("f"), b"x").unwrap();
    assert_eq!(mode(&b.path("f")), Some(0o644));
    std::fs::create_dir(a.path("d")).unwrap();
    std::fs::write(a.path("d/f"), b"x").unwrap();
    shows_within("a create", BOUND, || b.path("d/f").exists());
    assert_eq!(names(&b.path("d")), ["f"]);
    assert_eq!(names(&b.path("d")), ["f"]);
    let authority = url
        .trim_start_matches("redis://")
        .split(['/', '?'])
        .next()
        .unwrap();
    let (host, port) = authority.split_once(':').unwrap_or((authority, "6379"));
    let kill = std::process::Command::new("redis-cli")
        .args(["-h", host, "-p", port, "CLIENT", "KILL", "TYPE", "pubsub"])
        .output()
        .expect("redis-cli");
    assert!(kill.status.success());
    std::fs::set_permissions(a.path("f"), std::fs::Permissions::from_mode(0o600)).unwrap();
    shows_within("chmod with the feed cut", FALLBACK_BOUND, || {
        mode(&b.path("f")) == Some(0o600)
    });
    std::fs::write(a.path("d/cut"), b"y").unwrap();
    shows_within(
        "a create in a listing with the feed cut",
        FALLBACK_BOUND,
        || names(&b.path("d")) == ["cut", "f"],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.log_text().contains("feed is back") {
        assert!(Instant::now() < deadline, "feed not back: {}", b.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(mode(&b.path("f")), Some(0o600));
    std::fs::set_permissions(a.path("f"), std::fs::Permissions::from_mode(0o640)).unwrap();
    shows_within("chmod after the feed is back", BOUND, || {
        mode(&b.path("f")) == Some(0o640)
    });
    let log = b.log_text();
    assert_eq!(log.matches("change feed lost").count(), 1, "{log}");
    a.unmount();
    b.unmount();
}

#[test]
fn etcd_changes_show_on_the_other_mount() {
    require_fuse!();
    let Some(url) = server("etcd", "coherence") else {
        return;
    };
    changes_show_on_the_other_mount(&url);
}

#[test]
fn postgres_changes_show_on_the_other_mount() {
    require_fuse!();
    let Some(url) = server("postgres", "coherence") else {
        return;
    };
    changes_show_on_the_other_mount(&url);
}

#[test]
fn mysql_changes_show_on_the_other_mount() {
    require_fuse!();
    let Some(url) = server("mysql", "coherence") else {
        return;
    };
    changes_show_on_the_other_mount(&url);
}

/// Two mounts of the default volume are two processes on one SQLite file.
#[test]
fn sqlite_changes_show_on_the_other_mount() {
    require_fuse!();
    changes_show_between_mounts_of(&Volume::new(&[]));
}

/// With the default (short) timeouts, the kernel serves a listing it filled less than
/// half a timeout ago (no request at all), then asks again; `ls -l` of a served
/// listing still costs no lookup, and another mount's create shows in it.
#[test]
fn short_timeouts_reuse_a_fresh_kernel_listing() {
    require_fuse!();
    let vol = Volume::new(&[]);
    let a = vol.mount("a", &[]);
    let b = vol.mount("b", &["--metrics", "127.0.0.1:0"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.log_text().contains("following other clients' changes") {
        assert!(Instant::now() < deadline, "no feed: {}", b.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::create_dir(a.path("d")).unwrap();
    for i in 0..50 {
        std::fs::write(a.path(&format!("d/f{i:02}")), b"x").unwrap();
    }
    let ops = |name: &str| {
        metric(
            &scrape(&b),
            "nectar_fuse_op_duration_seconds_count",
            &format!("op=\"{name}\""),
        ) as u64
    };
    let listings = || ops("readdirplus") + ops("readdir");
    let dir = b.path("d");
    // Filled by the first listing, served by the kernel right after.
    let mut served = false;
    for _ in 0..5 {
        assert_eq!(names(&dir).len(), 50);
        let (before, lookups) = (listings(), ops("lookup"));
        let out = std::process::Command::new("ls")
            .arg("-l")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 51);
        // A loaded machine may take longer than half a timeout between the two.
        if listings() == before {
            assert_eq!(ops("lookup"), lookups, "ls -l of a served listing");
            served = true;
            break;
        }
    }
    assert!(served, "the kernel never served a fresh listing");
    // Another mount's create shows in the listing.
    std::fs::write(a.path("d/new"), b"y").unwrap();
    shows_within("a create in a served listing", BOUND, || {
        names(&dir).len() == 51
    });
    // Past half a timeout the kernel asks again.
    std::thread::sleep(Duration::from_millis(600));
    let before = listings();
    assert_eq!(names(&dir).len(), 51);
    assert!(listings() > before, "a stale listing was served");
    a.unmount();
    b.unmount();
}
