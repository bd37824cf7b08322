//! Removing whole trees: `nectar rmr`, the trash's expiry (and the CSI driver's volume
//! deletion to come).
//!
//! The design: a directory is read a page at a time, and the files of a page go in
//! transactions of [`Meta::removal_batch`] entries each ([`Meta::unlink_entries`]: one
//! round trip reads the directory, the entries and their inodes; one commit), one batch
//! after another within a directory: on Redis a directory's entries are one hash that
//! each removal watches, so batches of one directory in parallel would only collide.
//! Subdirectories are emptied in parallel instead, up to `threads` at a time (a scoped
//! thread each while one is free, in the finding thread otherwise), and each is removed
//! by the thread that emptied it. The next page starts after the last name of the one
//! before, so a subdirectory still being emptied is not taken twice. The first error
//! stops the walk; entries removed meanwhile by another client are skipped.

use crate::error::{Error, Result};
use crate::meta::Meta;
use crate::types::*;
use libc::ENOENT;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::{Scope, ScopedJoinHandle};

/// Entries of a directory read at a time.
const PAGE: usize = 1000;

struct Remover<'a> {
    meta: &'a Meta,
    ctx: &'a Ctx,
    to_trash: bool,
    removed: &'a AtomicU64,
    threads: usize,
    /// Threads working besides the caller's.
    busy: AtomicUsize,
    failed: Mutex<Option<Error>>,
}

impl Meta {
    /// Entries one removal transaction takes: etcd caps a transaction at 128
    /// operations, and an entry may cost several.
    pub(crate) fn removal_batch(&self) -> usize {
        if self.kv.engine_name() == "etcd" {
            8
        } else {
            100
        }
    }

    /// Removes everything below directory `dir` (into the trash when it is on and
    /// `to_trash`; for good otherwise, and in the trash), with up to `threads`
    /// directories emptied at a time; `removed` counts the entries as they go.
    /// `ctx`'s rights are checked on every directory when it asks for checks.
    pub fn empty_dir(
        &self,
        ctx: &Ctx,
        dir: Ino,
        threads: usize,
        to_trash: bool,
        removed: &AtomicU64,
    ) -> Result<()> {
        let r = Remover {
            meta: self,
            ctx,
            to_trash,
            removed,
            threads: threads.clamp(1, 256),
            busy: AtomicUsize::new(0),
            failed: Mutex::new(None),
        };
        std::thread::scope(|s| r.empty(s, dir));
        r.failed.into_inner().map_or(Ok(()), Err)
    }
}

impl Remover<'_> {
    fn fail(&self, e: Error) {
        self.failed.lock().get_or_insert(e);
    }

    fn stopped(&self) -> bool {
        self.failed.lock().is_some()
    }

    /// Empties `dir`; returns when the subdirectories it handed to other threads are
    /// gone too (or the walk failed).
    fn empty<'s, 'e: 's>(&'e self, s: &'s Scope<'s, 'e>, dir: Ino) {
        let mut handed: Vec<ScopedJoinHandle<'s, ()>> = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        while !self.stopped() {
            let page = match self
                .meta
                .readdir(self.ctx, dir, after.as_deref(), PAGE, false)
            {
                Ok(p) => p,
                Err(e) => return self.fail(e),
            };
            let Some(last) = page.last() else { break };
            after = Some(last.name.clone());
            let (dirs, files): (Vec<Entry>, Vec<Entry>) =
                page.into_iter().partition(|e| e.typ == FileType::Directory);
            for batch in files.chunks(self.meta.removal_batch()) {
                if let Err(e) = self.unlink_batch(dir, batch) {
                    return self.fail(e);
                }
            }
            for d in dirs {
                if self.busy.fetch_add(1, Ordering::SeqCst) < self.threads - 1 {
                    handed.push(s.spawn(move || {
                        self.remove_dir(s, dir, &d);
                        self.busy.fetch_sub(1, Ordering::SeqCst);
                    }));
                } else {
                    self.busy.fetch_sub(1, Ordering::SeqCst);
                    self.remove_dir(s, dir, &d);
                }
            }
        }
        for h in handed {
            let _ = h.join();
        }
    }

    /// Empties subdirectory `d` of `parent`, then removes it.
    fn remove_dir<'s, 'e: 's>(&'e self, s: &'s Scope<'s, 'e>, parent: Ino, d: &Entry) {
        self.empty(s, d.ino);
        if self.stopped() {
            return;
        }
        match self.meta.rmdir_as(self.ctx, parent, &d.name, self.to_trash) {
            Ok(()) => {
                self.removed.fetch_add(1, Ordering::Relaxed);
            }
            Err(Error::Sys(ENOENT)) => {}
            Err(e) => self.fail(e),
        }
    }

    /// Removes a batch of files of `dir` in one transaction, or one by one when the
    /// engine refuses the batch as a whole (a transaction too large for it).
    fn unlink_batch(&self, dir: Ino, batch: &[Entry]) -> Result<()> {
        let names: Vec<(&[u8], Option<Ino>)> =
            batch.iter().map(|e| (&e.name[..], Some(e.ino))).collect();
        let outcomes = match self
            .meta
            .unlink_entries(self.ctx, dir, &names, self.to_trash)
        {
            Ok(o) => o,
            Err(Error::Sys(e)) => return Err(Error::Sys(e)),
            Err(e) if names.len() == 1 => return Err(e),
            Err(e) => {
                tracing::debug!(
                    "a removal of {} entries failed ({e}); one by one",
                    names.len()
                );
                let mut outcomes = Vec::with_capacity(names.len());
                for n in &names {
                    outcomes.extend(self.meta.unlink_entries(
                        self.ctx,
                        dir,
                        &[*n],
                        self.to_trash,
                    )?);
                }
                outcomes
            }
        };
        for outcome in outcomes {
            match outcome {
                Ok(()) => {
                    self.removed.fetch_add(1, Ordering::Relaxed);
                }
                // Removed meanwhile by someone else.
                Err(Error::Sys(ENOENT)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
