//! Bandwidth limits of uploads and downloads (`--upload-limit`, `--download-limit`).
//!
//! One [`Limiter`] per direction is shared by every transfer of the store. Taking `n`
//! bytes reserves the next `n / rate` seconds of the link, after whatever earlier callers
//! reserved, and waits until that time has passed: transfers go out at the average rate
//! asked, in the order they asked, and a link left idle earns no burst. A put is charged
//! before it is sent; a get, whose size is known only once it arrived, after.

use parking_lot::Mutex;
use std::time::Duration;
use tokio::time::Instant;

pub(crate) struct Limiter {
    bytes_per_second: f64,
    /// When the link is free again: the end of the last reservation.
    free_at: Mutex<Instant>,
}

impl Limiter {
    pub(crate) fn new(bytes_per_second: u64) -> Self {
        Self {
            bytes_per_second: bytes_per_second.max(1) as f64,
            free_at: Mutex::new(Instant::now()),
        }
    }

    /// Waits until `bytes` fit under the limit.
    pub(crate) async fn take(&self, bytes: usize) {
        let until = {
            let mut free_at = self.free_at.lock();
            let start = (*free_at).max(Instant::now());
            *free_at = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_second);
            *free_at
        };
        tokio::time::sleep_until(until).await;
    }
}

/// A limit in megabits per second (`--upload-limit 100`) as bytes per second.
pub fn mbps_to_bytes(mbps: u64) -> u64 {
    mbps * 1_000_000 / 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn transfers_go_out_at_the_rate() {
        let l = Limiter::new(mbps_to_bytes(8)); // 1 MB/s
        let start = Instant::now();
        l.take(500_000).await;
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        // Two at once share the link: the second waits for the first.
        let (a, b) = tokio::join!(l.take(1_000_000), l.take(1_000_000));
        let _ = (a, b);
        assert_eq!(start.elapsed(), Duration::from_millis(2_500));
        // Idle time is not saved up for a burst.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let idle_end = Instant::now();
        l.take(250_000).await;
        assert_eq!(idle_end.elapsed(), Duration::from_millis(250));
    }
}
