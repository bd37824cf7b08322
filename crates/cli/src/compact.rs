//! `nectar compact`: rewrites fragmented files of a mounted volume so each chunk is one
//! slice again (what the mount does on its own for the files it writes).
//!
//! As `nectar warmup`, this walks the paths through the mount and reads, for each
//! regular file, a virtual xattr ([`COMPACT_XATTR`]) that makes the mount compact that
//! file and answer with the chunks compacted and their slice records before and after.
//! The replaced data is released as any overwrite's: kept as delayed slices while the
//! trash is on.

use anyhow::{bail, Result};
use clap::Args;
use nectar_vfs::COMPACT_XATTR;
use parking_lot::Mutex;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

#[derive(Args)]
pub struct CompactArgs {
    /// Files and directories inside a mounted volume (directories are walked).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Files compacted at once.
    #[arg(short = 'p', long, default_value_t = 10)]
    threads: usize,
}

#[derive(Default)]
struct Totals {
    files: AtomicU64,
    chunks: AtomicU64,
    before: AtomicU64,
    after: AtomicU64,
    errors: Mutex<Vec<String>>,
}

pub fn run(a: CompactArgs) -> Result<()> {
    if a.threads == 0 {
        bail!("--threads must be at least 1 (default 10)");
    }
    for p in &a.paths {
        if let Err(e) = std::fs::symlink_metadata(p) {
            bail!("{}: {e}", p.display());
        }
    }
    let xattr = CString::new(COMPACT_XATTR)?;
    let totals = Totals::default();
    let failed = |p: &Path, e: &dyn std::fmt::Display| {
        totals.errors.lock().push(format!("{}: {e}", p.display()));
    };
    let (tx, rx) = mpsc::sync_channel::<PathBuf>(4 * a.threads);
    let rx = Mutex::new(rx);
    std::thread::scope(|s| {
        for _ in 0..a.threads {
            s.spawn(|| loop {
                let next = rx.lock().recv();
                let Ok(path) = next else { return };
                match compact(&path, &xattr) {
                    Ok([chunks, before, after]) => {
                        totals.files.fetch_add(1, Ordering::Relaxed);
                        totals.chunks.fetch_add(chunks, Ordering::Relaxed);
                        totals.before.fetch_add(before, Ordering::Relaxed);
                        totals.after.fetch_add(after, Ordering::Relaxed);
                    }
                    Err(e) => failed(&path, &e),
                }
            });
        }
        for p in &a.paths {
            crate::warmup::walk(p, &tx, &failed);
        }
        drop(tx);
    });
    let errors = totals.errors.into_inner();
    for e in errors.iter().take(20) {
        eprintln!("nectar compact: {e}");
    }
    println!(
        "{} files: {} chunks compacted, {} slice records now {}",
        totals.files.into_inner(),
        totals.chunks.into_inner(),
        totals.before.into_inner(),
        totals.after.into_inner()
    );
    if !errors.is_empty() {
        bail!("{} paths failed", errors.len());
    }
    Ok(())
}

/// Has the mount compact one file: (chunks, records before, records after).
fn compact(path: &Path, xattr: &CString) -> Result<[u64; 3], String> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let answer =
        crate::status::getxattr_once(&c, xattr, 128).map_err(|e| match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => {
                "not inside a mounted Nectar volume".to_string()
            }
            _ => e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&answer);
    let nums: Vec<u64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    nums.try_into()
        .map_err(|_| format!("the mount answered {text:?}"))
}
