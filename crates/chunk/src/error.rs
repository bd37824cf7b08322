//! Errors of the chunk layer.
//!
//! One enum for everything the block store can report. Object-store errors are kept
//! whole (inside an `Arc`) so callers can still tell a missing object from a throttled
//! request, and so one error can be handed to every reader that shared a GET
//! (singleflight needs a `Clone` error). Each error knows whether retrying may help.

use std::sync::Arc;

/// Result of a chunk operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the block store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The object store failed (after retries, for temporary failures).
    #[error(transparent)]
    Object(Arc<nectar_object::Error>),
    /// A block that does not decode, or decodes to another length than its key names.
    /// The data in the bucket is damaged or was written by something else.
    #[error("corrupt block {key}: {reason}")]
    Corrupt { key: String, reason: String },
    /// Encoding a block for upload failed.
    #[error("cannot encode block {key}: {reason}")]
    Encode { key: String, reason: String },
    /// The caller asked for something the layer cannot do (a slice over 64 MiB, an
    /// unknown compression name, appending to a finished writer, ...).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A cache directory cannot be used (checked when a mount starts).
    #[error("cache directory {dir} is not usable: {reason}")]
    CacheDir { dir: String, reason: String },
    /// The slice writer was aborted while this operation was pending.
    #[error("slice {0} was aborted")]
    Aborted(u64),
    /// A background task died (a panic); a bug, never a storage condition.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether the operation may succeed if tried again later.
    pub fn is_temporary(&self) -> bool {
        match self {
            Error::Object(e) => e.is_temporary(),
            _ => false,
        }
    }

    /// Whether the error is a missing object.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Object(e) if matches!(**e, nectar_object::Error::NotFound(_)))
    }

    pub(crate) fn corrupt(key: &str, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

impl From<nectar_object::Error> for Error {
    fn from(e: nectar_object::Error) -> Self {
        Error::Object(Arc::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_follows_the_object_error() {
        let t: Error = nectar_object::Error::Temporary("503".into()).into();
        let p: Error = nectar_object::Error::Permanent("403".into()).into();
        let n: Error = nectar_object::Error::NotFound("k".into()).into();
        assert!(t.is_temporary());
        assert!(!p.is_temporary());
        assert!(!n.is_temporary() && n.is_not_found());
        assert!(!Error::corrupt("k", "short").is_temporary());
        assert!(Error::corrupt("chunks/0/0/1_0_4", "short")
            .to_string()
            .contains("chunks/0/0/1_0_4"));
    }
}
