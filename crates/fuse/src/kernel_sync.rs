//! Telling the kernel what other clients changed.
//!
//! The design: the VFS hears other clients' changes ([`Vfs::follow_changes`]) and
//! hands them here; a thread of this module sends the kernel the matching
//! invalidations (`FUSE_NOTIFY_INVAL_INODE` for attributes and pages,
//! `FUSE_NOTIFY_INVAL_ENTRY` for names). That lets answers carry the user's long
//! timeouts while the feed is live.
//!
//! Two races are closed here. An answer read before a change arrived but sent to the
//! kernel after its invalidation would stay stale for the whole timeout, so every
//! answer that may get a long timeout is sent under the read side of a gate
//! ([`KernelSync::answer`]), after checking that no change heard since its read touched
//! it; the sending thread, before it invalidates, passes the write side of the gate
//! once, so every answer that checked before the change was heard has reached the
//! kernel first. (The gate is never held while the kernel is told: an invalidation
//! may wait for a directory lock that a request in flight holds.) And when the feed
//! breaks, everything the kernel was given with a long timeout must go: entries and
//! inodes answered with long timeouts are remembered (at most [`MAX_GIVEN`]; past that,
//! answers get short timeouts) and all invalidated on [`Change::FeedLost`].
//!
//! Listings are kept by the kernel too while the feed is live (`FOPEN_CACHE_DIR` at
//! opendir, with `FOPEN_KEEP_CACHE` when the kept listing may be used): a second `ls`
//! of an unchanged directory costs no request at all. With long kernel timeouts a kept
//! listing is always used. With short ones it is used only while the names and
//! attributes its READDIRPLUS pages gave are surely still trusted by the kernel (half
//! the shortest timeout after the open that had it filled), since a listing served by
//! the kernel brings no attributes and `ls -l` would otherwise pay a lookup per entry;
//! later opens have it filled again. The kernel drops such a listing itself when this
//! mount changes the directory; another client's change of one of its entries
//! invalidates the directory's pages here. A listing reply read before a change that it may miss, but
//! sent after that change's invalidation, would be kept stale: replies are sent under
//! the gate, and one whose listing is older than a change heard to the directory is
//! followed by another invalidation of the directory's pages.

use fuser::{INodeNo, Notifier};
use nectar_meta::{Change, ChangeSeq, Ino};
use nectar_vfs::{Timeouts, Vfs};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Entries and inodes remembered as given to the kernel with a long timeout.
pub const MAX_GIVEN: usize = 1_000_000;

/// Directories whose fill time is remembered at most (the map is emptied past it).
const MAX_FILLED: usize = 100_000;

/// What the kernel may do with the listing of a directory being opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KernelListing {
    /// Ask for every page.
    Uncached,
    /// Drop what it kept and keep what it reads now.
    Fill,
    /// Serve what it kept, and keep what it reads.
    Keep,
}

#[derive(Default)]
pub(crate) struct KernelSync {
    gate: RwLock<()>,
    given: Mutex<Given>,
    /// When the kernel last started filling a directory's kept listing, with short
    /// timeouts (see [`KernelSync::listing_at_open`]).
    filled: Mutex<HashMap<Ino, Instant>>,
    /// Whether invalidations reach the kernel (the notifier thread runs).
    active: std::sync::atomic::AtomicBool,
    /// Where the notifier thread's work goes.
    work: Mutex<Option<mpsc::Sender<Work>>>,
}

/// What the notifier thread does.
enum Work {
    /// Invalidate what other clients' changes touch.
    Changes(Vec<Change>),
    /// Drop the listing the kernel keeps of a directory.
    Listing(Ino),
}

#[derive(Default)]
struct Given {
    entries: HashSet<(Ino, Box<[u8]>)>,
    inodes: HashSet<Ino>,
}

impl KernelSync {
    /// Sends an answer about kernel inode `ino` (and entry `entry`) read since `since`,
    /// with the timeouts it may have.
    pub(crate) fn answer<R>(
        &self,
        vfs: &Vfs,
        since: ChangeSeq,
        ino: Ino,
        entry: Option<(Ino, &[u8])>,
        send: impl FnOnce(Timeouts) -> R,
    ) -> R {
        self.answer_many(vfs, since, |timeouts| send(timeouts(ino, entry)))
    }

    /// Sends an answer about several inodes and entries (a listing page): `send` asks
    /// the timeouts of each.
    pub(crate) fn answer_many<R>(
        &self,
        vfs: &Vfs,
        since: ChangeSeq,
        send: impl FnOnce(&dyn Fn(Ino, Option<(Ino, &[u8])>) -> Timeouts) -> R,
    ) -> R {
        let _gate = self.gate.read();
        send(&|ino, entry| self.timeouts(vfs, since, ino, entry))
    }

    /// The timeouts of an answer about `ino` (and `entry`) read since `since`: long ones
    /// only when they can be invalidated later.
    fn timeouts(
        &self,
        vfs: &Vfs,
        since: ChangeSeq,
        ino: Ino,
        entry: Option<(Ino, &[u8])>,
    ) -> Timeouts {
        let t = vfs.timeouts(since, ino, entry);
        let short = |d: Duration| d.min(nectar_vfs::FALLBACK_TIMEOUT);
        let long =
            t.attr > short(t.attr) || t.entry > short(t.entry) || t.dir_entry > short(t.dir_entry);
        if long && vfs.meta().feed_supported() && !self.remember(ino, entry) {
            return Timeouts {
                attr: short(t.attr),
                entry: short(t.entry),
                dir_entry: short(t.dir_entry),
            };
        }
        t
    }

    /// What the kernel may do with the listing of directory `dir` being opened: keep
    /// one only while the feed is live and the directory can be invalidated later;
    /// always use it with long timeouts ([`Vfs::may_keep_listings`]); with short ones,
    /// use it within half the shortest timeout of the open that had it filled, and
    /// have it filled again after that.
    pub(crate) fn listing_at_open(&self, vfs: &Vfs, dir: Ino) -> KernelListing {
        let _gate = self.gate.read();
        if vfs.may_keep_listings() {
            return match self.remember(dir, None) {
                true => KernelListing::Keep,
                false => KernelListing::Uncached,
            };
        }
        let cfg = vfs.config();
        let fresh_for = cfg
            .attr_timeout
            .min(cfg.entry_timeout)
            .min(cfg.dir_entry_timeout)
            / 2;
        if fresh_for.is_zero() || !vfs.meta().feed_live() || !self.remember(dir, None) {
            return KernelListing::Uncached;
        }
        let now = Instant::now();
        let mut filled = self.filled.lock();
        match filled.get(&dir) {
            Some(at) if now.duration_since(*at) < fresh_for => KernelListing::Keep,
            _ => {
                if filled.len() >= MAX_FILLED {
                    filled.clear();
                }
                filled.insert(dir, now);
                KernelListing::Fill
            }
        }
    }

    /// Sends a listing reply of directory `dir` whose listing was read since
    /// `listed_at` (and its entries' answers since `since`, as [`Self::answer_many`]);
    /// if a change of one of its entries was heard since, the listing the kernel may
    /// now keep is dropped again after the reply.
    pub(crate) fn answer_listing<R>(
        &self,
        vfs: &Vfs,
        since: ChangeSeq,
        dir: Ino,
        listed_at: ChangeSeq,
        send: impl FnOnce(&dyn Fn(Ino, Option<(Ino, &[u8])>) -> Timeouts) -> R,
    ) -> R {
        let _gate = self.gate.read();
        let r = send(&|ino, entry| self.timeouts(vfs, since, ino, entry));
        if vfs.listing_changed_since(listed_at, dir) {
            if let Some(work) = self.work.lock().as_ref() {
                let _ = work.send(Work::Listing(dir));
            }
        }
        r
    }

    /// Remembers what gets a long timeout; false when it cannot be invalidated later
    /// (no notifier, or too much remembered).
    fn remember(&self, ino: Ino, entry: Option<(Ino, &[u8])>) -> bool {
        if !self.active.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        let mut g = self.given.lock();
        if g.inodes.len() >= MAX_GIVEN || g.entries.len() >= MAX_GIVEN {
            return false;
        }
        g.inodes.insert(ino);
        if let Some((p, n)) = entry {
            g.entries.insert((p, Box::from(n)));
        }
        true
    }

    /// Starts passing other clients' changes to the kernel through `notifier`.
    pub(crate) fn start(self: &Arc<Self>, vfs: &Arc<Vfs>, notifier: Notifier) -> bool {
        if !vfs.meta().feed_supported() {
            return false;
        }
        let (tx, rx) = mpsc::channel::<Work>();
        let sync = self.clone();
        let spawned = std::thread::Builder::new()
            .name("nectar-inval".into())
            .spawn(move || {
                for work in rx {
                    match work {
                        Work::Changes(changes) => sync.invalidate(&notifier, &changes),
                        Work::Listing(dir) => {
                            drop(sync.gate.write());
                            let _ = notifier.inval_inode(INodeNo(dir), 0, 0);
                        }
                    }
                }
            });
        if spawned.is_err() {
            tracing::warn!("cannot start the kernel invalidation thread: short kernel timeouts");
            return false;
        }
        self.active
            .store(true, std::sync::atomic::Ordering::Release);
        *self.work.lock() = Some(tx.clone());
        let tx = Mutex::new(tx);
        if !vfs.follow_changes(Arc::new(move |c: &[Change]| {
            let _ = tx.lock().send(Work::Changes(c.to_vec()));
        })) {
            self.active
                .store(false, std::sync::atomic::Ordering::Release);
            return false;
        }
        true
    }

    fn invalidate(&self, notifier: &Notifier, changes: &[Change]) {
        // Every answer that checked for changes before these were heard is sent first.
        drop(self.gate.write());
        let entry = |p: Ino, n: &[u8]| {
            let _ = notifier.inval_entry(INodeNo(p), OsStr::from_bytes(n));
        };
        // Attributes only (a negative offset), or attributes and every cached page.
        let inode = |ino: Ino, pages: bool| {
            let _ = notifier.inval_inode(INodeNo(ino), if pages { 0 } else { -1 }, 0);
        };
        // Directories whose kept listing an entry change made stale, once each.
        let mut listings = HashSet::new();
        for c in changes {
            match c {
                Change::Attr(ino) => inode(*ino, false),
                Change::Data(ino, _) => inode(*ino, true),
                Change::Entry(p, n) => {
                    self.given
                        .lock()
                        .entries
                        .remove(&(*p, n.clone().into_boxed_slice()));
                    entry(*p, n);
                    listings.insert(*p);
                }
                Change::Xattr(_) | Change::FeedLive => {}
                Change::Everything | Change::FeedLost => {
                    let given = std::mem::take(&mut *self.given.lock());
                    for (p, n) in &given.entries {
                        entry(*p, n);
                    }
                    for ino in given.inodes {
                        inode(ino, true);
                    }
                }
            }
        }
        for dir in listings {
            inode(dir, true);
        }
    }
}
