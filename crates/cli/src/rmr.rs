//! `nectar rmr`: removes trees of a mounted volume in parallel on the metadata side.
//!
//! The mount does the work (as JuiceFS's `rmr` has its mount do it), so the removals run
//! as transactions of its own session, `unlink` and `rmdir` with the caller's rights, 50
//! at a time (4 on an engine inside the mount's process): reading the virtual xattr
//! [`RMR_XATTR`] of a directory empties it and answers with the count. The directory
//! itself is then removed through the kernel, which so forgets it at once. With the
//! trash on, what is removed goes there (`--skip-trash`, root only, frees at once).

use anyhow::{bail, Context, Result};
use clap::Args;
use nectar_vfs::{RMR_SKIP_TRASH_XATTR, RMR_XATTR};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct RmrArgs {
    /// Directories or files inside a mounted volume.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Remove for good instead of into the trash (root only).
    #[arg(long)]
    skip_trash: bool,
}

pub fn run(a: RmrArgs) -> Result<()> {
    let name = CString::new(if a.skip_trash {
        RMR_SKIP_TRASH_XATTR
    } else {
        RMR_XATTR
    })?;
    for p in &a.paths {
        let start = Instant::now();
        let md = std::fs::symlink_metadata(p).with_context(|| format!("{}", p.display()))?;
        if !md.is_dir() {
            std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
            continue;
        }
        let c = CString::new(p.as_os_str().as_bytes()).context("path contains a NUL byte")?;
        let n = match crate::status::getxattr_once(&c, &name, 64) {
            Ok(answer) => String::from_utf8_lossy(&answer)
                .trim()
                .parse::<u64>()
                .unwrap_or(0),
            Err(e) => match e.raw_os_error() {
                Some(libc::EPERM) if a.skip_trash => {
                    bail!("{}: only root may remove past the trash", p.display())
                }
                Some(libc::EACCES) | Some(libc::EPERM) => {
                    bail!("{}: permission denied ({e})", p.display())
                }
                Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => bail!(
                    "{}: not inside a mounted Nectar volume (or a mount older than this command)",
                    p.display()
                ),
                _ => bail!("{}: {e}", p.display()),
            },
        };
        std::fs::remove_dir(p).with_context(|| format!("removing {}", p.display()))?;
        tracing::info!(
            "{}: {} entries removed in {:.1} s",
            p.display(),
            n + 1,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
