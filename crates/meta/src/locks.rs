//! BSD `flock` and POSIX `fcntl` byte-range locks, held in the metadata engine so every
//! client of a volume sees the same locks.
//!
//! The design: one key per locked inode and lock kind, with JuiceFS's values byte for
//! byte. `F<ino>` maps each owner — a (session id, kernel lock owner) pair — to `R` or
//! `W`; `P<ino>` maps each owner to its sorted, non-overlapping byte ranges
//! (`{type, pid, start, end}` records, `end` inclusive). Taking or releasing a lock is
//! one transaction that reads the key, checks the other owners for a conflict and writes
//! the new table, so two clients contend exactly as two processes do on one machine.
//! The calls here make one attempt and say whether the lock was granted; waiting
//! (F_SETLKW, blocking flock), with its back-off and interruption, belongs to the caller.
//! A session that dies keeps its locks until its session expires, when whoever cleans
//! the session removes its entries ([`Meta::release_session_locks`]).

use std::collections::BTreeMap;

use crate::error::{sys, Result};
use crate::keys;
use crate::meta::Meta;
use crate::types::Ino;

/// Lock types as the kernel sends them (Linux values, also JuiceFS's).
pub const F_RDLCK: u32 = libc::F_RDLCK as u32;
pub const F_WRLCK: u32 = libc::F_WRLCK as u32;
pub const F_UNLCK: u32 = libc::F_UNLCK as u32;

/// Who holds a lock: a client session and the kernel's lock owner within it (the open
/// file description for flock, the process's file table for POSIX locks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LockOwner {
    pub sid: u64,
    pub owner: u64,
}

/// One POSIX lock range of one owner; `end` is inclusive (`u64::MAX`-like values mean
/// "to the end of the file").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlockRecord {
    pub typ: u32,
    pub pid: u32,
    pub start: u64,
    pub end: u64,
}

impl PlockRecord {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start <= end && start <= self.end
    }

    fn conflicts_with(&self, typ: u32, start: u64, end: u64) -> bool {
        (typ == F_WRLCK || self.typ == F_WRLCK) && self.overlaps(start, end)
    }
}

fn owner_key(b: &[u8]) -> Option<(LockOwner, &[u8])> {
    let sid = keys::read_u64_be(b)?;
    let owner = keys::read_u64_be(b.get(8..)?)?;
    Some((LockOwner { sid, owner }, b.get(16..)?))
}

fn corrupt(what: &str, ino: Ino) -> crate::Error {
    crate::Error::Corrupt(format!("{what} lock table of inode {ino} is truncated"))
}

fn decode_flocks(ino: Ino, v: &[u8]) -> Result<BTreeMap<LockOwner, u8>> {
    let mut out = BTreeMap::new();
    let mut rest = v;
    while !rest.is_empty() {
        let (owner, tail) = owner_key(rest).ok_or_else(|| corrupt("flock", ino))?;
        let (&typ, tail) = tail.split_first().ok_or_else(|| corrupt("flock", ino))?;
        out.insert(owner, typ);
        rest = tail;
    }
    Ok(out)
}

fn encode_flocks(table: &BTreeMap<LockOwner, u8>) -> Vec<u8> {
    let mut v = Vec::with_capacity(table.len() * 17);
    for (o, typ) in table {
        v.extend_from_slice(&o.sid.to_be_bytes());
        v.extend_from_slice(&o.owner.to_be_bytes());
        v.push(*typ);
    }
    v
}

fn decode_plocks(ino: Ino, v: &[u8]) -> Result<BTreeMap<LockOwner, Vec<PlockRecord>>> {
    let mut out = BTreeMap::new();
    let mut rest = v;
    while !rest.is_empty() {
        let (owner, tail) = owner_key(rest).ok_or_else(|| corrupt("POSIX", ino))?;
        let len = tail
            .get(..4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()) as usize)
            .ok_or_else(|| corrupt("POSIX", ino))?;
        let records = tail.get(4..4 + len).ok_or_else(|| corrupt("POSIX", ino))?;
        if len % 24 != 0 {
            return Err(corrupt("POSIX", ino));
        }
        let list = records
            .chunks_exact(24)
            .map(|r| PlockRecord {
                typ: u32::from_be_bytes(r[0..4].try_into().unwrap()),
                pid: u32::from_be_bytes(r[4..8].try_into().unwrap()),
                start: u64::from_be_bytes(r[8..16].try_into().unwrap()),
                end: u64::from_be_bytes(r[16..24].try_into().unwrap()),
            })
            .collect();
        out.insert(owner, list);
        rest = &tail[4 + len..];
    }
    Ok(out)
}

fn encode_plocks(table: &BTreeMap<LockOwner, Vec<PlockRecord>>) -> Vec<u8> {
    let mut v = Vec::new();
    for (o, list) in table {
        v.extend_from_slice(&o.sid.to_be_bytes());
        v.extend_from_slice(&o.owner.to_be_bytes());
        v.extend_from_slice(&((list.len() * 24) as u32).to_be_bytes());
        for r in list {
            v.extend_from_slice(&r.typ.to_be_bytes());
            v.extend_from_slice(&r.pid.to_be_bytes());
            v.extend_from_slice(&r.start.to_be_bytes());
            v.extend_from_slice(&r.end.to_be_bytes());
        }
    }
    v
}

/// Applies `new` (a lock or, with `F_UNLCK`, an unlock) to one owner's ranges: the
/// covered part of every old range is replaced, partly covered ranges are split, and
/// touching ranges of the same type merge, as POSIX requires of one process's locks.
fn apply_range(old: &[PlockRecord], new: PlockRecord) -> Vec<PlockRecord> {
    let mut out = Vec::with_capacity(old.len() + 2);
    for r in old {
        if !r.overlaps(new.start, new.end) {
            out.push(*r);
            continue;
        }
        if r.start < new.start {
            out.push(PlockRecord {
                end: new.start - 1,
                ..*r
            });
        }
        if r.end > new.end {
            out.push(PlockRecord {
                start: new.end + 1,
                ..*r
            });
        }
    }
    if new.typ != F_UNLCK {
        out.push(new);
    }
    out.sort_by_key(|r| r.start);
    let mut merged: Vec<PlockRecord> = Vec::with_capacity(out.len());
    for r in out {
        match merged.last_mut() {
            Some(last)
                if last.typ == r.typ
                    && last.pid == r.pid
                    && last.end.checked_add(1) == Some(r.start) =>
            {
                last.end = r.end
            }
            _ => merged.push(r),
        }
    }
    merged
}

impl Meta {
    fn lock_owner(&self, owner: u64) -> LockOwner {
        LockOwner {
            sid: self.session_id(),
            owner,
        }
    }

    /// One attempt at a BSD flock: `typ` is F_RDLCK, F_WRLCK or F_UNLCK. Returns false
    /// when another owner holds a conflicting lock (nothing changed).
    pub fn try_flock(&self, ino: Ino, owner: u64, typ: u32) -> Result<bool> {
        if ![F_RDLCK, F_WRLCK, F_UNLCK].contains(&typ) {
            return sys(libc::EINVAL);
        }
        let me = self.lock_owner(owner);
        let key = keys::flock(ino);
        self.kv().txn(|tx| {
            let mut table = match tx.get(&key)? {
                Some(v) => decode_flocks(ino, &v)?,
                None => BTreeMap::new(),
            };
            table.remove(&me);
            let write_held = table.values().any(|t| *t == b'W');
            match typ {
                F_RDLCK if write_held => return Ok(false),
                F_WRLCK if !table.is_empty() => return Ok(false),
                F_RDLCK => {
                    table.insert(me, b'R');
                }
                F_WRLCK => {
                    table.insert(me, b'W');
                }
                _ => {}
            }
            if table.is_empty() {
                tx.delete(&key)?;
            } else {
                tx.set(&key, &encode_flocks(&table))?;
            }
            Ok(true)
        })
    }

    /// F_GETLK: the first lock of another owner that conflicts with `typ` over
    /// `[start, end]`, or None when the lock could be placed.
    pub fn getlk(
        &self,
        ino: Ino,
        owner: u64,
        typ: u32,
        start: u64,
        end: u64,
    ) -> Result<Option<PlockRecord>> {
        if typ == F_UNLCK {
            return Ok(None);
        }
        if ![F_RDLCK, F_WRLCK].contains(&typ) || start > end {
            return sys(libc::EINVAL);
        }
        let me = self.lock_owner(owner);
        let Some(v) = self.kv().read(|tx| Ok(tx.get(&keys::plock(ino))?))? else {
            return Ok(None);
        };
        Ok(first_conflict(
            &decode_plocks(ino, &v)?,
            me,
            typ,
            start,
            end,
        ))
    }

    /// One attempt at F_SETLK: places, changes or (with F_UNLCK) removes the owner's lock
    /// over `[start, end]`. Returns false when another owner holds a conflicting range.
    pub fn try_setlk(
        &self,
        ino: Ino,
        owner: u64,
        typ: u32,
        start: u64,
        end: u64,
        pid: u32,
    ) -> Result<bool> {
        if ![F_RDLCK, F_WRLCK, F_UNLCK].contains(&typ) || start > end {
            return sys(libc::EINVAL);
        }
        let me = self.lock_owner(owner);
        let key = keys::plock(ino);
        let new = PlockRecord {
            typ,
            pid,
            start,
            end,
        };
        self.kv().txn(|tx| {
            let mut table = match tx.get(&key)? {
                Some(v) => decode_plocks(ino, &v)?,
                None if typ == F_UNLCK => return Ok(true),
                None => BTreeMap::new(),
            };
            if typ != F_UNLCK && first_conflict(&table, me, typ, start, end).is_some() {
                return Ok(false);
            }
            let mine = table.remove(&me).unwrap_or_default();
            if typ == F_UNLCK && mine.is_empty() {
                return Ok(true);
            }
            let updated = apply_range(&mine, new);
            if !updated.is_empty() {
                table.insert(me, updated);
            }
            if table.is_empty() {
                tx.delete(&key)?;
            } else {
                tx.set(&key, &encode_plocks(&table))?;
            }
            Ok(true)
        })
    }

    /// Every lock of session `sid`, flock and POSIX, is dropped: at unmount, and by the
    /// client that cleans a session which stopped refreshing.
    pub(crate) fn release_session_locks(&self, sid: u64) -> Result<()> {
        for tag in [b'F', b'P'] {
            let mut from = vec![tag];
            let end = vec![tag + 1];
            loop {
                let batch = self.kv().read(|tx| Ok(tx.scan(&from, &end, 256)?))?;
                let Some((last, _)) = batch.last() else { break };
                from = last.clone();
                from.push(0);
                for (key, value) in batch {
                    let Some(ino) = keys::read_ino(&key[1..]) else {
                        continue;
                    };
                    if !holds_lock(tag, ino, &value, sid)? {
                        continue;
                    }
                    self.kv().txn(|tx| {
                        let Some(v) = tx.get(&key)? else {
                            return Ok(());
                        };
                        let rest = if tag == b'F' {
                            let mut t = decode_flocks(ino, &v)?;
                            t.retain(|o, _| o.sid != sid);
                            (!t.is_empty()).then(|| encode_flocks(&t))
                        } else {
                            let mut t = decode_plocks(ino, &v)?;
                            t.retain(|o, _| o.sid != sid);
                            (!t.is_empty()).then(|| encode_plocks(&t))
                        };
                        match rest {
                            Some(v) => tx.set(&key, &v)?,
                            None => tx.delete(&key)?,
                        }
                        Ok(())
                    })?;
                }
            }
        }
        Ok(())
    }

    /// The locks held on `ino`: flock owners with `R`/`W`, and POSIX ranges per owner.
    pub fn list_locks(&self, ino: Ino) -> Result<LockTables> {
        let (f, p) = self
            .kv()
            .read(|tx| Ok((tx.get(&keys::flock(ino))?, tx.get(&keys::plock(ino))?)))?;
        Ok(LockTables {
            flocks: match f {
                Some(v) => decode_flocks(ino, &v)?,
                None => BTreeMap::new(),
            },
            plocks: match p {
                Some(v) => decode_plocks(ino, &v)?,
                None => BTreeMap::new(),
            },
        })
    }
}

/// A snapshot of one inode's lock tables.
#[derive(Debug, Default)]
pub struct LockTables {
    pub flocks: BTreeMap<LockOwner, u8>,
    pub plocks: BTreeMap<LockOwner, Vec<PlockRecord>>,
}

/// The first range of an owner other than `me` that a `typ` lock over `[start, end]`
/// would conflict with.
fn first_conflict(
    table: &BTreeMap<LockOwner, Vec<PlockRecord>>,
    me: LockOwner,
    typ: u32,
    start: u64,
    end: u64,
) -> Option<PlockRecord> {
    table
        .iter()
        .filter(|(o, _)| **o != me)
        .flat_map(|(_, list)| list.iter())
        .find(|r| r.conflicts_with(typ, start, end))
        .copied()
}

fn holds_lock(tag: u8, ino: Ino, value: &[u8], sid: u64) -> Result<bool> {
    Ok(if tag == b'F' {
        decode_flocks(ino, value)?.keys().any(|o| o.sid == sid)
    } else {
        decode_plocks(ino, value)?.keys().any(|o| o.sid == sid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(typ: u32, start: u64, end: u64) -> PlockRecord {
        PlockRecord {
            typ,
            pid: 7,
            start,
            end,
        }
    }

    #[test]
    fn ranges_split_and_merge() {
        let l = apply_range(&[], rec(F_WRLCK, 0, 99));
        assert_eq!(l, vec![rec(F_WRLCK, 0, 99)]);
        // Unlocking the middle splits the range in two.
        let l = apply_range(&l, rec(F_UNLCK, 10, 19));
        assert_eq!(l, vec![rec(F_WRLCK, 0, 9), rec(F_WRLCK, 20, 99)]);
        // A read lock over the hole and part of both sides downgrades those parts.
        let l = apply_range(&l, rec(F_RDLCK, 5, 24));
        assert_eq!(
            l,
            vec![
                rec(F_WRLCK, 0, 4),
                rec(F_RDLCK, 5, 24),
                rec(F_WRLCK, 25, 99)
            ]
        );
        // Write-locking the read part again merges everything back into one range.
        let l = apply_range(&l, rec(F_WRLCK, 5, 24));
        assert_eq!(l, vec![rec(F_WRLCK, 0, 99)]);
        // To end of file, then unlock all.
        let l = apply_range(&l, rec(F_RDLCK, 50, u64::MAX));
        assert_eq!(l, vec![rec(F_WRLCK, 0, 49), rec(F_RDLCK, 50, u64::MAX)]);
        assert!(apply_range(&l, rec(F_UNLCK, 0, u64::MAX)).is_empty());
    }

    #[test]
    fn tables_round_trip_in_juicefs_layout() {
        let mut f = BTreeMap::new();
        f.insert(LockOwner { sid: 1, owner: 2 }, b'W');
        let v = encode_flocks(&f);
        assert_eq!(v.len(), 17);
        assert_eq!(&v[..8], &1u64.to_be_bytes());
        assert_eq!(decode_flocks(1, &v).unwrap(), f);

        let mut p = BTreeMap::new();
        p.insert(
            LockOwner { sid: 3, owner: 4 },
            vec![rec(F_RDLCK, 0, 9), rec(F_WRLCK, 20, 29)],
        );
        let v = encode_plocks(&p);
        assert_eq!(v.len(), 16 + 4 + 48);
        assert_eq!(decode_plocks(1, &v).unwrap(), p);
        assert!(decode_plocks(1, &v[..30]).is_err());
        assert!(decode_flocks(1, &v[..5]).is_err());
    }
}
