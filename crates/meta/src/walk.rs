//! A walk of the whole tree (or a subtree) for the tools that read everything: dump,
//! fsck, gc.
//!
//! The design: depth first, in name order, handing each entry to a [`Visitor`] with its
//! inode's [`Node`] (attributes, xattrs, chunk slice lists, symlink target, ACL rules).
//! A directory is listed a page at a time (whole on engines that keep a directory in one
//! structure, where a page costs the whole directory anyway, see
//! [`crate::kv::KvEngine::packs_domains`]); the nodes of a page are read in batches of
//! [`BATCH`] entries by up to `threads` threads at once (one on an embedded engine, see
//! [`crate::kv::KvEngine::embedded`]), each batch in two read
//! transactions, and handed over in order. Memory holds a page per level of depth.
//! Reads are not one snapshot: a walk under writes sees each entry as it was when read.

use crate::acl::Rule;
use crate::error::{Error, Result};
use crate::keys;
use crate::kv::{prefix_end, KvTxn};
use crate::meta::Meta;
use crate::namespace::decode_entry;
use crate::types::*;

/// Entries of a directory listed per transaction.
const PAGE: usize = 1000;
/// Entries whose nodes one thread reads per transaction.
const BATCH: usize = 100;
/// A file with at most this many chunks has them read by key (its length says which
/// may exist: a truncate removes those past the end), a larger one by a scan.
const CHUNKS_BY_KEY: u64 = 64;

/// An inode as the walk shows it.
#[derive(Debug, Clone)]
pub struct Node {
    pub attr: Attr,
    /// Extended attributes, name and value, in name order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub symlink: Option<Vec<u8>>,
    /// Slice records of each chunk, by chunk index.
    pub chunks: Vec<(u32, Vec<Slice>)>,
    pub access_acl: Option<Rule>,
    pub default_acl: Option<Rule>,
}

/// What a walk hands over, in order.
pub trait Visitor {
    /// Entry `name` of directory `parent` (`None`: the top of the walk) names inode
    /// `ino`. A directory's entries come next, then [`Visitor::leave`] for it.
    fn entry(&mut self, parent: Option<Ino>, name: &[u8], ino: Ino, node: &Node) -> Result<()>;
    /// Every entry of directory `dir` has been handed over.
    fn leave(&mut self, dir: Ino) -> Result<()>;
    /// Entry `name` of `parent` names inode `ino`, which does not exist.
    fn dangling(&mut self, parent: Ino, name: &[u8], ino: Ino) -> Result<()> {
        tracing::warn!(
            "entry {:?} of directory {parent} names inode {ino}, which does not exist",
            String::from_utf8_lossy(name)
        );
        Ok(())
    }
}

impl Meta {
    /// Walks the tree from `top`, shown as `name` (see the module documentation), with
    /// up to `threads` threads reading.
    pub fn walk(&self, top: Ino, name: &[u8], threads: usize, v: &mut dyn Visitor) -> Result<()> {
        self.walk_to(top, name, threads, usize::MAX, v)
    }

    /// [`Meta::walk`] down to `depth` levels below `top` (1: its entries only; a
    /// directory met at the last level is handed over, its entries are not, and no
    /// [`Visitor::leave`] comes for it).
    pub fn walk_to(
        &self,
        top: Ino,
        name: &[u8],
        threads: usize,
        depth: usize,
        v: &mut dyn Visitor,
    ) -> Result<()> {
        let attr = self.kv.read(|tx| crate::namespace::get_attr(tx, top))?;
        let node = read_nodes(self, &[(top, Some(attr))])?
            .pop()
            .flatten()
            .ok_or_else(|| Error::Corrupt(format!("inode {top} vanished")))?;
        let walk = Walk {
            meta: self,
            page: if self.kv.packs_domains() {
                usize::MAX
            } else {
                PAGE
            },
            threads: if self.kv.embedded() {
                1
            } else {
                threads.max(1)
            },
        };
        v.entry(None, name, top, &node)?;
        if node.attr.typ == FileType::Directory && depth > 0 {
            walk.children(top, depth - 1, v)?;
            v.leave(top)?;
        }
        Ok(())
    }
}

struct Walk<'a> {
    meta: &'a Meta,
    /// Entries of a directory listed at a time.
    page: usize,
    threads: usize,
}

impl Walk<'_> {
    /// Hands over the entries of directory `dir`, each subtree down to `depth` more
    /// levels.
    fn children(&self, dir: Ino, depth: usize, v: &mut dyn Visitor) -> Result<()> {
        let prefix = keys::dentry_prefix(dir);
        let end = prefix_end(&prefix);
        let mut begin = prefix.clone();
        loop {
            let rows = self
                .meta
                .kv
                .read(|tx| Ok(tx.scan(&begin, &end, self.page)?))?;
            let Some((last, _)) = rows.last() else {
                return Ok(());
            };
            begin = [last.as_slice(), &[0]].concat();
            let full = rows.len() >= self.page;
            let entries: Vec<(Vec<u8>, Ino)> = rows
                .iter()
                .map(|(k, v)| Ok((k[prefix.len()..].to_vec(), decode_entry(v)?.1)))
                .collect::<Result<_>>()?;
            // A window of batches read in parallel, then handed over in order.
            for window in entries.chunks(BATCH * self.threads) {
                let batches: Vec<&[(Vec<u8>, Ino)]> = window.chunks(BATCH).collect();
                let fetched = self.fetch_all(&batches)?;
                for (batch, nodes) in batches.iter().zip(fetched) {
                    for ((name, ino), node) in batch.iter().zip(nodes) {
                        match node {
                            None => v.dangling(dir, name, *ino)?,
                            Some(node) => {
                                v.entry(Some(dir), name, *ino, &node)?;
                                if node.attr.typ == FileType::Directory && depth > 0 {
                                    self.children(*ino, depth - 1, v)?;
                                    v.leave(*ino)?;
                                }
                            }
                        }
                    }
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// The nodes of several batches of entries, read by up to `threads` threads at
    /// once; in the batches' order.
    fn fetch_all(&self, batches: &[&[(Vec<u8>, Ino)]]) -> Result<Vec<Vec<Option<Node>>>> {
        let meta = self.meta;
        let fetch = |batch: &[(Vec<u8>, Ino)]| -> Result<Vec<Option<Node>>> {
            let attrs = meta.kv.read(|tx| {
                let keys: Vec<Vec<u8>> = batch.iter().map(|(_, i)| keys::attr(*i)).collect();
                Ok(tx.gets(&keys)?)
            })?;
            let asked: Vec<(Ino, Option<Attr>)> = batch
                .iter()
                .zip(attrs)
                .map(|((_, ino), a)| Ok((*ino, a.map(|a| Attr::decode(&a)).transpose()?)))
                .collect::<Result<_>>()?;
            read_nodes(meta, &asked)
        };
        if batches.len() <= 1 || self.threads <= 1 {
            return batches.iter().map(|b| fetch(b)).collect();
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        type Fetched = parking_lot::Mutex<Option<Result<Vec<Option<Node>>>>>;
        let results: Vec<Fetched> = batches.iter().map(|_| Default::default()).collect();
        std::thread::scope(|scope| {
            for _ in 0..self.threads.min(batches.len()) {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(batch) = batches.get(i) else { return };
                    *results[i].lock() = Some(fetch(batch));
                });
            }
        });
        results
            .into_iter()
            .map(|r| r.into_inner().unwrap_or_else(|| Ok(Vec::new())))
            .collect()
    }
}

/// The nodes of several inodes whose attributes were read (`None`: missing), in one
/// read transaction: xattrs (one scan each), chunks and symlink targets (read by key,
/// all in one request), and ACL rules.
fn read_nodes(meta: &Meta, inos: &[(Ino, Option<Attr>)]) -> Result<Vec<Option<Node>>> {
    meta.kv.read(|tx| {
        let mut ranges: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut by_key = Vec::new();
        for (ino, attr) in inos {
            let Some(attr) = attr else { continue };
            let x = keys::xattr_prefix(*ino);
            ranges.push((prefix_end(&x), x));
            match attr.typ {
                FileType::File if attr.length.div_ceil(CHUNK_SIZE) <= CHUNKS_BY_KEY => {
                    for index in 0..attr.length.div_ceil(CHUNK_SIZE) {
                        by_key.push(keys::chunk(*ino, index as u32));
                    }
                }
                FileType::File => {
                    let c = keys::chunk_prefix(*ino);
                    ranges.push((prefix_end(&c), c));
                }
                FileType::Symlink => by_key.push(keys::symlink(*ino)),
                _ => {}
            }
        }
        let asked: Vec<(&[u8], &[u8], usize)> = ranges
            .iter()
            .map(|(end, begin)| (begin.as_slice(), end.as_slice(), usize::MAX))
            .collect();
        let mut scanned = tx.scans(&asked)?.into_iter();
        let mut values = tx.gets(&by_key)?.into_iter();
        let mut out = Vec::with_capacity(inos.len());
        for (ino, attr) in inos {
            let Some(attr) = attr.clone() else {
                out.push(None);
                continue;
            };
            let xattrs = scanned
                .next()
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k[10..].to_vec(), v))
                .collect();
            let mut chunks = Vec::new();
            let mut symlink = None;
            match attr.typ {
                FileType::File if attr.length.div_ceil(CHUNK_SIZE) <= CHUNKS_BY_KEY => {
                    for index in 0..attr.length.div_ceil(CHUNK_SIZE) {
                        if let Some(v) = values.next().flatten() {
                            chunks.push((index as u32, Slice::decode_all(&v)?));
                        }
                    }
                }
                FileType::File => {
                    for (k, v) in scanned.next().unwrap_or_default() {
                        let index = k
                            .get(10..14)
                            .and_then(|b| b.try_into().ok())
                            .map(u32::from_be_bytes)
                            .ok_or_else(|| {
                                Error::Corrupt(format!("inode {ino}: chunk key {k:?}"))
                            })?;
                        chunks.push((index, Slice::decode_all(&v)?));
                    }
                }
                FileType::Symlink => symlink = values.next().flatten(),
                _ => {}
            }
            let rule = |tx: &mut dyn KvTxn, id: u32| -> Result<Option<Rule>> {
                if id == 0 {
                    return Ok(None);
                }
                Ok(Some((*meta.acl_rule(tx, id)?).clone()))
            };
            let access_acl = rule(tx, attr.access_acl)?;
            let default_acl = rule(tx, attr.default_acl)?;
            out.push(Some(Node {
                attr,
                xattrs,
                symlink,
                chunks,
                access_acl,
                default_acl,
            }));
        }
        Ok(out)
    })
}
