//! Automatic metadata backup on real mounts: two clients of one volume with
//! `--backup-meta 1s` while files are being written; backups appear in the volume's
//! bucket under `meta/`, about one per interval between both clients (one claims each),
//! and the newest loads into a new engine as a volume that mounts and reads every file
//! closed before it was taken.

mod common;

use common::*;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn backups(bucket: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(bucket.join("testvol/meta"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("dump-") && n.ends_with(".json.gz"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    Pattern::new(seed).fill(&mut buf);
    buf
}

#[test]
fn backups_are_taken_while_writing_and_restore_into_a_new_engine() {
    require_fuse!();
    let vol = Volume::new(&[]);
    let bucket = vol.path("data");
    let a = vol.mount("a", &["--backup-meta", "1s"]);
    let b = vol.mount("b", &["--backup-meta", "1s"]);
    let started = Instant::now();
    // Files closed before the backup that is restored.
    std::fs::create_dir(a.path("kept")).unwrap();
    for i in 0..20u64 {
        std::fs::write(
            a.path(&format!("kept/{i}")),
            content(i, 1000 + i as usize * 5000),
        )
        .unwrap();
    }
    let closed_at = nectar_meta::Time::now().sec;
    // Writes go on through the other mount all the while.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (dir, stop) = (b.path("busy"), stop.clone());
        std::fs::create_dir(&dir).unwrap();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                std::fs::write(dir.join(n.to_string()), content(1000 + n, 70_000)).unwrap();
                n += 1;
            }
            n
        })
    };
    // A backup whose time is after the files were closed (its name is the time the
    // dump started, to the second).
    let deadline = Instant::now() + Duration::from_secs(60);
    let newest = loop {
        let after: Vec<String> = backups(&bucket)
            .into_iter()
            .filter(|n| {
                let stamp = nectar_meta::Utc::parse_stamp(&n[5..22]).unwrap();
                stamp.to_secs() > closed_at
            })
            .collect();
        // Two of them: the first may have been in flight when the files closed.
        if after.len() >= 2 {
            break after.last().unwrap().clone();
        }
        assert!(
            Instant::now() < deadline,
            "no backups after a minute: {:?}\n{}",
            backups(&bucket),
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 0, "the file system stayed writable");
    let elapsed = started.elapsed().as_secs();
    let (log_a, log_b) = (a.unmount(), b.unmount());
    let taken =
        log_a.matches("metadata backed up").count() + log_b.matches("metadata backed up").count();
    assert!(
        taken >= 2 && taken as u64 <= elapsed + 2,
        "{taken} backups by two clients in {elapsed} s at 1 s each: one claims each\n{log_a}\n{log_b}"
    );

    // The newest backup, loaded into an empty engine, is the volume again.
    let restored = format!("sqlite3://{}/restored.db", vol.dir.path().display());
    let file = bucket.join("testvol/meta").join(&newest);
    nectar_ok(&["load", &restored, file.to_str().unwrap()]);
    let m = Mount::start(&restored, &vol.path("restored"), &[]);
    for i in 0..20u64 {
        let got = std::fs::read(m.path(&format!("kept/{i}"))).unwrap();
        assert!(
            got == content(i, 1000 + i as usize * 5000),
            "kept/{i} differs after the restore"
        );
    }
    // Files written while the backup ran are whatever state it caught, but readable.
    for e in std::fs::read_dir(m.path("busy")).unwrap() {
        std::fs::read(e.unwrap().path()).unwrap();
    }
    std::fs::write(m.path("after restore"), b"new").unwrap();
    m.unmount();
}
