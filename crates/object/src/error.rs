//! The error type of the object crate.

/// Result of an object-store operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of object storage. Each one knows whether trying again may help.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object does not exist.
    #[error("object {0} not found")]
    NotFound(String),
    /// A failure that may go away on retry (network, throttling, 5xx, timeout).
    #[error("temporary storage error: {0}")]
    Temporary(String),
    /// A failure that will not go away by retrying (denied, bad request, corrupt).
    #[error("storage error: {0}")]
    Permanent(String),
    /// The configuration is wrong (bad bucket URL, unknown storage type, ...).
    #[error("invalid storage configuration: {0}")]
    Config(String),
    /// The local disk behind the store is full.
    #[error("no space left on the storage device: {0}")]
    NoSpace(String),
}

impl Error {
    /// Whether the operation may succeed if tried again.
    pub fn is_temporary(&self) -> bool {
        matches!(self, Error::Temporary(_))
    }
}
