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
    /// The KV layer failed: a lost connection, a busy or full database, a race lost too
    /// many times.
    #[error(transparent)]
    Kv(nectar_kv::Error),
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
    /// A local file of a tool failed: a dump being written, a sort's temporary run.
    #[error("local file I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The errno a file-system caller should see.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Sys(e) => *e,
            Error::Kv(nectar_kv::Error::Full(_)) => libc::ENOSPC,
            _ => libc::EIO,
        }
    }

    /// Whether the failure may go away by itself (retry later).
    pub fn is_temporary(&self) -> bool {
        matches!(self, Error::Kv(e) if e.is_temporary())
    }
}

/// A KV error as the file system reports it: bad input and undecodable values are the
/// same kinds here as there.
impl From<nectar_kv::Error> for Error {
    fn from(e: nectar_kv::Error) -> Self {
        match e {
            nectar_kv::Error::Invalid(m) => Error::Invalid(m),
            nectar_kv::Error::Corrupt(m) => Error::Corrupt(m),
            e => Error::Kv(e),
        }
    }
}

/// Transaction bodies return this crate's errors; POSIX answers are not failures.
impl nectar_kv::BodyError for Error {
    fn as_kv(&self) -> Option<&nectar_kv::Error> {
        match self {
            Error::Kv(e) => Some(e),
            _ => None,
        }
    }

    fn is_answer(&self) -> bool {
        matches!(self, Error::Sys(_))
    }
}

/// Shorthand for a POSIX error.
pub fn sys<T>(errno: i32) -> Result<T> {
    Err(Error::Sys(errno))
}
