//! Per-inode state of open files: pending writes and the resolved slice lists.
//!
//! All handles of one inode in this client share a [`FileState`]. Writes go into slice
//! writers, one list per chunk in creation order; a write continues the chunk's newest
//! slice when it starts exactly where that slice ends (so sequential writes make one
//! slice per chunk), and opens a new slice otherwise. Full blocks upload while the file
//! is still being written. Pending slices are committed to metadata — after all their
//! blocks are stored, chunk by chunk in creation order so later writes win — on flush,
//! fsync, close, before a read, after an idle second, five seconds after the first write,
//! or, for that chunk alone, when a slice reaches the 64 MiB chunk size.
//!
//! A commit takes its slices out of [`FileInner::pending`] and lets go of the file's
//! lock while their last blocks upload and the store makes them durable; it takes the
//! lock again to record them. Writers go on meanwhile (a streaming writer fills the
//! next chunk while the last one syncs), each into new slices. Only one commit of a file
//! is in flight at a time (`FileInner::committing`, waited on with
//! [`FileState::committed`]), so slices still reach metadata in the order they were
//! written; and a file with a commit in flight counts as dirty, so a read or a stat
//! waits for it rather than miss its data.
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
    /// When the slice was first written (for the age rule of the background commit).
    pub first_write: Instant,
    /// Keeps the slice's id in flight until it is committed or given up.
    pub _id: NewSlice,
}

impl PendingSlice {
    /// Whether the slice reaches the end of its chunk: nothing can be appended to it.
    pub fn fills_chunk(&self) -> bool {
        self.pos as u64 + self.writer.len() as u64 >= nectar_meta::CHUNK_SIZE
    }
}

/// Which pending slices a commit takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommitScope {
    /// Every pending slice (flush, fsync, close, a read, an old or idle write).
    All,
    /// The chunks where a slice is full.
    FullChunks,
}

pub(crate) struct FileInner {
    /// Pending slices per chunk index, oldest first.
    pub pending: BTreeMap<u32, Vec<PendingSlice>>,
    /// When the oldest pending write happened.
    pub dirty_since: Option<Instant>,
    pub last_write: Option<Instant>,
    /// Whether a slice reached the chunk size and should be committed soon.
    pub has_full: bool,
    /// A commit has taken pending slices and is storing them without the lock.
    pub committing: bool,
    /// Resolved segments per chunk.
    pub slices: HashMap<u32, Arc<Vec<Slice>>>,
    /// The attributes as this client knows them, including uncommitted length.
    pub attr: Attr,
    /// An error of a background commit, reported at the next flush/fsync/close.
    pub write_error: Option<i32>,
    /// When `attr` was last taken from metadata (for `--open-cache`).
    pub checked: Option<Instant>,
}

pub(crate) struct FileState {
    pub ino: Ino,
    /// Open handles of this inode in this client.
    pub handles: parking_lot::Mutex<usize>,
    pub inner: parking_lot::Mutex<FileInner>,
    /// Signalled when a commit in flight ends (`FileInner::committing` turns false).
    pub committed: parking_lot::Condvar,
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
                committing: false,
                slices: HashMap::new(),
                attr,
                write_error: None,
                checked: None,
            }),
            committed: parking_lot::Condvar::new(),
        }
    }
}

impl FileInner {
    /// Whether this client holds writes metadata does not have yet.
    pub fn is_dirty(&self) -> bool {
        !self.pending.is_empty() || self.committing
    }

    /// What the background committer should commit now, if anything: everything once
    /// the oldest write is old or the file idle; only the chunks a slice has filled
    /// otherwise, so a streaming writer's current slice keeps growing.
    pub fn flush_due(&self, now: Instant) -> Option<CommitScope> {
        if self.pending.is_empty() || self.committing {
            return None;
        }
        let old = self
            .dirty_since
            .is_some_and(|t| now.duration_since(t).as_secs() >= MAX_PENDING_AGE_SECS);
        let idle = self
            .last_write
            .is_some_and(|t| now.duration_since(t).as_millis() as u64 >= MAX_IDLE_MILLIS);
        if old || idle {
            Some(CommitScope::All)
        } else if self.has_full {
            Some(CommitScope::FullChunks)
        } else {
            None
        }
    }

    /// Takes the pending slices `scope` asks for out of the file, in chunk order, and
    /// keeps the dirty bookkeeping right for those left.
    pub fn take_pending(&mut self, scope: CommitScope) -> BTreeMap<u32, Vec<PendingSlice>> {
        let taken = match scope {
            CommitScope::All => std::mem::take(&mut self.pending),
            CommitScope::FullChunks => {
                let full: Vec<u32> = self
                    .pending
                    .iter()
                    .filter(|(_, list)| list.iter().any(PendingSlice::fills_chunk))
                    .map(|(&index, _)| index)
                    .collect();
                full.into_iter()
                    .filter_map(|i| self.pending.remove(&i).map(|list| (i, list)))
                    .collect()
            }
        };
        self.has_full = false;
        self.dirty_since = self.pending.values().flatten().map(|s| s.first_write).min();
        if self.pending.is_empty() {
            self.last_write = None;
        }
        taken
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
