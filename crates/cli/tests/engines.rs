//! The metadata engines under real load and real failures, through real mounts.
//!
//! - `many_writers_on_every_engine`: four mounts of one volume, one writer process on
//!   each, all creating, writing, renaming (also over each other's names) and deleting in
//!   one shared directory; then the exact tree, the content of every file, and exact usage
//!   counters once every client has unmounted. SQLite always, plus every server in
//!   NECTAR_TEST_META_URLS.
//! - `*_outage_is_ridden_out`: a private database server on its own port is stopped under
//!   a live mount. An operation started meanwhile waits and succeeds when the server comes
//!   back within `--meta-retry-timeout`; with the server away longer it fails with EIO and
//!   one log line; afterwards the same mount works again.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Many writers
// ---------------------------------------------------------------------------------------

const WORKERS: usize = 4;
/// Each round, a worker creates six files and does one kind of change to each.
const ROUNDS: usize = 24;
const FILES: usize = ROUNDS * 6;
const WORKER_ENV: &str = "NECTAR_ENGINES_WORKER";
const WORKER_DIR_ENV: &str = "NECTAR_ENGINES_DIR";

/// What a worker does to its file `i` after writing it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Change {
    Keep,
    /// To a name of its own.
    Rename,
    Delete,
    /// Over `shared-K`, a name every worker renames a file over.
    RenameShared(usize),
    /// Truncate and write other content.
    Rewrite,
    Append,
}

fn change(i: usize) -> Change {
    match i % 6 {
        0 => Change::Keep,
        1 => Change::Rename,
        2 => Change::Delete,
        3 => Change::RenameShared(i / 6),
        4 => Change::Rewrite,
        _ => Change::Append,
    }
}

/// Content number `v` (0 written first, 1 rewritten, 2 appended) of file `i` of worker
/// `w`: sizes from empty to ~150 KB, different for every worker.
fn content(w: usize, i: usize, v: usize) -> Vec<u8> {
    let len = if (w + i).is_multiple_of(11) && v == 0 {
        0
    } else {
        (w * 7919 + i * 104_729 + v * 35_711) % 150_000 + 1
    };
    let mut buf = vec![0u8; len];
    Pattern::new(((w as u64) << 40) | ((i as u64) << 8) | v as u64).fill(&mut buf);
    buf
}

/// The files worker `w` leaves with names of its own, and their content.
fn own_files(w: usize) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for i in 0..FILES {
        let name = format!("w{w}-{i}");
        match change(i) {
            Change::Keep => {
                out.insert(name, content(w, i, 0));
            }
            Change::Rename => {
                out.insert(format!("{name}-moved"), content(w, i, 0));
            }
            Change::Delete | Change::RenameShared(_) => {}
            Change::Rewrite => {
                out.insert(name, content(w, i, 1));
            }
            Change::Append => {
                let mut c = content(w, i, 0);
                c.extend_from_slice(&content(w, i, 2));
                out.insert(name, c);
            }
        }
    }
    out
}

/// One writer's plan, run in its own process on its own mount (see `worker_process`).
fn run_worker(w: usize, dir: &Path) {
    for i in 0..FILES {
        let name = format!("w{w}-{i}");
        let path = dir.join(&name);
        let data = content(w, i, 0);
        fs::write(&path, &data).unwrap_or_else(|e| panic!("worker {w}: write {name}: {e}"));
        match change(i) {
            Change::Keep => {
                // Read back through this mount.
                assert_eq!(fs::read(&path).unwrap(), data, "worker {w}: {name}");
            }
            Change::Rename => fs::rename(&path, dir.join(format!("{name}-moved")))
                .unwrap_or_else(|e| panic!("worker {w}: rename {name}: {e}")),
            Change::Delete => {
                fs::remove_file(&path).unwrap_or_else(|e| panic!("worker {w}: unlink {name}: {e}"))
            }
            Change::RenameShared(k) => fs::rename(&path, dir.join(format!("shared-{k}")))
                .unwrap_or_else(|e| panic!("worker {w}: rename {name} over shared-{k}: {e}")),
            Change::Rewrite => fs::write(&path, content(w, i, 1))
                .unwrap_or_else(|e| panic!("worker {w}: rewrite {name}: {e}")),
            Change::Append => {
                let mut f = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap_or_else(|e| panic!("worker {w}: open {name} to append: {e}"));
                f.write_all(&content(w, i, 2))
                    .unwrap_or_else(|e| panic!("worker {w}: append to {name}: {e}"));
            }
        }
    }
}

/// Not a test of its own: the entry point of a writer process that
/// `many_writers_on_every_engine` starts (this test binary again, with the worker's
/// number and directory in the environment). Does nothing when run as a test.
#[test]
fn worker_process() {
    let (Ok(w), Ok(dir)) = (std::env::var(WORKER_ENV), std::env::var(WORKER_DIR_ENV)) else {
        return;
    };
    run_worker(w.parse().unwrap(), Path::new(&dir));
}

#[test]
fn many_writers_on_every_engine() {
    require_fuse!();
    let dir = tempfile::tempdir().unwrap();
    writers_on(
        &format!("sqlite3://{}/meta.db", dir.path().display()),
        false,
    );
    match server_meta_urls() {
        Err(why) => eprintln!("servers skipped: {why}"),
        Ok(urls) => {
            for url in urls {
                // A fixed name: a run wipes what an aborted run left.
                let Some(own) = isolated_url(&url, "engines_writers") else {
                    eprintln!("skipped {url}: no way to give this test its own volume there");
                    continue;
                };
                writers_on(&own, true);
            }
        }
    }
}

/// Wipes a test's own volume on a shared server when the test ends, passed or not.
struct Wipe(String);

impl Drop for Wipe {
    fn drop(&mut self) {
        if let Ok(m) = nectar_meta::Meta::connect(&self.0) {
            let _ = m.kv().reset();
        }
    }
}

fn writers_on(url: &str, server: bool) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let _wipe = server.then(|| {
        wipe_volume(url);
        Wipe(url.to_string())
    });
    let bucket = dir.path().join("data");
    nectar_ok(&[
        "format",
        url,
        "writers",
        "--bucket",
        bucket.to_str().unwrap(),
    ]);
    let mounts: Vec<Mount> = (0..WORKERS)
        .map(|i| Mount::start(url, &dir.path().join(format!("m{i}")), &[]))
        .collect();
    fs::create_dir(mounts[0].path("shared")).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut workers: Vec<_> = mounts
        .iter()
        .enumerate()
        .map(|(w, m)| {
            let child = Command::new(&exe)
                .args(["worker_process", "--exact", "--nocapture", "--quiet"])
                .env(WORKER_ENV, w.to_string())
                .env(WORKER_DIR_ENV, m.path("shared"))
                .stdout(Stdio::null())
                .stderr(fs::File::create(dir.path().join(format!("worker{w}.log"))).unwrap())
                .spawn()
                .unwrap();
            (w, child)
        })
        .collect();
    for (w, child) in &mut workers {
        let status = wait_exit(child, Duration::from_secs(600));
        assert!(
            status.success(),
            "worker {w} on {url} failed ({status}):\n{}\nmount log:\n{}",
            fs::read_to_string(dir.path().join(format!("worker{w}.log"))).unwrap_or_default(),
            mounts[*w].log_text()
        );
    }
    let work_time = started.elapsed();
    for m in mounts {
        m.unmount();
    }

    // The counters, with every client gone: only what was written to the database.
    let (used, inodes, sessions) = status_usage(url);
    assert_eq!(sessions, 0, "sessions left on {url}");

    // The tree and every file's content, through a fresh mount.
    let m = Mount::start(url, &dir.path().join("check"), &[]);
    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for w in 0..WORKERS {
        expected.extend(own_files(w));
    }
    let mut names: Vec<String> = fs::read_dir(m.path("shared"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut want: Vec<String> = expected.keys().cloned().collect();
    want.extend((0..ROUNDS).map(|k| format!("shared-{k}")));
    want.sort();
    assert_eq!(names, want, "the shared directory on {url}");
    let mut space = 2 * charged_space(0); // the root and the shared directory
    for name in &names {
        let got = fs::read(m.path(&format!("shared/{name}"))).unwrap();
        let crc = crc32fast::hash(&got);
        match expected.get(name) {
            Some(want) => assert!(
                got.len() == want.len() && crc == crc32fast::hash(want),
                "{name} on {url}: {} bytes, crc {crc:08x}; want {} bytes, crc {:08x}",
                got.len(),
                want.len(),
                crc32fast::hash(want)
            ),
            None => {
                // shared-K holds the file of whichever worker renamed last, whole.
                let k: usize = name.strip_prefix("shared-").unwrap().parse().unwrap();
                assert!(
                    (0..WORKERS).any(|w| content(w, k * 6 + 3, 0) == got),
                    "{name} on {url} ({} bytes, crc {crc:08x}) is no worker's file",
                    got.len()
                );
            }
        }
        space += charged_space(got.len() as u64);
    }
    // What the workers removed and replaced is in the trash (on by default): its hour
    // directories and every entry count as well.
    let mut trashed = 0;
    for hour in fs::read_dir(m.path(".trash")).unwrap() {
        let hour = hour.unwrap();
        space += charged_space(0);
        trashed += 1;
        for e in fs::read_dir(hour.path()).unwrap() {
            let meta = e.unwrap().metadata().unwrap();
            space += charged_space(if meta.is_file() { meta.len() } else { 0 });
            trashed += 1;
        }
    }
    assert!(trashed > 1, "removed files are in the trash on {url}");
    let want_inodes = 2 + names.len() as u64 + trashed;
    assert_eq!(
        (used, inodes),
        (space, want_inodes),
        "usage counters on {url} after every client unmounted (used space, inodes)"
    );
    assert_eq!(
        statfs_usage(&m.mp),
        (space, want_inodes),
        "statfs of a fresh mount on {url}"
    );
    m.unmount();
    eprintln!(
        "{url}: {WORKERS} writers x {FILES} files in {:.1} s, whole check {:.1} s",
        work_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------
// A database that goes away
// ---------------------------------------------------------------------------------------

const RETRY_TIMEOUT_SECS: u64 = 20;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Redis,
    Postgres,
    Etcd,
    MariaDb,
}

impl Kind {
    fn script(self) -> &'static str {
        match self {
            Kind::Redis => "redis",
            Kind::Postgres => "postgres",
            Kind::Etcd => "etcd",
            Kind::MariaDb => "mariadb",
        }
    }

    /// Why this server cannot be started here, if it cannot.
    fn missing(self) -> Option<String> {
        let in_path = |b: &str| {
            std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(b).is_file()))
                || Path::new("/usr/sbin").join(b).is_file()
        };
        let found = match self {
            Kind::Redis => in_path("redis-server") && in_path("redis-cli"),
            Kind::Postgres => fs::read_dir("/usr/lib/postgresql")
                .is_ok_and(|d| d.flatten().any(|v| v.path().join("bin/postgres").is_file())),
            Kind::Etcd => in_path("etcd"),
            Kind::MariaDb => in_path("mariadbd") || in_path("mysqld"),
        };
        (!found).then(|| format!("no {} server binaries installed", self.script()))
    }
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

/// A port on 127.0.0.1 that is free now, and so is the next one (etcd's peer port).
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Below the kernel's range for outgoing connections (32768 and up by default), so
    // no client's connection can take the port between the check and the server's
    // bind; each test gets its own pair, never handed out twice.
    static NEXT: AtomicU16 = AtomicU16::new(21000);
    loop {
        let p = NEXT.fetch_add(2, Ordering::SeqCst);
        assert!(p < 32000, "no free port pair on 127.0.0.1 below 32000");
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
        {
            return p;
        }
    }
}

/// A database server of this test's own, in a temporary directory, on its own port.
/// Dropping it stops the server.
struct PrivateServer {
    kind: Kind,
    dir: PathBuf,
    port: u16,
    _tmp: tempfile::TempDir,
}

impl PrivateServer {
    fn new(kind: Kind) -> PrivateServer {
        let tmp = tempfile::tempdir().unwrap();
        // Servers that run as their own user must reach their directory.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        PrivateServer {
            kind,
            dir: tmp.path().join(kind.script()),
            port: free_port(),
            _tmp: tmp,
        }
    }

    /// Starts (or restarts) the server and returns its META-URL.
    fn start(&self) -> String {
        let mut cmd = Command::new("bash");
        cmd.arg(scripts().join(format!("start-{}.sh", self.kind.script())))
            .arg(&self.dir);
        if self.kind == Kind::Redis {
            cmd.arg("standalone");
        }
        let out = cmd.arg(self.port.to_string()).output().unwrap();
        assert!(
            out.status.success(),
            "start-{}.sh failed: {}",
            self.kind.script(),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find(|l| l.starts_with("export "))
            .unwrap_or_else(|| panic!("no export line from start-{}.sh", self.kind.script()));
        line.split_once('=')
            .unwrap()
            .1
            .trim_matches('\'')
            .to_string()
    }

    /// Stops the server; its data stays for the restart.
    fn stop(&self) {
        if self.kind == Kind::Redis {
            // The test servers run without persistence: save what they hold and exit in
            // one step (a SAVE followed by SIGTERM loses a write acknowledged between
            // the two, such as a usage-counter flush).
            let out = Command::new("redis-cli")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "shutdown",
                    "save",
                ])
                .output()
                .unwrap();
            assert!(
                !String::from_utf8_lossy(&out.stdout).contains("ERR"),
                "redis SHUTDOWN SAVE: {out:?}"
            );
            // Until the exiting process is reaped, the stop script would take it for
            // some other process.
            let pids: Vec<i32> = fs::read_dir(&self.dir)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".pid"))
                .filter_map(|e| fs::read_to_string(e.path()).ok()?.trim().parse().ok())
                .collect();
            let deadline = Instant::now() + Duration::from_secs(10);
            // SAFETY: signal 0 only checks that the process exists.
            while pids.iter().any(|&p| unsafe { libc::kill(p, 0) } == 0) {
                assert!(
                    Instant::now() < deadline,
                    "redis did not exit after SHUTDOWN"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let out = Command::new("bash")
            .arg(scripts().join(format!("stop-{}.sh", self.kind.script())))
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "stop-{}.sh failed: {}",
            self.kind.script(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(scripts().join(format!("stop-{}.sh", self.kind.script())))
            .arg(&self.dir)
            .output();
    }
}

/// Runs `op` on a thread; returns its handle and when it started.
fn in_background<T: Send + 'static>(
    op: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<(T, Duration)> {
    std::thread::spawn(move || {
        let t = Instant::now();
        let r = op();
        (r, t.elapsed())
    })
}

fn join_within<T>(h: std::thread::JoinHandle<T>, limit: Duration, what: &str) -> T {
    let deadline = Instant::now() + limit;
    while !h.is_finished() {
        assert!(
            Instant::now() < deadline,
            "{what} still hangs after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    h.join().unwrap()
}

fn outage(kind: Kind) {
    require_fuse!();
    if let Some(why) = kind.missing() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but {why}");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let started = Instant::now();
    let server = PrivateServer::new(kind);
    let url = server.start();
    let redacted = nectar_meta::redact_url(&url);
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("data");
    nectar_ok(&[
        "format",
        &url,
        "outage",
        "--bucket",
        bucket.to_str().unwrap(),
    ]);
    let timeout = RETRY_TIMEOUT_SECS.to_string();
    let m = Mount::start(
        &url,
        &dir.path().join("mnt"),
        &["--meta-retry-timeout", &timeout],
    );
    let before: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(m.path("before"), &before).unwrap();
    fs::create_dir(m.path("d")).unwrap();

    // 1. The server goes away and comes back within the retry timeout: an operation
    //    started meanwhile waits for it and succeeds.
    server.stop();
    let during: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8 ^ 0x5a).collect();
    let op = {
        let (path, data) = (m.path("d/during"), during.clone());
        in_background(move || fs::write(path, data))
    };
    // Short, so a server slow to restart on a loaded machine still has most of the
    // retry timeout to come back in.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !op.is_finished(),
        "the write finished while the server was down: {:?}",
        op.join().unwrap()
    );
    let down = Instant::now();
    server.start();
    eprintln!(
        "{kind:?}: restarted in {:.1} s",
        down.elapsed().as_secs_f64()
    );
    let (res, took) = join_within(op, Duration::from_secs(90), "the write");
    res.unwrap_or_else(|e| {
        panic!(
            "the write failed although the server came back: {e}\n{}",
            m.log_text()
        )
    });
    eprintln!(
        "{kind:?}: write waited {:.1} s for the server",
        took.as_secs_f64()
    );
    assert_eq!(fs::read(m.path("d/during")).unwrap(), during);
    assert_eq!(fs::read(m.path("before")).unwrap(), before);

    // 2. The server stays away longer than the retry timeout: the operation fails with
    //    EIO and the log says what happened and what to raise.
    server.stop();
    let op = {
        let path = m.path("d/doomed");
        in_background(move || fs::File::create(path).map(|_| ()))
    };
    let (res, took) = join_within(
        op,
        Duration::from_secs(RETRY_TIMEOUT_SECS + 60),
        "the create",
    );
    let e = res.expect_err("a create succeeded with the server down");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(
        took >= Duration::from_secs(RETRY_TIMEOUT_SECS - 1),
        "the create gave up after {took:?}, before the retry timeout"
    );
    eprintln!(
        "{kind:?}: create failed with EIO after {:.1} s",
        took.as_secs_f64()
    );
    let log = m.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("did not answer for") && l.contains("--meta-retry-timeout"))
        .unwrap_or_else(|| panic!("no give-up line in the mount log:\n{log}"));
    assert!(
        line.contains(&redacted) && line.contains("WARN"),
        "the give-up line names neither the URL {redacted} nor its level: {line}"
    );
    assert!(
        !log.contains("nectar:nectar@"),
        "the log shows a password:\n{log}"
    );

    // 3. The server is back: the same mount works again.
    server.start();
    let after = b"written after the outage".to_vec();
    fs::write(m.path("d/after"), &after).unwrap_or_else(|e| {
        panic!(
            "the mount does not work after the server came back: {e}\n{}",
            m.log_text()
        )
    });
    assert_eq!(fs::read(m.path("d/after")).unwrap(), after);
    assert_eq!(fs::read(m.path("d/during")).unwrap(), during);
    let mut names: Vec<String> = fs::read_dir(m.path("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["after", "during"]);
    m.unmount();
    // Clean unmount after an outage: exact counters.
    let (used, inodes, sessions) = status_usage(&url);
    assert_eq!(sessions, 0);
    let files = [before.len(), during.len(), after.len()];
    let space: u64 =
        2 * charged_space(0) + files.iter().map(|l| charged_space(*l as u64)).sum::<u64>();
    assert_eq!(
        (used, inodes),
        (space, 5),
        "usage counters after the outage"
    );
    eprintln!(
        "{kind:?}: outage test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn redis_outage_is_ridden_out() {
    outage(Kind::Redis);
}

#[test]
fn postgres_outage_is_ridden_out() {
    outage(Kind::Postgres);
}

#[test]
fn etcd_outage_is_ridden_out() {
    outage(Kind::Etcd);
}

#[test]
fn mariadb_outage_is_ridden_out() {
    outage(Kind::MariaDb);
}
