//! The transactional key-value interface every metadata engine implements.
//!
//! All file-system logic is written once against [`KvTxn`]; an engine only has to run a
//! closure as one serializable transaction ([`KvEngine::attempt`]). [`Kv`] adds what is
//! common to all engines: retrying a transaction that lost an optimistic race (up to 50
//! tries with growing random backoff), a read-only fast path, and helpers for counters.
//! Keys and values are opaque bytes; the key schema lives in `keys.rs`.

pub mod etcd;
pub mod memory;
pub mod redis;
pub mod sql;
pub mod sqlite;

use crate::error::{Error, Result};
use std::time::Duration;

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

/// Maximum tries of one transaction.
const MAX_TRIES: u32 = 50;

/// The engine plus the retry policy shared by all engines.
pub struct Kv {
    engine: Box<dyn KvEngine>,
}

impl Kv {
    pub fn new(engine: Box<dyn KvEngine>) -> Self {
        Kv { engine }
    }

    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    /// Runs a read-write transaction, retrying conflicts and temporary engine errors.
    pub fn txn<T>(&self, mut f: impl FnMut(&mut dyn KvTxn) -> Result<T>) -> Result<T> {
        self.run(&mut f, false)
    }

    /// Runs a read-only transaction.
    pub fn read<T>(&self, mut f: impl FnMut(&mut dyn KvTxn) -> Result<T>) -> Result<T> {
        self.run(&mut f, true)
    }

    fn run<T>(&self, f: &mut dyn FnMut(&mut dyn KvTxn) -> Result<T>, read_only: bool) -> Result<T> {
        let mut last_err = None;
        for attempt in 0..MAX_TRIES {
            let mut out = None;
            let res = self.engine.attempt(
                &mut |tx| {
                    out = Some(f(tx)?);
                    Ok(())
                },
                read_only,
            );
            match res {
                Ok(()) => {
                    return out
                        .ok_or_else(|| Error::Corrupt("transaction produced no result".into()))
                }
                Err(e) if e.is_temporary() => {
                    let max_ms = ((attempt + 1) * (attempt + 1)) as u64;
                    std::thread::sleep(Duration::from_millis(rand::random::<u64>() % max_ms + 1));
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        let e = last_err.unwrap_or(Error::Conflict);
        tracing::warn!(
            "transaction on {} gave up after {MAX_TRIES} tries: {e}",
            self.engine.name()
        );
        Err(e)
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
        "tikv" => Err(Error::Invalid(format!(
            "metadata engine {scheme}:// is not supported by this build yet; use sqlite3://PATH"
        ))),
        other => Err(Error::Invalid(format!(
            "unknown metadata engine {other:?} in META-URL {}: supported: sqlite3://PATH, \
             redis[s]://HOST:PORT/DB, postgres://USER@HOST:PORT/DB, mysql://USER@HOST:PORT/DB, \
             etcd://HOST:PORT/PREFIX, memory://NAME",
            crate::meta::redact_url(url)
        ))),
    }
}
