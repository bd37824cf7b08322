//! File locks as the kernel asks for them: BSD flock and POSIX byte-range locks, taken in
//! the metadata engine ([`nectar_meta::locks`]) so every mount of a volume contends for
//! the same locks.
//!
//! The metadata calls make one attempt; this layer adds what a process expects around
//! them. A blocking request (F_SETLKW, `flock` without LOCK_NB) retries with a back-off
//! from 1 ms to 50 ms, and wakes at once when a lock is released on this client; it ends
//! with EINTR when the caller says the request was interrupted (the kernel forwards the
//! signal of the waiting process) or when the mount shuts down. Releases follow the
//! kernel's rules: a flock belongs to an open file description, so it goes when its
//! handle is released; POSIX locks belong to a process, so closing any descriptor of the
//! file (a FUSE flush carrying that lock owner) drops all of that owner's ranges. Each
//! client remembers which owners hold locks, so an ordinary close costs no transaction.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use nectar_meta::locks::{PlockRecord, F_UNLCK};
use nectar_meta::Ino;
use parking_lot::{Condvar, Mutex};

use crate::error::{sys, Result};
use crate::Vfs;

const FIRST_RETRY: Duration = Duration::from_millis(1);
const LAST_RETRY: Duration = Duration::from_millis(50);

/// The locks this client took, so releases know what to drop.
#[derive(Default)]
pub(crate) struct LockState {
    /// File handle → (inode, lock owner) of the flock taken through it.
    flocks: Mutex<HashMap<u64, (Ino, u64)>>,
    /// (inode, lock owner) pairs that hold POSIX ranges through this client.
    posix: Mutex<HashSet<(Ino, u64)>>,
    /// Bumped whenever this client releases a lock; waiters sleep on it.
    released: Mutex<u64>,
    wake: Condvar,
}

impl LockState {
    fn notify_release(&self) {
        *self.released.lock() += 1;
        self.wake.notify_all();
    }

    /// Sleeps until a local release or `timeout`.
    fn sleep(&self, timeout: Duration) {
        let mut gen = self.released.lock();
        let seen = *gen;
        let _ = self.wake.wait_while_for(&mut gen, |g| *g == seen, timeout);
    }
}

impl Vfs {
    /// Runs `attempt` until it grants the lock; without `wait`, a refusal is EAGAIN.
    fn acquire(
        &self,
        wait: bool,
        interrupted: &dyn Fn() -> bool,
        mut attempt: impl FnMut() -> Result<bool>,
    ) -> Result<()> {
        let mut delay = FIRST_RETRY;
        loop {
            if attempt()? {
                return Ok(());
            }
            if !wait {
                return sys(libc::EAGAIN);
            }
            if interrupted() || self.is_stopped() {
                return sys(libc::EINTR);
            }
            self.locks.sleep(delay);
            delay = (delay * 2).min(LAST_RETRY);
        }
    }

    /// `flock(2)` on the open file `fh`: `typ` is F_RDLCK (LOCK_SH), F_WRLCK (LOCK_EX) or
    /// F_UNLCK (LOCK_UN); `owner` is the kernel's id of the open file description.
    pub fn flock(
        &self,
        fh: u64,
        owner: u64,
        typ: u32,
        wait: bool,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<()> {
        let ino = self.handle(fh)?.ino;
        if typ == F_UNLCK {
            self.meta.try_flock(ino, owner, F_UNLCK)?;
            self.locks.flocks.lock().remove(&fh);
            self.locks.notify_release();
            return Ok(());
        }
        self.acquire(wait, interrupted, || {
            Ok(self.meta.try_flock(ino, owner, typ)?)
        })?;
        self.locks.flocks.lock().insert(fh, (ino, owner));
        Ok(())
    }

    /// F_GETLK: the lock of another owner that would block `typ` over `[start, end]`.
    pub fn getlk(
        &self,
        fh: u64,
        owner: u64,
        typ: u32,
        start: u64,
        end: u64,
    ) -> Result<Option<PlockRecord>> {
        let ino = self.handle(fh)?.ino;
        Ok(self.meta.getlk(ino, owner, typ, start, end)?)
    }

    /// F_SETLK / F_SETLKW (`wait`): locks, converts or unlocks `[start, end]` for `owner`.
    #[allow(clippy::too_many_arguments)]
    pub fn setlk(
        &self,
        fh: u64,
        owner: u64,
        typ: u32,
        start: u64,
        end: u64,
        pid: u32,
        wait: bool,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<()> {
        let ino = self.handle(fh)?.ino;
        if typ == F_UNLCK {
            self.meta.try_setlk(ino, owner, typ, start, end, pid)?;
            self.locks.notify_release();
            return Ok(());
        }
        self.acquire(wait, interrupted, || {
            Ok(self.meta.try_setlk(ino, owner, typ, start, end, pid)?)
        })?;
        self.locks.posix.lock().insert((ino, owner));
        Ok(())
    }

    /// A descriptor of the file behind `fh` was closed by `owner`: POSIX says all of the
    /// owner's locks on the file go.
    pub fn release_posix_locks(&self, fh: u64, owner: u64) -> Result<()> {
        let ino = self.handle(fh)?.ino;
        if !self.locks.posix.lock().remove(&(ino, owner)) {
            return Ok(());
        }
        self.meta.try_setlk(ino, owner, F_UNLCK, 0, u64::MAX, 0)?;
        self.locks.notify_release();
        Ok(())
    }

    /// The open file description `fh` is gone: its flock goes with it.
    pub(crate) fn release_flock(&self, fh: u64) -> Result<()> {
        let Some((ino, owner)) = self.locks.flocks.lock().remove(&fh) else {
            return Ok(());
        };
        self.meta.try_flock(ino, owner, F_UNLCK)?;
        self.locks.notify_release();
        Ok(())
    }
}
