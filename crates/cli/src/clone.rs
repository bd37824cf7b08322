//! `nectar clone`: copies a file or a tree of a mounted volume by sharing its data, so
//! no block is read or written.
//!
//! The copy goes through the mount: directories, symlinks and special files are made
//! as any program makes them, and each file's content is copied with
//! `copy_file_range`, which the mount turns into new records pointing at the source's
//! slices (their reference counts go up, `Meta::copy_file_range`). A file that cannot be
//! copied that way (another volume, a file system that would copy data) is an error,
//! never a slow copy. Files go `--threads` at a time; hard links inside the tree stay
//! hard links; user xattrs are copied. The copies belong to the caller and get the
//! source's permission bits; `--preserve` also keeps owners and times.

use anyhow::{bail, Context, Result};
use clap::Args;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

#[derive(Args)]
pub struct CloneArgs {
    /// The file or directory to copy, inside a mounted volume.
    src: PathBuf,
    /// Where the copy goes (must not exist), in the same volume.
    dst: PathBuf,
    /// Also keep owners and times (as root; a user keeps the times only).
    #[arg(long)]
    preserve: bool,
    /// Files copied at once.
    #[arg(short = 'p', long, default_value_t = 10)]
    threads: usize,
}

#[derive(Default)]
struct Counts {
    files: AtomicU64,
    bytes: AtomicU64,
    others: AtomicU64,
}

pub fn run(a: CloneArgs) -> Result<()> {
    let top = fs::symlink_metadata(&a.src).with_context(|| format!("{}", a.src.display()))?;
    if fs::symlink_metadata(&a.dst).is_ok() {
        bail!(
            "{} exists: clone makes a new file or directory",
            a.dst.display()
        );
    }
    if top.is_dir() && a.dst.starts_with(&a.src) {
        bail!("{} is inside {}", a.dst.display(), a.src.display());
    }
    let counts = Counts::default();
    let errors: Mutex<Vec<String>> = Mutex::default();
    // Directories made, with the source's metadata, for their times at the end.
    let mut dirs: Vec<(PathBuf, fs::Metadata)> = Vec::new();
    let linked: Mutex<HashMap<(u64, u64), PathBuf>> = Mutex::default();
    let (tx, rx) = mpsc::sync_channel::<(PathBuf, PathBuf, fs::Metadata)>(4 * a.threads.max(1));
    let rx = Mutex::new(rx);
    let walked: Result<()> = std::thread::scope(|s| {
        for _ in 0..a.threads.max(1) {
            s.spawn(|| loop {
                let next = rx.lock().recv();
                let Ok((src, dst, md)) = next else { return };
                if let Err(e) = copy_node(&src, &dst, &md, a.preserve, &linked, &counts) {
                    errors.lock().push(format!("{}: {e:#}", src.display()));
                }
            });
        }
        let mut stack = vec![(a.src.clone(), a.dst.clone(), top.clone())];
        while let Some((src, dst, md)) = stack.pop() {
            if !md.is_dir() {
                if md.nlink() > 1 {
                    // Names of one file are made here, in order, so a second name is
                    // never linked before the first exists.
                    if let Err(e) = copy_node(&src, &dst, &md, a.preserve, &linked, &counts) {
                        errors.lock().push(format!("{}: {e:#}", src.display()));
                    }
                } else if tx.send((src, dst, md)).is_err() {
                    break;
                }
                continue;
            }
            fs::create_dir(&dst).with_context(|| format!("making {}", dst.display()))?;
            copy_xattrs(&src, &dst);
            for e in fs::read_dir(&src).with_context(|| format!("{}", src.display()))? {
                let e = e?;
                let child = e.path();
                let cmd = fs::symlink_metadata(&child)?;
                stack.push((child, dst.join(e.file_name()), cmd));
            }
            dirs.push((dst, md));
        }
        drop(tx);
        Ok(())
    });
    walked?;
    // A directory gets its mode (and times) once filled: a read-only source directory
    // would otherwise refuse the copy's own entries.
    for (dst, md) in dirs.iter().rev() {
        let done = fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                if a.preserve {
                    preserve(dst, md, false)
                } else {
                    Ok(())
                }
            });
        if let Err(e) = done {
            errors.lock().push(format!("{}: {e:#}", dst.display()));
        }
    }
    let errors = errors.into_inner();
    for e in errors.iter().take(20) {
        eprintln!("nectar clone: {e}");
    }
    println!(
        "cloned {} files ({} bytes shared, none copied), {} directories, {} others",
        counts.files.load(Ordering::Relaxed),
        counts.bytes.load(Ordering::Relaxed),
        dirs.len(),
        counts.others.load(Ordering::Relaxed)
    );
    if !errors.is_empty() {
        bail!("{} entries could not be cloned", errors.len());
    }
    Ok(())
}

/// Copies one non-directory.
fn copy_node(
    src: &Path,
    dst: &Path,
    md: &fs::Metadata,
    keep: bool,
    linked: &Mutex<HashMap<(u64, u64), PathBuf>>,
    counts: &Counts,
) -> Result<()> {
    if md.nlink() > 1 {
        let mut seen = linked.lock();
        if let Some(first) = seen.get(&(md.dev(), md.ino())) {
            return fs::hard_link(first, dst).with_context(|| format!("linking {}", dst.display()));
        }
        seen.insert((md.dev(), md.ino()), dst.to_path_buf());
    }
    let ft = md.file_type();
    if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
        counts.others.fetch_add(1, Ordering::Relaxed);
    } else if ft.is_file() {
        share(src, dst, md)?;
        counts.files.fetch_add(1, Ordering::Relaxed);
        counts.bytes.fetch_add(md.len(), Ordering::Relaxed);
    } else {
        let c = CString::new(dst.as_os_str().as_bytes())?;
        // SAFETY: a valid path; mode and device as the source has them.
        if unsafe { libc::mknod(c.as_ptr(), md.mode(), md.rdev()) } != 0 {
            return Err(std::io::Error::last_os_error()).context("mknod");
        }
        counts.others.fetch_add(1, Ordering::Relaxed);
    }
    if !ft.is_symlink() {
        copy_xattrs(src, dst);
    }
    if keep {
        preserve(dst, md, ft.is_symlink())?;
    }
    Ok(())
}

/// Gives `dst` (new) the content of `src` by sharing its slices.
fn share(src: &Path, dst: &Path, md: &fs::Metadata) -> Result<()> {
    let from = File::open(src)?;
    let to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(md.mode() & 0o7777)
        .open(dst)?;
    to.set_permissions(fs::Permissions::from_mode(md.mode() & 0o7777))?;
    let mut off: u64 = 0;
    while off < md.len() {
        let (mut off_in, mut off_out) = (off as i64, off as i64);
        let want = (md.len() - off).min(1 << 30) as usize;
        // SAFETY: two open descriptors and offsets that live through the call.
        let n = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                &mut off_in,
                to.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(
                e.raw_os_error(),
                Some(libc::EXDEV) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
            ) {
                bail!("cannot share the data of {} here ({e}): source and copy must be in one mounted Nectar volume", src.display());
            }
            return Err(e).context("copy_file_range");
        }
        if n == 0 {
            break; // the source got shorter meanwhile
        }
        off += n as u64;
    }
    Ok(())
}

/// Copies the user xattrs; failures are ignored (a volume mounted without xattrs).
fn copy_xattrs(src: &Path, dst: &Path) {
    let (Ok(s), Ok(d)) = (
        CString::new(src.as_os_str().as_bytes()),
        CString::new(dst.as_os_str().as_bytes()),
    ) else {
        return;
    };
    let mut names = vec![0u8; 64 << 10];
    // SAFETY: valid paths and buffers of the lengths given.
    let n = unsafe { libc::llistxattr(s.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return;
    }
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| n.starts_with(b"user."))
    {
        let Ok(cn) = CString::new(name) else { continue };
        let mut value = vec![0u8; 64 << 10];
        // SAFETY: as above.
        let len = unsafe {
            libc::lgetxattr(
                s.as_ptr(),
                cn.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len >= 0 {
            // SAFETY: as above.
            unsafe {
                libc::lsetxattr(
                    d.as_ptr(),
                    cn.as_ptr(),
                    value.as_ptr().cast(),
                    len as usize,
                    0,
                )
            };
        }
    }
}

/// Gives `dst` the owner (as root) and times of `md`.
fn preserve(dst: &Path, md: &fs::Metadata, symlink: bool) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::lchown(dst, Some(md.uid()), Some(md.gid()))?;
        if !symlink {
            fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))?;
        }
    }
    let c = CString::new(dst.as_os_str().as_bytes())?;
    let times = [
        libc::timespec {
            tv_sec: md.atime(),
            tv_nsec: md.atime_nsec(),
        },
        libc::timespec {
            tv_sec: md.mtime(),
            tv_nsec: md.mtime_nsec(),
        },
    ];
    // SAFETY: a valid path and two timespecs.
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error()).context("utimensat");
    }
    Ok(())
}
