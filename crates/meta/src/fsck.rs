//! The metadata side of `fsck`: a walk of the tree that finds what is inconsistent in
//! it and, when asked, repairs it.
//!
//! What is checked, entry by entry ([`Problem`]): a directory's link count (2 plus its
//! subdirectories), the parent pointer of an inode with one name, and entries that name
//! an inode that does not exist. Each repair is one transaction that looks again at
//! what it fixes (the directory's entries are counted inside it, the entry is checked to
//! still name the inode), so a repair on a mounted volume never writes a value that was
//! true only when the walk passed. Entries naming missing inodes are reported, never
//! removed: which of the two is wrong is for the operator to judge. A check of the
//! whole volume walks the trash too (its hour directories keep no link counts). The data side
//! (every block of every slice in the object store) is the caller's: it hears each
//! file with its slices ([`Meta::fsck`]'s `file`).

use crate::error::Result;
use crate::keys;
use crate::kv::prefix_end;
use crate::meta::Meta;
use crate::namespace::{decode_entry, get_attr, put_attr};
use crate::types::*;
use crate::walk::{Node, Visitor};

/// Something wrong in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A directory whose link count is not 2 plus its subdirectories.
    DirLinks {
        path: String,
        ino: Ino,
        stored: u32,
        counted: u32,
    },
    /// An inode with one name whose parent pointer names another directory.
    Parent {
        path: String,
        ino: Ino,
        stored: Ino,
        actual: Ino,
    },
    /// An entry naming an inode that does not exist.
    Dangling { path: String, ino: Ino },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::DirLinks {
                path,
                ino,
                stored,
                counted,
            } => write!(
                f,
                "directory {path} (inode {ino}) has link count {stored}, its subdirectories make {counted}"
            ),
            Problem::Parent {
                path,
                ino,
                stored,
                actual,
            } => write!(
                f,
                "{path} (inode {ino}) says its parent is inode {stored}, but it is in directory {actual}"
            ),
            Problem::Dangling { path, ino } => {
                write!(f, "entry {path} names inode {ino}, which does not exist")
            }
        }
    }
}

/// What [`Meta::fsck`] found.
#[derive(Debug, Default)]
pub struct FsckReport {
    /// Problems found, each with whether it was repaired.
    pub problems: Vec<(Problem, bool)>,
    /// Entries walked.
    pub entries: u64,
}

/// The directories being walked: inode, path, link count stored, subdirectories met.
struct Checker<'a> {
    meta: &'a Meta,
    repair: bool,
    open: Vec<(Ino, String, u32, u32)>,
    report: FsckReport,
    file: &'a mut dyn FnMut(&str, Ino, &Node),
}

impl Checker<'_> {
    fn found(&mut self, p: Problem, repaired: Result<bool>) -> Result<()> {
        let repaired = repaired?;
        self.report.problems.push((p, repaired));
        Ok(())
    }

    fn path_of(&self, name: &[u8]) -> String {
        match self.open.last() {
            Some((_, dir, ..)) if dir == "/" => format!("/{}", String::from_utf8_lossy(name)),
            Some((_, dir, ..)) => format!("{dir}/{}", String::from_utf8_lossy(name)),
            None => String::from_utf8_lossy(name).into_owned(),
        }
    }
}

impl Visitor for Checker<'_> {
    fn entry(&mut self, parent: Option<Ino>, name: &[u8], ino: Ino, node: &Node) -> Result<()> {
        self.report.entries += 1;
        let path = self.path_of(name);
        let a = &node.attr;
        let is_dir = a.typ == FileType::Directory;
        if let Some(parent) = parent {
            if is_dir {
                if let Some(top) = self.open.last_mut() {
                    top.3 += 1;
                }
            }
            if (is_dir || a.nlink <= 1) && a.parent != parent {
                let p = Problem::Parent {
                    path: path.clone(),
                    ino,
                    stored: a.parent,
                    actual: parent,
                };
                let fixed = if self.repair {
                    self.meta.repair_parent(parent, name, ino)
                } else {
                    Ok(false)
                };
                self.found(p, fixed)?;
            }
        }
        if a.typ == FileType::File {
            (self.file)(&path, ino, node);
        }
        if is_dir {
            self.open.push((ino, path, a.nlink, 0));
        }
        Ok(())
    }

    fn leave(&mut self, dir: Ino) -> Result<()> {
        let Some((ino, path, stored, subdirs)) = self.open.pop() else {
            return Ok(());
        };
        debug_assert_eq!(ino, dir);
        let counted = 2 + subdirs;
        // The trash and its hour directories keep no link counts (see `trash.rs`).
        if stored != counted && !is_trash(ino) {
            let p = Problem::DirLinks {
                path,
                ino,
                stored,
                counted,
            };
            let fixed = if self.repair {
                self.meta.repair_dir_links(ino).map(|_| true)
            } else {
                Ok(false)
            };
            self.found(p, fixed)?;
        }
        Ok(())
    }

    fn dangling(&mut self, _parent: Ino, name: &[u8], ino: Ino) -> Result<()> {
        let path = self.path_of(name);
        self.found(Problem::Dangling { path, ino }, Ok(false))
    }
}

impl Meta {
    /// Checks the tree from `top` (shown as `path`), all of it when `recursive`, else
    /// `top` and its entries; repairs what it can when `repair`. `file` hears each
    /// regular file met, with its path and node, for the caller to check its data.
    pub fn fsck(
        &self,
        top: Ino,
        path: &str,
        recursive: bool,
        repair: bool,
        threads: usize,
        file: &mut dyn FnMut(&str, Ino, &Node),
    ) -> Result<FsckReport> {
        let mut checker = Checker {
            meta: self,
            repair,
            open: Vec::new(),
            report: FsckReport::default(),
            file,
        };
        let depth = if recursive { usize::MAX } else { 1 };
        self.walk_to(top, path.as_bytes(), threads, depth, &mut checker)?;
        // The whole volume includes what the trash keeps: it may be restored.
        if top == ROOT_INODE && recursive && self.trash_exists()? {
            self.walk(TRASH_INODE, b"/.trash", threads, &mut checker)?;
        }
        Ok(checker.report)
    }

    /// Sets a directory's link count to 2 plus its subdirectories, counted in the same
    /// transaction.
    fn repair_dir_links(&self, dir: Ino) -> Result<u32> {
        self.kv.txn(|tx| {
            let mut attr = get_attr(tx, dir)?;
            let prefix = keys::dentry_prefix(dir);
            let end = prefix_end(&prefix);
            let mut begin = prefix.clone();
            let mut subdirs = 0u32;
            loop {
                let rows = tx.scan(&begin, &end, 10_000)?;
                for (_, v) in &rows {
                    if decode_entry(v)?.0 == FileType::Directory {
                        subdirs += 1;
                    }
                }
                match rows.last() {
                    Some((k, _)) if rows.len() == 10_000 => begin = [k.as_slice(), &[0]].concat(),
                    _ => break,
                }
            }
            if attr.nlink != 2 + subdirs {
                attr.nlink = 2 + subdirs;
                put_attr(tx, dir, &attr)?;
            }
            Ok(attr.nlink)
        })
    }

    /// Points the parent of `ino` at `parent` if entry `name` of `parent` still names
    /// it and it still has one name; whether it did.
    fn repair_parent(&self, parent: Ino, name: &[u8], ino: Ino) -> Result<bool> {
        self.kv.txn(|tx| {
            let Some(v) = tx.get(&keys::dentry(parent, name))? else {
                return Ok(false);
            };
            let mut attr = get_attr(tx, ino)?;
            if decode_entry(&v)?.1 != ino
                || (attr.typ != FileType::Directory && attr.nlink > 1)
                || attr.parent == parent
            {
                return Ok(false);
            }
            attr.parent = parent;
            put_attr(tx, ino, &attr)?;
            Ok(true)
        })
    }
}
