//! Namespace operations: lookup, attributes, create, link, unlink, rename, readdir.
//!
//! Each public method is one transaction. Directory link counts follow the local
//! convention (2 + subdirectories); a file with several names has `parent == 0` and one
//! `A<ino>P<parent>` counter per parent directory. When the last name of a file goes
//! while this client still has it open, the inode is kept as a *sustained* inode of the
//! session and deleted at the last close; otherwise its data is released right after
//! the transaction commits.

use crate::acl::NewRules;
use crate::cache::{Listed, Listing, MAX_LISTING};
use crate::data::Prefetched;
use crate::error::{sys, Error, Result};
use crate::keys;
use crate::kv::{prefix_end, KvTxn};
use crate::meta::{space_of, Meta};
use crate::trash::check_not_trash_name;
use crate::types::*;
use libc::{EACCES, EEXIST, EINVAL, EISDIR, ENAMETOOLONG, ENOENT, ENOTDIR, ENOTEMPTY, EPERM};
use std::collections::HashMap;

pub const RENAME_NOREPLACE: u32 = 1;
pub const RENAME_EXCHANGE: u32 = 2;

pub(crate) fn get_attr(tx: &mut dyn KvTxn, ino: Ino) -> Result<Attr> {
    attr_of(tx.get(&keys::attr(ino))?)
}

/// An inode's attributes from the value of its attribute key (absent: `ENOENT`).
pub(crate) fn attr_of(value: Option<Vec<u8>>) -> Result<Attr> {
    match value {
        Some(v) => Attr::decode(&v),
        None => sys(ENOENT),
    }
}

pub(crate) fn put_attr(tx: &mut dyn KvTxn, ino: Ino, attr: &Attr) -> Result<()> {
    Ok(tx.set(&keys::attr(ino), &attr.encode())?)
}

pub(crate) fn encode_entry(typ: FileType, ino: Ino) -> [u8; 9] {
    let mut b = [0u8; 9];
    b[0] = typ as u8;
    b[1..].copy_from_slice(&ino.to_be_bytes());
    b
}

pub(crate) fn decode_entry(v: &[u8]) -> Result<Dentry> {
    if v.len() != 9 {
        return Err(Error::Corrupt(format!(
            "directory entry of {} bytes",
            v.len()
        )));
    }
    Ok((
        FileType::from_u8(v[0])?,
        u64::from_be_bytes(v[1..9].try_into().unwrap_or_default()),
    ))
}

/// Whether `ctx` has the `mask` rights (4 read, 2 write, 1 execute) on `attr`.
pub fn access_ok(ctx: &Ctx, attr: &Attr, mask: u32) -> bool {
    let mode = attr.mode as u32;
    if ctx.uid == 0 {
        // Root may do anything, but execute needs some execute bit on non-directories.
        return mask & 1 == 0 || attr.typ == FileType::Directory || mode & 0o111 != 0;
    }
    let bits = if ctx.uid == attr.uid {
        mode >> 6
    } else if ctx.in_group(attr.gid) {
        mode >> 3
    } else {
        mode
    } & 7;
    bits & mask == mask
}

/// The sticky-directory rule for removing or replacing an entry.
fn check_sticky(ctx: &Ctx, dir: &Attr, victim: &Attr) -> Result<()> {
    if ctx.check_permission
        && dir.mode & 0o1000 != 0
        && ctx.uid != 0
        && ctx.uid != dir.uid
        && ctx.uid != victim.uid
    {
        return sys(EPERM);
    }
    Ok(())
}

pub(crate) fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return sys(EINVAL);
    }
    if name.len() > MAX_NAME {
        return sys(ENAMETOOLONG);
    }
    Ok(())
}

/// A value as the KV layer returns it (`None`: no such key).
type Value = Option<Vec<u8>>;

/// What a directory entry names: the type and inode.
type Dentry = (FileType, Ino);

/// A directory's attributes, its entry `name` and the values of `more` keys, read in one
/// round trip: the first read of nearly every namespace operation.
fn dir_and_entry(
    tx: &mut dyn KvTxn,
    parent: Ino,
    name: &[u8],
    more: &[Vec<u8>],
) -> Result<(Attr, Option<Dentry>, Vec<Value>)> {
    let mut asked = vec![keys::attr(parent), keys::dentry(parent, name)];
    asked.extend_from_slice(more);
    let mut got = tx.gets(&asked)?.into_iter();
    let pattr = dir_of(got.next().flatten())?;
    let entry = got.next().flatten().map(|v| decode_entry(&v)).transpose()?;
    Ok((pattr, entry, got.collect()))
}

/// A directory's attributes from the value of its attribute key.
fn dir_of(value: Value) -> Result<Attr> {
    let a = attr_of(value)?;
    if a.typ != FileType::Directory {
        return sys(ENOTDIR);
    }
    Ok(a)
}

/// Whether a directory is gone: removed for good (while someone still had it open), or
/// into the trash, where nothing new goes.
fn removed(dir: &Attr) -> bool {
    dir.nlink == 0 || is_trash(dir.parent)
}

fn dir_attr(tx: &mut dyn KvTxn, ino: Ino) -> Result<Attr> {
    let a = get_attr(tx, ino)?;
    if a.typ != FileType::Directory {
        return sys(ENOTDIR);
    }
    Ok(a)
}

/// What dropping one name of an inode led to.
pub(crate) enum Dropped {
    /// Other names remain.
    StillLinked,
    /// No name remains but this client has it open: kept until the last close.
    Sustained,
    /// Gone; what is left to do with its data.
    Deleted(FileData),
}

/// The data of an inode [`Meta::remove_inode`] deleted.
pub(crate) enum FileData {
    /// Nothing to release: not a file.
    NoData,
    /// Released in the same transaction: these slices lost their last reference, and
    /// their objects are deleted once it commits.
    Freed(Vec<(u64, u32)>),
    /// Queued under a `D` key, to release in transactions of their own (a file of this
    /// length).
    Queued(u64),
    /// Kept for readers on other clients under a `D` key, with its attribute (see
    /// `readers.rs`): released later by `Meta::cleanup_deleted_files`.
    Kept,
}

/// A file with at most this many slice records in one chunk has its data released in
/// the transaction that deletes it (one transaction per `rm` of a small file, not two).
const RELEASE_INLINE_SLICES: usize = 16;

impl Meta {
    pub fn get_attr(&self, ino: Ino) -> Result<Attr> {
        if let Some(attr) = self.cache.attr(ino) {
            return Ok(attr);
        }
        let since = self.cache.seq();
        let attr = self.kv.read(|tx| get_attr(tx, ino))?;
        self.cache.keep_attr(since, ino, &attr);
        Ok(attr)
    }

    /// Checks `mask` rights of `ctx` on an inode (the `access` call).
    pub fn access(&self, ctx: &Ctx, ino: Ino, mask: u32) -> Result<()> {
        self.kv.read(|tx| {
            let attr = get_attr(tx, ino)?;
            if !self.access_allowed(tx, ctx, &attr, mask)? {
                return sys(EACCES);
            }
            Ok(())
        })
    }

    /// Whether `ctx` has `mask` rights on a node: by its access ACL if it has one,
    /// otherwise by its mode.
    fn access_allowed(
        &self,
        tx: &mut dyn KvTxn,
        ctx: &Ctx,
        attr: &Attr,
        mask: u32,
    ) -> Result<bool> {
        Ok(match self.acl_permits(tx, ctx, attr, mask)? {
            Some(granted) => granted,
            None => access_ok(ctx, attr, mask),
        })
    }

    /// [`Meta::access_allowed`] for callers that asked metadata to check permissions.
    pub(crate) fn check_access(
        &self,
        tx: &mut dyn KvTxn,
        ctx: &Ctx,
        attr: &Attr,
        mask: u32,
    ) -> Result<()> {
        if ctx.check_permission && !self.access_allowed(tx, ctx, attr, mask)? {
            return sys(EACCES);
        }
        Ok(())
    }

    pub fn lookup(&self, ctx: &Ctx, parent: Ino, name: &[u8]) -> Result<(Ino, Attr)> {
        if name.len() > MAX_NAME {
            return sys(ENAMETOOLONG);
        }
        if parent == ROOT_INODE && name == TRASH_NAME {
            return Ok((TRASH_INODE, self.get_attr(TRASH_INODE)?));
        }
        // The cache answers only where the kernel checked permissions.
        let cacheable = !ctx.check_permission && name != b"." && name != b"..";
        if cacheable {
            if let Some(found) = self.cache.entry(parent, name) {
                return Ok(found);
            }
            if self.cache.known_absent(parent, name) {
                return sys(ENOENT);
            }
        }
        let since = self.cache.seq();
        let (ino, attr) = self.kv.read(|tx| {
            // The parent, the entry and the inode it names in one round trip where the
            // engine follows the entry on the server (Redis), two elsewhere: lookups
            // dominate `stat` and `ls -l` on a networked engine.
            let asked = [keys::attr(parent), keys::dentry(parent, name)];
            let (got, followed) = tx.gets_and_follow(&asked, &keys::ATTR_OF_ENTRY)?;
            let mut got = got.into_iter();
            let pattr = dir_of(got.next().flatten())?;
            let entry = got.next().flatten().map(|v| decode_entry(&v)).transpose()?;
            self.check_access(tx, ctx, &pattr, 1)?;
            let ino = match name {
                b"." => parent,
                b".." => {
                    if parent == ROOT_INODE {
                        ROOT_INODE
                    } else {
                        pattr.parent
                    }
                }
                _ => entry.ok_or(Error::Sys(ENOENT))?.1,
            };
            let attr = match followed {
                Some((key, value)) if key == keys::attr(ino) => attr_of(value)?,
                _ => get_attr(tx, ino)?,
            };
            Ok((ino, attr))
        })?;
        if cacheable {
            self.cache.keep_entry(since, parent, name, ino, &attr);
        }
        Ok((ino, attr))
    }

    /// Creates a node of any type. `mode` holds the permission bits (07777); `umask` is
    /// applied to them. Symlinks pass their target.
    #[allow(clippy::too_many_arguments)]
    pub fn mknod(
        &self,
        ctx: &Ctx,
        parent: Ino,
        name: &[u8],
        typ: FileType,
        mode: u32,
        umask: u32,
        rdev: u32,
        target: &[u8],
    ) -> Result<(Ino, Attr)> {
        check_name(name)?;
        check_not_trash_name(parent, name)?;
        if is_trash(parent) {
            return sys(EPERM);
        }
        if typ == FileType::Symlink && (target.is_empty() || target.len() > MAX_SYMLINK) {
            return sys(if target.is_empty() {
                libc::ENOENT
            } else {
                ENAMETOOLONG
            });
        }
        let ino = self.next_inode()?;
        let mut made = NewRules::new();
        let mut attempt = 0;
        let since = self.cache.seq();
        // The new entry is kept below, so the directory stays complete.
        let _restoring = self.cache.restoring(&[(parent, name)]);
        let created = self.kv.txn(|tx| {
            attempt += 1;
            made.clear();
            let (mut pattr, existing, _) = dir_and_entry(tx, parent, name, &[])?;
            if removed(&pattr) {
                return sys(ENOENT);
            }
            self.check_access(tx, ctx, &pattr, 3)?;
            if existing.is_some() {
                return sys(EEXIST);
            }
            let space = space_of(0);
            let domains = self.quota_domains(tx, parent)?;
            self.charge(tx, &domains, space, 1)?;
            let perm = if typ == FileType::Symlink {
                0o777
            } else {
                (mode & 0o7777) as u16
            };
            let mut attr = Attr::new(typ, perm, ctx.uid, ctx.gid);
            self.inherit_acl(tx, &pattr, &mut attr, perm, umask as u16, &mut made)?;
            if pattr.mode & 0o2000 != 0 {
                // A setgid directory passes its group on, and its setgid bit to subdirs.
                attr.gid = pattr.gid;
                if typ == FileType::Directory {
                    attr.mode |= 0o2000;
                } else if ctx.uid != 0 && !ctx.in_group(pattr.gid) && ctx.check_permission {
                    attr.mode &= !0o2000;
                }
            }
            attr.parent = parent;
            attr.rdev = rdev;
            match typ {
                FileType::Directory => {
                    attr.nlink = 2;
                    attr.length = 4 << 10;
                }
                FileType::Symlink => {
                    attr.length = target.len() as u64;
                    tx.set(&keys::symlink(ino), target)?;
                }
                _ => {}
            }
            put_attr(tx, ino, &attr)?;
            tx.set(&keys::dentry(parent, name), &encode_entry(typ, ino))?;
            let is_dir = typ == FileType::Directory;
            if is_dir {
                pattr.nlink += 1;
            }
            if self.dir_changed(parent, &mut pattr, attr.ctime, is_dir, attempt) {
                put_attr(tx, parent, &pattr)?;
            }
            self.update_usage(tx, space, 1)?;
            Ok((ino, attr))
        })?;
        self.remember_rules(made);
        // Kept as written, so that a stat of what this client made costs nothing.
        self.cache
            .keep_own_entry(since, parent, name, created.0, &created.1);
        Ok(created)
    }

    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        self.kv.read(|tx| match tx.get(&keys::symlink(ino))? {
            Some(t) => Ok(t),
            None => {
                let a = get_attr(tx, ino)?;
                if a.typ != FileType::Symlink {
                    return sys(EINVAL);
                }
                Err(Error::Corrupt(format!("symlink {ino} has no target")))
            }
        })
    }

    /// Adds a name for an existing non-directory inode.
    pub fn link(&self, ctx: &Ctx, ino: Ino, parent: Ino, name: &[u8]) -> Result<Attr> {
        check_name(name)?;
        check_not_trash_name(parent, name)?;
        if is_trash(parent) {
            return sys(EPERM);
        }
        let mut attempt = 0;
        self.kv.txn(|tx| {
            attempt += 1;
            let (mut pattr, existing, more) = dir_and_entry(tx, parent, name, &[keys::attr(ino)])?;
            if removed(&pattr) {
                return sys(ENOENT);
            }
            self.check_access(tx, ctx, &pattr, 3)?;
            let mut attr = attr_of(more.into_iter().next().flatten())?;
            if attr.typ == FileType::Directory {
                return sys(EPERM);
            }
            if attr.nlink == 0 {
                return sys(ENOENT);
            }
            if existing.is_some() {
                return sys(EEXIST);
            }
            let (space, names) = Self::name_usage(&attr);
            let domains = self.quota_domains(tx, parent)?;
            self.charge(tx, &domains, space, names)?;
            if attr.parent != 0 {
                tx.incr_by(&keys::parent(ino, attr.parent), 1)?;
                attr.parent = 0;
            }
            tx.incr_by(&keys::parent(ino, parent), 1)?;
            let now = Time::now();
            attr.nlink += 1;
            attr.ctime = now;
            put_attr(tx, ino, &attr)?;
            tx.set(&keys::dentry(parent, name), &encode_entry(attr.typ, ino))?;
            if self.dir_changed(parent, &mut pattr, now, false, attempt) {
                put_attr(tx, parent, &pattr)?;
            }
            Ok(attr)
        })
    }

    /// Drops one name (in `parent`) of a non-directory inode, inside a transaction.
    pub(crate) fn drop_link(
        &self,
        tx: &mut dyn KvTxn,
        parent: Ino,
        ino: Ino,
        attr: &mut Attr,
        now: Time,
        pre: &mut Prefetched,
    ) -> Result<Dropped> {
        self.release_name(tx, parent, attr)?;
        if attr.parent == 0 {
            let k = keys::parent(ino, parent);
            if tx.incr_by(&k, -1)? <= 0 {
                tx.delete(&k)?;
            }
        }
        attr.nlink = attr.nlink.saturating_sub(1);
        attr.ctime = now;
        if attr.nlink > 0 {
            put_attr(tx, ino, attr)?;
            return Ok(Dropped::StillLinked);
        }
        if attr.typ == FileType::File && self.open_files.lock().contains_key(&ino) {
            // Noted before the commit (an attempt that does not commit leaves a note that
            // only costs its close a read).
            self.sustained_here.lock().insert(ino);
            put_attr(tx, ino, attr)?;
            tx.set(&keys::sustained(self.session_id(), ino), &[1])?;
            return Ok(Dropped::Sustained);
        }
        Ok(Dropped::Deleted(self.remove_inode(tx, ino, attr, pre)?))
    }

    /// Deletes an inode with no names left. A small file's data (one chunk of a few
    /// slices) is released at once; a larger file's is queued under `D`.
    pub(crate) fn remove_inode(
        &self,
        tx: &mut dyn KvTxn,
        ino: Ino,
        attr: &Attr,
        pre: &mut Prefetched,
    ) -> Result<FileData> {
        // Readers on other clients may have the file open: it waits for them.
        let kept = attr.typ == FileType::File && self.others_alive();
        if kept {
            let mut gone = attr.clone();
            gone.nlink = 0;
            put_attr(tx, ino, &gone)?;
        } else {
            tx.delete(&keys::attr(ino))?;
        }
        if attr.typ == FileType::Symlink {
            tx.delete(&keys::symlink(ino))?;
        }
        // Its xattrs and, for a file, its first two chunks (one means a small file), in
        // one batch, unless read in advance.
        let (xattrs, chunks) = match pre.take(ino) {
            Some(known) => known,
            None => {
                pre.add(Prefetched::read(tx, &[(ino, attr.typ)])?);
                pre.take(ino).unwrap_or_default()
            }
        };
        for (k, _) in xattrs {
            tx.delete(&k)?;
        }
        let data = if kept {
            tx.set(
                &keys::del_file(ino, attr.length),
                &Time::now().sec.to_be_bytes(),
            )?;
            FileData::Kept
        } else if attr.typ == FileType::File {
            match crate::data::release_small_file(tx, RELEASE_INLINE_SLICES, &chunks, pre)? {
                Some(freed) => FileData::Freed(freed),
                None => {
                    tx.set(
                        &keys::del_file(ino, attr.length),
                        &Time::now().sec.to_be_bytes(),
                    )?;
                    FileData::Queued(attr.length)
                }
            }
        } else {
            FileData::NoData
        };
        let space = if attr.typ == FileType::File {
            space_of(attr.length)
        } else {
            space_of(0)
        };
        self.update_usage(tx, -space, -1)?;
        Ok(data)
    }

    pub(crate) fn after_drop(&self, ino: Ino, d: Dropped) -> Result<()> {
        match d {
            Dropped::Deleted(data) => self.after_remove(ino, data),
            Dropped::StillLinked | Dropped::Sustained => Ok(()),
        }
    }

    /// Finishes what [`Meta::remove_inode`] left of a file's data, once it committed.
    pub(crate) fn after_remove(&self, ino: Ino, data: FileData) -> Result<()> {
        match data {
            FileData::NoData => Ok(()),
            FileData::Freed(slices) => {
                self.delete_slices(slices);
                Ok(())
            }
            FileData::Queued(len) => self.delete_file_data(ino, len),
            FileData::Kept => Ok(()),
        }
    }

    pub fn unlink(&self, ctx: &Ctx, parent: Ino, name: &[u8]) -> Result<()> {
        self.unlink_as(ctx, parent, name, true)
    }

    /// [`Meta::unlink`]; with `to_trash` false the trash is skipped.
    pub(crate) fn unlink_as(
        &self,
        ctx: &Ctx,
        parent: Ino,
        name: &[u8],
        to_trash: bool,
    ) -> Result<()> {
        // The inode the name had when this client last saw it (the kernel looked it up
        // just before): its attributes are read with the entry, in the same round trip,
        // and used when the entry still names it.
        let guess = self.cache.entry(parent, name).map(|(ino, _)| ino);
        let mut outcome = self.unlink_entries(ctx, parent, &[(name, guess)], to_trash)?;
        outcome.pop().unwrap_or(Ok(()))
    }

    /// Removes the non-directory entries `names` of `parent` in one transaction, each
    /// given with the inode it is thought to name (its attributes are then read with
    /// the entries, in one round trip). Returns the outcome of each entry (a name that
    /// is gone, a directory, or a sticky directory's refusal fail that entry only); an
    /// error of the whole (rights on the parent, the engine) changes nothing.
    pub(crate) fn unlink_entries(
        &self,
        ctx: &Ctx,
        parent: Ino,
        names: &[(&[u8], Option<Ino>)],
        to_trash: bool,
    ) -> Result<Vec<Result<()>>> {
        for (name, _) in names {
            if name.len() > MAX_NAME {
                return sys(ENAMETOOLONG);
            }
            check_not_trash_name(parent, name)?;
        }
        if is_trash(parent) && ctx.uid != 0 {
            return sys(EPERM);
        }
        let hour = if to_trash {
            self.trash_for(parent)?
        } else {
            None
        };
        let mut attempt = 0;
        let mut asked = vec![keys::attr(parent)];
        asked.extend(names.iter().map(|(n, _)| keys::dentry(parent, n)));
        asked.extend(names.iter().filter_map(|(_, g)| g.map(keys::attr)));
        let gone: Vec<(Ino, &[u8])> = names.iter().map(|(n, _)| (parent, *n)).collect();
        // The entries are gone once this commits, as the cache then has it.
        let restoring = self.cache.restoring(&gone);
        let (outcomes, dropped) = self.kv.txn(|tx| {
            attempt += 1;
            let mut got = tx.gets(&asked)?.into_iter();
            let mut pattr = dir_of(got.next().flatten())?;
            self.check_access(tx, ctx, &pattr, 3)?;
            let entries = (0..names.len())
                .map(|_| got.next().flatten().map(|v| decode_entry(&v)).transpose())
                .collect::<Result<Vec<_>>>()?;
            let mut values: HashMap<Ino, Value> =
                names.iter().filter_map(|(_, g)| *g).zip(got).collect();
            // Attributes of entries that name another inode than thought: one more read.
            let unguessed: Vec<Ino> = entries
                .iter()
                .flatten()
                .filter(|(typ, ino)| *typ != FileType::Directory && !values.contains_key(ino))
                .map(|(_, ino)| *ino)
                .collect();
            if !unguessed.is_empty() {
                let keys: Vec<Vec<u8>> = unguessed.iter().map(|&i| keys::attr(i)).collect();
                values.extend(unguessed.into_iter().zip(tx.gets(&keys)?));
            }
            // Decoded once, and kept as this transaction changes them: two names of one
            // file may go in one batch.
            let mut attrs: HashMap<Ino, Option<Attr>> = HashMap::with_capacity(values.len());
            for (ino, v) in values {
                attrs.insert(ino, v.map(|v| Attr::decode(&v)).transpose()?);
            }
            // What deleting the inodes that lose their last name needs, in one go where
            // reads cost round trips (an engine inside this process reads each as it
            // goes: measured, reading ahead there made `rmr` of 100,000 files on SQLite
            // take 4.4 s instead of 2.4 s).
            let ahead = !self.kv.embedded();
            let doomed: Vec<(Ino, FileType)> = entries
                .iter()
                .flatten()
                .filter(|_| ahead)
                .filter_map(|&(typ, ino)| {
                    let attr = attrs.get(&ino)?.as_ref()?;
                    let deleted = typ != FileType::Directory
                        && attr.nlink <= 1
                        && Self::keeps_in_trash(hour, attr).is_none();
                    deleted.then_some((ino, typ))
                })
                .collect();
            let mut pre = Prefetched::read(tx, &doomed)?;
            let now = Time::now();
            let (mut outcomes, mut dropped) = (Vec::with_capacity(names.len()), Vec::new());
            for ((name, _), entry) in names.iter().zip(entries) {
                let outcome = match entry {
                    None => sys(ENOENT),
                    Some((FileType::Directory, _)) => sys(EISDIR),
                    Some((_, ino)) => match attrs.get(&ino).cloned().flatten() {
                        // A dangling entry (or a name of a file this batch deleted).
                        None => {
                            tx.delete(&keys::dentry(parent, name))?;
                            Ok(())
                        }
                        Some(mut attr) => match check_sticky(ctx, &pattr, &attr) {
                            Err(e) => Err(e),
                            Ok(()) => {
                                tx.delete(&keys::dentry(parent, name))?;
                                match Self::keeps_in_trash(hour, &attr) {
                                    Some(hour) => self.move_to_trash(
                                        tx, hour, parent, name, ino, &mut attr, now,
                                    )?,
                                    None => {
                                        let d = self
                                            .drop_link(tx, parent, ino, &mut attr, now, &mut pre)?;
                                        let gone = matches!(d, Dropped::Deleted(_));
                                        dropped.push((ino, d));
                                        attrs.insert(ino, (!gone).then(|| attr.clone()));
                                    }
                                }
                                Ok(())
                            }
                        },
                    },
                };
                outcomes.push(outcome);
            }
            if outcomes.iter().any(|o| o.is_ok())
                && self.dir_changed(parent, &mut pattr, now, false, attempt)
            {
                put_attr(tx, parent, &pattr)?;
            }
            Ok((outcomes, dropped))
        })?;
        drop(restoring);
        for (ino, d) in dropped {
            self.after_drop(ino, d)?;
        }
        Ok(outcomes)
    }

    pub fn rmdir(&self, ctx: &Ctx, parent: Ino, name: &[u8]) -> Result<()> {
        self.rmdir_as(ctx, parent, name, true)
    }

    /// [`Meta::rmdir`]; with `to_trash` false the trash is skipped.
    pub(crate) fn rmdir_as(
        &self,
        ctx: &Ctx,
        parent: Ino,
        name: &[u8],
        to_trash: bool,
    ) -> Result<()> {
        match name {
            b"." => return sys(EINVAL),
            b".." => return sys(ENOTEMPTY),
            _ if name.len() > MAX_NAME => return sys(ENAMETOOLONG),
            _ => {}
        }
        check_not_trash_name(parent, name)?;
        // The trash's hour directories go only when they expire.
        if parent == TRASH_INODE || is_trash(parent) && ctx.uid != 0 {
            return sys(EPERM);
        }
        let hour = if to_trash {
            self.trash_for(parent)?
        } else {
            None
        };
        // The entry is gone once this commits, as the cache then has it.
        let _restoring = self.cache.restoring(&[(parent, name)]);
        self.kv.txn(|tx| {
            let (mut pattr, entry, _) = dir_and_entry(tx, parent, name, &[])?;
            self.check_access(tx, ctx, &pattr, 3)?;
            let (typ, ino) = entry.ok_or(Error::Sys(ENOENT))?;
            if typ != FileType::Directory {
                return sys(ENOTDIR);
            }
            let attr = get_attr(tx, ino)?;
            check_sticky(ctx, &pattr, &attr)?;
            let dp = keys::dentry_prefix(ino);
            if tx.exists(&dp, &prefix_end(&dp))? {
                return sys(ENOTEMPTY);
            }
            let now = Time::now();
            tx.delete(&keys::dentry(parent, name))?;
            self.drop_quota_of_removed(tx, ino)?;
            match Self::keeps_in_trash(hour, &attr) {
                Some(hour) => {
                    let mut attr = attr;
                    self.move_to_trash(tx, hour, parent, name, ino, &mut attr, now)?;
                }
                None => {
                    self.release_name(tx, parent, &attr)?;
                    self.remove_inode(tx, ino, &attr, &mut Prefetched::default())?;
                }
            }
            pattr.nlink = pattr.nlink.saturating_sub(1);
            pattr.mtime = now;
            pattr.ctime = now;
            put_attr(tx, parent, &pattr)
        })
    }

    /// Whether directory `ino` is `ancestor` or lies below it.
    fn is_within(tx: &mut dyn KvTxn, mut ino: Ino, ancestor: Ino) -> Result<bool> {
        for _ in 0..100_000 {
            if ino == ancestor {
                return Ok(true);
            }
            if ino == ROOT_INODE {
                return Ok(false);
            }
            let a = get_attr(tx, ino)?;
            if a.parent == 0 || a.parent == ino {
                return Ok(false);
            }
            ino = a.parent;
        }
        Err(Error::Corrupt(format!("directory loop above inode {ino}")))
    }

    /// Renames (or with RENAME_EXCHANGE swaps) an entry. Returns the moved inode and its
    /// attributes. A name it replaces goes to the trash as an unlink would send it.
    pub fn rename(
        &self,
        ctx: &Ctx,
        psrc: Ino,
        nsrc: &[u8],
        pdst: Ino,
        ndst: &[u8],
        flags: u32,
    ) -> Result<(Ino, Attr)> {
        self.rename_entry(ctx, psrc, nsrc, pdst, ndst, flags, false)
    }

    /// [`Meta::rename`], or with `restore` the move of an entry out of the trash
    /// (`nsrc` of the hour directory `psrc`) to its original place, which may be a
    /// directory still in the trash.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rename_entry(
        &self,
        ctx: &Ctx,
        psrc: Ino,
        nsrc: &[u8],
        pdst: Ino,
        ndst: &[u8],
        flags: u32,
        restore: bool,
    ) -> Result<(Ino, Attr)> {
        check_not_trash_name(psrc, nsrc)?;
        check_not_trash_name(pdst, ndst)?;
        if is_trash(pdst) || is_trash(psrc) && ctx.uid != 0 {
            return sys(EPERM);
        }
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
            || flags & RENAME_NOREPLACE != 0 && flags & RENAME_EXCHANGE != 0
        {
            return sys(EINVAL);
        }
        for n in [nsrc, ndst] {
            if n == b"." || n == b".." {
                return sys(if n == b"." { EINVAL } else { ENOTEMPTY });
            }
            check_name(n)?;
        }
        let exchange = flags & RENAME_EXCHANGE != 0;
        let hour = if exchange {
            None
        } else {
            self.trash_for(pdst)?
        };
        // The trash's hour directories keep no link counts or times (see `trash.rs`).
        let src_kept = !is_trash(psrc);
        // Trees that move between quotas, summed before the transaction.
        let mut moves = vec![(psrc, nsrc, pdst)];
        if exchange {
            moves.push((pdst, ndst, psrc));
        }
        let trees = self.moved_trees(ctx, &moves)?;
        let mut attempt = 0;
        let since = self.cache.seq();
        // The old name is gone once this commits, and the new one is kept below; an
        // exchange leaves both directories to be read again.
        let restoring = (!exchange).then(|| self.cache.restoring(&[(psrc, nsrc), (pdst, ndst)]));
        let (ino, attr, dropped) = self.kv.txn(|tx| {
            attempt += 1;
            // Both directories and both entries in one round trip, both inodes in another.
            let mut more = vec![keys::dentry(pdst, ndst)];
            if pdst != psrc {
                more.push(keys::attr(pdst));
            }
            let (mut sp, src, more) = dir_and_entry(tx, psrc, nsrc, &more)?;
            let mut more = more.into_iter();
            let dst = more
                .next()
                .flatten()
                .map(|v| decode_entry(&v))
                .transpose()?;
            let mut dp = match more.next() {
                None => sp.clone(),
                Some(None) => return sys(ENOENT),
                Some(Some(v)) => match Attr::decode(&v)? {
                    a if a.typ != FileType::Directory => return sys(ENOTDIR),
                    a => a,
                },
            };
            if dp.nlink == 0 || !restore && removed(&dp) {
                return sys(ENOENT);
            }
            let (sp_nlink, dp_nlink) = (sp.nlink, dp.nlink);
            self.check_access(tx, ctx, &sp, 3)?;
            self.check_access(tx, ctx, &dp, 3)?;
            let (styp, sino) = src.ok_or(Error::Sys(ENOENT))?;
            let mut inodes = vec![keys::attr(sino)];
            inodes.extend(dst.map(|(_, dino)| keys::attr(dino)));
            let mut inodes = tx.gets(&inodes)?.into_iter();
            let mut sattr = attr_of(inodes.next().flatten())?;
            check_sticky(ctx, &sp, &sattr)?;
            if psrc == pdst && nsrc == ndst {
                return Ok((sino, sattr, None));
            }
            if exchange && dst.is_none() {
                return sys(ENOENT);
            }
            if flags & RENAME_NOREPLACE != 0 && dst.is_some() {
                return sys(EEXIST);
            }
            if styp == FileType::Directory && psrc != pdst && Self::is_within(tx, pdst, sino)? {
                return sys(EINVAL);
            }
            let now = Time::now();
            let mut dropped = None;
            if let Some((dtyp, dino)) = dst {
                if dino == sino && !exchange {
                    // Two names of one file: POSIX says do nothing.
                    return Ok((sino, sattr, None));
                }
                let mut dattr = attr_of(inodes.next().flatten())?;
                check_sticky(ctx, &dp, &dattr)?;
                if exchange {
                    if dtyp == FileType::Directory
                        && psrc != pdst
                        && Self::is_within(tx, psrc, dino)?
                    {
                        return sys(EINVAL);
                    }
                    tx.set(&keys::dentry(psrc, nsrc), &encode_entry(dtyp, dino))?;
                    dattr.ctime = now;
                    let usage = Self::moved_usage(dino, &dattr, &trees);
                    self.move_parent(tx, dino, &mut dattr, pdst, psrc, usage)?;
                    put_attr(tx, dino, &dattr)?;
                    if psrc != pdst && dtyp == FileType::Directory {
                        dp.nlink -= 1;
                        sp.nlink += 1;
                    }
                } else {
                    match (styp == FileType::Directory, dtyp == FileType::Directory) {
                        (false, true) => return sys(EISDIR),
                        (true, false) => return sys(ENOTDIR),
                        _ => {}
                    }
                    if dtyp == FileType::Directory {
                        let p = keys::dentry_prefix(dino);
                        if tx.exists(&p, &prefix_end(&p))? {
                            return sys(ENOTEMPTY);
                        }
                        dp.nlink -= 1;
                    }
                    if dtyp == FileType::Directory {
                        self.drop_quota_of_removed(tx, dino)?;
                    }
                    match Self::keeps_in_trash(hour, &dattr) {
                        Some(hour) => {
                            self.move_to_trash(tx, hour, pdst, ndst, dino, &mut dattr, now)?;
                        }
                        None if dtyp == FileType::Directory => {
                            self.release_name(tx, pdst, &dattr)?;
                            self.remove_inode(tx, dino, &dattr, &mut Prefetched::default())?;
                        }
                        None => {
                            dropped = Some((
                                dino,
                                self.drop_link(
                                    tx,
                                    pdst,
                                    dino,
                                    &mut dattr,
                                    now,
                                    &mut Prefetched::default(),
                                )?,
                            ));
                        }
                    }
                }
            }
            if !exchange {
                tx.delete(&keys::dentry(psrc, nsrc))?;
            }
            tx.set(&keys::dentry(pdst, ndst), &encode_entry(styp, sino))?;
            sattr.ctime = now;
            let usage = Self::moved_usage(sino, &sattr, &trees);
            self.move_parent(tx, sino, &mut sattr, psrc, pdst, usage)?;
            put_attr(tx, sino, &sattr)?;
            if psrc != pdst && styp == FileType::Directory {
                sp.nlink -= 1;
                dp.nlink += 1;
            }
            if psrc == pdst && src_kept {
                // One directory: the link-count changes cancel out; keep `dp`'s view.
                let nlink_changed = dp.nlink != dp_nlink;
                if self.dir_changed(pdst, &mut dp, now, nlink_changed, attempt) {
                    put_attr(tx, pdst, &dp)?;
                }
            } else if psrc != pdst {
                let (s_changed, d_changed) = (sp.nlink != sp_nlink, dp.nlink != dp_nlink);
                if src_kept && self.dir_changed(psrc, &mut sp, now, s_changed, attempt) {
                    put_attr(tx, psrc, &sp)?;
                }
                if self.dir_changed(pdst, &mut dp, now, d_changed, attempt) {
                    put_attr(tx, pdst, &dp)?;
                }
            }
            Ok((sino, sattr, dropped))
        })?;
        if restoring.is_some() {
            self.cache.keep_moved_entry(since, pdst, ndst, ino, &attr);
        }
        drop(restoring);
        if let Some((dino, d)) = dropped {
            self.after_drop(dino, d)?;
        }
        Ok((ino, attr))
    }

    /// Records that one name of `ino` moved from directory `from` to `to`, and moves
    /// `usage` (the name's, its tree's for a directory) between their quotas.
    pub(crate) fn move_parent(
        &self,
        tx: &mut dyn KvTxn,
        ino: Ino,
        attr: &mut Attr,
        from: Ino,
        to: Ino,
        usage: (i64, i64),
    ) -> Result<()> {
        if from == to {
            return Ok(());
        }
        self.move_usage(tx, from, to, usage)?;
        if attr.typ == FileType::Directory {
            self.dir_moved(ino, to);
        }
        if attr.parent != 0 {
            attr.parent = to;
        } else {
            let k = keys::parent(ino, from);
            if tx.incr_by(&k, -1)? <= 0 {
                tx.delete(&k)?;
            }
            tx.incr_by(&keys::parent(ino, to), 1)?;
        }
        Ok(())
    }

    /// Whether a directory should be listed in one call (an unbounded `limit`) rather
    /// than page by page: on an engine that packs each directory into one structure
    /// (Redis), every page would cost the whole directory.
    pub fn lists_whole(&self) -> bool {
        self.kv.packs_domains()
    }

    /// Up to `limit` entries of a directory after the name `after` (exclusive), in name
    /// order, with attributes (read in one batch) when `plus`; an entry whose inode is
    /// gone (removed between the two reads) then has none, and is still counted in the
    /// page, so that a short page always means the end. "." and ".." are not
    /// included. While the change feed is live, a directory's whole listing is kept and
    /// pages are cut from it (see `cache`).
    pub fn readdir(
        &self,
        ctx: &Ctx,
        ino: Ino,
        after: Option<&[u8]>,
        limit: usize,
        plus: bool,
    ) -> Result<Vec<Entry>> {
        // Like lookups, only where the kernel checked permissions.
        if self.cache.live() && !ctx.check_permission {
            if let Some(listing) = self.listing(ino, after.is_none(), limit)? {
                return self.page_of(&listing, after, limit, plus);
            }
        }
        self.kv.read(|tx| {
            let attr = dir_attr(tx, ino)?;
            self.check_access(tx, ctx, &attr, 4)?;
            let prefix = keys::dentry_prefix(ino);
            let begin = match after {
                Some(name) => {
                    let mut b = keys::dentry(ino, name);
                    b.push(0);
                    b
                }
                None => prefix.clone(),
            };
            let rows = tx.scan(&begin, &prefix_end(&prefix), limit)?;
            let mut entries = Vec::with_capacity(rows.len());
            for (k, v) in rows {
                let (typ, child) = decode_entry(&v)?;
                entries.push(Entry {
                    ino: child,
                    name: k[prefix.len()..].to_vec(),
                    typ,
                    attr: None,
                });
            }
            if plus && !entries.is_empty() {
                let keys: Vec<Vec<u8>> = entries.iter().map(|e| keys::attr(e.ino)).collect();
                let attrs = tx.gets(&keys)?;
                for (e, a) in entries.iter_mut().zip(attrs) {
                    e.attr = a.map(|a| Attr::decode(&a)).transpose()?;
                }
            }
            Ok(entries)
        })
    }

    /// The whole listing of directory `ino` from the cache, or read and kept when
    /// `read` (at the first page) and the directory is small enough to keep. A larger
    /// directory's first [`MAX_LISTING`] entries, not kept, serve a first page of up to
    /// `limit` entries, rather than reading that page again.
    fn listing(&self, ino: Ino, read: bool, limit: usize) -> Result<Option<Listing>> {
        if let Some(listing) = self.cache.listing(ino) {
            return Ok(Some(listing));
        }
        if !read {
            return Ok(None);
        }
        let since = self.cache.seq();
        let rows = self.kv.read(|tx| {
            dir_attr(tx, ino)?;
            let prefix = keys::dentry_prefix(ino);
            Ok(tx.scan(&prefix, &prefix_end(&prefix), MAX_LISTING + 1)?)
        })?;
        let complete = rows.len() <= MAX_LISTING;
        if !complete && limit > MAX_LISTING {
            return Ok(None);
        }
        let skip = keys::dentry_prefix(ino).len();
        let listing: Listing = rows
            .into_iter()
            .take(MAX_LISTING)
            .map(|(k, v)| {
                let (typ, child) = decode_entry(&v)?;
                Ok(Listed {
                    name: k[skip..].into(),
                    ino: child,
                    typ,
                })
            })
            .collect::<Result<Vec<_>>>()?
            .into();
        if complete {
            self.cache.keep_listing(since, ino, &listing);
        }
        Ok(Some(listing))
    }

    /// The page of `listing` after `after`, with attributes when `plus`: those kept in
    /// the cache, the others read in one batch (and kept).
    fn page_of(
        &self,
        listing: &Listing,
        after: Option<&[u8]>,
        limit: usize,
        plus: bool,
    ) -> Result<Vec<Entry>> {
        let start = after.map_or(0, |a| listing.partition_point(|e| &e.name[..] <= a));
        let page = &listing[start..listing.len().min(start.saturating_add(limit))];
        let mut entries: Vec<Entry> = page
            .iter()
            .map(|e| Entry {
                ino: e.ino,
                name: e.name.to_vec(),
                typ: e.typ,
                attr: None,
            })
            .collect();
        if !plus {
            return Ok(entries);
        }
        let kept = self.cache.attrs_of(entries.iter().map(|e| e.ino));
        let missing: Vec<usize> = (0..entries.len()).filter(|&i| kept[i].is_none()).collect();
        for (e, attr) in entries.iter_mut().zip(kept) {
            e.attr = attr;
        }
        if !missing.is_empty() {
            let since = self.cache.seq();
            let keys: Vec<Vec<u8>> = missing
                .iter()
                .map(|&i| keys::attr(entries[i].ino))
                .collect();
            let read = self.kv.read(|tx| Ok(tx.gets(&keys)?))?;
            for (&i, value) in missing.iter().zip(read) {
                entries[i].attr = value.map(|v| Attr::decode(&v)).transpose()?;
            }
            let fresh = missing
                .iter()
                .filter_map(|&i| Some((entries[i].ino, entries[i].attr.as_ref()?)));
            self.cache.keep_attrs(since, fresh);
        }
        Ok(entries)
    }

    /// Records an access (a read, a listing) under `mode`; returns the new attributes
    /// when atime changed. Only an access that needs a new atime costs a write.
    pub fn touch_atime(&self, ino: Ino, mode: AtimeMode) -> Result<Option<Attr>> {
        if mode == AtimeMode::NoAtime {
            return Ok(None);
        }
        let now = Time::now();
        if !mode.needs_update(&self.get_attr(ino)?, now) {
            return Ok(None);
        }
        self.kv.txn(|tx| {
            let mut attr = get_attr(tx, ino)?;
            if !mode.needs_update(&attr, now) {
                return Ok(None);
            }
            attr.atime = now;
            put_attr(tx, ino, &attr)?;
            Ok(Some(attr))
        })
    }

    /// Changes attributes (not the length: see [`Meta::truncate`]).
    pub fn setattr(&self, ctx: &Ctx, ino: Ino, set: &SetAttr) -> Result<Attr> {
        let mut made = NewRules::new();
        let attr = self.kv.txn(|tx| {
            made.clear();
            let mut attr = get_attr(tx, ino)?;
            let now = Time::now();
            let owner = ctx.uid == 0 || ctx.uid == attr.uid;
            let mut changed = false;
            if set.uid.is_some() || set.gid.is_some() {
                let new_uid = set.uid.unwrap_or(attr.uid);
                let new_gid = set.gid.unwrap_or(attr.gid);
                if ctx.check_permission
                    && ctx.uid != 0
                    && (new_uid != attr.uid
                        || !owner
                        || (new_gid != attr.gid && !ctx.in_group(new_gid)))
                {
                    return sys(EPERM);
                }
                if ctx.check_permission && ctx.uid != 0 {
                    // chown by a non-root user clears set-user-id, and set-group-id when
                    // group-executable. (Through FUSE the kernel sends the new mode.)
                    if attr.typ != FileType::Directory {
                        attr.mode &= !0o4000;
                        if attr.mode & 0o010 != 0 {
                            attr.mode &= !0o2000;
                        }
                    }
                }
                attr.uid = new_uid;
                attr.gid = new_gid;
                changed = true;
            }
            if let Some(mode) = set.mode {
                if ctx.check_permission && !owner {
                    return sys(EPERM);
                }
                let mut m = (mode & 0o7777) as u16;
                if ctx.check_permission && ctx.uid != 0 && !ctx.in_group(attr.gid) {
                    m &= !0o2000;
                }
                attr.mode = m;
                self.chmod_acl(tx, &mut attr, m, &mut made)?;
                changed = true;
            }
            for (t, target) in [(set.atime, &mut attr.atime), (set.mtime, &mut attr.mtime)] {
                if let Some(t) = t {
                    *target = match t {
                        TimeSet::Now => now,
                        TimeSet::At(t) => t,
                    };
                    changed = true;
                }
            }
            if let Some(f) = set.flags {
                attr.flags = f;
                changed = true;
            }
            if changed {
                attr.ctime = set.ctime.unwrap_or(now);
                put_attr(tx, ino, &attr)?;
            }
            Ok(attr)
        })?;
        self.remember_rules(made);
        Ok(attr)
    }
}
