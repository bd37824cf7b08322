//! The trash on a real mount (on by default, one day): `rm -rf` of a tree, `rm` of a
//! file and a rename over a file keep what they removed under `.trash/<hour>/`, readable
//! and unchanged; only root removes from it and nothing is written into it;
//! `nectar status` shows it; `nectar restore` rebuilds the removed tree and puts it
//! back; with `--trash-days 0` a removal frees the data at once.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    Pattern::new(seed).fill(&mut buf);
    buf
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    n.sort();
    n
}

fn ino(p: &Path) -> u64 {
    fs::metadata(p).unwrap().ino()
}

/// Waits until `check` holds (another process changed metadata: the mount sees it
/// once the kernel's entry and attribute times run out).
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "never came true: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn removed_files_wait_in_the_trash_and_come_back() {
    require_fuse!();
    let vol = Volume::new(&[]);
    let m = vol.mount("mnt", &[]);
    let (a, b) = (content(1, 3 << 20), content(2, 1000));
    fs::create_dir_all(m.path("dir/sub")).unwrap();
    fs::write(m.path("dir/a"), &a).unwrap();
    fs::write(m.path("dir/sub/b"), &b).unwrap();
    fs::write(m.path("f"), b"file f").unwrap();
    fs::write(m.path("g"), b"old g").unwrap();
    fs::write(m.path("g.new"), b"new g").unwrap();
    let inos: Vec<u64> = ["dir", "dir/sub", "dir/a", "dir/sub/b", "f", "g"]
        .iter()
        .map(|p| ino(&m.path(p)))
        .collect();
    let [dir, sub, ia, ib, f, g] = inos[..] else {
        unreachable!()
    };
    assert_eq!(names(&m.mp), [".trash", "dir", "f", "g", "g.new"]);

    let rm = Command::new("rm")
        .arg("-rf")
        .arg(m.path("dir"))
        .status()
        .unwrap();
    assert!(rm.success());
    fs::remove_file(m.path("f")).unwrap();
    fs::rename(m.path("g.new"), m.path("g")).unwrap();
    assert_eq!(names(&m.mp), [".trash", "g"]);

    let hours = names(&m.path(".trash"));
    assert_eq!(hours.len(), 1, "{hours:?}");
    let hour = m.path(&format!(".trash/{}", hours[0]));
    let mut want = vec![
        format!("1-{dir}-dir"),
        format!("{dir}-{sub}-sub"),
        format!("{dir}-{ia}-a"),
        format!("{sub}-{ib}-b"),
        format!("1-{f}-f"),
        format!("1-{g}-g"),
    ];
    want.sort();
    assert_eq!(names(&hour), want);
    assert_eq!(fs::read(hour.join(format!("{dir}-{ia}-a"))).unwrap(), a);
    assert_eq!(fs::read(hour.join(format!("1-{g}-g"))).unwrap(), b"old g");

    // Only root removes from the trash, and nothing is written into it; others read.
    open_to_all(&vol, &m);
    let entry = hour.join(format!("1-{f}-f"));
    let out = as_user(1000, &format!("cat '{}'", entry.display()));
    assert_eq!(out.stdout, b"file f", "{out:?}");
    let out = as_user(1000, &format!("rm -f '{}'", entry.display()));
    assert!(!out.status.success(), "a user removed from the trash");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ermission denied")
            || String::from_utf8_lossy(&out.stderr).contains("not permitted"),
        "{out:?}"
    );
    let err = fs::write(hour.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    let err = fs::OpenOptions::new().write(true).open(&entry).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    assert!(fs::rename(m.path("g"), hour.join("g")).is_err());

    // `status` names the hour, `status --more` counts what it holds.
    let out = nectar_ok(&["status", &vol.meta_url, "--more"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["Trash"]["Days"], 1, "{status}");
    assert_eq!(status["Trash"]["Hours"][0], hours[0].as_str(), "{status}");
    assert_eq!(status["More"]["TrashEntries"], 6, "{status}");
    assert_eq!(
        status["More"]["TrashBytes"],
        (a.len() + b.len() + 6 + 5) as u64,
        "{status}"
    );

    // --hide-internal leaves it out of the listing; it is still reachable.
    let hidden = vol.mount("hidden", &["--hide-internal"]);
    assert_eq!(names(&hidden.mp), ["g"]);
    assert_eq!(names(&hidden.path(".trash")), hours);
    hidden.unmount();

    // Restore: the tree first, inside the trash; then everything back in place but
    // `g`, whose name is taken.
    let out = nectar_ok(&["restore", &vol.meta_url, &hours[0]]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &r[&hours[0]];
    assert_eq!(
        (r["restored"].as_u64(), r["need_put_back"].as_u64()),
        (Some(3), Some(3)),
        "{r}"
    );
    let out = nectar_ok(&["restore", &vol.meta_url, &hours[0], "--put-back"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &r[&hours[0]];
    assert_eq!(
        (r["restored"].as_u64(), r["conflicts"].as_u64()),
        (Some(2), Some(1)),
        "{r}"
    );
    eventually("the restored tree shows on the mount", || {
        m.path("dir/sub/b").exists() && m.path("f").exists()
    });
    assert_eq!(fs::read(m.path("dir/a")).unwrap(), a);
    assert_eq!(fs::read(m.path("dir/sub/b")).unwrap(), b);
    assert_eq!(fs::read(m.path("f")).unwrap(), b"file f");
    assert_eq!(fs::read(m.path("g")).unwrap(), b"new g");
    assert_eq!(fs::metadata(m.path("dir")).unwrap().nlink(), 3);
    assert_eq!(names(&hour), [format!("1-{g}-g")]);
    let out = nectar(&["restore", &vol.meta_url, "2000-01-01-00"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no hour 2000-01-01-00"),
        "{out:?}"
    );
    m.unmount();

    // With the trash off, a removal frees the data at once.
    nectar_ok(&["config", &vol.meta_url, "--trash-days", "0"]);
    let m = vol.mount("mnt", &[]);
    let blocks = || files_under(&vol.path("data/testvol/chunks")).len();
    let before = blocks();
    fs::remove_file(m.path("dir/a")).unwrap();
    eventually("the removed file's blocks are deleted", || {
        blocks() == before - 1
    });
    assert_eq!(
        names(&hour),
        [format!("1-{g}-g")],
        "nothing more in the trash"
    );
    m.unmount();
}

/// `nectar rmr` empties a tree through the mount and removes it: into the trash, or
/// with `--skip-trash` (root only) for good; the caller's rights are checked.
#[test]
fn rmr_removes_trees_into_the_trash_or_past_it() {
    require_fuse!();
    let vol = Volume::new(&[]);
    let m = vol.mount("mnt", &[]);
    let make_tree = |top: &str| {
        for d in 0..5 {
            let dir = m.path(&format!("{top}/d{d}/deeper"));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..40 {
                fs::write(dir.join(format!("f{f}")), format!("{top} {d} {f}")).unwrap();
            }
        }
        fs::write(m.path(&format!("{top}/top")), b"x").unwrap();
    };
    make_tree("one");
    make_tree("two");
    let bin = open_to_all(&vol, &m);
    // 5 x (d, deeper, 40 files) + top, and the tree's own directory.
    let entries = 5 * 42 + 1 + 1;

    // Another user may not remove what is not theirs, nor skip the trash.
    let out = as_user(
        1000,
        &format!("{} rmr '{}'", bin.display(), m.path("one").display()),
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{out:?}"
    );
    assert!(m.path("one/top").exists());

    nectar_ok(&["rmr", m.path("one").to_str().unwrap()]);
    assert!(!m.path("one").exists());
    let hours = names(&m.path(".trash"));
    let kept: usize = hours
        .iter()
        .map(|h| names(&m.path(&format!(".trash/{h}"))).len())
        .sum();
    assert_eq!(kept, entries);

    let blocks = || files_under(&vol.path("data/testvol/chunks")).len();
    let before = blocks();
    nectar_ok(&["rmr", "--skip-trash", m.path("two/d0").to_str().unwrap()]);
    assert!(!m.path("two/d0").exists());
    assert!(m.path("two/d1/deeper/f0").exists());
    eventually("the blocks of what skipped the trash are deleted", || {
        blocks() == before - 40
    });
    let kept_after: usize = names(&m.path(".trash"))
        .iter()
        .map(|h| names(&m.path(&format!(".trash/{h}"))).len())
        .sum();
    assert_eq!(kept_after, entries, "nothing more in the trash");
    let out = nectar(&["rmr", "/tmp"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not inside a mounted Nectar volume"),
        "{out:?}"
    );
    m.unmount();
}
