//! Quotas on real mounts: a directory quota set with `nectar quota` holds against two
//! mounts writing at once (EDQUOT, never more than the limit), `df` of a `--subdir`
//! mount shows it, `quota check` finds the stored usage equal to the tree's and repairs
//! the limit moves with `quota set`; the volume's `--capacity`, changed with `nectar config` while mounted,
//! reaches the mounts within seconds (ENOSPC).

mod common;

use common::*;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Total space and total inodes as `df` shows them for `mp`.
fn df_totals(mp: &Path) -> (u64, u64) {
    let c = std::ffi::CString::new(mp.to_str().unwrap()).unwrap();
    // SAFETY: a valid path and a zeroed struct for the kernel to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0, "statfs");
    (st.f_blocks * st.f_frsize, st.f_files)
}

/// Sets a file's length; the errno when refused.
fn set_len(p: &Path, len: u64) -> Result<(), i32> {
    let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(0);
    let f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(p)
        .map_err(errno)?;
    f.set_len(len).map_err(errno)
}

/// Writes one byte at `off` and syncs (the commit's answer comes back there).
fn write_at(p: &Path, off: u64) -> Result<(), i32> {
    let f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(p)
        .unwrap();
    f.write_all_at(b"x", off)
        .and_then(|_| f.sync_all())
        .map_err(|e| e.raw_os_error().unwrap_or(0))
}

fn quota_row(url: &str, path: &str) -> Vec<String> {
    let out = nectar_ok(&["quota", "get", url, "--path", path]);
    let text = stdout(&out);
    let row = text
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("no row: {text}"));
    row.split_whitespace().map(String::from).collect()
}

#[test]
fn a_directory_quota_holds_across_two_mounts() {
    require_fuse!();
    let vol = Volume::new(&[]);
    let url = vol.meta_url.clone();
    let a = vol.mount("a", &[]);
    fs::create_dir_all(a.path("team/old")).unwrap();
    fs::write(a.path("team/old/f"), vec![7u8; 10_000]).unwrap();
    // Counted from the tree: old and f (12 KiB).
    let set = nectar_ok(&[
        "quota",
        "set",
        &url,
        "--path",
        "/team",
        "--capacity",
        "1",
        "--inodes",
        "50",
    ]);
    assert!(stdout(&set).contains("/team"), "{}", stdout(&set));
    let row = quota_row(&url, "/team");
    assert_eq!(row[0], "/team");
    assert_eq!(row[4], "50");
    assert_eq!(row[5], "2", "{row:?}");
    let b = vol.mount("b", &["--subdir", "team"]);
    assert_eq!(
        df_totals(&b.mp),
        (1 << 30, 50),
        "df of the subdir shows its quota"
    );
    assert!(
        df_totals(&a.mp).0 > 1 << 40,
        "the volume's own df has no limit"
    );

    // The mounts read quotas every second: `df` of the directory shows when a's knows.
    let deadline = Instant::now() + Duration::from_secs(15);
    while df_totals(&a.path("team")).0 != 1 << 30 {
        assert!(
            Instant::now() < deadline,
            "mount a never learned of the quota"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(set_len(&a.path("team/old/f"), 2 << 30), Err(libc::EDQUOT));
    // Space: 700 MiB from each mount, at once; only one fits in 1 GiB.
    let results: Vec<Result<(), i32>> = std::thread::scope(|s| {
        let ta = s.spawn(|| write_at(&a.path("team/from-a"), 700 << 20));
        let tb = s.spawn(|| write_at(&b.path("from-b"), 700 << 20));
        vec![ta.join().unwrap(), tb.join().unwrap()]
    });
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "exactly one 700 MiB file fits: {results:?}"
    );
    assert!(results.contains(&Err(libc::EDQUOT)), "{results:?}");
    fs::remove_file(a.path("team/from-a")).ok();
    fs::remove_file(b.path("from-b")).ok();

    // Inodes: both mounts create until refused; together they stop at the limit.
    let made: Vec<usize> = std::thread::scope(|s| {
        let mk = |dir: std::path::PathBuf, tag: &'static str| {
            s.spawn(move || {
                let mut made = 0;
                for i in 0..60 {
                    match fs::write(dir.join(format!("{tag}{i}")), b"") {
                        Ok(()) => made += 1,
                        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EDQUOT), "{e}"),
                    }
                }
                made
            })
        };
        let ha = mk(a.path("team"), "a");
        let hb = mk(b.mp.clone(), "b");
        vec![ha.join().unwrap(), hb.join().unwrap()]
    });
    let total: usize = made.iter().sum();
    assert!(
        (40..=48).contains(&total),
        "{made:?} files made beside 2 inodes under a quota of 50"
    );
    assert!(fs::read_dir(a.path("team")).unwrap().count() <= 49);

    // A quota's check, with the mounts gone (no credit held), finds the tree's usage.
    // (A repair of a wrong usage is in the metadata conformance suite.)
    a.unmount();
    b.unmount();
    let check = nectar_ok(&["quota", "check", &url, "--path", "/team"]);
    assert!(check.status.success());
    let list = stdout(&nectar_ok(&["quota", "list", &url]));
    assert!(list.lines().any(|l| l.starts_with("/team ")), "{list}");
    let used = quota_row(&url, "/team")[5].clone();
    assert_eq!(used, (2 + total).to_string());
    nectar_ok(&["quota", "delete", &url, "--path", "/team"]);
    let gone = nectar(&["quota", "get", &url, "--path", "/team"]);
    assert!(!gone.status.success());
    nectar_ok(&["quota", "set", &url, "--path", "/team", "--inodes", "1000"]);
    assert_eq!(quota_row(&url, "/team")[5], (2 + total).to_string());
    let a = vol.mount("a", &[]);
    for i in 0..5 {
        fs::write(a.path(&format!("team/more{i}")), b"").unwrap();
    }
    a.unmount();
    nectar_ok(&["quota", "check", &url]);
    assert_eq!(quota_row(&url, "/team")[5], (7 + total).to_string());
}

#[test]
fn the_volume_capacity_reaches_running_mounts() {
    require_fuse!();
    let vol = Volume::new(&["--trash-days", "0"]);
    let a = vol.mount("a", &[]);
    let b = vol.mount("b", &[]);
    assert_eq!(set_len(&a.path("big"), 3 << 30), Ok(()));
    nectar_ok(&["config", &vol.meta_url, "--capacity", "2"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while set_len(&b.path("other"), 1 << 30) != Err(libc::ENOSPC) {
        assert!(
            Instant::now() < deadline,
            "mount b never enforced the capacity"
        );
        fs::remove_file(b.path("other")).ok();
        std::thread::sleep(Duration::from_millis(200));
    }
    // Freeing space on one mount lets the other write.
    fs::remove_file(a.path("big")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while set_len(&b.path("other"), 1 << 30).is_err() {
        assert!(
            Instant::now() < deadline,
            "the freed space never reached mount b"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(df_totals(&b.mp).0, 2 << 30);
    a.unmount();
    b.unmount();
}
