//! The operator's commands on a real volume: `config` changes settings and moves the
//! volume to a copy of its bucket (refusing a bucket that does not hold its data), and
//! `destroy` asks for the UUID, refuses while the volume is mounted, then removes every
//! object and the metadata; `compact` defragments files through the mount.

mod common;

use common::*;

fn setting(url: &str) -> serde_json::Value {
    let out = nectar_ok(&["status", url]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["Setting"].clone()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn config_changes_settings_and_moves_the_bucket() {
    require_fuse!();
    let vol = Volume::new(&[]);
    let m = vol.mount("mnt", &[]);
    std::fs::write(m.path("f"), b"moved with its bucket").unwrap();
    m.unmount();

    nectar_ok(&[
        "config",
        &vol.meta_url,
        "--trash-days",
        "0",
        "--capacity",
        "2",
        "--inodes",
        "1000",
    ]);
    let s = setting(&vol.meta_url);
    assert_eq!(s["TrashDays"], 0, "{s}");
    assert_eq!(s["Capacity"], 2u64 << 30, "{s}");
    assert_eq!(s["Inodes"], 1000, "{s}");

    // An empty directory holds none of the volume's data.
    let empty = vol.path("empty");
    let out = nectar(&["config", &vol.meta_url, "--bucket", empty.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("holds no data of volume testvol"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        setting(&vol.meta_url)["Bucket"],
        format!("{}/", vol.path("data").display())
    );

    // A copy of the bucket does.
    let copy = vol.path("copy");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(vol.path("data"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    nectar_ok(&["config", &vol.meta_url, "--bucket", copy.to_str().unwrap()]);
    assert_eq!(
        setting(&vol.meta_url)["Bucket"],
        format!("{}/", copy.display())
    );
    std::fs::remove_dir_all(vol.path("data")).unwrap();
    let m = vol.mount("mnt", &[]);
    assert_eq!(
        std::fs::read(m.path("f")).unwrap(),
        b"moved with its bucket"
    );
    m.unmount();
}

#[test]
fn destroy_needs_the_uuid_and_no_mount() {
    require_fuse!();
    let vol = Volume::new(&[]);
    let uuid = setting(&vol.meta_url)["UUID"].as_str().unwrap().to_string();
    let m = vol.mount("mnt", &[]);
    std::fs::write(m.path("f"), vec![5u8; 100_000]).unwrap();

    let wrong = nectar(&[
        "destroy",
        &vol.meta_url,
        "00000000-0000-0000-0000-000000000000",
    ]);
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains(&format!("has UUID {uuid}")),
        "{}",
        stderr(&wrong)
    );
    let busy = nectar(&["destroy", &vol.meta_url, &uuid]);
    assert!(!busy.status.success());
    assert!(
        stderr(&busy).contains("is mounted by 1 client(s)"),
        "{}",
        stderr(&busy)
    );
    m.unmount();

    let done = nectar_ok(&["destroy", &vol.meta_url, &uuid]);
    assert!(stderr(&done).contains("destroyed"), "{}", stderr(&done));
    assert!(
        files_under(&vol.path("data")).is_empty(),
        "{:?}",
        files_under(&vol.path("data"))
    );
    let gone = nectar(&["status", &vol.meta_url]);
    assert!(!gone.status.success());
    assert!(stderr(&gone).contains("no volume"), "{}", stderr(&gone));
}

/// `nectar compact` rewrites a fragmented file as one slice per chunk through the mount;
/// the content stays, and with the trash on the replaced data is kept as delayed slices.
#[test]
fn compact_rewrites_fragmented_files() {
    require_fuse!();
    use std::os::unix::fs::FileExt;
    let vol = Volume::new(&[]);
    let m = vol.mount("mnt", &[]);
    std::fs::create_dir(m.path("d")).unwrap();
    let mut want = vec![0u8; 1 << 20];
    Pattern::new(9).fill(&mut want);
    std::fs::write(m.path("d/f"), &want).unwrap();
    for i in 0..10u64 {
        // Each close commits one more slice record in the first chunk.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(m.path("d/f"))
            .unwrap();
        let at = i * 70_000;
        let patch = vec![i as u8; 1000];
        f.write_all_at(&patch, at).unwrap();
        want[at as usize..at as usize + 1000].copy_from_slice(&patch);
    }
    std::fs::write(m.path("d/small"), b"one slice").unwrap();
    let out = nectar_ok(&["compact", m.path("d").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("2 files: 1 chunks compacted, 11 slice records now 1"),
        "{text}"
    );
    assert_eq!(std::fs::read(m.path("d/f")).unwrap(), want);
    let out = nectar_ok(&["status", &vol.meta_url, "--more"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["More"]["DelayedSlices"], 11, "{status}");
    let again = nectar_ok(&["compact", m.path("d/f").to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("1 files: 0 chunks compacted"),
        "{again:?}"
    );
    m.unmount();
    // The data reads the same from a fresh mount.
    let m = vol.mount("mnt", &[]);
    assert_eq!(std::fs::read(m.path("d/f")).unwrap(), want);
    m.unmount();
}

/// `nectar summary` counts a tree on the metadata side: totals, the largest entries per
/// directory down to the depth asked, the rest summed.
#[test]
fn summary_counts_a_tree() {
    require_fuse!();
    let vol = Volume::new(&[]);
    let m = vol.mount("mnt", &[]);
    std::fs::create_dir_all(m.path("t/big/deeper")).unwrap();
    std::fs::create_dir_all(m.path("t/small")).unwrap();
    std::fs::write(m.path("t/big/deeper/f"), vec![1u8; 100_000]).unwrap();
    for i in 0..5 {
        std::fs::write(m.path(&format!("t/small/s{i}")), b"tiny").unwrap();
    }
    let top = m.path("t").to_str().unwrap().to_string();
    let csv = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["summary", &top, "--csv"];
        all.extend_from_slice(args);
        let out = nectar_ok(&all);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.replace(&top, "T"))
            .collect()
    };
    // 4 KiB per directory and small file, 100,000 bytes rounded up to 4 KiB.
    let big = 102_400 + 2 * 4096;
    assert_eq!(
        csv(&["--depth", "1"]),
        [
            "path,size,length,dirs,files".to_string(),
            format!("T,{},{},4,6", big + 4096 + 6 * 4096, 100_000 + 20),
            format!("T/big,{big},100000,2,1"),
            format!("T/small,{},20,1,5", 6 * 4096),
        ]
    );
    assert_eq!(
        csv(&["--depth", "2", "--entries", "2"])[4..],
        [
            "T/small,24576,20,1,5".to_string(),
            "T/small/s0,4096,4,0,1".to_string(),
            "T/small/s1,4096,4,0,1".to_string(),
            "T/small/...,12288,12,0,3".to_string(),
        ]
    );
    let out = nectar(&["summary", "/tmp"]);
    assert!(!out.status.success());
    m.unmount();
}

/// `nectar clone` copies a tree through the mount by sharing slices: no object is
/// added, the copy reads the same, a change to one side leaves the other alone, and
/// the copy outlives its source.
#[test]
fn clone_shares_data_and_outlives_its_source() {
    require_fuse!();
    use std::os::unix::fs::MetadataExt;
    let vol = Volume::new(&["--trash-days", "0"]);
    let m = vol.mount("mnt", &[]);
    let mut big = vec![0u8; 5 << 20];
    Pattern::new(4).fill(&mut big);
    std::fs::create_dir_all(m.path("src/sub")).unwrap();
    std::fs::write(m.path("src/big"), &big).unwrap();
    std::fs::write(m.path("src/sub/small"), b"small").unwrap();
    std::fs::hard_link(m.path("src/sub/small"), m.path("src/sub/link")).unwrap();
    std::os::unix::fs::symlink("../big", m.path("src/sub/sym")).unwrap();
    // A read-only directory is copied with its mode, by a user too.
    std::fs::create_dir(m.path("src/ro")).unwrap();
    std::fs::write(m.path("src/ro/in"), b"inside").unwrap();
    std::fs::set_permissions(
        m.path("src/ro"),
        std::os::unix::fs::PermissionsExt::from_mode(0o555),
    )
    .unwrap();
    let objects = || files_under(&vol.path("data/testvol/chunks")).len();
    let before = objects();

    let out = nectar_ok(&[
        "clone",
        m.path("src").to_str().unwrap(),
        m.path("dst").to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("cloned 3 files (5242891 bytes shared"),
        "{text}"
    );
    assert_eq!(std::fs::read(m.path("dst/ro/in")).unwrap(), b"inside");
    assert_eq!(
        std::fs::metadata(m.path("dst/ro")).unwrap().mode() & 0o777,
        0o555
    );
    let bin = open_to_all(&vol, &m);
    let out = as_user(
        1000,
        &format!(
            "{} clone '{}' '{}'",
            bin.display(),
            m.path("src/ro").display(),
            m.path("mine").display()
        ),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(m.path("mine/in")).unwrap(), b"inside");
    assert_eq!(objects(), before, "no data was copied");
    assert_eq!(std::fs::read(m.path("dst/big")).unwrap(), big);
    assert_eq!(std::fs::read(m.path("dst/sub/link")).unwrap(), b"small");
    assert_eq!(
        std::fs::metadata(m.path("dst/sub/small")).unwrap().nlink(),
        2
    );
    assert_eq!(
        std::fs::read_link(m.path("dst/sub/sym")).unwrap().to_str(),
        Some("../big")
    );
    // Copy on write: each side changes alone.
    std::fs::write(m.path("dst/sub/small"), b"changed").unwrap();
    assert_eq!(std::fs::read(m.path("src/sub/small")).unwrap(), b"small");
    let out = nectar(&[
        "clone",
        m.path("src").to_str().unwrap(),
        m.path("dst").to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "a clone over an existing path");
    // The copy outlives its source.
    nectar_ok(&["rmr", m.path("src").to_str().unwrap()]);
    m.unmount();
    let m = vol.mount("mnt", &[]);
    assert_eq!(std::fs::read(m.path("dst/big")).unwrap(), big);
    m.unmount();
}
