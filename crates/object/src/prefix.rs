//! A store seen through a key prefix.
//!
//! Several volumes can share one bucket because each keeps its objects under its own
//! prefix (`<volume-name>/`, as JuiceFS does). [`PrefixStore`] prepends the prefix to
//! every key on the way in and strips it from listed keys on the way out, so the data
//! path works with keys like `chunks/0/0/123_0_4096` whatever the bucket layout is.
//! Listing stays exact at the edges: a caller's `start_after` that sorts before the
//! prefix still lists from the first key of the volume, and nothing from outside the
//! prefix is ever returned.

use crate::{ObjectInfo, ObjectStore, Result};
use async_trait::async_trait;
use bytes::Bytes;
use std::ops::Range;
use std::sync::Arc;

/// Wraps a store so that all keys are relative to `prefix`.
pub struct PrefixStore {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
}

impl PrefixStore {
    /// `prefix` is used verbatim; it normally ends in `/` (`myvol/`).
    pub fn new(inner: Arc<dyn ObjectStore>, prefix: impl Into<String>) -> Self {
        Self {
            inner,
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

#[async_trait]
impl ObjectStore for PrefixStore {
    fn describe(&self) -> String {
        let mut base = self.inner.describe();
        if !base.ends_with('/') && !self.prefix.is_empty() {
            base.push('/');
        }
        base + &self.prefix
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.inner.put(&self.full(key), data).await
    }

    async fn sync(&self) -> Result<()> {
        self.inner.sync().await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        self.inner.get(&self.full(key), range).await
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        self.inner.head(&self.full(key)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(&self.full(key)).await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        let full: Vec<String> = keys.iter().map(|k| self.full(k)).collect();
        self.inner.delete_many(&full).await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectInfo>> {
        let full_prefix = self.full(prefix);
        // Prefixing keeps the order of keys, so the caller's resume point maps to the
        // same place in the inner listing.
        let full_start = start_after.map(|s| self.full(s));
        let mut out = self
            .inner
            .list(&full_prefix, full_start.as_deref(), limit)
            .await?;
        out.retain(|o| o.key.starts_with(&self.prefix));
        for o in &mut out {
            o.key.drain(..self.prefix.len());
        }
        Ok(out)
    }
}
