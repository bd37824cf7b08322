//! The operator's measuring tools on real stores and mounts: `nectar objbench` checks
//! a store and measures it, refusing one that does not work; `nectar bench` measures a
//! mount and leaves nothing behind.

mod common;

use common::*;
use std::fs;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn objbench_checks_and_measures_a_store_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let out = nectar_ok(&[
        "objbench",
        bucket.to_str().unwrap(),
        "--blocks",
        "4",
        "--block-size",
        "256",
        "--small-objects",
        "20",
        "--small-object-size",
        "4",
    ]);
    let text = stdout(&out);
    assert_eq!(text.matches(" pass").count(), 7, "{text}");
    assert!(!text.contains("FAIL"), "{text}");
    for op in [
        "put 256 KiB",
        "get 256 KiB",
        "put 4 KiB",
        "get 4 KiB",
        "head",
        "list",
        "delete",
    ] {
        let line = text
            .lines()
            .skip_while(|l| !l.starts_with("OPERATION"))
            .find(|l| l.starts_with(op))
            .unwrap_or_else(|| panic!("{op}: {text}"));
        assert!(
            ["good", "fair", "slow"].iter().any(|v| line.contains(v)),
            "no verdict: {line}"
        );
    }
    // Nothing is left in the bucket.
    let left: Vec<_> = walk(&bucket);
    assert!(left.is_empty(), "{left:?}");
    // A store that cannot be used is refused with the reason.
    let file = dir.path().join("plain");
    fs::write(&file, b"x").unwrap();
    let out = nectar(&["objbench", file.join("sub").to_str().unwrap()]);
    assert!(!out.status.success());
    let out = nectar(&["objbench", "--storage", "s4", "x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown storage type"));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn bench_measures_a_mount_and_leaves_nothing() {
    require_fuse!();
    let vol = Volume::new(&["--trash-days", "0"]);
    let m = vol.mount("b", &[]);
    let out = nectar_ok(&[
        "bench",
        m.path("").to_str().unwrap(),
        "--big-file-size",
        "8",
        "--small-files",
        "20",
        "--threads",
        "2",
    ]);
    let text = stdout(&out);
    for item in [
        "write big file",
        "read big file",
        "write small file",
        "read small file",
        "stat file",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(item))
            .unwrap_or_else(|| panic!("{item}: {text}"));
        let speed: f64 = line[item.len()..]
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!(speed > 0.0, "{line}");
    }
    assert_eq!(
        fs::read_dir(m.path("")).unwrap().count(),
        0,
        "bench left files"
    );
    let out = nectar(&["bench", m.path("missing").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
    m.unmount();
}
