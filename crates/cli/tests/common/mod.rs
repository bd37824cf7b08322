//! Harness for tests that mount the real `nectar` binary through FUSE.
//!
//! A [`Mount`] unmounts (forcefully if needed) and kills its process when dropped, so a
//! failing assertion never leaves a hung mount behind for the next test.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_nectar");

/// Why mount tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("mount tests need root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    if Command::new("fusermount3").arg("-V").output().is_err() {
        return Some("fusermount3 is not installed (apt-get install fuse3)".into());
    }
    None
}

/// Returns early from a test that cannot run here, saying why.
#[macro_export]
macro_rules! require_fuse {
    () => {
        if let Some(why) = common::skip_reason() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// Returns from the test when fio is not installed, saying so; in CI, where
/// scripts/install-deps.sh installs it, a missing fio fails the test instead.
#[macro_export]
macro_rules! require_fio {
    () => {
        if std::process::Command::new("fio")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var("CI").is_err(),
                "fio is missing in CI (scripts/install-deps.sh installs it)"
            );
            eprintln!("skipped: fio is not installed (apt-get install fio)");
            return;
        }
    };
}

pub fn nectar(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run nectar")
}

pub fn nectar_ok(args: &[&str]) -> Output {
    let out = nectar(args);
    assert!(
        out.status.success(),
        "nectar {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A formatted volume on SQLite + a local directory in a temporary directory.
pub struct Volume {
    pub dir: tempfile::TempDir,
    pub meta_url: String,
}

impl Volume {
    pub fn new(extra: &[&str]) -> Volume {
        let dir = tempfile::tempdir().unwrap();
        let meta_url = format!("sqlite3://{}/meta.db", dir.path().display());
        Self::format(dir, meta_url, extra)
    }

    /// A volume in the database at `url` (wiped first: give it an [`isolated_url`]),
    /// with its bucket in a temporary directory.
    pub fn on(url: &str, extra: &[&str]) -> Volume {
        wipe_volume(url);
        Self::format(tempfile::tempdir().unwrap(), url.to_string(), extra)
    }

    fn format(dir: tempfile::TempDir, meta_url: String, extra: &[&str]) -> Volume {
        let bucket = dir.path().join("data");
        let mut args = vec![
            "format",
            &meta_url,
            "testvol",
            "--bucket",
            bucket.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        nectar_ok(&args);
        Volume { dir, meta_url }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn mount(&self, name: &str, extra: &[&str]) -> Mount {
        Mount::start(&self.meta_url, &self.path(name), extra)
    }
}

pub fn is_mounted(mp: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let target = mp.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(target))
}

pub struct Mount {
    pub mp: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Mount {
    /// Mounts in the foreground as a child process and waits until the mount is live.
    /// The disk cache goes next to the mount point (`<mp>.cache`), so it goes with the
    /// test's temporary directory, unless `extra` names one.
    pub fn start(meta_url: &str, mp: &Path, extra: &[&str]) -> Mount {
        std::fs::create_dir_all(mp).unwrap();
        let log = mp.with_extension("log");
        let logf = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("mount").arg(meta_url).arg(mp).args(extra);
        if !extra.contains(&"--cache-dir") {
            cmd.arg("--cache-dir").arg(mp.with_extension("cache"));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("start nectar mount");
        let mut m = Mount {
            mp: mp.to_path_buf(),
            child: Some(child),
            log,
        };
        m.wait_ready();
        m
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_mounted(&self.mp) {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("mount exited ({status}): {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "mount not ready: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.mp.join(p)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Unmounts cleanly and waits for the process; returns its log.
    pub fn unmount(mut self) -> String {
        let out = nectar(&["umount", self.mp.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "umount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status = wait_exit(self.child.as_mut().unwrap(), Duration::from_secs(30));
        assert!(
            status.success(),
            "mount process failed: {}",
            self.log_text()
        );
        self.child = None;
        self.log_text()
    }
}

/// Fetches the mount's metrics over HTTP, from the address its log names.
pub fn scrape(m: &Mount) -> String {
    use std::io::{Read, Write};
    let log = m.log_text();
    let url = log
        .split("metrics are served at http://")
        .nth(1)
        .and_then(|rest| rest.split("/metrics").next())
        .unwrap_or_else(|| panic!("no metrics address in the log: {log}"));
    let mut conn = std::net::TcpStream::connect(url).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

/// The sum of the series `name` whose labels contain `label` (one scrape).
pub fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

pub fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_mounted(&self.mp) {
            let _ = Command::new(BIN)
                .args(["umount", "--force"])
                .arg(&self.mp)
                .output();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A fast deterministic byte stream (xorshift), to write and verify big files.
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Self {
        Pattern(seed | 1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// The META-URLs of the database servers given in NECTAR_TEST_META_URLS (CI starts
/// them), or why there are none.
pub fn server_meta_urls() -> Result<Vec<String>, String> {
    let urls = std::env::var("NECTAR_TEST_META_URLS").unwrap_or_default();
    if urls.trim().is_empty() {
        return Err("NECTAR_TEST_META_URLS is not set (scripts/test.sh starts the servers)".into());
    }
    Ok(urls.split_whitespace().map(str::to_string).collect())
}

/// `url` changed so that the volume lives apart from every other volume on the same
/// server: its own key prefix (Redis), table (PostgreSQL, MySQL) or path prefix (etcd,
/// TiKV). `tag` must be unique to the test (letters, digits, '_'). `None` for an engine
/// that cannot be isolated this way.
pub fn isolated_url(url: &str, tag: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let with_option = |name: &str, value: &str| {
        let (base, fragment) = match url.split_once('#') {
            Some((b, f)) => (b, format!("#{f}")),
            None => (url, String::new()),
        };
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}{name}={value}{fragment}")
    };
    match scheme {
        "redis" | "rediss" => Some(with_option("prefix", &format!("{tag}:"))),
        "postgres" | "postgresql" | "mysql" => Some(with_option("table", &format!("nectar_{tag}"))),
        "etcd" | "tikv" => {
            let (path_part, query) = match rest.split_once('?') {
                Some((p, q)) => (p, format!("?{q}")),
                None => (rest, String::new()),
            };
            let (authority, path) = path_part.split_once('/').unwrap_or((path_part, ""));
            let path = path.trim_end_matches('/');
            let path = if path.is_empty() {
                format!("nectar-{tag}")
            } else {
                format!("{path}-{tag}")
            };
            Some(format!("{scheme}://{authority}/{path}{query}"))
        }
        "sqlite3" | "sqlite" | "memory" => Some(url.to_string()),
        _ => None,
    }
}

/// Deletes every key of the volume at `url` (a test's own isolated volume).
pub fn wipe_volume(url: &str) {
    let m =
        nectar_meta::Meta::connect(url).unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    m.kv()
        .reset()
        .unwrap_or_else(|e| panic!("cannot wipe the volume at {url}: {e}"));
}

/// What `nectar status` says: used space, used inodes, sessions.
pub fn status_usage(url: &str) -> (u64, u64, usize) {
    let out = nectar_ok(&["status", url]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "nectar status printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (
        v["Usage"]["UsedSpace"].as_u64().unwrap(),
        v["Usage"]["UsedInodes"].as_u64().unwrap(),
        v["Sessions"].as_array().map_or(0, |s| s.len()),
    )
}

/// Used space and used inodes as `statfs(2)` on a mount reports them.
pub fn statfs_usage(mp: &Path) -> (u64, u64) {
    let c = std::ffi::CString::new(mp.to_str().unwrap()).unwrap();
    // SAFETY: a valid path and a zeroed struct for the kernel to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0, "statfs");
    (
        (st.f_blocks - st.f_bfree) * st.f_frsize,
        st.f_files - st.f_ffree,
    )
}

/// Space the volume charges a file of `len` bytes (JuiceFS's rule): its length rounded
/// up to 4 KiB, and at least 4 KiB; directories count 4 KiB.
pub fn charged_space(len: u64) -> u64 {
    len.div_ceil(4096).max(1) * 4096
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Runs a shell command as `uid` (gid the same, no supplementary groups).
pub fn as_user(uid: u32, script: &str) -> Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap()
}

/// Lets other users reach the volume's directory and write in the mount's root; returns
/// a copy of the nectar binary they can run (the checkout may not be readable to them).
pub fn open_to_all(vol: &Volume, m: &Mount) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(vol.path(""), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&m.mp, std::fs::Permissions::from_mode(0o777)).unwrap();
    let bin = vol.path("nectar-for-users");
    if !bin.exists() {
        std::fs::copy(BIN, &bin).unwrap();
    }
    bin
}
