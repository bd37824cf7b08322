//! Volumes on a Kerberized, highly available HDFS (`scripts/start-hdfs.sh`: an MIT KDC,
//! the nameservice `nectarns` with two NameNodes, RPC and data transfer encrypted), as
//! NAVER runs them: the tenant's keytab in `KRB5KEYTAB_BASE64`, the volume under the
//! tenant's own directory.
//!
//! One test runs the whole story in order, because its steps act on the one cluster:
//! `format` refused outside the tenant's directory; the seed's workloads (10,000 small
//! files and a 1 GiB file) written while the active NameNode fails over, then read back
//! byte for byte by a new mount from HDFS; both NameNodes killed and restarted under a
//! writing mount after its tickets expired, so that it must get new ones from the keytab
//! (counted in the KDC's log); Hadoop's own `FsShell` finding the blocks under the
//! volume's prefix and nothing new elsewhere.

mod common;

use common::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Cluster {
    /// `hdfs://nectarns/user/nectar`
    url: String,
    other_url: String,
    dir: String,
    kdc_log: String,
    ticket_seconds: u64,
}

/// The cluster from the environment, with this process's environment set for the mounts
/// it starts (the keytab goes as base64, as a Kubernetes Secret gives it); `None`, saying
/// why, without one.
fn cluster() -> Option<Cluster> {
    let Ok(url) = std::env::var("NECTAR_TEST_HDFS_URL") else {
        eprintln!(
            "skipped: NECTAR_TEST_HDFS_URL is not set (start a cluster with \
             `eval \"$(scripts/start-hdfs.sh DIR)\"`)"
        );
        return None;
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let keytab = std::fs::read(var("NECTAR_TEST_KRB5KEYTAB")).unwrap();
    use base64::Engine;
    std::env::set_var(
        "KRB5KEYTAB_BASE64",
        base64::engine::general_purpose::STANDARD.encode(keytab),
    );
    std::env::remove_var("KRB5KEYTAB");
    std::env::remove_var("KRB5CCNAME");
    std::env::set_var("KRB5PRINCIPAL", var("NECTAR_TEST_KRB5PRINCIPAL"));
    std::env::set_var("KRB5_CONFIG", var("NECTAR_TEST_KRB5_CONFIG"));
    std::env::set_var("HADOOP_CONF_DIR", var("NECTAR_TEST_HADOOP_CONF_DIR"));
    Some(Cluster {
        url,
        other_url: var("NECTAR_TEST_HDFS_OTHER_URL"),
        dir: var("NECTAR_TEST_HDFS_DIR"),
        kdc_log: var("NECTAR_TEST_KDC_LOG"),
        ticket_seconds: var("NECTAR_TEST_HDFS_TICKET_SECONDS").parse().unwrap(),
    })
}

impl Cluster {
    /// `scripts/hdfs-admin.sh DIR ARGS...`, which must succeed; its standard output.
    fn admin(&self, args: &[&str]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/hdfs-admin.sh");
        let out = Command::new(script)
            .arg(&self.dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "hdfs-admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn active_namenode(&self) -> &'static str {
        if self.admin(&["haadmin", "-getServiceState", "nn1"]).trim() == "active" {
            "nn1"
        } else {
            "nn2"
        }
    }

    /// Tickets the KDC issued to the tenant from its key (not from a ticket it held).
    fn tenant_logins(&self) -> usize {
        std::fs::read_to_string(&self.kdc_log)
            .unwrap()
            .lines()
            .filter(|l| l.contains("AS_REQ") && l.contains("ISSUE") && l.contains("nectar@"))
            .count()
    }

    /// Plain files under `path` in HDFS, as Hadoop's FsShell lists them.
    fn files_under(&self, path: &str) -> Vec<String> {
        self.admin(&["fs", "-ls", "-R", path])
            .lines()
            .filter(|l| l.starts_with('-'))
            .filter_map(|l| l.split_whitespace().last().map(String::from))
            .collect()
    }
}

/// Writes `len` bytes of the pattern `seed` to `path`, and runs `meanwhile` (on this
/// thread) once a third of it is written, while the rest is being written.
fn write_pattern(path: &Path, seed: u64, len: usize, meanwhile: impl FnOnce()) {
    std::thread::scope(|s| {
        let writer = s.spawn(move || {
            let mut f = std::fs::File::create(path).unwrap();
            let mut p = Pattern::new(seed);
            let mut buf = vec![0u8; 1 << 20];
            let mut done = 0;
            while done < len {
                let n = buf.len().min(len - done);
                p.fill(&mut buf[..n]);
                f.write_all(&buf[..n]).unwrap();
                done += n;
            }
            f.sync_all().unwrap();
        });
        while std::fs::metadata(path).map_or(0, |m| m.len()) < (len / 3) as u64 {
            assert!(
                !writer.is_finished(),
                "the writer of {path:?} stopped early"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        meanwhile();
        writer.join().unwrap();
    });
}

fn assert_pattern(path: &Path, seed: u64, len: usize) {
    let mut f = std::fs::File::open(path).unwrap();
    let mut p = Pattern::new(seed);
    let mut want = vec![0u8; 1 << 20];
    let mut got = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = want.len().min(len - done);
        p.fill(&mut want[..n]);
        f.read_exact(&mut got[..n]).unwrap();
        assert!(
            got[..n] == want[..n],
            "{path:?} differs in MiB {}",
            done >> 20
        );
        done += n;
    }
    assert_eq!(
        f.read(&mut got).unwrap(),
        0,
        "{path:?} is longer than {len}"
    );
}

fn small_file(i: usize) -> Vec<u8> {
    format!("{i:>99}\n").into_bytes()
}

const SMALL_FILES: usize = 10_000;
const BIG: usize = 1 << 30;
const WRITERS: usize = 8;

#[test]
fn a_volume_on_kerberized_hdfs_survives_failover_restarts_and_ticket_expiry() {
    require_fuse!();
    let Some(c) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let run = format!(
        "nectar-test-{}-{}",
        std::process::id(),
        dir.path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches('.')
            .to_lowercase()
    );
    let bucket = format!("{}/{run}", c.url);
    let prefix_path = bucket.strip_prefix("hdfs://nectarns").unwrap().to_string();

    // Outside the tenant's directory, format names the problem and writes nothing.
    let url = format!("sqlite3://{}/meta.db", dir.path().display());
    let out = nectar(&[
        "format",
        &url,
        "hvol",
        "--storage",
        "hdfs",
        "--bucket",
        &c.other_url,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "format in another tenant's directory succeeded"
    );
    assert!(
        err.contains("permission denied") && err.contains("/user/other/"),
        "{err}"
    );
    assert!(!nectar(&["status", &url]).status.success());

    let before: Vec<String> = c.files_under("/user/nectar");
    nectar_ok(&[
        "format",
        &url,
        "hvol",
        "--storage",
        "hdfs",
        "--bucket",
        &bucket,
    ]);
    let mp = dir.path().join("mnt");
    let m = Mount::start(&url, &mp, &["--cache-size", "0"]);
    let mounted_at = Instant::now();

    // The seed's small files, from several writers at once.
    let small = m.path("small");
    std::fs::create_dir(&small).unwrap();
    let started = Instant::now();
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let small = &small;
            s.spawn(move || {
                for i in (w..SMALL_FILES).step_by(WRITERS) {
                    std::fs::write(small.join(format!("f{i:05}")), small_file(i)).unwrap();
                }
            });
        }
    });
    eprintln!("{SMALL_FILES} small files in {:?}", started.elapsed());

    // A 1 GiB file, the active NameNode failing over to the other a third of the way.
    let from = c.active_namenode();
    let to = if from == "nn1" { "nn2" } else { "nn1" };
    let started = Instant::now();
    write_pattern(&m.path("big"), 1, BIG, || {
        let out = c.admin(&["haadmin", "-failover", from, to]);
        eprintln!("{}", out.trim());
    });
    eprintln!("1 GiB written (with a failover) in {:?}", started.elapsed());
    assert_eq!(c.active_namenode(), to);

    // Both NameNodes crash and come back while a file is written, after the mount's
    // tickets have expired: every connection is new, so the mount must log in again
    // with its keytab.
    let expiry = Duration::from_secs(c.ticket_seconds + 10);
    let renewal = expiry < Duration::from_secs(300);
    if renewal {
        if let Some(wait) = expiry.checked_sub(mounted_at.elapsed()) {
            eprintln!("waiting {wait:?} for the mount's tickets to expire");
            std::thread::sleep(wait);
        }
    } else {
        eprintln!(
            "tickets live {} s: the restart below does not exercise their renewal (start the \
             cluster with NECTAR_HDFS_TICKET_SECONDS=90 for that)",
            c.ticket_seconds
        );
    }
    let logins = c.tenant_logins();
    write_pattern(&m.path("during-restart"), 2, 64 << 20, || {
        c.admin(&["restart"]);
    });
    if renewal {
        assert!(
            c.tenant_logins() > logins,
            "the mount wrote after its tickets expired without logging in again"
        );
    }
    let log = m.unmount();
    assert!(!log.contains("panicked"), "{log}");

    // A new mount, with nothing cached, reads everything back from HDFS.
    let m = Mount::start(&url, &dir.path().join("mnt2"), &["--cache-size", "0"]);
    assert_pattern(&m.path("big"), 1, BIG);
    assert_pattern(&m.path("during-restart"), 2, 64 << 20);
    let mut names: Vec<PathBuf> = std::fs::read_dir(m.path("small"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert_eq!(names.len(), SMALL_FILES);
    for (i, p) in names.iter().enumerate() {
        assert_eq!(std::fs::read(p).unwrap(), small_file(i), "{p:?}");
    }
    m.unmount();

    // Hadoop's own client sees the blocks under the volume's prefix, and nothing new
    // anywhere else in the tenant's directory.
    let after = c.files_under("/user/nectar");
    let new: Vec<&String> = after.iter().filter(|f| !before.contains(f)).collect();
    let blocks = new
        .iter()
        .filter(|f| f.starts_with(&format!("{prefix_path}/hvol/chunks/")))
        .count();
    assert!(blocks >= SMALL_FILES + BIG / (4 << 20), "{blocks} blocks");
    let elsewhere: Vec<&&String> = new
        .iter()
        .filter(|f| !f.starts_with(&format!("{prefix_path}/hvol/")))
        .collect();
    assert!(elsewhere.is_empty(), "outside the prefix: {elsewhere:?}");
}
