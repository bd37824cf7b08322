//! The trash: what `unlink`, `rmdir` and a replacing `rename` remove is kept for the
//! volume's `trash_days`, and so is data that truncate and compaction replace; one
//! client at a time expires both.
//!
//! The layout is JuiceFS's, so volumes and dumps move between the two. `.trash` (inode
//! [`TRASH_INODE`], mode 0555, root's) is looked up by name in the root directory but is
//! no entry of it, so walks of the tree (dump, gc, fsck) never wander into it unasked.
//! It holds one directory per UTC hour, `YYYY-MM-DD-HH` (inode `TRASH_INODE +
//! nextTrash`, made by the first removal of the hour), and a removed entry goes into
//! the current hour's directory as `<parent>-<inode>-<name>` in the removing
//! transaction, with nothing else changed: attributes, xattrs and data stay, the parent
//! becomes the hour directory. A removed directory is empty (that is what rmdir
//! removes), so `rm -rf` of a tree leaves its files and directories side by side in the
//! hour directory, and [`Meta::restore_hour`] rebuilds the tree from the parents their
//! names carry. The hour directories' link counts are not kept (as in JuiceFS): every
//! rmdir would otherwise write the same attribute.
//!
//! Nectar differs from JuiceFS in one point: only the last name of a file goes to the
//! trash. A file with other names just loses the one removed (its data stays reachable
//! through the others), so link counts stay what POSIX says; JuiceFS keeps the removed
//! name in the trash as one more link of the file.
//!
//! Data that truncate and compaction replace keeps its slice references as *delayed
//! slices*: `L<time><id>` keys (time and the first slice's id big-endian) whose value
//! lists the slices (id 8 bytes, size 4, big-endian), as JuiceFS stores them.
//!
//! Rules: only root removes or renames entries out of the trash (a rename out is a
//! restore); nothing is created in it or moved into it by hand; nothing is created in a
//! directory that was removed into it; files in it are not truncated. Entries expire when
//! their hour ended `trash_days` days ago: [`Meta::cleanup_trash_if_due`], run hourly by
//! every client with background jobs, lets the one client that moves the
//! `lastCleanupTrash` counter forward remove them with [`Meta::expire_trash`] and the
//! delayed slices with [`Meta::expire_delayed_slices`].

use crate::error::{sys, Error, Result};
use crate::keys;
use crate::kv::{prefix_end, KvTxn};
use crate::meta::{space_of, Meta};
use crate::namespace::{encode_entry, put_attr, RENAME_NOREPLACE};
use crate::types::*;
use libc::{EEXIST, ENOENT, EPERM};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counter holding when the trash was last cleaned (seconds), as JuiceFS names it.
const LAST_CLEANUP_TRASH: &str = "lastCleanupTrash";
/// Delayed slices expired per transaction.
const DELAYED_PER_TXN: usize = 32;

/// The name an entry gets in the trash: `<parent>-<inode>-<name>`, cut to the longest
/// name allowed (JuiceFS cuts it the same way).
pub(crate) fn trash_name(parent: Ino, ino: Ino, name: &[u8]) -> Vec<u8> {
    let mut n = format!("{parent}-{ino}-").into_bytes();
    n.extend_from_slice(name);
    n.truncate(MAX_NAME);
    n
}

/// Reads a trash entry's name back: the original parent and name (the name as kept,
/// maybe cut).
pub fn parse_trash_name(n: &[u8]) -> Option<(Ino, &[u8])> {
    let mut parts = n.splitn(3, |&b| b == b'-');
    let parent = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    std::str::from_utf8(parts.next()?)
        .ok()?
        .parse::<Ino>()
        .ok()?;
    Some((parent, parts.next()?))
}

/// What [`Meta::restore_hour`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RestoreReport {
    /// Entries moved back: under a directory of the same hour (the tree rebuilt), or
    /// with `put_back` into their original place.
    pub restored: u64,
    /// Entries whose parent is no directory of this hour, left for `--put-back`.
    pub need_put_back: u64,
    /// Entries whose original name is taken again.
    pub conflicts: u64,
    /// Entries that could not be moved (a name that is not a trash entry's, a parent
    /// that is gone).
    pub failed: u64,
}

/// What [`Meta::expire_trash`] and [`Meta::expire_delayed_slices`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TrashCleanup {
    pub entries: u64,
    pub hours: u64,
    pub delayed_slices: u64,
}

impl Meta {
    /// The hour directory that takes what is removed from `parent` now, made on first
    /// use; `None` when the trash is off or `parent` is in it (removing from the trash
    /// deletes).
    pub(crate) fn trash_for(&self, parent: Ino) -> Result<Option<Ino>> {
        if is_trash(parent) || self.trash_days() == 0 {
            return Ok(None);
        }
        let hour = Time::now().sec.div_euclid(3600);
        if let Some((cached, ino)) = *self.trash_hour.lock() {
            if cached == hour {
                return Ok(Some(ino));
            }
        }
        let ino = self.hour_dir(&Utc::from_secs(hour * 3600).hour_name())?;
        *self.trash_hour.lock() = Some((hour, ino));
        Ok(Some(ino))
    }

    /// The inode of the trash's directory `hour`, made (with the trash itself, when the
    /// volume has none yet) if it does not exist.
    fn hour_dir(&self, hour: &str) -> Result<Ino> {
        let entry = keys::dentry(TRASH_INODE, hour.as_bytes());
        let found = |v: Option<Vec<u8>>| -> Result<Option<Ino>> {
            v.map(|v| crate::namespace::decode_entry(&v).map(|e| e.1))
                .transpose()
        };
        if let Some(ino) = found(self.kv.read(|tx| Ok(tx.get(&entry)?))?)? {
            return Ok(ino);
        }
        self.kv.txn(|tx| {
            if let Some(ino) = found(tx.get(&entry)?)? {
                return Ok(ino);
            }
            let mut trash = match tx.get(&keys::attr(TRASH_INODE))? {
                Some(v) => Attr::decode(&v)?,
                None => trash_root(),
            };
            let ino = TRASH_INODE + tx.incr_by(&keys::counter("nextTrash"), 1)? as u64;
            let mut attr = Attr::new(FileType::Directory, 0o555, 0, 0);
            attr.nlink = 2;
            attr.length = 4 << 10;
            attr.parent = TRASH_INODE;
            put_attr(tx, ino, &attr)?;
            tx.set(&entry, &encode_entry(FileType::Directory, ino))?;
            trash.nlink += 1;
            trash.mtime = attr.mtime;
            trash.ctime = attr.mtime;
            put_attr(tx, TRASH_INODE, &trash)?;
            self.update_usage(tx, space_of(0), 1)?;
            Ok(ino)
        })
    }

    /// Makes the trash directory if the volume has none (at format time when the
    /// trash is on, as JuiceFS does, so `.trash` is there before anything is removed).
    pub(crate) fn ensure_trash(tx: &mut dyn KvTxn) -> Result<()> {
        if tx.get(&keys::attr(TRASH_INODE))?.is_none() {
            put_attr(tx, TRASH_INODE, &trash_root())?;
        }
        Ok(())
    }

    /// Inside a removing transaction: moves the entry `name` of `parent`, naming `ino`
    /// (of attributes `attr`, written here), into the trash's directory `hour`. The
    /// caller deleted the old entry.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn move_to_trash(
        &self,
        tx: &mut dyn KvTxn,
        hour: Ino,
        parent: Ino,
        name: &[u8],
        ino: Ino,
        attr: &mut Attr,
        now: Time,
    ) -> Result<()> {
        tx.set(
            &keys::dentry(hour, &trash_name(parent, ino, name)),
            &encode_entry(attr.typ, ino),
        )?;
        // Only files and empty directories go to the trash: a name's usage moves.
        self.move_parent(tx, ino, attr, parent, hour, Self::name_usage(attr))?;
        attr.ctime = now;
        put_attr(tx, ino, attr)
    }

    /// Whether a removal of the node `attr` into trash `hour` keeps it there: not when
    /// the trash is off, the node asks to skip it, or other names of it remain.
    pub(crate) fn keeps_in_trash(hour: Option<Ino>, attr: &Attr) -> Option<Ino> {
        hour.filter(|_| {
            attr.flags & FLAG_SKIP_TRASH == 0
                && (attr.typ == FileType::Directory || attr.nlink <= 1)
        })
    }

    /// Marks a node to skip the trash when it is removed ([`FLAG_SKIP_TRASH`]).
    pub fn mark_skip_trash(&self, ino: Ino) -> Result<()> {
        self.kv.txn(|tx| {
            let mut attr = crate::namespace::get_attr(tx, ino)?;
            if attr.flags & FLAG_SKIP_TRASH == 0 {
                attr.flags |= FLAG_SKIP_TRASH;
                put_attr(tx, ino, &attr)?;
            }
            Ok(())
        })
    }

    /// Inside a transaction that replaces data: drops the references `slices` hold,
    /// returning those that lost their last one; with the trash on, keeps them instead
    /// as delayed slices, released when the trash time is over.
    pub(crate) fn release_replaced(
        &self,
        tx: &mut dyn KvTxn,
        slices: &[Slice],
    ) -> Result<Vec<(u64, u32)>> {
        let kept: Vec<&Slice> = slices.iter().filter(|s| s.id != 0).collect();
        if kept.is_empty() {
            return Ok(Vec::new());
        }
        if self.trash_days() > 0 {
            let mut value = Vec::with_capacity(kept.len() * 12);
            for s in &kept {
                value.extend_from_slice(&s.id.to_be_bytes());
                value.extend_from_slice(&s.size.to_be_bytes());
            }
            // Appended: two replacements in one second may start with the same slice.
            tx.append(&keys::delayed_slices(Time::now().sec, kept[0].id), &value)?;
            return Ok(Vec::new());
        }
        let mut freed = Vec::new();
        for s in kept {
            freed.extend(crate::data::deref_slice(tx, s)?);
        }
        Ok(freed)
    }

    /// Claims this hour's cleanup of the trash for this client (one client per volume
    /// at a time: the one whose transaction moves `lastCleanupTrash` forward), then
    /// expires what is due. `None` when another client cleaned within the last
    /// 54 minutes, or the trash is off and empty.
    pub fn cleanup_trash_if_due(&self, now: i64, threads: usize) -> Result<Option<TrashCleanup>> {
        let days = self.trash_days();
        if days == 0 && !self.trash_exists()? {
            return Ok(None);
        }
        if !self.claim_periodic(LAST_CLEANUP_TRASH, now, 3600 * 9 / 10)? {
            return Ok(None);
        }
        // An hour goes when its last entry is `days` old: when it ended that long ago.
        let edge = now - i64::from(days) * 86_400;
        let mut done = self.expire_trash(edge - 3600, threads, &AtomicU64::new(0))?;
        done.delayed_slices = self.expire_delayed_slices(edge)?;
        Ok(Some(done))
    }

    /// Moves the counter `name` (seconds) to `now` if it is at least `interval` behind;
    /// true when this call moved it. Clients racing for a periodic job run it once.
    pub fn claim_periodic(&self, name: &str, now: i64, interval: i64) -> Result<bool> {
        let key = keys::counter(name);
        self.kv.txn(|tx| {
            let last = tx
                .get(&key)?
                .map(|v| crate::kv::parse_counter(&v))
                .transpose()?
                .unwrap_or(0);
            if now - last < interval {
                return Ok(false);
            }
            tx.set(&key, &now.to_le_bytes())?;
            Ok(true)
        })
    }

    /// Whether the volume has a trash directory (made at format time when the trash is
    /// on, or brought by a dump).
    pub fn trash_exists(&self) -> Result<bool> {
        match self.get_attr(TRASH_INODE) {
            Ok(_) => Ok(true),
            Err(Error::Sys(ENOENT)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The nodes the root lists besides its entries: `.trash`, once the volume has one
    /// (as JuiceFS lists it).
    pub fn internal_entries(&self) -> Result<Vec<Entry>> {
        Ok(if self.trash_exists()? {
            vec![Entry {
                ino: TRASH_INODE,
                name: TRASH_NAME.to_vec(),
                typ: FileType::Directory,
                attr: None,
            }]
        } else {
            Vec::new()
        })
    }

    /// The trash's hour directories, by name, with their inodes (names that are no
    /// hour are left out).
    pub fn trash_hours(&self) -> Result<Vec<(String, Ino)>> {
        if !self.trash_exists()? {
            return Ok(Vec::new());
        }
        let entries = self.readdir(&Ctx::root(), TRASH_INODE, None, usize::MAX, false)?;
        Ok(entries
            .into_iter()
            .filter_map(|e| {
                let name = String::from_utf8(e.name).ok()?;
                Utc::parse_hour(&name)?;
                Some((name, e.ino))
            })
            .collect())
    }

    /// Removes, for good, every hour directory of the trash whose hour began before
    /// `edge` (seconds), with what it holds (JuiceFS's rule: `gc --delete` gives the
    /// trash time ago, the hourly job an hour more), `threads` removals at a time; `removed`
    /// counts the entries as they go.
    pub fn expire_trash(
        &self,
        edge: i64,
        threads: usize,
        removed: &AtomicU64,
    ) -> Result<TrashCleanup> {
        let mut done = TrashCleanup::default();
        for (name, ino) in self.trash_hours()? {
            let Some(start) = Utc::parse_hour(&name) else {
                continue;
            };
            if start.to_secs() >= edge {
                continue;
            }
            let before = removed.load(Ordering::Relaxed);
            self.empty_dir(&Ctx::root(), ino, threads, false, removed)?;
            done.entries += removed.load(Ordering::Relaxed) - before;
            self.remove_hour_dir(name.as_bytes(), ino)?;
            done.hours += 1;
        }
        if done.entries > 0 {
            tracing::info!(
                "trash: {} entries of {} hours expired",
                done.entries,
                done.hours
            );
        }
        Ok(done)
    }

    /// Removes the (empty) hour directory `name` of the trash.
    fn remove_hour_dir(&self, name: &[u8], ino: Ino) -> Result<()> {
        self.kv.txn(|tx| {
            let dp = keys::dentry_prefix(ino);
            if tx.exists(&dp, &prefix_end(&dp))? {
                return sys(libc::ENOTEMPTY);
            }
            let entry = keys::dentry(TRASH_INODE, name);
            if tx.get(&entry)?.is_none() {
                return Ok(());
            }
            tx.delete(&entry)?;
            tx.delete(&keys::attr(ino))?;
            self.update_usage(tx, -space_of(0), -1)?;
            if let Some(v) = tx.get(&keys::attr(TRASH_INODE))? {
                let mut trash = Attr::decode(&v)?;
                trash.nlink = trash.nlink.saturating_sub(1).max(2);
                put_attr(tx, TRASH_INODE, &trash)?;
            }
            Ok(())
        })
    }

    /// Releases the delayed slices recorded at `edge` (seconds) or before; returns how
    /// many slices were released.
    pub fn expire_delayed_slices(&self, edge: i64) -> Result<u64> {
        let (begin, end) = (
            keys::delayed_slices(0, 0),
            keys::delayed_slices(edge.max(-1) + 1, 0),
        );
        let mut count = 0;
        loop {
            let due: Vec<Vec<u8>> = self.kv.read(|tx| {
                Ok(tx
                    .scan(&begin, &end, DELAYED_PER_TXN)?
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect())
            })?;
            if due.is_empty() {
                return Ok(count);
            }
            let (n, freed) = self.kv.txn(|tx| {
                let (mut n, mut freed) = (0, Vec::new());
                for (key, value) in due.iter().zip(tx.gets(&due)?) {
                    let Some(value) = value else { continue };
                    tx.delete(key)?;
                    for r in value.chunks_exact(12) {
                        let s = Slice {
                            pos: 0,
                            id: u64::from_be_bytes(r[..8].try_into().unwrap_or_default()),
                            size: u32::from_be_bytes(r[8..].try_into().unwrap_or_default()),
                            off: 0,
                            len: 0,
                        };
                        n += 1;
                        freed.extend(crate::data::deref_slice(tx, &s)?);
                    }
                }
                Ok((n, freed))
            })?;
            self.delete_slices(freed);
            count += n;
        }
    }

    /// Moves the entries of the trash's hour directory `hour` back: each under its
    /// original parent when that is a directory removed in the same hour (rebuilding
    /// the removed trees inside the trash), and with `put_back` every entry into its
    /// original place. An entry whose name is taken again stays. `threads` moves run
    /// at a time.
    pub fn restore_hour(
        &self,
        hour: &str,
        put_back: bool,
        threads: usize,
    ) -> Result<RestoreReport> {
        let (_, dir) = self
            .trash_hours()?
            .into_iter()
            .find(|(name, _)| name == hour)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "the trash has no hour {hour} (hours are named YYYY-MM-DD-HH, in UTC; `ls .trash` on a mount lists them)"
                ))
            })?;
        let ctx = Ctx::root();
        let entries = self.readdir(&ctx, dir, None, usize::MAX, false)?;
        let removed_dirs: HashSet<Ino> = entries
            .iter()
            .filter(|e| e.typ == FileType::Directory)
            .map(|e| e.ino)
            .collect();
        let report = parking_lot::Mutex::new(RestoreReport::default());
        let next = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..threads.clamp(1, 64) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(e) = entries.get(i) else { return };
                    let outcome = match parse_trash_name(&e.name) {
                        None => Err(Error::Sys(libc::EINVAL)),
                        Some((parent, _)) if !put_back && !removed_dirs.contains(&parent) => {
                            report.lock().need_put_back += 1;
                            continue;
                        }
                        Some((parent, name)) => self
                            .rename_entry(&ctx, dir, &e.name, parent, name, RENAME_NOREPLACE, true)
                            .map(|_| ()),
                    };
                    let mut r = report.lock();
                    match outcome {
                        Ok(()) => r.restored += 1,
                        Err(Error::Sys(EEXIST)) => {
                            tracing::warn!(
                                "restore {}: the original name is taken",
                                String::from_utf8_lossy(&e.name)
                            );
                            r.conflicts += 1;
                        }
                        Err(err) => {
                            tracing::warn!("restore {}: {err}", String::from_utf8_lossy(&e.name));
                            r.failed += 1;
                        }
                    }
                });
            }
        });
        Ok(report.into_inner())
    }
}

/// The trash directory's attributes when it is made.
fn trash_root() -> Attr {
    let mut a = Attr::new(FileType::Directory, 0o555, 0, 0);
    a.nlink = 2;
    a.length = 4 << 10;
    a.parent = ROOT_INODE;
    a
}

/// Refuses what may not be done to the trash by name: creating, removing or renaming
/// `.trash` in the root, creating in the trash.
pub(crate) fn check_not_trash_name(parent: Ino, name: &[u8]) -> Result<()> {
    if parent == ROOT_INODE && name == TRASH_NAME {
        return sys(EPERM);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trash_names_carry_the_parent_and_are_cut_to_the_longest_name() {
        let n = trash_name(12, 345, b"a-b");
        assert_eq!(n, b"12-345-a-b");
        assert_eq!(parse_trash_name(&n), Some((12, &b"a-b"[..])));
        let long = trash_name(1, 2, &[b'x'; 255]);
        assert_eq!(long.len(), MAX_NAME);
        assert_eq!(parse_trash_name(b"x-2-a"), None);
        assert_eq!(parse_trash_name(b"1-2"), None);
    }
}
