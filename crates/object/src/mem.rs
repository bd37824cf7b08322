//! An in-process object store, for tests and the `memory` storage type.

use crate::{Error, ObjectInfo, ObjectStore, Result};
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::ops::Range;

/// Objects kept in a sorted map in memory; lost when the process exits.
#[derive(Default)]
pub struct MemStore {
    objects: Mutex<BTreeMap<String, Bytes>>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of objects stored (for tests).
    pub fn len(&self) -> usize {
        self.objects.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl ObjectStore for MemStore {
    fn describe(&self) -> String {
        "memory://".to_string()
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.objects.lock().insert(key.to_string(), data);
        Ok(())
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        let data = self
            .objects
            .lock()
            .get(key)
            .cloned()
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        match range {
            None => Ok(data),
            Some(r) => {
                let end = (r.end as usize).min(data.len());
                let start = (r.start as usize).min(end);
                Ok(data.slice(start..end))
            }
        }
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        Ok(self.objects.lock().get(key).map(|d| d.len() as u64))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.objects.lock().remove(key);
        Ok(())
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectInfo>> {
        use std::ops::Bound;
        let objects = self.objects.lock();
        // Start at whichever comes later, the prefix or just after `start_after`, so a
        // resume point that sorts before the prefix neither skips keys nor scans from the
        // front of the map; stop at the first key past the prefix.
        let lower = match start_after {
            Some(s) if s >= prefix => Bound::Excluded(s),
            _ => Bound::Included(prefix),
        };
        Ok(objects
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| ObjectInfo {
                key: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }
}
