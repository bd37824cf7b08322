//! An engine wrapper that counts what transactions ask of the engine beneath, so a test
//! can hold each file-system operation to a budget of round trips.
//!
//! What it counts is engine-independent (the layer above makes the same calls on every
//! engine), and maps onto round trips the same way on the server engines: each read
//! call (`get`, `gets`, `scan`, `exists`, and `incr_by`, which reads the old value) is one
//! round trip on Redis (WATCH and GET pipelined, a scan one script or ZRANGEBYLEX plus
//! MGET), etcd (one Range or Txn) and SQL (one statement); writes are buffered and a
//! transaction that may write costs one more round trip to commit (Redis MULTI/EXEC,
//! etcd Txn, SQL COMMIT). Read-only transactions commit nothing.

use crate::error::Result;
use crate::{Follow, Followed, KvEngine, KvTxn, TxnBody};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counts of calls since the wrapper was made or last [`Counts::take`]n.
#[derive(Default, Debug)]
pub struct Counts {
    /// Transaction attempts (a retried transaction counts each attempt).
    attempts: AtomicU64,
    /// Attempts that could write (read-write transactions): each ends in a commit.
    commits: AtomicU64,
    /// Read calls.
    reads: AtomicU64,
    /// Write calls (buffered until the commit).
    writes: AtomicU64,
}

/// A snapshot of [`Counts`].
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub attempts: u64,
    pub commits: u64,
    pub reads: u64,
    pub writes: u64,
}

impl Tally {
    /// Round trips to a server engine: one per read call and one per commit.
    pub fn round_trips(&self) -> u64 {
        self.reads + self.commits
    }
}

impl Counts {
    /// The counts so far, which start again from zero.
    pub fn take(&self) -> Tally {
        Tally {
            attempts: self.attempts.swap(0, Ordering::SeqCst),
            commits: self.commits.swap(0, Ordering::SeqCst),
            reads: self.reads.swap(0, Ordering::SeqCst),
            writes: self.writes.swap(0, Ordering::SeqCst),
        }
    }

    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Wraps an engine and counts every transaction it runs.
pub struct Counting {
    inner: Box<dyn KvEngine>,
    counts: Arc<Counts>,
}

impl Counting {
    pub fn new(inner: Box<dyn KvEngine>) -> Self {
        Counting {
            inner,
            counts: Arc::default(),
        }
    }

    /// The counts, shared with the engine (keep it before handing the engine away).
    pub fn counts(&self) -> Arc<Counts> {
        self.counts.clone()
    }
}

impl KvEngine for Counting {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn attempt(&self, body: &mut TxnBody<'_>, read_only: bool) -> Result<()> {
        Counts::add(&self.counts.attempts);
        if !read_only {
            Counts::add(&self.counts.commits);
        }
        let counts = &self.counts;
        self.inner.attempt(
            &mut |tx| body(&mut CountingTxn { inner: tx, counts }),
            read_only,
        )
    }

    fn reset(&self) -> Result<()> {
        self.inner.reset()
    }

    fn announce_changes(&self, announced: crate::AnnouncedKeys) -> bool {
        self.inner.announce_changes(announced)
    }

    fn follow_changes(&self, follower: &mut crate::FeedFollower<'_>) -> Result<()> {
        self.inner.follow_changes(follower)
    }

    fn packs_domains(&self) -> bool {
        self.inner.packs_domains()
    }

    fn embedded(&self) -> bool {
        self.inner.embedded()
    }
}

struct CountingTxn<'a> {
    inner: &'a mut dyn KvTxn,
    counts: &'a Counts,
}

impl CountingTxn<'_> {
    fn read(&self) {
        Counts::add(&self.counts.reads);
    }

    fn write(&self) {
        Counts::add(&self.counts.writes);
    }
}

impl KvTxn for CountingTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read();
        self.inner.get(key)
    }
    fn gets(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        self.read();
        self.inner.gets(keys)
    }
    fn scan(&mut self, begin: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.read();
        self.inner.scan(begin, end, limit)
    }
    fn gets_and_follow(&mut self, keys: &[Vec<u8>], follow: &Follow) -> Result<Followed> {
        // Two reads when a key was followed: what it costs on every engine but Redis,
        // which follows in the same script (the worst case is the one held to budget).
        self.read();
        let out = self.inner.gets_and_follow(keys, follow)?;
        if out.1.is_some() {
            self.read();
        }
        Ok(out)
    }
    fn scans(&mut self, ranges: &[(&[u8], &[u8], usize)]) -> Result<Vec<crate::Scanned>> {
        // One read per range: what it costs on every engine but Redis, which sends them
        // together (the worst case is the one held to budget).
        for _ in ranges {
            self.read();
        }
        self.inner.scans(ranges)
    }
    fn exists(&mut self, begin: &[u8], end: &[u8]) -> Result<bool> {
        self.read();
        self.inner.exists(begin, end)
    }
    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.write();
        self.inner.set(key, value)
    }
    fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.write();
        self.inner.delete(key)
    }
    fn append(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        // Engines append by reading the value (Redis, SQL: in the commit's statement).
        self.write();
        self.inner.append(key, value)
    }
    fn incr_by(&mut self, key: &[u8], delta: i64) -> Result<i64> {
        self.read();
        self.write();
        self.inner.incr_by(key, delta)
    }
    fn incr_later(&mut self, key: &[u8], delta: i64) -> Result<()> {
        self.inner.incr_later(key, delta)
    }
    fn claim(&mut self, key: &[u8], amount: i64, budget: &[u8]) -> Result<bool> {
        self.inner.claim(key, amount, budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryEngine;
    use crate::Kv;

    #[test]
    fn counts_calls_and_commits_per_transaction() {
        let engine = Counting::new(Box::new(MemoryEngine::new()));
        let counts = engine.counts();
        let kv: Kv = Kv::new(Box::new(engine));
        kv.txn(|tx| {
            tx.get(b"a")?;
            tx.gets(&[b"b".to_vec(), b"c".to_vec()])?;
            tx.set(b"a", b"1")?;
            tx.incr_by(b"n", 1)?;
            tx.delete(b"b")
        })
        .unwrap();
        let t = counts.take();
        assert_eq!(
            t,
            Tally {
                attempts: 1,
                commits: 1,
                reads: 3,
                writes: 3
            }
        );
        assert_eq!(t.round_trips(), 4);
        kv.read(|tx| tx.scan(b"a", b"z", 10)).unwrap();
        assert_eq!(counts.take().round_trips(), 1, "a read commits nothing");
        assert_eq!(counts.take(), Tally::default());
    }
}
