//! Dump and load of a volume's metadata in JuiceFS 1.4's JSON format.
//!
//! The design: a dump is one JSON object (`Setting`, `Counters`, `Sustained`,
//! `DelFiles`, `Quotas`..., then `FSTree` and `Trash`, each a nested tree of entries
//! with their attributes, xattrs, ACLs, symlink targets and chunk slice lists), exactly
//! as `juicefs dump` writes it, so a volume moves between engines and between the two
//! systems with its data left where it is in the bucket.
//!
//! Both directions stream. [`Meta::dump`] walks the tree depth first and writes each
//! entry as soon as it is read: a directory is read a page of entries at a time (whole
//! on engines that keep a directory in one structure, see
//! [`crate::kv::KvEngine::packs_domains`]), with the attributes, xattrs, chunks and
//! symlink targets of a page in one read transaction, so memory holds one page per
//! level of depth, not the volume. It reads while the file system stays writable, so
//! a dump taken under writes is a fuzzy snapshot, as JuiceFS's is: every entry is
//! consistent in itself.
//!
//! [`Meta::load_dump`] parses with a `serde` visitor that handles each entry when its
//! object ends, and hands its keys to writer threads in batches of one transaction
//! each. What must be known of the whole tree is kept small: the parents of files with
//! several names (only those), the distinct ACL rules, and the slices, counted in sorted
//! runs that spill to temporary files ([`crate::spill`]) so a reference count (`K` keys)
//! is written only for slices used more than once. Counters are computed from the
//! tree. The volume's settings are written last, so a load that stops half way never
//! leaves something that looks like a volume; a load that fails empties the engine
//! again, which it found empty.

use crate::acl::{Rule, UNSET};
use crate::error::{Error, Result};
use crate::keys;
use crate::meta::{space_of, Meta};
use crate::namespace::encode_entry;
use crate::spill::Sorter;
use crate::types::*;
use crate::walk::{self, Node};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

/// What `dump` writes.
#[derive(Debug, Clone)]
pub struct DumpOptions {
    /// The directory to dump as the tree's root (the volume's root by default); a
    /// dump of a subdirectory loads as a volume of its own.
    pub root: Ino,
    /// Keep the object store's secret key in `Setting` (replaced by "removed" otherwise).
    pub keep_secret_key: bool,
    /// Leave the trash out.
    pub skip_trash: bool,
    /// Threads reading the nodes of a directory's entries at once.
    pub threads: usize,
}

impl Default for DumpOptions {
    fn default() -> Self {
        DumpOptions {
            root: ROOT_INODE,
            keep_secret_key: false,
            skip_trash: false,
            threads: 10,
        }
    }
}

/// How `load_dump` writes.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Threads writing batches of keys.
    pub threads: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { threads: 10 }
    }
}

/// What a dump or a load went through.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DumpSummary {
    /// Entries written or loaded (a file with several names counts once per name).
    pub entries: u64,
    /// Distinct inodes.
    pub inodes: u64,
    /// Entries left out because their inode was missing (a dump of a damaged volume).
    pub skipped: u64,
}

/// Hears the number of entries done so far, for a progress bar.
pub type DumpProgress<'a> = &'a (dyn Fn(u64) + Sync);

// ----- the JSON format ----------------------------------------------------------------

/// Counters as JuiceFS names them in a dump.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct DumpedCounters {
    #[serde(rename = "usedSpace", default)]
    used_space: i64,
    #[serde(rename = "usedInodes", default)]
    used_inodes: i64,
    #[serde(rename = "nextInodes", default)]
    next_inode: i64,
    #[serde(rename = "nextChunk", default)]
    next_chunk: i64,
    #[serde(rename = "nextSession", default)]
    next_session: i64,
    #[serde(rename = "nextTrash", default)]
    next_trash: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct DumpedDelFile {
    inode: Ino,
    length: u64,
    expire: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct DumpedSustained {
    sid: u64,
    inodes: Vec<Ino>,
}

#[derive(Debug, Serialize, Deserialize)]
struct DumpedQuota {
    #[serde(rename = "maxSpace")]
    max_space: i64,
    #[serde(rename = "maxInodes")]
    max_inodes: i64,
}

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DumpedAttr {
    inode: Ino,
    #[serde(default, skip_serializing_if = "is_zero")]
    flags: u8,
    #[serde(rename = "type")]
    typ: String,
    #[serde(default)]
    mode: u16,
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
    #[serde(default)]
    atime: i64,
    #[serde(default)]
    mtime: i64,
    #[serde(default)]
    ctime: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    atimensec: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    mtimensec: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    ctimensec: u32,
    #[serde(default)]
    nlink: u32,
    #[serde(default)]
    length: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    rdev: u32,
    /// JuiceFS's storage tier; Nectar has one.
    #[serde(default, skip_serializing_if = "is_zero")]
    tier: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DumpedSlice {
    /// The old name of `id` (dumps of JuiceFS before 1.0).
    #[serde(default, skip_serializing)]
    chunkid: u64,
    #[serde(default)]
    id: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pos: u32,
    size: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    off: u32,
    len: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DumpedChunk {
    index: u32,
    slices: Vec<DumpedSlice>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DumpedXattr {
    name: String,
    value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DumpedAclEntry {
    id: u32,
    perm: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DumpedAcl {
    owner: u16,
    group: u16,
    other: u16,
    mask: u16,
    users: Option<Vec<DumpedAclEntry>>,
    groups: Option<Vec<DumpedAclEntry>>,
}

impl DumpedAcl {
    fn of(rule: &Rule) -> DumpedAcl {
        let list = |l: &[crate::AclEntry]| {
            (!l.is_empty()).then(|| {
                l.iter()
                    .map(|e| DumpedAclEntry {
                        id: e.id,
                        perm: e.perm,
                    })
                    .collect()
            })
        };
        DumpedAcl {
            owner: rule.owner,
            group: rule.group,
            other: rule.other,
            mask: rule.mask,
            users: list(&rule.named_users),
            groups: list(&rule.named_groups),
        }
    }

    fn rule(&self) -> Rule {
        let list = |l: &Option<Vec<DumpedAclEntry>>| {
            let mut v: Vec<crate::AclEntry> = l
                .iter()
                .flatten()
                .map(|e| crate::AclEntry {
                    id: e.id,
                    perm: e.perm,
                })
                .collect();
            v.sort();
            v
        };
        Rule {
            owner: self.owner,
            group: self.group,
            mask: self.mask,
            other: self.other,
            named_users: list(&self.users),
            named_groups: list(&self.groups),
        }
    }
}

fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::File => "regular",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::Fifo => "fifo",
        FileType::BlockDev => "blockdev",
        FileType::CharDev => "chardev",
        FileType::Socket => "socket",
    }
}

fn type_of(name: &str) -> Option<FileType> {
    Some(match name {
        "regular" => FileType::File,
        "directory" => FileType::Directory,
        "symlink" => FileType::Symlink,
        "fifo" => FileType::Fifo,
        "blockdev" => FileType::BlockDev,
        "chardev" => FileType::CharDev,
        "socket" => FileType::Socket,
        _ => return None,
    })
}

/// JuiceFS's escape of names, symlink targets and xattr values: `%XX` for bytes that
/// are not UTF-8, control characters and space, `%`, `"` and `\`; everything else as is.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let hex = |b: u8, out: &mut String| {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        out.push('%');
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    };
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c <= ' ' || c == '%' || c == '"' || c == '\\' {
                hex(c as u8, &mut out);
            } else {
                out.push(c);
            }
        }
        for &b in chunk.invalid() {
            hex(b, &mut out);
        }
    }
    out
}

/// The inverse of [`escape`]: `%XX` (upper-case hex) becomes the byte; any other `%`
/// stays, as JuiceFS reads it.
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let hex = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// A `file` bucket as JuiceFS writes it: a directory path ending in `/` (JuiceFS puts
/// the volume's name right after the bucket, so without the slash it would look for
/// `/data/bucketvol/...`).
pub fn file_bucket(path: &str) -> String {
    if path.ends_with('/') {
        path.to_string()
    } else {
        format!("{path}/")
    }
}

// ----- dump ---------------------------------------------------------------------------

/// The JSON writer of a dump: JuiceFS's layout, two spaces per level.
struct JsonOut<'w> {
    w: BufWriter<&'w mut dyn Write>,
}

impl JsonOut<'_> {
    fn raw(&mut self, s: &str) -> io::Result<()> {
        self.w.write_all(s.as_bytes())
    }

    fn indent(&mut self, depth: usize) -> io::Result<()> {
        self.w.write_all(b"\n")?;
        for _ in 0..depth {
            self.w.write_all(b"  ")?;
        }
        Ok(())
    }

    fn value<T: Serialize + ?Sized>(&mut self, v: &T) -> io::Result<()> {
        serde_json::to_writer(&mut self.w, v).map_err(io::Error::other)
    }

    /// `"name": ` on a new line at `depth`.
    fn key(&mut self, depth: usize, name: &str) -> io::Result<()> {
        self.indent(depth)?;
        self.value(name)?;
        self.raw(": ")
    }
}

impl Meta {
    /// Writes the volume's metadata to `out` as JuiceFS's JSON dump (see the module
    /// documentation). `progress` hears the entries written so far.
    pub fn dump(
        &self,
        out: &mut dyn Write,
        opts: &DumpOptions,
        progress: DumpProgress<'_>,
    ) -> Result<DumpSummary> {
        let mut fmt = self.load()?;
        fmt = if opts.keep_secret_key {
            fmt.with_secrets_sealed()
        } else {
            fmt.redacted()
        };
        if fmt.storage == "file" {
            fmt.bucket = file_bucket(&fmt.bucket);
        }
        let root_attr = self
            .kv
            .read(|tx| crate::namespace::get_attr(tx, opts.root))?;
        if root_attr.typ != FileType::Directory {
            return Err(Error::Invalid(format!(
                "inode {} is not a directory: only a directory can be dumped",
                opts.root
            )));
        }
        let names = [
            "usedSpace",
            "totalInodes",
            "nextInode",
            "nextChunk",
            "nextSession",
            "nextTrash",
        ];
        let values = self
            .kv
            .read(|tx| Ok(tx.gets(&names.iter().map(|n| keys::counter(n)).collect::<Vec<_>>())?))?;
        let counter = |i: usize| {
            values[i]
                .as_deref()
                .and_then(|v| v.try_into().ok())
                .map(i64::from_le_bytes)
                .unwrap_or(0)
        };
        let counters = DumpedCounters {
            used_space: counter(0),
            used_inodes: counter(1),
            next_inode: counter(2),
            next_chunk: counter(3),
            next_session: counter(4),
            next_trash: counter(5),
        };
        let sustained: Vec<DumpedSustained> = self
            .list_sessions()?
            .into_iter()
            .filter(|s| !s.sustained.is_empty())
            .map(|s| DumpedSustained {
                sid: s.sid,
                inodes: s.sustained,
            })
            .collect();
        let del_files = self.kv.read(|tx| Ok(tx.scan(b"D", b"E", usize::MAX)?))?;
        let del_files: Vec<DumpedDelFile> = del_files
            .iter()
            .filter_map(|(k, v)| {
                Some(DumpedDelFile {
                    inode: keys::read_ino(k.get(1..9)?)?,
                    length: keys::read_u64_be(k.get(9..17)?)?,
                    expire: keys::read_u64_be(v).map_or(0, |t| t as i64),
                })
            })
            .collect();

        let mut w = JsonOut {
            w: BufWriter::with_capacity(64 << 10, out),
        };
        w.raw("{")?;
        w.key(1, "Setting")?;
        w.value(&fmt)?;
        w.raw(",")?;
        w.key(1, "Counters")?;
        w.value(&counters)?;
        w.raw(",")?;
        w.key(1, "Sustained")?;
        w.value(&sustained)?;
        w.raw(",")?;
        w.key(1, "DelFiles")?;
        w.value(&del_files)?;
        w.raw(",")?;
        // Directory quotas by inode (the volume's limits are in the settings); their
        // usage is counted again by the load, as JuiceFS's is.
        let quotas: BTreeMap<String, DumpedQuota> = if opts.root == ROOT_INODE {
            self.list_quotas()?
                .into_iter()
                .map(|(ino, q)| {
                    let dumped = DumpedQuota {
                        max_space: q.max_space,
                        max_inodes: q.max_inodes,
                    };
                    (ino.to_string(), dumped)
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        if !quotas.is_empty() {
            w.key(1, "Quotas")?;
            w.value(&quotas)?;
            w.raw(",")?;
        }

        let mut writer = TreeWriter {
            w: &mut w,
            summary: DumpSummary::default(),
            progress,
            open: Vec::new(),
            linked: Default::default(),
        };
        self.walk(opts.root, b"FSTree", opts.threads, &mut writer)?;
        if !opts.skip_trash && opts.root == ROOT_INODE && self.trash_exists()? {
            writer.w.raw(",")?;
            self.walk(TRASH_INODE, b"Trash", opts.threads, &mut writer)?;
        }
        let summary = writer.summary;
        w.raw("\n}\n")?;
        w.w.flush()?;
        Ok(summary)
    }
}

/// Writes the entries a walk hands over as the dump's nested objects.
struct TreeWriter<'a, 'w> {
    w: &'a mut JsonOut<'w>,
    summary: DumpSummary,
    progress: DumpProgress<'a>,
    /// For each directory being written: whether an entry of it was written yet.
    open: Vec<bool>,
    /// Files with several names met so far (each is one inode).
    linked: std::collections::HashSet<Ino>,
}

impl walk::Visitor for TreeWriter<'_, '_> {
    fn entry(&mut self, parent: Option<Ino>, name: &[u8], ino: Ino, node: &Node) -> Result<()> {
        let depth = self.open.len() * 2 + 1;
        if parent.is_some() {
            if let Some(written) = self.open.last_mut() {
                if std::mem::replace(written, true) {
                    self.w.raw(",")?;
                }
            }
        }
        // The top of a walk is named by the dump's key ("FSTree", "Trash") as it is.
        let name = match parent {
            Some(_) => escape(name),
            None => String::from_utf8_lossy(name).into_owned(),
        };
        let w = &mut *self.w;
        w.key(depth, &name)?;
        w.raw("{")?;
        let a = &node.attr;
        let dumped = DumpedAttr {
            inode: ino,
            flags: a.flags,
            typ: type_name(a.typ).into(),
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
            atime: a.atime.sec,
            mtime: a.mtime.sec,
            ctime: a.ctime.sec,
            atimensec: a.atime.nsec,
            mtimensec: a.mtime.nsec,
            ctimensec: a.ctime.nsec,
            nlink: a.nlink,
            length: if a.typ == FileType::File { a.length } else { 0 },
            rdev: a.rdev,
            tier: 0,
        };
        w.key(depth + 1, "attr")?;
        w.value(&dumped)?;
        if let Some(target) = &node.symlink {
            w.raw(",")?;
            w.key(depth + 1, "symlink")?;
            w.value(&escape(target))?;
        }
        if !node.xattrs.is_empty() {
            let xattrs: Vec<DumpedXattr> = node
                .xattrs
                .iter()
                .map(|(n, v)| DumpedXattr {
                    name: String::from_utf8_lossy(n).into_owned(),
                    value: escape(v),
                })
                .collect();
            w.raw(",")?;
            w.key(depth + 1, "xattrs")?;
            w.value(&xattrs)?;
        }
        for (key, rule) in [
            ("posix_acl_access", &node.access_acl),
            ("posix_acl_default", &node.default_acl),
        ] {
            if let Some(rule) = rule {
                w.raw(",")?;
                w.key(depth + 1, key)?;
                w.value(&DumpedAcl::of(rule))?;
            }
        }
        if !node.chunks.is_empty() {
            w.raw(",")?;
            w.key(depth + 1, "chunks")?;
            w.raw("[")?;
            for (i, (index, slices)) in node.chunks.iter().enumerate() {
                if i > 0 {
                    w.raw(",")?;
                }
                w.indent(depth + 2)?;
                let chunk = DumpedChunk {
                    index: *index,
                    slices: slices
                        .iter()
                        .map(|s| DumpedSlice {
                            chunkid: 0,
                            id: s.id,
                            pos: s.pos,
                            size: s.size,
                            off: s.off,
                            len: s.len,
                        })
                        .collect(),
                };
                w.value(&chunk)?;
            }
            w.indent(depth + 1)?;
            w.raw("]")?;
        }
        self.summary.entries += 1;
        if a.typ == FileType::Directory || a.nlink <= 1 || self.linked.insert(ino) {
            self.summary.inodes += 1;
        }
        (self.progress)(self.summary.entries);
        if a.typ == FileType::Directory {
            self.w.raw(",")?;
            self.w.key(depth + 1, "entries")?;
            self.w.raw("{")?;
            self.open.push(false);
        } else {
            self.w.indent(depth)?;
            self.w.raw("}")?;
        }
        Ok(())
    }

    fn leave(&mut self, _dir: Ino) -> Result<()> {
        self.open.pop();
        let depth = self.open.len() * 2 + 1;
        self.w.indent(depth + 1)?;
        self.w.raw("}")?;
        self.w.indent(depth)?;
        self.w.raw("}")?;
        Ok(())
    }

    fn dangling(&mut self, parent: Ino, name: &[u8], ino: Ino) -> Result<()> {
        tracing::warn!(
            "entry {:?} of directory {parent} names inode {ino}, which does not exist: left out of the dump",
            String::from_utf8_lossy(name)
        );
        self.summary.skipped += 1;
        Ok(())
    }
}

// ----- load ---------------------------------------------------------------------------

/// Keys and values to write in one transaction.
type Batch = Vec<(Vec<u8>, Vec<u8>)>;

/// Keys and values handed to writer threads, one transaction per batch.
struct BatchWriter {
    batch: Batch,
    bytes: usize,
    max_pairs: usize,
    max_bytes: usize,
    send: Option<SyncSender<Batch>>,
    threads: Vec<JoinHandle<Result<()>>>,
}

impl BatchWriter {
    fn new(meta: &std::sync::Arc<Meta>, threads: usize) -> BatchWriter {
        // etcd refuses transactions of more than 128 operations by default
        // (`--max-txn-ops`) and requests over 1.5 MiB.
        let (max_pairs, max_bytes) = if meta.kv.engine_name() == "etcd" {
            (100, 1 << 20)
        } else {
            (1000, 4 << 20)
        };
        let (send, recv) = sync_channel::<Batch>(threads.max(1) * 2);
        let recv = std::sync::Arc::new(parking_lot::Mutex::new(recv));
        let threads = (0..threads.max(1))
            .map(|_| {
                let (meta, recv) = (meta.clone(), recv.clone());
                std::thread::spawn(move || -> Result<()> {
                    loop {
                        let batch = match recv.lock().recv() {
                            Ok(b) => b,
                            Err(_) => return Ok(()),
                        };
                        meta.kv.txn(|tx| {
                            for (k, v) in &batch {
                                tx.set(k, v)?;
                            }
                            Ok(())
                        })?;
                    }
                })
            })
            .collect();
        BatchWriter {
            batch: Vec::new(),
            bytes: 0,
            max_pairs,
            max_bytes,
            send: Some(send),
            threads,
        }
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.bytes += key.len() + value.len();
        self.batch.push((key, value));
        if self.batch.len() >= self.max_pairs || self.bytes >= self.max_bytes {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.bytes = 0;
        let sent = self.send.as_ref().map(|s| s.send(batch).is_ok());
        if sent != Some(true) {
            // A writer stopped: its error says why.
            return self.finish();
        }
        Ok(())
    }

    /// Writes what is left and waits for the writers; the first error of any.
    fn finish(&mut self) -> Result<()> {
        if !self.batch.is_empty() {
            if let Some(s) = &self.send {
                let _ = s.send(std::mem::take(&mut self.batch));
            }
        }
        self.send = None;
        let mut res = Ok(());
        for t in self.threads.drain(..) {
            let r = t.join().unwrap_or_else(|_| {
                Err(Error::Storage(
                    "a writer thread of the load panicked".into(),
                ))
            });
            if res.is_ok() {
                res = r;
            }
        }
        res
    }
}

/// Counts slice uses in bounded memory: the (id, size) pairs are sorted on disk
/// ([`Sorter`]) and only slices used more than once come out.
struct SliceCounter {
    sorter: Sorter<(u64, u32)>,
}

impl SliceCounter {
    fn new(limit: usize) -> SliceCounter {
        SliceCounter {
            sorter: Sorter::new(limit),
        }
    }

    fn add(&mut self, id: u64, size: u32) -> Result<()> {
        Ok(self.sorter.push((id, size))?)
    }

    /// Calls `shared` with each slice used more than once and its number of uses.
    fn shared(self, mut shared: impl FnMut(u64, u32, u64) -> Result<()>) -> Result<()> {
        let mut current: Option<((u64, u32), u64)> = None;
        for r in self.sorter.sorted() {
            let r = r?;
            match &mut current {
                Some((cur, n)) if *cur == r => *n += 1,
                _ => {
                    if let Some(((id, size), n)) = current.replace((r, 1)) {
                        if n > 1 {
                            shared(id, size, n)?;
                        }
                    }
                }
            }
        }
        if let Some(((id, size), n)) = current {
            if n > 1 {
                shared(id, size, n)?;
            }
        }
        Ok(())
    }
}

/// What a load learns of the whole tree while it streams.
struct Loader {
    out: BatchWriter,
    /// Parents of the files with several names, by inode (the first one was written).
    links: HashMap<Ino, Vec<Ino>>,
    slices: SliceCounter,
    rules: HashMap<Rule, u32>,
    summary: DumpSummary,
    max_inode: Ino,
    max_trash: u64,
    max_slice: u64,
    used_space: i64,
    used_inodes: i64,
    /// The path of the entry being read, for messages.
    path: Vec<String>,
    progress_every: u64,
}

/// What an entry tells its parent directory.
struct Loaded {
    ino: Ino,
    typ: FileType,
}

/// The seed of one entry object: its parent, and whether it is the top of a tree
/// (`FSTree`: inode 1 whatever the dump says, as a dump of a subdirectory loads; `Trash`).
struct EntrySeed<'a, 'p> {
    loader: &'a mut Loader,
    parent: Ino,
    top: Option<Ino>,
    progress: DumpProgress<'p>,
}

impl<'de> DeserializeSeed<'de> for EntrySeed<'_, '_> {
    type Value = Loaded;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Loaded, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EntrySeed<'_, '_> {
    type Value = Loaded;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an entry object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loaded, A::Error> {
        let EntrySeed {
            loader,
            parent,
            top,
            progress,
        } = self;
        let at = |loader: &Loader, what: String| de::Error::custom(loader.at(&what));
        let mut attr: Option<(DumpedAttr, FileType)> = None;
        let mut symlink = None;
        let mut xattrs: Vec<DumpedXattr> = Vec::new();
        let mut access = None;
        let mut default = None;
        let mut chunks: Vec<DumpedChunk> = Vec::new();
        let mut subdirs = 0u32;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "attr" => {
                    let mut a: DumpedAttr = map.next_value()?;
                    let typ = type_of(&a.typ)
                        .ok_or_else(|| at(loader, format!("unknown node type {:?}", a.typ)))?;
                    if let Some(ino) = top {
                        a.inode = ino;
                    }
                    if a.inode == 0 {
                        return Err(at(loader, "inode 0".into()));
                    }
                    attr = Some((a, typ));
                }
                "symlink" => symlink = Some(map.next_value::<String>()?),
                "xattrs" => {
                    xattrs = map
                        .next_value::<Option<Vec<DumpedXattr>>>()?
                        .unwrap_or_default()
                }
                "posix_acl_access" => access = map.next_value::<Option<DumpedAcl>>()?,
                "posix_acl_default" => default = map.next_value::<Option<DumpedAcl>>()?,
                "chunks" => {
                    chunks = map
                        .next_value::<Option<Vec<DumpedChunk>>>()?
                        .unwrap_or_default()
                }
                "entries" => {
                    let Some((a, FileType::Directory)) = &attr else {
                        return Err(at(
                            loader,
                            "\"entries\" of something that is not a directory, or before its \"attr\"".into(),
                        ));
                    };
                    let dir = a.inode;
                    subdirs = map.next_value_seed(EntriesSeed {
                        loader: &mut *loader,
                        dir,
                        count_subdirs: dir < TRASH_INODE,
                        progress,
                    })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let Some((a, typ)) = attr else {
            return Err(at(loader, "entry without \"attr\"".into()));
        };
        let loaded = Loaded { ino: a.inode, typ };
        loader
            .node(
                parent, a, typ, symlink, xattrs, access, default, chunks, subdirs, progress,
            )
            .map_err(|e| at(loader, e.to_string()))?;
        Ok(loaded)
    }
}

/// The seed of a directory's `entries` object; yields its number of subdirectories.
struct EntriesSeed<'a, 'p> {
    loader: &'a mut Loader,
    dir: Ino,
    count_subdirs: bool,
    progress: DumpProgress<'p>,
}

impl<'de> DeserializeSeed<'de> for EntriesSeed<'_, '_> {
    type Value = u32;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<u32, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EntriesSeed<'_, '_> {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of entries")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u32, A::Error> {
        let mut subdirs = 0;
        while let Some(name) = map.next_key::<String>()? {
            self.loader.path.push(name.clone());
            let child = map.next_value_seed(EntrySeed {
                loader: &mut *self.loader,
                parent: self.dir,
                top: None,
                progress: self.progress,
            })?;
            let raw = unescape(&name);
            let res = if raw.is_empty()
                || raw.len() > MAX_NAME
                || raw.contains(&b'/')
                || raw.contains(&0)
            {
                Err(Error::Invalid(format!("invalid name {name:?}")))
            } else {
                self.loader.out.put(
                    keys::dentry(self.dir, &raw),
                    encode_entry(child.typ, child.ino).to_vec(),
                )
            };
            if let Err(e) = res {
                return Err(de::Error::custom(self.loader.at(&e.to_string())));
            }
            self.loader.path.pop();
            if child.typ == FileType::Directory && self.count_subdirs {
                subdirs += 1;
            }
        }
        Ok(subdirs)
    }
}

impl Loader {
    /// `what` with the path of the entry being read.
    fn at(&self, what: &str) -> String {
        if self.path.is_empty() {
            what.to_string()
        } else {
            format!("{what} (at /{})", self.path.join("/"))
        }
    }

    fn acl_id(&mut self, acl: Option<DumpedAcl>) -> Result<u32> {
        let Some(acl) = acl else { return Ok(0) };
        let rule = acl.rule();
        if rule.owner == UNSET && rule.group == UNSET && rule.other == UNSET && rule.mask == UNSET {
            return Ok(0);
        }
        let next = self.rules.len() as u32 + 1;
        let id = *self.rules.entry(rule.clone()).or_insert(next);
        if id == next {
            self.out.put(keys::acl(id), rule.encode())?;
        }
        Ok(id)
    }

    /// Writes the keys of one inode whose entry object ended.
    #[allow(clippy::too_many_arguments)]
    fn node(
        &mut self,
        parent: Ino,
        a: DumpedAttr,
        typ: FileType,
        symlink: Option<String>,
        xattrs: Vec<DumpedXattr>,
        access: Option<DumpedAcl>,
        default: Option<DumpedAcl>,
        chunks: Vec<DumpedChunk>,
        subdirs: u32,
        progress: DumpProgress<'_>,
    ) -> Result<()> {
        let ino = a.inode;
        self.summary.entries += 1;
        if self.summary.entries.is_multiple_of(self.progress_every) {
            progress(self.summary.entries);
        }
        if typ != FileType::Directory && a.nlink > 1 {
            if let Some(parents) = self.links.get_mut(&ino) {
                // Another name of a file already loaded.
                parents.push(parent);
                return Ok(());
            }
            self.links.insert(ino, vec![parent]);
        }
        self.summary.inodes += 1;
        if ino >= TRASH_INODE {
            self.max_trash = self.max_trash.max(ino - TRASH_INODE);
        } else {
            self.max_inode = self.max_inode.max(ino);
            self.used_inodes += 1;
        }
        let mut attr = Attr {
            flags: a.flags,
            typ,
            mode: a.mode & 0o7777,
            uid: a.uid,
            gid: a.gid,
            atime: Time {
                sec: a.atime,
                nsec: a.atimensec,
            },
            mtime: Time {
                sec: a.mtime,
                nsec: a.mtimensec,
            },
            ctime: Time {
                sec: a.ctime,
                nsec: a.ctimensec,
            },
            nlink: 1,
            length: 0,
            rdev: a.rdev,
            parent: if ino == ROOT_INODE {
                ROOT_INODE
            } else {
                parent
            },
            access_acl: 0,
            default_acl: 0,
        };
        match typ {
            FileType::File => {
                attr.length = a.length;
                for c in chunks {
                    if c.slices.is_empty() {
                        continue;
                    }
                    let mut value = Vec::with_capacity(c.slices.len() * SLICE_LEN);
                    for s in c.slices {
                        let id = if s.id == 0 { s.chunkid } else { s.id };
                        if id != 0 {
                            self.slices.add(id, s.size)?;
                            self.max_slice = self.max_slice.max(id);
                        }
                        let slice = Slice {
                            pos: s.pos,
                            id,
                            size: s.size,
                            off: s.off,
                            len: s.len,
                        };
                        value.extend_from_slice(&slice.encode());
                    }
                    self.out.put(keys::chunk(ino, c.index), value)?;
                }
            }
            FileType::Directory => {
                attr.length = 4 << 10;
                attr.nlink = 2 + subdirs;
            }
            FileType::Symlink => {
                let target = unescape(symlink.as_deref().unwrap_or_default());
                if target.is_empty() || target.len() > MAX_SYMLINK {
                    return Err(Error::Invalid(format!(
                        "symlink target of {} bytes",
                        target.len()
                    )));
                }
                attr.length = target.len() as u64;
                self.out.put(keys::symlink(ino), target)?;
            }
            _ => {}
        }
        if ino < TRASH_INODE {
            self.used_space += space_of(if typ == FileType::File {
                attr.length
            } else {
                0
            });
        }
        for x in xattrs {
            self.out
                .put(keys::xattr(ino, x.name.as_bytes()), unescape(&x.value))?;
        }
        attr.access_acl = self.acl_id(access)?;
        attr.default_acl = self.acl_id(default)?;
        self.out.put(keys::attr(ino), attr.encode())
    }
}

/// The top-level object of a dump.
struct DumpSeed<'a, 'p> {
    loader: &'a mut Loader,
    progress: DumpProgress<'p>,
}

/// What the top level of a dump held besides the trees.
#[derive(Default)]
struct Head {
    setting: Option<Format>,
    counters: Option<DumpedCounters>,
    del_files: Vec<DumpedDelFile>,
    dir_quotas: BTreeMap<String, DumpedQuota>,
    tree: bool,
}

impl<'de> DeserializeSeed<'de> for DumpSeed<'_, '_> {
    type Value = Head;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Head, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DumpSeed<'_, '_> {
    type Value = Head;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object with \"Setting\", \"Counters\" and \"FSTree\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head, A::Error> {
        let mut head = Head::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "Setting" => head.setting = Some(map.next_value()?),
                "Counters" => head.counters = Some(map.next_value()?),
                "DelFiles" => {
                    head.del_files = map.next_value::<Option<Vec<_>>>()?.unwrap_or_default()
                }
                "Quotas" => {
                    head.dir_quotas = map
                        .next_value::<Option<BTreeMap<_, _>>>()?
                        .unwrap_or_default()
                }
                "FSTree" => {
                    if head.tree {
                        return Err(de::Error::custom("a second \"FSTree\""));
                    }
                    map.next_value_seed(EntrySeed {
                        loader: &mut *self.loader,
                        parent: ROOT_INODE,
                        top: Some(ROOT_INODE),
                        progress: self.progress,
                    })?;
                    head.tree = true;
                }
                "Trash" => {
                    self.loader.path.push(".trash".into());
                    map.next_value_seed(EntrySeed {
                        loader: &mut *self.loader,
                        parent: ROOT_INODE,
                        top: Some(TRASH_INODE),
                        progress: self.progress,
                    })?;
                    self.loader.path.pop();
                }
                // Sessions of the dumped volume are not this one's; quotas of users
                // and groups and JuiceFS's change log have no counterpart here.
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(head)
    }
}

impl Meta {
    /// Loads a dump (see [`Meta::dump`]) into this engine, which must hold no volume.
    /// On failure the engine is emptied again and the error says what was wrong and,
    /// for a malformed dump, where (line, column and the path of the entry).
    pub fn load_dump(
        self: &std::sync::Arc<Self>,
        input: &mut dyn Read,
        opts: &LoadOptions,
        progress: DumpProgress<'_>,
    ) -> Result<DumpSummary> {
        let (setting, root) = self
            .kv
            .read(|tx| Ok((tx.get(keys::SETTING)?, tx.get(&keys::attr(ROOT_INODE))?)))?;
        if let Some(s) = setting {
            let name = serde_json::from_slice::<Format>(&s)
                .map(|f| f.name)
                .unwrap_or_default();
            return Err(Error::Invalid(format!(
                "{} is not empty: it holds volume {name:?}; load into an empty database (or remove that volume first)",
                self.url()
            )));
        }
        if root.is_some() {
            return Err(Error::Invalid(format!(
                "{} holds part of a volume without its settings (an interrupted load?); empty it before loading",
                self.url()
            )));
        }
        let res = self.load_into_empty(input, opts, progress);
        if res.is_err() {
            if let Err(e) = self.kv.reset() {
                tracing::error!(
                    "the load failed and what it wrote could not be removed: {e}; empty {} before loading again",
                    self.url()
                );
            }
        }
        res
    }

    fn load_into_empty(
        self: &std::sync::Arc<Self>,
        input: &mut dyn Read,
        opts: &LoadOptions,
        progress: DumpProgress<'_>,
    ) -> Result<DumpSummary> {
        let mut loader = Loader {
            out: BatchWriter::new(self, opts.threads),
            links: HashMap::new(),
            slices: SliceCounter::new(4 << 20),
            rules: HashMap::new(),
            summary: DumpSummary::default(),
            max_inode: ROOT_INODE,
            max_trash: 0,
            max_slice: 0,
            used_space: 0,
            used_inodes: 0,
            path: Vec::new(),
            progress_every: 1000,
        };
        let parsed = {
            let mut de =
                serde_json::Deserializer::from_reader(BufReader::with_capacity(256 << 10, input));
            DumpSeed {
                loader: &mut loader,
                progress,
            }
            .deserialize(&mut de)
            .and_then(|head| de.end().map(|_| head))
        };
        let head = match parsed {
            Ok(h) => h,
            Err(e) => {
                let _ = loader.out.finish();
                return Err(Error::Invalid(format!(
                    "malformed dump: {}",
                    dump_error(&e)
                )));
            }
        };
        let missing = |what: &str| Error::Invalid(format!("malformed dump: no {what:?} in it"));
        let mut fmt = head.setting.ok_or_else(|| missing("Setting"))?;
        let dumped = head.counters.ok_or_else(|| missing("Counters"))?;
        if !head.tree {
            return Err(missing("FSTree"));
        }
        check_setting(&mut fmt)?;
        let out = &mut loader.out;
        for d in &head.del_files {
            out.put(
                keys::del_file(d.inode, d.length),
                d.expire.to_be_bytes().to_vec(),
            )?;
        }
        let mut quotas = Vec::new();
        for (ino, q) in &head.dir_quotas {
            let ino = ino
                .parse::<Ino>()
                .map_err(|_| Error::Invalid(format!("the dump's Quotas name inode {ino:?}")))?;
            if ino == ROOT_INODE {
                // The volume's limits come with its settings.
                continue;
            }
            let q = crate::quota::Quota {
                max_space: q.max_space,
                max_inodes: q.max_inodes,
                ..Default::default()
            };
            out.put(keys::dir_quota(ino), q.encode())?;
            quotas.push(ino);
        }
        // Files with several names: one counter per parent now, their link count (and
        // parent 0) once their attributes are surely written.
        let mut links = Vec::with_capacity(loader.links.len());
        for (ino, parents) in std::mem::take(&mut loader.links) {
            if parents.len() > 1 {
                let mut per_parent: BTreeMap<Ino, i64> = BTreeMap::new();
                for p in &parents {
                    *per_parent.entry(*p).or_default() += 1;
                }
                for (p, n) in per_parent {
                    out.put(keys::parent(ino, p), n.to_le_bytes().to_vec())?;
                }
            }
            links.push((ino, parents.len() as u32));
        }
        let rules = loader.rules.len() as i64;
        let mut refs = Vec::new();
        std::mem::replace(&mut loader.slices, SliceCounter::new(1)).shared(|id, size, n| {
            refs.push((id, size, n));
            Ok(())
        })?;
        for (id, size, n) in refs {
            out.put(
                keys::slice_ref(id, size),
                (n as i64 - 1).to_le_bytes().to_vec(),
            )?;
        }
        let counters = [
            ("usedSpace", loader.used_space),
            ("totalInodes", loader.used_inodes),
            (
                "nextInode",
                (dumped.next_inode + 1).max(loader.max_inode as i64 + 1),
            ),
            (
                "nextChunk",
                (dumped.next_chunk + 1).max(loader.max_slice as i64 + 1),
            ),
            ("nextSession", dumped.next_session),
            ("nextTrash", dumped.next_trash.max(loader.max_trash as i64)),
            ("aclMaxId", rules),
        ];
        for (name, v) in counters {
            out.put(keys::counter(name), v.to_le_bytes().to_vec())?;
        }
        out.finish()?;
        for batch in links.chunks(100) {
            self.kv.txn(|tx| {
                for &(ino, nlink) in batch {
                    let mut attr = crate::namespace::get_attr(tx, ino)?;
                    attr.nlink = nlink;
                    if nlink > 1 {
                        attr.parent = 0;
                    }
                    crate::namespace::put_attr(tx, ino, &attr)?;
                }
                Ok(())
            })?;
        }
        // Last: from now on the database holds a volume.
        fmt.enable_acl |= rules > 0;
        let json = serde_json::to_vec(&fmt)
            .map_err(|e| Error::Invalid(format!("cannot encode settings: {e}")))?;
        self.kv.txn(|tx| Ok(tx.set(keys::SETTING, &json)?))?;
        // Quotas' usage, which dumps do not carry, counted from their trees.
        for dir in quotas {
            if let Err(e) = self.check_quota(dir, true, opts.threads) {
                tracing::warn!("the quota of inode {dir} was not counted ({e}); run `nectar quota check --repair`");
            }
        }
        self.sync_volume_quota(&fmt)?;
        progress(loader.summary.entries);
        Ok(loader.summary)
    }
}

/// A serde_json error with where it happened, in words.
fn dump_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Eof => "it ends too soon (truncated?)".to_string(),
        Category::Io => format!("reading it failed: {e}"),
        _ => e.to_string(),
    };
    if e.line() > 0 && !what.contains(" line ") {
        format!("{what} at line {} column {}", e.line(), e.column())
    } else {
        what
    }
}

/// Checks the settings of a dump and takes what Nectar cannot use out of them.
fn check_setting(fmt: &mut Format) -> Result<()> {
    let bad = |what: String| {
        Err(Error::Invalid(format!(
            "malformed dump: \"Setting\": {what}"
        )))
    };
    if fmt.name.is_empty() {
        return bad("no volume Name".into());
    }
    if fmt.uuid.is_empty() {
        return bad("no UUID".into());
    }
    if fmt.block_size == 0 {
        return bad("BlockSize 0".into());
    }
    if fmt.secret_key.as_deref() == Some("removed") {
        fmt.secret_key = None;
        tracing::warn!(
            "the dump has no secret key of the object store (dumped without --keep-secret-key): give it to mounts with SECRET_KEY"
        );
    }
    if fmt.other.get("EncryptKey").and_then(|k| k.as_str()) == Some("removed") {
        tracing::warn!(
            "the dump has no RSA key of the volume's encrypted data (dumped without --keep-secret-key): put it back with `nectar config --encrypt-rsa-key` before mounting"
        );
    }
    Ok(())
}
