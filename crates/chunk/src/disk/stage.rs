//! Writeback staging: blocks written here that are durable on local disk and not yet in
//! object storage.
//!
//! With `--writeback` a full or final block of a slice is written to
//! `<cache-dir>/<volume UUID>/rawstaging/<object key>` (the cache file format, through a
//! temporary name and a rename, mode 0600) and counts as stored: the slice commits at
//! once and the upload happens later in the background. The set of staged blocks is
//! kept here, so reads find them (a staged block is read from its staging file) and a
//! deleted slice's blocks are dropped instead of uploaded. Staged blocks are never
//! evicted. A client that starts finds the staging files an earlier one left (a crash,
//! a kill, an unmount before the uploads ended) and uploads them.
//!
//! Durability: a staging file is not synced to disk when written, as in JuiceFS: it
//! survives the client's process (kill -9) but not the loss of the machine or disk
//! before its upload.

use super::file::{self, ReadError, VerifyChecksum};
use bytes::Bytes;
use nectar_object::DirectWrites;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::ops::{ControlFlow, Range};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// A staged block: where its file is and how long it is.
#[derive(Debug, Clone)]
pub(crate) struct Staged {
    pub(crate) path: PathBuf,
    pub(crate) len: u64,
    pub(crate) since: SystemTime,
}

pub(crate) struct Staging {
    blocks: Mutex<HashMap<String, Staged>>,
    bytes: AtomicU64,
    seq: AtomicU64,
    direct: DirectWrites,
}

impl Default for Staging {
    fn default() -> Self {
        Self {
            blocks: Mutex::default(),
            bytes: AtomicU64::default(),
            seq: AtomicU64::default(),
            direct: DirectWrites::new("staged blocks"),
        }
    }
}

/// `<dir>/<uuid>/rawstaging` beside a cache directory's `<dir>/<uuid>/raw`.
pub(crate) fn staging_root(raw_root: &Path) -> PathBuf {
    raw_root.with_file_name("rawstaging")
}

impl Staging {
    /// Writes block `key` under `root` (a staging root) and records it as staged.
    pub(crate) fn stage(&self, root: &Path, key: &str, data: &Bytes) -> io::Result<()> {
        let path = root.join(key);
        let tmp = root.join(format!(
            "{key}.tmp.{}.{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        file::write(&path, &tmp, data, &self.direct)?;
        self.record(key, path, data.len() as u64, SystemTime::now());
        Ok(())
    }

    fn record(&self, key: &str, path: PathBuf, len: u64, since: SystemTime) {
        let old = self
            .blocks
            .lock()
            .insert(key.to_string(), Staged { path, len, since });
        if old.is_none() {
            self.bytes.fetch_add(len, Ordering::Relaxed);
        }
    }

    /// The staged block `key`, if it is staged.
    pub(crate) fn get(&self, key: &str) -> Option<Staged> {
        self.blocks.lock().get(key).cloned()
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.blocks.lock().contains_key(key)
    }

    /// Bytes `range` of staged block `key`; `None` if not staged or unreadable.
    pub(crate) fn read(&self, key: &str, range: Range<usize>) -> Option<Bytes> {
        let staged = self.get(key)?;
        let result = File::open(&staged.path)
            .map_err(ReadError::from)
            .and_then(|f| file::read(&f, staged.len as usize, range, VerifyChecksum::Extend));
        match result {
            Ok(data) => Some(data),
            Err(e) => {
                tracing::warn!("staged block {key} is unreadable ({e:?}); it is read from memory or object storage");
                None
            }
        }
    }

    /// Forgets block `key` (uploaded, or its slice deleted); returns what was staged.
    pub(crate) fn take(&self, key: &str) -> Option<Staged> {
        let staged = self.blocks.lock().remove(key)?;
        self.bytes.fetch_sub(staged.len, Ordering::Relaxed);
        Some(staged)
    }

    /// Blocks and bytes staged.
    pub(crate) fn usage(&self) -> (usize, u64) {
        (self.blocks.lock().len(), self.bytes.load(Ordering::Relaxed))
    }

    /// Records the staging files found under `root` (left by an earlier client) and
    /// returns their keys, oldest first. Temporary files of other processes are
    /// deleted: their block was never acknowledged as written. This runs in the
    /// background while this client already stages blocks, so its own temporary files
    /// and the blocks it staged itself (already queued for upload) are left alone.
    pub(crate) fn recover(&self, root: &Path) -> Vec<String> {
        scan(root, Temporary::RemoveOthers)
            .into_iter()
            .filter(|b| !self.contains(&b.key))
            .map(|b| {
                self.record(&b.key, b.path, b.len, b.since);
                b.key
            })
            .collect()
    }
}

/// Whether `rel` is a temporary file this process is writing (`<key>.tmp.<pid>.<n>`).
fn own_temporary(rel: &str) -> bool {
    rel.contains(&format!(".tmp.{}.", std::process::id()))
}

/// What [`scan`] does with the temporary file of a staging write that never ended.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Temporary {
    /// Delete it unless this process is writing it: the caller is the client that
    /// owns the directory now.
    RemoveOthers,
    /// Leave it: the caller only looks (`nectar status`), a client may be writing it.
    Keep,
}

/// A complete staging file found on disk.
pub(crate) struct Found {
    pub(crate) key: String,
    pub(crate) path: PathBuf,
    pub(crate) len: u64,
    pub(crate) since: SystemTime,
}

/// The complete staging files under `root`, oldest first. A torn one (its length is
/// not what its key says) is logged and left in place: it cannot be uploaded.
pub(crate) fn scan(root: &Path, temporary: Temporary) -> Vec<Found> {
    let mut found = Vec::new();
    // An unreadable directory hides only its own blocks: they stay staged on disk.
    let _ = file::walk_files(root, |rel, path, meta| {
        if rel.contains(".tmp.") {
            if temporary == Temporary::RemoveOthers && !own_temporary(rel) {
                let _ = fs::remove_file(&path);
            }
            return ControlFlow::Continue(());
        }
        let Some((_, _, len)) = crate::parse_block_key(rel) else {
            return ControlFlow::Continue(());
        };
        if meta.len() != file::file_len(len as usize) {
            tracing::error!(
                "staged block {} is torn ({} bytes); it cannot be uploaded and is left in place",
                path.display(),
                meta.len()
            );
            return ControlFlow::Continue(());
        }
        let since = meta.modified().unwrap_or_else(|_| SystemTime::now());
        found.push(Found {
            key: rel.to_string(),
            path,
            len: len as u64,
            since,
        });
        ControlFlow::Continue(())
    });
    found.sort_by(|a, b| (a.since, &a.key).cmp(&(b.since, &b.key)));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_blocks_read_back_and_are_found_again() {
        let t = tempfile::tempdir().unwrap();
        let root = staging_root(&t.path().join("uuid/raw"));
        assert!(root.ends_with("uuid/rawstaging"));
        let s = Staging::default();
        let key = crate::block_key(5, 0, 100, false);
        let data = Bytes::from(vec![9u8; 100]);
        s.stage(&root, &key, &data).unwrap();
        assert_eq!(s.usage(), (1, 100));
        assert_eq!(s.read(&key, 10..20).unwrap(), data.slice(10..20));
        // A new client finds it, and not the temporary file a crash left.
        fs::write(root.join(format!("{key}.tmp.1.1")), b"x").unwrap();
        let again = Staging::default();
        assert_eq!(again.recover(&root), vec![key.clone()]);
        assert_eq!(again.read(&key, 0..100).unwrap(), data);
        assert!(!root.join(format!("{key}.tmp.1.1")).exists());
        // Recovery runs while this client stages: its own temporary files and blocks
        // are not touched or returned again; another process's leftovers are removed.
        let own = root.join(format!("{key}.tmp.{}.7", std::process::id()));
        fs::write(&own, b"x").unwrap();
        fs::write(root.join(format!("{key}.tmp.1.2")), b"x").unwrap();
        assert!(again.recover(&root).is_empty(), "already staged here");
        assert!(own.exists(), "a write in progress here is left alone");
        assert!(!root.join(format!("{key}.tmp.1.2")).exists());
        let staged = again.take(&key).unwrap();
        assert_eq!(staged.len, 100);
        assert_eq!(again.usage(), (0, 0));
        assert!(again.read(&key, 0..1).is_none());
    }
}
