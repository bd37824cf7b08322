//! Nectar's kernel-free POSIX layer.
//!
//! [`Vfs`] turns file-system calls — by inode number and file handle, as FUSE delivers
//! them — into metadata transactions ([`nectar_meta::Meta`]) and block I/O
//! ([`nectar_chunk::ChunkStore`]). Every rule of file-system behaviour that is not a
//! metadata rule lives here: handles, pending writes and when they are committed,
//! reading through slices with readahead, directory streams. The FUSE adapter only
//! translates, so everything here is tested without a kernel.
//!
//! Calls are synchronous and may block: the adapter runs each on a blocking-pool thread,
//! and block I/O runs on the tokio runtime the `Vfs` was given (`Handle::block_on`).
//! A mount of a subdirectory maps the kernel's root inode (1) to that directory.

pub mod backup;
mod dir;
mod error;
mod file;
pub mod jobs;
mod locks;
mod stats;
mod sync;
mod ttl_map;
mod xattr_cache;

pub use dir::{DirEntry, DirPage};
pub use error::{Error, Result};
pub use stats::STATS_XATTR;
pub use sync::{Timeouts, FALLBACK_TIMEOUT};

use bytes::Bytes;
use dir::DirStream;
use file::{ClosedFiles, CommitScope, FileInner, FileState, PendingSlice};
use libc::{EBADF, EFBIG, EINVAL, EISDIR, EROFS};
use nectar_chunk::ChunkStore;
pub use nectar_chunk::{CacheAction, CacheReport};
use nectar_meta::{
    AtimeMode, Attr, Ctx, FileType, Ino, Meta, SetAttr, Slice, StatFs, Time, CHUNK_BITS,
    CHUNK_SIZE, MAX_FILE_SIZE, ROOT_INODE,
};
use parking_lot::{Mutex, MutexGuard};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::runtime::Handle as Runtime;
use ttl_map::TtlMap;
use xattr_cache::{XattrCache, CACHED_XATTRS};

use error::sys;

/// Options of a mount that the VFS honours.
#[derive(Debug, Clone)]
pub struct VfsConfig {
    pub attr_timeout: Duration,
    pub entry_timeout: Duration,
    pub dir_entry_timeout: Duration,
    pub read_only: bool,
    /// Largest readahead window of a sequential reader, in bytes.
    pub max_readahead: u64,
    /// How long the objects of a slice that lost its last reference are kept, so a
    /// reader that resolved the old slice list just before finishes its read.
    pub delete_delay: Duration,
    /// When reads and listings update atime.
    pub atime_mode: AtimeMode,
    /// A read-only reopen within this time of the file's last check against metadata
    /// takes its attributes and slices from this client's memory (`--open-cache`; zero,
    /// the default, always asks metadata). Changes by other clients are not seen
    /// meanwhile: meant for read-only datasets.
    pub open_cache: Duration,
    /// Closed files remembered (`--open-cache-limit`, default 10,000; 0 none).
    pub open_cache_limit: usize,
    /// Whether files carry SELinux labels (`security.selinux`; `--enable-selinux`, as
    /// JuiceFS). Off, the label is an unsupported xattr (EOPNOTSUPP), as on a file
    /// system without labels: tools such as `ls -l` then stop asking for it after the
    /// first file instead of sending one request per entry.
    pub selinux_labels: bool,
    /// Leave the internal nodes (`.trash`) out of the root's listing
    /// (`--hide-internal`); they can still be looked up by name.
    pub hide_internal: bool,
}

impl Default for VfsConfig {
    fn default() -> Self {
        VfsConfig {
            attr_timeout: Duration::from_secs(1),
            entry_timeout: Duration::from_secs(1),
            dir_entry_timeout: Duration::from_secs(1),
            read_only: false,
            max_readahead: 32 << 20,
            delete_delay: Duration::from_secs(2),
            atime_mode: AtimeMode::NoAtime,
            open_cache: Duration::ZERO,
            open_cache_limit: 10_000,
            selinux_labels: false,
            hide_internal: false,
        }
    }
}

enum HandleKind {
    File(Arc<FileState>),
    Dir(Mutex<DirStream>),
}

/// Readahead state of one handle: where the last read ended, the current window, and
/// where the reader next gets to judge whether the window is enough.
struct ReadAhead {
    last_end: u64,
    window: u64,
    next_check: u64,
    /// How many handles of this client have a window open, this one included while its
    /// window is: they share the readahead budget.
    streaming: Arc<AtomicUsize>,
}

impl ReadAhead {
    fn new(streaming: Arc<AtomicUsize>) -> Self {
        ReadAhead {
            last_end: 0,
            window: 0,
            next_check: 0,
            streaming,
        }
    }

    fn open(&mut self, window: u64) {
        if self.window == 0 {
            self.streaming.fetch_add(1, Ordering::Relaxed);
        }
        self.window = window;
    }

    fn close(&mut self) {
        if self.window > 0 {
            self.streaming.fetch_sub(1, Ordering::Relaxed);
        }
        self.window = 0;
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.close();
    }
}

struct Handle {
    ino: Ino,
    kind: HandleKind,
    readahead: Mutex<ReadAhead>,
}

/// Result of an open.
#[derive(Debug, Clone)]
pub struct Opened {
    pub fh: u64,
    pub attr: Attr,
    /// The file did not change since this client last had it open: the kernel may keep
    /// its page cache.
    pub keep_cache: bool,
}

pub struct Vfs {
    meta: Arc<Meta>,
    store: Arc<ChunkStore>,
    rt: Runtime,
    cfg: VfsConfig,
    /// The inode mounted as the root (1, or a subdirectory's inode).
    root: Ino,
    files: Mutex<HashMap<Ino, Arc<FileState>>>,
    /// Files closed lately (lock order: `files`, then `closed`).
    closed: ClosedFiles,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// Handles with a readahead window open (see `ReadAhead`).
    streaming: Arc<AtomicUsize>,
    stopped: AtomicBool,
    /// Answers to the xattr questions asked about every file (see `xattr_cache`).
    xattrs: XattrCache,
    /// Attributes as this client's own transactions last committed them, trusted for
    /// the attribute timeout (see [`Vfs::getattr`]).
    written: Arc<TtlMap<Ino, Attr>>,
    /// Chunks with many slice records, waiting for compaction.
    fragmented: Mutex<std::collections::HashSet<(Ino, u32)>>,
    /// The flock and POSIX locks this client holds.
    locks: locks::LockState,
    /// Renders the process's metrics for [`STATS_XATTR`] (set by the mount).
    stats: std::sync::OnceLock<stats::Renderer>,
    started: Instant,
}

/// How far from the end of a reader's last read a read may start and still count as
/// sequential: twice the kernel's readahead (1 MiB, see the FUSE adapter), whose
/// requests arrive out of order.
const SEQUENTIAL_SLACK: u64 = 2 << 20;

/// How far behind a sequential reader's newest read the blocks it read leave the memory
/// cache (see `ChunkStore::consumed`): the kernel's readahead (1 MiB) sends requests
/// that are served out of order, and a block dropped at its last byte was fetched again
/// for a request sent before that one. In file offsets: a file written in many commits
/// has many short slices, and a lag counted within each slice kept the end of every one.
const CONSUMED_LAG: u64 = 4 << 20;

/// The readahead windows of all streaming readers together stay within this share of
/// `--buffer-size` (1/5: 60 MiB of the default 300), each reader getting an equal part
/// (at least a block); the rest is for write buffers. Four readers of a local disk
/// read as fast with 15 MiB ahead each as with 32, and the mount's peak RSS fell from
/// 192 to 116-124 MiB.
const READAHEAD_BUFFER_SHARE: u64 = 5;

/// A chunk with this many slice records gets compacted into one slice.
const COMPACT_AT: usize = 64;
/// Compaction swaps of one chunk in a row (see [`Vfs::compact_chunk`]).
const COMPACT_ROUNDS: usize = 64;
/// Attributes kept of what this client wrote (about 200 bytes each).
const MAX_WRITTEN_ATTRS: usize = 100_000;

/// Where in a file a piece of a read comes from.
struct Segment {
    buf_off: usize,
    id: u64,
    size: u32,
    off: u32,
    len: u32,
}

impl Vfs {
    /// Builds the VFS and starts its background committer. `root` is the inode to show
    /// as the mount's root.
    pub fn new(
        meta: Arc<Meta>,
        store: Arc<ChunkStore>,
        rt: Runtime,
        cfg: VfsConfig,
        root: Ino,
    ) -> Arc<Vfs> {
        let deleter_store = store.clone();
        let deleter_rt = rt.clone();
        let delay = cfg.delete_delay;
        meta.set_slice_deleter(Arc::new(move |slices| {
            let store = deleter_store.clone();
            deleter_rt.spawn(async move {
                tokio::time::sleep(delay).await;
                if let Err(e) = store.remove_slices(&slices).await {
                    tracing::warn!(
                        "cannot delete the blocks of {} slices: {e}; `nectar gc` will find them",
                        slices.len()
                    );
                }
            });
        }));
        let sweeper_store = store.clone();
        let sweeper_rt = rt.clone();
        meta.set_slice_sweeper(Arc::new(move |ranges, keep| {
            sweeper_rt
                .block_on(sweeper_store.delete_unfinished(ranges, keep))
                .map_err(|e| e.to_string())
        }));
        let closed = ClosedFiles::new(cfg.open_cache_limit);
        let xattrs = XattrCache::new(cfg.attr_timeout);
        let written = Arc::new(TtlMap::new(cfg.attr_timeout, MAX_WRITTEN_ATTRS));
        let keep = written.clone();
        meta.watch_attrs(Arc::new(move |ino, attr| match attr {
            // Two commits of this client may report out of order: the newer change
            // (its ctime) wins.
            Some(attr) => keep.insert_all([(ino, attr)], |old: &Attr, new| old.ctime > new.ctime),
            None => keep.remove(&ino),
        }));
        let vfs = Arc::new(Vfs {
            meta,
            store,
            rt,
            cfg,
            root,
            files: Mutex::new(HashMap::new()),
            closed,
            handles: Mutex::new(HashMap::new()),
            locks: Default::default(),
            next_fh: AtomicU64::new(1),
            streaming: Arc::new(AtomicUsize::new(0)),
            stopped: AtomicBool::new(false),
            fragmented: Mutex::new(Default::default()),
            xattrs,
            written,
            stats: Default::default(),
            started: Instant::now(),
        });
        let weak = Arc::downgrade(&vfs);
        std::thread::Builder::new()
            .name("nectar-committer".into())
            .spawn(move || committer(weak))
            .ok();
        vfs
    }

    pub fn meta(&self) -> &Arc<Meta> {
        &self.meta
    }

    pub fn store(&self) -> &Arc<ChunkStore> {
        &self.store
    }

    pub fn config(&self) -> &VfsConfig {
        &self.cfg
    }

    /// Kernel inode number to metadata inode number.
    fn to_meta(&self, ino: Ino) -> Ino {
        if ino == ROOT_INODE {
            self.root
        } else {
            ino
        }
    }

    /// Metadata inode number to kernel inode number.
    fn to_kernel(&self, ino: Ino) -> Ino {
        if ino == self.root {
            ROOT_INODE
        } else {
            ino
        }
    }

    fn check_writable(&self) -> Result<()> {
        if self.cfg.read_only {
            return sys(EROFS);
        }
        Ok(())
    }

    fn handle(&self, fh: u64) -> Result<Arc<Handle>> {
        self.handles
            .lock()
            .get(&fh)
            .cloned()
            .ok_or(Error::Sys(EBADF))
    }

    fn file_handle(&self, fh: u64) -> Result<(Arc<Handle>, Arc<FileState>)> {
        let h = self.handle(fh)?;
        match &h.kind {
            HandleKind::File(f) => {
                let f = f.clone();
                Ok((h, f))
            }
            HandleKind::Dir(_) => sys(EISDIR),
        }
    }

    fn add_handle(&self, ino: Ino, kind: HandleKind) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let h = Arc::new(Handle {
            ino,
            kind,
            readahead: Mutex::new(ReadAhead::new(self.streaming.clone())),
        });
        self.handles.lock().insert(fh, h);
        fh
    }

    /// Attributes with this client's uncommitted length folded in. `read` is what
    /// metadata said before this call. For a file open here it is read again, under
    /// the file's lock: no commit of this client records slices then (one in flight
    /// keeps the file dirty), whereas an earlier read may predate a commit that finished
    /// since, and taking it would undo that commit's length (the kernel then shrinks the
    /// file it just saw grow).
    fn merge_pending(&self, ino: Ino, read: Option<Attr>) -> Result<Attr> {
        let file = self.files.lock().get(&ino).cloned();
        let Some(f) = file else {
            return match read {
                Some(attr) => Ok(attr),
                None => Ok(self.meta.get_attr(ino)?),
            };
        };
        let mut inner = f.inner.lock();
        let mut attr = self.meta.get_attr(ino)?;
        if inner.is_dirty() {
            attr.length = attr.length.max(inner.attr.length);
            attr.mtime = attr.mtime.max(inner.attr.mtime);
        } else {
            inner.attr = attr.clone();
        }
        Ok(attr)
    }

    // ----- namespace ------------------------------------------------------------------

    pub fn lookup(&self, ctx: &Ctx, parent: Ino, name: &[u8]) -> Result<(Ino, Attr)> {
        let parent = self.to_meta(parent);
        let (ino, attr) = if parent == self.root && name == b".." {
            (self.root, self.meta.get_attr(self.root)?)
        } else {
            self.meta.lookup(ctx, parent, name)?
        };
        Ok((self.to_kernel(ino), self.merge_pending(ino, Some(attr))?))
    }

    /// Attributes of `ino`. The kernel asks again as soon as a change made here
    /// invalidated what it had (after every create or unlink in a directory, the
    /// directory's), so the attributes this client's own commit just wrote are answered
    /// from memory for the attribute timeout, the time the kernel would have trusted
    /// them: a `cp` or `rm` of each file in turn costs no read of the directory.
    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        let ino = self.to_meta(ino);
        if self.files.lock().contains_key(&ino) {
            return self.merge_pending(ino, None);
        }
        let attr = match self.written.get_within(&ino, self.trusted_for()) {
            Some(attr) => attr,
            None => self.meta.get_attr(ino)?,
        };
        self.merge_pending(ino, Some(attr))
    }

    /// Changes attributes; `size` truncates or extends the file.
    pub fn setattr(&self, ctx: &Ctx, ino: Ino, set: &SetAttr, size: Option<u64>) -> Result<Attr> {
        self.check_writable()?;
        let ino = self.to_meta(ino);
        self.closed.forget(ino);
        let mut attr = None;
        if let Some(size) = size {
            attr = Some(self.truncate(ctx, ino, size)?);
        }
        if set.mode.is_some()
            || set.uid.is_some()
            || set.gid.is_some()
            || set.atime.is_some()
            || set.mtime.is_some()
            || set.flags.is_some()
        {
            attr = Some(self.meta.setattr(ctx, ino, set)?);
        }
        let attr = match attr {
            Some(a) => a,
            None => self.meta.get_attr(ino)?,
        };
        self.merge_pending(ino, Some(attr))
    }

    fn truncate(&self, ctx: &Ctx, ino: Ino, size: u64) -> Result<Attr> {
        let file = self.files.lock().get(&ino).cloned();
        match file {
            Some(f) => {
                let mut inner = f.inner.lock();
                self.commit(&f, &mut inner, CommitScope::All)?;
                let attr = self.meta.truncate(ctx, ino, size)?;
                inner.slices.clear();
                inner.attr = attr.clone();
                Ok(attr)
            }
            None => Ok(self.meta.truncate(ctx, ino, size)?),
        }
    }

    /// Creates a non-directory, non-symlink node. `mode` carries the type bits.
    pub fn mknod(
        &self,
        ctx: &Ctx,
        parent: Ino,
        name: &[u8],
        mode: u32,
        umask: u32,
        rdev: u32,
    ) -> Result<(Ino, Attr)> {
        self.check_writable()?;
        let typ = FileType::from_mode(mode).ok_or(Error::Sys(EINVAL))?;
        if typ == FileType::Directory || typ == FileType::Symlink {
            return sys(EINVAL);
        }
        let (ino, attr) =
            self.meta
                .mknod(ctx, self.to_meta(parent), name, typ, mode, umask, rdev, b"")?;
        Ok((self.to_kernel(ino), attr))
    }

    pub fn mkdir(
        &self,
        ctx: &Ctx,
        parent: Ino,
        name: &[u8],
        mode: u32,
        umask: u32,
    ) -> Result<(Ino, Attr)> {
        self.check_writable()?;
        let (ino, attr) = self.meta.mknod(
            ctx,
            self.to_meta(parent),
            name,
            FileType::Directory,
            mode,
            umask,
            0,
            b"",
        )?;
        Ok((ino, attr))
    }

    pub fn symlink(
        &self,
        ctx: &Ctx,
        parent: Ino,
        name: &[u8],
        target: &[u8],
    ) -> Result<(Ino, Attr)> {
        self.check_writable()?;
        Ok(self.meta.mknod(
            ctx,
            self.to_meta(parent),
            name,
            FileType::Symlink,
            0o777,
            0,
            0,
            target,
        )?)
    }

    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        Ok(self.meta.readlink(self.to_meta(ino))?)
    }

    pub fn unlink(&self, ctx: &Ctx, parent: Ino, name: &[u8]) -> Result<()> {
        self.check_writable()?;
        Ok(self.meta.unlink(ctx, self.to_meta(parent), name)?)
    }

    pub fn rmdir(&self, ctx: &Ctx, parent: Ino, name: &[u8]) -> Result<()> {
        self.check_writable()?;
        Ok(self.meta.rmdir(ctx, self.to_meta(parent), name)?)
    }

    pub fn rename(
        &self,
        ctx: &Ctx,
        parent: Ino,
        name: &[u8],
        new_parent: Ino,
        new_name: &[u8],
        flags: u32,
    ) -> Result<()> {
        self.check_writable()?;
        self.meta.rename(
            ctx,
            self.to_meta(parent),
            name,
            self.to_meta(new_parent),
            new_name,
            flags,
        )?;
        Ok(())
    }

    pub fn link(&self, ctx: &Ctx, ino: Ino, new_parent: Ino, new_name: &[u8]) -> Result<Attr> {
        self.check_writable()?;
        let ino = self.to_meta(ino);
        let attr = self
            .meta
            .link(ctx, ino, self.to_meta(new_parent), new_name)?;
        self.merge_pending(ino, Some(attr))
    }

    /// The volume's space and inodes as `df` shows them at `ino`: the tightest quota
    /// covering it (a `--subdir` mount's own, or a directory's below), else the volume's.
    pub fn statfs(&self, ino: Ino) -> Result<StatFs> {
        match self.meta.quota_statfs(self.to_meta(ino))? {
            Some(fs) => Ok(fs),
            None => Ok(self.meta.statfs()?),
        }
    }

    pub fn access(&self, ctx: &Ctx, ino: Ino, mask: u32) -> Result<()> {
        Ok(self.meta.access(ctx, self.to_meta(ino), mask)?)
    }

    // ----- xattrs ---------------------------------------------------------------------

    /// Whether the volume has POSIX ACLs (`system.posix_acl_*` xattrs).
    pub fn acl_enabled(&self) -> bool {
        self.meta.acl_enabled()
    }

    pub fn setxattr(
        &self,
        ctx: &Ctx,
        ino: Ino,
        name: &[u8],
        value: &[u8],
        flags: i32,
    ) -> Result<()> {
        self.check_writable()?;
        self.check_xattr_supported(name)?;
        let ino = self.to_meta(ino);
        self.xattrs.forget(ino, name);
        Ok(self.meta.setxattr(ctx, ino, name, value, flags)?)
    }

    /// EOPNOTSUPP for the xattrs this mount does not support: SELinux labels unless
    /// [`VfsConfig::selinux_labels`].
    fn check_xattr_supported(&self, name: &[u8]) -> Result<()> {
        if name == SELINUX_XATTR && !self.cfg.selinux_labels {
            return Err(Error::Sys(libc::EOPNOTSUPP));
        }
        Ok(())
    }

    /// The answer to a getxattr when it is known without any I/O (see `xattr_cache`),
    /// so the FUSE adapter can reply at once instead of handing the request to a worker
    /// thread: `ls -l` asks this once per entry.
    pub fn getxattr_cached(&self, ino: Ino, name: &[u8]) -> Option<Result<Vec<u8>>> {
        if let Err(e) = self.check_xattr_supported(name) {
            return Some(Err(e));
        }
        let answer = self
            .xattrs
            .get(self.to_meta(ino), name, self.trusted_for())?;
        Some(answer.ok_or(Error::Sys(libc::ENODATA)))
    }

    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        self.check_xattr_supported(name)?;
        if self.xattrs.keeps(name) {
            let answer = self.known_xattr(self.to_meta(ino), name)?;
            return answer.ok_or(Error::Sys(libc::ENODATA));
        }
        if name == INFO_XATTR {
            return Ok(self.info(ino)?.into_bytes());
        }
        if name == STATS_XATTR {
            return self.stats_text();
        }
        if let Some(args) = name.strip_prefix(SUMMARY_XATTR_PREFIX.as_bytes()) {
            return self.summary_json(ino, args);
        }
        if name == COMPACT_XATTR {
            let (chunks, before, after) = self.compact_file(ino)?;
            return Ok(format!("{chunks} {before} {after}").into_bytes());
        }
        if let Some(action) = cache_action_of(name) {
            return Ok(self.cache_action(ino, action)?.to_string().into_bytes());
        }
        Ok(self.meta.getxattr(self.to_meta(ino), name)?)
    }

    /// Xattr `name` (one the cache keeps) of `ino`: from the cache; else, if `ino` was
    /// listed lately, the answers of its whole page read in one batch; else read alone.
    /// What is read is kept.
    fn known_xattr(&self, ino: Ino, name: &[u8]) -> Result<xattr_cache::Answer> {
        if let Some(answer) = self.xattrs.get(ino, name, self.trusted_for()) {
            return Ok(answer);
        }
        if let Some(page) = self.xattrs.take_listed_page(ino) {
            let answers = self.meta.xattrs_of(&page, &CACHED_XATTRS)?;
            for (&listed, answers) in page.iter().zip(answers) {
                if !answers.is_empty() {
                    self.xattrs.put_listed(listed, answers);
                }
            }
            if let Some(answer) = self.xattrs.get(ino, name, self.trusted_for()) {
                return Ok(answer);
            }
        }
        let answer = match self.meta.getxattr(ino, name) {
            Ok(v) => Some(v),
            Err(nectar_meta::Error::Sys(libc::ENODATA)) => None,
            Err(e) => return Err(e.into()),
        };
        self.xattrs.put(ino, name, answer.clone());
        Ok(answer)
    }

    /// The names of `ino`'s xattrs, each followed by a NUL, without those this mount
    /// does not support.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<u8>> {
        let names = self.meta.listxattr(self.to_meta(ino))?;
        if self.cfg.selinux_labels {
            return Ok(names);
        }
        Ok(names
            .split_inclusive(|&b| b == 0)
            .filter(|n| n.strip_suffix(&[0]).unwrap_or(n) != SELINUX_XATTR)
            .flatten()
            .copied()
            .collect())
    }

    pub fn removexattr(&self, ctx: &Ctx, ino: Ino, name: &[u8]) -> Result<()> {
        self.check_writable()?;
        self.check_xattr_supported(name)?;
        let ino = self.to_meta(ino);
        self.xattrs.forget(ino, name);
        Ok(self.meta.removexattr(ctx, ino, name)?)
    }

    // ----- files ----------------------------------------------------------------------

    /// The state of open file `ino` for one more handle: the one its other handles
    /// share, the one it had when this client last closed it, or a new one; true
    /// unless new. The handle is counted under the lock of `files`, where `release`
    /// checks the count before it takes a state out: counted later, a release of the
    /// last other handle could take the state out in between, and this handle's
    /// writes would go to a state that `getattr` and `truncate` no longer find.
    fn file_state(&self, ino: Ino, attr: &Attr) -> (Arc<FileState>, bool) {
        let mut files = self.files.lock();
        let (f, existed) = match files.get(&ino) {
            Some(f) => (f.clone(), true),
            None => {
                let (f, existed) = match self.closed.take(ino) {
                    Some(f) => (f, true),
                    None => (Arc::new(FileState::new(ino, attr.clone())), false),
                };
                files.insert(ino, f.clone());
                (f, existed)
            }
        };
        *f.handles.lock() += 1;
        (f, existed)
    }

    /// Opens a handle of `ino`, whose attributes are `attr` (`from_meta`: just read from
    /// metadata, rather than remembered).
    fn open_state(&self, ino: Ino, attr: Attr, from_meta: bool) -> Opened {
        let (file, existed) = self.file_state(ino, &attr);
        let keep_cache;
        {
            let mut inner = file.inner.lock();
            // A read served from the page cache never reaches us, so a file whose atime
            // is due an update (`--atime-mode`) gets its next read here.
            keep_cache = existed
                && inner.attr.mtime == attr.mtime
                && inner.attr.length == attr.length
                && !self.cfg.atime_mode.needs_update(&attr, Time::now());
            if !inner.is_dirty() {
                if !keep_cache {
                    // Someone else changed the file: forget what we resolved.
                    inner.slices.clear();
                }
                inner.attr = attr.clone();
                if from_meta {
                    inner.checked = Some(Instant::now());
                }
            }
        }
        let fh = self.add_handle(ino, HandleKind::File(file));
        Opened {
            fh,
            attr,
            keep_cache,
        }
    }

    pub fn open(&self, ctx: &Ctx, ino: Ino, flags: i32) -> Result<Opened> {
        let ino = self.to_meta(ino);
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            self.check_writable()?;
        }
        if let Some(opened) = self.open_remembered(ctx, ino, flags) {
            return Ok(opened);
        }
        let attr = self.meta.open(ctx, ino, flags)?;
        if attr.typ == FileType::Directory {
            self.meta.close(ino)?;
            return sys(EISDIR);
        }
        let attr = self.merge_pending(ino, Some(attr))?;
        Ok(self.open_state(ino, attr, true))
    }

    /// `--open-cache`: a read-only open of a file this client checked against metadata
    /// less than `open_cache` ago, open or closed since, with nothing pending, is served
    /// from memory. Only when the kernel checks permissions (`default_permissions`):
    /// metadata's own check is what this skips.
    fn open_remembered(&self, ctx: &Ctx, ino: Ino, flags: i32) -> Option<Opened> {
        let read_only = flags & libc::O_ACCMODE == libc::O_RDONLY && flags & libc::O_TRUNC == 0;
        if self.cfg.open_cache.is_zero() || !read_only || ctx.check_permission {
            return None;
        }
        let file = self.files.lock().get(&ino).cloned();
        let file = file.or_else(|| self.closed.get(ino))?;
        let attr = {
            let inner = file.inner.lock();
            let fresh = inner
                .checked
                .is_some_and(|t| t.elapsed() < self.cfg.open_cache);
            if !fresh || inner.is_dirty() || inner.write_error.is_some() {
                return None;
            }
            inner.attr.clone()
        };
        self.meta.opened(ino);
        Some(self.open_state(ino, attr, false))
    }

    /// Creates and opens a regular file. Without O_EXCL an existing file is opened.
    pub fn create(
        &self,
        ctx: &Ctx,
        parent: Ino,
        name: &[u8],
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(Ino, Opened)> {
        self.check_writable()?;
        let parent = self.to_meta(parent);
        match self
            .meta
            .mknod(ctx, parent, name, FileType::File, mode, umask, 0, b"")
        {
            Ok((ino, attr)) => {
                self.meta.opened(ino);
                let opened = self.open_state(ino, attr, true);
                // A file made just now has no xattrs: the kernel's question about its
                // `security.capability` before the first write needs no round trip.
                self.xattrs.put_none(ino);
                Ok((self.to_kernel(ino), opened))
            }
            Err(nectar_meta::Error::Sys(libc::EEXIST)) if flags & libc::O_EXCL == 0 => {
                let (ino, _) = self.meta.lookup(ctx, parent, name)?;
                let opened = self.open(ctx, self.to_kernel(ino), flags)?;
                Ok((self.to_kernel(ino), opened))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes `data` at `off`; returns the bytes written.
    pub fn write(&self, fh: u64, off: u64, data: &[u8]) -> Result<usize> {
        self.check_writable()?;
        let (_, file) = self.file_handle(fh)?;
        let end = off
            .checked_add(data.len() as u64)
            .ok_or(Error::Sys(EFBIG))?;
        if end > MAX_FILE_SIZE {
            return sys(EFBIG);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let mut inner = file.inner.lock();
        if let Some(e @ (libc::EDQUOT | libc::ENOSPC)) = inner.write_error {
            // A commit in the background found the quota or the volume full: further
            // writes would only be dropped too. Close or fsync reports it as well.
            return sys(e);
        }
        // Under buffer pressure, commit our own half-filled blocks first: waiting for
        // space while holding them could wait forever.
        if self.store.buffered() > self.store.buffer_capacity() / 10 * 8 {
            self.commit(&file, &mut inner, CommitScope::All)?;
        }
        let now = Time::now();
        let mut pos = off;
        let mut rest = data;
        while !rest.is_empty() {
            let index = (pos >> CHUNK_BITS) as u32;
            let in_chunk = (pos & (CHUNK_SIZE - 1)) as u32;
            let n = rest.len().min((CHUNK_SIZE - in_chunk as u64) as usize);
            let list = inner.pending.entry(index).or_default();
            let continues = list
                .last()
                .is_some_and(|s| s.pos as u64 + s.writer.len() as u64 == in_chunk as u64);
            if !continues {
                let id = self.meta.new_slice()?;
                list.push(PendingSlice {
                    pos: in_chunk,
                    writer: self.store.writer(id.id()),
                    last_write: now,
                    first_write: Instant::now(),
                    _id: id,
                });
            }
            let Some(slice) = list.last_mut() else {
                return sys(libc::EIO);
            };
            if let Err(e) = self.rt.block_on(slice.writer.append(&rest[..n])) {
                inner.write_error = Some(libc::EIO);
                return Err(e.into());
            }
            slice.last_write = now;
            let full = slice.fills_chunk();
            inner.has_full |= full;
            pos += n as u64;
            rest = &rest[n..];
        }
        let t = Instant::now();
        inner.dirty_since.get_or_insert(t);
        inner.last_write = Some(t);
        inner.attr.length = inner.attr.length.max(end);
        inner.attr.mtime = now;
        metrics::counter!("nectar_written_bytes_total").increment(data.len() as u64);
        Ok(data.len())
    }

    /// Commits the pending slices of a file that `scope` names: takes them out, lets go
    /// of the file's lock while their blocks are stored and made durable, then records
    /// them in metadata chunk by chunk, oldest first (see the `file` module). Waits for
    /// a commit of the file already in flight first, so commits keep the order of
    /// writes. Reports (and clears) an error of an earlier background commit.
    fn commit(
        &self,
        file: &FileState,
        inner: &mut MutexGuard<'_, FileInner>,
        scope: CommitScope,
    ) -> Result<()> {
        while inner.committing {
            file.committed.wait(inner);
        }
        let mut pending = inner.take_pending(scope);
        if pending.is_empty() {
            return match inner.write_error.take() {
                Some(e) => sys(e),
                None => Ok(()),
            };
        }
        inner.committing = true;
        let sizes: Vec<nectar_chunk::Result<u32>> = MutexGuard::unlocked(inner, || {
            self.rt.block_on(futures::future::join_all(
                pending
                    .values_mut()
                    .flat_map(|list| list.iter_mut().map(|s| s.writer.finish())),
            ))
        });
        let result = self.record_slices(file.ino, inner, pending, sizes);
        inner.committing = false;
        file.committed.notify_all();
        result
    }

    /// Records finished slices in metadata, in order; `sizes` are their `finish`
    /// outcomes. A failed slice and every slice after it are aborted.
    fn record_slices(
        &self,
        ino: Ino,
        inner: &mut FileInner,
        pending: BTreeMap<u32, Vec<PendingSlice>>,
        sizes: Vec<nectar_chunk::Result<u32>>,
    ) -> Result<()> {
        let mut failure: Option<Error> = None;
        let mut sizes = sizes.into_iter();
        for (index, list) in pending {
            inner.slices.remove(&index);
            for s in list {
                let size = match sizes.next() {
                    Some(Ok(size)) => size,
                    Some(Err(e)) => {
                        tracing::error!("inode {ino}: storing slice {} failed: {e}", s.writer.id());
                        failure.get_or_insert(e.into());
                        self.rt.block_on(s.writer.abort());
                        continue;
                    }
                    None => continue,
                };
                if size == 0 || failure.is_some() {
                    // After a failure later slices are dropped too: committing them
                    // without the earlier one would reorder writes.
                    if size > 0 {
                        self.rt.block_on(s.writer.abort());
                    }
                    continue;
                }
                let slice = Slice {
                    pos: s.pos,
                    id: s.writer.id(),
                    size,
                    off: 0,
                    len: size,
                };
                match self.meta.write_slice(ino, index, slice, s.last_write) {
                    Ok((attr, count)) => {
                        if count >= COMPACT_AT {
                            self.fragmented.lock().insert((ino, index));
                        }
                        // Writes that came while the slices were stored are not in
                        // metadata yet: keep what they did to length and mtime.
                        let length = inner.attr.length.max(attr.length);
                        let mtime = inner.attr.mtime.max(attr.mtime);
                        inner.attr = attr;
                        inner.attr.length = length;
                        if !inner.pending.is_empty() {
                            inner.attr.mtime = mtime;
                        }
                    }
                    Err(e) => {
                        // Said once per commit (later slices are not tried): the writes
                        // since the last flush are lost, and the writer hears it at its
                        // next flush, fsync or close, which may be long after.
                        match e {
                            nectar_meta::Error::Sys(errno) => tracing::warn!(
                                "inode {ino}: committing slice {} failed: {}; writes since the last flush are dropped",
                                slice.id,
                                std::io::Error::from_raw_os_error(errno)
                            ),
                            _ => tracing::error!(
                                "inode {ino}: committing slice {} failed: {e}",
                                slice.id
                            ),
                        }
                        failure.get_or_insert(e.into());
                        self.rt.block_on(s.writer.abort());
                    }
                }
            }
        }
        if let Some(e) = failure {
            // Uncommitted data is gone; report it now (this covers any earlier error of
            // a background commit) and the length reverts to what metadata holds.
            inner.write_error = None;
            if let Ok(a) = self.meta.get_attr(ino) {
                inner.attr = a;
            }
            return Err(e);
        }
        match inner.write_error.take() {
            Some(e) => sys(e),
            None => Ok(()),
        }
    }

    /// Commits the pending writes of an inode, if this client has it open.
    fn commit_inode(&self, ino: Ino) -> Result<Option<Arc<FileState>>> {
        let Some(f) = self.files.lock().get(&ino).cloned() else {
            return Ok(None);
        };
        self.commit(&f, &mut f.inner.lock(), CommitScope::All)?;
        Ok(Some(f))
    }

    /// After a metadata change to a file's data: forget resolved slices, take the new
    /// attributes.
    fn data_changed(&self, file: Option<Arc<FileState>>, attr: &Attr) {
        if let Some(f) = file {
            let mut inner = f.inner.lock();
            inner.slices.clear();
            inner.attr = attr.clone();
        }
    }

    /// `fallocate(2)`: allocate (move the length), punch a hole, or zero a range.
    pub fn fallocate(&self, ctx: &Ctx, fh: u64, mode: i32, off: u64, len: u64) -> Result<()> {
        self.check_writable()?;
        let (h, _) = self.file_handle(fh)?;
        let file = self.commit_inode(h.ino)?;
        let attr = self.meta.fallocate(ctx, h.ino, mode, off, len)?;
        self.data_changed(file, &attr);
        Ok(())
    }

    /// `copy_file_range(2)` by sharing slices in metadata: no data passes through here.
    #[allow(clippy::too_many_arguments)]
    pub fn copy_file_range(
        &self,
        ctx: &Ctx,
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
    ) -> Result<u64> {
        self.check_writable()?;
        let (src, _) = self.file_handle(fh_in)?;
        let (dst, _) = self.file_handle(fh_out)?;
        self.commit_inode(src.ino)?;
        let file = self.commit_inode(dst.ino)?;
        let (n, attr) = self
            .meta
            .copy_file_range(ctx, src.ino, off_in, dst.ino, off_out, len)?;
        self.data_changed(file, &attr);
        Ok(n)
    }

    /// `lseek` with SEEK_DATA or SEEK_HOLE; other kinds of seek never reach a file
    /// system.
    pub fn lseek(&self, fh: u64, offset: u64, whence: i32) -> Result<u64> {
        let (h, file) = self.file_handle(fh)?;
        let mut inner = file.inner.lock();
        self.commit(&file, &mut inner, CommitScope::All)?;
        let length = inner.attr.length;
        if offset >= length {
            return sys(libc::ENXIO);
        }
        match whence {
            libc::SEEK_DATA => {
                let mut from = (offset >> CHUNK_BITS) as u32;
                loop {
                    let indexes = self.meta.chunk_indexes(h.ino, from, 64)?;
                    let Some(&last) = indexes.last() else {
                        return sys(libc::ENXIO);
                    };
                    for index in indexes {
                        let chunk_start = (index as u64) << CHUNK_BITS;
                        let chunk_end = (chunk_start + CHUNK_SIZE).min(length);
                        let start = offset.max(chunk_start);
                        if start >= chunk_end {
                            continue;
                        }
                        if let Some(seg) =
                            self.segments(h.ino, &mut inner, start, chunk_end)?.first()
                        {
                            return Ok(start + seg.buf_off as u64);
                        }
                    }
                    if last == u32::MAX || ((last as u64 + 1) << CHUNK_BITS) >= length {
                        return sys(libc::ENXIO);
                    }
                    from = last + 1;
                }
            }
            libc::SEEK_HOLE => {
                let mut pos = offset;
                while pos < length {
                    let chunk_end = (((pos >> CHUNK_BITS) + 1) << CHUNK_BITS).min(length);
                    let segs = self.segments(h.ino, &mut inner, pos, chunk_end)?;
                    // Data runs from `pos` while segments follow each other without a gap.
                    let mut covered = pos;
                    for s in &segs {
                        if pos + s.buf_off as u64 != covered {
                            break;
                        }
                        covered += s.len as u64;
                    }
                    if covered < chunk_end {
                        return Ok(covered);
                    }
                    pos = chunk_end;
                }
                Ok(length)
            }
            _ => sys(libc::EINVAL),
        }
    }

    /// Commits pending writes of the file behind `fh` (flush and fsync).
    pub fn flush(&self, fh: u64) -> Result<()> {
        let (_, file) = self.file_handle(fh)?;
        let mut inner = file.inner.lock();
        self.commit(&file, &mut inner, CommitScope::All)
    }

    pub fn fsync(&self, fh: u64) -> Result<()> {
        self.flush(fh)
    }

    /// Closes a file handle: commits, then forgets the inode when no handle is left.
    pub fn release(&self, fh: u64) -> Result<()> {
        let (h, file) = self.file_handle(fh)?;
        let res = self.commit(&file, &mut file.inner.lock(), CommitScope::All);
        let unlocked = self.release_flock(fh);
        self.handles.lock().remove(&fh);
        let last = {
            let mut n = file.handles.lock();
            *n = n.saturating_sub(1);
            *n == 0
        };
        if last {
            let mut files = self.files.lock();
            if files.get(&h.ino).is_some_and(|f| Arc::ptr_eq(f, &file)) && *file.handles.lock() == 0
            {
                files.remove(&h.ino);
                let inner = file.inner.lock();
                if !inner.is_dirty() && inner.write_error.is_none() {
                    drop(inner);
                    self.closed.put(file.clone());
                }
            }
        }
        self.meta.close(h.ino)?;
        res.and(unlocked)
    }

    /// Reads up to `size` bytes at `off`.
    ///
    /// A block missing from object storage may mean that the slices this client
    /// resolved earlier are gone: another client overwrote or compacted the chunk, and
    /// its old slices were deleted, while nothing here asked metadata again (an open
    /// file, or `--open-cache`). The read is then tried once more with the chunk's
    /// slices read afresh.
    pub fn read(&self, fh: u64, off: u64, size: usize) -> Result<Bytes> {
        match self.read_resolved(fh, off, size) {
            Err(Error::Chunk(e)) if e.is_not_found() => {
                let (_, file) = self.file_handle(fh)?;
                tracing::debug!("inode {}: {e}; reading its slices again", file.ino);
                file.inner.lock().slices.clear();
                self.read_resolved(fh, off, size)
            }
            r => r,
        }
    }

    fn read_resolved(&self, fh: u64, off: u64, size: usize) -> Result<Bytes> {
        let (h, file) = self.file_handle(fh)?;
        self.note_access(&file);
        let (segments, len, behind) = {
            let mut inner = file.inner.lock();
            if inner.is_dirty() {
                self.commit(&file, &mut inner, CommitScope::All)?;
            }
            let length = inner.attr.length;
            if off >= length || size == 0 {
                return Ok(Bytes::new());
            }
            let end = length.min(off + size as u64);
            let segs = self.segments(file.ino, &mut inner, off, end)?;
            // Only a hint to the memory cache: failing to resolve it never fails the read.
            let behind = if self.readahead(&h, file.ino, &mut inner, off, end, length)
                && off >= CONSUMED_LAG
            {
                self.segments(file.ino, &mut inner, off - CONSUMED_LAG, end - CONSUMED_LAG)
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            (segs, (end - off) as usize, behind)
        };
        metrics::counter!("nectar_read_bytes_total").increment(len as u64);
        let data = self.read_segments(&segments, len)?;
        for s in &behind {
            self.store.consumed(s.id, s.size, s.off, s.len);
        }
        Ok(data)
    }

    /// `len` bytes made of `segments` (holes read as zeros).
    fn read_segments(&self, segments: &[Segment], len: usize) -> Result<Bytes> {
        if segments.len() == 1 && segments[0].len as usize == len {
            let s = &segments[0];
            return Ok(self
                .rt
                .block_on(self.store.read(s.id, s.size, s.off, s.len as usize))?);
        }
        let mut buf = vec![0u8; len];
        let parts = self.rt.block_on(futures::future::join_all(
            segments
                .iter()
                .map(|s| self.store.read(s.id, s.size, s.off, s.len as usize)),
        ));
        for (s, data) in segments.iter().zip(parts) {
            let data = data?;
            let n = data.len().min(s.len as usize);
            buf[s.buf_off..s.buf_off + n].copy_from_slice(&data[..n]);
        }
        Ok(Bytes::from(buf))
    }

    /// Updates the file's atime if `--atime-mode` asks for it. Judged first on the
    /// attributes this client holds, so most reads cost nothing; a failure only logs,
    /// since no read should fail over its atime.
    fn note_access(&self, file: &FileState) {
        let mode = self.cfg.atime_mode;
        if !mode.needs_update(&file.inner.lock().attr, Time::now()) {
            return;
        }
        match self.meta.touch_atime(file.ino, mode) {
            Ok(Some(attr)) => file.inner.lock().attr.atime = attr.atime,
            Ok(None) => {}
            Err(e) => tracing::warn!("inode {}: atime not updated: {e}", file.ino),
        }
    }

    /// The stored pieces that make up [off, end) of a file; holes are left out.
    fn segments(
        &self,
        ino: Ino,
        inner: &mut FileInner,
        off: u64,
        end: u64,
    ) -> Result<Vec<Segment>> {
        let mut out = Vec::new();
        let mut pos = off;
        while pos < end {
            let index = (pos >> CHUNK_BITS) as u32;
            let chunk_start = (index as u64) << CHUNK_BITS;
            let chunk_end = (chunk_start + CHUNK_SIZE).min(end);
            let segs = match inner.resolved(index) {
                Some(s) => s,
                None => {
                    let records = self.meta.read_chunk(ino, index)?;
                    inner.set_resolved(index, &records)
                }
            };
            let (lo, hi) = (pos - chunk_start, chunk_end - chunk_start);
            for s in segs.iter() {
                let (s_lo, s_hi) = (s.pos as u64, s.pos as u64 + s.len as u64);
                if s_hi <= lo || s_lo >= hi || s.id == 0 {
                    continue;
                }
                let from = s_lo.max(lo);
                let to = s_hi.min(hi);
                out.push(Segment {
                    buf_off: (chunk_start + from - off) as usize,
                    id: s.id,
                    size: s.size,
                    off: s.off + (from - s_lo) as u32,
                    len: (to - from) as u32,
                });
            }
            pos = chunk_end;
        }
        Ok(out)
    }

    /// Sequential readers get a window of readahead; a reader that jumps around gets
    /// none. Returns whether the reader is sequential.
    ///
    /// The window starts at one block and doubles, up to `max_readahead`, only when
    /// the reader outruns it: each time the reader has gone one more block, it looks
    /// whether the data right after its read is in memory already; if not, the fetches
    /// ahead did not keep up. A reader fed by a fast disk keeps a window of a block or
    /// two, one fed by a distant object store grows it to what hides the latency, and
    /// neither holds more memory than it needs (four readers with the widest window
    /// each held 200 MiB where one block or two serve them as fast).
    fn readahead(
        &self,
        h: &Handle,
        ino: Ino,
        inner: &mut FileInner,
        off: u64,
        end: u64,
        length: u64,
    ) -> bool {
        let mut ra = h.readahead.lock();
        let block = self.store.config().block_size as u64;
        // The kernel's own readahead sends several requests at once and they arrive in
        // any order, so "sequential" means "near where the reader was", not "exactly
        // there": an exact match took a streaming reader for a random one at every
        // request that overtook another, and dropped its window.
        let near = off.abs_diff(ra.last_end) <= SEQUENTIAL_SLACK;
        if !((near && ra.last_end > 0) || (off == 0 && ra.last_end == 0)) {
            ra.close();
            ra.last_end = end;
            return false;
        }
        ra.last_end = ra.last_end.max(end);
        if ra.window == 0 {
            ra.open(block);
            ra.next_check = end + block;
        } else if end >= ra.next_check {
            ra.next_check = end + block;
            if !self.in_memory(ino, inner, end, length) {
                ra.window *= 2;
            }
        }
        // Streaming readers share a part of the buffer: four readers of a slow store
        // held the widest window each, 200 MiB in all.
        let share = self.store.buffer_capacity()
            / READAHEAD_BUFFER_SHARE
            / self.streaming.load(Ordering::Relaxed).max(1) as u64;
        ra.window = ra.window.min(self.cfg.max_readahead.min(share)).max(block);
        if end >= length {
            return true;
        }
        let ahead_end = length.min(end + ra.window);
        // The fetches run on our runtime, whichever thread calls.
        let _runtime = self.rt.enter();
        if let Ok(segs) = self.segments(ino, inner, end, ahead_end) {
            for s in segs {
                self.store.prefetch(s.id, s.size, s.off, s.len);
            }
        }
        true
    }

    /// Whether the byte of the file at `pos` can be read without waiting for a fetch:
    /// its block is in the memory cache, or it is a hole or past the end.
    fn in_memory(&self, ino: Ino, inner: &mut FileInner, pos: u64, length: u64) -> bool {
        if pos >= length {
            return true;
        }
        match self.segments(ino, inner, pos, pos + 1) {
            Ok(segs) => segs
                .first()
                .is_none_or(|s| self.store.in_memory(s.id, s.size, s.off)),
            Err(_) => true,
        }
    }

    // ----- directories ----------------------------------------------------------------

    pub fn opendir(&self, ctx: &Ctx, ino: Ino) -> Result<u64> {
        let mino = self.to_meta(ino);
        let attr = self.meta.get_attr(mino)?;
        if attr.typ != FileType::Directory {
            return sys(libc::ENOTDIR);
        }
        if ctx.check_permission {
            self.meta.access(ctx, mino, 4)?;
        }
        let parent = if mino == self.root {
            ROOT_INODE
        } else {
            self.to_kernel(attr.parent)
        };
        let internal = if mino == ROOT_INODE && !self.cfg.hide_internal {
            self.meta.internal_entries()?
        } else {
            Vec::new()
        };
        Ok(self.add_handle(
            mino,
            HandleKind::Dir(Mutex::new(DirStream::new(ino, parent, internal))),
        ))
    }

    /// Entries from `offset` on (0 = the start), at most `max` of them. Each entry
    /// carries the offset of the one after it. With `plus`, entries carry attributes.
    pub fn readdir(
        &self,
        ctx: &Ctx,
        fh: u64,
        offset: u64,
        plus: bool,
        max: usize,
    ) -> Result<DirPage> {
        let h = self.handle(fh)?;
        let HandleKind::Dir(stream) = &h.kind else {
            return sys(libc::ENOTDIR);
        };
        if offset == 0 {
            if let Err(e) = self.meta.touch_atime(h.ino, self.cfg.atime_mode) {
                tracing::warn!("directory {}: atime not updated: {e}", h.ino);
            }
        }
        let mut stream = stream.lock();
        let mut page = stream.read(&self.meta, ctx, h.ino, offset, plus, max, &self.xattrs)?;
        for e in page.entries.iter_mut() {
            e.ino = self.to_kernel(e.ino);
        }
        Ok(page)
    }

    pub fn releasedir(&self, fh: u64) -> Result<()> {
        let unlocked = self.release_flock(fh);
        self.handles.lock().remove(&fh);
        unlocked
    }

    // ----- inspection and shutdown ----------------------------------------------------

    /// A report on one inode (its size and, for a file, chunks, slices and object
    /// keys) and on this client's caches: blocks staged by writeback and not yet
    /// uploaded, blocks in the disk cache.
    pub fn info(&self, ino: Ino) -> Result<String> {
        use std::fmt::Write;
        let mino = self.to_meta(ino);
        let attr = self.getattr(ino)?;
        let mut out = String::new();
        let (staged, staged_bytes) = self.store.staged();
        let _ = writeln!(
            out,
            "staged: {staged} blocks, {staged_bytes} bytes (written here, not yet uploaded)"
        );
        if let Some((cached, cached_bytes)) = self.store.disk_cache_usage() {
            let _ = writeln!(out, "disk cache: {cached} blocks, {cached_bytes} bytes");
        }
        let _ = writeln!(out, "inode: {mino}");
        let _ = writeln!(out, "type: {:?}", attr.typ);
        let _ = writeln!(out, "size: {}", attr.length);
        let _ = writeln!(out, "links: {}", attr.nlink);
        if attr.typ == FileType::File {
            let chunks = attr.length.div_ceil(CHUNK_SIZE) as u32;
            let _ = writeln!(out, "chunks:");
            for index in 0..chunks {
                let records = self.meta.read_chunk(mino, index)?;
                if records.is_empty() {
                    continue;
                }
                let _ = writeln!(out, "  chunk {index}: {} slice records", records.len());
                for r in &records {
                    let _ = writeln!(
                        out,
                        "    slice id={} size={} off={} len={} pos={}",
                        r.id, r.size, r.off, r.len, r.pos
                    );
                    if r.id != 0 {
                        for key in self.store.block_keys(r.id, r.size) {
                            let _ = writeln!(out, "      object: {key}");
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Removes everything below directory `ino` in parallel on the metadata side (into
    /// the trash when it is on and `to_trash`; skipping it is for root), checking
    /// `ctx`'s rights on every directory; returns how many entries went. The work of
    /// `nectar rmr`, asked for through [`RMR_XATTR`], which then removes the directory
    /// itself through the kernel.
    pub fn remove_below(&self, ctx: &Ctx, ino: Ino, to_trash: bool) -> Result<u64> {
        self.check_writable()?;
        if !to_trash && ctx.uid != 0 {
            return sys(libc::EPERM);
        }
        let mino = self.to_meta(ino);
        if self.meta.get_attr(mino)?.typ != FileType::Directory {
            return sys(libc::ENOTDIR);
        }
        if !to_trash {
            // So that the directory itself, removed next through the kernel, skips the
            // trash as well.
            self.meta.mark_skip_trash(mino)?;
        }
        let ctx = Ctx {
            check_permission: true,
            ..ctx.clone()
        };
        // Engines that run in this process write one transaction at a time.
        let threads = if self.meta.kv().embedded() { 4 } else { 50 };
        let removed = AtomicU64::new(0);
        let done = self.meta.empty_dir(&ctx, mino, threads, to_trash, &removed);
        let n = removed.load(Ordering::Relaxed);
        tracing::info!("rmr of inode {mino}: {n} entries removed");
        done.map(|()| n).map_err(Error::from)
    }

    /// Warms, empties or measures this client's cache for the data of file `ino`: the
    /// work of `nectar warmup`, asked for through [`WARMUP_XATTR`], [`EVICT_XATTR`] and
    /// [`CHECK_XATTR`]. Only the stored pieces the file shows are looked at (not the
    /// overwritten parts of its slices, nor holes). Anything but a regular file gives
    /// an empty report.
    pub fn cache_action(&self, ino: Ino, action: CacheAction) -> Result<CacheReport> {
        let mino = self.to_meta(ino);
        let attr = self.meta.get_attr(mino)?;
        if attr.typ != FileType::File {
            return Ok(CacheReport::default());
        }
        let mut ranges = Vec::new();
        for index in 0..attr.length.div_ceil(CHUNK_SIZE) as u32 {
            let records = self.meta.read_chunk(mino, index)?;
            ranges.extend(
                nectar_meta::slice::resolve(&records)
                    .iter()
                    .filter(|s| s.id != 0)
                    .map(|s| (s.id, s.size, s.off, s.len)),
            );
        }
        Ok(self.rt.block_on(self.store.cache_action(action, &ranges))?)
    }

    /// Commits every pending write (on unmount).
    pub fn flush_all(&self) -> Result<()> {
        let files: Vec<Arc<FileState>> = self.files.lock().values().cloned().collect();
        let mut first_err = None;
        for f in files {
            if let Err(e) = self.commit(&f, &mut f.inner.lock(), CommitScope::All) {
                tracing::error!("inode {}: pending writes lost at shutdown: {e}", f.ino);
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Stops background work after committing everything.
    pub fn shutdown(&self) -> Result<()> {
        let r = self.flush_all();
        self.stopped.store(true, Ordering::Relaxed);
        self.meta.stop_following();
        r
    }

    /// The summary of the tree at `ino` as JSON, for `args` = `DEPTH.ENTRIES`.
    fn summary_json(&self, ino: Ino, args: &[u8]) -> Result<Vec<u8>> {
        let args = String::from_utf8_lossy(args);
        let (depth, entries) = args
            .split_once('.')
            .and_then(|(d, e)| Some((d.parse::<usize>().ok()?, e.parse::<usize>().ok()?)))
            .ok_or(Error::Sys(libc::EINVAL))?;
        let summary = self
            .meta
            .summary(self.to_meta(ino), b".", depth, entries, 10)?;
        serde_json::to_vec(&summary).map_err(|_| Error::Sys(libc::EIO))
    }

    /// Compacts every chunk of file `ino` that holds several slice records (what
    /// `nectar compact` asks for); returns the chunks compacted and their records
    /// before and after. Anything but a regular file has nothing to compact.
    pub fn compact_file(&self, ino: Ino) -> Result<(u64, u64, u64)> {
        self.check_writable()?;
        let mino = self.to_meta(ino);
        if self.meta.get_attr(mino)?.typ != FileType::File {
            return Ok((0, 0, 0));
        }
        let (mut chunks, mut before, mut after) = (0, 0, 0);
        for index in self.meta.chunk_indexes(mino, 0, usize::MAX)? {
            let records = self.meta.read_chunk(mino, index)?.len() as u64;
            if records < 2 {
                continue;
            }
            self.compact_chunk(mino, index)?;
            chunks += 1;
            before += records;
            after += self.meta.read_chunk(mino, index)?.len() as u64;
        }
        Ok((chunks, before, after))
    }

    /// Rewrites a chunk's visible data as one slice and swaps it in for the records it
    /// was built from. Records committed meanwhile stay after it; if the chunk changed
    /// in any other way the new slice is thrown away. Where one swap may take only part
    /// of the records (etcd), swaps follow each other until the chunk is one slice or
    /// [`COMPACT_ROUNDS`] were made (the chunk is then queued again).
    pub fn compact_chunk(&self, ino: Ino, index: u32) -> Result<()> {
        for _ in 0..COMPACT_ROUNDS {
            if !self.compact_prefix(ino, index)? {
                return Ok(());
            }
        }
        self.fragmented.lock().insert((ino, index));
        Ok(())
    }

    /// One compaction swap of a chunk's first records; whether more records are left
    /// to swap.
    fn compact_prefix(&self, ino: Ino, index: u32) -> Result<bool> {
        let all = self.meta.read_chunk(ino, index)?;
        // A prefix of the records is as good as all of them (those after it still
        // apply on top), and keeps the swap within what one transaction may hold.
        let limit = self.meta.compaction_limit();
        let records = &all[..all.len().min(limit)];
        if records.len() < 2 {
            return Ok(false);
        }
        let view = nectar_meta::slice::resolve(records);
        let data: Vec<&Slice> = view.iter().filter(|s| s.id != 0).collect();
        let mut writer = None;
        let mut new = None;
        if let (Some(first), Some(last)) = (data.first(), data.last()) {
            let start = first.pos;
            let mut buf = vec![0u8; (last.pos + last.len - start) as usize];
            let parts = self.rt.block_on(futures::future::join_all(
                data.iter()
                    .map(|s| self.store.read(s.id, s.size, s.off, s.len as usize)),
            ));
            for (s, part) in data.iter().zip(parts) {
                let part = part?;
                let at = (s.pos - start) as usize;
                buf[at..at + part.len()].copy_from_slice(&part);
            }
            let id = self.meta.new_slice()?;
            let mut w = self.store.writer(id.id());
            self.rt.block_on(w.append(&buf))?;
            let size = self.rt.block_on(w.finish())?;
            new = Some(Slice {
                pos: start,
                id: w.id(),
                size,
                off: 0,
                len: size,
            });
            writer = Some((w, id));
        }
        // This client's own commits to the file wait while the swap runs: on an engine
        // that detects conflicts optimistically (etcd), a writer appending to the chunk
        // all the time would otherwise make every swap conflict, and the chunk grow
        // without end.
        let file = self.files.lock().get(&ino).cloned();
        let mut held = file.as_ref().map(|f| f.inner.lock());
        let swapped = self.meta.replace_chunk_prefix(ino, index, records, new);
        if let (Ok(true), Some(inner)) = (&swapped, held.as_mut()) {
            inner.slices.remove(&index);
        }
        drop(held);
        if !swapped? {
            if let Some((w, _id)) = writer {
                self.rt.block_on(w.abort());
            }
            return Ok(false);
        }
        self.closed.forget(ino);
        tracing::debug!(
            "inode {ino} chunk {index}: {} records compacted",
            records.len()
        );
        Ok(all.len() > limit)
    }

    /// One pass of the background committer.
    fn commit_due(&self) {
        let now = Instant::now();
        let pressure = self.store.buffered() > self.store.buffer_capacity() / 2;
        let files: Vec<Arc<FileState>> = self.files.lock().values().cloned().collect();
        for f in files {
            // Never wait for a file: its holder may be a write waiting for buffer space
            // that only the commits of other files, further down this list, can free (a
            // write under pressure commits its own file first). A file skipped now is
            // tried again at the next tick.
            let Some(mut inner) = f.inner.try_lock() else {
                continue;
            };
            let scope = match inner.flush_due(now) {
                Some(scope) => scope,
                None if pressure && inner.is_dirty() => CommitScope::All,
                None => continue,
            };
            if let Err(e) = self.commit(&f, &mut inner, scope) {
                tracing::error!("inode {}: background commit failed: {e}", f.ino);
                inner.write_error = Some(e.errno());
            }
        }
    }
}

/// The SELinux label of a file.
const SELINUX_XATTR: &[u8] = b"security.selinux";

/// The name of the virtual xattr that returns [`Vfs::info`].
pub const INFO_XATTR: &[u8] = b"nectar.info";
/// Virtual xattrs whose value is the [`CacheReport`] of a [`Vfs::cache_action`] on the
/// file: reading one warms the cache, empties it, or only measures it.
pub const WARMUP_XATTR: &[u8] = b"nectar.warmup";
/// Read on a directory, removes everything below it (into the trash when it is on),
/// answering with the count: the work of `nectar rmr`.
pub const RMR_XATTR: &[u8] = b"nectar.rmr";
/// Read on a file, compacts every chunk of it made of several slice records, answering
/// with what it did: the work of `nectar compact`.
pub const COMPACT_XATTR: &[u8] = b"nectar.compact";
/// `nectar.summary.DEPTH.ENTRIES`, read on a directory: the JSON of its
/// [`nectar_meta::Summary`] (the work of `nectar summary`).
pub const SUMMARY_XATTR_PREFIX: &str = "nectar.summary.";
/// [`RMR_XATTR`] past the trash (root only).
pub const RMR_SKIP_TRASH_XATTR: &[u8] = b"nectar.rmr.skip-trash";
pub const EVICT_XATTR: &[u8] = b"nectar.evict";
pub const CHECK_XATTR: &[u8] = b"nectar.check";

fn cache_action_of(name: &[u8]) -> Option<CacheAction> {
    match name {
        WARMUP_XATTR => Some(CacheAction::Warm),
        EVICT_XATTR => Some(CacheAction::Evict),
        CHECK_XATTR => Some(CacheAction::Check),
        _ => None,
    }
}

fn committer(vfs: Weak<Vfs>) {
    for tick in 0u64.. {
        std::thread::sleep(Duration::from_millis(100));
        let Some(vfs) = vfs.upgrade() else { return };
        if vfs.stopped.load(Ordering::Relaxed) {
            return;
        }
        if tick % 10 == 0 {
            vfs.record_gauges();
        }
        vfs.commit_due();
        let chunks: Vec<(Ino, u32)> = vfs.fragmented.lock().drain().collect();
        for (ino, index) in chunks {
            if let Err(e) = vfs.compact_chunk(ino, index) {
                if !e.is_expected() {
                    tracing::warn!("inode {ino} chunk {index}: compaction failed: {e}");
                }
            }
        }
    }
}
