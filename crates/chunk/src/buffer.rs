//! Exact accounting of buffered bytes.
//!
//! `buffer_size` bounds the bytes a client holds for writes not yet durable plus
//! prefetches in flight. It is a semaphore with one permit per byte: bytes are reserved
//! *before* they are copied into a buffer or fetched, the [`Reservation`] travels with
//! the data (writer -> upload task, or into a prefetch task), and it returns its permits
//! when dropped — when the upload or fetch ends, whether it succeeded, failed, or its
//! task was cancelled. So `used()` is exact and can never exceed the capacity, and a
//! writer that finds no room waits for an upload to end instead of growing.

use crate::{Error, Result};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// The shared budget of buffer bytes.
pub(crate) struct BufferPool {
    sem: Arc<Semaphore>,
    capacity: usize,
}

impl BufferPool {
    pub(crate) fn new(capacity: u64) -> Self {
        let capacity = usize::try_from(capacity)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self {
            sem: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.capacity as u64
    }

    /// Bytes reserved now.
    pub(crate) fn used(&self) -> u64 {
        (self.capacity - self.sem.available_permits()) as u64
    }

    /// A reservation of nothing, to merge others into.
    pub(crate) fn empty(&self) -> Reservation {
        Reservation {
            sem: self.sem.clone(),
            n: 0,
        }
    }

    /// Waits until `n` bytes are free and reserves them. `n` must not exceed the
    /// capacity (the caller asks for at most one block, and the capacity is at least
    /// one block), or this would wait forever; that is refused instead.
    pub(crate) async fn reserve(&self, n: usize) -> Result<Reservation> {
        if n > self.capacity {
            return Err(Error::Invalid(format!(
                "cannot reserve {n} bytes of a {} byte buffer",
                self.capacity
            )));
        }
        let permits = u32::try_from(n)
            .map_err(|_| Error::Invalid(format!("buffer reservation of {n} bytes")))?;
        let permit = self
            .sem
            .acquire_many(permits)
            .await
            .map_err(|_| Error::Internal("buffer semaphore closed".into()))?;
        // The permits now belong to the Reservation, which gives them back on drop.
        permit.forget();
        Ok(Reservation {
            sem: self.sem.clone(),
            n,
        })
    }

    /// Reserves `n` bytes if they are free now (prefetch never waits).
    pub(crate) fn try_reserve(&self, n: usize) -> Option<Reservation> {
        let permits = u32::try_from(n).ok()?;
        let permit = self.sem.try_acquire_many(permits).ok()?;
        permit.forget();
        Some(Reservation {
            sem: self.sem.clone(),
            n,
        })
    }
}

/// Reserved buffer bytes; returned to the pool when dropped.
pub(crate) struct Reservation {
    sem: Arc<Semaphore>,
    n: usize,
}

impl Reservation {
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.n
    }

    /// Takes over the bytes of `other`.
    pub(crate) fn merge(&mut self, mut other: Reservation) {
        debug_assert!(Arc::ptr_eq(&self.sem, &other.sem));
        self.n += std::mem::take(&mut other.n);
    }

    /// Moves all bytes out into a new reservation, leaving this one empty.
    pub(crate) fn take(&mut self) -> Reservation {
        Reservation {
            sem: self.sem.clone(),
            n: std::mem::take(&mut self.n),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.n > 0 {
            self.sem.add_permits(self.n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn reservations_are_exact_and_returned_on_drop() {
        let pool = BufferPool::new(100);
        let mut a = pool.reserve(30).await.unwrap();
        let b = pool.reserve(70).await.unwrap();
        assert_eq!(pool.used(), 100);
        assert!(pool.try_reserve(1).is_none());
        a.merge(b);
        assert_eq!(a.len(), 100);
        let t = a.take();
        assert_eq!((a.len(), t.len()), (0, 100));
        drop(a);
        assert_eq!(pool.used(), 100);
        drop(t);
        assert_eq!(pool.used(), 0);
        assert!(pool.reserve(101).await.is_err());
    }

    #[tokio::test]
    async fn a_reserver_waits_for_room() {
        let pool = Arc::new(BufferPool::new(10));
        let held = pool.reserve(8).await.unwrap();
        let p2 = pool.clone();
        let waiter = tokio::spawn(async move { p2.reserve(5).await.map(|r| r.len()) });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished());
        drop(held);
        assert_eq!(waiter.await.unwrap().unwrap(), 5);
        assert_eq!(pool.used(), 0);
    }
}
