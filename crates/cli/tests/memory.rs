//! The mount's memory stays bounded: its resident size never exceeds `--buffer-size`
//! plus `--mem-cache-size` plus [`OVERHEAD_MIB`], under 4 fio jobs writing, then 4
//! reading, then 1,000 files open for writing at once, each with unwritten data.

mod common;

use common::*;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the process holds besides its buffers and memory cache: code, the runtime's
/// threads and their stacks, FUSE request buffers, the metadata engine's connections,
/// the state of open and remembered files, the allocator's slack. Measured at about
/// 60 MiB (158 MiB peak for a 96 MiB budget); the README's "Memory" section states
/// this bound.
const OVERHEAD_MIB: u64 = 100;
const BUFFER_MIB: u64 = 64;
const MEM_CACHE_MIB: u64 = 32;

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn fio(m: &Mount, rw: &str) {
    let out = Command::new("fio")
        .args([
            "--name=mem",
            &format!("--directory={}", m.mp.display()),
            &format!("--rw={rw}"),
            "--bs=1M",
            "--size=192M",
            "--numjobs=4",
            "--ioengine=psync",
            "--end_fsync=1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fio {rw}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn memory_stays_within_buffers_cache_and_a_fixed_overhead() {
    require_fuse!();
    require_fio!();
    let vol = Volume::new(&["--trash-days", "0"]);
    let m = vol.mount(
        "m",
        &[
            "--buffer-size",
            &BUFFER_MIB.to_string(),
            "--mem-cache-size",
            &MEM_CACHE_MIB.to_string(),
            "--cache-size",
            "0",
        ],
    );
    let pid = m.pid();
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let phase = |name: &str| {
        eprintln!(
            "after {name}: peak RSS {} MiB",
            peak.load(Ordering::Relaxed) / 1024
        )
    };
    fio(&m, "write");
    phase("4 writers");
    for entry in fs::read_dir(&m.mp).unwrap() {
        let f = File::open(entry.unwrap().path()).unwrap();
        // SAFETY: a valid descriptor; DONTNEED drops clean cached pages only.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    fio(&m, "read");
    phase("4 readers");
    // 1,000 files open for writing at once, each with 200 KiB not yet committed:
    // about 200 MiB of writes against a 64 MiB buffer.
    fs::create_dir(m.path("many")).unwrap();
    let chunk = vec![7u8; 200 << 10];
    let mut files: Vec<File> = (0..1000)
        .map(|i| File::create(m.path(&format!("many/{i}"))).unwrap())
        .collect();
    for f in &mut files {
        f.write_all(&chunk).unwrap();
    }
    drop(files);
    phase("1,000 open files");
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak_mib = peak.load(Ordering::Relaxed) / 1024;
    let limit = BUFFER_MIB + MEM_CACHE_MIB + OVERHEAD_MIB;
    eprintln!("peak RSS {peak_mib} MiB, limit {limit} MiB");
    assert!(peak_mib > 0, "RSS was never read");
    assert!(
        peak_mib <= limit,
        "peak RSS {peak_mib} MiB over {limit} MiB (buffers {BUFFER_MIB} + memory cache {MEM_CACHE_MIB} + overhead {OVERHEAD_MIB})"
    );
    // Everything written is there.
    for i in [0, 499, 999] {
        assert_eq!(fs::read(m.path(&format!("many/{i}"))).unwrap(), chunk);
    }
    m.unmount();
}
