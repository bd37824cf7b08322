//! Object storage that fails, on real mounts of a real S3 server (SeaweedFS, from
//! `scripts/start-seaweedfs.sh`):
//! - behind a proxy that answers one request in ten with 503 SlowDown and holds one in
//!   twenty past the mount's `--put-timeout`/`--get-timeout`, files are written and read
//!   back intact and the mount keeps working;
//! - a private server killed (SIGKILL) and started again in the middle of a write: the
//!   write waits (within `--io-retries`) and nothing is lost;
//! - a store that stays down: `fsync` fails with EIO instead of reporting success, and
//!   what was written before is intact once the store is back.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The S3 server given by NECTAR_TEST_S3 (a bucket URL) and its keys, or why not.
fn s3_env() -> Option<(String, String, String)> {
    let Some(url) = std::env::var("NECTAR_TEST_S3")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!(
            "skipped: NECTAR_TEST_S3 is not set (scripts/start-seaweedfs.sh starts a server)"
        );
        return None;
    };
    let ak = std::env::var("NECTAR_TEST_S3_ACCESS_KEY").unwrap_or_default();
    let sk = std::env::var("NECTAR_TEST_S3_SECRET_KEY").unwrap_or_default();
    Some((url, ak, sk))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The faulty proxy (`tests/scripts/faulty-s3-proxy.py`), killed when dropped.
struct Proxy {
    child: Child,
    port: u16,
    control: PathBuf,
    log: PathBuf,
}

impl Proxy {
    fn start(dir: &Path, upstream: u16) -> Proxy {
        let port = free_port();
        let control = dir.join("faults");
        let log = dir.join("proxy.log");
        std::fs::write(&control, "0 0 0").unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/faulty-s3-proxy.py");
        let child = Command::new("python3")
            .arg(script)
            .args([port.to_string(), upstream.to_string()])
            .arg(&control)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_for_port(port);
        Proxy {
            child,
            port,
            control,
            log,
        }
    }

    /// Fails `fail` of the requests and holds `slow` of them for `delay`.
    fn faults(&self, fail: f64, slow: f64, delay: Duration) {
        std::fs::write(
            &self.control,
            format!("{fail} {slow} {}", delay.as_millis()),
        )
        .unwrap();
    }

    /// The last "served N failed F slowed S" counts the proxy logged.
    fn counts(&self) -> (u64, u64, u64) {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let Some(last) = log.lines().rev().find(|l| l.starts_with("served")) else {
            return (0, 0, 0);
        };
        let n: Vec<u64> = last
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        (n[0], n[1], n[2])
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `http://127.0.0.1:PORT/bucket` -> (PORT, "bucket").
fn split_bucket(url: &str) -> (u16, String) {
    let rest = url
        .strip_prefix("http://127.0.0.1:")
        .expect("a loopback S3 URL");
    let (port, bucket) = rest.split_once('/').unwrap();
    (
        port.parse().unwrap(),
        bucket.trim_end_matches('/').to_string(),
    )
}

fn format_s3(url: &str, name: &str, bucket: &str, ak: &str, sk: &str) {
    let out = Command::new(BIN)
        .args(["format", url, name, "--storage", "s3", "--bucket", bucket])
        .args(["--trash-days", "0"])
        .env("ACCESS_KEY", ak)
        .env("SECRET_KEY", sk)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "format: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A volume named `name` (made unique) whose bucket is `bucket` seen through a new
/// [`Proxy`] (faults off); returns the proxy and the volume's META-URL.
fn behind_proxy(dir: &Path, name: &str, bucket: &str, ak: &str, sk: &str) -> (Proxy, String) {
    let (upstream, bucket_name) = split_bucket(bucket);
    let proxy = Proxy::start(dir, upstream);
    let url = format!("sqlite3://{}/meta.db", dir.display());
    let through = format!("http://127.0.0.1:{}/{bucket_name}", proxy.port);
    format_s3(
        &url,
        &format!("{name}{}", std::process::id()),
        &through,
        ak,
        sk,
    );
    (proxy, url)
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Pattern::new(seed).fill(&mut v);
    v
}

#[test]
fn a_store_failing_one_request_in_ten_loses_nothing() {
    require_fuse!();
    let Some((bucket, ak, sk)) = s3_env() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (proxy, url) = behind_proxy(dir.path(), "faulty", &bucket, &ak, &sk);
    let timeouts = [
        "--get-timeout",
        "2",
        "--put-timeout",
        "2",
        "--cache-size",
        "0",
    ];
    let m = Mount::start(&url, &dir.path().join("mnt"), &timeouts);
    proxy.faults(0.1, 0.05, Duration::from_secs(4));

    let big = pattern(1, 48 << 20);
    std::fs::write(m.path("big"), &big).unwrap();
    std::fs::create_dir(m.path("small")).unwrap();
    for i in 0..200u64 {
        std::fs::write(m.path(&format!("small/{i}")), pattern(i + 10, 3000)).unwrap();
    }
    let log = m.unmount();
    assert!(!log.contains("panicked"), "{log}");

    // A new mount, still on the faulty store, reads everything back.
    let m = Mount::start(&url, &dir.path().join("mnt2"), &timeouts);
    assert!(std::fs::read(m.path("big")).unwrap() == big, "big differs");
    for i in 0..200u64 {
        assert_eq!(
            std::fs::read(m.path(&format!("small/{i}"))).unwrap(),
            pattern(i + 10, 3000),
            "small/{i}"
        );
    }
    m.unmount();
    let (served, failed, slowed) = proxy.counts();
    eprintln!("proxy: served {served}, failed {failed}, slowed {slowed}");
    assert!(
        failed >= 10 && slowed >= 3,
        "too few faults to mean anything"
    );
}

/// A private SeaweedFS of `scripts/start-seaweedfs.sh`, stopped when dropped.
struct Seaweed {
    dir: PathBuf,
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(name)
}

impl Seaweed {
    fn start(dir: &Path, port: u16) -> Seaweed {
        let out = Command::new(script("start-seaweedfs.sh"))
            .arg(dir)
            .arg(port.to_string())
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "start-seaweedfs.sh failed");
        Seaweed {
            dir: dir.to_path_buf(),
        }
    }

    /// Kills the server with SIGKILL, as a crash would.
    fn kill(&self) {
        let pid = std::fs::read_to_string(self.dir.join("weed.pid")).unwrap();
        let pid: i32 = pid.trim().parse().unwrap();
        // SAFETY: kill has no memory effects; the PID is the server's own.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        while std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_file(self.dir.join("weed.pid"));
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        let _ = Command::new(script("stop-seaweedfs.sh"))
            .arg(&self.dir)
            .output();
    }
}

/// A port P such that P..P+4 and P+10000..P+10004 are free (SeaweedFS's five servers
/// and their gRPC ports).
fn seaweed_port() -> u16 {
    let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
    (18400..20000)
        .step_by(7)
        .find(|&p| (0..5).all(|o| free(p + o) && free(p + 10_000 + o)))
        .expect("no free ports for a private SeaweedFS")
}

#[test]
fn a_store_killed_and_restarted_under_a_writer_loses_nothing() {
    require_fuse!();
    let Some((_, ak, sk)) = s3_env() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = seaweed_port();
    let weed = Seaweed::start(&dir.path().join("weed"), port);
    let url = format!("sqlite3://{}/meta.db", dir.path().display());
    format_s3(
        &url,
        "restarted",
        &format!("http://127.0.0.1:{port}/nectar-test"),
        &ak,
        &sk,
    );
    let m = Mount::start(&url, &dir.path().join("mnt"), &["--cache-size", "0"]);
    let data = pattern(3, 64 << 20);
    let source = dir.path().join("source");
    std::fs::write(&source, &data).unwrap();
    let started = Instant::now();
    // The writer is a process of its own: this test starts and stops the server with
    // commands, and a forked child closes the parent's descriptors at exec, which on a
    // FUSE file means a flush that waits for the store.
    let mut writer = Command::new("dd")
        .arg(format!("if={}", source.display()))
        .arg(format!("of={}", m.path("file").display()))
        .args(["bs=1M", "conv=fsync", "status=none"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while std::fs::metadata(m.path("file")).map_or(0, |m| m.len()) < 16 << 20 {
        assert!(
            writer.try_wait().unwrap().is_none(),
            "the writer stopped early"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    weed.kill();
    assert!(
        writer.try_wait().unwrap().is_none(),
        "the write ended before the store went down"
    );
    std::thread::sleep(Duration::from_secs(3));
    let again = Seaweed::start(&dir.path().join("weed"), port);
    std::mem::forget(again); // `weed` stops it at the end
    let out = writer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dd (fsync after the store came back): {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        m.log_text()
    );
    eprintln!(
        "64 MiB written across a restart of the store in {:?}",
        started.elapsed()
    );
    m.unmount();
    let m = Mount::start(&url, &dir.path().join("mnt2"), &["--cache-size", "0"]);
    assert!(
        std::fs::read(m.path("file")).unwrap() == data,
        "the file differs"
    );
    m.unmount();
}

#[test]
fn a_store_that_stays_down_fails_fsync_with_eio() {
    require_fuse!();
    let Some((bucket, ak, sk)) = s3_env() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (proxy, url) = behind_proxy(dir.path(), "down", &bucket, &ak, &sk);
    let opts = ["--io-retries", "2", "--cache-size", "0"];
    let m = Mount::start(&url, &dir.path().join("mnt"), &opts);
    let before = pattern(4, 5 << 20);
    std::fs::write(m.path("before"), &before).unwrap();

    proxy.faults(1.0, 0.0, Duration::ZERO);
    let mut f = std::fs::File::create(m.path("during")).unwrap();
    f.write_all(&pattern(5, 8 << 20)).unwrap();
    let err = f
        .sync_all()
        .expect_err("fsync succeeded while the store was down");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    drop(f);
    proxy.faults(0.0, 0.0, Duration::ZERO);
    let log = m.unmount();
    assert!(!log.contains("panicked"), "{log}");

    let m = Mount::start(&url, &dir.path().join("mnt2"), &opts);
    assert!(
        std::fs::read(m.path("before")).unwrap() == before,
        "earlier data damaged"
    );
    m.unmount();
}
