//! A file removed on one mount while another mount reads it (no trash): the reader
//! reads it to the end, byte for byte, past the grace period; its blocks stay in the
//! bucket until the reader closes it, and go after. (With `--heartbeat 1` the grace
//! period, the session timeout, is 5 s.)

mod common;

use common::*;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

#[test]
fn a_reader_on_another_mount_keeps_a_removed_file_until_it_closes_it() {
    require_fuse!();
    let vol = Volume::new(&["--trash-days", "0"]);
    let fast = ["--heartbeat", "1"];
    let a = vol.mount("a", &fast);
    let b = vol.mount("b", &fast);
    let objects = || files_under(&vol.path("data")).len();
    let empty = objects();
    let mut content = vec![0u8; 24 << 20];
    Pattern::new(7).fill(&mut content);
    fs::write(a.path("f"), &content).unwrap();
    let stored = objects();
    assert!(stored > empty, "the file's blocks are in the bucket");

    // B reads the first half, then A removes the file.
    let mut r = fs::File::open(b.path("f")).unwrap();
    let mut first = vec![0u8; 12 << 20];
    r.read_exact(&mut first).unwrap();
    assert!(first == content[..12 << 20]);
    std::thread::sleep(Duration::from_millis(1500)); // B's heartbeat publishes the open
    fs::remove_file(a.path("f")).unwrap();
    assert!(!a.path("f").exists());

    // Past the grace period and a few rounds of the deleting job: B reads on.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(objects(), stored, "no block of the open file deleted");
    r.seek(SeekFrom::Start(12 << 20)).unwrap();
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(
        rest == content[12 << 20..],
        "the second half, read after the removal"
    );

    // Once B closes it, the blocks go.
    drop(r);
    let deadline = Instant::now() + Duration::from_secs(30);
    while objects() > empty {
        assert!(
            Instant::now() < deadline,
            "the blocks of the closed file were never deleted ({} objects, {empty} before)",
            objects()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    a.unmount();
    b.unmount();
}
