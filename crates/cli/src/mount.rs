//! `nectar mount`: serve a volume through FUSE, in the foreground or as a daemon.
//!
//! With `-d` the command starts itself again in a new session with its output going to
//! the log file, then waits until the mount point is really mounted (or the child died,
//! whose log it then shows), so a script can use the mount as soon as the command
//! returns. SIGINT and SIGTERM commit pending writes, then unmount.

use anyhow::{bail, Context, Result};
use clap::Args;
use nectar_chunk::{
    ChunkConfig, ChunkStore, Compression, DiskCacheConfig, Eviction, VerifyChecksum,
};
use nectar_fuse::{FuseOptions, NectarFs};
use nectar_meta::meta::MetaConfig;
use nectar_meta::{Ctx, Meta, SessionInfo, ROOT_INODE};
use nectar_vfs::{Vfs, VfsConfig};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DAEMON_ENV: &str = "NECTAR_DAEMON_CHILD";

#[derive(Args, Clone)]
pub struct MountArgs {
    /// Metadata engine URL of the volume.
    meta_url: String,
    /// Directory to mount on.
    mountpoint: PathBuf,
    /// Run in the background; returns once the mount is ready.
    #[arg(short = 'd', long)]
    background: bool,
    /// Log file of a background mount.
    #[arg(long, default_value = "/var/log/nectar.log")]
    log: PathBuf,
    /// Where a background mount writes its process id (default: next to the log,
    /// named after the mount point).
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// FUSE options, comma-separated (allow_other, allow_root, writeback_cache, nodev...).
    #[arg(short = 'o')]
    options: Vec<String>,
    /// Mount read-only.
    #[arg(long)]
    read_only: bool,
    /// Turn extended attributes off on this mount, as JuiceFS does unless it is given
    /// --enable-xattr: the kernel then stops asking. Not on a volume with POSIX ACLs.
    #[arg(long)]
    no_xattr: bool,
    /// Keep SELinux labels (the security.selinux xattr), as JuiceFS's flag of the same
    /// name. Without it the label is not supported (EOPNOTSUPP), as on a file system
    /// without labels, so `ls -l` asks for it once instead of once per entry.
    #[arg(long)]
    enable_selinux: bool,
    /// Mount only this subdirectory of the volume.
    #[arg(long)]
    subdir: Option<String>,
    /// Memory for write buffers and readahead, in MiB.
    #[arg(long, default_value_t = 300)]
    buffer_size: u64,
    /// Directories of the local disk cache, separated by ':'; blocks are spread over
    /// them by a consistent hash. "memory" keeps the cache in memory instead, with
    /// --cache-size as its size. [default: /var/nectarCache, or ~/.nectar/cache when not
    /// root]
    #[arg(long, value_name = "DIRS")]
    cache_dir: Option<String>,
    /// Size of the disk cache in MiB, all directories together; 0 turns it off.
    #[arg(long, default_value_t = 102400, value_name = "MiB")]
    cache_size: u64,
    /// Memory cache of decoded blocks in front of the disk cache, in MiB; 0 turns it
    /// off.
    #[arg(long, default_value_t = 256, value_name = "MiB")]
    mem_cache_size: u64,
    /// Share of each cache disk kept free: the cache evicts (or stops growing) below it.
    #[arg(long, default_value_t = 0.1, value_name = "RATIO")]
    free_space_ratio: f64,
    /// What a full cache evicts: 2-random (the older of two random blocks), lru, or
    /// none (a full cache takes no new blocks).
    #[arg(long, default_value = "2-random", value_name = "POLICY")]
    cache_eviction: Eviction,
    /// Drop cached blocks not used for this long (e.g. 3600, 90m, 12h, 7d); 0 keeps
    /// them until evicted.
    #[arg(long, default_value = "0", value_name = "DURATION", value_parser = crate::duration::parse)]
    cache_expire: Duration,
    /// How cached blocks are verified when read: none, full (whole-block reads only),
    /// shrink (the checksummed pieces inside each read) or extend (each read widened to
    /// whole pieces, all checked).
    #[arg(long, default_value = "extend", value_name = "LEVEL")]
    verify_cache_checksum: VerifyChecksum,
    /// Cache only blocks shorter than a full block (small files, file tails): for
    /// large sequential reads that will not come back.
    #[arg(long)]
    cache_partial_only: bool,
    /// Also cache full blocks written by this client (blocks shorter than a full one
    /// always are).
    #[arg(long)]
    cache_large_write: bool,
    /// Write blocks to the disk cache's staging area and commit at once; upload them in
    /// the background. Staged blocks survive a crash of this client and are uploaded
    /// when a client mounts with the same cache directory; until uploaded, other
    /// clients cannot read them. Needs a disk cache.
    #[arg(long)]
    writeback: bool,
    /// With --writeback, wait this long before uploading a staged block (e.g. 10m).
    #[arg(long, default_value = "0", value_name = "DURATION", value_parser = crate::duration::parse)]
    upload_delay: Duration,
    /// With --writeback, upload only between these hours of the day, e.g. 1,6 (local
    /// time; 22,4 spans midnight).
    #[arg(long, value_name = "START,END", value_parser = parse_hours)]
    upload_hours: Option<(u8, u8)>,
    /// Concurrent uploads of blocks.
    #[arg(long, default_value_t = 20)]
    max_uploads: usize,
    /// Concurrent downloads of blocks.
    #[arg(long, default_value_t = 200)]
    max_downloads: usize,
    /// Retries of a failed request to object storage (with backoff from 50 ms doubling
    /// to 10 s: 10 retries give up about 45 s after the first failure). A write whose
    /// blocks cannot be stored fails at fsync or close with EIO.
    #[arg(long, default_value_t = 10, value_name = "N")]
    io_retries: usize,
    /// Time one GET from object storage may take before it is abandoned and retried.
    #[arg(long, default_value = "60", value_name = "DURATION", value_parser = crate::duration::parse)]
    get_timeout: Duration,
    /// Time one PUT to object storage may take before it is abandoned and retried.
    #[arg(long, default_value = "60", value_name = "DURATION", value_parser = crate::duration::parse)]
    put_timeout: Duration,
    /// Bandwidth of all uploads together, in Mbps (megabits per second); 0 for no limit.
    #[arg(long, default_value_t = 0, value_name = "Mbps")]
    upload_limit: u64,
    /// Bandwidth of all downloads together, in Mbps; 0 for no limit.
    #[arg(long, default_value_t = 0, value_name = "Mbps")]
    download_limit: u64,
    /// Whole blocks fetched at once in the background when a block is read in a small
    /// part, so the next read of it is a cache hit; 0 turns this off.
    #[arg(long, default_value_t = 1, value_name = "N")]
    prefetch: usize,
    /// Largest readahead window of a sequential reader, in MiB [default: 8 blocks].
    #[arg(long, value_name = "MiB")]
    max_readahead: Option<u64>,
    /// Reopen a file read-only without asking metadata within this time of the last
    /// check (e.g. 60, 10m; 0 always asks). Changes by other clients are not seen
    /// meanwhile: for read-only datasets.
    #[arg(long, default_value = "0", value_name = "DURATION", value_parser = crate::duration::parse)]
    open_cache: Duration,
    /// Closed files remembered, for --open-cache and to keep their page cache when
    /// they are reopened unchanged; 0 remembers none.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    open_cache_limit: usize,
    /// Serve Prometheus metrics at http://ADDR/metrics (another free port when this one
    /// is taken; empty turns it off). `nectar stats MOUNTPOINT` works either way.
    #[arg(long, default_value = "127.0.0.1:9567", value_name = "ADDR")]
    metrics: String,
    /// Kernel attribute cache, in seconds. On an engine with a change feed (Redis,
    /// etcd) other clients' changes are pushed to the kernel, so this may be long (e.g.
    /// 60) without ever showing a change late; while the feed is down, answers get at
    /// most 1 s.
    #[arg(long, default_value_t = 1.0)]
    attr_cache: f64,
    /// Kernel entry cache of files, in seconds (long is safe with a change feed, as
    /// for --attr-cache).
    #[arg(long, default_value_t = 1.0)]
    entry_cache: f64,
    /// Kernel entry cache of directories, in seconds.
    #[arg(long, default_value_t = 1.0)]
    dir_entry_cache: f64,
    /// Session heartbeat interval, in seconds. A client silent for five heartbeats is
    /// dead: other clients release its locks and its open-but-deleted files.
    #[arg(long, default_value_t = 12)]
    heartbeat: u64,
    /// When reads and listings update atime: noatime (never; no metadata write per
    /// read), relatime (when atime is not after mtime/ctime, or a day old) or
    /// strictatime (every access, at most once a second per file).
    #[arg(long, default_value = "noatime", value_name = "MODE")]
    atime_mode: nectar_meta::AtimeMode,
    /// How long a metadata operation waits, retrying, while the metadata database is
    /// unreachable (down, restarting, failing over) before it fails with EIO, in seconds.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    meta_retry_timeout: f64,
    /// In a directory where changes of entries lately conflicted with other clients',
    /// do not write the directory's mtime if the stored one is younger than this:
    /// clients creating files in one directory stop colliding on its attribute, whose
    /// times then lag by at most that much. Directories nobody else writes in always get
    /// exact times. 0 writes them every time.
    #[arg(long, default_value = "100ms", value_name = "DURATION", value_parser = crate::duration::parse)]
    skip_dir_mtime: Duration,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// Back up the volume's metadata into its bucket this often
    /// (`meta/dump-YYYY-MM-DD-HHMMSS.json.gz`, JuiceFS's dump format, loaded with
    /// `nectar load`); one client per volume does it at a time. 0 turns it off.
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = crate::duration::parse)]
    backup_meta: Duration,
    /// Leave the trash out of the metadata backups.
    #[arg(long)]
    backup_skip_trash: bool,
    /// Leave the internal nodes (`.trash`) out of the root's listing; they can still be
    /// reached by name.
    #[arg(long)]
    hide_internal: bool,
}

fn secs(name: &str, v: f64) -> Result<Duration> {
    if !v.is_finite() || v < 0.0 {
        bail!("--{name} must be a number of seconds >= 0, not {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

/// Whether `path` is a mount point right now (per /proc/self/mountinfo), and its
/// file-system type.
pub(crate) fn mount_type(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let target = path.to_str()?;
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let mp = fields.get(4)?.replace("\\040", " ");
        if mp != target {
            return None;
        }
        let sep = fields.iter().position(|f| *f == "-")?;
        fields.get(sep + 1).map(|s| s.to_string())
    })
}

fn check_mountpoint(mp: &Path) -> Result<PathBuf> {
    let abs = if mp.is_absolute() {
        mp.to_path_buf()
    } else {
        std::env::current_dir()?.join(mp)
    };
    if let Some(t) = mount_type(&abs) {
        bail!(
            "{} is busy: a {t} file system is mounted there already (unmount it with `nectar umount {}`)",
            abs.display(),
            abs.display()
        );
    }
    match std::fs::metadata(&abs) {
        Ok(m) if m.is_dir() => Ok(abs),
        Ok(_) => bail!("mount point {} is not a directory", abs.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "mount point {} does not exist: create it with `mkdir -p {}`",
                abs.display(),
                abs.display()
            )
        }
        Err(e) => bail!("cannot use mount point {}: {e}", abs.display()),
    }
}

pub fn run(a: MountArgs) -> Result<()> {
    let mp = check_mountpoint(&a.mountpoint)?;
    if !a.metrics.is_empty() {
        crate::exporter::parse_addr(&a.metrics)?;
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: load the fuse module (modprobe fuse) or install fuse3");
    }
    if a.background && std::env::var_os(DAEMON_ENV).is_none() {
        return daemonize(&a, &mp);
    }
    serve(&a, &mp)
}

fn pid_file(a: &MountArgs, mp: &Path) -> PathBuf {
    a.pid_file.clone().unwrap_or_else(|| {
        let name: String = mp
            .to_string_lossy()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let dir = a
            .log
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        dir.join(format!("nectar{name}.pid"))
    })
}

/// Starts the serving process in the background and waits for the mount.
fn daemonize(a: &MountArgs, mp: &Path) -> Result<()> {
    use std::os::unix::process::CommandExt;
    if let Some(dir) = a.log.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create log directory {}", dir.display()))?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.log)
        .with_context(|| format!("cannot open log file {}", a.log.display()))?;
    let start_len = log.metadata().map(|m| m.len()).unwrap_or(0);
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(DAEMON_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and only detaches the child from our terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the mount process")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if mount_type(mp).is_some_and(|t| t.starts_with("fuse")) {
            let pf = pid_file(a, mp);
            if let Err(e) = std::fs::write(&pf, format!("{}\n", child.id())) {
                eprintln!(
                    "nectar: warning: cannot write pid file {}: {e}",
                    pf.display()
                );
            }
            eprintln!(
                "nectar: {} is mounted (pid {}, log {})",
                mp.display(),
                child.id(),
                a.log.display()
            );
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read(&a.log).unwrap_or_default();
            let tail = String::from_utf8_lossy(&log[(start_len as usize).min(log.len())..]);
            bail!(
                "the mount process exited ({status}) before the mount was ready:\n{}",
                tail.trim_end()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "the mount was not ready after 60 s; see {}",
                a.log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The cache flags as the chunk store takes them: the memory cache's size and the disk
/// cache, whose directories are created and checked here so a mount that cannot use
/// them fails with the reason.
fn cache_settings(a: &MountArgs, uuid: &str) -> Result<(u64, Option<DiskCacheConfig>)> {
    let no_disk = a.cache_dir.as_deref() == Some("memory") || a.cache_size == 0;
    if no_disk && a.writeback {
        bail!("--writeback stages blocks in the disk cache: give a --cache-dir other than memory and a --cache-size above 0");
    }
    if !a.writeback && (!a.upload_delay.is_zero() || a.upload_hours.is_some()) {
        bail!("--upload-delay and --upload-hours only apply with --writeback");
    }
    let Some(dirs) = cache_dirs(a.cache_dir.as_deref()) else {
        return Ok((a.cache_size << 20, None));
    };
    if a.cache_size == 0 {
        return Ok((a.mem_cache_size << 20, None));
    }
    let cfg = DiskCacheConfig {
        size: a.cache_size << 20,
        free_space_ratio: a.free_space_ratio,
        eviction: a.cache_eviction,
        expire: (!a.cache_expire.is_zero()).then_some(a.cache_expire),
        verify: a.verify_cache_checksum,
        partial_only: a.cache_partial_only,
        large_write: a.cache_large_write,
        writeback: a.writeback,
        upload_delay: a.upload_delay,
        upload_hours: a.upload_hours,
        ..DiskCacheConfig::new(dirs, uuid)
    };
    for warning in cfg.check().map_err(|e| anyhow::anyhow!("{e}"))? {
        tracing::warn!("{warning}");
    }
    Ok((a.mem_cache_size << 20, Some(cfg)))
}

/// `--upload-hours`: two hours of the day, `START,END` (or `START-END`).
fn parse_hours(s: &str) -> std::result::Result<(u8, u8), String> {
    let bad = || format!("'{s}' is not START,END with hours 0 to 23 (e.g. 1,6 or 22,4)");
    let (a, b) = s.split_once([',', '-']).ok_or_else(bad)?;
    let hour = |h: &str| {
        h.trim()
            .parse::<u8>()
            .ok()
            .filter(|h| *h < 24)
            .ok_or_else(bad)
    };
    Ok((hour(a)?, hour(b)?))
}

/// The directories of `--cache-dir` (its default when not given); `None` for `memory`.
pub(crate) fn cache_dirs(flag: Option<&str>) -> Option<Vec<PathBuf>> {
    match flag {
        Some("memory") => None,
        Some(list) => Some(
            list.split(':')
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .collect(),
        ),
        None => Some(vec![default_cache_dir()]),
    }
}

/// `/var/nectarCache` for root (JuiceFS's `/var/jfsCache`), `~/.nectar/cache` otherwise.
fn default_cache_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        // SAFETY: geteuid has no preconditions and cannot fail.
        Some(home) if unsafe { libc::geteuid() } != 0 => Path::new(&home).join(".nectar/cache"),
        _ => PathBuf::from("/var/nectarCache"),
    }
}

/// Connects everything and serves until unmounted or signalled.
fn serve(a: &MountArgs, mp: &Path) -> Result<()> {
    let rt = crate::runtime()?;
    let url = crate::meta_url(&a.meta_url);
    let meta_cfg = MetaConfig {
        retry_timeout: secs("meta-retry-timeout", a.meta_retry_timeout)?,
        session_timeout: Duration::from_secs(5 * a.heartbeat.max(1)),
        skip_dir_mtime: a.skip_dir_mtime,
    };
    let meta = Meta::connect_with(&url, meta_cfg)?;
    let fmt = meta.load()?;
    let compression = Compression::from_str(fmt.compression.as_deref().unwrap_or("none"))
        .map_err(|e| anyhow::anyhow!("volume settings: {e}"))?;
    let store_cfg = crate::store_config(&fmt)?;
    let encrypted = store_cfg.encryption.is_some();
    let store = nectar_object::create_store(&store_cfg)?;
    rt.block_on(nectar_object::check_store(store.as_ref()))
        .context("the volume's object storage is not usable")?;
    if encrypted {
        // A probe written with the key reads back whatever the key; the volume's own
        // objects only open with the right one.
        match rt.block_on(store.get(crate::format::UUID_OBJECT, None)) {
            Ok(_) | Err(nectar_object::Error::NotFound(_)) => {}
            Err(e) => bail!(
                "the RSA key of volume {} does not open its objects ({e}): is it the key the volume was formatted with?",
                fmt.name
            ),
        }
    }
    let (mem_cache_size, disk_cache) = cache_settings(a, &fmt.uuid)?;
    let chunk_cfg = ChunkConfig {
        block_size: fmt.block_size as usize * 1024,
        compression,
        encrypted,
        hash_prefix: fmt.hash_prefix,
        max_uploads: a.max_uploads.max(1),
        max_downloads: a.max_downloads,
        prefetch: a.prefetch,
        buffer_size: a.buffer_size.max(32) << 20,
        mem_cache_size,
        disk_cache,
        io_retries: a.io_retries,
        get_timeout: a.get_timeout,
        put_timeout: a.put_timeout,
        upload_limit: (a.upload_limit > 0).then(|| nectar_chunk::mbps_to_bytes(a.upload_limit)),
        download_limit: (a.download_limit > 0)
            .then(|| nectar_chunk::mbps_to_bytes(a.download_limit)),
    };
    chunk_cfg.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let chunks = {
        let _guard = rt.enter();
        ChunkStore::new(store.clone(), chunk_cfg)
    };
    let root = match &a.subdir {
        None => ROOT_INODE,
        Some(sub) => resolve_subdir(&meta, sub)?,
    };
    let read_only = a.read_only || a.options.iter().any(|o| o.split(',').any(|x| x == "ro"));
    let options: Vec<String> = a
        .options
        .iter()
        .flat_map(|o| o.split(',').map(str::to_string))
        .filter(|o| !o.is_empty())
        .collect();
    let writeback_cache = options.iter().any(|o| o == "writeback_cache");
    let vfs_cfg = VfsConfig {
        attr_timeout: secs("attr-cache", a.attr_cache)?,
        entry_timeout: secs("entry-cache", a.entry_cache)?,
        dir_entry_timeout: secs("dir-entry-cache", a.dir_entry_cache)?,
        read_only,
        max_readahead: a
            .max_readahead
            .map_or((fmt.block_size as u64 * 1024) * 8, |mib| mib << 20),
        atime_mode: a.atime_mode,
        open_cache: a.open_cache,
        open_cache_limit: a.open_cache_limit,
        selinux_labels: a.enable_selinux,
        hide_internal: a.hide_internal,
        ..VfsConfig::default()
    };
    let info = SessionInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        host_name: hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        ip_addrs: Vec::new(),
        mount_point: mp.display().to_string(),
        process_id: std::process::id(),
    };
    if a.no_xattr && fmt.enable_acl {
        bail!(
            "--no-xattr: volume {} has POSIX ACLs, which are extended attributes; mount it without --no-xattr",
            fmt.name
        );
    }
    let sid = meta.new_session(&info)?;
    tracing::info!(
        "volume {} ({}) session {sid}, mounting on {}",
        fmt.name,
        meta.url(),
        mp.display()
    );
    let vfs = Vfs::new(meta.clone(), chunks, rt.handle().clone(), vfs_cfg, root);
    let metrics = crate::exporter::install(&fmt.name, &mp.display().to_string())?;
    if !a.metrics.is_empty() {
        // The file system works without its metrics: a port that cannot be had is
        // only logged.
        if let Err(e) = crate::exporter::serve(&a.metrics, metrics.clone()) {
            tracing::warn!("metrics are not served: {e:#}");
        }
    }
    vfs.set_stats_renderer(Box::new(move || metrics.render()));
    if !a.backup_meta.is_zero() && a.backup_meta < Duration::from_secs(300) {
        tracing::warn!(
            "--backup-meta {}s: a backup dumps the whole volume; intervals under 5 minutes are for tests",
            a.backup_meta.as_secs_f64()
        );
    }
    let jobs = nectar_vfs::jobs::Jobs::start(
        meta.clone(),
        store.clone(),
        rt.handle().clone(),
        nectar_vfs::jobs::JobsConfig {
            heartbeat: Duration::from_secs(a.heartbeat.max(1)),
            backup: nectar_vfs::backup::BackupConfig {
                interval: a.backup_meta,
                skip_trash: a.backup_skip_trash,
            },
            trash_interval: Duration::from_secs(3600),
            read_only,
        },
    );
    let mut fs = NectarFs::new(vfs.clone(), rt.handle().clone(), writeback_cache);
    if a.no_xattr {
        fs = fs.without_xattrs();
    }
    let change_follower = fs.change_follower();
    let fopts = FuseOptions {
        options,
        read_only,
        threads: a.threads,
        writeback_cache,
        noatime: a.atime_mode == nectar_meta::AtimeMode::NoAtime,
        fsname: format!("nectar:{}", fmt.name),
    };
    // Signal handlers exist before the mount does: a SIGTERM that comes as soon as the
    // mount appears must unmount cleanly, not kill the process with its default action.
    let signalled = Arc::new(AtomicBool::new(false));
    {
        use tokio::signal::unix::{signal, SignalKind};
        let _enter = rt.enter();
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let signalled = signalled.clone();
        rt.spawn(async move {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
            signalled.store(true, Ordering::SeqCst);
        });
    }
    let session = match nectar_fuse::mount(fs, mp, &fopts) {
        Ok(s) => s,
        Err(e) => {
            let _ = meta.close_session();
            bail!(
                "cannot mount on {}: {e} (is fuse3 installed and /dev/fuse usable?)",
                mp.display()
            );
        }
    };
    if change_follower.start(session.notifier()) {
        tracing::info!(
            "following other clients' changes through {}: the kernel keeps attributes {:?} and entries {:?}",
            meta.kv().engine_name(),
            vfs.config().attr_timeout,
            vfs.config().entry_timeout
        );
    }
    let bg = std::mem::ManuallyDrop::new(session.spawn().context("cannot start the FUSE session")?);
    // fuser 0.18 unmounts the mount point again when its session object is dropped, and
    // its "already unmounted" check is inverted: after an external `umount` it would
    // unmount whatever was mounted on the same path since. So the session object is
    // never dropped (the process exits right after) and unmounting is done here.
    // SAFETY: `bg` is never dropped or used again except through this one read of its
    // join handle, so the handle is owned exactly once.
    let guard = unsafe { std::ptr::read(&bg.guard) };
    while !guard.is_finished() && !signalled.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    if signalled.load(Ordering::SeqCst) {
        tracing::info!(
            "signal received: committing pending writes and unmounting {}",
            mp.display()
        );
        if let Err(e) = vfs.flush_all() {
            tracing::error!("{e}");
        }
        if !crate::umount::unmount(mp) {
            tracing::warn!("{} is busy; detaching it lazily", mp.display());
            crate::umount::lazy_unmount(mp);
        }
    }
    match guard.join() {
        Ok(Err(e)) => tracing::warn!("FUSE session ended with: {e}"),
        Err(_) => tracing::error!("the FUSE session thread panicked"),
        Ok(Ok(())) => {}
    }
    jobs.stop();
    let res = vfs.shutdown();
    let (staged, staged_bytes) = vfs.store().staged();
    if staged > 0 {
        tracing::warn!(
            "{staged} written blocks ({} MiB) are staged and not uploaded yet; they are uploaded when this volume is mounted again with the same cache directory",
            staged_bytes >> 20
        );
    }
    if let Err(e) = meta.close_session() {
        tracing::warn!("cannot close session {sid}: {e}");
    }
    tracing::info!("{} unmounted", mp.display());
    res.map_err(|e| anyhow::anyhow!("pending writes were lost: {e}"))
}

/// The inode of directory `sub` (a path from the volume's root), for `--subdir`.
pub(crate) fn resolve_subdir(meta: &Meta, sub: &str) -> Result<u64> {
    resolve(meta, sub, "--subdir", true)
}

/// The inode of `path` (from the volume's root), for `--path`.
pub(crate) fn resolve_path(meta: &Meta, path: &str) -> Result<u64> {
    resolve(meta, path, "--path", false)
}

/// Looks `path` up from the root, every part a directory but the last unless `dir`;
/// errors name `flag`.
fn resolve(meta: &Meta, path: &str, flag: &str, dir: bool) -> Result<u64> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let mut ino = ROOT_INODE;
    for (i, part) in parts.iter().enumerate() {
        let (child, attr) = meta
            .lookup(&Ctx::root(), ino, part.as_bytes())
            .with_context(|| format!("{flag} {path}: {part} not found"))?;
        let last = i + 1 == parts.len();
        if attr.typ != nectar_meta::FileType::Directory && (dir || !last) {
            bail!("{flag} {path}: {part} is not a directory");
        }
        ino = child;
    }
    Ok(ino)
}
