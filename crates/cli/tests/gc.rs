//! `nectar gc` on a mounted volume with one object of every class planted: live files,
//! a removed file in the trash and data a truncate replaced (kept as long as the trash),
//! a file removed from the trash while open (pending deletion), blocks of a slice id the mount's
//! session has drawn and not settled (an unfinished write), blocks of ids nothing
//! refers to (leaked), and the volume's UUID object. Every class must come out exact,
//! in objects and bytes, and the total must be what the bucket holds; `--delete` removes
//! the leaked objects only. `status --more` counts the same volume.

mod common;

use common::*;
use std::io::Write;

/// The class line of gc's report: (objects, bytes).
fn class(report: &str, name: &str) -> (u64, u64) {
    let line = report
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {report}"));
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}

fn plant(vol: &Volume, id: u64, len: usize) {
    let key = nectar_chunk::block_key(id, 0, len as u32, false);
    let path = vol.path("data/testvol").join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, vec![7u8; len]).unwrap();
}

#[test]
fn gc_explains_every_object_of_the_bucket() {
    require_fuse!();
    let vol = Volume::new(&[]);
    let m = vol.mount("mnt", &[]);
    let mut big = vec![0u8; 5 << 20];
    Pattern::new(3).fill(&mut big);
    std::fs::write(m.path("a"), &big).unwrap();
    std::fs::write(m.path("b"), [1u8; 100]).unwrap();
    // Removed into the trash, then out of it while open: its data stays until the
    // last close.
    let mut open = std::fs::File::create(m.path("c")).unwrap();
    open.write_all(&[2u8; 200]).unwrap();
    open.sync_all().unwrap();
    std::fs::remove_file(m.path("c")).unwrap();
    let hour = std::fs::read_dir(m.path(".trash"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let trashed = std::fs::read_dir(&hour)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(std::fs::read(&trashed).unwrap(), [2u8; 200]);
    std::fs::remove_file(&trashed).unwrap();
    // In the trash: a removed file, and data a truncate replaced.
    std::fs::write(m.path("d"), [3u8; 300]).unwrap();
    std::fs::remove_file(m.path("d")).unwrap();
    std::fs::write(m.path("e"), [4u8; 400]).unwrap();
    std::fs::File::create(m.path("e")).unwrap();
    // The mount drew ids 1..4097 at its first write and used 1..4: 4000 is unsettled.
    plant(&vol, 4000, 30);
    // Nothing refers to these, and no session may still commit them.
    plant(&vol, 900_000, 10);
    plant(&vol, 5000, 20);

    // `status --more` counts the same volume.
    let out = nectar_ok(&["status", &vol.meta_url, "--more"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let more = &status["More"];
    assert_eq!(more["Files"], 3, "{more}");
    assert_eq!(more["FileBytes"], (5u64 << 20) + 100, "{more}");
    assert_eq!(more["Directories"], 1, "{more}");
    assert_eq!(more["Sustained"], 1, "the removed file still open: {more}");
    assert_eq!(more["PendingDeletions"], 0, "{more}");
    assert_eq!(more["TrashEntries"], 1, "{more}");
    assert_eq!(more["DelayedSlices"], 1, "{more}");

    let out = nectar_ok(&["gc", &vol.meta_url]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(class(&report, "live"), (3, (5 << 20) + 100), "{report}");
    assert_eq!(class(&report, "pending deletion"), (1, 200), "{report}");
    assert_eq!(class(&report, "unfinished writes"), (1, 30), "{report}");
    assert_eq!(class(&report, "leaked"), (2, 30), "{report}");
    assert_eq!(class(&report, "trash"), (2, 700), "{report}");
    // The UUID object.
    assert_eq!(class(&report, "other objects"), (1, 36), "{report}");
    let on_disk: u64 = files_under(&vol.path("data/testvol"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(class(&report, "total").1, on_disk, "{report}");

    // --delete removes the leaked objects and nothing else.
    let out = nectar_ok(&["gc", &vol.meta_url, "--delete"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("deleted 2 leaked objects (30 bytes)"),
        "{text}"
    );
    let again = String::from_utf8_lossy(&nectar_ok(&["gc", &vol.meta_url]).stdout).into_owned();
    assert_eq!(class(&again, "leaked"), (0, 0), "{again}");
    assert_eq!(class(&again, "unfinished writes"), (1, 30), "{again}");
    assert_eq!(class(&again, "pending deletion"), (1, 200), "{again}");
    assert_eq!(class(&again, "trash"), (2, 700), "{again}");
    // With no trash time, --delete expires what the trash kept and deletes the blocks
    // of the delayed slice; the removed file waits as a pending deletion, since the
    // mount is alive and may have it open (see `nectar_meta::readers`).
    nectar_ok(&["config", &vol.meta_url, "--trash-days", "0"]);
    let out = nectar_ok(&["gc", &vol.meta_url, "--delete"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("expired 1 trash entries (1 hours) and 1 delayed slices"),
        "{text}"
    );
    assert!(
        text.contains("deleted 1 leaked objects (400 bytes)"),
        "{text}"
    );
    let again = String::from_utf8_lossy(&nectar_ok(&["gc", &vol.meta_url]).stdout).into_owned();
    assert_eq!(class(&again, "trash"), (0, 0), "{again}");
    assert_eq!(class(&again, "leaked"), (0, 0), "{again}");
    assert_eq!(class(&again, "pending deletion"), (2, 500), "{again}");
    assert_eq!(std::fs::read(m.path("a")).unwrap(), big);
    drop(open);
    m.unmount();
}
