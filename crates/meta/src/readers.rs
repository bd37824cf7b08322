//! Files open on other clients: a removed file's data waits for their readers.
//!
//! The design: a client knows its own opens (`Meta::open_files`), and removing the last
//! name of a file open here keeps it under the session (`SS` keys, see `namespace.rs`)
//! until it is closed. Other clients' opens are published: at every heartbeat a session
//! writes `O<ino><sid>` for each file it has open and removes the keys of those it closed
//! since (a diff: a reader that opens and closes files between two beats writes nothing,
//! so reading a dataset file by file costs no write).
//!
//! While other live sessions exist, removing a file's last name does not delete it: its
//! attribute (link count 0) and chunks stay, with a `D` key that says when, so readers
//! elsewhere go on reading it, and only its names, xattrs and usage go at once.
//! [`Meta::cleanup_deleted_files`] (one client per volume, every few seconds) deletes
//! such a file once the grace period has passed and no live session lists it open. The
//! grace period is the session timeout (a minute by default, five heartbeats): a reader
//! that opened the file before it was removed has published its open by then, or its
//! session is dead. So a block is deleted only after every client that may still read
//! it closed it, or died. A client alone on the volume deletes at once, as before
//! (which clients are alive is read at each heartbeat, and when a client starts).
//!
//! `D` keys left by a client that died in the middle of a large file's deletion are
//! finished by the same job.

use crate::error::Result;
use crate::keys;
use crate::kv::{prefix_end, KvTxn};
use crate::meta::Meta;
use crate::types::*;
use std::collections::HashSet;

impl Meta {
    /// Whether other clients may have files of the volume open: other live sessions
    /// existed when this client last looked (at its last heartbeat, or when it
    /// started). Memory only: called inside transactions.
    pub(crate) fn others_alive(&self) -> bool {
        self.readers
            .others_alive
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Looks at the sessions: whether any live one is not this client's.
    pub(crate) fn note_sessions(&self) -> Result<()> {
        let me = self.session_id();
        let now = Time::now().sec;
        let rows = self.kv.read(|tx| Ok(tx.scan(b"SE", b"SF", usize::MAX)?))?;
        let others = rows.iter().any(|(k, v)| {
            let sid = keys::read_u64_be(&k[2..]).unwrap_or(0);
            let expire = keys::read_u64_be(v).unwrap_or(0) as i64;
            sid != me && expire >= now
        });
        self.readers
            .others_alive
            .store(others, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Publishes the files this session has open (see the module doc): writes the keys
    /// of those opened since the last call, removes those of the ones closed.
    pub(crate) fn publish_open_files(&self, sid: u64) -> Result<()> {
        let open: HashSet<Ino> = self.open_files.lock().keys().copied().collect();
        let mut published = self.readers.published.lock();
        let added: Vec<Ino> = open.difference(&published).copied().collect();
        let closed: Vec<Ino> = published.difference(&open).copied().collect();
        if added.is_empty() && closed.is_empty() {
            return Ok(());
        }
        for batch in added
            .iter()
            .map(|&i| (i, true))
            .chain(closed.iter().map(|&i| (i, false)))
            .collect::<Vec<_>>()
            .chunks(100)
        {
            self.kv.txn(|tx| {
                for &(ino, open) in batch {
                    if open {
                        tx.set(&keys::open_by(ino, sid), &[1])?;
                    } else {
                        tx.delete(&keys::open_by(ino, sid))?;
                    }
                }
                Ok(())
            })?;
        }
        *published = open;
        Ok(())
    }

    /// Removes the open files a session published (it ended, or died).
    pub(crate) fn unpublish_open_files(&self, sid: u64) -> Result<()> {
        let rows = self.kv.read(|tx| Ok(tx.scan(b"O", b"P", usize::MAX)?))?;
        let mine: Vec<Vec<u8>> = rows
            .into_iter()
            .filter(|(k, _)| k.len() == 17 && keys::read_u64_be(&k[9..]) == Some(sid))
            .map(|(k, _)| k)
            .collect();
        for batch in mine.chunks(100) {
            self.kv.txn(|tx| {
                for k in batch {
                    tx.delete(k)?;
                }
                Ok(())
            })?;
        }
        if sid == self.session_id() {
            self.readers.published.lock().clear();
        }
        Ok(())
    }

    /// Whether a live session has published `ino` open.
    fn open_elsewhere(&self, tx: &mut dyn KvTxn, ino: Ino, now: i64) -> Result<bool> {
        let p = keys::open_by(ino, 0);
        let p = &p[..9];
        let sids: Vec<u64> = tx
            .scan(p, &prefix_end(p), usize::MAX)?
            .iter()
            .filter_map(|(k, _)| keys::read_u64_be(&k[9..]))
            .collect();
        if sids.is_empty() {
            return Ok(false);
        }
        let leases = tx.gets(
            &sids
                .iter()
                .map(|&s| keys::session_expire(s))
                .collect::<Vec<_>>(),
        )?;
        Ok(leases
            .iter()
            .flatten()
            .any(|v| keys::read_u64_be(v).unwrap_or(0) as i64 >= now))
    }

    /// Deletes the files waiting under `D` keys whose grace period has passed (see the
    /// module doc) and that no live session has open; returns how many.
    pub fn cleanup_deleted_files(&self) -> Result<usize> {
        let now = Time::now().sec;
        let rows = self.kv.read(|tx| Ok(tx.scan(b"D", b"E", 10_000)?))?;
        let mut n = 0;
        for (k, v) in rows {
            if k.len() != 17 {
                continue;
            }
            let (Some(ino), Some(len)) = (keys::read_ino(&k[1..9]), keys::read_u64_be(&k[9..17]))
            else {
                continue;
            };
            let since = keys::read_u64_be(&v).unwrap_or(0) as i64;
            if now - since < self.deletion_grace() {
                continue;
            }
            if self.kv.read(|tx| self.open_elsewhere(tx, ino, now))? {
                continue;
            }
            self.delete_file_data(ino, len)?;
            n += 1;
        }
        Ok(n)
    }

    /// [`Meta::cleanup_deleted_files`] if no client did it in the last half grace
    /// period (clients racing for it run it once).
    pub fn cleanup_deleted_files_if_due(&self, now: i64) -> Result<Option<usize>> {
        let interval = (self.deletion_grace() / 2).max(1);
        if !self.claim_periodic("lastCleanupFiles", now, interval)? {
            return Ok(None);
        }
        self.cleanup_deleted_files().map(Some)
    }

    /// How long a removed file waits for readers that may not have published their
    /// open yet: the session timeout.
    pub fn deletion_grace(&self) -> i64 {
        self.session_timeout_secs()
    }
}

/// What a client knows of other clients' readers.
#[derive(Default)]
pub(crate) struct ReaderState {
    /// Files this session published open.
    published: parking_lot::Mutex<HashSet<Ino>>,
    /// Whether other live sessions existed when last looked.
    others_alive: std::sync::atomic::AtomicBool,
}
