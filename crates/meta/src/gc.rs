//! The metadata side of `gc` (every slice metadata still refers to, and why) and of
//! `status --more` (the tree counted by kind, and what waits for release).
//!
//! A slice's blocks belong in the bucket while anything refers to the slice: a file in
//! the tree ([`SliceUse::Live`]), the trash or the delayed slices it keeps
//! ([`SliceUse::Trash`]), or a file that is gone from the tree but whose data is not
//! released yet: queued for deletion (`D` keys) or still open somewhere (a session's
//! sustained inode) ([`SliceUse::Pending`]). `gc` joins these with the bucket's listing;
//! see `nectar gc`.

use crate::error::Result;
use crate::keys;
use crate::kv::prefix_end;
use crate::meta::Meta;
use crate::types::*;
use crate::walk::{Node, Visitor};

/// Why a slice's blocks are kept. The order is the order of precedence when several
/// things refer to one slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SliceUse {
    /// A file of the tree.
    Live = 0,
    /// A file in the trash, or data an overwrite replaced, kept as long as the trash.
    Trash = 1,
    /// A removed file whose data is not released yet.
    Pending = 2,
}

impl SliceUse {
    pub fn from_u8(v: u8) -> Option<SliceUse> {
        [SliceUse::Live, SliceUse::Trash, SliceUse::Pending]
            .get(v as usize)
            .copied()
    }
}

/// Hands the slices of each file a walk meets to a callback.
struct Collector<'a> {
    used: SliceUse,
    f: &'a mut dyn FnMut(u64, u32, SliceUse) -> Result<()>,
    linked: std::collections::HashSet<Ino>,
}

impl Visitor for Collector<'_> {
    fn entry(&mut self, _parent: Option<Ino>, _name: &[u8], ino: Ino, node: &Node) -> Result<()> {
        // A file with several names is met once per name: its slices count once.
        if node.attr.typ != FileType::File || (node.attr.nlink > 1 && !self.linked.insert(ino)) {
            return Ok(());
        }
        for (_, slices) in &node.chunks {
            for s in slices.iter().filter(|s| s.id != 0) {
                (self.f)(s.id, s.size, self.used)?;
            }
        }
        Ok(())
    }

    fn leave(&mut self, _dir: Ino) -> Result<()> {
        Ok(())
    }
}

impl Meta {
    /// Calls `f` with every slice metadata refers to (id, size, why), once per
    /// reference; walks with up to `threads` threads.
    pub fn slice_references(
        &self,
        threads: usize,
        f: &mut dyn FnMut(u64, u32, SliceUse) -> Result<()>,
    ) -> Result<()> {
        let mut c = Collector {
            used: SliceUse::Live,
            f,
            linked: Default::default(),
        };
        self.walk(ROOT_INODE, b"/", threads, &mut c)?;
        if self.trash_exists()? {
            c.used = SliceUse::Trash;
            self.walk(TRASH_INODE, b".trash", threads, &mut c)?;
        }
        let f = c.f;
        // Delayed slices: records of (id u64, size u32).
        for (_, v) in self.kv.read(|tx| Ok(tx.scan(b"L", b"M", usize::MAX)?))? {
            for r in v.chunks_exact(12) {
                let id = u64::from_be_bytes(r[..8].try_into().unwrap_or_default());
                let size = u32::from_be_bytes(r[8..].try_into().unwrap_or_default());
                f(id, size, SliceUse::Trash)?;
            }
        }
        // Files whose data waits for release: queued for deletion, or open somewhere.
        let mut pending: Vec<Ino> = self
            .kv
            .read(|tx| Ok(tx.scan(b"D", b"E", usize::MAX)?))?
            .iter()
            .filter_map(|(k, _)| keys::read_ino(k.get(1..9)?))
            .collect();
        for s in self.list_sessions()? {
            pending.extend(s.sustained);
        }
        for ino in pending {
            let prefix = keys::chunk_prefix(ino);
            let chunks = self
                .kv
                .read(|tx| Ok(tx.scan(&prefix, &prefix_end(&prefix), usize::MAX)?))?;
            for (_, v) in chunks {
                for s in Slice::decode_all(&v)?.iter().filter(|s| s.id != 0) {
                    f(s.id, s.size, SliceUse::Pending)?;
                }
            }
        }
        Ok(())
    }
}

/// What `status --more` counts: the tree by kind, and what waits for release.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeCounts {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub others: u64,
    /// Bytes of the files (each inode once).
    pub file_bytes: u64,
    /// Entries in the trash's hour directories (and below, in trees a restore rebuilt).
    pub trash_entries: u64,
    /// Bytes of the files among them.
    pub trash_bytes: u64,
    /// Delayed slices kept for the trash time.
    pub delayed_slices: u64,
    /// Files queued for their data to be released.
    pub pending_deletions: u64,
    /// Files removed while open somewhere, kept until their last close.
    pub sustained: u64,
}

/// Counts the entries of a walk by kind.
struct Counter<'a> {
    counts: &'a mut VolumeCounts,
    trash: bool,
    linked: std::collections::HashSet<Ino>,
}

impl Visitor for Counter<'_> {
    fn entry(&mut self, parent: Option<Ino>, _name: &[u8], ino: Ino, node: &Node) -> Result<()> {
        let c = &mut *self.counts;
        if self.trash {
            if parent.is_some_and(|p| p != TRASH_INODE) {
                c.trash_entries += 1;
                if node.attr.typ == FileType::File {
                    c.trash_bytes += node.attr.length;
                }
            }
            return Ok(());
        }
        match node.attr.typ {
            FileType::Directory => c.directories += 1,
            FileType::Symlink => c.symlinks += 1,
            FileType::File => {
                if node.attr.nlink <= 1 || self.linked.insert(ino) {
                    c.files += 1;
                    c.file_bytes += node.attr.length;
                }
            }
            _ => c.others += 1,
        }
        Ok(())
    }

    fn leave(&mut self, _dir: Ino) -> Result<()> {
        Ok(())
    }
}

impl Meta {
    /// Counts the volume's tree and what waits for release, walking it with up to
    /// `threads` threads.
    pub fn volume_counts(&self, threads: usize) -> Result<VolumeCounts> {
        let mut counts = VolumeCounts::default();
        let mut c = Counter {
            counts: &mut counts,
            trash: false,
            linked: Default::default(),
        };
        self.walk(ROOT_INODE, b"/", threads, &mut c)?;
        if self.trash_exists()? {
            c.trash = true;
            self.walk(TRASH_INODE, b".trash", threads, &mut c)?;
        }
        let (delayed, pending) = self.kv.read(|tx| {
            Ok((
                tx.scan(b"L", b"M", usize::MAX)?,
                tx.scan(b"D", b"E", usize::MAX)?.len(),
            ))
        })?;
        counts.delayed_slices = delayed.iter().map(|(_, v)| v.len() as u64 / 12).sum();
        counts.pending_deletions = pending as u64;
        counts.sustained = self
            .list_sessions()?
            .iter()
            .map(|s| s.sustained.len() as u64)
            .sum();
        Ok(counts)
    }
}
