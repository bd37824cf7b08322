//! Object storage for Nectar.
//!
//! Every byte of file data lives in an object store as an immutable block. This crate
//! defines the narrow [`ObjectStore`] trait that the rest of Nectar uses (put a whole
//! object, get it or a byte range of it, head, delete, list) and its implementations:
//! OpenDAL-backed stores for local directories (whose puts and gets use plain file calls
//! and sync in batches, see `local`) and S3-compatible services, HDFS through
//! `hdfs-native` with Kerberos keytabs and nameservices (`hdfs`), an in-process
//! memory store, a prefix wrapper that places a volume under `<volume-name>/`, a
//! wrapper that records every request in the metrics, a wrapper that encrypts objects
//! as JuiceFS does (`encrypt`), and a fault-injecting wrapper for tests. Keeping the trait this small is what lets later
//! backends (HDFS, WebDAV, ...) and wrappers (encryption, sharding) slot in without
//! touching the data path.
//!
//! Entry points: [`create_store`] turns a volume's [`StoreConfig`] (`--storage`,
//! `--bucket`, keys, the volume's prefix) into a store; [`create_bucket`] makes a
//! missing S3 bucket at `format` time; [`check_store`] proves at `format`/`mount` that
//! the store is reachable, writable and accepts the credentials. Errors are classified
//! once, here, as temporary (worth retrying), permanent, configuration or a full disk,
//! and their messages say what to check.

mod check;
mod config;
mod encrypt;
mod error;
mod fault;
mod hdfs;
mod local;
mod mem;
mod metered;
mod opendal;
mod prefix;
mod s3;
mod services;
mod walk;

pub use check::check_store;
pub use config::{create_bucket, create_store, StoreConfig};
pub use encrypt::{EncryptAlgo, EncryptedStore, Encryptor};
pub use error::{Error, Result};
pub use fault::FaultStore;
pub use hdfs::HdfsStore;
pub use local::DirectWrites;
pub use mem::MemStore;
pub use metered::Metered;
pub use opendal::OpendalStore;
pub use prefix::PrefixStore;

#[cfg(test)]
mod tests;

use async_trait::async_trait;
use bytes::Bytes;
use std::ops::Range;

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the store's root (the prefix of a wrapper is removed).
    pub key: String,
    pub size: u64,
}

/// The operations Nectar needs from an object store. Objects are written whole and
/// never modified, so there is no append or partial write.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// A human-readable location, without secrets (e.g. `file:///var/nectar/` or
    /// `s3://127.0.0.1:8333/bucket/`).
    fn describe(&self) -> String;
    /// Stores `data` under `key`, replacing any previous object.
    async fn put(&self, key: &str, data: Bytes) -> Result<()>;
    /// Reads the whole object, or only `range` of it; a range reaching past the end is
    /// cut at the end. A missing object is [`Error::NotFound`].
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes>;
    /// The size of an object, or `None` if it does not exist.
    async fn head(&self, key: &str) -> Result<Option<u64>>;
    /// Deletes an object; deleting a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Deletes several objects (missing ones are fine); all are tried, the first error
    /// is returned. A store that can delete in bulk overrides it (a local directory
    /// removes them all in one blocking task); the default deletes them one by one, a
    /// few at once.
    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        delete_each(self, keys).await
    }
    /// Makes every object whose put completed before this call durable. A store whose
    /// puts are durable when they return (S3 and its kin) has nothing to do; a local
    /// directory keeps new objects in the page cache until this syncs them. The data
    /// path calls it before it commits to metadata a slice whose blocks it stored.
    async fn sync(&self) -> Result<()> {
        Ok(())
    }
    /// Lists objects whose key starts with `prefix`, in key order, starting after
    /// `start_after`, at most `limit` of them.
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectInfo>>;
}

/// Deletes `keys` one request each, [`DELETES_AT_ONCE`] at a time: what
/// [`ObjectStore::delete_many`] does unless a store has a bulk delete.
pub async fn delete_each<S: ObjectStore + ?Sized>(store: &S, keys: &[String]) -> Result<()> {
    use futures::StreamExt;
    let results: Vec<Result<()>> = futures::stream::iter(keys.iter().cloned())
        .map(|k| async move { store.delete(&k).await })
        .buffer_unordered(DELETES_AT_ONCE)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Single deletes in flight at once in [`delete_each`] (JuiceFS's `--max-deletes`
/// default).
pub const DELETES_AT_ONCE: usize = 10;
