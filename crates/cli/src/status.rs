//! `nectar status` and `nectar info`.

use anyhow::{bail, Context, Result};
use clap::Args;
use nectar_chunk::DiskCacheConfig;
use nectar_meta::Meta;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

#[derive(Args)]
pub struct StatusArgs {
    /// Metadata engine URL of the volume.
    meta_url: String,
    /// Cache directories of this node's mounts, to report the blocks `--writeback`
    /// staged there and has not uploaded yet (as given to `mount`).
    #[arg(long, value_name = "DIRS")]
    cache_dir: Option<String>,
    /// Also count the tree (files, directories, symlinks, bytes), the trash and what
    /// waits for release; walks the whole volume.
    #[arg(long)]
    more: bool,
}

#[derive(Args)]
pub struct InfoArgs {
    /// Paths inside a mounted volume.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

pub fn run(a: StatusArgs) -> Result<()> {
    let meta = Meta::connect(&crate::meta_url(&a.meta_url))?;
    let fmt = meta.load()?;
    let stat = meta.statfs()?;
    let now = nectar_meta::Time::now().sec;
    let sessions: Vec<serde_json::Value> = meta
        .list_sessions()?
        .into_iter()
        .map(|s| {
            serde_json::json!({
                "Sid": s.sid,
                "Expire": s.expire,
                "Alive": s.expire >= now,
                "Version": s.info.version,
                "HostName": s.info.host_name,
                "MountPoint": s.info.mount_point,
                "ProcessID": s.info.process_id,
                "Sustained": s.sustained,
            })
        })
        .collect();
    let staging: Vec<serde_json::Value> = crate::mount::cache_dirs(a.cache_dir.as_deref())
        .map(|dirs| DiskCacheConfig::new(dirs, fmt.uuid.clone()).staged_on_disk())
        .unwrap_or_default()
        .into_iter()
        .map(|s| {
            serde_json::json!({
                "Dir": s.dir,
                "Blocks": s.blocks,
                "Bytes": s.bytes,
                "OldestAgeSeconds": s.oldest.and_then(|t| t.elapsed().ok()).map(|d| d.as_secs()),
            })
        })
        .collect();
    let more = if a.more {
        Some(meta.volume_counts(10)?)
    } else {
        None
    };
    let mut out = serde_json::json!({
        "Setting": fmt.redacted(),
        "Usage": { "UsedSpace": stat.total_space - stat.avail_space, "UsedInodes": stat.used_inodes },
        "Sessions": sessions,
        "Staging": staging,
        "Trash": {
            "Days": fmt.trash_days,
            "Hours": meta.trash_hours()?.into_iter().map(|(h, _)| h).collect::<Vec<_>>(),
        },
    });
    if let Some(more) = more {
        out["More"] = serde_json::to_value(more)?;
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// The value of xattr `name` of `path`, read with one call into a buffer of `cap`
/// bytes (ERANGE if it is longer). One call matters for the virtual xattrs, which do
/// their work each time they are read.
pub(crate) fn getxattr_once(
    path: &CString,
    name: &CString,
    cap: usize,
) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; cap];
    // SAFETY: the pointers are valid NUL-terminated strings and a buffer of `cap` bytes.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

fn getxattr(path: &CString, name: &CString) -> std::io::Result<Vec<u8>> {
    // SAFETY: valid NUL-terminated strings; a null buffer of length 0 asks for the size.
    let len = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    if len < 0 {
        return Err(std::io::Error::last_os_error());
    }
    getxattr_once(path, name, len as usize + 4096)
}

pub fn info(a: InfoArgs) -> Result<()> {
    let name = CString::new(nectar_vfs::INFO_XATTR)?;
    for p in &a.paths {
        let c = CString::new(p.as_os_str().as_bytes()).context("path contains a NUL byte")?;
        match getxattr(&c, &name) {
            Ok(report) => println!("{}:\n{}", p.display(), String::from_utf8_lossy(&report)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                bail!("{}: no such file or directory", p.display())
            }
            Err(e) => bail!("{}: not inside a mounted Nectar volume ({e})", p.display()),
        }
    }
    Ok(())
}
