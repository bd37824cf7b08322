//! The error type of the KV layer.
//!
//! Each variant is a kind a caller acts on without reading the message: a lost race
//! ([`Error::Conflict`], the runner retries), an engine that may come back
//! ([`Error::Unavailable`], the runner waits for it), a full database ([`Error::Full`],
//! which the file system reports as `ENOSPC`), and failures that trying again will not
//! fix. The message says what happened and what to do.

/// Result of a KV operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An optimistic transaction lost a race; the transaction runner retries it.
    #[error("transaction conflict")]
    Conflict,
    /// The engine cannot answer now (connection refused or lost, a timeout, a failover,
    /// a busy database) and may later.
    #[error("metadata engine error: {0}")]
    Unavailable(String),
    /// The database has no room for the write (Redis at maxmemory, etcd's space quota,
    /// a full disk under SQLite).
    #[error("metadata engine error: {0}")]
    Full(String),
    /// The engine refused the request and will refuse it again (permissions, a value
    /// too large, a server that is not what the URL says).
    #[error("metadata engine error: {0}")]
    Failed(String),
    /// A stored value cannot be decoded.
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    /// Bad input from the user: a META-URL or one of its options.
    #[error("{0}")]
    Invalid(String),
    /// The transaction body stopped with an error of its caller's (e.g. `ENOENT`); the
    /// engine rolled back and the runner hands the caller's error back.
    #[error("transaction aborted by its body")]
    Aborted,
}

impl Error {
    /// Whether the failure may go away by itself (retry later).
    pub fn is_temporary(&self) -> bool {
        matches!(self, Error::Conflict | Error::Unavailable(_))
    }

    /// The same failure with what was being done in front of its message.
    pub(crate) fn context(self, what: &str) -> Self {
        match self {
            Error::Unavailable(m) => Error::Unavailable(format!("{what}: {m}")),
            Error::Full(m) => Error::Full(format!("{what}: {m}")),
            Error::Failed(m) => Error::Failed(format!("{what}: {m}")),
            other => other,
        }
    }

    /// An engine failure, temporary or not.
    pub(crate) fn engine(msg: impl std::fmt::Display, temporary: bool) -> Self {
        if temporary {
            Error::Unavailable(msg.to_string())
        } else {
            Error::Failed(msg.to_string())
        }
    }
}
