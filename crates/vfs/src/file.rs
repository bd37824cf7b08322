//! Per-inode state of open files: pending writes and the resolved slice lists.
//!
//! All handles of one inode in this client share a [`FileState`]. Writes go into slice
//! writers, one list per chunk in creation order; a write continues the chunk's newest
//! slice when it starts exactly where that slice ends (so sequential writes make one
//! slice per chunk), and opens a new slice otherwise. Full blocks upload while the file
//! is still being written. Pending slices are committed to metadata — after all their
//! blocks are stored, chunk by chunk in creation order so later writes win — on flush,
//! fsync, close, before a read, after an idle second, five seconds after the first write,
//! or when a slice reaches the 64 MiB chunk size.
//!
//! Reads resolve a chunk's slice records once ([`nectar_meta::slice::resolve`]) and
//! keep the result until this client changes the chunk or another client's change is
//! seen at open (a new mtime or length).
//!
//! A file closed here is remembered for a while ([`ClosedFiles`], at most
//! `--open-cache-limit` of them, least recently closed dropped first): reopened with
//! the same mtime and length, it keeps the kernel's page cache and its resolved slices,
//! and within `--open-cache` seconds of its last check against metadata a read-only
//! reopen does not ask metadata at all.

use lru::LruCache;
use nectar_chunk::SliceWriter;
use nectar_meta::{slice, Attr, Ino, NewSlice, Slice, Time};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Instant;

/// Commit a slice that was first written this long ago.
pub const MAX_PENDING_AGE_SECS: u64 = 5;
/// Commit a slice idle for this long.
pub const MAX_IDLE_MILLIS: u64 = 1000;

pub(crate) struct PendingSlice {
    /// Offset of the slice within its chunk.
    pub pos: u32,
    pub writer: SliceWriter,
    pub last_write: Time,
    /// Keeps the slice's id in flight until it is committed or given up.
    pub _id: NewSlice,
}

pub(crate) struct FileInner {
    /// Pending slices per chunk index, oldest first.
    pub pending: BTreeMap<u32, Vec<PendingSlice>>,
    /// When the oldest pending write happened.
    pub dirty_since: Option<Instant>,
    pub last_write: Option<Instant>,
    /// Whether a slice reached the chunk size and should be committed soon.
    pub has_full: bool,
    /// Resolved segments per chunk.
    pub slices: HashMap<u32, Arc<Vec<Slice>>>,
    /// The attributes as this client knows them, including uncommitted length.
    pub attr: Attr,
    /// An error of a background commit, reported at the next flush/fsync/close.
    pub write_error: Option<i32>,
    /// When `attr` was last taken from metadata (for `--open-cache`).
    pub checked: Option<Instant>,
    /// The file's `security.capability` xattr (`None`: it has none) and when it was
    /// read; see [`crate::Vfs::getxattr`].
    pub capability: Option<(Instant, Option<Vec<u8>>)>,
}

pub(crate) struct FileState {
    pub ino: Ino,
    /// Open handles of this inode in this client.
    pub handles: parking_lot::Mutex<usize>,
    pub inner: parking_lot::Mutex<FileInner>,
}

impl FileState {
    pub fn new(ino: Ino, attr: Attr) -> Self {
        FileState {
            ino,
            handles: parking_lot::Mutex::new(0),
            inner: parking_lot::Mutex::new(FileInner {
                pending: BTreeMap::new(),
                dirty_since: None,
                last_write: None,
                has_full: false,
                slices: HashMap::new(),
                attr,
                write_error: None,
                checked: None,
                capability: None,
            }),
        }
    }
}

impl FileInner {
    pub fn is_dirty(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether the background flusher should commit now.
    pub fn flush_due(&self, now: Instant) -> bool {
        if !self.is_dirty() {
            return false;
        }
        self.has_full
            || self
                .dirty_since
                .is_some_and(|t| now.duration_since(t).as_secs() >= MAX_PENDING_AGE_SECS)
            || self
                .last_write
                .is_some_and(|t| now.duration_since(t).as_millis() as u64 >= MAX_IDLE_MILLIS)
    }

    /// Cached resolved view of a chunk.
    pub fn resolved(&self, index: u32) -> Option<Arc<Vec<Slice>>> {
        self.slices.get(&index).cloned()
    }

    pub fn set_resolved(&mut self, index: u32, records: &[Slice]) -> Arc<Vec<Slice>> {
        let v = Arc::new(slice::resolve(records));
        self.slices.insert(index, v.clone());
        v
    }
}

/// Files closed by this client lately, with what it knew of them (see the module
/// documentation). Only clean files are kept: nothing pending, no error to report.
pub(crate) struct ClosedFiles {
    lru: Option<Mutex<LruCache<Ino, Arc<FileState>>>>,
}

impl ClosedFiles {
    /// Remembers up to `limit` files; 0 remembers none.
    pub fn new(limit: usize) -> Self {
        ClosedFiles {
            lru: NonZeroUsize::new(limit).map(|n| Mutex::new(LruCache::new(n))),
        }
    }

    pub fn put(&self, file: Arc<FileState>) {
        if let Some(lru) = &self.lru {
            lru.lock().put(file.ino, file);
        }
    }

    /// The file closed last as `ino`, taken out (it is being opened again).
    pub fn take(&self, ino: Ino) -> Option<Arc<FileState>> {
        self.lru.as_ref()?.lock().pop(&ino)
    }

    pub fn get(&self, ino: Ino) -> Option<Arc<FileState>> {
        self.lru.as_ref()?.lock().peek(&ino).cloned()
    }

    /// Forgets `ino` after this client changed it.
    pub fn forget(&self, ino: Ino) {
        self.take(ino);
    }
}
