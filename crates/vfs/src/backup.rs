//! Automatic metadata backup (`--backup-meta`): a dump of the whole volume, written
//! into its own bucket as `meta/dump-YYYY-MM-DD-HHMMSS.json.gz` (UTC), while the file
//! system stays writable, as JuiceFS writes it.
//!
//! The design: every client that runs the job wakes every tenth of the interval (with
//! jitter) and tries to claim the next backup with one transaction on the counter
//! `lastBackup` (the time of the last one): only the client whose transaction moves it
//! forward dumps, so one client per volume at a time. The dump goes through gzip into
//! an anonymous temporary file (never seen by others, gone when closed), then up to the
//! bucket in one put. A volume of more than a million inodes is not backed up when the
//! interval is an hour or less (a dump would take most of it), as JuiceFS decides. After
//! a backup, old ones are thinned out with JuiceFS's retention: all of the last two
//! days, then one a day for two weeks, one a week for two months, one a month for two
//! years, nothing older.
//!
//! A backup holds the compressed dump in memory while it uploads (about 25 MiB per
//! million files): the object store takes whole objects.

use flate2::write::GzEncoder;
use nectar_meta::{DumpOptions, Meta, Utc};
use nectar_object::ObjectStore;
use std::io::{Read, Seek, Write};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where backups go in the volume's part of the bucket.
pub const BACKUP_PREFIX: &str = "meta/";
/// The counter holding the time (seconds) of the last backup a client claimed.
const LAST_BACKUP: &str = "lastBackup";
/// Above this many inodes, backups every hour or more often are skipped.
const MAX_INODES_HOURLY: u64 = 1_000_000;

/// What `--backup-meta` and `--backup-skip-trash` ask for.
#[derive(Debug, Clone)]
pub struct BackupConfig {
    pub interval: Duration,
    pub skip_trash: bool,
}

/// Starts the backup job in a thread of its own; it ends when `stop` is set. Nothing
/// is started for an interval of zero.
pub fn start_backups(
    meta: Arc<Meta>,
    store: Arc<dyn ObjectStore>,
    rt: tokio::runtime::Handle,
    cfg: BackupConfig,
    stop: Arc<AtomicBool>,
) {
    crate::jobs::every(
        "nectar-backup",
        cfg.interval / 10,
        stop,
        move || match backup_if_due(&meta, &store, &rt, &cfg) {
            Ok(Some(name)) => tracing::info!("metadata backed up to {name}"),
            Ok(None) => {}
            Err(e) => tracing::warn!("metadata backup failed: {e}"),
        },
    );
}

/// Makes a backup when none was made within the interval and this client wins the
/// claim; returns its object key then.
pub fn backup_if_due(
    meta: &Meta,
    store: &Arc<dyn ObjectStore>,
    rt: &tokio::runtime::Handle,
    cfg: &BackupConfig,
) -> Result<Option<String>, String> {
    let now = nectar_meta::Time::now().sec;
    let interval = cfg.interval.as_secs().max(1) as i64;
    let claimed = meta
        .claim_periodic(LAST_BACKUP, now, interval)
        .map_err(|e| e.to_string())?;
    if !claimed {
        return Ok(None);
    }
    let inodes = meta.statfs().map_err(|e| e.to_string())?.used_inodes;
    if cfg.interval <= Duration::from_secs(3600) && inodes > MAX_INODES_HOURLY {
        tracing::warn!(
            "metadata backup skipped: {inodes} inodes are too many for a backup every {}s; give --backup-meta a longer interval to back up",
            cfg.interval.as_secs()
        );
        return Ok(None);
    }
    let start = Instant::now();
    let name = format!(
        "{BACKUP_PREFIX}dump-{}.json.gz",
        Utc::from_secs(now).stamp()
    );
    let data = dump_compressed(meta, cfg.skip_trash).map_err(|e| e.to_string())?;
    rt.block_on(store.put(&name, data.into()))
        .map_err(|e| format!("storing {name}: {e}"))?;
    metrics::gauge!("nectar_last_successful_backup").set(now as f64);
    metrics::gauge!("nectar_last_backup_duration_seconds").set(start.elapsed().as_secs_f64());
    if let Err(e) = rt.block_on(remove_old_backups(store.as_ref(), now)) {
        tracing::warn!("removing old metadata backups: {e}");
    }
    Ok(Some(name))
}

/// The volume's dump, gzip-compressed, by way of an anonymous temporary file.
fn dump_compressed(meta: &Meta, skip_trash: bool) -> std::io::Result<Vec<u8>> {
    let mut file = nectar_meta::spill::anonymous_file()?;
    {
        let mut gz = GzEncoder::new(
            std::io::BufWriter::with_capacity(1 << 20, &mut file),
            flate2::Compression::fast(),
        );
        let opts = DumpOptions {
            skip_trash,
            threads: 2,
            ..DumpOptions::default()
        };
        meta.dump(&mut gz, &opts, &|_| {})
            .map_err(std::io::Error::other)?;
        gz.finish()?.flush()?;
    }
    file.rewind()?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    Ok(data)
}

/// Deletes the backups [`to_remove`] picks among those in the bucket.
async fn remove_old_backups(store: &dyn ObjectStore, now: i64) -> nectar_object::Result<()> {
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list(BACKUP_PREFIX, after.as_deref(), 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        names.extend(
            page.iter()
                .filter_map(|o| o.key.strip_prefix(BACKUP_PREFIX))
                .map(str::to_string),
        );
    }
    for name in to_remove(&names, now) {
        store.delete(&format!("{BACKUP_PREFIX}{name}")).await?;
    }
    Ok(())
}

/// The backups (names under `meta/`) to delete at time `now`: JuiceFS's rotation. From
/// the newest back, all of the last two days are kept; then time is cut into windows
/// (days to two weeks, weeks to two months, 30 days beyond) and only the oldest backup
/// of each window is kept; everything older than two years goes. Names that are not
/// backups are left alone.
pub fn to_remove(names: &[String], now: i64) -> Vec<String> {
    const DAY: i64 = 86_400;
    let today = Utc::from_secs(now);
    let cutoff = Utc {
        year: today.year - 2,
        ..today
    }
    .to_secs();
    let mut days = 2;
    let mut edge = now - days * DAY;
    let next = |days: &mut i64, edge: &mut i64| {
        let step = if *days < 14 {
            1
        } else if *days < 60 {
            7
        } else {
            30
        };
        *days += step;
        *edge -= step * DAY;
    };
    let mut backups: Vec<(i64, &String)> = names
        .iter()
        .filter_map(|n| {
            let stamp = n.strip_prefix("dump-")?.strip_suffix(".json.gz")?;
            Some((Utc::parse_stamp(stamp)?.to_secs(), n))
        })
        .collect();
    backups.sort();
    let mut remove = Vec::new();
    let mut within: Vec<&String> = Vec::new();
    for (i, &(ts, name)) in backups.iter().enumerate().rev() {
        if ts < cutoff {
            remove.extend(backups[..=i].iter().map(|(_, n)| (*n).clone()));
            break;
        }
        if ts < edge {
            // Keep the oldest of the window that ends here.
            if let Some((_, newer)) = within.split_last() {
                remove.extend(newer.iter().map(|n| (*n).clone()));
            }
            within.clear();
            loop {
                next(&mut days, &mut edge);
                if ts >= edge {
                    break;
                }
            }
            within.push(name);
        } else if days > 2 {
            within.push(name);
        }
    }
    if let Some((_, newer)) = within.split_last() {
        remove.extend(newer.iter().map(|n| (*n).clone()));
    }
    remove
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(secs: i64) -> String {
        format!("dump-{}.json.gz", Utc::from_secs(secs).stamp())
    }

    #[test]
    fn rotation_keeps_recent_backups_and_thins_older_ones() {
        const HOUR: i64 = 3600;
        let now = Utc {
            year: 2026,
            month: 12,
            day: 5,
            hour: 12,
            minute: 0,
            second: 0,
        }
        .to_secs();
        // Hourly backups for three years, and a file that is not a backup.
        let mut names: Vec<String> = (0..3 * 365 * 24).map(|h| name(now - h * HOUR)).collect();
        names.push("notes.txt".into());
        let gone = to_remove(&names, now);
        assert!(!gone.contains(&"notes.txt".to_string()));
        let kept: Vec<i64> = names
            .iter()
            .filter(|n| !gone.contains(n) && n.starts_with("dump-"))
            .map(|n| Utc::parse_stamp(&n[5..22]).unwrap().to_secs())
            .collect();
        let age_days = |t: &i64| (now - t) as f64 / 86_400.0;
        // Everything of the last two days.
        assert_eq!(kept.iter().filter(|t| age_days(t) <= 2.0).count(), 48 + 1);
        // Then about one a day up to two weeks, one a week up to two months, one a
        // month up to two years, nothing older.
        let between = |a: f64, b: f64| {
            kept.iter()
                .filter(|t| (a..b).contains(&age_days(t)))
                .count()
        };
        assert!(
            (11..=13).contains(&between(2.0, 14.0)),
            "{}",
            between(2.0, 14.0)
        );
        assert!(
            (6..=8).contains(&between(14.0, 60.0)),
            "{}",
            between(14.0, 60.0)
        );
        assert!(
            (20..=24).contains(&between(60.0, 731.0)),
            "{}",
            between(60.0, 731.0)
        );
        assert_eq!(between(731.0, 10_000.0), 0);
        // A second rotation at the same time removes nothing more.
        let left: Vec<String> = names
            .iter()
            .filter(|n| !gone.contains(n))
            .cloned()
            .collect();
        assert!(to_remove(&left, now).is_empty());
    }
}
