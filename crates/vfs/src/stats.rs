//! The numbers a mount gives its operators.
//!
//! Counters and latency histograms are recorded where things happen, through the
//! `metrics` facade: FUSE operations in nectar-fuse, transactions in nectar-meta,
//! requests in nectar-object, cache hits and misses in nectar-chunk, bytes read and
//! written here. What is a level rather than an event (buffers, caches, staged blocks,
//! open handles, the process's memory and CPU) is set as gauges once a second by the
//! committer thread, and again just before the numbers are read. The mount installs a
//! Prometheus recorder (served over HTTP with `--metrics`) and hands the VFS a
//! [`Renderer`] of it, which the virtual xattr [`STATS_XATTR`] returns: that is how
//! `nectar stats` reads a mount without knowing its metrics address. The xattr leaves
//! out comments and histogram buckets and quantiles (sums and counts are all `stats`
//! needs, and an xattr value is at most 64 KiB).
//!
//! Without a recorder (tests, the SDKs until they install one) recording is a no-op.

use crate::{sys, Result, Vfs};
use metrics::gauge;

/// The virtual xattr whose value is the mount's metrics, in Prometheus text format.
pub const STATS_XATTR: &[u8] = b"nectar.stats";

/// Renders the process's metrics as Prometheus text.
pub type Renderer = Box<dyn Fn() -> String + Send + Sync>;

/// The largest xattr value Linux hands out.
const XATTR_SIZE_MAX: usize = 64 << 10;

impl Vfs {
    /// Makes the metrics readable through [`STATS_XATTR`] (the first renderer wins).
    pub fn set_stats_renderer(&self, render: Renderer) {
        let _ = self.stats.set(render);
    }

    /// The value of [`STATS_XATTR`]: ENODATA when no renderer was set.
    pub(crate) fn stats_text(&self) -> Result<Vec<u8>> {
        let Some(render) = self.stats.get() else {
            return sys(libc::ENODATA);
        };
        self.record_gauges();
        let mut out = String::new();
        for line in render().lines() {
            let detail = line.contains("_bucket{") || line.contains("quantile=");
            if line.starts_with('#') || line.is_empty() || detail {
                continue;
            }
            if out.len() + line.len() + 1 > XATTR_SIZE_MAX {
                break;
            }
            out.push_str(line);
            out.push('\n');
        }
        Ok(out.into_bytes())
    }

    /// Sets the gauges from the state of this client and its process.
    pub(crate) fn record_gauges(&self) {
        let store = &self.store;
        gauge!("nectar_buffer_used_bytes").set(store.buffered() as f64);
        gauge!("nectar_buffer_capacity_bytes").set(store.buffer_capacity() as f64);
        gauge!("nectar_blockcache_bytes", "level" => "memory").set(store.cached_bytes() as f64);
        if let Some((blocks, bytes)) = store.disk_cache_usage() {
            gauge!("nectar_blockcache_blocks", "level" => "disk").set(blocks as f64);
            gauge!("nectar_blockcache_bytes", "level" => "disk").set(bytes as f64);
        }
        let (staged, staged_bytes) = store.staged();
        gauge!("nectar_staging_blocks").set(staged as f64);
        gauge!("nectar_staging_bytes").set(staged_bytes as f64);
        gauge!("nectar_open_handles").set(self.handles.lock().len() as f64);
        gauge!("nectar_uptime_seconds").set(self.started.elapsed().as_secs_f64());
        if let Some(rss) = resident_bytes() {
            gauge!("nectar_memory_resident_bytes").set(rss as f64);
        }
        if let Some(cpu) = cpu_seconds() {
            gauge!("nectar_cpu_seconds").set(cpu);
        }
    }
}

/// This process's resident memory, from /proc/self/statm.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(1) as u64)
}

/// CPU time this process used, user and system, from /proc/self/stat.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces:
    // state is field 3, utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((utime + stime) as f64 / ticks.max(1) as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_numbers_are_read() {
        assert!(super::resident_bytes().unwrap() > 1 << 20);
        // Clock ticks are 10 ms: a short test may have used none yet.
        assert!(super::cpu_seconds().unwrap() >= 0.0);
    }
}
