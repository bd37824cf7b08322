//! `nectar warmup`: fills, empties or measures the cache of this node for files and
//! directories of a mounted volume.
//!
//! The mount does the work, so the blocks land in the cache of the client that reads
//! them: this command walks the paths through the mount (symbolic links are not
//! followed) and reads, for each regular file, a virtual xattr that makes the mount
//! warm, evict or check that file's blocks and answer with a [`CacheReport`]. `--threads`
//! files are in flight at once; the mount bounds the bytes in flight by its
//! `--buffer-size`. Reading the xattr needs read permission on the file, as reading
//! the file would.

use anyhow::{bail, Context, Result};
use clap::Args;
use nectar_vfs::{CacheReport, CHECK_XATTR, EVICT_XATTR, WARMUP_XATTR};
use parking_lot::Mutex;
use std::ffi::CString;
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct WarmupArgs {
    /// Files and directories inside a mounted volume (directories are walked).
    paths: Vec<PathBuf>,
    /// A file listing more paths, one per line.
    #[arg(short, long)]
    file: Option<PathBuf>,
    /// Files warmed at once.
    #[arg(short = 'p', long, default_value_t = 50)]
    threads: usize,
    /// Run in the background and return at once.
    #[arg(short, long)]
    background: bool,
    /// Drop the files' blocks from the cache instead.
    #[arg(long, conflicts_with = "check")]
    evict: bool,
    /// Only report how much of the files is cached.
    #[arg(long)]
    check: bool,
}

/// Totals over the files done so far.
#[derive(Default)]
struct Progress {
    files: AtomicU64,
    failed: AtomicU64,
    report: Mutex<CacheReport>,
    /// The first failures, to print at the end.
    errors: Mutex<Vec<String>>,
}

/// Failures printed at the end; the rest are only counted.
const MAX_ERRORS_SHOWN: usize = 20;
/// The answer of the mount is one short line.
const REPORT_CAP: usize = 256;

pub fn run(a: WarmupArgs) -> Result<()> {
    let mut roots = a.paths.clone();
    if let Some(list) = &a.file {
        let f = std::fs::File::open(list)
            .with_context(|| format!("cannot read the list of paths {}", list.display()))?;
        for line in std::io::BufReader::new(f).lines() {
            let line = line.with_context(|| format!("reading {}", list.display()))?;
            let line = line.trim();
            if !line.is_empty() {
                roots.push(PathBuf::from(line));
            }
        }
    }
    if roots.is_empty() {
        bail!("no path given: name files or directories inside a mounted volume, or --file LIST");
    }
    if a.threads == 0 {
        bail!("--threads must be at least 1 (default 50)");
    }
    let xattr = CString::new(if a.evict {
        EVICT_XATTR
    } else if a.check {
        CHECK_XATTR
    } else {
        WARMUP_XATTR
    })?;
    // Every root must be inside a mount, checked before anything runs (or detaches).
    for root in &roots {
        check_root(root)?;
    }
    if a.background {
        return detach();
    }

    let start = Instant::now();
    let progress = Progress::default();
    let done = AtomicBool::new(false);
    let (tx, rx) = mpsc::sync_channel::<PathBuf>(4 * a.threads);
    let rx = Mutex::new(rx);
    std::thread::scope(|s| {
        for _ in 0..a.threads {
            s.spawn(|| loop {
                let next = rx.lock().recv();
                let Ok(path) = next else { return };
                act_on(&path, &xattr, &progress);
            });
        }
        let show = std::io::stderr().is_terminal();
        if show {
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    show_progress(&progress, start, false);
                }
            });
        }
        for root in &roots {
            walk(root, &tx, &|p, e| failed(&progress, p, e));
        }
        drop(tx);
    });
    // The walker and the workers are done here (the scope joined them).
    done.store(true, Ordering::Relaxed);
    if std::io::stderr().is_terminal() {
        show_progress(&progress, start, true);
    }
    let errors = progress.errors.lock();
    for e in errors.iter() {
        eprintln!("nectar warmup: {e}");
    }
    println!("{}", summary(&a, &progress, start.elapsed()));
    let failed = progress.failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} paths failed");
    }
    Ok(())
}

/// Refuses a path that does not exist or is not inside a mounted Nectar volume.
fn check_root(root: &Path) -> Result<()> {
    std::fs::symlink_metadata(root).with_context(|| format!("{}", root.display()))?;
    let c = CString::new(root.as_os_str().as_bytes()).context("path contains a NUL byte")?;
    let probe = CString::new(CHECK_XATTR)?;
    // A directory answers an empty report at once, a file its cached share.
    match crate::status::getxattr_once(&c, &probe, REPORT_CAP) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
            bail!("{}: permission denied", root.display())
        }
        Err(e) => bail!(
            "{}: not inside a mounted Nectar volume ({e})",
            root.display()
        ),
    }
}

/// Starts this same command again without `--background`, detached from the terminal,
/// and returns.
fn detach() -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("cannot find this program to run it again")?;
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--background" && a != "-b")
        .collect();
    let child = std::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .context("cannot start the warmup in the background")?;
    println!(
        "warmup runs in the background (pid {}); `nectar warmup --check` shows how far it got",
        child.id()
    );
    Ok(())
}

/// Sends every regular file under `path` (or `path` itself) to the workers. Errors
/// go to `failed`, and the walk goes on.
pub(crate) fn walk(
    path: &Path,
    tx: &mpsc::SyncSender<PathBuf>,
    failed: &dyn Fn(&Path, &dyn std::fmt::Display),
) {
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) => {
                failed(&p, &e);
                continue;
            }
        };
        if meta.is_file() {
            if tx.send(p).is_err() {
                return;
            }
        } else if meta.is_dir() {
            match std::fs::read_dir(&p) {
                Ok(entries) => {
                    for entry in entries {
                        match entry {
                            Ok(e) => stack.push(e.path()),
                            Err(e) => failed(&p, &e),
                        }
                    }
                }
                Err(e) => failed(&p, &e),
            }
        }
    }
}

fn act_on(path: &Path, xattr: &CString, progress: &Progress) {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    let answer = crate::status::getxattr_once(&c, xattr, REPORT_CAP);
    let report = match answer.map(|v| String::from_utf8_lossy(&v).parse::<CacheReport>()) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return failed(progress, path, &e),
        Err(e) => return failed(progress, path, &e),
    };
    progress.report.lock().add(&report);
    progress.files.fetch_add(1, Ordering::Relaxed);
}

fn failed(progress: &Progress, path: &Path, e: &dyn std::fmt::Display) {
    progress.failed.fetch_add(1, Ordering::Relaxed);
    let mut errors = progress.errors.lock();
    if errors.len() < MAX_ERRORS_SHOWN {
        errors.push(format!("{}: {e}", path.display()));
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// One line on the terminal, rewritten in place.
fn show_progress(p: &Progress, start: Instant, last: bool) {
    let r = *p.report.lock();
    let secs = start.elapsed().as_secs_f64().max(0.001);
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r{} files, {:.1} MiB, {:.1} MiB/s{}",
        p.files.load(Ordering::Relaxed),
        mib(r.bytes),
        mib(r.bytes) / secs,
        if last { "\n" } else { "   " }
    );
    let _ = err.flush();
}

fn summary(a: &WarmupArgs, p: &Progress, elapsed: Duration) -> String {
    let r = *p.report.lock();
    let files = p.files.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64();
    if a.check {
        let share = if r.bytes == 0 {
            100.0
        } else {
            r.cached_bytes as f64 * 100.0 / r.bytes as f64
        };
        format!(
            "{files} files, {:.1} MiB in {} blocks: {:.1} MiB cached ({share:.1}%)",
            mib(r.bytes),
            r.blocks,
            mib(r.cached_bytes)
        )
    } else if a.evict {
        format!(
            "{files} files: {:.1} MiB dropped from the cache in {secs:.1} s",
            mib(r.cached_bytes)
        )
    } else {
        let fetched = r.bytes - r.cached_bytes;
        format!(
            "{files} files, {:.1} MiB: {:.1} MiB fetched, {:.1} MiB already cached, in {secs:.1} s ({:.1} MiB/s)",
            mib(r.bytes),
            mib(fetched),
            mib(r.cached_bytes),
            mib(fetched) / secs.max(0.001)
        )
    }
}
