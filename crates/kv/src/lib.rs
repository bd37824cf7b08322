//! Nectar's transactional key-value layer: the one interface every metadata engine
//! implements, and the engines.
//!
//! The design: the file system above (`nectar-meta`) is written once against
//! [`KvTxn`], the operations of one serializable transaction over ordered, opaque byte
//! keys. An engine only has to run a closure as one such transaction
//! ([`KvEngine::attempt`]) and say how it failed ([`Error`]'s kinds). [`Kv`] adds what
//! all engines share: retrying a transaction that lost an optimistic race (up to 50
//! tries with growing random backoff), waiting while the database is unreachable (until
//! a deadline, [`DEFAULT_RETRY_TIMEOUT`] unless configured), the metrics and outage log
//! lines, counter increments deferred out of hot transactions ([`KvTxn::incr_later`]), and
//! reports of what this client committed ([`Kv::watch_commits`]).
//!
//! This crate knows nothing of files: key names, counters and their meaning belong to
//! the layer above. The one thing an engine may need to know about the keys is how they
//! group for range scans ([`KeyLayout`]), which the caller passes when it opens one.
//!
//! Engines that can push changes announce what each commit changed to the other
//! clients, and follow theirs (`feed`): a cache above stays fresh without asking.
//!
//! Engines, one folder each: `memory` (tests), `sqlite` (the embedded default), `redis`,
//! `sql` (PostgreSQL and MySQL/MariaDB), `etcd`, `tikv` (feature `tikv`). What they would
//! otherwise repeat (runtime, URL decoding and redaction, error causes) is in `shared`, and
//! the blocking connection pool of the engines that drive their own sockets in `pool`.

pub mod counting;
pub mod error;
pub mod etcd;
pub mod feed;
pub mod memory;
mod pool;
pub mod redis;
mod runner;
mod shared;
pub mod sql;
pub mod sqlite;
#[cfg(feature = "tikv")]
pub mod tikv;

pub use error::{Error, Result};
pub use feed::{AnnouncedKeys, FeedEvent, FeedFollower};
pub use runner::{BodyError, CommitWatcher, Kv, WatchedKeys, DEFAULT_RETRY_TIMEOUT};
pub use shared::redact_url;

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
    /// [`KvTxn::scan`] of several ranges `(begin, end, limit)`, in one round trip where
    /// the engine can send them together (Redis); the results in the order asked.
    fn scans(&mut self, ranges: &[(&[u8], &[u8], usize)]) -> Result<Vec<Scanned>> {
        ranges.iter().map(|(b, e, l)| self.scan(b, e, *l)).collect()
    }
    /// Whether any key exists in [begin, end).
    fn exists(&mut self, begin: &[u8], end: &[u8]) -> Result<bool> {
        Ok(!self.scan(begin, end, 1)?.is_empty())
    }
    /// Values of `keys`, then the value of the key `follow` makes of the last one's value
    /// (`None` when that value is absent or too short), as `(key, value)`. One round trip
    /// on an engine that can follow the pointer on the server (a script on Redis, in
    /// read-only transactions); two elsewhere.
    fn gets_and_follow(&mut self, keys: &[Vec<u8>], follow: &Follow) -> Result<Followed> {
        follow_in_two_reads(self, keys, follow)
    }
    /// Adds `delta` to the counter `key` (as [`KvTxn::incr_by`]), but not necessarily in
    /// this transaction: inside [`Kv::txn`] the delta is kept in the client's memory when
    /// the transaction commits ([`Kv::deferred`]) and the caller writes the sum later, in
    /// a small transaction of its own ([`Kv::settle`]), so concurrent transactions never
    /// conflict on a hot counter. A bare engine transaction adds it at once.
    fn incr_later(&mut self, key: &[u8], delta: i64) -> Result<()> {
        self.incr_by(key, delta).map(drop)
    }
    /// Claims `amount` of the client's in-memory budget `budget` for this transaction,
    /// counted on `key`: granted when the deferred increments of `budget` minus those of
    /// `key` minus what running transactions claimed on `key` leave that much. A granted
    /// claim becomes an increment of `key` ([`KvTxn::incr_later`]) if the transaction
    /// commits, and is dropped if it does not; while it runs, no other transaction can
    /// claim the same amount. False (not granted) outside [`Kv::txn`].
    fn claim(&mut self, key: &[u8], amount: i64, budget: &[u8]) -> Result<bool> {
        let _ = (key, amount, budget);
        Ok(false)
    }
}

/// How [`KvTxn::gets_and_follow`] makes a key of a value: `prefix`, bytes
/// `from..to` of the value (in reverse order when `reverse`), then `suffix`. E.g. a
/// directory entry's value holds an inode number and the inode's attribute key is made
/// of it: a lookup reads both in one round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Follow {
    pub prefix: &'static [u8],
    pub from: usize,
    pub to: usize,
    pub reverse: bool,
    pub suffix: &'static [u8],
}

impl Follow {
    /// The key made of `value`, or `None` when it is too short.
    pub fn key(&self, value: &[u8]) -> Option<Vec<u8>> {
        let part = value.get(self.from..self.to)?;
        let mut k = Vec::with_capacity(self.prefix.len() + part.len() + self.suffix.len());
        k.extend_from_slice(self.prefix);
        if self.reverse {
            k.extend(part.iter().rev());
        } else {
            k.extend_from_slice(part);
        }
        k.extend_from_slice(self.suffix);
        Some(k)
    }
}

/// [`KvTxn::gets_and_follow`] as two reads, for engines that cannot follow on the server.
pub fn follow_in_two_reads<T: KvTxn + ?Sized>(
    tx: &mut T,
    keys: &[Vec<u8>],
    follow: &Follow,
) -> Result<Followed> {
    let values = tx.gets(keys)?;
    let followed = match values.last().and_then(|v| follow.key(v.as_deref()?)) {
        Some(k) => {
            let v = tx.get(&k)?;
            Some((k, v))
        }
        None => None,
    };
    Ok((values, followed))
}

/// What one range of [`KvTxn::scans`] holds: pairs in key order.
pub type Scanned = Vec<(Vec<u8>, Vec<u8>)>;

/// What [`KvTxn::gets_and_follow`] read: the values asked, and the followed key with its
/// value.
pub type Followed = (Vec<Option<Vec<u8>>>, Option<(Vec<u8>, Option<Vec<u8>>)>);

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
    /// `read_only` transactions never write and may use a cheaper path. When the body
    /// fails, the engine rolls back and returns the body's error; an engine whose reads
    /// are optimistic first checks that they still hold and returns `Conflict` if not, so
    /// an answer such as "no such entry" is never given from a stale read.
    fn attempt(&self, body: &mut TxnBody<'_>, read_only: bool) -> Result<()>;
    /// Deletes every key of the volume (used by `format --force` on a broken volume and
    /// by tests).
    fn reset(&self) -> Result<()>;
    /// Makes this client's later commits announce to the other clients which of the
    /// keys `announced` selects they changed (see [`feed`]). Returns false when the
    /// engine has no feed; then nothing is announced and followers cannot exist.
    fn announce_changes(&self, announced: AnnouncedKeys) -> bool {
        let _ = announced;
        false
    }
    /// Follows the changes other clients announce, on the calling thread, until
    /// `follower` returns false; reconnects by itself after a break (reported as
    /// [`FeedEvent::Lost`]). An engine without a feed returns an error at once.
    fn follow_changes(&self, follower: &mut FeedFollower<'_>) -> Result<()> {
        let _ = follower;
        feed::unsupported(self.name())
    }
    /// Whether this engine packs the domains the layout lets it pack
    /// ([`KeyLayout::packed`]): a scan of such a domain then costs the whole domain, so a
    /// caller paging through one should read it whole, once.
    fn packs_domains(&self) -> bool {
        false
    }
    /// Whether the database runs in this process (SQLite, memory): its reads cost CPU
    /// here, not round trips, so reading in parallel gains nothing and contends (a
    /// metadata walk of SQLite ran twice as fast on one thread as on two).
    fn embedded(&self) -> bool {
        false
    }
}

/// How the caller's keys group for range scans. An engine without ordered range scans
/// over its keyspace (Redis) keeps one ordered index per *scan domain* and needs to know
/// the domains; the others ignore the layout.
pub trait KeyLayout: Send + Sync {
    /// Length of the scan domain of keys starting like `key`, or `None` for kinds of keys
    /// that are never scanned. Looks only at bytes before the length it returns, so all
    /// keys that share a domain agree on it. Every range the caller scans must lie within
    /// one domain to be served from an index.
    fn domain_len(&self, key: &[u8]) -> Option<usize>;
    /// A member of domain `domain` that its index does not hold, because most domains
    /// hold only it (a file's first chunk): a scan reads that key directly instead, and
    /// the domain costs no index until it holds another key.
    fn implicit_member(&self, domain: &[u8]) -> Option<&'static [u8]> {
        let _ = domain;
        None
    }
    /// Whether the keys of `domain` may be kept together in one structure of the engine
    /// (a Redis hash) instead of one key each, which costs less memory per key. An
    /// engine that packs a domain reads any range of it by reading all of it, and a
    /// transaction that reads one of its keys conflicts with every write to the domain;
    /// such an engine says so ([`KvEngine::packs_domains`]). Meant for domains that are
    /// read one key at a time or listed whole, as directories are.
    fn packed(&self, domain: &[u8]) -> bool {
        let _ = domain;
        false
    }
}

/// The layout that makes no assumption: each key's domain is its first byte.
pub struct FirstByteDomains;

impl KeyLayout for FirstByteDomains {
    fn domain_len(&self, key: &[u8]) -> Option<usize> {
        (!key.is_empty()).then_some(1)
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

/// Opens the engine named by a META-URL, for keys laid out as `layout` says.
pub fn open_engine(url: &str, layout: &'static dyn KeyLayout) -> Result<Box<dyn KvEngine>> {
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
        "redis" | "rediss" => Ok(Box::new(redis::RedisEngine::open(url, layout)?)),
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
            redact_url(url)
        ))),
    }
}
