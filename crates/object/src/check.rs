//! Verifying a store before trusting it with a volume.
//!
//! `format` and `mount` should fail at once, with a message that says what to fix, when
//! the storage is unreachable, the bucket is missing or the keys are wrong, rather than
//! later when the first block is flushed. [`check_store`] does what the data path does
//! with a small probe object: write, read back and compare, find it by listing, delete.
//! The stores already turn failures into actionable messages (see `opendal.rs`); this
//! adds which step failed and on which store, and removes the probe if a later step
//! fails.

use crate::{Error, ObjectStore, Result};
use bytes::Bytes;

/// Writes, reads back, lists and deletes a probe object on `store`.
pub async fn check_store(store: &dyn ObjectStore) -> Result<()> {
    let key = format!("nectar-check-{:016x}", rand::random::<u64>());
    let data = Bytes::from(format!("nectar storage check {key}\n"));
    let desc = store.describe();

    store
        .put(&key, data.clone())
        .await
        .map_err(|e| step_error(&desc, "write a test object to", e))?;

    let result = verify(store, &key, &data, &desc).await;
    let cleanup = store.delete(&key).await;
    result?;
    cleanup.map_err(|e| step_error(&desc, "delete the test object from", e))?;

    // A store that still shows a deleted object would leak every deleted block.
    if store.head(&key).await?.is_some() {
        tracing::warn!(store = %desc, "a deleted object is still visible; deletion may be delayed");
    }
    Ok(())
}

async fn verify(store: &dyn ObjectStore, key: &str, data: &Bytes, desc: &str) -> Result<()> {
    let back = store
        .get(key, None)
        .await
        .map_err(|e| step_error(desc, "read the test object back from", e))?;
    if back != *data {
        return Err(Error::Permanent(format!(
            "the storage check of {desc} read back {} bytes that differ from the {} written",
            back.len(),
            data.len()
        )));
    }
    let listed = store
        .list(key, None, 10)
        .await
        .map_err(|e| step_error(desc, "list", e))?;
    if !listed.iter().any(|o| o.key == key) {
        // Some S3-compatible servers list with a delay; that is worth a warning, not a
        // refusal to format.
        tracing::warn!(store = %desc, "a new object is not listed yet; listing may lag");
    }
    Ok(())
}

/// Says which step of the check failed, keeping the error's kind.
fn step_error(desc: &str, step: &str, e: Error) -> Error {
    let msg = |m: String| format!("storage check: cannot {step} {desc}: {m}");
    match e {
        Error::NotFound(k) => Error::Permanent(msg(format!("object {k} vanished"))),
        Error::Temporary(m) => Error::Temporary(msg(m)),
        Error::Permanent(m) => Error::Permanent(msg(m)),
        Error::Config(m) => Error::Config(msg(m)),
        Error::NoSpace(m) => Error::NoSpace(msg(m)),
    }
}
