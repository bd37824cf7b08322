//! Other clients' changes, as the VFS and the kernel above it must see them.
//!
//! While the metadata change feed is live (see `nectar_meta::cache`), every change
//! another client commits reaches [`Vfs::follow_changes`]: the VFS drops what it keeps
//! of the inode (attributes this client wrote, xattr answers, a file's resolved slices)
//! and passes the change on, in kernel inode numbers, to the adapter, which tells the
//! kernel to drop its copies. So the kernel may keep attributes and entries for the
//! long timeouts the user asked for ([`Timeouts`]): nothing stays stale longer than a
//! change takes to arrive.
//!
//! Without a live feed the kernel gets at most [`FALLBACK_TIMEOUT`] (another client's
//! change shows within it, as before there was a feed), and so do this client's own
//! small caches. An engine without any feed (TiKV) keeps the user's timeouts as they
//! are, as JuiceFS does: whoever asks for long ones accepts their staleness there.

use crate::Vfs;
use nectar_meta::{Change, ChangeListener, ChangeSeq, FileType, Ino};
use std::sync::Arc;
use std::time::Duration;

/// The longest timeout the kernel gets for an answer another client's change could
/// make stale unannounced: when the feed is down, or the answer raced a change.
pub const FALLBACK_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the kernel may keep an answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub attr: Duration,
    pub entry: Duration,
    pub dir_entry: Duration,
}

impl Timeouts {
    /// The entry timeout for a node of type `typ`.
    pub fn entry_for(&self, typ: FileType) -> Duration {
        if typ == FileType::Directory {
            self.dir_entry
        } else {
            self.entry
        }
    }
}

impl Vfs {
    /// How long this client trusts what it keeps without asking: the attribute timeout,
    /// cut to [`FALLBACK_TIMEOUT`] while a feed that exists is not live.
    pub(crate) fn trusted_for(&self) -> Duration {
        if self.meta.feed_supported() && !self.meta.feed_live() {
            self.cfg.attr_timeout.min(FALLBACK_TIMEOUT)
        } else {
            self.cfg.attr_timeout
        }
    }

    /// The timeouts for an answer about kernel inode `ino` (and entry `entry`, kernel
    /// parent and name) read since `since`: the configured ones, unless a feed exists
    /// and is not live or another client changed that inode or entry meanwhile.
    pub fn timeouts(&self, since: ChangeSeq, ino: Ino, entry: Option<(Ino, &[u8])>) -> Timeouts {
        let configured = Timeouts {
            attr: self.cfg.attr_timeout,
            entry: self.cfg.entry_timeout,
            dir_entry: self.cfg.dir_entry_timeout,
        };
        let entry = entry.map(|(p, n)| (self.to_meta(p), n));
        if !self.meta.feed_supported() || !self.meta.changed_since(since, self.to_meta(ino), entry)
        {
            return configured;
        }
        Timeouts {
            attr: configured.attr.min(FALLBACK_TIMEOUT),
            entry: configured.entry.min(FALLBACK_TIMEOUT),
            dir_entry: configured.dir_entry.min(FALLBACK_TIMEOUT),
        }
    }

    /// Whether the kernel may keep directory listings: while the feed is live, and only
    /// when it keeps names and attributes long too (longer than [`FALLBACK_TIMEOUT`]).
    /// A listing served by the kernel brings no attributes; with short timeouts, `ls
    /// -l` would then pay a lookup per entry that a READDIRPLUS page saves.
    pub fn may_keep_listings(&self) -> bool {
        let shortest = self
            .cfg
            .attr_timeout
            .min(self.cfg.entry_timeout)
            .min(self.cfg.dir_entry_timeout);
        shortest > FALLBACK_TIMEOUT && self.meta.feed_live()
    }

    /// Whether a listing of kernel directory `dir` read since `since` may be stale
    /// (see [`nectar_meta::Meta::listing_changed_since`]).
    pub fn listing_changed_since(&self, since: ChangeSeq, dir: Ino) -> bool {
        self.meta.listing_changed_since(since, self.to_meta(dir))
    }

    /// Where the sequence of changes heard stands, before a read whose answer goes to
    /// the kernel (see [`Vfs::timeouts`]).
    pub fn change_seq(&self) -> ChangeSeq {
        self.meta.change_seq()
    }

    /// Follows other clients' changes (when the engine has a feed): the VFS forgets what
    /// they touch, then `kernel` hears them with kernel inode numbers. Returns false
    /// when the engine has no feed.
    pub fn follow_changes(self: &Arc<Self>, kernel: ChangeListener) -> bool {
        let vfs = Arc::downgrade(self);
        self.meta
            .follow_changes(Arc::new(move |changes: &[Change]| {
                let Some(vfs) = vfs.upgrade() else { return };
                for c in changes {
                    vfs.forget_change(c);
                }
                let in_kernel: Vec<Change> =
                    changes.iter().map(|c| vfs.to_kernel_change(c)).collect();
                kernel(&in_kernel);
            }))
    }

    /// Drops what this client keeps that `change` makes stale.
    fn forget_change(&self, change: &Change) {
        match change {
            Change::Attr(ino) => self.written.remove(ino),
            Change::Xattr(ino) => self.xattrs.forget_inode(Some(*ino)),
            Change::Data(ino, index) => {
                self.written.remove(ino);
                let file = self.files.lock().get(ino).cloned();
                for f in file.into_iter().chain(self.closed.get(*ino)) {
                    f.inner.lock().slices.remove(index);
                }
            }
            Change::Entry(..) | Change::FeedLive => {}
            Change::Everything | Change::FeedLost => {
                self.written.remove_where(|_| true);
                self.xattrs.forget_inode(None);
                let files: Vec<_> = self.files.lock().values().cloned().collect();
                for f in files {
                    f.inner.lock().slices.clear();
                }
            }
        }
    }

    fn to_kernel_change(&self, change: &Change) -> Change {
        match change {
            Change::Attr(ino) => Change::Attr(self.to_kernel(*ino)),
            Change::Xattr(ino) => Change::Xattr(self.to_kernel(*ino)),
            Change::Data(ino, i) => Change::Data(self.to_kernel(*ino), *i),
            Change::Entry(p, n) => Change::Entry(self.to_kernel(*p), n.clone()),
            other => other.clone(),
        }
    }
}
