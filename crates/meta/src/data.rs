//! File data in metadata: open/close, chunk slice lists, writes, truncate, deletion.
//!
//! A write appends one 24-byte record to the chunk's value and moves the length and
//! mtime in the same transaction, so a slice becomes visible atomically and only after
//! the data layer stored its blocks. Truncating down drops whole chunks past the new end
//! and covers the tail of the last one with a hole record (id 0), so stale bytes never
//! reappear when the file grows again. Slice references are counted under `K`; when a
//! count falls below zero the slice is handed to the registered deleter after commit.

use crate::error::{sys, Error, Result};
use crate::keys;
use crate::kv::{prefix_end, KvTxn, Scanned};
use crate::meta::{space_of, Meta};
use crate::namespace::{attr_of, get_attr, put_attr};
use crate::types::*;
use libc::{EFBIG, EINVAL, EISDIR, ENOENT, EPERM};
use std::collections::HashMap;

/// Keys of inodes about to be deleted, read for a whole batch of removals at once (two
/// round trips for the batch instead of one or more per inode): each inode's xattrs and
/// first two chunks, and the reference counts of the slices of the small files among
/// them. What a transaction changes afterwards is kept up to date here.
#[derive(Default)]
pub(crate) struct Prefetched {
    /// Per inode: its xattr keys, and its first two chunks (files only).
    inodes: HashMap<Ino, (Scanned, Scanned)>,
    slice_refs: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Prefetched {
    /// Reads what deleting the inodes `doomed` (with their types) needs.
    pub(crate) fn read(tx: &mut dyn KvTxn, doomed: &[(Ino, FileType)]) -> Result<Prefetched> {
        let mut pre = Prefetched::default();
        if doomed.is_empty() {
            return Ok(pre);
        }
        let bounds: Vec<[Vec<u8>; 4]> = doomed
            .iter()
            .map(|&(ino, _)| {
                let (xp, cp) = (keys::xattr_prefix(ino), keys::chunk_prefix(ino));
                let (xe, ce) = (prefix_end(&xp), prefix_end(&cp));
                [xp, xe, cp, ce]
            })
            .collect();
        let mut ranges = Vec::new();
        for (b, &(_, typ)) in bounds.iter().zip(doomed) {
            ranges.push((&b[0][..], &b[1][..], usize::MAX));
            if typ == FileType::File {
                ranges.push((&b[2][..], &b[3][..], 2));
            }
        }
        let mut scanned = tx.scans(&ranges)?.into_iter();
        for &(ino, typ) in doomed {
            let xattrs = scanned.next().unwrap_or_default();
            let chunks = if typ == FileType::File {
                scanned.next().unwrap_or_default()
            } else {
                Vec::new()
            };
            pre.inodes.insert(ino, (xattrs, chunks));
        }
        let mut refs = Vec::new();
        for (_, chunks) in pre.inodes.values() {
            if let [(_, value)] = &chunks[..] {
                for s in Slice::decode_all(value)? {
                    if s.id != 0 {
                        refs.push(keys::slice_ref(s.id, s.size));
                    }
                }
            }
        }
        if !refs.is_empty() {
            let values = tx.gets(&refs)?;
            pre.slice_refs = refs.into_iter().zip(values).collect();
        }
        Ok(pre)
    }

    /// Takes in what another read found.
    pub(crate) fn add(&mut self, other: Prefetched) {
        self.inodes.extend(other.inodes);
        for (k, v) in other.slice_refs {
            // A count this transaction already changed stays as changed.
            self.slice_refs.entry(k).or_insert(v);
        }
    }

    /// The xattrs and first two chunks of `ino`, if read in advance.
    pub(crate) fn take(&mut self, ino: Ino) -> Option<(Scanned, Scanned)> {
        self.inodes.remove(&ino)
    }
}

/// Drops one reference to a slice; returns it when this was the last one.
pub(crate) fn deref_slice(tx: &mut dyn KvTxn, s: &Slice) -> Result<Option<(u64, u32)>> {
    deref_known(tx, s, &mut Prefetched::default())
}

/// [`deref_slice`], with the reference count taken from `pre` when it was read there.
fn deref_known(tx: &mut dyn KvTxn, s: &Slice, pre: &mut Prefetched) -> Result<Option<(u64, u32)>> {
    if s.id == 0 {
        return Ok(None);
    }
    // `K<id><size>` counts the slice's references beyond the first (absent: none), so
    // most slices have no key and their last dereference writes nothing.
    let k = keys::slice_ref(s.id, s.size);
    let value = match pre.slice_refs.get_mut(&k) {
        Some(known) => known.take(),
        None => tx.get(&k)?,
    };
    let extra = match value {
        Some(v) => crate::kv::parse_counter(&v)?,
        None => return Ok(Some((s.id, s.size))),
    };
    if extra <= 0 {
        tx.delete(&k)?;
        return Ok(Some((s.id, s.size)));
    }
    let left = (extra - 1).to_le_bytes();
    tx.set(&k, &left)?;
    if let Some(known) = pre.slice_refs.get_mut(&k) {
        *known = Some(left.to_vec());
    }
    Ok(None)
}

/// Releases the data of a deleted file inside the deleting transaction when it is
/// small, given its first two chunks `rows` (a scan of its chunk keys, limit 2): one
/// chunk of at most `max_slices` slice records (a file of a few writes).
/// Returns the slices that lost their last reference, or `None` (nothing touched) for a
/// larger file, whose data is then released in transactions of its own.
pub(crate) fn release_small_file(
    tx: &mut dyn KvTxn,
    max_slices: usize,
    rows: &[(Vec<u8>, Vec<u8>)],
    pre: &mut Prefetched,
) -> Result<Option<Vec<(u64, u32)>>> {
    let [(key, value)] = rows else {
        return Ok(rows.is_empty().then(Vec::new));
    };
    let slices = Slice::decode_all(value)?;
    if slices.len() > max_slices {
        return Ok(None);
    }
    let mut freed = Vec::new();
    for s in &slices {
        freed.extend(deref_known(tx, s, pre)?);
    }
    tx.delete(key)?;
    Ok(Some(freed))
}

/// Open flags relevant to permissions.
fn access_mask(flags: i32) -> u32 {
    match flags & libc::O_ACCMODE {
        libc::O_RDONLY => 4,
        libc::O_WRONLY => 2,
        _ => 6,
    }
}

/// At most this many chunk keys, holding at most [`SLICES_PER_TXN`] slices, are dropped
/// by one transaction when a file is deleted or cut short. Engines such as etcd cap the
/// operations of a transaction (128 by default): a chunk costs a read and a delete, each
/// of its slices a read of its reference count and sometimes a write.
const CHUNKS_PER_TXN: usize = 8;
const SLICES_PER_TXN: usize = 64;

/// How many of the chunks, given by their slice counts, one transaction drops: as many
/// as the limits allow, and always at least one (a chunk is never split; compaction
/// keeps chunks near 64 slices).
fn fitting(slices: impl Iterator<Item = usize>) -> usize {
    let mut total = 0;
    let mut n = 0;
    for count in slices.take(CHUNKS_PER_TXN) {
        total += count;
        if n > 0 && total > SLICES_PER_TXN {
            break;
        }
        n += 1;
    }
    n.max(1)
}

/// What a truncate transaction is: the whole operation (refused when too big), a step
/// of a long cut (skipped when the file is already shorter), or the end of one.
#[derive(Clone, Copy, PartialEq)]
enum Cut {
    Whole,
    Step,
    Final,
}

impl Meta {
    /// Opens an inode: checks rights and counts the open, so an unlink while open keeps
    /// the data until [`Meta::close`].
    pub fn open(&self, ctx: &Ctx, ino: Ino, flags: i32) -> Result<Attr> {
        let mut mask = access_mask(flags);
        if flags & libc::O_TRUNC != 0 {
            mask |= 2;
        }
        let attr = self.kv.read(|tx| {
            let attr = get_attr(tx, ino)?;
            if attr.typ == FileType::Directory && flags & libc::O_ACCMODE != libc::O_RDONLY {
                return sys(EISDIR);
            }
            self.check_access(tx, ctx, &attr, mask)?;
            Ok(attr)
        })?;
        if (attr.flags & 1 != 0 || is_trash(attr.parent)) && mask & 2 != 0 {
            // FLAG_IMMUTABLE, or a file in the trash: kept as it was removed.
            return sys(EPERM);
        }
        *self.open_files.lock().entry(ino).or_insert(0) += 1;
        Ok(attr)
    }

    /// Counts an open without checks (a file this client just created).
    pub fn opened(&self, ino: Ino) {
        *self.open_files.lock().entry(ino).or_insert(0) += 1;
    }

    /// Closes one open; at the last close of an unlinked file, deletes it.
    pub fn close(&self, ino: Ino) -> Result<()> {
        {
            let mut open = self.open_files.lock();
            match open.get_mut(&ino) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    return Ok(());
                }
                Some(_) => {
                    open.remove(&ino);
                }
                None => return Ok(()),
            }
        }
        // Only this client sustains the files it has open, so it knows without asking
        // whether this one was unlinked meanwhile (a close costs no round trip).
        if !self.sustained_here.lock().remove(&ino) {
            return Ok(());
        }
        let sid = self.session_id();
        let sustained = self
            .kv
            .read(|tx| Ok(tx.get(&keys::sustained(sid, ino))?))?
            .is_some();
        if sustained {
            self.release_sustained(sid, ino)?;
        }
        Ok(())
    }

    /// Deletes an unlinked inode a session kept open (unless it got a name again).
    pub(crate) fn release_sustained(&self, sid: u64, ino: Ino) -> Result<()> {
        let data = self.kv.txn(|tx| {
            tx.delete(&keys::sustained(sid, ino))?;
            let attr = match get_attr(tx, ino) {
                Ok(a) => a,
                Err(Error::Sys(ENOENT)) => return Ok(None),
                Err(e) => return Err(e),
            };
            if attr.nlink > 0 {
                return Ok(None);
            }
            Ok(Some(self.remove_inode(
                tx,
                ino,
                &attr,
                &mut Prefetched::default(),
            )?))
        })?;
        match data {
            Some(data) => self.after_remove(ino, data),
            None => Ok(()),
        }
    }

    /// The slice records of one chunk, in write order.
    pub fn read_chunk(&self, ino: Ino, index: u32) -> Result<Vec<Slice>> {
        let v = self.kv.read(|tx| Ok(tx.get(&keys::chunk(ino, index))?))?;
        match v {
            Some(v) => Slice::decode_all(&v),
            None => Ok(Vec::new()),
        }
    }

    /// Commits a stored slice: record `slice` at `slice.pos` of chunk `index`, extend the
    /// length to cover it, set mtime. Returns the attributes and the chunk's record count.
    pub fn write_slice(
        &self,
        ino: Ino,
        index: u32,
        slice: Slice,
        mtime: Time,
    ) -> Result<(Attr, usize)> {
        let end = ((index as u64) << CHUNK_BITS) + slice.pos as u64 + slice.len as u64;
        if end > MAX_FILE_SIZE {
            return sys(EFBIG);
        }
        let commit = self.drawn_under(slice.id).map(|sid| (sid, slice.id));
        let key = keys::chunk(ino, index);
        self.kv.txn(|tx| {
            // One round trip reads the attribute, the chunk (for its record count) and,
            // for a tracked slice, the session.
            let mut values =
                self.read_for_commit(tx, vec![keys::attr(ino), key.clone()], commit)?;
            let records = values.pop().flatten().map_or(0, |v| v.len() / SLICE_LEN);
            let mut attr = match values.pop() {
                Some(Some(v)) => Attr::decode(&v)?,
                _ => return sys(ENOENT),
            };
            if attr.typ != FileType::File {
                return sys(EPERM);
            }
            if end > attr.length {
                let delta = space_of(end) - space_of(attr.length);
                self.file_space_changed(tx, ino, &attr, delta)?;
                attr.length = end;
            }
            tx.append(&key, &slice.encode())?;
            self.record_commit(tx, commit)?;
            attr.mtime = mtime;
            attr.ctime = Time::now();
            // Writing clears set-user-id (and set-group-id if group-executable), as a
            // local file system does for unprivileged writers.
            if attr.mode & 0o6000 != 0 {
                attr.mode &= !0o4000;
                if attr.mode & 0o010 != 0 {
                    attr.mode &= !0o2000;
                }
            }
            put_attr(tx, ino, &attr)?;
            Ok((attr, records + 1))
        })
    }

    /// Sets the length of a file.
    pub fn truncate(&self, ctx: &Ctx, ino: Ino, length: u64) -> Result<Attr> {
        if length > MAX_FILE_SIZE {
            return sys(EFBIG);
        }
        if let Some(attr) = self.truncate_once(ctx, ino, length, Cut::Whole)? {
            return Ok(attr);
        }
        // Too many chunks go for one transaction (etcd accepts 128 operations): cut the
        // file from its end in steps, each a whole truncate to a chunk boundary. A crash
        // between steps leaves the file cut at a step's length, never half-cut.
        let first_gone = length.div_ceil(CHUNK_SIZE) as u32;
        let (begin, end) = (
            keys::chunk(ino, first_gone),
            prefix_end(&keys::chunk_prefix(ino)),
        );
        // (chunk index, slices in it) of every chunk that goes, last first.
        let mut gone: Vec<(u32, usize)> = self.kv.read(|tx| {
            Ok(tx
                .scan(&begin, &end, usize::MAX)?
                .iter()
                .filter_map(|(k, v)| {
                    let index = u32::from_be_bytes(k.get(k.len() - 4..)?.try_into().ok()?);
                    Some((index, v.len() / SLICE_LEN))
                })
                .collect())
        })?;
        gone.reverse();
        let mut rest = &gone[..];
        while !rest.is_empty() {
            let (step, more) = rest.split_at(fitting(rest.iter().map(|c| c.1)));
            let lowest = step.last().unwrap().0;
            let cut = ((lowest as u64) << CHUNK_BITS).max(length);
            self.truncate_once(ctx, ino, cut, Cut::Step)?;
            rest = more;
        }
        self.truncate_once(ctx, ino, length, Cut::Final)
            .map(|a| a.expect("a final cut always finishes"))
    }

    /// One truncate transaction; `None` when `cut` is [`Cut::Whole`] and more than
    /// [`CHUNKS_PER_TXN`] chunks would go (nothing is changed then).
    fn truncate_once(&self, ctx: &Ctx, ino: Ino, length: u64, cut: Cut) -> Result<Option<Attr>> {
        // The chunk the new end falls in (it gets a hole over its tail when the file
        // shrinks) is read with the attribute, in one round trip.
        let end_chunk = keys::chunk(ino, (length >> CHUNK_BITS) as u32);
        let (attr, freed) = self.kv.txn(|tx| {
            let mut got = tx.gets(&[keys::attr(ino), end_chunk.clone()])?.into_iter();
            let mut attr = attr_of(got.next().flatten())?;
            let end_chunk_exists = got.next().flatten().is_some();
            match attr.typ {
                FileType::File => {}
                FileType::Directory => return sys(EISDIR),
                _ => return sys(EINVAL),
            }
            if is_trash(attr.parent) {
                return sys(EPERM);
            }
            self.check_access(tx, ctx, &attr, 2)?;
            let old = attr.length;
            if cut == Cut::Step && length >= old {
                // Already shorter: another truncate got here first.
                return Ok((Some(attr), Vec::new()));
            }
            let delta = space_of(length) - space_of(old);
            let mut freed = Vec::new();
            if length < old {
                // Whole chunks past the new end go; the last kept chunk gets a hole over
                // its tail.
                let first_gone = length.div_ceil(CHUNK_SIZE) as u32;
                let begin = keys::chunk(ino, first_gone);
                let end = prefix_end(&keys::chunk_prefix(ino));
                loop {
                    let rows = tx.scan(&begin, &end, 1000)?;
                    let last_page = rows.len() < 1000;
                    let slices = rows.iter().map(|(_, v)| v.len() / SLICE_LEN);
                    if cut == Cut::Whole && fitting(slices) < rows.len() {
                        return Ok((None, Vec::new()));
                    }
                    for (k, v) in rows {
                        freed.extend(self.release_replaced(tx, &Slice::decode_all(&v)?)?);
                        tx.delete(&k)?;
                    }
                    if last_page {
                        break;
                    }
                }
                if !length.is_multiple_of(CHUNK_SIZE) {
                    let index = (length >> CHUNK_BITS) as u32;
                    let pos = (length % CHUNK_SIZE) as u32;
                    let chunk_end = (old - ((index as u64) << CHUNK_BITS)).min(CHUNK_SIZE) as u32;
                    if chunk_end > pos && end_chunk_exists {
                        let hole = Slice {
                            pos,
                            id: 0,
                            size: 0,
                            off: 0,
                            len: chunk_end - pos,
                        };
                        tx.append(&end_chunk, &hole.encode())?;
                    }
                }
            }
            // Charged before the length changes: the quotas are found from the names.
            self.file_space_changed(tx, ino, &attr, delta)?;
            let now = Time::now();
            attr.length = length;
            attr.mtime = now;
            attr.ctime = now;
            put_attr(tx, ino, &attr)?;
            Ok((Some(attr), freed))
        })?;
        self.delete_slices(freed);
        Ok(attr)
    }

    /// Releases the data of a deleted file: drops its chunks in batches (each its own
    /// transaction, so huge files never make one giant transaction), then its `D` key.
    pub fn delete_file_data(&self, ino: Ino, length: u64) -> Result<()> {
        let begin = keys::chunk_prefix(ino);
        let end = prefix_end(&begin);
        loop {
            let (done, freed) = self.kv.txn(|tx| {
                let mut rows = tx.scan(&begin, &end, CHUNKS_PER_TXN)?;
                rows.truncate(fitting(rows.iter().map(|(_, v)| v.len() / SLICE_LEN)));
                let mut freed = Vec::new();
                for (k, v) in &rows {
                    for s in Slice::decode_all(v)? {
                        freed.extend(deref_slice(tx, &s)?);
                    }
                    tx.delete(k)?;
                }
                if rows.is_empty() {
                    tx.delete(&keys::del_file(ino, length))?;
                    // A file kept for readers elsewhere still has its attribute.
                    if let Some(v) = tx.get(&keys::attr(ino))? {
                        if Attr::decode(&v)?.nlink == 0 {
                            tx.delete(&keys::attr(ino))?;
                        }
                    }
                }
                Ok((rows.is_empty(), freed))
            })?;
            self.delete_slices(freed);
            if done {
                return Ok(());
            }
        }
    }
}

/// `fallocate` mode bits (Linux values).
pub const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
pub const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
pub const FALLOC_FL_ZERO_RANGE: i32 = 0x10;

/// Splits `[off, off+len)` of a file at chunk boundaries: (chunk index, position in the
/// chunk, length) for each piece.
fn chunk_pieces(off: u64, len: u64) -> impl Iterator<Item = (u32, u32, u32)> {
    let end = off + len;
    let mut pos = off;
    std::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        let index = (pos >> CHUNK_BITS) as u32;
        let in_chunk = pos & (CHUNK_SIZE - 1);
        let n = (CHUNK_SIZE - in_chunk).min(end - pos);
        pos += n;
        Some((index, in_chunk as u32, n as u32))
    })
}

/// Covers `[off, off+len)` with hole records (reads as zeros).
fn write_holes(tx: &mut dyn KvTxn, ino: Ino, off: u64, len: u64) -> Result<()> {
    for (index, pos, n) in chunk_pieces(off, len) {
        let hole = Slice {
            pos,
            id: 0,
            size: 0,
            off: 0,
            len: n,
        };
        tx.append(&keys::chunk(ino, index), &hole.encode())?;
    }
    Ok(())
}

impl Meta {
    /// Allocates, zeroes or punches a range (`fallocate(2)`). Space is never reserved:
    /// files are sparse, so allocation only moves the length.
    pub fn fallocate(&self, ctx: &Ctx, ino: Ino, mode: i32, off: u64, len: u64) -> Result<Attr> {
        let known = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE;
        if mode & !known != 0 {
            return sys(libc::EOPNOTSUPP);
        }
        if mode & FALLOC_FL_PUNCH_HOLE != 0
            && (mode & FALLOC_FL_KEEP_SIZE == 0 || mode & FALLOC_FL_ZERO_RANGE != 0)
        {
            return sys(libc::EOPNOTSUPP);
        }
        if len == 0 {
            return sys(EINVAL);
        }
        let end = off.checked_add(len).ok_or(Error::Sys(EFBIG))?;
        if end > MAX_FILE_SIZE {
            return sys(EFBIG);
        }
        self.kv.txn(|tx| {
            let mut attr = get_attr(tx, ino)?;
            match attr.typ {
                FileType::File => {}
                FileType::Directory => return sys(EISDIR),
                _ => return sys(libc::ENODEV),
            }
            self.check_access(tx, ctx, &attr, 2)?;
            let old = attr.length;
            let grows = mode & FALLOC_FL_KEEP_SIZE == 0 && end > old;
            if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) != 0 && off < old {
                write_holes(tx, ino, off, end.min(old) - off)?;
            }
            let now = Time::now();
            if grows {
                self.file_space_changed(tx, ino, &attr, space_of(end) - space_of(old))?;
                attr.length = end;
            }
            if grows || mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) != 0 {
                attr.mtime = now;
                attr.ctime = now;
                put_attr(tx, ino, &attr)?;
            }
            Ok(attr)
        })
    }

    /// Copies `len` bytes from `src` at `off_in` to `dst` at `off_out` by sharing the
    /// source's slices (no data moves): the destination gets records pointing at the
    /// same objects, and each shared slice's reference count goes up. Returns the bytes
    /// copied (less than `len` at the end of the source) and the new attributes of `dst`.
    pub fn copy_file_range(
        &self,
        ctx: &Ctx,
        src: Ino,
        off_in: u64,
        dst: Ino,
        off_out: u64,
        len: u64,
    ) -> Result<(u64, Attr)> {
        if off_in.checked_add(len).is_none()
            || off_out.checked_add(len).is_none_or(|e| e > MAX_FILE_SIZE)
        {
            return sys(EFBIG);
        }
        self.kv.txn(|tx| {
            let sattr = get_attr(tx, src)?;
            let mut dattr = if dst == src {
                sattr.clone()
            } else {
                get_attr(tx, dst)?
            };
            for a in [&sattr, &dattr] {
                match a.typ {
                    FileType::File => {}
                    FileType::Directory => return sys(EISDIR),
                    _ => return sys(EINVAL),
                }
            }
            self.check_access(tx, ctx, &sattr, 4)?;
            self.check_access(tx, ctx, &dattr, 2)?;
            if off_in >= sattr.length {
                return Ok((0, dattr));
            }
            let n = len.min(sattr.length - off_in);
            if src == dst && off_in < off_out + n && off_out < off_in + n {
                return sys(EINVAL);
            }
            // Read every source chunk first: with src == dst, writes must not feed reads.
            let mut pieces: Vec<(u64, Slice)> = Vec::new(); // (destination offset, record)
            for (index, pos, piece_len) in chunk_pieces(off_in, n) {
                let records = match tx.get(&keys::chunk(src, index))? {
                    Some(v) => Slice::decode_all(&v)?,
                    None => Vec::new(),
                };
                let view = crate::slice::resolve(&records);
                let (lo, hi) = (pos as u64, pos as u64 + piece_len as u64);
                let chunk_start = (index as u64) << CHUNK_BITS;
                let mut cursor = lo;
                for s in view.iter() {
                    let (s_lo, s_hi) = (s.pos as u64, s.pos as u64 + s.len as u64);
                    if s_hi <= lo || s_lo >= hi {
                        continue;
                    }
                    let from = s_lo.max(lo);
                    let to = s_hi.min(hi);
                    if from > cursor {
                        pieces.push((
                            chunk_start + cursor - off_in + off_out,
                            Slice {
                                pos: 0,
                                id: 0,
                                size: 0,
                                off: 0,
                                len: (from - cursor) as u32,
                            },
                        ));
                    }
                    let rec = Slice {
                        pos: 0,
                        off: s.off + (from - s_lo) as u32,
                        len: (to - from) as u32,
                        ..*s
                    };
                    pieces.push((chunk_start + from - off_in + off_out, rec));
                    cursor = to;
                }
                if cursor < hi {
                    pieces.push((
                        chunk_start + cursor - off_in + off_out,
                        Slice {
                            pos: 0,
                            id: 0,
                            size: 0,
                            off: 0,
                            len: (hi - cursor) as u32,
                        },
                    ));
                }
            }
            // Write them at the destination, split again at its chunk boundaries.
            for (dst_off, rec) in pieces {
                let mut skip = 0u32;
                for (index, pos, piece_len) in chunk_pieces(dst_off, rec.len as u64) {
                    let part = Slice {
                        pos,
                        off: if rec.id == 0 { 0 } else { rec.off + skip },
                        len: piece_len,
                        ..rec
                    };
                    tx.append(&keys::chunk(dst, index), &part.encode())?;
                    if part.id != 0 {
                        tx.incr_by(&keys::slice_ref(part.id, part.size), 1)?;
                    }
                    skip += piece_len;
                }
            }
            let end = off_out + n;
            let now = Time::now();
            if end > dattr.length {
                let delta = space_of(end) - space_of(dattr.length);
                self.file_space_changed(tx, dst, &dattr, delta)?;
                dattr.length = end;
            }
            dattr.mtime = now;
            dattr.ctime = now;
            put_attr(tx, dst, &dattr)?;
            Ok((n, dattr))
        })
    }

    /// Chunk indexes of a file that hold records, from `from` on, at most `limit`.
    pub fn chunk_indexes(&self, ino: Ino, from: u32, limit: usize) -> Result<Vec<u32>> {
        let begin = keys::chunk(ino, from);
        let end = prefix_end(&keys::chunk_prefix(ino));
        let rows = self.kv.read(|tx| Ok(tx.scan(&begin, &end, limit)?))?;
        Ok(rows
            .iter()
            .filter_map(|(k, _)| {
                k.get(10..14)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes)
            })
            .collect())
    }
}

impl Meta {
    /// Slice records of a chunk one compaction swaps at most: releasing each replaced
    /// slice reads its reference count, and etcd caps a transaction at 128 operations
    /// (with compares); elsewhere a compaction takes the whole chunk.
    pub fn compaction_limit(&self) -> usize {
        if self.kv.engine_name() == "etcd" {
            48
        } else {
            usize::MAX
        }
    }

    /// Swaps the first `old.len()` records of a chunk for one record `new` (compaction),
    /// if the chunk still begins with exactly those records; records appended since are
    /// kept after it. Returns false (and changes nothing) when the chunk changed. The old
    /// slices lose their reference; `new` starts with one.
    pub fn replace_chunk_prefix(
        &self,
        ino: Ino,
        index: u32,
        old: &[Slice],
        new: Option<Slice>,
    ) -> Result<bool> {
        let prefix: Vec<u8> = old.iter().flat_map(|s| s.encode()).collect();
        let key = keys::chunk(ino, index);
        let commit = new
            .as_ref()
            .and_then(|n| Some((self.drawn_under(n.id)?, n.id)));
        let (done, freed) = self.kv.txn(|tx| {
            let Some(Some(value)) = self.read_for_commit(tx, vec![key.clone()], commit)?.pop()
            else {
                return Ok((false, Vec::new()));
            };
            if !value.starts_with(&prefix) {
                return Ok((false, Vec::new()));
            }
            let mut v = Vec::with_capacity(value.len() - prefix.len() + SLICE_LEN);
            if let Some(n) = &new {
                v.extend_from_slice(&n.encode());
            }
            v.extend_from_slice(&value[prefix.len()..]);
            if v.is_empty() {
                tx.delete(&key)?;
            } else {
                tx.set(&key, &v)?;
            }
            self.record_commit(tx, commit)?;
            Ok((true, self.release_replaced(tx, old)?))
        })?;
        self.delete_slices(freed);
        Ok(done)
    }
}
