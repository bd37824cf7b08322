//! `nectar umount`: unmount a volume; `--force` also clears a mount whose process died.

use anyhow::{bail, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct UmountArgs {
    /// The mount point.
    mountpoint: PathBuf,
    /// Abort the FUSE connection and detach the mount even if it is busy or its process
    /// is gone.
    #[arg(short, long)]
    force: bool,
}

/// The FUSE connection number of a mount (its device minor number).
fn fuse_connection(mp: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let target = mp.to_str()?;
    info.lines().rev().find_map(|line| {
        let f: Vec<&str> = line.split(' ').collect();
        (f.get(4)? == &target).then(|| f.get(2)?.split(':').nth(1).map(str::to_string))?
    })
}

/// A plain unmount; false if it failed (busy, or not permitted).
pub(crate) fn unmount(mp: &Path) -> bool {
    let ok = |c: &mut Command| {
        c.stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    ok(Command::new("fusermount3").arg("-u").arg(mp)) || ok(Command::new("umount").arg(mp))
}

fn busy(mp: &Path) -> bool {
    Command::new("fusermount3")
        .arg("-u")
        .arg(mp)
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stderr).contains("busy"))
}

/// Aborts the kernel connection (so nothing waits on a dead process) and detaches.
pub(crate) fn lazy_unmount(mp: &Path) {
    if let Some(conn) = fuse_connection(mp) {
        let dir = Path::new("/sys/fs/fuse/connections");
        if !dir.join(&conn).exists() {
            let _ = Command::new("mount")
                .args(["-t", "fusectl", "fusectl", "/sys/fs/fuse/connections"])
                .status();
        }
        let _ = std::fs::write(dir.join(&conn).join("abort"), "1");
    }
    let _ = Command::new("umount").arg("-l").arg(mp).status();
    if crate::mount::mount_type(mp).is_some() {
        let _ = Command::new("fusermount3").arg("-uz").arg(mp).status();
    }
}

pub fn run(a: UmountArgs) -> Result<()> {
    let mp = if a.mountpoint.is_absolute() {
        a.mountpoint.clone()
    } else {
        std::env::current_dir()?.join(&a.mountpoint)
    };
    let Some(typ) = crate::mount::mount_type(&mp) else {
        bail!("{} is not mounted", mp.display());
    };
    if !typ.starts_with("fuse") {
        bail!("{} is a {typ} mount, not a Nectar volume", mp.display());
    }
    if a.force {
        lazy_unmount(&mp);
    } else if !unmount(&mp) {
        if busy(&mp) {
            bail!(
                "{} is busy (files are open there); close them, or use --force",
                mp.display()
            );
        }
        bail!(
            "cannot unmount {}: try `nectar umount --force {}`",
            mp.display(),
            mp.display()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while crate::mount::mount_type(&mp).is_some() {
        if Instant::now() > deadline {
            bail!("{} is still mounted; try --force", mp.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
