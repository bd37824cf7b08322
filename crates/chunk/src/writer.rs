//! [`SliceWriter`]: writing one slice as blocks.
//!
//! The writer copies appended bytes into the current block, reserving buffer budget for
//! them first (waiting if the store's `buffer_size` is used up). The moment a block is
//! full it is handed, with its reservation, to a background upload task, so a big slice
//! streams out while it is being written and memory stays bounded; the budget returns
//! when the upload ends. [`SliceWriter::finish`] uploads the last partial block, waits
//! for every upload and, when blocks went to the object store, asks it to make them
//! durable (one sync of a local directory for the whole slice, not one per block): only
//! its `Ok` means the slice is durable and may be committed to metadata. The first
//! failed upload marks the slice failed: later appends and `finish` return that error,
//! and the other uploads of the slice stop retrying, since a slice with a missing block
//! can never be committed. [`SliceWriter::abort`] (or dropping an unfinished writer)
//! stops the uploads and deletes the blocks already stored, so nothing of a slice that
//! was never committed is left behind.

use crate::buffer::Reservation;
use crate::key::blocks;
use crate::store::{Inner, Stored};
use crate::{Error, Result, MAX_SLICE_SIZE};
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::task::JoinHandle;

/// What the uploads of one slice share with its writer.
#[derive(Default)]
struct SliceState {
    /// The first upload error; the slice can no longer be committed.
    failure: Mutex<Option<Error>>,
    /// Set on abort or failure: uploads not yet done stop (without storing).
    cancel: AtomicBool,
}

impl SliceState {
    fn fail(&self, e: Error) {
        self.failure.lock().get_or_insert(e);
        self.cancel.store(true, Ordering::Release);
    }

    fn failure(&self) -> Option<Error> {
        self.failure.lock().clone()
    }
}

#[derive(Debug, Clone)]
enum Phase {
    Writing,
    Finished,
    Failed(Error),
    /// Aborted or cleaned up; nothing left to do on drop.
    Done,
}

/// Writes one slice. Made by [`crate::ChunkStore::writer`].
pub struct SliceWriter {
    inner: Arc<Inner>,
    id: u64,
    /// Bytes appended so far.
    len: u32,
    /// Bytes handed to upload tasks (the blocks whose keys exist or may exist).
    handed_off: u32,
    /// The block being filled.
    block: BytesMut,
    /// Buffer budget held for `block`.
    reserved: Reservation,
    next_index: u32,
    uploads: Vec<JoinHandle<Result<Stored>>>,
    /// A block went to the object store since its last sync.
    unsynced: bool,
    state: Arc<SliceState>,
    phase: Phase,
}

impl SliceWriter {
    pub(crate) fn new(inner: Arc<Inner>, id: u64) -> Self {
        let reserved = inner.buffer.empty();
        Self {
            inner,
            id,
            len: 0,
            handed_off: 0,
            block: BytesMut::new(),
            reserved,
            next_index: 0,
            uploads: Vec::new(),
            unsynced: false,
            state: Arc::new(SliceState::default()),
            phase: Phase::Writing,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Bytes appended so far.
    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `data`. Waits for buffer space rather than growing past `buffer_size`;
    /// every block that becomes full is uploaded at once in a background task (at most
    /// `max_uploads` PUTs in flight across the store). Data larger than the buffer
    /// goes through block by block. Fails if an earlier upload of this slice failed or
    /// the slice would exceed 64 MiB. If the future is dropped midway, [`len`](Self::len)
    /// tells how much was taken.
    pub async fn append(&mut self, mut data: &[u8]) -> Result<()> {
        self.check_writing()?;
        if self.len as u64 + data.len() as u64 > MAX_SLICE_SIZE as u64 {
            return Err(Error::Invalid(format!(
                "slice {} would grow to {} bytes, over the 64 MiB limit",
                self.id,
                self.len as u64 + data.len() as u64
            )));
        }
        let bs = self.inner.cfg.block_size;
        while !data.is_empty() {
            if let Some(e) = self.state.failure() {
                self.phase = Phase::Failed(e.clone());
                return Err(e);
            }
            let n = (bs - self.block.len()).min(data.len());
            // Reserve before copying: the budget bounds bytes actually held.
            let res = self.inner.buffer.reserve(n).await?;
            self.grow_block(n, bs);
            self.block.extend_from_slice(&data[..n]);
            self.reserved.merge(res);
            self.len += n as u32;
            data = &data[n..];
            if self.block.len() == bs {
                self.upload_block();
            }
        }
        Ok(())
    }

    /// Uploads the last partial block, waits until every block is durable and returns
    /// the slice size. Only after this returns `Ok` may the caller commit the slice to
    /// metadata. Calling it again returns the same outcome; it is safe to drop the
    /// future and call it again.
    pub async fn finish(&mut self) -> Result<u32> {
        match &self.phase {
            Phase::Writing => {}
            Phase::Finished => return Ok(self.len),
            Phase::Failed(e) => return Err(e.clone()),
            Phase::Done => return Err(Error::Aborted(self.id)),
        }
        if !self.block.is_empty() {
            self.upload_block();
        }
        // Awaited in place and popped only when done, so a dropped `finish` loses
        // nothing.
        while let Some(h) = self.uploads.last_mut() {
            let r = h.await;
            self.uploads.pop();
            match r {
                Ok(Ok(Stored::InStore)) => self.unsynced = true,
                Ok(Ok(Stored::Staged)) => {}
                Ok(Err(e)) => self.state.fail(e),
                Err(e) => self.state.fail(Error::Internal(format!(
                    "upload task of slice {}: {e}",
                    self.id
                ))),
            }
        }
        if self.unsynced && self.state.failure().is_none() {
            match self.inner.store.sync().await {
                Ok(()) => self.unsynced = false,
                Err(e) => self.state.fail(e.into()),
            }
        }
        if let Some(e) = self.state.failure() {
            self.phase = Phase::Failed(e.clone());
            return Err(e);
        }
        self.phase = Phase::Finished;
        Ok(self.len)
    }

    /// Gives up: releases buffers, stops pending uploads and deletes every block
    /// already uploaded (errors are logged; gc collects what could not be deleted).
    /// Also usable after a successful `finish` whose metadata commit failed — never on
    /// a slice that was committed.
    pub async fn abort(mut self) {
        self.phase = Phase::Done;
        let cleanup = self.take_cleanup();
        cleanup.run().await;
    }

    fn check_writing(&self) -> Result<()> {
        match &self.phase {
            Phase::Writing => Ok(()),
            Phase::Failed(e) => Err(e.clone()),
            Phase::Finished => Err(Error::Invalid(format!(
                "slice {} is finished; appends need a new slice",
                self.id
            ))),
            Phase::Done => Err(Error::Aborted(self.id)),
        }
    }

    /// Makes room for `n` more bytes in the block being filled. Capacity is memory,
    /// not only address space (an allocator hands back freed memory still resident),
    /// so a block grows with its data: doubling while it is small, and straight to the
    /// whole block size once it holds a megabyte (a sequential writer then costs one
    /// copy of that megabyte per block). A thousand files with a few KiB each written
    /// hold a few KiB each, not a block each.
    fn grow_block(&mut self, n: usize, bs: usize) {
        const SMALL: usize = 64 << 10;
        const SEQUENTIAL: usize = 1 << 20;
        let need = self.block.len() + n;
        if need <= self.block.capacity() {
            return;
        }
        let target = if self.block.len() >= SEQUENTIAL {
            bs
        } else {
            need.next_power_of_two().max(SMALL).min(bs)
        };
        self.block.reserve(target - self.block.len());
    }

    /// Hands the current block, with its buffer reservation, to an upload task.
    fn upload_block(&mut self) {
        let block = std::mem::take(&mut self.block);
        // A short last block would pin a whole block's allocation in the cache; copy it.
        let data: Bytes = if block.len() < block.capacity() / 2 {
            Bytes::copy_from_slice(&block)
        } else {
            block.freeze()
        };
        let res = self.reserved.take();
        let len = data.len() as u32;
        let key = self.inner.key(self.id, self.next_index, len);
        self.next_index += 1;
        self.handed_off += len;
        let (inner, state, id) = (self.inner.clone(), self.state.clone(), self.id);
        self.uploads.push(tokio::spawn(async move {
            let r = inner.upload(&key, data, id, &state.cancel).await;
            // The bytes leave the buffer budget only now that the upload has ended.
            drop(res);
            match &r {
                Err(Error::Aborted(_)) => {}
                Err(e) => {
                    tracing::warn!("upload of {key} failed: {e}");
                    state.fail(e.clone());
                }
                Ok(_) => tracing::trace!("uploaded {key}"),
            }
            r
        }));
    }

    /// Moves everything cleanup needs out of the writer and releases its buffer.
    fn take_cleanup(&mut self) -> Cleanup {
        self.block = BytesMut::new();
        drop(self.reserved.take());
        Cleanup {
            inner: self.inner.clone(),
            id: self.id,
            size: self.handed_off,
            uploads: std::mem::take(&mut self.uploads),
            state: self.state.clone(),
        }
    }
}

impl Drop for SliceWriter {
    /// A writer dropped before a successful `finish` is aborted in the background:
    /// its blocks can never be committed, so they are garbage.
    fn drop(&mut self) {
        if matches!(self.phase, Phase::Writing | Phase::Failed(_)) && self.handed_off > 0 {
            self.phase = Phase::Done;
            let cleanup = self.take_cleanup();
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn(cleanup.run());
                }
                Err(_) => {
                    cleanup.state.cancel.store(true, Ordering::Release);
                    tracing::warn!(
                        "slice {} dropped outside a runtime; its blocks are left for gc",
                        cleanup.id
                    );
                }
            }
        }
    }
}

impl fmt::Debug for SliceWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SliceWriter")
            .field("id", &self.id)
            .field("len", &self.len)
            .field("uploading", &self.uploads.len())
            .field("phase", &self.phase)
            .finish()
    }
}

/// The work of an abort, detached from the writer so `Drop` can spawn it.
struct Cleanup {
    inner: Arc<Inner>,
    id: u64,
    size: u32,
    uploads: Vec<JoinHandle<Result<Stored>>>,
    state: Arc<SliceState>,
}

impl Cleanup {
    async fn run(self) {
        self.state.cancel.store(true, Ordering::Release);
        // Wait for PUTs already on the wire, or one could land after its delete.
        for h in self.uploads {
            let _ = h.await;
        }
        for (index, len) in blocks(self.size, self.inner.cfg.block_size) {
            let key = self.inner.key(self.id, index, len);
            if let Err(e) = self.inner.delete(&key, None).await {
                tracing::warn!("cannot delete block {key} of aborted slice: {e}; gc will");
            }
        }
    }
}
