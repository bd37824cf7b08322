//! A fault-injecting store for tests of the layers above.
//!
//! Upload pools, readers and background jobs must survive a storage that fails now and
//! then (retry), fails for good (report, never lose committed data) or is slow (bounded
//! memory, no deadlock). [`FaultStore`] wraps any store and, on command, makes the next
//! N puts or gets fail with [`Error::Temporary`], makes all of them fail with
//! [`Error::Permanent`] while a switch is on, delays puts or gets, or holds durability
//! barriers until released; it counts the calls it
//! sees so a test can assert how often the layer above tried. All knobs are atomics,
//! so a test flips them from outside while the code under test runs.

use crate::{Error, ObjectInfo, ObjectStore, Result};
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Wraps a store and injects failures and delays into it.
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    fail_puts: AtomicUsize,
    fail_gets: AtomicUsize,
    broken_puts: AtomicBool,
    broken_gets: AtomicBool,
    put_delay: Mutex<Duration>,
    get_delay: Mutex<Duration>,
    held_syncs: AtomicBool,
    puts: AtomicUsize,
    gets: AtomicUsize,
    deletes: AtomicUsize,
    syncs: AtomicUsize,
}

/// Takes one from a countdown if it is above zero.
fn take_one(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

impl FaultStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            fail_puts: AtomicUsize::new(0),
            fail_gets: AtomicUsize::new(0),
            broken_puts: AtomicBool::new(false),
            broken_gets: AtomicBool::new(false),
            put_delay: Mutex::new(Duration::ZERO),
            get_delay: Mutex::new(Duration::ZERO),
            held_syncs: AtomicBool::new(false),
            puts: AtomicUsize::new(0),
            gets: AtomicUsize::new(0),
            deletes: AtomicUsize::new(0),
            syncs: AtomicUsize::new(0),
        }
    }

    /// The next `n` puts fail with [`Error::Temporary`] without reaching the inner
    /// store (replaces any count still pending).
    pub fn fail_puts(&self, n: usize) {
        self.fail_puts.store(n, Ordering::SeqCst);
    }

    /// The next `n` gets fail with [`Error::Temporary`].
    pub fn fail_gets(&self, n: usize) {
        self.fail_gets.store(n, Ordering::SeqCst);
    }

    /// While on, every put fails with [`Error::Permanent`].
    pub fn break_puts(&self, on: bool) {
        self.broken_puts.store(on, Ordering::SeqCst);
    }

    /// While on, every get fails with [`Error::Permanent`].
    pub fn break_gets(&self, on: bool) {
        self.broken_gets.store(on, Ordering::SeqCst);
    }

    /// Every later put waits `d` before doing anything (zero: no delay).
    pub fn set_put_delay(&self, d: Duration) {
        *self.put_delay.lock() = d;
    }

    /// Every later get waits `d` before doing anything (zero: no delay).
    pub fn set_get_delay(&self, d: Duration) {
        *self.get_delay.lock() = d;
    }

    /// While on, every sync waits (counted as asked) until it is turned off.
    pub fn hold_syncs(&self, on: bool) {
        self.held_syncs.store(on, Ordering::SeqCst);
    }

    /// Puts attempted so far, failed ones included.
    pub fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }

    /// Gets attempted so far, failed ones included (heads are not counted).
    pub fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }

    /// Deletes attempted so far.
    pub fn deletes(&self) -> usize {
        self.deletes.load(Ordering::SeqCst)
    }

    /// Durability barriers asked so far.
    pub fn syncs(&self) -> usize {
        self.syncs.load(Ordering::SeqCst)
    }

    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    fn describe(&self) -> String {
        format!("fault+{}", self.inner.describe())
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        let delay = *self.put_delay.lock();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.broken_puts.load(Ordering::SeqCst) {
            return Err(Error::Permanent(format!("injected: put {key} broken")));
        }
        if take_one(&self.fail_puts) {
            return Err(Error::Temporary(format!("injected: put {key} failed")));
        }
        self.inner.put(key, data).await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        let delay = *self.get_delay.lock();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.broken_gets.load(Ordering::SeqCst) {
            return Err(Error::Permanent(format!("injected: get {key} broken")));
        }
        if take_one(&self.fail_gets) {
            return Err(Error::Temporary(format!("injected: get {key} failed")));
        }
        self.inner.get(key, range).await
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        self.inner.head(key).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.deletes.fetch_add(1, Ordering::SeqCst);
        self.inner.delete(key).await
    }

    async fn sync(&self) -> Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        while self.held_syncs.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.inner.sync().await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix, start_after, limit).await
    }
}
