//! The FUSE adapter: kernel request in, [`Vfs`] call, reply out — and nothing else.
//!
//! fuser runs several worker threads, each with its own cloned `/dev/fuse` descriptor.
//! A worker only decodes the request: the call itself runs on the tokio blocking pool
//! and replies from there (fuser's reply objects are `Send`), so no worker ever waits on
//! the database or the object store, and a slow request never holds up the others.
//! Errors become errnos here; unexpected ones (not ENOENT and friends) are logged once
//! with the operation they broke.

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType as FuseType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLock,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, RequestId, SessionACL, TimeOrNow,
    WriteFlags,
};
use kernel_sync::{KernelListing, KernelSync};
use nectar_meta::{AclType, Attr, Ctx, FileType, SetAttr, Time, TimeSet};
use nectar_vfs::{Timeouts, Vfs};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::runtime::Handle;

mod kernel_sync;

/// How the kernel side of a mount is set up.
#[derive(Debug, Clone)]
pub struct FuseOptions {
    /// Extra `-o` options, as given by the user.
    pub options: Vec<String>,
    pub read_only: bool,
    pub threads: usize,
    /// Ask the kernel to cache writes (`-o writeback_cache`).
    pub writeback_cache: bool,
    /// Show `noatime` in /proc/mounts (reads never update atime). The kernel never
    /// updates atime on FUSE itself; the VFS does, per `--atime-mode`.
    pub noatime: bool,
    /// Name shown in /proc/mounts.
    pub fsname: String,
}

pub struct NectarFs {
    vfs: Arc<Vfs>,
    /// Other clients' changes, told to the kernel.
    sync: Arc<KernelSync>,
    rt: Handle,
    writeback_cache: bool,
    /// False with `--no-xattr`: every xattr request gets ENOSYS, after which the kernel
    /// sends no more.
    xattrs: bool,
    interrupts: Arc<Interrupts>,
}

/// FUSE_INTERRUPT bookkeeping for requests that may wait (lock requests). An interrupt
/// can overtake the request it names, since requests run on a pool: one that names no
/// waiting request is kept for a while in case that request is about to start.
#[derive(Default)]
struct Interrupts {
    inner: parking_lot::Mutex<InterruptTable>,
}

#[derive(Default)]
struct InterruptTable {
    waiting: HashMap<u64, Arc<AtomicBool>>,
    early: HashMap<u64, Instant>,
}

/// How long an interrupt that overtook its request is remembered.
const EARLY_INTERRUPT_TTL: Duration = Duration::from_secs(30);

impl Interrupts {
    /// Registers request `unique` as waiting; the flag turns true when it is interrupted.
    fn register(self: &Arc<Self>, unique: u64) -> InterruptGuard {
        let flag = Arc::new(AtomicBool::new(false));
        let mut t = self.inner.lock();
        if t.early.remove(&unique).is_some() {
            flag.store(true, Ordering::Relaxed);
        }
        t.waiting.insert(unique, flag.clone());
        InterruptGuard {
            table: self.clone(),
            unique,
            flag,
        }
    }

    fn interrupt(&self, unique: u64) {
        let mut t = self.inner.lock();
        if let Some(flag) = t.waiting.get(&unique) {
            flag.store(true, Ordering::Relaxed);
            return;
        }
        let now = Instant::now();
        t.early
            .retain(|_, at| now.duration_since(*at) < EARLY_INTERRUPT_TTL);
        t.early.insert(unique, now);
    }
}

struct InterruptGuard {
    table: Arc<Interrupts>,
    unique: u64,
    flag: Arc<AtomicBool>,
}

impl InterruptGuard {
    fn interrupted(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

impl Drop for InterruptGuard {
    fn drop(&mut self) {
        self.table.inner.lock().waiting.remove(&self.unique);
    }
}

fn to_fuse_type(t: FileType) -> FuseType {
    match t {
        FileType::File => FuseType::RegularFile,
        FileType::Directory => FuseType::Directory,
        FileType::Symlink => FuseType::Symlink,
        FileType::Fifo => FuseType::NamedPipe,
        FileType::BlockDev => FuseType::BlockDevice,
        FileType::CharDev => FuseType::CharDevice,
        FileType::Socket => FuseType::Socket,
    }
}

fn to_file_attr(ino: u64, a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: a.length,
        blocks: a.length.div_ceil(512),
        atime: a.atime.to_system_time(),
        mtime: a.mtime.to_system_time(),
        ctime: a.ctime.to_system_time(),
        crtime: a.ctime.to_system_time(),
        kind: to_fuse_type(a.typ),
        perm: a.mode,
        nlink: a.visible_nlink(),
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 4096,
        flags: 0,
    }
}

fn ctx(req: &Request) -> Ctx {
    Ctx {
        uid: req.uid(),
        gid: req.gid(),
        gids: Vec::new(),
        pid: req.pid(),
        // Mounted with default_permissions: the kernel checks access with the caller's
        // full credentials before a request reaches us.
        check_permission: false,
    }
}

/// [`ctx`] with the caller's supplementary groups, read from /proc (the kernel does
/// not send them). For the few decisions left to us that depend on group membership.
fn ctx_with_groups(req: &Request) -> Ctx {
    let mut c = ctx(req);
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", c.pid)) {
        if let Some(line) = status.lines().find(|l| l.starts_with("Groups:")) {
            c.gids = line[7..]
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect();
        }
    }
    c
}

fn errno(op: &str, e: nectar_vfs::Error) -> Errno {
    if !e.is_expected() {
        tracing::error!("{op}: {e}");
    }
    Errno::from_i32(e.errno())
}

fn time_set(t: Option<TimeOrNow>) -> Option<TimeSet> {
    t.map(|t| match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(Time::from_system_time(t)),
    })
}

impl NectarFs {
    pub fn new(vfs: Arc<Vfs>, rt: Handle, writeback_cache: bool) -> Self {
        NectarFs {
            vfs,
            sync: Default::default(),
            rt,
            writeback_cache,
            xattrs: true,
            interrupts: Default::default(),
        }
    }

    /// Answers no extended attribute request (`--no-xattr`): the kernel, told ENOSYS
    /// once per kind of request, stops sending them.
    pub fn without_xattrs(mut self) -> Self {
        self.xattrs = false;
        self
    }

    /// Runs `f`, the handler of FUSE operation `op`, on the blocking pool with the VFS,
    /// and records its latency from arrival to reply, time waiting for a thread
    /// included (`nectar_fuse_op_duration_seconds` by `op`; its count is the number of
    /// operations).
    fn spawn(&self, op: &'static str, f: impl FnOnce(&Served) + Send + 'static) {
        let (vfs, sync) = (self.vfs.clone(), self.sync.clone());
        let start = std::time::Instant::now();
        self.rt.spawn_blocking(move || {
            let since = vfs.change_seq();
            f(&Served {
                vfs: &vfs,
                sync: &sync,
                since,
            });
            record_op(op, start);
        });
    }

    /// What starts telling the kernel what other clients change, once the session
    /// (and its notifier) exists.
    pub fn change_follower(&self) -> ChangeFollower {
        ChangeFollower {
            vfs: self.vfs.clone(),
            sync: self.sync.clone(),
        }
    }

    /// Replies with the entry `name` of `parent` (kernel numbers) that `res` found or
    /// made.
    fn reply_entry(
        s: &Served,
        reply: ReplyEntry,
        parent: u64,
        name: &[u8],
        res: nectar_vfs::Result<(u64, Attr)>,
        op: &str,
    ) {
        match res {
            Ok((ino, attr)) => s.answer(ino, Some((parent, name)), |t| {
                reply.entry_with_ttls(
                    &t.entry_for(attr.typ),
                    &t.attr,
                    &to_file_attr(ino, &attr),
                    Generation(0),
                )
            }),
            Err(e) => reply.error(errno(op, e)),
        }
    }
}

/// Starts telling the kernel what other clients change ([`NectarFs::change_follower`]).
pub struct ChangeFollower {
    vfs: Arc<Vfs>,
    sync: Arc<KernelSync>,
}

impl ChangeFollower {
    /// Follows the engine's change feed, if it has one, and invalidates the kernel's
    /// caches through `notifier`. Returns whether the engine has a feed.
    pub fn start(self, notifier: fuser::Notifier) -> bool {
        self.sync.start(&self.vfs, notifier)
    }
}

/// What a request's handler works with: the VFS (which it derefs to), and what decides
/// how long the kernel may keep the answer.
struct Served<'a> {
    vfs: &'a Vfs,
    sync: &'a KernelSync,
    /// Where the changes heard from other clients stood when the handler started.
    since: nectar_meta::ChangeSeq,
}

impl std::ops::Deref for Served<'_> {
    type Target = Vfs;
    fn deref(&self) -> &Vfs {
        self.vfs
    }
}

impl Served<'_> {
    /// Sends an answer about kernel inode `ino` (and entry `entry`) with the timeouts
    /// it may have (see [`KernelSync::answer`]).
    fn answer<R>(
        &self,
        ino: u64,
        entry: Option<(u64, &[u8])>,
        send: impl FnOnce(Timeouts) -> R,
    ) -> R {
        self.sync.answer(self.vfs, self.since, ino, entry, send)
    }
}

/// Records a FUSE request's latency (`nectar_fuse_op_duration_seconds`, by `op`).
fn record_op(op: &'static str, start: std::time::Instant) {
    metrics::histogram!("nectar_fuse_op_duration_seconds", "op" => op)
        .record(start.elapsed().as_secs_f64());
}

/// The smallest `fuse_dirent` in a READDIR reply: 24 bytes and a name of one byte,
/// padded to 8.
const DIRENT_MIN: usize = 32;
/// The smallest `fuse_direntplus`: a 128-byte `fuse_entry_out` before it.
const DIRENTPLUS_MIN: usize = 128 + DIRENT_MIN;

/// How many entries of at least `entry` bytes a reply of `size` bytes may hold: the
/// VFS prepares no more (the kernel asks again for the rest).
fn entries_that_fit(size: usize, entry: usize) -> usize {
    (size / entry).max(1)
}

fn name_vec(name: &OsStr) -> Vec<u8> {
    name.as_bytes().to_vec()
}

impl Filesystem for NectarFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // READDIRPLUS for every page of a listing, not READDIRPLUS_AUTO: with AUTO the
        // kernel goes back to plain pages after the first unless something looked an
        // entry up meanwhile, and then `rm -rf` or `find` pay a lookup per entry. A
        // page with attributes costs one batched read more than one without.
        let mut wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_CACHE_SYMLINKS
            // Locks go to the metadata engine, so other mounts see them.
            | InitFlags::FUSE_POSIX_LOCKS
            | InitFlags::FUSE_FLOCK_LOCKS;
        if self.writeback_cache {
            wanted |= InitFlags::FUSE_WRITEBACK_CACHE;
        }
        if self.vfs.acl_enabled() {
            // The kernel checks access with the ACLs (it reads them as xattrs) and
            // leaves the umask to us: it does not apply where a default ACL is inherited.
            wanted |= InitFlags::FUSE_POSIX_ACL | InitFlags::FUSE_DONT_MASK;
        }
        let supported = config.capabilities() & wanted;
        let _ = config.add_capabilities(supported);
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        let _ = config.set_time_granularity(Duration::from_nanos(1));
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.vfs.shutdown() {
            tracing::error!("unmount: {e}");
        }
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let (c, name) = (ctx(req), name_vec(name));
        self.spawn("lookup", move |vfs| {
            let res = vfs.lookup(&c, parent.0, &name);
            Self::reply_entry(vfs, reply, parent.0, &name, res, "lookup");
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.spawn("getattr", move |vfs| match vfs.getattr(ino.0) {
            Ok(a) => vfs.answer(ino.0, None, |t| {
                reply.attr(&t.attr, &to_file_attr(ino.0, &a))
            }),
            Err(e) => reply.error(errno("getattr", e)),
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let c = ctx(req);
        let set = SetAttr {
            mode,
            uid,
            gid,
            atime: time_set(atime),
            mtime: time_set(mtime),
            ctime: ctime.map(Time::from_system_time),
            flags: None,
        };
        self.spawn("setattr", move |vfs| {
            match vfs.setattr(&c, ino.0, &set, size) {
                Ok(a) => vfs.answer(ino.0, None, |t| {
                    reply.attr(&t.attr, &to_file_attr(ino.0, &a))
                }),
                Err(e) => reply.error(errno("setattr", e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn("readlink", move |vfs| match vfs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno("readlink", e)),
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let (c, name) = (ctx(req), name_vec(name));
        self.spawn("mknod", move |vfs| {
            let res = vfs.mknod(&c, parent.0, &name, mode, umask, rdev);
            Self::reply_entry(vfs, reply, parent.0, &name, res, "mknod");
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let (c, name) = (ctx(req), name_vec(name));
        self.spawn("mkdir", move |vfs| {
            let res = vfs.mkdir(&c, parent.0, &name, mode, umask);
            Self::reply_entry(vfs, reply, parent.0, &name, res, "mkdir");
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (c, name) = (ctx(req), name_vec(name));
        self.spawn("unlink", move |vfs| match vfs.unlink(&c, parent.0, &name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("unlink", e)),
        });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (c, name) = (ctx(req), name_vec(name));
        self.spawn("rmdir", move |vfs| match vfs.rmdir(&c, parent.0, &name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("rmdir", e)),
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (c, name, target) = (
            ctx(req),
            name_vec(link_name),
            target.as_os_str().as_bytes().to_vec(),
        );
        self.spawn("symlink", move |vfs| {
            let res = vfs.symlink(&c, parent.0, &name, &target);
            Self::reply_entry(vfs, reply, parent.0, &name, res, "symlink");
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (c, name, newname) = (ctx(req), name_vec(name), name_vec(newname));
        self.spawn("rename", move |vfs| {
            match vfs.rename(&c, parent.0, &name, newparent.0, &newname, flags.bits()) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("rename", e)),
            }
        });
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let (c, name) = (ctx(req), name_vec(newname));
        self.spawn("link", move |vfs| {
            let res = vfs.link(&c, ino.0, newparent.0, &name).map(|a| (ino.0, a));
            Self::reply_entry(vfs, reply, newparent.0, &name, res, "link");
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let c = ctx(req);
        self.spawn("open", move |vfs| match vfs.open(&c, ino.0, flags.0) {
            Ok(o) => {
                let mut f = FopenFlags::empty();
                if o.keep_cache {
                    f |= FopenFlags::FOPEN_KEEP_CACHE;
                }
                if flags.0 & libc::O_DIRECT != 0 {
                    f |= FopenFlags::FOPEN_DIRECT_IO;
                }
                reply.opened(FileHandle(o.fh), f)
            }
            Err(e) => reply.error(errno("open", e)),
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (c, name) = (ctx(req), name_vec(name));
        self.spawn("create", move |vfs| {
            match vfs.create(&c, parent.0, &name, mode, umask, flags) {
                Ok((ino, o)) => {
                    let mut f = FopenFlags::empty();
                    if flags & libc::O_DIRECT != 0 {
                        f |= FopenFlags::FOPEN_DIRECT_IO;
                    }
                    vfs.answer(ino, Some((parent.0, &name)), |t| {
                        reply.created(
                            &t.entry,
                            &to_file_attr(ino, &o.attr),
                            Generation(0),
                            FileHandle(o.fh),
                            f,
                        )
                    })
                }
                Err(e) => reply.error(errno("create", e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.spawn("read", move |vfs| {
            match vfs.read(fh.0, offset, size as usize) {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(errno("read", e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let data = data.to_vec();
        self.spawn("write", move |vfs| match vfs.write(fh.0, offset, &data) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno("write", e)),
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // A close: commit, and drop the closing process's POSIX locks on the file.
        self.spawn("flush", move |vfs| {
            let res = vfs
                .flush(fh.0)
                .and(vfs.release_posix_locks(fh.0, lock_owner.0));
            match res {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("flush", e)),
            }
        });
    }

    fn flock(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        typ: i32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let guard = self.interrupts.register(req.unique().0);
        self.spawn("flock", move |vfs| {
            let interrupted = || guard.interrupted();
            match vfs.flock(fh.0, lock_owner.0, typ as u32, sleep, &interrupted) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("flock", e)),
            }
        });
    }

    fn getlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        self.spawn("getlk", move |vfs| {
            match vfs.getlk(fh.0, lock_owner.0, typ as u32, start, end) {
                Ok(Some(l)) => reply.locked(l.start, l.end, l.typ as i32, l.pid),
                Ok(None) => reply.locked(0, 0, libc::F_UNLCK, 0),
                Err(e) => reply.error(errno("getlk", e)),
            }
        });
    }

    fn setlk(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let guard = self.interrupts.register(req.unique().0);
        self.spawn("setlk", move |vfs| {
            let interrupted = || guard.interrupted();
            let (owner, typ) = (lock_owner.0, typ as u32);
            match vfs.setlk(fh.0, owner, typ, start, end, pid, sleep, &interrupted) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("setlk", e)),
            }
        });
    }

    fn interrupt(&self, _req: &Request, unique: RequestId) {
        self.interrupts.interrupt(unique.0);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn("release", move |vfs| match vfs.release(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("release", e)),
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn("fsync", move |vfs| match vfs.fsync(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("fsync", e)),
        });
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let c = ctx(req);
        self.spawn("opendir", move |vfs| match vfs.opendir(&c, ino.0) {
            Ok(fh) => {
                // The kernel keeps the listing while it can be told when it changes.
                let flags = match vfs.sync.listing_at_open(vfs.vfs, ino.0) {
                    KernelListing::Keep => {
                        FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
                    }
                    KernelListing::Fill => FopenFlags::FOPEN_CACHE_DIR,
                    KernelListing::Uncached => FopenFlags::empty(),
                };
                reply.opened(FileHandle(fh), flags)
            }
            Err(e) => reply.error(errno("opendir", e)),
        });
    }

    fn readdir(
        &self,
        req: &Request,
        dir: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let c = ctx(req);
        let max = entries_that_fit(reply.size(), DIRENT_MIN);
        self.spawn("readdir", move |vfs| {
            match vfs.readdir(&c, fh.0, offset, false, max) {
                Ok(page) => {
                    vfs.sync
                        .answer_listing(vfs.vfs, vfs.since, dir.0, page.listed_at, |_| {
                            for e in page.entries {
                                if reply.add(
                                    INodeNo(e.ino),
                                    e.next_offset,
                                    to_fuse_type(e.typ),
                                    OsStr::from_bytes(&e.name),
                                ) {
                                    break;
                                }
                            }
                            reply.ok()
                        })
                }
                Err(e) => reply.error(errno("readdir", e)),
            }
        });
    }

    fn readdirplus(
        &self,
        req: &Request,
        dir: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let c = ctx(req);
        let max = entries_that_fit(reply.size(), DIRENTPLUS_MIN);
        self.spawn("readdirplus", move |vfs| {
            match vfs.readdir(&c, fh.0, offset, true, max) {
                Ok(page) => {
                    vfs.sync
                        .answer_listing(vfs.vfs, vfs.since, dir.0, page.listed_at, |timeouts| {
                            for e in page.entries {
                                let Some(attr) = e.attr.as_ref() else {
                                    continue;
                                };
                                let t = timeouts(e.ino, Some((dir.0, &e.name)));
                                let fa = to_file_attr(e.ino, attr);
                                if reply.add(
                                    INodeNo(e.ino),
                                    e.next_offset,
                                    OsStr::from_bytes(&e.name),
                                    &t.entry_for(e.typ),
                                    &fa,
                                    Generation(0),
                                ) {
                                    break;
                                }
                            }
                            reply.ok()
                        })
                }
                Err(e) => reply.error(errno("readdirplus", e)),
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        match self.vfs.releasedir(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("releasedir", e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Every directory change is a committed transaction already.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        self.spawn("statfs", move |vfs| match vfs.statfs(ino.0) {
            Ok(s) => {
                let bsize = 4096u64;
                let blocks = s.total_space / bsize;
                let avail = s.avail_space / bsize;
                reply.statfs(
                    blocks,
                    avail,
                    avail,
                    s.used_inodes + s.avail_inodes,
                    s.avail_inodes,
                    bsize as u32,
                    255,
                    bsize as u32,
                )
            }
            Err(e) => reply.error(errno("statfs", e)),
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if !self.xattrs {
            return reply.error(Errno::from_i32(libc::ENOSYS));
        }
        // Setting an access ACL clears setgid for a caller outside the owning group,
        // which metadata decides (the kernel leaves it to us without FUSE_SETXATTR_EXT).
        let c = if AclType::from_xattr_name(name.as_bytes()).is_some() {
            ctx_with_groups(req)
        } else {
            ctx(req)
        };
        let (name, value) = (name_vec(name), value.to_vec());
        self.spawn("setxattr", move |vfs| {
            match vfs.setxattr(&c, ino.0, &name, &value, flags) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("setxattr", e)),
            }
        });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if !self.xattrs {
            return reply.error(Errno::from_i32(libc::ENOSYS));
        }
        let answer = move |res: nectar_vfs::Result<Vec<u8>>, reply: ReplyXattr| match res {
            Ok(v) => reply_xattr(reply, &v, size),
            Err(e) => reply.error(errno("getxattr", e)),
        };
        let rmr = match name.as_bytes() {
            n if n == nectar_vfs::RMR_XATTR => Some(true),
            n if n == nectar_vfs::RMR_SKIP_TRASH_XATTR => Some(false),
            _ => None,
        };
        if let Some(to_trash) = rmr {
            // Removals are checked here with the caller's rights: the kernel checked
            // only its right to read this directory's xattrs.
            let c = ctx_with_groups(req);
            return self.spawn("rmr", move |vfs| {
                let res = vfs.remove_below(&c, ino.0, to_trash);
                answer(res.map(|n| n.to_string().into_bytes()), reply)
            });
        }
        // A known answer is given on this thread: a hand-off to a worker costs more
        // than the answer.
        let start = std::time::Instant::now();
        if let Some(res) = self.vfs.getxattr_cached(ino.0, name.as_bytes()) {
            answer(res, reply);
            record_op("getxattr", start);
            return;
        }
        let name = name_vec(name);
        self.spawn("getxattr", move |vfs| {
            answer(vfs.getxattr(ino.0, &name), reply)
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if !self.xattrs {
            return reply.error(Errno::from_i32(libc::ENOSYS));
        }
        self.spawn("listxattr", move |vfs| match vfs.listxattr(ino.0) {
            Ok(v) => reply_xattr(reply, &v, size),
            Err(e) => reply.error(errno("listxattr", e)),
        });
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if !self.xattrs {
            return reply.error(Errno::from_i32(libc::ENOSYS));
        }
        let (c, name) = (ctx(req), name_vec(name));
        self.spawn("removexattr", move |vfs| {
            match vfs.removexattr(&c, ino.0, &name) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("removexattr", e)),
            }
        });
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let c = ctx(req);
        self.spawn("fallocate", move |vfs| {
            match vfs.fallocate(&c, fh.0, mode, offset, length) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("fallocate", e)),
            }
        });
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        if offset < 0 {
            return reply.error(Errno::ENXIO);
        }
        self.spawn("lseek", move |vfs| {
            match vfs.lseek(fh.0, offset as u64, whence) {
                Ok(off) => reply.offset(off as i64),
                Err(e) => reply.error(errno("lseek", e)),
            }
        });
    }

    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        if flags.bits() != 0 {
            return reply.error(Errno::EINVAL);
        }
        let c = ctx(req);
        // The reply carries a 32-bit count; callers loop for the rest.
        let len = len.min(u32::MAX as u64 & !0xfff);
        self.spawn("copy_file_range", move |vfs| {
            match vfs.copy_file_range(&c, fh_in.0, offset_in, fh_out.0, offset_out, len) {
                Ok(n) => reply.written(n as u32),
                Err(e) => reply.error(errno("copy_file_range", e)),
            }
        });
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // No ioctls: tell callers (isatty and friends) quietly.
        reply.error(Errno::ENOTTY);
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        let c = ctx(req);
        self.spawn("access", move |vfs| {
            match vfs.access(&c, ino.0, mask.bits() as u32) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("access", e)),
            }
        });
    }
}

/// The xattr reply protocol: size 0 asks for the length; too small a buffer is ERANGE.
fn reply_xattr(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

/// The fuser configuration for a mount.
pub fn fuse_config(opts: &FuseOptions) -> Config {
    let mut mount_options = vec![
        MountOption::FSName(opts.fsname.clone()),
        MountOption::Subtype("nectar".into()),
        MountOption::DefaultPermissions,
    ];
    if opts.noatime {
        mount_options.push(MountOption::NoAtime);
    }
    // As root, let every user in (as JuiceFS does): a volume shared by a cluster is
    // used by many accounts, and access is checked per file by default_permissions.
    // SAFETY: geteuid has no preconditions.
    let mut acl = if unsafe { libc::geteuid() } == 0 {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    if opts.read_only {
        mount_options.push(MountOption::RO);
    }
    for o in &opts.options {
        match o.as_str() {
            "allow_other" => acl = SessionACL::All,
            "allow_root" => acl = SessionACL::RootAndOwner,
            "ro" => mount_options.push(MountOption::RO),
            "writeback_cache" | "default_permissions" | "" => {}
            "dev" => mount_options.push(MountOption::Dev),
            "nodev" => mount_options.push(MountOption::NoDev),
            "suid" => mount_options.push(MountOption::Suid),
            "nosuid" => mount_options.push(MountOption::NoSuid),
            "exec" => mount_options.push(MountOption::Exec),
            "noexec" => mount_options.push(MountOption::NoExec),
            other => mount_options.push(MountOption::CUSTOM(other.to_string())),
        }
    }
    let mut cfg = Config::default();
    cfg.mount_options = mount_options;
    cfg.acl = acl;
    cfg.n_threads = Some(opts.threads.max(1));
    cfg.clone_fd = opts.threads > 1;
    cfg
}

/// Mounts and serves until the file system is unmounted. Returns a handle to unmount.
pub fn mount(
    fs: NectarFs,
    mountpoint: &Path,
    opts: &FuseOptions,
) -> std::io::Result<fuser::Session<NectarFs>> {
    fuser::Session::new(fs, mountpoint, &fuse_config(opts))
}
