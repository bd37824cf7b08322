//! The transactional key-value interface every metadata engine implements.
//!
//! All file-system logic is written once against [`KvTxn`]; an engine only has to run a
//! closure as one serializable transaction ([`KvEngine::attempt`]). [`Kv`] adds what is
//! common to all engines: retrying a transaction that lost an optimistic race (up to 50
//! tries with growing random backoff), retrying while the database is unreachable (until
//! a deadline, [`DEFAULT_RETRY_TIMEOUT`] unless configured), a read-only fast path,
//! helpers for counters, and the client's unflushed usage deltas ([`KvTxn::add_usage`]).
//! Keys and values are opaque bytes; the key schema lives in `keys.rs`.

pub mod etcd;
pub mod memory;
pub mod redis;
pub mod sql;
pub mod sqlite;
#[cfg(feature = "tikv")]
pub mod tikv;

use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// Operations available inside one transaction. Writes are visible to later reads of
/// the same transaction and become visible to others only when it commits.
pub trait KvTxn {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Values of several keys at once, in the order asked.
    fn gets(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|k| self.get(k)).collect()
    }
    /// Pairs with `begin <= key < end` in key order, at most `limit` of them. To resume,
    /// call again with `begin` set to the last key returned followed by a zero byte.
    fn scan(&mut self, begin: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<()>;
    fn delete(&mut self, key: &[u8]) -> Result<()>;
    /// Appends bytes to a value (creating it when absent).
    fn append(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut v = self.get(key)?.unwrap_or_default();
        v.extend_from_slice(value);
        self.set(key, &v)
    }
    /// Adds `delta` to a counter stored as i64 little-endian (absent = 0) and returns the
    /// new value. Little-endian is what JuiceFS's transactional-KV engines store.
    fn incr_by(&mut self, key: &[u8], delta: i64) -> Result<i64> {
        let old = match self.get(key)? {
            Some(v) => parse_counter(&v)?,
            None => 0,
        };
        let new = old.wrapping_add(delta);
        if delta != 0 {
            self.set(key, &new.to_le_bytes())?;
        }
        Ok(new)
    }
    /// Whether any key exists in [begin, end).
    fn exists(&mut self, begin: &[u8], end: &[u8]) -> Result<bool> {
        Ok(!self.scan(begin, end, 1)?.is_empty())
    }
    /// Records a change of the volume's used space (bytes) and inode count. Inside
    /// [`Kv::txn`] the change is kept in the client's memory when the transaction commits
    /// (see [`Kv::pending_usage`]) and written to the counters later, in a small
    /// transaction of its own, so concurrent transactions never conflict on the two
    /// counters. A bare engine transaction writes the counters at once.
    fn add_usage(&mut self, space: i64, inodes: i64) -> Result<()> {
        if space != 0 {
            self.incr_by(&crate::keys::counter("usedSpace"), space)?;
        }
        if inodes != 0 {
            self.incr_by(&crate::keys::counter("totalInodes"), inodes)?;
        }
        Ok(())
    }
}

/// An engine transaction as the runner hands it to a body: everything goes to the
/// engine except usage changes, which are collected and applied only if it commits.
struct Tracked<'a> {
    inner: &'a mut dyn KvTxn,
    space: i64,
    inodes: i64,
    /// Which keys' writes to report when the transaction commits (see
    /// [`Kv::watch_commits`]), and those writes (`None`: deleted).
    watched: Option<WatchedKeys>,
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Tracked<'_> {
    fn note(&mut self, key: &[u8], value: Option<&[u8]>) {
        if self.watched.is_some_and(|w| w(key)) {
            self.writes.push((key.to_vec(), value.map(<[u8]>::to_vec)));
        }
    }
}

impl KvTxn for Tracked<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn gets(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        self.inner.gets(keys)
    }
    fn scan(&mut self, begin: &[u8], end: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.scan(begin, end, limit)
    }
    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.note(key, Some(value));
        self.inner.set(key, value)
    }
    fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.note(key, None);
        self.inner.delete(key)
    }
    fn append(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        debug_assert!(
            !self.watched.is_some_and(|w| w(key)),
            "append to a watched key"
        );
        self.inner.append(key, value)
    }
    fn incr_by(&mut self, key: &[u8], delta: i64) -> Result<i64> {
        self.inner.incr_by(key, delta)
    }
    fn exists(&mut self, begin: &[u8], end: &[u8]) -> Result<bool> {
        self.inner.exists(begin, end)
    }
    fn add_usage(&mut self, space: i64, inodes: i64) -> Result<()> {
        self.space += space;
        self.inodes += inodes;
        Ok(())
    }
}

/// The runtime a networked engine's client library runs on, its threads named
/// `nectar-<engine>`: requests block the calling thread on it (`block_on`) while the
/// library's connection tasks run on its two workers. (One worker measured the same
/// within this machine's noise, which is ±40% from run to run for single operations.)
pub(crate) fn engine_runtime(engine: &str) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(format!("nectar-{engine}"))
        .enable_all()
        .build()
        .map_err(|e| {
            Error::engine(
                format!("cannot start the {engine} client runtime: {e}"),
                false,
            )
        })
}

/// Decodes a counter value.
pub fn parse_counter(v: &[u8]) -> Result<i64> {
    let b: [u8; 8] = v
        .try_into()
        .map_err(|_| Error::Corrupt(format!("counter of {} bytes", v.len())))?;
    Ok(i64::from_le_bytes(b))
}

/// A transaction body. It may run several times, so it must not have effects outside
/// the transaction other than filling its own outputs.
pub type TxnBody<'a> = dyn FnMut(&mut dyn KvTxn) -> Result<()> + 'a;

/// A metadata engine: runs one transaction attempt.
pub trait KvEngine: Send + Sync {
    /// The URL scheme or a short name, for messages.
    fn name(&self) -> &'static str;
    /// Runs `body` once as a serializable transaction and commits it. Returns
    /// [`Error::Conflict`] when another transaction interfered (the caller retries).
    /// `read_only` transactions never write and may use a cheaper path.
    fn attempt(&self, body: &mut TxnBody<'_>, read_only: bool) -> Result<()>;
    /// Deletes every key of the volume (used by `format --force` on a broken volume and
    /// by tests).
    fn reset(&self) -> Result<()>;
}

/// Maximum tries of one transaction that keeps losing optimistic races.
const MAX_TRIES: u32 = 50;

/// How long an operation retries while the database is unreachable, unless configured
/// (`nectar mount --meta-retry-timeout`).
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest pause between two tries while the database is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Receives the writes of watched keys of each transaction this client committed, in
/// the order the transaction made them (`None`: the key was deleted).
pub type CommitWatcher = Box<dyn Fn(&[(Vec<u8>, Option<Vec<u8>>)]) + Send + Sync>;

/// Selects the keys whose writes a [`CommitWatcher`] receives.
pub type WatchedKeys = fn(&[u8]) -> bool;

/// The engine plus the retry policy shared by all engines.
pub struct Kv {
    engine: Box<dyn KvEngine>,
    /// The META-URL without its password, for messages.
    url: String,
    retry_timeout: Duration,
    /// Usage changes committed by this client and not yet written to the counters.
    space: AtomicI64,
    inodes: AtomicI64,
    /// Since when transactions of this client have been failing with temporary engine
    /// errors (an outage), to log its start and end once.
    outage: Mutex<Option<Instant>>,
    /// Operations that gave up during the current outage, for [`Kv::gave_up`].
    give_ups: Mutex<GiveUps>,
    /// Which keys' committed writes go to which watcher ([`Kv::watch_commits`]).
    watch: std::sync::OnceLock<(WatchedKeys, CommitWatcher)>,
}

/// Give-ups not logged yet, and when the last one was.
#[derive(Default)]
struct GiveUps {
    logged: Option<Instant>,
    failed: u64,
}

/// How often, at most, an outage logs that operations fail.
const GIVE_UP_LOG_INTERVAL: Duration = Duration::from_secs(60);

impl Kv {
    pub fn new(engine: Box<dyn KvEngine>) -> Self {
        Kv {
            url: engine.name().to_string(),
            engine,
            retry_timeout: DEFAULT_RETRY_TIMEOUT,
            space: AtomicI64::new(0),
            inodes: AtomicI64::new(0),
            outage: Mutex::new(None),
            give_ups: Mutex::default(),
            watch: std::sync::OnceLock::new(),
        }
    }

    /// Reports to `watcher`, after each transaction of this client commits, what it
    /// wrote to the keys `watched` selects (caches above keep what this client wrote).
    /// One watcher per Kv: a second call is ignored and returns false.
    pub fn watch_commits(&self, watched: WatchedKeys, watcher: CommitWatcher) -> bool {
        self.watch.set((watched, watcher)).is_ok()
    }

    /// Names the database in messages (give it a redacted URL).
    pub fn with_url(mut self, url: &str) -> Self {
        self.url = url.to_string();
        self
    }

    /// How long an operation keeps retrying while the engine reports temporary errors
    /// (connection refused or lost, timeouts, failovers, a busy database) before it fails.
    pub fn with_retry_timeout(mut self, timeout: Duration) -> Self {
        self.retry_timeout = timeout;
        self
    }

    pub fn retry_timeout(&self) -> Duration {
        self.retry_timeout
    }

    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    /// Usage changes (space, inodes) committed by this client's transactions through
    /// [`KvTxn::add_usage`] and not yet written to the counters.
    pub fn pending_usage(&self) -> (i64, i64) {
        (
            self.space.load(Ordering::SeqCst),
            self.inodes.load(Ordering::SeqCst),
        )
    }

    /// Takes back usage changes that were written to the counters.
    pub fn settle_usage(&self, space: i64, inodes: i64) {
        self.space.fetch_sub(space, Ordering::SeqCst);
        self.inodes.fetch_sub(inodes, Ordering::SeqCst);
    }

    /// Runs a read-write transaction, retrying conflicts and temporary engine errors.
    pub fn txn<T>(&self, mut f: impl FnMut(&mut dyn KvTxn) -> Result<T>) -> Result<T> {
        self.run(&mut f, false)
    }

    /// Runs a read-only transaction.
    pub fn read<T>(&self, mut f: impl FnMut(&mut dyn KvTxn) -> Result<T>) -> Result<T> {
        self.run(&mut f, true)
    }

    /// Runs `f` until it commits or fails, and records it in the metrics: the latency
    /// of the whole (`nectar_meta_txn_duration_seconds`, by `kind`, retries included),
    /// conflicts that made it start over (`nectar_meta_txn_restarts_total`) and failures
    /// (`nectar_meta_txn_errors_total`; POSIX answers such as ENOENT are not failures).
    fn run<T>(&self, f: &mut dyn FnMut(&mut dyn KvTxn) -> Result<T>, read_only: bool) -> Result<T> {
        let start = Instant::now();
        let kind = if read_only { "read" } else { "write" };
        let res = self.attempts(f, read_only);
        metrics::histogram!("nectar_meta_txn_duration_seconds", "kind" => kind)
            .record(start.elapsed().as_secs_f64());
        if matches!(&res, Err(e) if !matches!(e, Error::Sys(_))) {
            metrics::counter!("nectar_meta_txn_errors_total", "kind" => kind).increment(1);
        }
        res
    }

    fn attempts<T>(
        &self,
        f: &mut dyn FnMut(&mut dyn KvTxn) -> Result<T>,
        read_only: bool,
    ) -> Result<T> {
        let start = Instant::now();
        let (mut conflicts, mut failures) = (0u32, 0u32);
        loop {
            let mut out = None;
            let mut usage = (0, 0);
            let mut writes = Vec::new();
            let watch = self.watch.get();
            let res = self.engine.attempt(
                &mut |tx| {
                    let mut t = Tracked {
                        inner: tx,
                        space: 0,
                        inodes: 0,
                        watched: watch.map(|w| w.0),
                        writes: Vec::new(),
                    };
                    out = Some(f(&mut t)?);
                    usage = (t.space, t.inodes);
                    writes = t.writes;
                    Ok(())
                },
                read_only,
            );
            match res {
                Ok(()) => {
                    if usage != (0, 0) {
                        self.space.fetch_add(usage.0, Ordering::SeqCst);
                        self.inodes.fetch_add(usage.1, Ordering::SeqCst);
                    }
                    if let (Some((_, watcher)), false) = (watch, writes.is_empty()) {
                        watcher(&writes);
                    }
                    if failures > 0 {
                        self.outage_over();
                    }
                    return out
                        .ok_or_else(|| Error::Corrupt("transaction produced no result".into()));
                }
                // Lost an optimistic race: the database is fine, try again soon, a bounded
                // number of times.
                Err(Error::Conflict) => {
                    conflicts += 1;
                    metrics::counter!("nectar_meta_txn_restarts_total").increment(1);
                    if conflicts >= MAX_TRIES {
                        tracing::warn!(
                            "transaction on {} gave up after {MAX_TRIES} conflicting tries",
                            self.engine.name()
                        );
                        return Err(Error::Conflict);
                    }
                    let max_ms = (conflicts * conflicts) as u64;
                    std::thread::sleep(Duration::from_millis(rand::random::<u64>() % max_ms + 1));
                }
                // The database is unreachable, restarting, failing over or busy: wait for
                // it, with backoff, until the deadline.
                Err(e) if e.is_temporary() => {
                    failures += 1;
                    let elapsed = start.elapsed();
                    if elapsed >= Duration::from_secs(1).min(self.retry_timeout) {
                        self.outage_started(&e, start);
                    }
                    if elapsed >= self.retry_timeout {
                        self.gave_up(&e, elapsed);
                        return Err(e);
                    }
                    let exp = Duration::from_millis(10u64 << failures.min(7)).min(MAX_BACKOFF);
                    let jittered = exp / 2 + exp.mul_f64(rand::random::<f64>() / 2.0);
                    std::thread::sleep(jittered.min(self.retry_timeout - elapsed));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Logs once per outage that operations are waiting for the database.
    fn outage_started(&self, e: &Error, since: Instant) {
        let mut o = self.outage.lock();
        if o.is_none() {
            *o = Some(since);
            tracing::info!(
                "metadata engine {} at {} is not answering ({e}); operations wait for it up \
                 to {} s",
                self.engine.name(),
                self.url,
                self.retry_timeout.as_secs_f64()
            );
        }
    }

    /// Logs that an operation failed with EIO after waiting out the retry timeout: the
    /// first time in an outage, then at most once a minute with a count of the failures
    /// in between, so a long outage under load does not flood the log.
    fn gave_up(&self, e: &Error, waited: Duration) {
        let mut g = self.give_ups.lock();
        g.failed += 1;
        if g.logged.is_some_and(|t| t.elapsed() < GIVE_UP_LOG_INTERVAL) {
            return;
        }
        let others = match g.failed - 1 {
            0 => String::new(),
            n => format!(" ({n} other operations failed the same way since the last message)"),
        };
        tracing::warn!(
            "metadata engine {} at {} did not answer for {:.0} s: {e}; the operation fails \
             with EIO{others}. Raise --meta-retry-timeout (now {} s) to wait longer for the \
             database",
            self.engine.name(),
            self.url,
            waited.as_secs_f64(),
            self.retry_timeout.as_secs_f64()
        );
        *g = GiveUps {
            logged: Some(Instant::now()),
            failed: 0,
        };
    }

    fn outage_over(&self) {
        if let Some(since) = self.outage.lock().take() {
            let failed = std::mem::take(&mut *self.give_ups.lock()).failed;
            let unlogged = match failed {
                0 => String::new(),
                n => format!("; {n} more operations failed with EIO meanwhile"),
            };
            tracing::info!(
                "metadata engine {} at {} answers again (after about {:.0} s{unlogged})",
                self.engine.name(),
                self.url,
                since.elapsed().as_secs_f64()
            );
        }
    }

    pub fn reset(&self) -> Result<()> {
        self.engine.reset()
    }
}

/// The smallest key greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

/// Opens the engine named by a META-URL.
pub fn open_engine(url: &str) -> Result<Box<dyn KvEngine>> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        Error::Invalid(format!(
            "invalid META-URL {url:?}: expected SCHEME://..., e.g. sqlite3:///var/lib/nectar/vol.db"
        ))
    })?;
    match scheme {
        "memory" => Ok(Box::new(memory::MemoryEngine::shared(rest))),
        "sqlite3" | "sqlite" => Ok(Box::new(sqlite::SqliteEngine::open(rest)?)),
        "postgres" | "postgresql" | "mysql" => Ok(Box::new(sql::SqlEngine::open(scheme, rest)?)),
        "etcd" => Ok(Box::new(etcd::EtcdEngine::open(rest)?)),
        "redis" | "rediss" => Ok(Box::new(redis::RedisEngine::open(url)?)),
        #[cfg(feature = "tikv")]
        "tikv" => Ok(Box::new(tikv::TikvEngine::open(rest)?)),
        #[cfg(not(feature = "tikv"))]
        "tikv" => Err(Error::Invalid(
            "this build has no TiKV support: rebuild with `cargo build --release --features tikv`"
                .into(),
        )),
        other => Err(Error::Invalid(format!(
            "unknown metadata engine {other:?} in META-URL {}: supported: sqlite3://PATH, \
             redis[s]://HOST:PORT/DB, postgres://USER@HOST:PORT/DB, mysql://USER@HOST:PORT/DB, \
             etcd://HOST:PORT/PREFIX, memory://NAME",
            crate::meta::redact_url(url)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::sys;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    /// A memory engine whose database is down until told otherwise.
    struct Down(Arc<AtomicBool>, memory::MemoryEngine);

    impl KvEngine for Down {
        fn name(&self) -> &'static str {
            "down"
        }
        fn attempt(&self, body: &mut TxnBody<'_>, read_only: bool) -> Result<()> {
            if self.0.load(Ordering::SeqCst) {
                Err(Error::engine("connection refused", true))
            } else {
                self.1.attempt(body, read_only)
            }
        }
        fn reset(&self) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_watcher_sees_the_watched_writes_of_committed_transactions_only() {
        let kv = Kv::new(Box::new(memory::MemoryEngine::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        assert!(kv.watch_commits(
            |k| k.starts_with(b"w"),
            Box::new(move |writes| sink.lock().push(writes.to_vec())),
        ));
        assert!(!kv.watch_commits(|_| true, Box::new(|_| {})), "one watcher");
        kv.txn(|tx| {
            tx.set(b"w1", b"a")?;
            tx.set(b"other", b"b")?;
            tx.delete(b"w2")
        })
        .unwrap();
        // A transaction that fails, one that writes nothing watched, and a read.
        let _ = kv.txn(|tx| {
            tx.set(b"w3", b"c")?;
            sys::<()>(libc::ENOENT)
        });
        kv.txn(|tx| tx.set(b"other", b"d")).unwrap();
        kv.read(|tx| tx.get(b"w1")).unwrap();
        let expected = vec![vec![
            (b"w1".to_vec(), Some(b"a".to_vec())),
            (b"w2".to_vec(), None),
        ]];
        assert_eq!(*seen.lock(), expected);
    }

    #[test]
    fn an_outage_logs_give_ups_once_a_minute_with_a_count() {
        let down = Arc::new(AtomicBool::new(true));
        let engine = Down(down.clone(), memory::MemoryEngine::new());
        // Long enough that the thread bringing the database back (after 50 ms) is
        // scheduled in time on a loaded machine.
        let kv = Kv::new(Box::new(engine)).with_retry_timeout(Duration::from_millis(1000));
        for _ in 0..3 {
            let e = kv.read(|_| Ok(())).unwrap_err();
            assert!(e.is_temporary(), "{e}");
        }
        // The first give-up was logged; the two after it wait for the next message.
        let g = kv.give_ups.lock();
        assert!(g.logged.is_some());
        assert_eq!(g.failed, 2);
        drop(g);
        // The database answers again while an operation waits: the count goes into
        // that message and restarts.
        let up = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            down.store(false, Ordering::SeqCst);
        });
        kv.read(|_| Ok(())).unwrap();
        up.join().unwrap();
        let g = kv.give_ups.lock();
        assert_eq!((g.logged, g.failed), (None, 0));
    }
}
