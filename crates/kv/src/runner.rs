//! [`Kv`]: the transaction runner every engine shares.
//!
//! A body is a closure over [`KvTxn`] that may run several times. The runner hands it to
//! the engine wrapped in [`Tracked`], which keeps what must happen only if the attempt
//! commits (deferred counter increments, the writes a watcher wants to see), then decides
//! by the error's kind: a conflict is retried at once with a little random backoff, an
//! unavailable engine is waited for until the retry timeout, anything else goes back to
//! the caller. A body's own errors (a file-system answer such as `ENOENT`) are of the
//! caller's type ([`BodyError`]); the engine sees them as [`Error::Aborted`] and the
//! runner returns them unchanged.

use crate::error::{Error, Result};
use crate::{Follow, Followed, KvEngine, KvTxn};
use parking_lot::Mutex;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

/// The error type of a transaction body: the caller's own, which can hold a KV error.
pub trait BodyError: From<Error> {
    /// The KV error this is, if it is one.
    fn as_kv(&self) -> Option<&Error>;
    /// Whether this is an answer to give the caller rather than a failure (a POSIX
    /// `ENOENT` is not counted as a failed transaction in the metrics).
    fn is_answer(&self) -> bool {
        false
    }
}

impl BodyError for Error {
    fn as_kv(&self) -> Option<&Error> {
        Some(self)
    }
}

/// An engine transaction as the runner hands it to a body: everything goes to the
/// engine except deferred increments, which are collected and kept only if it commits.
struct Tracked<'a> {
    inner: &'a mut dyn KvTxn,
    deferred: Vec<(Vec<u8>, i64)>,
    /// The client's counters, for claims ([`KvTxn::claim`]), and this attempt's claims.
    ledger: &'a Mutex<Ledger>,
    claims: Vec<(Vec<u8>, i64)>,
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
    fn scans(&mut self, ranges: &[(&[u8], &[u8], usize)]) -> Result<Vec<crate::Scanned>> {
        self.inner.scans(ranges)
    }
    fn gets_and_follow(&mut self, keys: &[Vec<u8>], follow: &Follow) -> Result<Followed> {
        self.inner.gets_and_follow(keys, follow)
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
    fn incr_later(&mut self, key: &[u8], delta: i64) -> Result<()> {
        if delta != 0 {
            add_delta(&mut self.deferred, key, delta);
        }
        Ok(())
    }
    fn claim(&mut self, key: &[u8], amount: i64, budget: &[u8]) -> Result<bool> {
        let mut ledger = self.ledger.lock();
        let available = value_of(&ledger.committed, budget)
            - value_of(&ledger.committed, key)
            - value_of(&ledger.claimed, key);
        if amount > available {
            return Ok(false);
        }
        add_delta(&mut ledger.claimed, key, amount);
        add_delta(&mut self.claims, key, amount);
        Ok(true)
    }
}

/// A client's in-memory counters: increments committed and not yet written
/// ([`KvTxn::incr_later`]), and what running transactions claimed ([`KvTxn::claim`]).
#[derive(Default)]
struct Ledger {
    committed: Vec<(Vec<u8>, i64)>,
    claimed: Vec<(Vec<u8>, i64)>,
}

fn value_of(deltas: &[(Vec<u8>, i64)], key: &[u8]) -> i64 {
    deltas.iter().find(|(k, _)| k == key).map_or(0, |(_, d)| *d)
}

/// Adds `delta` to the entry of `key` in a short list of counter deltas.
fn add_delta(deltas: &mut Vec<(Vec<u8>, i64)>, key: &[u8], delta: i64) {
    match deltas.iter_mut().find(|(k, _)| k == key) {
        Some((_, d)) => *d += delta,
        None => deltas.push((key.to_vec(), delta)),
    }
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
pub struct Kv<E = Error> {
    engine: Box<dyn KvEngine>,
    /// The META-URL without its password, for messages.
    url: String,
    retry_timeout: Duration,
    /// Increments committed by this client's transactions ([`KvTxn::incr_later`]) and
    /// not yet written to their counters, and claims of running ones; a handful of
    /// counters at most.
    deferred: Mutex<Ledger>,
    /// Since when transactions of this client have been failing with temporary engine
    /// errors (an outage), to log its start and end once.
    outage: Mutex<Option<Instant>>,
    /// Operations that gave up during the current outage, for [`Kv::gave_up`].
    give_ups: Mutex<GiveUps>,
    /// Which keys' committed writes go to which watcher ([`Kv::watch_commits`]).
    watch: std::sync::OnceLock<(WatchedKeys, CommitWatcher)>,
    /// The error type of transaction bodies (fixed per Kv, so bodies need no annotation).
    body_error: PhantomData<fn() -> E>,
}

/// Give-ups not logged yet, and when the last one was.
#[derive(Default)]
struct GiveUps {
    logged: Option<Instant>,
    failed: u64,
}

/// How often, at most, an outage logs that operations fail.
const GIVE_UP_LOG_INTERVAL: Duration = Duration::from_secs(60);

impl<E: BodyError> Kv<E> {
    pub fn new(engine: Box<dyn KvEngine>) -> Self {
        Kv {
            body_error: PhantomData,
            url: engine.name().to_string(),
            engine,
            retry_timeout: DEFAULT_RETRY_TIMEOUT,
            deferred: Mutex::default(),
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

    /// Makes this client's commits announce the keys `announced` selects to the other
    /// clients; false when the engine cannot (see [`crate::feed`]).
    pub fn announce_changes(&self, announced: crate::AnnouncedKeys) -> bool {
        self.engine.announce_changes(announced)
    }

    /// Follows the other clients' announced changes on this thread until `follower`
    /// returns false (see [`crate::feed`]).
    pub fn follow_changes(&self, follower: &mut crate::FeedFollower<'_>) -> Result<()> {
        self.engine.follow_changes(follower)
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

    /// Whether a scan of a packed domain reads all of it (see [`KvEngine::packs_domains`]).
    pub fn packs_domains(&self) -> bool {
        self.engine.packs_domains()
    }

    /// See [`KvEngine::embedded`].
    pub fn embedded(&self) -> bool {
        self.engine.embedded()
    }

    /// The sum of the increments of `key` committed by this client's transactions through
    /// [`KvTxn::incr_later`] and not yet written to it.
    pub fn deferred(&self, key: &[u8]) -> i64 {
        value_of(&self.deferred.lock().committed, key)
    }

    /// Takes back `delta` of the deferred increments of `key`, which the caller wrote to
    /// the counter.
    pub fn settle(&self, key: &[u8], delta: i64) {
        add_delta(&mut self.deferred.lock().committed, key, -delta);
    }

    /// Takes, at one moment, the deferred increments of `budget` that running
    /// transactions did not claim ([`KvTxn::claim`] against it, on `key`) and all of
    /// `key`'s; returns them, `(budget, key)`, for the caller to write (or to give back
    /// with [`Kv::settle`] of their negatives). What is still claimed stays, so it is
    /// there for those transactions when they commit.
    pub fn take_unclaimed(&self, budget: &[u8], key: &[u8]) -> (i64, i64) {
        let mut ledger = self.deferred.lock();
        let claimed = value_of(&ledger.claimed, key);
        let taken = (
            value_of(&ledger.committed, budget) - claimed,
            value_of(&ledger.committed, key),
        );
        add_delta(&mut ledger.committed, budget, -taken.0);
        add_delta(&mut ledger.committed, key, -taken.1);
        taken
    }

    /// Runs a read-write transaction, retrying conflicts and temporary engine errors.
    pub fn txn<T>(&self, mut f: impl FnMut(&mut dyn KvTxn) -> Result<T, E>) -> Result<T, E> {
        self.run(&mut f, false)
    }

    /// Runs a read-only transaction.
    pub fn read<T>(&self, mut f: impl FnMut(&mut dyn KvTxn) -> Result<T, E>) -> Result<T, E> {
        self.run(&mut f, true)
    }

    /// Runs `f` until it commits or fails, and records it in the metrics: the latency
    /// of the whole (`nectar_meta_txn_duration_seconds`, by `kind`, retries included),
    /// conflicts that made it start over (`nectar_meta_txn_restarts_total`) and failures
    /// (`nectar_meta_txn_errors_total`; POSIX answers such as ENOENT are not failures).
    fn run<T>(
        &self,
        f: &mut dyn FnMut(&mut dyn KvTxn) -> Result<T, E>,
        read_only: bool,
    ) -> Result<T, E> {
        let start = Instant::now();
        let kind = if read_only { "read" } else { "write" };
        let res = self.attempts(f, read_only);
        metrics::histogram!("nectar_meta_txn_duration_seconds", "kind" => kind)
            .record(start.elapsed().as_secs_f64());
        if matches!(&res, Err(e) if !e.is_answer()) {
            metrics::counter!("nectar_meta_txn_errors_total", "kind" => kind).increment(1);
        }
        res
    }

    fn attempts<T>(
        &self,
        f: &mut dyn FnMut(&mut dyn KvTxn) -> Result<T, E>,
        read_only: bool,
    ) -> Result<T, E> {
        let start = Instant::now();
        let (mut conflicts, mut failures) = (0u32, 0u32);
        loop {
            let mut out = None;
            let mut body_error = None;
            let mut deferred = Vec::new();
            let mut claims = Vec::new();
            let mut writes = Vec::new();
            let watch = self.watch.get();
            let res = self.engine.attempt(
                &mut |tx| {
                    let mut t = Tracked {
                        inner: tx,
                        deferred: Vec::new(),
                        ledger: &self.deferred,
                        claims: Vec::new(),
                        watched: watch.map(|w| w.0),
                        writes: Vec::new(),
                    };
                    let done = f(&mut t);
                    claims.append(&mut t.claims);
                    match done {
                        Ok(v) => out = Some(v),
                        Err(e) => {
                            // The engine must see a KV failure as what it is (a conflict
                            // found by a read); anything else only as "stop".
                            let seen = e.as_kv().cloned().unwrap_or(Error::Aborted);
                            body_error = Some(e);
                            return Err(seen);
                        }
                    }
                    deferred = t.deferred;
                    writes = t.writes;
                    Ok(())
                },
                read_only,
            );
            if !claims.is_empty() || res.is_ok() && !deferred.is_empty() {
                // Claims end with the attempt; they count as increments if it committed.
                let mut ledger = self.deferred.lock();
                for (key, amount) in &claims {
                    add_delta(&mut ledger.claimed, key, -amount);
                }
                if res.is_ok() {
                    for (key, delta) in deferred.iter().chain(&claims) {
                        add_delta(&mut ledger.committed, key, *delta);
                    }
                }
            }
            match res {
                Ok(()) => {
                    if let (Some((_, watcher)), false) = (watch, writes.is_empty()) {
                        watcher(&writes);
                    }
                    if failures > 0 {
                        self.outage_over();
                    }
                    return out.ok_or_else(|| {
                        Error::Corrupt("transaction produced no result".into()).into()
                    });
                }
                // The body stopped with its own error, and the engine found its reads
                // still valid: that error is the answer.
                Err(Error::Aborted) if body_error.is_some() => {
                    return Err(body_error.take().expect("checked"));
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
                        return Err(Error::Conflict.into());
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
                        return Err(e.into());
                    }
                    let exp = Duration::from_millis(10u64 << failures.min(7)).min(MAX_BACKOFF);
                    let jittered = exp / 2 + exp.mul_f64(rand::random::<f64>() / 2.0);
                    std::thread::sleep(jittered.min(self.retry_timeout - elapsed));
                }
                // A KV failure from the body (e.g. a corrupt counter) or from the engine.
                Err(e) => return Err(e.into()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{memory, TxnBody};
    use std::sync::atomic::AtomicBool;
    use std::sync::atomic::Ordering;
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
        let kv: Kv = Kv::new(Box::new(memory::MemoryEngine::new()));
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
            Err::<(), _>(Error::Invalid("the body gives up".into()))
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
        let kv: Kv = Kv::new(Box::new(engine)).with_retry_timeout(Duration::from_millis(1000));
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

    /// A caller's error type, as the file system's is: KV errors or its own answers.
    #[derive(Debug, PartialEq)]
    enum Caller {
        Kv(Error),
        NotFound,
    }

    impl From<Error> for Caller {
        fn from(e: Error) -> Self {
            Caller::Kv(e)
        }
    }

    impl BodyError for Caller {
        fn as_kv(&self) -> Option<&Error> {
            match self {
                Caller::Kv(e) => Some(e),
                Caller::NotFound => None,
            }
        }
    }

    #[test]
    fn a_body_error_comes_back_as_it_was_and_nothing_is_written() {
        let kv: Kv<Caller> = Kv::new(Box::new(memory::MemoryEngine::new()));
        let r = kv.txn(|tx| {
            tx.set(b"k", b"v")?;
            Err::<(), _>(Caller::NotFound)
        });
        assert_eq!(r, Err(Caller::NotFound));
        assert_eq!(kv.read(|tx| Ok(tx.get(b"k")?)).unwrap(), None);
        // A KV error raised in the body keeps its kind.
        let corrupt = || Caller::Kv(Error::Corrupt("x".into()));
        assert_eq!(kv.read(|_| Err::<(), _>(corrupt())), Err(corrupt()));
    }

    #[test]
    fn claims_hold_while_their_transaction_runs_and_count_if_it_commits() {
        let kv: Kv = Kv::new(Box::new(memory::MemoryEngine::new()));
        kv.txn(|tx| tx.incr_later(b"budget", 10)).unwrap();
        // A claim that fails its transaction is given back.
        let _ = kv.txn(|tx| {
            assert!(tx.claim(b"spent", 8, b"budget")?);
            Err::<(), _>(Error::Invalid("the body gives up".into()))
        });
        // What is claimed is not there for another claim (another transaction's alike:
        // the ledger is the client's).
        kv.txn(|tx| {
            assert!(tx.claim(b"spent", 8, b"budget")?);
            assert!(
                !tx.claim(b"spent", 3, b"budget")?,
                "only 2 left while 8 are claimed"
            );
            Ok(())
        })
        .unwrap();
        assert_eq!(
            kv.deferred(b"spent"),
            8,
            "a committed claim is an increment"
        );
        assert!(!kv.txn(|tx| tx.claim(b"spent", 3, b"budget")).unwrap());
        // What is taken leaves what is still claimed.
        kv.txn(|tx| {
            assert!(tx.claim(b"spent", 2, b"budget")?);
            assert_eq!(kv.take_unclaimed(b"budget", b"spent"), (8, 8));
            Ok(())
        })
        .unwrap();
        assert_eq!((kv.deferred(b"budget"), kv.deferred(b"spent")), (2, 2));
    }

    #[test]
    fn deferred_increments_count_only_when_committed() {
        let kv: Kv = Kv::new(Box::new(memory::MemoryEngine::new()));
        kv.txn(|tx| {
            tx.incr_later(b"c", 5)?;
            tx.incr_later(b"c", 2)?;
            tx.incr_later(b"d", -1)
        })
        .unwrap();
        let _ = kv.txn(|tx| {
            tx.incr_later(b"c", 100)?;
            Err::<(), _>(Error::Invalid("the body gives up".into()))
        });
        assert_eq!(
            (kv.deferred(b"c"), kv.deferred(b"d"), kv.deferred(b"e")),
            (7, -1, 0)
        );
        assert_eq!(kv.read(|tx| tx.get(b"c")).unwrap(), None, "not written yet");
        kv.settle(b"c", 7);
        assert_eq!(kv.deferred(b"c"), 0);
        // A bare engine transaction adds at once.
        let e = memory::MemoryEngine::new();
        e.attempt(&mut |tx| tx.incr_later(b"c", 3), false).unwrap();
        let mut got = None;
        e.attempt(
            &mut |tx| {
                got = tx.get(b"c")?;
                Ok(())
            },
            true,
        )
        .unwrap();
        assert_eq!(got, Some(3i64.to_le_bytes().to_vec()));
    }
}
