//! The error type of the VFS: whatever a lower layer reported, and the errno to return.

use nectar_meta::Error as MetaError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}", std::io::Error::from_raw_os_error(*.0))]
    Sys(i32),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Chunk(#[from] nectar_chunk::Error),
}

impl Error {
    /// The errno for the caller.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Sys(e) => *e,
            Error::Meta(e) => e.errno(),
            Error::Chunk(nectar_chunk::Error::Object(e))
                if matches!(**e, nectar_object::Error::NoSpace(_)) =>
            {
                libc::ENOSPC
            }
            Error::Chunk(_) => libc::EIO,
        }
    }

    /// Whether this is an ordinary POSIX outcome (ENOENT, EEXIST...), not a failure worth
    /// logging.
    pub fn is_expected(&self) -> bool {
        matches!(self, Error::Sys(_) | Error::Meta(MetaError::Sys(_)))
    }
}

pub fn sys<T>(errno: i32) -> Result<T> {
    Err(Error::Sys(errno))
}
