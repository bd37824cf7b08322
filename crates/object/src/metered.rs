//! [`Metered`]: every request to a store counted in the process's metrics.
//!
//! [`crate::create_store`] wraps each store it builds, so every user of a volume's
//! store (mount, gateway, tools) reports the same series: per method (`GET`, `PUT`,
//! `HEAD`, `DELETE`, `LIST`) a latency histogram `nectar_object_request_duration_seconds`
//! (its count is the number of requests), `nectar_object_request_errors_total`, and for
//! GET and PUT `nectar_object_request_bytes_total`. Without a metrics recorder
//! installed (tests, short commands) recording costs next to nothing.

use crate::{ObjectInfo, ObjectStore, Result};
use async_trait::async_trait;
use bytes::Bytes;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

pub struct Metered {
    inner: Arc<dyn ObjectStore>,
}

impl Metered {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }
}

/// Runs one request and records its latency, its outcome and the `bytes` it moved.
async fn record<T>(
    method: &'static str,
    request: impl Future<Output = Result<T>>,
    bytes: impl FnOnce(&T) -> u64,
) -> Result<T> {
    let start = Instant::now();
    let res = request.await;
    metrics::histogram!("nectar_object_request_duration_seconds", "method" => method)
        .record(start.elapsed().as_secs_f64());
    match &res {
        Ok(v) => {
            let n = bytes(v);
            if n > 0 {
                metrics::counter!("nectar_object_request_bytes_total", "method" => method)
                    .increment(n);
            }
        }
        // A missing object is an answer, not a failure of the store.
        Err(crate::Error::NotFound(_)) => {}
        Err(_) => {
            metrics::counter!("nectar_object_request_errors_total", "method" => method).increment(1)
        }
    }
    res
}

#[async_trait]
impl ObjectStore for Metered {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let n = data.len() as u64;
        record("PUT", self.inner.put(key, data), |_| n).await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        record("GET", self.inner.get(key, range), |b| b.len() as u64).await
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        record("HEAD", self.inner.head(key), |_| 0).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        record("DELETE", self.inner.delete(key), |_| 0).await
    }

    /// One request as the store sees it (a bulk delete), recorded as one.
    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        record("DELETE", self.inner.delete_many(keys), |_| 0).await
    }

    /// Not a request: a store durable on put answers at once, which would only
    /// dilute the latencies of the others.
    async fn sync(&self) -> Result<()> {
        self.inner.sync().await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectInfo>> {
        record("LIST", self.inner.list(prefix, start_after, limit), |_| 0).await
    }
}
