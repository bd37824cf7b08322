//! The local disk cache on real mounts: a second read is served from the cache (proven
//! by making object storage return wrong bytes, so only the cache can give the right
//! ones), a damaged cached block is dropped and fetched again, cache files are private
//! and laid out at their object keys under the volume's UUID, bad cache settings
//! are refused with the reason, and `nectar warmup` fills, measures and empties the
//! cache of the mount, and the mount's metrics show where each read came from.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Block files of the volume in cache directory `cache` (temporary files left out).
fn cached_blocks(cache: &Path) -> Vec<PathBuf> {
    files_under(cache)
        .into_iter()
        .filter(|p| {
            p.to_string_lossy().contains("/raw/chunks/") && !p.to_string_lossy().contains(".tmp.")
        })
        .collect()
}

/// Waits until the cache holds `n` blocks (they are written in the background).
fn wait_cached(cache: &Path, n: usize) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let blocks = cached_blocks(cache);
        if blocks.len() >= n {
            return blocks;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} blocks cached: {blocks:?}",
            blocks.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A volume with 64 KiB blocks holding three files (12 full blocks and one partial in
/// all), and the bytes of each.
fn volume_with_files() -> (Volume, Vec<(String, Vec<u8>)>) {
    let vol = Volume::new(&["--block-size", "64", "--trash-days", "0"]);
    let files: Vec<(String, Vec<u8>)> = [(1u64, 4 << 16), (2, 8 << 16), (3, 1000)]
        .iter()
        .map(|&(seed, len)| {
            let mut data = vec![0u8; len];
            Pattern::new(seed).fill(&mut data);
            (format!("f{seed}"), data)
        })
        .collect();
    let m = vol.mount("w", &["--cache-size", "0"]);
    for (name, data) in &files {
        fs::write(m.path(name), data).unwrap();
    }
    m.unmount();
    (vol, files)
}

/// Reads every file through a new mount with the disk cache in `<volume>/cache` and
/// no memory cache, waits until all 13 blocks are cached, and unmounts; returns the
/// cache directory and the cached block files.
fn fill_cache(vol: &Volume, files: &[(String, Vec<u8>)]) -> (PathBuf, Vec<PathBuf>) {
    let cache = vol.path("cache");
    let m = vol.mount(
        "fill",
        &[
            "--cache-dir",
            cache.to_str().unwrap(),
            "--mem-cache-size",
            "0",
        ],
    );
    for (name, data) in files {
        assert_eq!(&fs::read(m.path(name)).unwrap(), data);
    }
    let blocks = wait_cached(&cache, 13);
    m.unmount();
    assert_eq!(blocks.len(), 13);
    (cache, blocks)
}

/// Overwrites every object in the bucket with zeros of the same length: a read that
/// reaches object storage from now on gets wrong bytes, not an error.
fn spoil_bucket(bucket: &Path) -> usize {
    let objects: Vec<PathBuf> = files_under(bucket)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/chunks/"))
        .collect();
    for o in &objects {
        let len = fs::metadata(o).unwrap().len() as usize;
        fs::write(o, vec![0u8; len]).unwrap();
    }
    objects.len()
}

#[test]
fn a_second_read_is_served_from_the_disk_cache() {
    require_fuse!();
    let (vol, files) = volume_with_files();
    // First read: from object storage, into the disk cache (no memory cache, so every
    // later read must come from disk).
    let (cache, blocks) = fill_cache(&vol, &files);
    let c = cache.to_str().unwrap();
    let uuid_dir = blocks[0]
        .ancestors()
        .find(|p| p.ends_with("raw"))
        .unwrap()
        .parent()
        .unwrap();
    assert_eq!(
        uuid_dir.parent().unwrap(),
        cache,
        "blocks live under <cache-dir>/<UUID>/raw"
    );
    for b in &blocks {
        let meta = fs::metadata(b).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600, "{}", b.display());
    }
    assert!(spoil_bucket(&vol.path("data")) >= 13);
    // Second read, by a new mount (no page cache, no memory cache): right bytes, so
    // from the disk cache.
    let m = vol.mount("r2", &["--cache-dir", c, "--mem-cache-size", "0"]);
    for (name, data) in &files {
        assert_eq!(
            &fs::read(m.path(name)).unwrap(),
            data,
            "{name} not served from the disk cache"
        );
    }
    // A mount without the disk cache reads the spoiled bucket: the test can fail.
    let n = vol.mount("r3", &["--cache-size", "0", "--mem-cache-size", "0"]);
    assert_ne!(&fs::read(n.path("f1")).unwrap(), &files[0].1);
    n.unmount();
    m.unmount();
}

/// Drops the page cache of `path`, so the next read reaches the mount.
fn drop_page_cache(path: &Path) {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path).unwrap();
    // SAFETY: a valid descriptor; DONTNEED only drops clean cached pages.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
}

#[test]
fn the_second_read_of_a_dataset_costs_no_get_as_the_metrics_show() {
    require_fuse!();
    let (vol, files) = volume_with_files();
    let cache = vol.path("cache");
    let m = vol.mount(
        "r",
        &[
            "--cache-dir",
            cache.to_str().unwrap(),
            "--mem-cache-size",
            "0",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let gets = |text: &str| {
        metric(
            text,
            "nectar_object_request_duration_seconds_count",
            "method=\"GET\"",
        )
    };
    let total: usize = files.iter().map(|(_, d)| d.len()).sum();
    for (name, data) in &files {
        assert_eq!(&fs::read(m.path(name)).unwrap(), data);
    }
    wait_cached(&cache, 13);
    let first = scrape(&m);
    // At least one GET per block (a small first read of a block is a ranged GET, and
    // the whole block follows in the background).
    assert!(gets(&first) >= 13.0, "{} GETs", gets(&first));
    let missed = metric(&first, "nectar_blockcache_miss_bytes_total", "");
    assert!(
        missed >= total as f64,
        "{missed} of {total} bytes counted as misses"
    );
    // The second epoch, after dropping the page cache: every byte from the disk cache.
    for (name, data) in &files {
        drop_page_cache(&m.path(name));
        assert_eq!(&fs::read(m.path(name)).unwrap(), data);
    }
    let second = scrape(&m);
    assert_eq!(
        gets(&second),
        gets(&first),
        "the second read fetched from object storage"
    );
    let hits = metric(
        &second,
        "nectar_blockcache_hit_bytes_total",
        "level=\"disk\"",
    );
    assert!(
        hits >= total as f64,
        "{hits} of {total} bytes from the disk cache"
    );
    assert!(
        metric(
            &second,
            "nectar_fuse_op_duration_seconds_count",
            "op=\"read\""
        ) > 0.0
    );
    assert!(
        metric(
            &second,
            "nectar_meta_txn_duration_seconds_count",
            "kind=\"read\""
        ) > 0.0
    );
    assert!(
        second.contains("vol_name=\""),
        "series carry the volume's name"
    );
    // `nectar stats` reads the same numbers through the mount, with no address.
    let out = nectar_ok(&[
        "stats",
        "--count",
        "1",
        "--interval",
        "0.2",
        m.path("").to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains("blockcache"), "{text}");
    let out = nectar(&["stats", "--count", "1", vol.path("").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not inside a mounted Nectar volume"));
    m.unmount();
}

#[test]
fn a_damaged_cached_block_is_dropped_and_read_again() {
    require_fuse!();
    let (vol, files) = volume_with_files();
    let (cache, blocks) = fill_cache(&vol, &files);
    let c = cache.to_str().unwrap();
    // One flipped byte in one block, and another block cut short.
    let flipped = &blocks[0];
    let mut bytes = fs::read(flipped).unwrap();
    bytes[1000] ^= 0x40;
    fs::write(flipped, &bytes).unwrap();
    let torn = &blocks[1];
    fs::OpenOptions::new()
        .write(true)
        .open(torn)
        .unwrap()
        .set_len(10)
        .unwrap();
    let m = vol.mount("r2", &["--cache-dir", c, "--mem-cache-size", "0"]);
    for (name, data) in &files {
        assert_eq!(
            &fs::read(m.path(name)).unwrap(),
            data,
            "{name}: a damaged cached block was returned"
        );
    }
    // Both were fetched again and cached anew, whole.
    let deadline = Instant::now() + Duration::from_secs(30);
    while fs::metadata(torn).map(|m| m.len()).unwrap_or(0) <= 10
        || fs::read(flipped).ok().as_ref() == Some(&bytes)
    {
        assert!(
            Instant::now() < deadline,
            "damaged blocks were not cached again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = m.unmount();
    assert!(log.contains("damaged"), "{log}");
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn warmup_fills_checks_and_empties_the_cache_of_the_mount() {
    require_fuse!();
    let (vol, files) = volume_with_files();
    let cache = vol.path("cache");
    let m = vol.mount(
        "w2",
        &[
            "--cache-dir",
            cache.to_str().unwrap(),
            "--mem-cache-size",
            "0",
        ],
    );
    let root = m.path("");
    let root = root.to_str().unwrap();
    let check = stdout(&nectar_ok(&["warmup", "--check", root]));
    assert!(
        check.contains("3 files") && check.contains("(0.0%)"),
        "{check}"
    );
    let warm = stdout(&nectar_ok(&["warmup", "--threads", "2", root]));
    assert!(
        warm.contains("3 files") && warm.contains("0.0 MiB already cached"),
        "{warm}"
    );
    // On disk when the command returns, not some time later.
    assert_eq!(cached_blocks(&cache).len(), 13, "{warm}");
    let check = stdout(&nectar_ok(&["warmup", "--check", root]));
    assert!(check.contains("(100.0%)"), "{check}");
    // Every read is now served from the cache: object storage gives wrong bytes.
    assert!(spoil_bucket(&vol.path("data")) >= 13);
    for (name, data) in &files {
        assert_eq!(&fs::read(m.path(name)).unwrap(), data, "{name}");
    }
    // Evict one file (4 blocks), named in a list.
    let list = vol.path("list");
    fs::write(&list, format!("{}\n", m.path("f1").display())).unwrap();
    let evict = stdout(&nectar_ok(&[
        "warmup",
        "--evict",
        "--file",
        list.to_str().unwrap(),
    ]));
    assert!(evict.contains("1 files: 0.2 MiB dropped"), "{evict}");
    assert_eq!(cached_blocks(&cache).len(), 9);
    let f1 = m.path("f1");
    let check = stdout(&nectar_ok(&["warmup", "--check", f1.to_str().unwrap()]));
    assert!(
        check.contains("1 files") && check.contains("(0.0%)"),
        "{check}"
    );
    // In the background: the command returns at once and the blocks come.
    let bg = stdout(&nectar_ok(&[
        "warmup",
        "--background",
        f1.to_str().unwrap(),
    ]));
    assert!(bg.contains("background"), "{bg}");
    wait_cached(&cache, 13);
    // Paths outside a volume, or missing, are refused before anything runs.
    let out = nectar(&["warmup", vol.path("").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not inside a mounted Nectar volume"),
        "{err}"
    );
    let out = nectar(&["warmup", m.path("nothing").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("No such file"),
        "{err}"
    );
    m.unmount();
}

#[test]
fn bad_cache_settings_are_refused_with_the_reason() {
    let (vol, files) = if skip_reason().is_none() {
        volume_with_files()
    } else {
        eprintln!("skipped: {}", skip_reason().unwrap_or_default());
        return;
    };
    let mp = vol.path("mnt");
    fs::create_dir(&mp).unwrap();
    let mp = mp.to_str().unwrap();
    let fail = |extra: &[&str]| {
        let mut args = vec!["mount", &vol.meta_url, mp];
        args.extend_from_slice(extra);
        let out = nectar(&args);
        assert!(!out.status.success(), "mount {extra:?} should have failed");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // A cache directory that cannot be made: a path below a regular file.
    let file = vol.path("plain-file");
    fs::write(&file, b"").unwrap();
    let below_file = format!("{}/cache", file.display());
    let e = fail(&["--cache-dir", &below_file]);
    assert!(
        e.contains("not usable") && e.contains("--cache-size 0"),
        "{e}"
    );
    let e = fail(&["--cache-eviction", "fifo"]);
    assert!(e.contains("2-random, lru or none"), "{e}");
    let e = fail(&["--verify-cache-checksum", "crc"]);
    assert!(e.contains("none, full, shrink or extend"), "{e}");
    let e = fail(&["--cache-expire", "soon"]);
    assert!(e.contains("90m"), "{e}");
    let e = fail(&["--free-space-ratio", "2"]);
    assert!(e.contains("free-space-ratio"), "{e}");
    let e = fail(&["--open-cache", "a while"]);
    assert!(e.contains("90m"), "{e}");
    let e = fail(&["--metrics", "localhost"]);
    assert!(e.contains("127.0.0.1:9567"), "{e}");
    // A missing directory is created.
    let fresh = vol.path("new/cache/dir");
    let m = vol.mount(
        "ok",
        &["--cache-dir", fresh.to_str().unwrap(), "--open-cache", "1m"],
    );
    assert!(fresh.is_dir());
    for _ in 0..2 {
        assert_eq!(fs::read(m.path("f3")).unwrap(), files[2].1);
    }
    m.unmount();
}

/// Blocks staged by a writeback client are the only copy until uploaded: a client
/// killed with SIGKILL after close() loses none of them, and the next mount with the
/// same cache directory uploads them, after which a client with no cache at all reads
/// every file back intact.
#[test]
fn writeback_survives_kill_9_and_uploads_at_the_next_mount() {
    require_fuse!();
    let vol = Volume::new(&["--block-size", "64", "--trash-days", "0"]);
    let cache = vol.path("cache");
    let c = cache.to_str().unwrap();
    let mut a = vol.mount(
        "a",
        &["--cache-dir", c, "--writeback", "--upload-delay", "1h"],
    );
    let mut files = Vec::new();
    for i in 0..20u64 {
        let mut data = vec![0u8; if i == 0 { 300_000 } else { 100 + i as usize }];
        Pattern::new(100 + i).fill(&mut data);
        fs::write(a.path(&format!("f{i}")), &data).unwrap();
        files.push((format!("f{i}"), data));
    }
    for (name, data) in &files {
        assert_eq!(&fs::read(a.path(name)).unwrap(), data);
    }
    let in_bucket = || {
        files_under(&vol.path("data"))
            .iter()
            .filter(|p| p.to_string_lossy().contains("/chunks/"))
            .count()
    };
    assert_eq!(
        in_bucket(),
        0,
        "blocks were uploaded although the upload is delayed"
    );
    let staging = cache
        .join(
            fs::read_dir(&cache)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .file_name(),
        )
        .join("rawstaging");
    assert_eq!(
        files_under(&staging).len(),
        24,
        "20 small files and one of 5 blocks staged"
    );
    let info = nectar_ok(&["info", a.mp.to_str().unwrap()]).stdout;
    let info = String::from_utf8_lossy(&info);
    assert!(info.contains("staged: 24 blocks"), "{info}");
    a.child.as_mut().unwrap().kill().unwrap();
    a.child.as_mut().unwrap().wait().unwrap();
    nectar_ok(&["umount", "--force", a.mp.to_str().unwrap()]);
    drop(a);
    // With no client left, `status` finds what the killed one staged on this node.
    let staged_by_status = || {
        let out = nectar_ok(&["status", &vol.meta_url, "--cache-dir", c]).stdout;
        let status: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let dirs = status["Staging"].as_array().unwrap().clone();
        assert_eq!(dirs.len(), 1, "{status}");
        (
            dirs[0]["Blocks"].as_u64().unwrap(),
            dirs[0]["Bytes"].as_u64().unwrap(),
        )
    };
    let total: usize = files.iter().map(|(_, d)| d.len()).sum();
    assert_eq!(staged_by_status(), (24, total as u64));
    let b = vol.mount("b", &["--cache-dir", c, "--writeback"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !files_under(&staging).is_empty() {
        assert!(
            Instant::now() < deadline,
            "staged blocks were not uploaded: {}",
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    b.unmount();
    assert_eq!(in_bucket(), 24);
    assert_eq!(staged_by_status(), (0, 0));
    let other = vol.path("other-cache");
    let r = vol.mount(
        "r",
        &[
            "--cache-dir",
            other.to_str().unwrap(),
            "--mem-cache-size",
            "0",
        ],
    );
    for (name, data) in &files {
        assert_eq!(&fs::read(r.path(name)).unwrap(), data, "{name}");
    }
    r.unmount();
    // Bad settings: writeback without a disk cache.
    let mp = vol.path("bad");
    fs::create_dir(&mp).unwrap();
    let out = nectar(&[
        "mount",
        &vol.meta_url,
        mp.to_str().unwrap(),
        "--writeback",
        "--cache-size",
        "0",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--writeback"));
}
