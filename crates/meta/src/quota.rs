//! Directory quotas and the volume's limits, enforced across clients without a hot key.
//!
//! The design: a quota is a record `QD<ino>` (max space, max inodes, used space, used
//! inodes, JuiceFS's layout) on a directory; it covers every name below it. The volume's
//! `--capacity` and `--inodes` are a record on the root, kept equal to the settings by
//! [`Meta::sync_volume_quota`], so one mechanism enforces both (ENOSPC for the volume,
//! EDQUOT for a directory). A volume without quotas pays nothing: the table of quotas
//! this client knows is empty and every hook returns at once.
//!
//! *Usage is charged before it is used.* A client takes *credit* from a quota in the
//! database (adds it to `used` in a transaction that checks the limit) and then spends it
//! from memory, so the many transactions that create files or commit writes below a quota
//! do not all read and write its record, yet no committed change takes a quota past its
//! limit: every byte and inode was charged to the record first. A grant is the amount
//! needed plus 1/[`GRANT_SHARE`] of the room left (at most [`MAX_GRANT_SPACE`] and
//! [`MAX_GRANT_INODES`]), so near the limit grants shrink to the exact need and clients
//! take turns on the record. Credit lives in the client's in-memory counters
//! ([`crate::kv::Kv::deferred`]) under keys that are never written (`held`, `spent`): a
//! transaction claims what it spends ([`KvTxn::claim`]), so two operations of one client
//! never spend the same credit, and the claim counts only if it commits. What is freed
//! is spent negatively (more credit).
//!
//! Every second the usage flusher gives back the credit a client holds and did not
//! spend, in one small transaction per quota: other clients see the room within a
//! second, and a record's `used` is exact but for the credit held at that moment (what
//! `nectar quota get` and `df` show includes it). A client that dies keeps what it held
//! charged until `nectar quota check --repair` counts the tree again.
//!
//! The volume's record counts only the grants clients hold: its usage is the counters
//! `usedSpace` and `totalInodes` (written by each client every second), and a grant
//! checks counters + grants + need against the limit. A client gives back its volume
//! credit in the transaction that adds its usage to the counters (`flush_usage`), so
//! counters + grants never count less than what is used.
//!
//! The bound, stated: a quota is never exceeded by committed changes, from any number of
//! clients; a client may be refused up to the credit other clients hold (at most 1/16 of
//! the room when they took it, given back within a second).
//!
//! Which quotas cover a change: those of the directory that holds the name and of every
//! directory above it. Parents of directories are cached for [`DIR_PARENT_TTL`] (a
//! directory moved by another client is charged to its new quotas after at most that
//! long); moves by this client update the cache at once. A file with several names
//! (hard links) counts once under each name, as `nectar summary` counts it; the volume
//! counts it once. A rename across quotas moves the usage of the entry, for a directory
//! its whole tree, summed before the move. Clients read the table of quotas every second
//! (with their usage flush): a new quota's usage is counted from its tree when it is set,
//! and what clients change in the second before they know of it is not charged (`nectar
//! quota check --repair` counts again).

use crate::error::{Error, Result};
use crate::keys;
use crate::kv::{prefix_end, KvTxn};
use crate::meta::{space_of, Meta};
use crate::namespace::get_attr;
use crate::types::*;
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A grant adds this share of the room left to what is needed.
const GRANT_SHARE: i64 = 16;
/// The most space one grant adds beyond the need.
const MAX_GRANT_SPACE: i64 = 256 << 20;
/// The most inodes one grant adds beyond the need.
const MAX_GRANT_INODES: i64 = 1024;
/// How long a directory's cached parent is trusted.
const DIR_PARENT_TTL: Duration = Duration::from_secs(10);

/// A quota's limits and usage (0: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Quota {
    pub max_space: i64,
    pub max_inodes: i64,
    pub used_space: i64,
    pub used_inodes: i64,
}

impl Quota {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(32);
        for n in [
            self.max_space,
            self.max_inodes,
            self.used_space,
            self.used_inodes,
        ] {
            v.extend_from_slice(&n.to_be_bytes());
        }
        v
    }

    pub(crate) fn decode(v: &[u8]) -> Result<Quota> {
        let n = |i: usize| -> Result<i64> {
            v.get(i * 8..i * 8 + 8)
                .map(|b| i64::from_be_bytes(b.try_into().expect("8 bytes")))
                .ok_or_else(|| Error::Corrupt(format!("a quota record of {} bytes", v.len())))
        };
        Ok(Quota {
            max_space: n(0)?,
            max_inodes: n(1)?,
            used_space: n(2)?,
            used_inodes: n(3)?,
        })
    }

    /// Whether adding `space` and `inodes` passes a limit, with `base` (space, inodes)
    /// used besides what the record counts.
    fn exceeded_by(&self, space: i64, inodes: i64, base: [i64; 2]) -> bool {
        let over = |add: i64, max: i64, used: i64, base: i64| {
            add > 0 && max > 0 && base + used + add > max
        };
        over(space, self.max_space, self.used_space, base[0])
            || over(inodes, self.max_inodes, self.used_inodes, base[1])
    }
}

/// What a client knows of the volume's quotas.
#[derive(Default)]
pub(crate) struct QuotaState {
    /// Quotas as last read, by directory.
    table: RwLock<Arc<HashMap<Ino, Quota>>>,
    /// Parents of directories, and when they were read.
    dir_parents: Mutex<HashMap<Ino, (Ino, Instant)>>,
    /// Quotas this client charged or freed since its last flush.
    touched: Mutex<HashSet<Ino>>,
}

/// The in-memory counters of a quota's credit (see the module doc): never written.
fn credit_key(ino: Ino, held: bool, inodes: bool) -> Vec<u8> {
    let mut k = b"~Q".to_vec();
    k.push(if held { b'H' } else { b'S' });
    k.push(if inodes { b'i' } else { b's' });
    k.extend_from_slice(&ino.to_le_bytes());
    k
}

/// The error of a change that a quota refuses.
fn over_quota(ino: Ino) -> Error {
    Error::Sys(if ino == ROOT_INODE {
        libc::ENOSPC
    } else {
        libc::EDQUOT
    })
}

/// What one grant adds to `need` under a limit `max` with `used` (after the need).
fn extra(max: i64, used: i64, cap: i64) -> i64 {
    if max <= 0 {
        cap
    } else {
        ((max - used) / GRANT_SHARE).clamp(0, cap)
    }
}

impl Meta {
    /// The quotas as last read.
    fn quota_table(&self) -> Arc<HashMap<Ino, Quota>> {
        self.quotas.table.read().clone()
    }

    /// Whether any directory below the root has a quota.
    pub(crate) fn has_dir_quotas(&self) -> bool {
        self.quota_table().keys().any(|&i| i != ROOT_INODE)
    }

    /// Reads the quota table again (at load, and every few seconds on a mount).
    pub fn reload_quotas(&self) -> Result<()> {
        let rows = self.kv.read(|tx| {
            let p = b"QD".to_vec();
            Ok(tx.scan(&p, &prefix_end(&p), usize::MAX)?)
        })?;
        let mut table = HashMap::new();
        for (k, v) in rows {
            if let (Some(ino), Ok(q)) = (keys::read_ino(&k[2..]), Quota::decode(&v)) {
                table.insert(ino, q);
            }
        }
        *self.quotas.table.write() = Arc::new(table);
        Ok(())
    }

    /// The parent of directory `dir`, from the cache or read in `tx`.
    fn dir_parent(&self, tx: &mut dyn KvTxn, dir: Ino) -> Result<Ino> {
        if dir == TRASH_INODE {
            return Ok(ROOT_INODE);
        }
        if let Some((p, at)) = self.quotas.dir_parents.lock().get(&dir) {
            if at.elapsed() < DIR_PARENT_TTL {
                return Ok(*p);
            }
        }
        let parent = match get_attr(tx, dir) {
            Ok(a) => a.parent,
            Err(Error::Sys(libc::ENOENT)) => 0,
            Err(e) => return Err(e),
        };
        let mut cache = self.quotas.dir_parents.lock();
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(dir, (parent, Instant::now()));
        Ok(parent)
    }

    /// Forgets the cached parent of a directory this client moved.
    pub(crate) fn dir_moved(&self, dir: Ino, to: Ino) {
        if let Some(e) = self.quotas.dir_parents.lock().get_mut(&dir) {
            *e = (to, Instant::now());
        }
    }

    /// The directory quotas covering a name in directory `dir`: its own and its
    /// ancestors', nearest first. (The volume's is charged by `update_usage`.)
    pub(crate) fn quota_domains(&self, tx: &mut dyn KvTxn, dir: Ino) -> Result<Vec<Ino>> {
        let table = self.quota_table();
        if !table.keys().any(|&i| i != ROOT_INODE) {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut d = dir;
        // Bounded, in case a corrupt tree loops.
        for _ in 0..4096 {
            if d == ROOT_INODE || d == 0 {
                break;
            }
            if table.contains_key(&d) {
                out.push(d);
            }
            d = self.dir_parent(tx, d)?;
        }
        Ok(out)
    }

    /// The directory quotas covering a file, once per name; none once it has no name
    /// left (open after its unlink, its names gave their usage back).
    pub(crate) fn file_domains(
        &self,
        tx: &mut dyn KvTxn,
        ino: Ino,
        attr: &Attr,
    ) -> Result<Vec<Ino>> {
        if !self.has_dir_quotas() || attr.nlink == 0 {
            return Ok(Vec::new());
        }
        if attr.parent != 0 {
            return self.quota_domains(tx, attr.parent);
        }
        let p = keys::parent(ino, 0);
        let p = &p[..p.len() - 8];
        let mut out = Vec::new();
        for (k, v) in tx.scan(p, &prefix_end(p), usize::MAX)? {
            let Some(parent) = keys::read_ino(&k[p.len()..]) else {
                continue;
            };
            let names = crate::kv::parse_counter(&v)?.max(0);
            let domains = self.quota_domains(tx, parent)?;
            for _ in 0..names {
                out.extend_from_slice(&domains);
            }
        }
        Ok(out)
    }

    /// A change of a file's space by `delta`: charged to the quotas of its names and to
    /// the volume (`update_usage`).
    pub(crate) fn file_space_changed(
        &self,
        tx: &mut dyn KvTxn,
        ino: Ino,
        attr: &Attr,
        delta: i64,
    ) -> Result<()> {
        if delta == 0 {
            return Ok(());
        }
        let domains = self.file_domains(tx, ino, attr)?;
        self.charge(tx, &domains, delta, 0)?;
        self.update_usage(tx, delta, 0)
    }

    /// The volume's capacity and inode limit as last read with the quotas, if any.
    pub(crate) fn volume_limits(&self) -> Option<(u64, u64)> {
        let table = self.quota_table();
        let q = table.get(&ROOT_INODE)?;
        Some((q.max_space.max(0) as u64, q.max_inodes.max(0) as u64))
    }

    /// The volume's quota, as a list of domains for [`Meta::charge`].
    pub(crate) fn volume_domain(&self) -> &'static [Ino] {
        if self.quota_table().contains_key(&ROOT_INODE) {
            &[ROOT_INODE]
        } else {
            &[]
        }
    }

    /// Gives back to the quotas of `parent` the usage of a name of `attr` removed
    /// from it.
    pub(crate) fn release_name(&self, tx: &mut dyn KvTxn, parent: Ino, attr: &Attr) -> Result<()> {
        let domains = self.quota_domains(tx, parent)?;
        let (space, names) = Self::name_usage(attr);
        self.charge(tx, &domains, -space, -names)
    }

    /// Deletes the quota of a directory being removed, if it has one.
    pub(crate) fn drop_quota_of_removed(&self, tx: &mut dyn KvTxn, dir: Ino) -> Result<()> {
        if self.quota_table().contains_key(&dir) {
            tx.delete(&keys::dir_quota(dir))?;
        }
        Ok(())
    }

    /// The usage a rename moves with the entry `ino`: its tree's when summed
    /// beforehand ([`Meta::moved_trees`]), else its name's.
    pub(crate) fn moved_usage(
        ino: Ino,
        attr: &Attr,
        trees: &HashMap<Ino, (i64, i64)>,
    ) -> (i64, i64) {
        trees
            .get(&ino)
            .copied()
            .unwrap_or_else(|| Self::name_usage(attr))
    }

    /// The usage a name of an inode stands for: (space, 1).
    pub(crate) fn name_usage(attr: &Attr) -> (i64, i64) {
        let len = if attr.typ == FileType::File {
            attr.length
        } else {
            0
        };
        (space_of(len), 1)
    }

    /// Charges (positive) or frees (negative) `space` and `inodes` under each quota of
    /// `domains`, inside a transaction; refuses with EDQUOT (ENOSPC for the volume) a
    /// charge that passes a limit. See the module doc.
    pub(crate) fn charge(
        &self,
        tx: &mut dyn KvTxn,
        domains: &[Ino],
        space: i64,
        inodes: i64,
    ) -> Result<()> {
        if space == 0 && inodes == 0 {
            return Ok(());
        }
        for &q in domains {
            self.charge_one(tx, q, space, inodes)?;
        }
        Ok(())
    }

    fn charge_one(&self, tx: &mut dyn KvTxn, q: Ino, space: i64, inodes: i64) -> Result<()> {
        let volume = q == ROOT_INODE;
        if !self.deferring_usage() {
            // No flusher to give credit back: the change itself is checked and written
            // (the volume's usage is in its counters, written by `update_usage`).
            if volume && space <= 0 && inodes <= 0 {
                return Ok(());
            }
            let Some((mut rec, base)) = read_charged(tx, q)? else {
                return Ok(());
            };
            if rec.exceeded_by(space, inodes, base) {
                return Err(over_quota(q));
            }
            if !volume {
                // Never below 0: a change made before this client knew of the quota
                // (at most a second after it was set) was not charged.
                rec.used_space = (rec.used_space + space).max(0);
                rec.used_inodes = (rec.used_inodes + inodes).max(0);
                tx.set(&keys::dir_quota(q), &rec.encode())?;
            }
            return Ok(());
        }
        // Spend credit held in memory where there is enough; charge the record for the
        // rest (a growth only: what is freed is spent negatively, more credit).
        let mut short = [0i64; 2];
        for (i, delta) in [space, inodes].into_iter().enumerate() {
            let (held, spent) = (credit_key(q, true, i == 1), credit_key(q, false, i == 1));
            if delta <= 0 {
                tx.incr_later(&spent, delta)?;
            } else if !tx.claim(&spent, delta, &held)? {
                short[i] = delta;
            }
        }
        self.quotas.touched.lock().insert(q);
        if short == [0, 0] {
            return Ok(());
        }
        let Some((mut rec, base)) = read_charged(tx, q)? else {
            // Deleted since the table was read.
            return Ok(());
        };
        if rec.exceeded_by(short[0], short[1], base) {
            return Err(over_quota(q));
        }
        let grants = [
            (
                short[0],
                rec.max_space,
                base[0],
                &mut rec.used_space,
                MAX_GRANT_SPACE,
            ),
            (
                short[1],
                rec.max_inodes,
                base[1],
                &mut rec.used_inodes,
                MAX_GRANT_INODES,
            ),
        ];
        for (i, (need, max, base, used, cap)) in grants.into_iter().enumerate() {
            if need > 0 {
                let grant = need + extra(max, base + *used + need, cap);
                *used += grant;
                tx.incr_later(&credit_key(q, true, i == 1), grant)?;
                tx.incr_later(&credit_key(q, false, i == 1), need)?;
            }
        }
        Ok(tx.set(&keys::dir_quota(q), &rec.encode())?)
    }

    /// Takes the volume's credit this client holds and no transaction claimed, to give
    /// back in the transaction that writes its usage counters (`flush_usage`): what it
    /// spent reaches the counters in the same commit that takes its grant back, so the
    /// counters plus the grants never count less than what is used. Taken before the
    /// usage is read: a change committed in between was granted anew.
    pub(crate) fn take_volume_credit(&self) -> Option<[(i64, i64); 2]> {
        let touched = self.quotas.touched.lock().remove(&ROOT_INODE);
        let holds = (0..2).any(|i| self.kv.deferred(&credit_key(ROOT_INODE, true, i == 1)) != 0);
        if !touched && !holds {
            return None;
        }
        let taken = [false, true].map(|inodes| {
            self.kv.take_unclaimed(
                &credit_key(ROOT_INODE, true, inodes),
                &credit_key(ROOT_INODE, false, inodes),
            )
        });
        if (0..2).any(|i| self.kv.deferred(&credit_key(ROOT_INODE, true, i == 1)) != 0) {
            self.quotas.touched.lock().insert(ROOT_INODE);
        }
        Some(taken)
    }

    /// Inside the counters' transaction: gives the grants taken back to the volume's
    /// record.
    pub(crate) fn give_back_volume_credit(
        &self,
        tx: &mut dyn KvTxn,
        taken: [(i64, i64); 2],
    ) -> Result<()> {
        if let Some(mut rec) = read_quota(tx, ROOT_INODE)? {
            rec.used_space = (rec.used_space - taken[0].0).max(0);
            rec.used_inodes = (rec.used_inodes - taken[1].0).max(0);
            tx.set(&keys::dir_quota(ROOT_INODE), &rec.encode())?;
        }
        Ok(())
    }

    /// Puts credit taken back in memory when it could not be written.
    pub(crate) fn restore_credit(&self, q: Ino, taken: [(i64, i64); 2]) {
        for (i, (held, spent)) in taken.into_iter().enumerate() {
            self.kv.settle(&credit_key(q, true, i == 1), -held);
            self.kv.settle(&credit_key(q, false, i == 1), -spent);
        }
        self.quotas.touched.lock().insert(q);
    }

    /// Gives back the credit this client holds and did not spend (nor claimed by a
    /// transaction under way), and writes what it freed (see the module doc). Run by
    /// the usage flusher and at close.
    pub(crate) fn flush_quotas(&self) -> Result<()> {
        let touched: Vec<Ino> = {
            let mut t = self.quotas.touched.lock();
            // The volume's goes back with the usage counters (`take_volume_credit`).
            let dirs = t.iter().copied().filter(|&q| q != ROOT_INODE).collect();
            t.retain(|&q| q == ROOT_INODE);
            dirs
        };
        let mut first_err = None;
        for q in touched {
            let mut taken = [(0i64, 0i64); 2];
            for (i, t) in taken.iter_mut().enumerate() {
                *t = self
                    .kv
                    .take_unclaimed(&credit_key(q, true, i == 1), &credit_key(q, false, i == 1));
            }
            if (0..2).any(|i| self.kv.deferred(&credit_key(q, true, i == 1)) != 0) {
                // Claimed by a transaction under way: looked at again next time.
                self.quotas.touched.lock().insert(q);
            }
            let back = taken.map(|(held, spent)| held - spent);
            if back == [0, 0] {
                continue;
            }
            let written = self.kv.txn(|tx| {
                if let Some(mut rec) = read_quota(tx, q)? {
                    rec.used_space = (rec.used_space - back[0]).max(0);
                    rec.used_inodes = (rec.used_inodes - back[1]).max(0);
                    tx.set(&keys::dir_quota(q), &rec.encode())?;
                }
                Ok(())
            });
            if let Err(e) = written {
                // Back in memory, to be given back next time.
                self.restore_credit(q, taken);
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Moves the usage of a name from the quotas of directory `from` to those of `to`
    /// (a rename): `usage` is the entry's (space, inodes), its tree's for a directory.
    pub(crate) fn move_usage(
        &self,
        tx: &mut dyn KvTxn,
        from: Ino,
        to: Ino,
        usage: (i64, i64),
    ) -> Result<()> {
        if !self.has_dir_quotas() {
            return Ok(());
        }
        let (old, new) = (self.quota_domains(tx, from)?, self.quota_domains(tx, to)?);
        let leaving: Vec<Ino> = old.iter().copied().filter(|d| !new.contains(d)).collect();
        let entering: Vec<Ino> = new.iter().copied().filter(|d| !old.contains(d)).collect();
        self.charge(tx, &entering, usage.0, usage.1)?;
        self.charge(tx, &leaving, -usage.0, -usage.1)
    }

    /// The usage a quota on directory `dir` would have: what its tree holds, the
    /// directory itself left out (read with `threads` threads).
    pub fn tree_usage(&self, dir: Ino, threads: usize) -> Result<(i64, i64)> {
        let s = self.summary(dir, b"", 0, 0, threads)?;
        Ok((s.size as i64 - space_of(0), (s.files + s.dirs) as i64 - 1))
    }

    /// The usage of the directories among a rename's entries whose quotas change, summed
    /// before its transaction (a tree is not walked inside one). Empty without quotas.
    pub(crate) fn moved_trees(
        &self,
        ctx: &Ctx,
        moves: &[(Ino, &[u8], Ino)],
    ) -> Result<HashMap<Ino, (i64, i64)>> {
        let mut out = HashMap::new();
        if !self.has_dir_quotas() {
            return Ok(out);
        }
        for &(from, name, to) in moves {
            let Ok((ino, attr)) = self.lookup(ctx, from, name) else {
                continue;
            };
            if attr.typ != FileType::Directory {
                continue;
            }
            let differ = self
                .kv
                .read(|tx| Ok(self.quota_domains(tx, from)? != self.quota_domains(tx, to)?))?;
            if differ {
                // The tree below it and the directory itself.
                let (space, inodes) = self.tree_usage(ino, 4)?;
                out.insert(ino, (space + space_of(0), inodes + 1));
            }
        }
        Ok(out)
    }

    // ----- the operator's side (`nectar quota`) -----------------------------------------

    /// Sets the limits of the quota on directory `dir` (`None`: unchanged; 0: none). A
    /// new quota's usage is summed from the tree first.
    pub fn set_quota(
        &self,
        dir: Ino,
        max_space: Option<i64>,
        max_inodes: Option<i64>,
        threads: usize,
    ) -> Result<Quota> {
        if dir == ROOT_INODE {
            return Err(Error::Invalid(
                "the root's quota is the volume's capacity: set it with `nectar config --capacity` and `--inodes`".into(),
            ));
        }
        let attr = self.get_attr(dir)?;
        if attr.typ != FileType::Directory {
            return Err(Error::Invalid(format!("inode {dir} is not a directory")));
        }
        if is_trash(dir) || is_trash(attr.parent) {
            return Err(Error::Invalid(
                "a directory in the trash takes no quota".into(),
            ));
        }
        let exists = self.kv.read(|tx| read_quota(tx, dir))?.is_some();
        let usage = if exists {
            None
        } else {
            Some(self.tree_usage(dir, threads)?)
        };
        let q = self.kv.txn(|tx| {
            let mut q = match (read_quota(tx, dir)?, usage) {
                (Some(q), _) => q,
                (None, Some((s, i))) => Quota {
                    used_space: s,
                    used_inodes: i,
                    ..Quota::default()
                },
                (None, None) => Quota::default(),
            };
            if let Some(s) = max_space {
                q.max_space = s.max(0);
            }
            if let Some(i) = max_inodes {
                q.max_inodes = i.max(0);
            }
            tx.set(&keys::dir_quota(dir), &q.encode())?;
            Ok(q)
        })?;
        self.reload_quotas()?;
        Ok(q)
    }

    /// The quota on directory `dir`, if it has one.
    pub fn get_quota(&self, dir: Ino) -> Result<Option<Quota>> {
        self.kv.read(|tx| read_quota(tx, dir))
    }

    /// Removes the quota on directory `dir`; false if it had none.
    pub fn delete_quota(&self, dir: Ino) -> Result<bool> {
        if dir == ROOT_INODE {
            return Err(Error::Invalid(
                "the root's quota is the volume's capacity: clear it with `nectar config --capacity 0 --inodes 0`".into(),
            ));
        }
        let had = self.kv.txn(|tx| {
            let had = tx.get(&keys::dir_quota(dir))?.is_some();
            tx.delete(&keys::dir_quota(dir))?;
            Ok(had)
        })?;
        self.reload_quotas()?;
        Ok(had)
    }

    /// The path of directory `dir` from the volume's root (each name found by listing
    /// its parent: for the few directories an operator asks about).
    pub fn dir_path(&self, dir: Ino) -> Result<String> {
        let mut names = Vec::new();
        let mut d = dir;
        while d != ROOT_INODE {
            let parent = self.get_attr(d)?.parent;
            if parent == 0 || names.len() > 4096 {
                return Err(Error::Corrupt(format!("directory {d} has no parent")));
            }
            let p = keys::dentry_prefix(parent);
            let entries = self
                .kv
                .read(|tx| Ok(tx.scan(&p, &prefix_end(&p), usize::MAX)?))?;
            let name = entries
                .into_iter()
                .find(|(_, v)| crate::namespace::decode_entry(v).is_ok_and(|e| e.1 == d))
                .map(|(k, _)| String::from_utf8_lossy(&k[p.len()..]).into_owned())
                .ok_or_else(|| {
                    Error::Corrupt(format!("directory {d} is not in its parent {parent}"))
                })?;
            names.push(name);
            d = parent;
        }
        names.reverse();
        Ok(format!("/{}", names.join("/")))
    }

    /// Every directory quota (the volume's left out), by inode.
    pub fn list_quotas(&self) -> Result<Vec<(Ino, Quota)>> {
        self.reload_quotas()?;
        let mut out: Vec<_> = self
            .quota_table()
            .iter()
            .filter(|(&i, _)| i != ROOT_INODE)
            .map(|(&i, &q)| (i, q))
            .collect();
        out.sort_by_key(|(i, _)| *i);
        Ok(out)
    }

    /// Sums the tree of the quota on `dir` and, with `repair`, writes the sum as its
    /// usage. Returns (stored, counted) usage. Credit other clients hold at that moment
    /// is counted as used by the stored value; repair while they write drops it.
    pub fn check_quota(&self, dir: Ino, repair: bool, threads: usize) -> Result<(Quota, Quota)> {
        let stored = self
            .get_quota(dir)?
            .ok_or_else(|| Error::Invalid(format!("directory {dir} has no quota")))?;
        if dir == ROOT_INODE {
            return Err(Error::Invalid(
                "the volume's usage is in its counters (`nectar status`), not a quota".into(),
            ));
        }
        let (s, i) = self.tree_usage(dir, threads)?;
        let counted = Quota {
            used_space: s,
            used_inodes: i,
            ..stored
        };
        if repair && (stored.used_space, stored.used_inodes) != (s, i) {
            self.kv.txn(|tx| {
                if let Some(mut q) = read_quota(tx, dir)? {
                    q.used_space = s;
                    q.used_inodes = i;
                    tx.set(&keys::dir_quota(dir), &q.encode())?;
                }
                Ok(())
            })?;
        }
        Ok((stored, counted))
    }

    /// Keeps the root's quota record equal to the volume's capacity and inode limits:
    /// made (its usage from the counters) when a limit is set, updated when one changes,
    /// removed when both are 0.
    pub(crate) fn sync_volume_quota(&self, fmt: &Format) -> Result<()> {
        let (capacity, inodes) = (fmt.capacity as i64, fmt.inodes as i64);
        let current = self.kv.read(|tx| read_quota(tx, ROOT_INODE))?;
        let wanted = (capacity, inodes);
        match current {
            None if wanted == (0, 0) => return Ok(()),
            Some(q) if (q.max_space, q.max_inodes) == wanted => return Ok(()),
            _ => {}
        }
        self.kv.txn(|tx| {
            if wanted == (0, 0) {
                return Ok(tx.delete(&keys::dir_quota(ROOT_INODE))?);
            }
            let q = match read_quota(tx, ROOT_INODE)? {
                Some(q) => Quota {
                    max_space: capacity,
                    max_inodes: inodes,
                    ..q
                },
                // The volume's record counts the grants clients hold: none yet.
                None => Quota {
                    max_space: capacity,
                    max_inodes: inodes,
                    ..Quota::default()
                },
            };
            Ok(tx.set(&keys::dir_quota(ROOT_INODE), &q.encode())?)
        })?;
        self.reload_quotas()
    }

    /// What `df` shows for a mount of directory `dir`: the tightest quota covering it
    /// (space and inodes each), or `None` when none does but the volume's.
    pub fn quota_statfs(&self, dir: Ino) -> Result<Option<StatFs>> {
        if dir == ROOT_INODE || !self.has_dir_quotas() {
            return Ok(None);
        }
        let domains = self.kv.read(|tx| self.quota_domains(tx, dir))?;
        let quotas: Vec<Quota> = self.kv.read(|tx| {
            let mut out = Vec::new();
            for d in &domains {
                out.extend(read_quota(tx, *d)?);
            }
            Ok(out)
        })?;
        // (total, available) space and (used, available) inodes of the tightest quota.
        let tightest = |limits: Vec<(i64, i64)>| {
            limits
                .into_iter()
                .filter(|(max, _)| *max > 0)
                .map(|(max, used)| (max as u64, used.max(0) as u64))
                .min_by_key(|(max, used)| max.saturating_sub(*used))
        };
        let space = tightest(quotas.iter().map(|q| (q.max_space, q.used_space)).collect());
        let inodes = tightest(
            quotas
                .iter()
                .map(|q| (q.max_inodes, q.used_inodes))
                .collect(),
        );
        if space.is_none() && inodes.is_none() {
            return Ok(None);
        }
        let mut fs = self.statfs()?;
        if let Some((max, used)) = space {
            fs.total_space = max;
            fs.avail_space = max.saturating_sub(used).min(fs.avail_space);
        }
        if let Some((max, used)) = inodes {
            fs.used_inodes = used;
            fs.avail_inodes = max.saturating_sub(used).min(fs.avail_inodes);
        }
        Ok(Some(fs))
    }
}

/// A quota's record and what is used besides what it counts: for the volume, whose
/// record counts only the grants held, its usage counters (read in one round trip).
fn read_charged(tx: &mut dyn KvTxn, q: Ino) -> Result<Option<(Quota, [i64; 2])>> {
    if q != ROOT_INODE {
        return Ok(read_quota(tx, q)?.map(|rec| (rec, [0, 0])));
    }
    let got = tx.gets(&[
        keys::dir_quota(q),
        keys::counter("usedSpace"),
        keys::counter("totalInodes"),
    ])?;
    let counter = |v: &Option<Vec<u8>>| -> Result<i64> {
        Ok(v.as_deref()
            .map(crate::kv::parse_counter)
            .transpose()?
            .unwrap_or(0))
    };
    match &got[..] {
        [Some(rec), space, inodes] => Ok(Some((
            Quota::decode(rec)?,
            [counter(space)?, counter(inodes)?],
        ))),
        [None, _, _] => Ok(None),
        _ => Err(Error::Corrupt("engine returned a short batch".into())),
    }
}

fn read_quota(tx: &mut dyn KvTxn, ino: Ino) -> Result<Option<Quota>> {
    tx.get(&keys::dir_quota(ino))?
        .map(|v| Quota::decode(&v))
        .transpose()
}
