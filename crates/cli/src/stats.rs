//! `nectar stats MOUNTPOINT`: a mount's activity, one line per interval, like `vmstat`.
//!
//! The numbers come from the mount itself, through the virtual xattr
//! `nectar.stats` (the Prometheus text of its metrics, without histogram buckets), so
//! this works with `--metrics` off and needs no address. Rates are differences between
//! two readings divided by the time between them.

use anyhow::{bail, Context, Result};
use clap::Args;
use nectar_vfs::STATS_XATTR;
use std::collections::HashMap;
use std::ffi::CString;
use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct StatsArgs {
    /// The mount point (or any path inside the mount).
    mountpoint: PathBuf,
    /// Seconds between lines.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Lines to print before stopping; 0 never stops.
    #[arg(long, default_value_t = 0)]
    count: u64,
}

/// One reading: every series, `name{labels}` to value.
struct Reading {
    at: Instant,
    series: HashMap<String, f64>,
}

impl Reading {
    fn parse(text: &str) -> Reading {
        let series = text
            .lines()
            .filter_map(|l| {
                let (key, value) = l.rsplit_once(' ')?;
                Some((key.to_string(), value.parse().ok()?))
            })
            .collect();
        Reading {
            at: Instant::now(),
            series,
        }
    }

    /// The sum of series `name` whose labels include every one of `labels`
    /// (`key="value"`).
    fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.series
            .iter()
            .filter(|(k, _)| {
                let (n, l) = k.split_once('{').unwrap_or((k, ""));
                n == name && labels.iter().all(|want| l.contains(want))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

pub fn run(a: StatsArgs) -> Result<()> {
    if !(a.interval > 0.0 && a.interval.is_finite()) {
        bail!("--interval must be a positive number of seconds");
    }
    let path =
        CString::new(a.mountpoint.as_os_str().as_bytes()).context("path contains a NUL byte")?;
    let name = CString::new(STATS_XATTR)?;
    let read = || -> Result<Reading> {
        let v = crate::status::getxattr_once(&path, &name, 64 << 10).map_err(|e| {
            anyhow::anyhow!(
                "{}: not inside a mounted Nectar volume, or its mount is too old to report statistics ({e})",
                a.mountpoint.display()
            )
        })?;
        Ok(Reading::parse(&String::from_utf8_lossy(&v)))
    };
    let mut before = read()?;
    let tty = std::io::stdout().is_terminal();
    for line in 0.. {
        if a.count > 0 && line >= a.count {
            break;
        }
        if line == 0 || (tty && line % 20 == 0) {
            println!("{HEADER1}\n{HEADER2}");
        }
        std::thread::sleep(Duration::from_secs_f64(a.interval));
        let now = read()?;
        println!("{}", row(&before, &now));
        before = now;
    }
    Ok(())
}

const HEADER1: &str =
    "-----usage----- ----------fuse---------- ----meta---- -----blockcache----- ------object------ staged";
const HEADER2: &str =
    "  cpu      mem    ops   lat   read write   ops   lat    mem  disk  miss   get  gets   put  puts   bytes";

/// One line of rates between two readings.
fn row(a: &Reading, b: &Reading) -> String {
    let secs = b.at.duration_since(a.at).as_secs_f64().max(0.001);
    let delta = |name: &str, labels: &[&str]| (b.sum(name, labels) - a.sum(name, labels)).max(0.0);
    let rate = |name: &str, labels: &[&str]| delta(name, labels) / secs;
    // Average latency in ms of a histogram over the interval.
    let latency = |name: &str| {
        let n = delta(&format!("{name}_count"), &[]);
        if n == 0.0 {
            0.0
        } else {
            delta(&format!("{name}_sum"), &[]) * 1000.0 / n
        }
    };
    let fuse = "nectar_fuse_op_duration_seconds";
    let meta = "nectar_meta_txn_duration_seconds";
    let obj_count = "nectar_object_request_duration_seconds_count";
    let obj_bytes = "nectar_object_request_bytes_total";
    format!(
        "{:>4.0}% {:>8} {:>6} {:>5.2} {:>6} {:>5} {:>5} {:>5.2} {:>6} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>7}",
        rate("nectar_cpu_seconds", &[]) * 100.0,
        human(b.sum("nectar_memory_resident_bytes", &[])),
        count(rate(&format!("{fuse}_count"), &[])),
        latency(fuse),
        human(rate("nectar_read_bytes_total", &[])),
        human(rate("nectar_written_bytes_total", &[])),
        count(rate(&format!("{meta}_count"), &[])),
        latency(meta),
        human(rate("nectar_blockcache_hit_bytes_total", &["level=\"memory\""])),
        human(rate("nectar_blockcache_hit_bytes_total", &["level=\"disk\""])),
        human(rate("nectar_blockcache_miss_bytes_total", &[])),
        human(rate(obj_bytes, &["method=\"GET\""])),
        count(rate(obj_count, &["method=\"GET\""])),
        human(rate(obj_bytes, &["method=\"PUT\""])),
        count(rate(obj_count, &["method=\"PUT\""])),
        human(b.sum("nectar_staging_bytes", &[])),
    )
}

/// Bytes as a short number with a binary unit (`512`, `3.2K`, `41M`, `1.5G`).
fn human(bytes: f64) -> String {
    scaled(bytes, 1024.0, &["", "K", "M", "G", "T"])
}

/// A count as a short number (`950`, `12K`, `3.4M`).
fn count(n: f64) -> String {
    scaled(n, 1000.0, &["", "K", "M", "G"])
}

fn scaled(mut v: f64, step: f64, units: &[&str]) -> String {
    let mut unit = 0;
    while v >= step && unit + 1 < units.len() {
        v /= step;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0}")
    } else if v < 10.0 {
        format!("{v:.1}{}", units[unit])
    } else {
        format!("{v:.0}{}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_two_readings() {
        let a = Reading::parse(
            "nectar_read_bytes_total{vol_name=\"v\",mp=\"/m\"} 1000\n\
             nectar_fuse_op_duration_seconds_count{op=\"read\"} 10\n\
             nectar_fuse_op_duration_seconds_sum{op=\"read\"} 0.5\n\
             nectar_object_request_bytes_total{method=\"GET\"} 0\n",
        );
        let mut b = Reading::parse(
            "nectar_read_bytes_total{vol_name=\"v\",mp=\"/m\"} 3098152\n\
             nectar_fuse_op_duration_seconds_count{op=\"read\"} 20\n\
             nectar_fuse_op_duration_seconds_count{op=\"write\"} 10\n\
             nectar_fuse_op_duration_seconds_sum{op=\"read\"} 0.8\n\
             nectar_fuse_op_duration_seconds_sum{op=\"write\"} 0.3\n\
             nectar_object_request_bytes_total{method=\"GET\"} 4194304\n\
             nectar_object_request_bytes_total{method=\"PUT\"} 99\n",
        );
        b.at = a.at + Duration::from_secs(2);
        assert_eq!(
            b.sum("nectar_object_request_bytes_total", &["method=\"GET\""]),
            4194304.0
        );
        let line = row(&a, &b);
        let cols: Vec<&str> = line.split_whitespace().collect();
        // 20 operations in 2 s, 0.6 s over them: 10/s at 30 ms each.
        assert_eq!(cols[2], "10", "{line}");
        assert_eq!(cols[3], "30.00", "{line}");
        // 3 MiB read in 2 s; 4 MiB of GETs in 2 s.
        assert_eq!(cols[4], "1.5M", "{line}");
        assert_eq!(cols[11], "2.0M", "{line}");
        assert_eq!(human(512.0), "512");
        assert_eq!(count(12_345.0), "12K");
    }
}
