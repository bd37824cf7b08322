//! The real binary, really mounted: everyday POSIX work, big files, builds, two mounts of
//! one volume, crashes and bad input.

mod common;

use common::*;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn errno_of(r: i32) -> i32 {
    if r == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    }
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> i32 {
    let (a, b) = (cstr(from), cstr(to));
    // SAFETY: valid NUL-terminated paths; AT_FDCWD resolves them like rename(2).
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    errno_of(r)
}

#[test]
fn everyday_posix_operations() {
    require_fuse!();
    let vol = Volume::new(&[]);
    let m = vol.mount("mnt", &[]);
    let p = |s: &str| m.path(s);

    // Files: create, O_EXCL, O_TRUNC, O_APPEND, random writes, sparse holes.
    fs::write(p("a"), b"hello world").unwrap();
    assert_eq!(fs::read(p("a")).unwrap(), b"hello world");
    let e = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(p("a"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    let mut f = OpenOptions::new().append(true).open(p("a")).unwrap();
    f.write_all(b", again").unwrap();
    drop(f);
    assert_eq!(fs::read(p("a")).unwrap(), b"hello world, again");
    fs::write(p("a"), b"short").unwrap();
    assert_eq!(fs::read(p("a")).unwrap(), b"short");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(p("sparse"))
        .unwrap();
    f.seek(SeekFrom::Start(10 << 20)).unwrap();
    f.write_all(b"end").unwrap();
    f.seek(SeekFrom::Start(100)).unwrap();
    f.write_all(b"mid").unwrap();
    f.sync_all().unwrap();
    let mut all = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut all).unwrap();
    assert_eq!(all.len(), (10 << 20) + 3);
    assert!(all[..100].iter().all(|b| *b == 0) && &all[100..103] == b"mid");
    assert!(all[103..10 << 20].iter().all(|b| *b == 0) && &all[10 << 20..] == b"end");
    // ftruncate down and up: the cut part reads as zeros.
    f.set_len(101).unwrap();
    f.set_len(200).unwrap();
    let mut buf = vec![0u8; 200];
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_exact(&mut buf).unwrap();
    assert_eq!(buf[100], b'm');
    assert!(buf[101..].iter().all(|b| *b == 0));
    drop(f);

    // Directories, rename flavours, links.
    fs::create_dir_all(p("d1/d2/d3")).unwrap();
    assert_eq!(fs::metadata(p("d1")).unwrap().nlink(), 3);
    assert_eq!(
        fs::remove_dir(p("d1")).unwrap_err().raw_os_error(),
        Some(libc::ENOTEMPTY)
    );
    fs::write(p("d1/x"), b"x").unwrap();
    fs::write(p("y"), b"y").unwrap();
    fs::rename(p("d1/x"), p("d1/d2/x2")).unwrap();
    fs::rename(p("y"), p("d1/d2/x2")).unwrap();
    assert_eq!(fs::read(p("d1/d2/x2")).unwrap(), b"y");
    fs::write(p("z"), b"z").unwrap();
    assert_eq!(
        renameat2(&p("z"), &p("d1/d2/x2"), libc::RENAME_NOREPLACE),
        libc::EEXIST
    );
    assert_eq!(renameat2(&p("z"), &p("d1/d2/x2"), libc::RENAME_EXCHANGE), 0);
    assert_eq!(fs::read(p("z")).unwrap(), b"y");
    assert_eq!(fs::read(p("d1/d2/x2")).unwrap(), b"z");
    assert_eq!(renameat2(&p("d1"), &p("d1/d2/inside"), 0), libc::EINVAL);
    fs::hard_link(p("z"), p("d1/zlink")).unwrap();
    assert_eq!(fs::metadata(p("z")).unwrap().nlink(), 2);
    fs::remove_file(p("z")).unwrap();
    assert_eq!(fs::read(p("d1/zlink")).unwrap(), b"y");
    std::os::unix::fs::symlink("d1/zlink", p("sym")).unwrap();
    assert_eq!(fs::read_link(p("sym")).unwrap(), Path::new("d1/zlink"));
    assert_eq!(fs::read(p("sym")).unwrap(), b"y");

    // Special files.
    let fifo = cstr(&p("fifo"));
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    assert!(fs::metadata(p("fifo")).unwrap().file_type().is_fifo());
    let dev = cstr(&p("chardev"));
    // SAFETY: valid path.
    assert_eq!(
        unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) },
        0
    );
    let md = fs::metadata(p("chardev")).unwrap();
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), libc::makedev(1, 3));
    let sock = std::os::unix::net::UnixListener::bind(p("sock")).unwrap();
    assert!(fs::metadata(p("sock")).unwrap().file_type().is_socket());
    drop(sock);

    // Attributes: chmod, chown, nanosecond utimens.
    fs::set_permissions(p("a"), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(fs::metadata(p("a")).unwrap().mode() & 0o7777, 0o640);
    std::os::unix::fs::chown(p("a"), Some(1000), Some(1001)).unwrap();
    let md = fs::metadata(p("a")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1000, 1001));
    let t = std::time::UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789);
    File::options()
        .write(true)
        .open(p("a"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    let md = fs::metadata(p("a")).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_600_000_000, 123_456_789));

    // Extended attributes.
    let a = cstr(&p("a"));
    let (name, val) = (CString::new("user.color").unwrap(), b"blue");
    // SAFETY: valid path, name and value buffers.
    assert_eq!(
        unsafe {
            libc::setxattr(
                a.as_ptr(),
                name.as_ptr(),
                val.as_ptr().cast(),
                val.len(),
                libc::XATTR_CREATE,
            )
        },
        0
    );
    let r = unsafe {
        libc::setxattr(
            a.as_ptr(),
            name.as_ptr(),
            val.as_ptr().cast(),
            val.len(),
            libc::XATTR_CREATE,
        )
    };
    assert_eq!(errno_of(r), libc::EEXIST);
    let mut out = [0u8; 16];
    let n = unsafe {
        libc::getxattr(
            a.as_ptr(),
            name.as_ptr(),
            out.as_mut_ptr().cast(),
            out.len(),
        )
    };
    assert_eq!(&out[..n as usize], val);
    let n = unsafe { libc::getxattr(a.as_ptr(), name.as_ptr(), out.as_mut_ptr().cast(), 2) };
    assert_eq!(
        (n, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::ERANGE))
    );
    let n = unsafe { libc::listxattr(a.as_ptr(), out.as_mut_ptr().cast(), out.len()) };
    assert_eq!(&out[..n as usize], b"user.color\0");
    assert_eq!(unsafe { libc::removexattr(a.as_ptr(), name.as_ptr()) }, 0);
    let n = unsafe {
        libc::getxattr(
            a.as_ptr(),
            name.as_ptr(),
            out.as_mut_ptr().cast(),
            out.len(),
        )
    };
    assert_eq!(
        (n, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::ENODATA))
    );

    // An unlinked file stays readable and writable through its handle.
    fs::write(p("gone"), b"before").unwrap();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(p("gone"))
        .unwrap();
    fs::remove_file(p("gone")).unwrap();
    assert!(!p("gone").exists());
    f.seek(SeekFrom::End(0)).unwrap();
    f.write_all(b" and after").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "before and after");
    drop(f);

    // A big directory lists completely.
    fs::create_dir(p("many")).unwrap();
    for i in 0..3000 {
        File::create(p(&format!("many/f{i}"))).unwrap();
    }
    assert_eq!(fs::read_dir(p("many")).unwrap().count(), 3000);

    // statfs and names too long.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let root = cstr(&m.mp);
    assert_eq!(unsafe { libc::statvfs(root.as_ptr(), &mut st) }, 0);
    assert!(st.f_blocks > 0 && st.f_files > 3000 && st.f_namemax == 255);
    let long = "x".repeat(256);
    assert_eq!(
        File::create(p(&long)).unwrap_err().raw_os_error(),
        Some(libc::ENAMETOOLONG)
    );

    // nectar info shows chunks, slices and object keys.
    fs::write(p("info-me"), vec![7u8; 5 << 20]).unwrap();
    let out = nectar_ok(&["info", p("info-me").to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("size: 5242880") && report.contains("chunks/0/0/"),
        "{report}"
    );
    assert_eq!(report.matches("object: ").count(), 2, "{report}");
    m.unmount();
}

#[test]
fn one_gib_file_keeps_its_checksum() {
    require_fuse!();
    let vol = Volume::new(&[]);
    let m = vol.mount("mnt", &[]);
    const SIZE: usize = 1 << 30;
    let mut pattern = Pattern::new(42);
    let mut buf = vec![0u8; 1 << 20];
    let mut crc = crc32fast::Hasher::new();
    let mut f = File::create(m.path("big")).unwrap();
    for _ in 0..SIZE / buf.len() {
        pattern.fill(&mut buf);
        crc.update(&buf);
        f.write_all(&buf).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    let written = crc.finalize();
    m.unmount();
    // Cold read through a fresh mount.
    let m = vol.mount("mnt", &[]);
    assert_eq!(fs::metadata(m.path("big")).unwrap().len(), SIZE as u64);
    let mut f = File::open(m.path("big")).unwrap();
    let mut crc = crc32fast::Hasher::new();
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        crc.update(&buf[..n]);
    }
    drop(f);
    assert_eq!(
        crc.finalize(),
        written,
        "1 GiB read back differs from what was written"
    );
    m.unmount();
}

#[test]
fn untar_and_compile_a_source_tree() {
    require_fuse!();
    // The zstd C library ships inside the zstd-sys crate that the build already fetched.
    let Some(krate) = find_crate_archive("zstd-sys-") else {
        eprintln!("skipped: no zstd-sys crate archive in the cargo cache to build");
        return;
    };
    let vol = Volume::new(&[]);
    let m = vol.mount("mnt", &[]);
    let st = Command::new("tar")
        .arg("xzf")
        .arg(&krate)
        .arg("-C")
        .arg(&m.mp)
        .status()
        .unwrap();
    assert!(st.success());
    let src = fs::read_dir(&m.mp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir() && p.file_name().unwrap() != ".trash")
        .unwrap()
        .join("zstd");
    fs::write(
        src.join("Makefile"),
        "SRCS := $(shell find lib -name '*.c' -not -path '*/legacy/*' -not -path '*/deprecated/*')\n\
         OBJS := $(SRCS:.c=.o)\n\
         CFLAGS := -O1 -DZSTD_DISABLE_ASM -Ilib -Ilib/common\n\
         roundtrip: roundtrip.c libzstd.a\n\tcc $(CFLAGS) -o $@ roundtrip.c libzstd.a -lpthread\n\
         libzstd.a: $(OBJS)\n\tar rcs $@ $(OBJS)\n",
    )
    .unwrap();
    fs::write(
        src.join("roundtrip.c"),
        r#"#include <stdio.h>
#include <string.h>
#include <zstd.h>
int main(void) {
    static char in[1 << 20], packed[1 << 21], out[1 << 20];
    for (size_t i = 0; i < sizeof in; i++) in[i] = (char)(i % 251 + i / 4096);
    size_t n = ZSTD_compress(packed, sizeof packed, in, sizeof in, 3);
    if (ZSTD_isError(n)) return 1;
    size_t m = ZSTD_decompress(out, sizeof out, packed, n);
    if (m != sizeof in || memcmp(in, out, m)) return 2;
    printf("ok %zu\n", n);
    return 0;
}
"#,
    )
    .unwrap();
    let out = Command::new("make")
        .args(["-s", "-j4", "roundtrip"])
        .current_dir(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make inside the mount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(src.join("roundtrip")).output().unwrap();
    assert!(
        out.status.success() && out.stdout.starts_with(b"ok "),
        "{out:?}"
    );
    // Clean and rebuild: objects are overwritten and deleted many times.
    let st = Command::new("sh").arg("-c").arg("find lib -name '*.o' -delete && rm -f libzstd.a roundtrip && make -s -j4 roundtrip && ./roundtrip").current_dir(&src).status().unwrap();
    assert!(st.success());
    m.unmount();
}

fn find_crate_archive(prefix: &str) -> Option<std::path::PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
    for reg in fs::read_dir(home.join("registry/cache")).ok()? {
        let reg = reg.ok()?.path();
        for f in fs::read_dir(&reg).ok()? {
            let f = f.ok()?.path();
            if f.file_name()?.to_string_lossy().starts_with(prefix) {
                return Some(f);
            }
        }
    }
    None
}

#[test]
fn two_mounts_see_each_others_closed_files() {
    require_fuse!();
    let vol = Volume::new(&[]);
    let a = vol.mount("a", &[]);
    let b = vol.mount("b", &[]);
    fs::write(a.path("from-a"), b"written by a").unwrap();
    assert_eq!(fs::read(b.path("from-a")).unwrap(), b"written by a");
    fs::create_dir(b.path("dir-b")).unwrap();
    fs::write(b.path("dir-b/f"), vec![9u8; 3 << 20]).unwrap();
    assert_eq!(fs::read(a.path("dir-b/f")).unwrap(), vec![9u8; 3 << 20]);
    // A change to a file the other mount has seen shows up once its 1 s caches expire.
    fs::write(a.path("from-a"), b"changed by a, longer").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(fs::read(b.path("from-a")).unwrap(), b"changed by a, longer");
    fs::remove_file(b.path("from-a")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!a.path("from-a").exists());
    // Both sessions are listed.
    let out = nectar_ok(&["status", &vol.meta_url]);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains(a.mp.to_str().unwrap()) && status.contains(b.mp.to_str().unwrap()),
        "{status}"
    );
    assert!(!status.contains("SecretKey\": \"") || status.contains("removed"));
    a.unmount();
    b.unmount();
}

/// A shared writable mapping reaches the file: after msync and close, another mount
/// reads what was stored through the mapping.
#[test]
fn shared_mmap_writes_reach_another_mount() {
    require_fuse!();
    let vol = Volume::new(&[]);
    let a = vol.mount("a", &[]);
    let b = vol.mount("b", &[]);
    let len = (5 << 20) + 123; // crosses block boundaries, ends mid-page
    fs::write(a.path("mapped"), vec![0u8; len]).unwrap();
    let mut expected = vec![0u8; len];
    Pattern::new(11).fill(&mut expected[4096..]);
    {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(a.path("mapped"))
            .unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh shared mapping of a file we hold open, written within its
        // length, synced and unmapped before the descriptor closes.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
            std::ptr::copy_nonoverlapping(expected.as_ptr(), p as *mut u8, len);
            assert_eq!(libc::msync(p, len, libc::MS_SYNC), 0);
            assert_eq!(libc::munmap(p, len), 0);
        }
    }
    let seen = fs::read(b.path("mapped")).unwrap();
    assert_eq!(seen.len(), len);
    assert!(
        seen == expected,
        "the other mount does not see the mapped writes"
    );
    a.unmount();
    b.unmount();
}

/// fio's sequential job with its default file layout (posix_fallocate, then writes),
/// verified by reading back with checksums; then the same with fallocate=posix forced.
#[test]
fn fio_sequential_job_lays_out_writes_and_verifies() {
    require_fuse!();
    require_fio!();
    let vol = Volume::new(&[]);
    let m = vol.mount("mnt", &[]);
    for (name, extra) in [("default", None), ("posix", Some("--fallocate=posix"))] {
        let mut cmd = Command::new("fio");
        cmd.args([
            &format!("--name={name}"),
            &format!("--directory={}", m.mp.display()),
            "--rw=write",
            "--bs=1M",
            "--size=96M",
            "--ioengine=psync",
            "--verify=crc32c",
            "--do_verify=1",
            "--end_fsync=1",
            // No verify-state files left in the working directory.
            "--verify_state_save=0",
        ]);
        cmd.current_dir(vol.dir.path());
        cmd.args(extra);
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("err= 0"),
            "fio {name} failed: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let laid_out = m.path(&format!("{name}.0.0"));
        assert_eq!(fs::metadata(&laid_out).unwrap().len(), 96 << 20);
    }
    m.unmount();
}

/// `--atime-mode`: noatime never updates atime on reads, relatime only when atime is
/// not after mtime (or is a day old), strictatime on every read (once a second).
#[test]
fn atime_modes() {
    require_fuse!();
    let vol = Volume::new(&[]);
    let day_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 86400);
    let atime = |m: &Mount| fs::metadata(m.path("f")).unwrap().accessed().unwrap();
    let age = |t: std::time::SystemTime| t.elapsed().unwrap_or_default();
    // Wait out the kernel's 1 s attribute cache between a read and the stat that checks it.
    let settle = || std::thread::sleep(Duration::from_millis(1200));
    {
        let m = vol.mount("mnt", &[]);
        fs::write(m.path("f"), b"data").unwrap();
        let f = File::open(m.path("f")).unwrap();
        f.set_times(fs::FileTimes::new().set_accessed(day_ago))
            .unwrap();
        drop(f);
        fs::read(m.path("f")).unwrap();
        settle();
        assert!(
            age(atime(&m)) > Duration::from_secs(86400),
            "noatime updated atime"
        );
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
        let line = mounts
            .lines()
            .find(|l| l.contains(m.mp.to_str().unwrap()))
            .unwrap();
        assert!(line.contains("noatime"), "noatime not shown: {line}");
        m.unmount();
    }
    {
        let m = vol.mount("mnt", &["--atime-mode", "relatime"]);
        fs::read(m.path("f")).unwrap();
        settle();
        let first = atime(&m);
        assert!(
            age(first) < Duration::from_secs(30),
            "relatime kept a day-old atime"
        );
        // atime is now after mtime: another read leaves it alone.
        fs::read(m.path("f")).unwrap();
        settle();
        assert_eq!(atime(&m), first, "relatime updated a fresh atime");
        // A listing of the root updates the directory's atime the same way.
        let root = || fs::metadata(&m.mp).unwrap().accessed().unwrap();
        File::open(&m.mp)
            .unwrap()
            .set_times(fs::FileTimes::new().set_accessed(day_ago))
            .unwrap();
        fs::read_dir(&m.mp).unwrap().for_each(drop);
        settle();
        assert!(
            age(root()) < Duration::from_secs(30),
            "listing kept the dir's atime"
        );
        m.unmount();
    }
    {
        let m = vol.mount("mnt", &["--atime-mode", "strictatime"]);
        fs::read(m.path("f")).unwrap();
        settle();
        let first = atime(&m);
        fs::read(m.path("f")).unwrap();
        settle();
        assert!(
            atime(&m) > first,
            "strictatime did not update atime on a read"
        );
        m.unmount();
    }
    let out = nectar(&["mount", "--atime-mode", "sometimes", "x", "/nonexistent"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("noatime, relatime or strictatime"));
}

#[test]
fn background_mount_and_clean_signal_exit() {
    require_fuse!();
    let vol = Volume::new(&[]);
    let mp = vol.path("mnt");
    fs::create_dir(&mp).unwrap();
    let log = vol.path("bg.log");
    let pidf = vol.path("bg.pid");
    nectar_ok(&[
        "mount",
        "-d",
        &vol.meta_url,
        mp.to_str().unwrap(),
        "--log",
        log.to_str().unwrap(),
        "--pid-file",
        pidf.to_str().unwrap(),
        "--cache-dir",
        vol.path("cache").to_str().unwrap(),
    ]);
    let guard = Mount {
        mp: mp.clone(),
        child: None,
        log: log.clone(),
    };
    assert!(
        is_mounted(&mp),
        "mount -d returned before the mount was ready"
    );
    fs::write(mp.join("f"), b"data").unwrap();
    let pid: i32 = fs::read_to_string(&pidf).unwrap().trim().parse().unwrap();
    // SIGTERM: commit, unmount, exit.
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while is_mounted(&mp) || Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGTERM did not unmount: {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = nectar_ok(&["status", &vol.meta_url]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(mp.to_str().unwrap()),
        "session not closed"
    );
    drop(guard);
    let m = vol.mount("mnt", &[]);
    assert_eq!(fs::read(m.path("f")).unwrap(), b"data");
    m.unmount();
}

#[test]
fn killed_mount_is_cleared_by_force_umount() {
    require_fuse!();
    let vol = Volume::new(&[]);
    let mut m = vol.mount("mnt", &[]);
    fs::write(m.path("kept"), b"committed before the crash").unwrap();
    m.child.as_mut().unwrap().kill().unwrap();
    m.child.as_mut().unwrap().wait().unwrap();
    let e = fs::metadata(m.path("kept")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN));
    let out = nectar(&["umount", m.mp.to_str().unwrap()]);
    let _ = out; // A plain umount may or may not manage; --force must.
    if is_mounted(&m.mp) {
        nectar_ok(&["umount", "--force", m.mp.to_str().unwrap()]);
    }
    assert!(!is_mounted(&m.mp));
    drop(m);
    let m = vol.mount("mnt", &[]);
    assert_eq!(
        fs::read(m.path("kept")).unwrap(),
        b"committed before the crash"
    );
    m.unmount();
}

/// Block objects under a local bucket, as keys from `chunks/` on.
fn stored_blocks(bucket: &Path) -> std::collections::BTreeSet<String> {
    fn walk(dir: &Path, out: &mut std::collections::BTreeSet<String>) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if let Some(i) = p.to_str().and_then(|s| s.find("/chunks/")) {
                out.insert(p.to_str().unwrap()[i + 1..].to_string());
            }
        }
    }
    let mut out = Default::default();
    walk(bucket, &mut out);
    out
}

/// Block objects that `nectar info` lists for the given files.
fn referenced_blocks(files: &[std::path::PathBuf]) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for f in files {
        let report = nectar_ok(&["info", f.to_str().unwrap()]).stdout;
        for line in String::from_utf8_lossy(&report).lines() {
            if let Some(key) = line.trim().strip_prefix("object: ") {
                out.insert(key.to_string());
            }
        }
    }
    out
}

/// Mounts a client, commits the file `kept`, then kills the client in the middle of
/// writing `partial`; returns the survivor's mount (heartbeats of 1 s), the content of
/// `kept`, and the blocks the dead client stored that no file refers to.
fn crash_mid_write(vol: &Volume) -> (Mount, Vec<u8>, usize) {
    let mut a = vol.mount("a", &["--heartbeat", "1"]);
    let mut kept = vec![0u8; 300 << 10];
    Pattern::new(11).fill(&mut kept);
    fs::write(a.path("kept"), &kept).unwrap();
    // Writes that go on until the crash: every 64 KiB block that fills is stored at
    // once, while the slice waits for more data (up to a second idle, five in all)
    // before it is committed.
    let mut f = File::create(a.path("partial")).unwrap();
    for i in 0..8u8 {
        f.write_all(&vec![i; 256 << 10]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    a.child.as_mut().unwrap().kill().unwrap();
    a.child.as_mut().unwrap().wait().unwrap();
    drop(f);
    if is_mounted(&a.mp) {
        nectar_ok(&["umount", "--force", a.mp.to_str().unwrap()]);
    }
    drop(a);
    // Listed before the survivor mounts: its first heartbeat may clean the dead session
    // at once, and the dead client stores nothing more.
    let stored = stored_blocks(&vol.path("data"));
    let b = vol.mount("b", &["--heartbeat", "1"]);
    let referenced = referenced_blocks(&[b.path("kept"), b.path("partial")]);
    assert!(referenced.is_subset(&stored));
    let orphans = stored.len() - referenced.len();
    (b, kept, orphans)
}

/// A client killed in the middle of a write leaves blocks it stored but never committed.
/// Once its session expires, a surviving mount deletes exactly those, and nothing that
/// a file refers to: on SQLite, and on every database server CI runs.
#[test]
fn unfinished_writes_of_a_killed_client_are_deleted_by_a_survivor() {
    require_fuse!();
    let servers = server_meta_urls().unwrap_or_else(|why| {
        eprintln!("only SQLite: {why}");
        Vec::new()
    });
    sweep_after_crash(None);
    for url in servers {
        let url = isolated_url(&url, "unfinished").expect("an engine tests can isolate");
        sweep_after_crash(Some(&url));
    }
}

fn sweep_after_crash(url: Option<&str>) {
    let on = url.map_or("sqlite", |u| u.split(':').next().unwrap_or(u));
    // A machine stalled for a second lets the dead client commit its write before the
    // kill, leaving nothing to clean: then the crash is staged again.
    let (vol, b, kept, orphans) = (1..=3)
        .find_map(|attempt| {
            let opts = ["--block-size", "64"];
            let vol = url.map_or_else(|| Volume::new(&opts), |u| Volume::on(u, &opts));
            let (b, kept, orphans) = crash_mid_write(&vol);
            if orphans > 0 {
                return Some((vol, b, kept, orphans));
            }
            eprintln!("{on}, attempt {attempt}: the write was committed before the kill");
            b.unmount();
            None
        })
        .expect("three crashes mid-write, yet the write was always committed first");
    eprintln!("{on}: the killed client left {orphans} blocks");
    let bucket = vol.path("data");
    let files = [b.path("kept"), b.path("partial")];
    let referenced = referenced_blocks(&files);
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while stored_blocks(&bucket) != referenced {
        assert!(
            std::time::Instant::now() < deadline,
            "{on}: {} blocks of the dead client still stored; log:\n{}",
            stored_blocks(&bucket).len() - referenced.len(),
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(fs::read(b.path("kept")).unwrap(), kept);
    assert_eq!(referenced_blocks(&files), referenced);
    let log = b.unmount();
    assert!(
        log.contains(&format!(
            "deleted {orphans} blocks of slices it never committed"
        )),
        "{log}"
    );
}

#[test]
fn read_only_and_subdir_mounts() {
    require_fuse!();
    let vol = Volume::new(&[]);
    let m = vol.mount("mnt", &[]);
    fs::create_dir_all(m.path("team/data")).unwrap();
    fs::write(m.path("team/data/f"), b"team file").unwrap();
    m.unmount();
    let ro = vol.mount("ro", &["--read-only", "--subdir", "team"]);
    assert_eq!(fs::read(ro.path("data/f")).unwrap(), b"team file");
    let e = fs::write(ro.path("data/new"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    ro.unmount();
}

/// `--no-xattr`: every xattr call fails with EOPNOTSUPP (the kernel stops asking after
/// the first ENOSYS), files work as before, and a volume with ACLs refuses it.
#[test]
fn mount_without_xattrs() {
    require_fuse!();
    let vol = Volume::new(&[]);
    let m = vol.mount("mnt", &["--no-xattr"]);
    fs::write(m.path("f"), b"data").unwrap();
    let f = cstr(&m.path("f"));
    let name = CString::new("user.k").unwrap();
    let mut buf = [0u8; 16];
    for _ in 0..2 {
        let r = unsafe { libc::lgetxattr(f.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 16) };
        assert_eq!(errno_of(r as i32), libc::EOPNOTSUPP);
    }
    let r = unsafe { libc::lsetxattr(f.as_ptr(), name.as_ptr(), b"v".as_ptr().cast(), 1, 0) };
    assert_eq!(errno_of(r), libc::EOPNOTSUPP);
    let r = unsafe { libc::llistxattr(f.as_ptr(), std::ptr::null_mut(), 0) };
    assert_eq!(errno_of(r as i32), libc::EOPNOTSUPP);
    assert_eq!(fs::read(m.path("f")).unwrap(), b"data");
    m.unmount();

    let acl = Volume::new(&["--enable-acl"]);
    fs::create_dir_all(acl.path("mnt")).unwrap();
    let out = nectar(&[
        "mount",
        &acl.meta_url,
        acl.path("mnt").to_str().unwrap(),
        "--no-xattr",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("POSIX ACLs") && err.contains("without --no-xattr"),
        "{err}"
    );
}

fn stderr_of(args: &[&str]) -> String {
    let out = nectar(args);
    assert!(!out.status.success(), "nectar {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The quick start refuses, before any install or build, what would make it fail late
/// or hide files: a user who is not root, a machine without /dev/fuse, a mount point
/// that is busy, not empty, or not a directory.
#[test]
fn quickstart_refuses_what_it_cannot_do_before_building() {
    require_fuse!();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/quickstart.sh");
    let script = script.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |wrapper: &[&str], mp: &Path| {
        let mut args: Vec<&str> = wrapper.to_vec();
        args.extend(["bash", script, mp.to_str().unwrap()]);
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            !out.status.success(),
            "quickstart {args:?} should have failed"
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains("building nectar"), "it built first: {err}");
        err
    };
    let mp = dir.path().join("mnt");
    // The script's text is handed over as an argument: the checkout may not be readable
    // by other users.
    let text = fs::read_to_string(script).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "bash",
            "-c",
            &text,
        ])
        .args(["quickstart.sh", mp.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("run as root"));
    let busy = dir.path().join("busy");
    fs::create_dir(&busy).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&busy)
        .status()
        .unwrap();
    assert!(st.success());
    let e = run(&[], &busy);
    Command::new("umount").arg(&busy).status().unwrap();
    assert!(e.contains("is busy") && e.contains("tmpfs"), "{e}");
    let full = dir.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("precious"), b"x").unwrap();
    assert!(run(&[], &full).contains("not empty"));
    let file = dir.path().join("file");
    fs::write(&file, b"").unwrap();
    assert!(run(&[], &file).contains("not a directory"));
    // No FUSE device (the script looks at the path NECTAR_FUSE_DEVICE names).
    let e = run(&["env", "NECTAR_FUSE_DEVICE=/nonexistent/fuse"], &mp);
    assert!(e.contains("/nonexistent/fuse is missing"), "{e}");
}

#[test]
fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let url = format!("sqlite3://{d}/meta.db");
    assert!(stderr_of(&["status", "not-a-url"]).contains("invalid META-URL"));
    assert!(stderr_of(&["status", "nosuch://x"]).contains("unknown metadata engine"));
    assert!(stderr_of(&["status", "sqlite3:///no/such/dir/m.db"]).contains("does not exist"));
    assert!(stderr_of(&["status", &url]).contains("nectar format"));
    assert!(stderr_of(&["format", &url, "Bad_Name"]).contains("invalid volume name"));
    assert!(stderr_of(&["format", &url, "vol", "--block-size", "99999"]).contains("--block-size"));
    assert!(stderr_of(&["format", &url, "vol", "--storage", "s3"]).contains("--bucket is required"));
    assert!(stderr_of(&[
        "format",
        &url,
        "vol",
        "--storage",
        "gopher",
        "--bucket",
        "x"
    ])
    .contains("gopher"));
    let unreachable = stderr_of(&[
        "format",
        &url,
        "vol",
        "--storage",
        "s3",
        "--bucket",
        "http://127.0.0.1:1/b",
        "--access-key",
        "a",
        "--secret-key",
        "b",
    ]);
    assert!(unreachable.contains("127.0.0.1:1"), "{unreachable}");
    nectar_ok(&["format", &url, "vol", "--bucket", &format!("{d}/data")]);
    assert!(
        stderr_of(&["format", &url, "vol", "--bucket", &format!("{d}/data")])
            .contains("already exists")
    );
    nectar_ok(&[
        "format",
        &url,
        "vol",
        "--bucket",
        &format!("{d}/data"),
        "--force",
        "--trash-days",
        "0",
    ]);
    assert!(stderr_of(&["mount", &url, &format!("{d}/missing")]).contains("does not exist"));
    fs::write(dir.path().join("file"), b"").unwrap();
    assert!(stderr_of(&["mount", &url, &format!("{d}/file")]).contains("not a directory"));
    assert!(stderr_of(&["umount", &format!("{d}/data")]).contains("not mounted"));
    if skip_reason().is_none() {
        let m = Mount::start(&url, &dir.path().join("mnt"), &[]);
        assert!(stderr_of(&["mount", &url, m.mp.to_str().unwrap()]).contains("busy"));
        m.unmount();
    }
}

#[test]
fn full_local_disk_fails_writes_but_keeps_stored_data() {
    require_fuse!();
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    fs::create_dir(&small).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    if !st.success() {
        eprintln!("skipped: cannot mount a small tmpfs to fill");
        return;
    }
    struct Umount(std::path::PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _tmpfs = Umount(small.clone());
    let url = format!("sqlite3://{}/meta.db", dir.path().display());
    nectar_ok(&[
        "format",
        &url,
        "vol",
        "--bucket",
        small.join("data").to_str().unwrap(),
    ]);
    let m = Mount::start(&url, &dir.path().join("mnt"), &[]);
    fs::write(m.path("fits"), vec![1u8; 4 << 20]).unwrap();
    let res = (|| -> std::io::Result<()> {
        let mut f = File::create(m.path("too-big"))?;
        for _ in 0..32 {
            f.write_all(&[2u8; 1 << 20])?;
        }
        f.sync_all()
    })();
    let e = res.expect_err("writing 32 MiB into 16 MiB must fail");
    assert!(
        matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EIO)),
        "{e}"
    );
    assert_eq!(
        fs::read(m.path("fits")).unwrap(),
        vec![1u8; 4 << 20],
        "data stored before the disk filled is damaged"
    );
    drop(m);
}

/// The S3 server given by NECTAR_TEST_S3 (a bucket URL) and its keys.
fn s3_env() -> Option<(String, String, String)> {
    let url = std::env::var("NECTAR_TEST_S3")
        .ok()
        .filter(|u| !u.is_empty())?;
    let ak = std::env::var("NECTAR_TEST_S3_ACCESS_KEY").unwrap_or_default();
    let sk = std::env::var("NECTAR_TEST_S3_SECRET_KEY").unwrap_or_default();
    Some((url, ak, sk))
}

#[test]
fn s3_storage_mount() {
    require_fuse!();
    let Some((bucket, ak, sk)) = s3_env() else {
        eprintln!(
            "skipped: NECTAR_TEST_S3 is not set (scripts/start-seaweedfs.sh starts a server)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite3://{}/meta.db", dir.path().display());
    let name = format!("s3vol{}", std::process::id());
    // Wrong credentials are refused with a message that names them.
    let wrong = stderr_of(&[
        "format",
        &url,
        &name,
        "--storage",
        "s3",
        "--bucket",
        &bucket,
        "--access-key",
        &ak,
        "--secret-key",
        "wrong",
    ]);
    assert!(
        wrong.contains("credentials") || wrong.contains("denied"),
        "{wrong}"
    );
    let out = Command::new(BIN)
        .args([
            "format",
            &url,
            &name,
            "--storage",
            "s3",
            "--bucket",
            &bucket,
        ])
        .env("ACCESS_KEY", &ak)
        .env("SECRET_KEY", &sk)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = String::from_utf8_lossy(&nectar_ok(&["status", &url]).stdout).into_owned();
    assert!(
        !status.contains(&sk) || sk.is_empty(),
        "status shows the secret key"
    );
    let m = Mount::start(&url, &dir.path().join("mnt"), &[]);
    let mut pattern = Pattern::new(7);
    let mut data = vec![0u8; 9 << 20];
    pattern.fill(&mut data);
    fs::write(m.path("blob"), &data).unwrap();
    fs::write(m.path("small"), b"tiny").unwrap();
    m.unmount();
    let m = Mount::start(&url, &dir.path().join("mnt"), &[]);
    assert_eq!(fs::read(m.path("blob")).unwrap(), data);
    assert_eq!(fs::read(m.path("small")).unwrap(), b"tiny");
    let report =
        String::from_utf8_lossy(&nectar_ok(&["info", m.path("blob").to_str().unwrap()]).stdout)
            .into_owned();
    assert_eq!(report.matches("object: ").count(), 3, "{report}");
    fs::remove_file(m.path("blob")).unwrap();
    m.unmount();
}

#[test]
fn fallocate_seek_hole_and_copy_file_range() {
    use std::os::fd::AsRawFd;
    require_fuse!();
    let vol = Volume::new(&[]);
    let m = vol.mount("mnt", &[]);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path("f"))
        .unwrap();
    let fd = f.as_raw_fd();
    // SAFETY: fd is open for the whole block; the buffers outlive the calls.
    unsafe {
        assert_eq!(libc::posix_fallocate(fd, 0, 8 << 20), 0);
        assert_eq!(fs::metadata(m.path("f")).unwrap().len(), 8 << 20);
        assert_eq!(
            libc::pwrite(fd, [3u8; 4096].as_ptr().cast(), 4096, 1 << 20),
            4096
        );
        assert_eq!(
            libc::fallocate(
                fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                (1 << 20) + 1024,
                1024
            ),
            0
        );
        let mut buf = [9u8; 4096];
        assert_eq!(
            libc::pread(fd, buf.as_mut_ptr().cast(), 4096, 1 << 20),
            4096
        );
        assert!(
            buf[..1024].iter().all(|b| *b == 3)
                && buf[1024..2048].iter().all(|b| *b == 0)
                && buf[2048..].iter().all(|b| *b == 3)
        );
        assert_eq!(libc::lseek(fd, 0, libc::SEEK_DATA), 1 << 20);
        assert_eq!(libc::lseek(fd, 1 << 20, libc::SEEK_HOLE), (1 << 20) + 1024);
        let g = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(m.path("g"))
            .unwrap();
        let (mut off_in, mut off_out) = (1i64 << 20, 0i64);
        let n = libc::copy_file_range(fd, &mut off_in, g.as_raw_fd(), &mut off_out, 4096, 0);
        assert_eq!(n, 4096);
        drop(g);
    }
    drop(f);
    let g = fs::read(m.path("g")).unwrap();
    assert_eq!(g.len(), 4096);
    assert!(g[..1024].iter().all(|b| *b == 3) && g[1024..2048].iter().all(|b| *b == 0));
    m.unmount();
}

/// Everyday work and two mounts of one volume on each database server given in
/// NECTAR_TEST_META_URLS (the same servers the conformance suite uses).
#[test]
fn mounts_on_every_metadata_engine() {
    require_fuse!();
    let urls = std::env::var("NECTAR_TEST_META_URLS").unwrap_or_default();
    if urls.trim().is_empty() {
        eprintln!("skipped: NECTAR_TEST_META_URLS is not set (scripts/test.sh starts the servers)");
        return;
    }
    for url in urls.split_whitespace() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = dir.path().join("data");
        // The conformance suite leaves a volume named "test" behind: take it over.
        let out = nectar(&[
            "format",
            url,
            "test",
            "--bucket",
            bucket.to_str().unwrap(),
            "--force",
        ]);
        assert!(
            out.status.success(),
            "format on {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let a = Mount::start(url, &dir.path().join("a"), &[]);
        let b = Mount::start(url, &dir.path().join("b"), &[]);
        let top = format!("run{}", std::process::id());
        fs::create_dir_all(a.path(&format!("{top}/sub"))).unwrap();
        let mut data = vec![0u8; 5 << 20];
        Pattern::new(11).fill(&mut data);
        fs::write(a.path(&format!("{top}/sub/file")), &data).unwrap();
        fs::rename(
            a.path(&format!("{top}/sub/file")),
            a.path(&format!("{top}/moved")),
        )
        .unwrap();
        assert_eq!(
            fs::read(b.path(&format!("{top}/moved"))).unwrap(),
            data,
            "on {url}"
        );
        for i in 0..50 {
            fs::write(b.path(&format!("{top}/sub/f{i}")), format!("{i}")).unwrap();
        }
        assert_eq!(
            fs::read_dir(a.path(&format!("{top}/sub"))).unwrap().count(),
            50,
            "on {url}"
        );
        fs::remove_dir_all(b.path(&top)).unwrap();
        a.unmount();
        b.unmount();
    }
}

/// `ls -l`, `find` and `rm -rf` of a large directory cost its listing, not a metadata
/// round trip per entry: every page of the listing comes with attributes (READDIRPLUS,
/// so the kernel needs no lookups), and `ls -l`, told by the first file that SELinux
/// labels are not supported (no `--enable-selinux`), stops asking for them.
#[test]
fn listing_a_large_directory_costs_no_round_trip_per_entry() {
    require_fuse!();
    const FILES: usize = 600;
    let vol = Volume::new(&[]);
    let w = vol.mount("w", &[]);
    fs::create_dir(w.path("big")).unwrap();
    for i in 0..FILES {
        fs::write(w.path(&format!("big/f{i:04}")), b"x").unwrap();
    }
    w.unmount();
    let counts = |m: &Mount| {
        let text = scrape(m);
        let op = |name: &str| {
            metric(
                &text,
                "nectar_fuse_op_duration_seconds_count",
                &format!("op=\"{name}\""),
            ) as usize
        };
        let reads = metric(
            &text,
            "nectar_meta_txn_duration_seconds_count",
            "kind=\"read\"",
        ) as usize;
        (op("lookup"), op("getxattr"), op("readdir"), reads)
    };
    for tool in [
        &["ls", "-l", "{}"][..],
        &["find", "{}", "-ls"],
        &["rm", "-rf", "{}"],
    ] {
        // A fresh mount: nothing of the directory is in the kernel's caches.
        let m = vol.mount("r", &["--metrics", "127.0.0.1:0"]);
        let before = counts(&m);
        let dir = m.path("big");
        let args = tool[1..].iter().map(|a| {
            if *a == "{}" {
                dir.as_os_str()
            } else {
                a.as_ref()
            }
        });
        let out = Command::new(tool[0]).args(args).output().unwrap();
        assert!(out.status.success(), "{tool:?}: {out:?}");
        let after = counts(&m);
        let (lookups, getxattrs, plain_pages, reads) = (
            after.0 - before.0,
            after.1 - before.1,
            after.2 - before.2,
            after.3 - before.3,
        );
        assert_eq!(plain_pages, 0, "{tool:?}: every page is a READDIRPLUS");
        assert!(lookups < 5, "{tool:?}: {lookups} lookups");
        assert!(getxattrs < 5, "{tool:?}: {getxattrs} getxattr requests");
        assert!(
            reads < 30,
            "{tool:?}: {reads} metadata reads for {FILES} entries ({getxattrs} getxattr calls)"
        );
        m.unmount();
    }
    let m = vol.mount("check", &[]);
    assert!(!m.path("big").exists(), "rm -rf removed the directory");
    m.unmount();
}
