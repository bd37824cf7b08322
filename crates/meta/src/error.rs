//! The error type of the metadata crate.
//!
//! File-system outcomes a caller must see (`ENOENT`, `EEXIST`, ...) are [`Error::Sys`]
//! with the errno to return. Everything else says what went wrong with the engine or the
//! stored data, and whether trying again may help.

/// Result of a metadata operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A POSIX error to hand to the caller as is.
    #[error("{}", std::io::Error::from_raw_os_error(*.0))]
    Sys(i32),
    /// An optimistic transaction lost a race; the transaction runner retries it.
    #[error("transaction conflict")]
    Conflict,
    /// The engine failed: a lost connection, a busy database, a full disk.
    #[error("metadata engine error: {msg}")]
    Engine { msg: String, temporary: bool },
    /// Stored metadata cannot be decoded.
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    /// Bad input from the user: a META-URL, an option, a setting.
    #[error("{0}")]
    Invalid(String),
    /// Another client declared this client's session dead and cleaned up after it, so
    /// data drawn under the session cannot be committed.
    #[error("session {0} of this client expired and was cleaned by another client (was the database unreachable for longer than the session timeout?); the write is lost")]
    SessionLost(u64),
    /// Object storage failed in a cleanup the metadata layer drives.
    #[error("{0}")]
    Storage(String),
    /// The database holds no volume.
    #[error("{0}")]
    NotFormatted(String),
}

impl Error {
    /// The errno a file-system caller should see.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Sys(e) => *e,
            Error::Engine { msg, .. } if msg.contains("full") => libc::ENOSPC,
            _ => libc::EIO,
        }
    }

    /// Whether the failure may go away by itself (retry later).
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            Error::Conflict
                | Error::Engine {
                    temporary: true,
                    ..
                }
        )
    }

    pub(crate) fn engine(msg: impl std::fmt::Display, temporary: bool) -> Self {
        Error::Engine {
            msg: msg.to_string(),
            temporary,
        }
    }
}

/// Shorthand for a POSIX error.
pub fn sys<T>(errno: i32) -> Result<T> {
    Err(Error::Sys(errno))
}
