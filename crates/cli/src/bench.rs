//! `nectar bench PATH`: what a mount gives an application, measured the way JuiceFS's
//! `bench` does, so users can compare their own setups (and the two systems).
//!
//! In a directory of its own under PATH, `--threads` threads each write a big file
//! with `--block-size` writes and fsync it, read it back, write `--small-files` small
//! files, read them back and stat them. Before each read the files' page cache is
//! dropped (`posix_fadvise(DONTNEED)`; as root the whole page cache when `--drop-caches`
//! is given), so reads reach the file system. It prints the speed and the cost per
//! operation of each step, and removes its directory at the end, also after a failure.
//! Any directory works (a local one gives the baseline without FUSE).

use anyhow::{bail, Context, Result};
use clap::Args;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct BenchArgs {
    /// A directory inside the mount to measure.
    path: PathBuf,
    /// Size of each read and write of the big files, in MiB.
    #[arg(long, default_value_t = 1)]
    block_size: usize,
    /// Size of each big file, in MiB (0 skips the big files).
    #[arg(long, default_value_t = 1024)]
    big_file_size: usize,
    /// Size of each small file, in KiB.
    #[arg(long, default_value_t = 128)]
    small_file_size: usize,
    /// Small files per thread (0 skips them).
    #[arg(long, default_value_t = 100)]
    small_files: usize,
    /// Threads, each with its own files.
    #[arg(short = 'p', long, default_value_t = 1)]
    threads: usize,
    /// Drop the whole page cache before reads (root only), not only the files'.
    #[arg(long)]
    drop_caches: bool,
}

/// Removes the bench directory when dropped.
struct Workdir(PathBuf);

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.threads == 0 || a.block_size == 0 {
        bail!("--threads and --block-size must be at least 1");
    }
    if !a.path.is_dir() {
        bail!("{} is not a directory", a.path.display());
    }
    let dir = Workdir(
        a.path
            .join(format!("__nectar_bench_{}__", std::process::id())),
    );
    fs::create_dir(&dir.0).with_context(|| format!("cannot create {}", dir.0.display()))?;
    let threads: Vec<PathBuf> = (0..a.threads)
        .map(|t| dir.0.join(format!("t{t}")))
        .collect();
    for t in &threads {
        fs::create_dir(t)?;
    }
    println!(
        "{} threads; big files {} MiB in {} MiB writes; {} small files of {} KiB each",
        a.threads, a.big_file_size, a.block_size, a.small_files, a.small_file_size
    );
    println!("{:<18} {:>16} {:>18}", "ITEM", "SPEED", "COST");
    let block = vec![0x3cu8; a.block_size << 20];
    let small = vec![0xc3u8; a.small_file_size << 10];
    let big_mib = (a.big_file_size * a.threads) as f64;
    let small_n = a.small_files * a.threads;
    if a.big_file_size > 0 {
        let blocks = a.big_file_size.div_ceil(a.block_size);
        let wall = parallel(&threads, |t| write_big(&t.join("big"), &block, blocks))?;
        report_big("write big file", big_mib, wall);
        drop_caches(&a, &threads, |t| vec![t.join("big")])?;
        let wall = parallel(&threads, |t| read_all(&t.join("big"), block.len()))?;
        report_big("read big file", big_mib, wall);
    }
    if a.small_files > 0 {
        let names = |t: &Path| -> Vec<PathBuf> {
            (0..a.small_files)
                .map(|i| t.join(format!("s{i}")))
                .collect()
        };
        let wall = parallel(&threads, |t| {
            names(t).iter().try_for_each(|p| {
                let mut f = File::create(p)?;
                f.write_all(&small)?;
                f.sync_all()
            })
        })?;
        report_small("write small file", small_n, wall, a.threads);
        drop_caches(&a, &threads, names)?;
        let wall = parallel(&threads, |t| {
            names(t)
                .iter()
                .try_for_each(|p| read_all(p, small.len().max(1)))
        })?;
        report_small("read small file", small_n, wall, a.threads);
        let wall = parallel(&threads, |t| {
            names(t).iter().try_for_each(|p| fs::metadata(p).map(drop))
        })?;
        report_small("stat file", small_n, wall, a.threads);
    }
    Ok(())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64().max(1e-6)
}

/// Runs `work` on every thread directory at once; returns the wall time of all.
fn parallel(
    dirs: &[PathBuf],
    work: impl Fn(&Path) -> std::io::Result<()> + Sync,
) -> Result<Duration> {
    let start = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = dirs.iter().map(|d| s.spawn(|| work(d))).collect();
        for (h, d) in handles.into_iter().zip(dirs) {
            match h.join() {
                Ok(r) => r.with_context(|| format!("in {}", d.display()))?,
                Err(_) => bail!("a bench thread panicked"),
            }
        }
        Ok(())
    })?;
    Ok(start.elapsed())
}

fn write_big(path: &Path, block: &[u8], blocks: usize) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    for _ in 0..blocks {
        f.write_all(block)?;
    }
    f.sync_all()
}

fn read_all(path: &Path, buf_len: usize) -> std::io::Result<()> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; buf_len];
    while f.read(&mut buf)? > 0 {}
    Ok(())
}

/// Drops the page cache of the files `files(dir)` of every thread, or of the whole
/// machine with `--drop-caches`.
fn drop_caches(
    a: &BenchArgs,
    dirs: &[PathBuf],
    files: impl Fn(&Path) -> Vec<PathBuf>,
) -> Result<()> {
    if a.drop_caches {
        // SAFETY: sync has no preconditions.
        unsafe { libc::sync() };
        fs::write("/proc/sys/vm/drop_caches", "3")
            .context("--drop-caches needs root (writing /proc/sys/vm/drop_caches)")?;
        return Ok(());
    }
    for p in dirs.iter().flat_map(|d| files(d)) {
        let f = File::open(&p)?;
        // SAFETY: a valid descriptor; DONTNEED only drops clean cached pages.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    Ok(())
}

/// MiB per second, and seconds per big file (each thread does one, all at once).
fn report_big(item: &str, mib: f64, wall: Duration) {
    println!(
        "{item:<18} {:>16} {:>18}",
        format!("{:.1} MiB/s", mib / secs(wall)),
        format!("{:.2} s/file", wall.as_secs_f64())
    );
}

/// Files per second, and milliseconds per file in one thread.
fn report_small(item: &str, n: usize, wall: Duration, threads: usize) {
    let rate = n as f64 / secs(wall);
    let ms = secs(wall) * 1000.0 * threads as f64 / n.max(1) as f64;
    println!(
        "{item:<18} {:>16} {:>18}",
        format!("{rate:.1} files/s"),
        format!("{ms:.2} ms/file")
    );
}
