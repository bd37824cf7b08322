//! Turning a volume's storage settings into a store.
//!
//! A volume names its storage with a type (`file`, `s3`, `memory`), a bucket (a
//! directory or a URL), optional keys and the prefix its objects live under, as
//! JuiceFS's `--storage`/`--bucket`/`--access-key`/`--secret-key` do. [`create_store`]
//! checks all of it up front and fails with [`Error::Config`] saying what is accepted,
//! builds the backend, and wraps it in a [`PrefixStore`] so the rest of Nectar only ever
//! sees keys relative to the volume, and in an [`EncryptedStore`] when the volume is
//! encrypted. It does no I/O beyond creating a local directory:
//! reachability and credentials are verified by [`crate::check_store`].

use crate::s3::{create_s3_bucket, keys, s3_store, S3Location};
use crate::services;
use crate::{
    EncryptedStore, Encryptor, Error, HdfsStore, MemStore, Metered, ObjectStore, OpendalStore,
    PrefixStore, Result,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// The storage settings of a volume.
#[derive(Clone, Default)]
pub struct StoreConfig {
    /// `file`, `s3`, `hdfs` or `memory`.
    pub storage: String,
    /// `file`: a local directory (created if missing; `~` is not expanded; a trailing
    /// slash is optional; a `file://` prefix is accepted). `s3`:
    /// `http(s)://host[:port]/bucket` (path-style) or
    /// `https://bucket.s3.region.amazonaws.com`. `hdfs`: `hdfs://NAMESERVICE/path`,
    /// `hdfs://namenode:port/path` or `hdfs://nn1:port,nn2:port/path` (Kerberos
    /// credentials from `KRB5PRINCIPAL`/`KRB5KEYTAB`/`KRB5KEYTAB_BASE64`, the access key
    /// as the HDFS user otherwise). `memory`: any name; stores of the same
    /// name in one process share their objects.
    pub bucket: String,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// Where the volume's objects live inside the bucket, e.g. `myvol/`; may be empty.
    pub prefix: String,
    /// Encrypts every object, as JuiceFS's `--encrypt-rsa-key` does (see `encrypt.rs`).
    pub encryption: Option<Arc<Encryptor>>,
}

impl std::fmt::Debug for StoreConfig {
    // Never print the secret key (configs end up in logs and error reports).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("storage", &self.storage)
            .field("bucket", &self.bucket)
            .field("access_key", &self.access_key)
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("prefix", &self.prefix)
            .field("encryption", &self.encryption)
            .finish()
    }
}

const STORAGE_TYPES: &str = "file (a local directory), s3 (an S3-compatible bucket URL), \
     minio, hdfs (hdfs://NAMESERVICE/path or hdfs://namenode:port/path), webdav, sftp, \
     azblob, gcs, swift, oss, cos, or memory (process-local, for tests)";

/// Builds the store of a volume: the backend for `storage`/`bucket`, under `prefix`.
pub fn create_store(cfg: &StoreConfig) -> Result<Arc<dyn ObjectStore>> {
    let prefix = check_prefix(&cfg.prefix)?;
    let base: Arc<dyn ObjectStore> = match cfg.storage.as_str() {
        "file" => {
            keys(cfg.access_key.as_deref(), cfg.secret_key.as_deref())?;
            Arc::new(OpendalStore::fs(file_dir(&cfg.bucket)?)?)
        }
        "s3" => {
            let loc = S3Location::parse(&cfg.bucket, std::env::var("AWS_REGION").ok())?;
            let keys = keys(cfg.access_key.as_deref(), cfg.secret_key.as_deref())?;
            Arc::new(s3_store(&loc, keys)?)
        }
        "hdfs" => Arc::new(HdfsStore::from_env(&cfg.bucket, cfg.access_key.as_deref())?),
        "minio" | "webdav" | "sftp" | "azblob" | "gcs" | "swift" | "oss" | "cos" => {
            let keys = services::Keys {
                access: cfg.access_key.as_deref().filter(|k| !k.is_empty()),
                secret: cfg.secret_key.as_deref().filter(|k| !k.is_empty()),
            };
            Arc::new(match cfg.storage.as_str() {
                "minio" => services::minio(&cfg.bucket, &keys)?,
                "webdav" => services::webdav(&cfg.bucket, &keys)?,
                "sftp" => services::sftp(&cfg.bucket, &keys)?,
                "azblob" => services::azblob(&cfg.bucket, &keys)?,
                "gcs" => services::gcs(&cfg.bucket)?,
                "swift" => services::swift(&cfg.bucket, &keys)?,
                "oss" => services::oss(&cfg.bucket, &keys)?,
                _ => services::cos(&cfg.bucket, &keys)?,
            })
        }
        "memory" => memory_store(&cfg.bucket),
        "" => {
            return Err(Error::Config(format!(
                "no storage type given; accepted: {STORAGE_TYPES}"
            )))
        }
        other => {
            return Err(Error::Config(format!(
                "unknown storage type {other:?}; accepted: {STORAGE_TYPES}"
            )))
        }
    };
    let mut store: Arc<dyn ObjectStore> = if prefix.is_empty() {
        base
    } else {
        Arc::new(PrefixStore::new(base, prefix))
    };
    if let Some(enc) = &cfg.encryption {
        store = Arc::new(EncryptedStore::new(store, enc.clone()));
    }
    Ok(Arc::new(Metered::new(store)))
}

/// Creates the bucket of an `s3` volume if it does not exist yet (for `format`; a
/// `file` store's directory is already created by [`create_store`], and `memory`
/// needs nothing). Returns whether a bucket was created.
pub async fn create_bucket(cfg: &StoreConfig) -> Result<bool> {
    match cfg.storage.as_str() {
        "s3" | "minio" => {
            let loc = S3Location::parse(&cfg.bucket, std::env::var("AWS_REGION").ok())?;
            let keys = keys(cfg.access_key.as_deref(), cfg.secret_key.as_deref())?;
            create_s3_bucket(&loc, keys).await
        }
        "file" | "hdfs" | "memory" | "webdav" | "sftp" | "azblob" | "gcs" | "swift" | "oss"
        | "cos" => Ok(false),
        other => Err(Error::Config(format!(
            "unknown storage type {other:?}; accepted: {STORAGE_TYPES}"
        ))),
    }
}

fn file_dir(bucket: &str) -> Result<&str> {
    let dir = bucket.strip_prefix("file://").unwrap_or(bucket);
    if dir.is_empty() {
        return Err(Error::Config(
            "the bucket of storage file must be a local directory, e.g. /var/lib/nectar/".into(),
        ));
    }
    if dir.contains("://") {
        return Err(Error::Config(format!(
            "the bucket of storage file must be a local directory, got the URL {bucket:?}; \
             use --storage s3 for a bucket URL"
        )));
    }
    Ok(dir)
}

/// A prefix must name a place inside the bucket, in the same key syntax as objects.
fn check_prefix(prefix: &str) -> Result<&str> {
    if prefix.is_empty() {
        return Ok(prefix);
    }
    let inner = prefix.strip_suffix('/').unwrap_or(prefix);
    if inner.is_empty()
        || inner.starts_with('/')
        || inner.contains('\0')
        || inner
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(Error::Config(format!(
            "bad object prefix {prefix:?}: it must be relative, like \"myvol/\", without \
             empty, '.' or '..' parts"
        )));
    }
    Ok(prefix)
}

/// One MemStore per bucket name for the whole process, so that every store of the
/// same memory "bucket" (say, `format` then `mount` in one test) sees the same objects.
fn memory_store(bucket: &str) -> Arc<dyn ObjectStore> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<MemStore>>>> = OnceLock::new();
    let stores = STORES.get_or_init(Default::default);
    let store = stores
        .lock()
        .entry(bucket.to_string())
        .or_insert_with(|| Arc::new(MemStore::new()))
        .clone();
    store
}
