//! The background jobs of a client's session: what every client that serves the volume
//! (a FUSE mount, and the gateway and SDKs that share this crate) runs beside its
//! requests, each in a thread of its own until [`Jobs`] is stopped or dropped.
//!
//! - Heartbeat: refreshes the session every `heartbeat`; every fifth beat (at most a
//!   minute apart) cleans the sessions of dead clients and reads the volume's settings
//!   again, so a `nectar config` (trash days, capacity) reaches running clients.
//! - Trash: once an hour (with jitter), [`Meta::cleanup_trash_if_due`]: one client per
//!   volume expires the trash and the delayed slices.
//! - Removed files: every half grace period, [`Meta::cleanup_deleted_files_if_due`]:
//!   one client per volume deletes the files kept for readers on other clients.
//! - Metadata backup: see [`crate::backup`].
//!
//! Jobs that change the volume do not run on a read-only client.

use crate::backup::{start_backups, BackupConfig};
use nectar_meta::Meta;
use nectar_object::ObjectStore;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Threads that remove expired trash entries at a time.
const TRASH_THREADS: usize = 10;

/// Which jobs run, and how often.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    pub heartbeat: Duration,
    pub backup: BackupConfig,
    /// How often the trash is checked for what expired (an hour in a mount).
    pub trash_interval: Duration,
    pub read_only: bool,
}

/// The running jobs; stopped when dropped.
pub struct Jobs {
    stop: Arc<AtomicBool>,
}

impl Jobs {
    pub fn start(
        meta: Arc<Meta>,
        store: Arc<dyn ObjectStore>,
        rt: tokio::runtime::Handle,
        cfg: JobsConfig,
    ) -> Jobs {
        let stop = Arc::new(AtomicBool::new(false));
        start_heartbeat(
            meta.clone(),
            cfg.heartbeat.max(Duration::from_secs(1)),
            stop.clone(),
        );
        if !cfg.read_only {
            let m = meta.clone();
            every(
                "nectar-trash",
                cfg.trash_interval,
                stop.clone(),
                move || {
                    let now = nectar_meta::Time::now().sec;
                    match m.cleanup_trash_if_due(now, TRASH_THREADS) {
                        Ok(Some(done)) if done != Default::default() => tracing::info!(
                            "trash cleaned: {} entries of {} hours, {} delayed slices",
                            done.entries,
                            done.hours,
                            done.delayed_slices
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!("cleaning the trash failed: {e}"),
                    }
                },
            );
            // Files removed while other clients may read them (see
            // `nectar_meta::readers`), deleted once their grace period passed.
            let m = meta.clone();
            every(
                "nectar-deleted",
                Duration::from_secs((meta.deletion_grace() as u64 / 2).max(1)),
                stop.clone(),
                move || match m.cleanup_deleted_files_if_due(nectar_meta::Time::now().sec) {
                    Ok(Some(n)) if n > 0 => tracing::debug!("{n} removed files deleted"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("deleting removed files failed: {e}"),
                },
            );
            start_backups(meta, store, rt, cfg.backup, stop.clone());
        }
        Jobs { stop }
    }

    /// Asks every job to stop (each ends within a fraction of a second, or when the
    /// run it is in finishes).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for Jobs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `job` in a thread named `name` about every `interval` (0.9 to 1.1 times it,
/// so clients started together do not run in step), the first time one interval from
/// now, until `stop` is set. Nothing runs for an interval of zero.
pub(crate) fn every(
    name: &str,
    interval: Duration,
    stop: Arc<AtomicBool>,
    mut job: impl FnMut() + Send + 'static,
) {
    if interval.is_zero() {
        return;
    }
    let started = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || loop {
            let until = Instant::now() + interval.mul_f64(0.9 + rand_fraction() * 0.2);
            if !sleep_until(until, &stop) {
                return;
            }
            job();
        });
    if let Err(e) = started {
        tracing::warn!("cannot start the job {name}: {e}");
    }
}

/// Sleeps until `until`; false when `stop` was set meanwhile.
fn sleep_until(until: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(100)));
    }
}

/// A number in [0, 1) that differs between clients and calls.
pub(crate) fn rand_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos.wrapping_mul(2_654_435_761) % 1_000_000) / 1_000_000.0
}

/// Keeps the session alive, cleans up after dead clients and follows the settings.
fn start_heartbeat(meta: Arc<Meta>, beat: Duration, stop: Arc<AtomicBool>) {
    let started = std::thread::Builder::new()
        .name("nectar-heartbeat".into())
        .spawn(move || {
            let mut last_clean = Instant::now() - Duration::from_secs(3600);
            loop {
                if let Err(e) = meta.refresh_session() {
                    tracing::warn!("session heartbeat failed: {e}");
                }
                if last_clean.elapsed() > (5 * beat).min(Duration::from_secs(60)) {
                    last_clean = Instant::now();
                    if let Err(e) = meta.clean_stale_sessions() {
                        tracing::warn!("cleaning stale sessions failed: {e}");
                    }
                    if let Err(e) = meta.load() {
                        tracing::warn!("reading the volume's settings failed: {e}");
                    }
                }
                if !sleep_until(Instant::now() + beat, &stop) {
                    return;
                }
            }
        });
    if let Err(e) = started {
        tracing::warn!("cannot start the session heartbeat: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_periodic_job_runs_about_every_interval_and_stops() {
        let stop = Arc::new(AtomicBool::new(false));
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        every(
            "test-job",
            Duration::from_millis(50),
            stop.clone(),
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
            },
        );
        std::thread::sleep(Duration::from_millis(400));
        stop.store(true, Ordering::SeqCst);
        let seen = runs.load(Ordering::SeqCst);
        // 0.9 to 1.1 intervals apart: 3 to 8 runs in 400 ms, on a busy machine fewer.
        assert!((2..=8).contains(&seen), "{seen} runs");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(runs.load(Ordering::SeqCst), seen, "it ran after the stop");
        // An interval of zero starts nothing.
        every("none", Duration::ZERO, stop, || panic!("ran"));
    }
}
