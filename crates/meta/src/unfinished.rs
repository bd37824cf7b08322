//! Unfinished slices: blocks a client stored but never committed, found and deleted by
//! a surviving client once the writer's session expires.
//!
//! A slice's blocks reach object storage before the transaction that records the slice
//! in a chunk (on the write path and in compaction), so a client killed in between
//! leaves objects that nothing refers to. So that a survivor can delete exactly those,
//! a client with a session leaves three kinds of records, none costing a round trip of
//! its own:
//!
//! - `SR<sid><start>` → end: written by the transaction that draws a range of slice ids;
//! - `SC<sid><id>` → 1: written by the transaction that commits slice `id`. That transaction
//!   also reads `SI<sid>`, so once a cleaner has deleted it no slice drawn under the
//!   session can be committed any more: the commit fails ([`Error::SessionLost`]) rather
//!   than refer to blocks the cleaner may be deleting;
//! - `SW<sid>` → mark: written by the heartbeat. Every id of the session below the mark
//!   is settled (committed, or given up and its blocks deleted by the writer). After the
//!   mark is stored, the `SC` and `SR` records below it go, in small blind batches.
//!
//! The cleaner of a dead session takes every id of its ranges at or above the mark,
//! minus the committed ones. Those ids are exactly the slices whose blocks may exist but
//! that no chunk refers to: a slice is only ever put in a chunk by the commit of the
//! session that drew it, and only a chunk can share it further (copy_file_range), so a
//! slice never committed is referred to nowhere. It hands them to the sweeper the data
//! layer registered, which lists the blocks of those ids and deletes them. No chunk is
//! scanned.
//!
//! Ids in flight are tracked with [`NewSlice`] tickets: an id is in flight from the
//! moment it is drawn until its ticket drops, after the commit or the abort. The mark is
//! the lowest id in flight, or the next id to draw when none is.

use crate::error::{Error, Result};
use crate::keys;
use crate::kv::{prefix_end, KvTxn};
use crate::meta::Meta;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Slice ids drawn per counter bump.
const SLICE_BATCH: u64 = 4096;

/// Records deleted per pruning or cleaning transaction (etcd allows 128 operations).
const RECORDS_PER_TXN: usize = 100;

/// Deletes the blocks of slices that were never committed: given id ranges
/// `[start, end)` and the ids inside them to keep, returns how many objects it deleted.
pub type SliceSweeper =
    Arc<dyn Fn(&[(u64, u64)], &HashSet<u64>) -> std::result::Result<usize, String> + Send + Sync>;

/// The slice ids of one client: the range it draws from and the ids in flight.
#[derive(Default)]
pub(crate) struct SliceIds {
    next: u64,
    end: u64,
    /// The session the current range was recorded under (0: none).
    range_sid: u64,
    /// Ids drawn and not settled yet, with the session each was drawn under.
    in_flight: BTreeMap<u64, u64>,
    /// The mark this client last stored.
    stored_mark: u64,
}

impl SliceIds {
    /// For a new session: forgets the current range, so the next id comes from a range
    /// recorded under the session, and the mark stored under the previous one.
    pub(crate) fn new_session(&mut self) {
        self.next = 0;
        self.end = 0;
        self.stored_mark = 0;
    }

    /// The lowest id that may still be committed or stored by this client.
    fn mark(&self) -> u64 {
        self.in_flight.keys().next().copied().unwrap_or(self.next)
    }
}

/// A slice id drawn for new data; the id counts as in flight until this drops.
pub struct NewSlice {
    id: u64,
    ids: Arc<Mutex<SliceIds>>,
}

impl NewSlice {
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for NewSlice {
    fn drop(&mut self) {
        self.ids.lock().in_flight.remove(&self.id);
    }
}

impl std::fmt::Debug for NewSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NewSlice({})", self.id)
    }
}

impl Meta {
    /// Draws a volume-unique slice id for new data. Keep the ticket until the slice is
    /// committed or its blocks are deleted.
    pub fn new_slice(&self) -> Result<NewSlice> {
        let mut ids = self.slices.lock();
        if ids.next >= ids.end {
            let sid = self.session_id();
            let end = self.kv.txn(|tx| {
                let end = tx.incr_by(&keys::counter("nextChunk"), SLICE_BATCH as i64)? as u64;
                if sid != 0 {
                    let start = end - SLICE_BATCH;
                    tx.set(&keys::session_range(sid, start), &end.to_be_bytes())?;
                }
                Ok(end)
            })?;
            ids.next = end - SLICE_BATCH;
            ids.end = end;
            ids.range_sid = sid;
        }
        let id = ids.next;
        ids.next += 1;
        let sid = ids.range_sid;
        ids.in_flight.insert(id, sid);
        Ok(NewSlice {
            id,
            ids: self.slices.clone(),
        })
    }

    /// The session slice `id` was drawn under, when its commit must be recorded.
    pub(crate) fn drawn_under(&self, id: u64) -> Option<u64> {
        let ids = self.slices.lock();
        ids.in_flight.get(&id).copied().filter(|&sid| sid != 0)
    }

    /// In a transaction that may commit slice `id` drawn under session `sid` (if any):
    /// reads `keys` in one round trip together with the session's info, and refuses the
    /// commit if the session is gone. The caller then records it ([`Meta::record_commit`]).
    pub(crate) fn read_for_commit(
        &self,
        tx: &mut dyn KvTxn,
        mut keys: Vec<Vec<u8>>,
        commit: Option<(u64, u64)>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let Some((sid, _)) = commit else {
            return Ok(tx.gets(&keys)?);
        };
        keys.push(keys::session_info(sid));
        let mut values = tx.gets(&keys)?;
        if values.pop().flatten().is_none() {
            return Err(Error::SessionLost(sid));
        }
        Ok(values)
    }

    /// Records in the committing transaction that the session committed the slice.
    pub(crate) fn record_commit(
        &self,
        tx: &mut dyn KvTxn,
        commit: Option<(u64, u64)>,
    ) -> Result<()> {
        match commit {
            // Not empty: some engines (TiKV) refuse empty values.
            Some((sid, id)) => Ok(tx.set(&keys::session_commit(sid, id), &[1])?),
            None => Ok(()),
        }
    }

    /// The mark the heartbeat stores (see the module doc).
    pub(crate) fn slice_mark(&self) -> u64 {
        self.slices.lock().mark()
    }

    /// After the heartbeat stored `mark`: deletes the session's records below it.
    pub(crate) fn prune_slice_records(&self, sid: u64, mark: u64) -> Result<()> {
        if mark <= self.slices.lock().stored_mark {
            return Ok(());
        }
        // About one heartbeat's commits: read in one scan, deleted in batches.
        let commits = keys::session_commits_prefix(sid);
        let below = keys::session_commit(sid, mark);
        let settled = self
            .kv
            .read(|tx| Ok(tx.scan(&commits, &below, usize::MAX)?))?;
        self.delete_keys(settled.into_iter().map(|(k, _)| k).collect())?;
        let done: Vec<Vec<u8>> = self
            .session_ranges(sid)?
            .into_iter()
            .filter(|&(_, end)| end <= mark)
            .map(|(start, _)| keys::session_range(sid, start))
            .collect();
        self.delete_keys(done)?;
        self.slices.lock().stored_mark = mark;
        Ok(())
    }

    /// Registers who deletes the blocks of slices a dead client never committed.
    pub fn set_slice_sweeper(&self, s: SliceSweeper) {
        *self.sweeper.write() = Some(s);
    }

    /// Deletes the slice records of a session; for a dead one (`sweep`), first the
    /// blocks of the slices it drew and never committed.
    pub(crate) fn clean_session_slices(&self, sid: u64, sweep: bool) -> Result<()> {
        let ranges = self.session_ranges(sid)?;
        let commits = keys::session_commits_prefix(sid);
        let commit_keys: Vec<Vec<u8>> = self
            .kv
            .read(|tx| Ok(tx.scan(&commits, &prefix_end(&commits), usize::MAX)?))?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        if sweep {
            let unsettled = self.unsettled_of(sid, &ranges)?;
            if !unsettled.is_empty() {
                let committed: HashSet<u64> = commit_keys
                    .iter()
                    .filter_map(|k| keys::read_u64_be(&k[commits.len()..]))
                    .collect();
                let sweeper = self.sweeper.read().clone();
                match sweeper {
                    Some(sweep) => {
                        let n = sweep(&unsettled, &committed).map_err(|e| {
                            Error::Storage(format!(
                                "cannot delete the blocks session {sid} left unfinished: {e}"
                            ))
                        })?;
                        if n > 0 {
                            tracing::info!(
                                "session {sid}: deleted {n} blocks of slices it never committed"
                            );
                        }
                    }
                    None => tracing::warn!(
                        "session {sid}: blocks of slices it never committed are left in \
                         storage (no sweeper registered); `nectar gc` will find them"
                    ),
                }
            }
        }
        let mut records = commit_keys;
        records.extend(
            ranges
                .iter()
                .map(|&(start, _)| keys::session_range(sid, start)),
        );
        records.push(keys::session_mark(sid));
        self.delete_keys(records)
    }

    /// The slice ids of session `sid` (whose recorded ranges are `ranges`) that are not
    /// settled: at or above its mark and not committed, as `(start, end)` ranges.
    fn unsettled_of(&self, sid: u64, ranges: &[(u64, u64)]) -> Result<Vec<(u64, u64)>> {
        let commits = keys::session_commits_prefix(sid);
        let (mark, committed) = self.kv.read(|tx| {
            let mark = tx.get(&keys::session_mark(sid))?;
            Ok((mark, tx.scan(&commits, &prefix_end(&commits), usize::MAX)?))
        })?;
        let mark = mark.and_then(|v| keys::read_u64_be(&v)).unwrap_or(0);
        let mut committed: Vec<u64> = committed
            .iter()
            .filter_map(|(k, _)| keys::read_u64_be(&k[commits.len()..]))
            .collect();
        committed.sort_unstable();
        Ok(ranges
            .iter()
            .flat_map(|&(start, end)| {
                // The range from the mark on, cut around the committed ids in it.
                let mut pieces = Vec::new();
                let mut from = start.max(mark);
                let inside = committed.partition_point(|&id| id < from);
                for &id in committed[inside..].iter().take_while(|&&id| id < end) {
                    pieces.push((from, id));
                    from = id + 1;
                }
                pieces.push((from, end));
                pieces
            })
            .filter(|(start, end)| start < end)
            .collect())
    }

    /// The slice ids of every session that are not settled yet: slices being written
    /// (or left by a dead client not cleaned yet) whose blocks may be in the bucket
    /// with no chunk referring to them. Ids outside these ranges were settled when this
    /// was read: committed, or given up and their blocks deleted.
    pub fn unsettled_slices(&self) -> Result<Vec<(u64, u64)>> {
        let mut all = Vec::new();
        for s in self.list_sessions()? {
            let ranges = self.session_ranges(s.sid)?;
            all.extend(self.unsettled_of(s.sid, &ranges)?);
        }
        Ok(all)
    }

    /// The slice-id ranges recorded for a session, as `(start, end)`.
    fn session_ranges(&self, sid: u64) -> Result<Vec<(u64, u64)>> {
        let prefix = keys::session_ranges_prefix(sid);
        let rows = self
            .kv
            .read(|tx| Ok(tx.scan(&prefix, &prefix_end(&prefix), usize::MAX)?))?;
        Ok(rows
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    keys::read_u64_be(&k[prefix.len()..])?,
                    keys::read_u64_be(v)?,
                ))
            })
            .collect())
    }

    /// Deletes keys without reading them, a bounded number per transaction.
    fn delete_keys(&self, keys: Vec<Vec<u8>>) -> Result<()> {
        for batch in keys.chunks(RECORDS_PER_TXN) {
            self.kv
                .txn(|tx| Ok(batch.iter().try_for_each(|k| tx.delete(k))?))?;
        }
        Ok(())
    }
}
