//! `nectar summary`: the size, directories and files of a tree of a mounted volume,
//! with its largest subtrees, computed by the mount on the metadata side (one walk,
//! no `stat` per file through the kernel).
//!
//! The mount answers the virtual xattr `nectar.summary.DEPTH.ENTRIES` of a directory
//! with a JSON [`Summary`]; the reply of an xattr holds at most 64 KiB, so a summary
//! too large to fit asks for a smaller `--depth` or `--entries`.

use anyhow::{bail, Context, Result};
use clap::Args;
use nectar_meta::Summary;
use nectar_vfs::SUMMARY_XATTR_PREFIX;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct SummaryArgs {
    /// A directory or file inside a mounted volume.
    path: PathBuf,
    /// Levels of subdirectories shown.
    #[arg(short, long, default_value_t = 2)]
    depth: usize,
    /// The largest entries shown per directory; the others are summed in one line.
    #[arg(short, long, default_value_t = 10)]
    entries: usize,
    /// Comma-separated values (path, size, length, dirs, files; bytes) instead of a
    /// table.
    #[arg(long)]
    csv: bool,
}

pub fn run(a: SummaryArgs) -> Result<()> {
    let c = CString::new(a.path.as_os_str().as_bytes()).context("path contains a NUL byte")?;
    let name = CString::new(format!("{SUMMARY_XATTR_PREFIX}{}.{}", a.depth, a.entries))?;
    let json = match crate::status::getxattr_once(&c, &name, 64 << 10) {
        Ok(v) => v,
        Err(e) => match e.raw_os_error() {
            Some(libc::ERANGE) | Some(libc::E2BIG) => bail!(
                "{}: the summary is larger than a reply can hold; ask for a smaller --depth or --entries",
                a.path.display()
            ),
            Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => bail!(
                "{}: not inside a mounted Nectar volume",
                a.path.display()
            ),
            _ => bail!("{}: {e}", a.path.display()),
        },
    };
    let summary: Summary = serde_json::from_slice(&json).context("the mount's summary")?;
    let mut rows = Vec::new();
    flatten(&summary, &a.path, &mut rows);
    if a.csv {
        println!("path,size,length,dirs,files");
        for (path, s) in rows {
            println!(
                "{},{},{},{},{}",
                csv_field(&path),
                s.size,
                s.length,
                s.dirs,
                s.files
            );
        }
        return Ok(());
    }
    let width = rows
        .iter()
        .map(|(p, _)| p.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<width$}  {:>10}  {:>10}  {:>10}",
        "PATH", "SIZE", "DIRS", "FILES"
    );
    for (path, s) in rows {
        println!(
            "{path:<width$}  {:>10}  {:>10}  {:>10}",
            human(s.size),
            s.dirs,
            s.files
        );
    }
    Ok(())
}

/// The rows of a summary, depth first: the path shown and the summary's own totals.
fn flatten<'s>(s: &'s Summary, path: &Path, rows: &mut Vec<(String, &'s Summary)>) {
    rows.push((path.display().to_string(), s));
    for c in &s.children {
        flatten(c, &path.join(&c.name), rows);
    }
    if let Some(o) = &s.others {
        rows.push((path.join("...").display().to_string(), o));
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
