//! Settings of the block store.
//!
//! The defaults are JuiceFS's (4 MiB blocks, 20 uploads, 200 downloads, 300 MiB of
//! buffers, 10 retries) so that a volume behaves the same under either client.
//! [`ChunkConfig::validate`] tells a user what is wrong; [`crate::ChunkStore::new`]
//! cannot fail, so it also clamps nonsense (a zero block size or zero concurrency would
//! otherwise hang every writer) and logs a warning.

use crate::retry::Policy;
use crate::{Compression, DiskCacheConfig, Error, Result};
use std::time::Duration;

/// Largest slice, the size of a chunk: a slice never crosses a chunk boundary.
pub const MAX_SLICE_SIZE: u32 = 64 << 20;
/// Largest block size a volume may use (JuiceFS's `--block-size` limit).
pub const MAX_BLOCK_SIZE: usize = 16 << 20;

/// Settings of a [`crate::ChunkStore`].
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkConfig {
    /// Bytes per block; the last block of a slice is shorter. Default 4 MiB.
    pub block_size: usize,
    /// Compression of every block.
    pub compression: Compression,
    /// Objects are encrypted (decrypted whole by the store): no ranged reads.
    pub encrypted: bool,
    /// Use the hash-prefixed key layout (`--hash-prefix`).
    pub hash_prefix: bool,
    /// Concurrent PUTs across the store. Default 20.
    pub max_uploads: usize,
    /// Concurrent GETs across the store. Default 200.
    pub max_downloads: usize,
    /// Whole-block fetches at once in the background for blocks read in small parts
    /// (JuiceFS's `--prefetch`), so the next read of the block is a cache hit; only with
    /// a cache. Default 1; 0 turns them off.
    pub prefetch: usize,
    /// Bytes of write buffers not yet uploaded plus prefetches in flight. Default 300 MiB.
    /// Raised to one block if smaller, since a block must fit to be uploaded at all.
    pub buffer_size: u64,
    /// Bytes of decoded blocks kept in memory for readers (LRU). Default 256 MiB;
    /// 0 disables the cache.
    pub mem_cache_size: u64,
    /// Retries of temporary object errors, with exponential backoff. Default 10.
    pub io_retries: usize,
    /// Time one GET may take before it is abandoned and retried. Default 60 s.
    pub get_timeout: Duration,
    /// Time one PUT may take before it is abandoned and retried. Default 60 s.
    pub put_timeout: Duration,
    /// Bytes per second all uploads together may send; `None` for no limit.
    pub upload_limit: Option<u64>,
    /// Bytes per second all downloads together may receive; `None` for no limit.
    pub download_limit: Option<u64>,
    /// The local disk cache behind the memory cache; `None` (the default) for none.
    /// Directories that cannot be used are left out with an error in the log (a
    /// mount checks them first with [`DiskCacheConfig::check`]).
    pub disk_cache: Option<DiskCacheConfig>,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        Self {
            block_size: 4 << 20,
            compression: Compression::None,
            encrypted: false,
            hash_prefix: false,
            max_uploads: 20,
            max_downloads: 200,
            prefetch: 1,
            buffer_size: 300 << 20,
            mem_cache_size: 256 << 20,
            io_retries: 10,
            get_timeout: Duration::from_secs(60),
            put_timeout: Duration::from_secs(60),
            upload_limit: None,
            download_limit: None,
            disk_cache: None,
        }
    }
}

impl ChunkConfig {
    /// Checks the settings and says what to change.
    pub fn validate(&self) -> Result<()> {
        if self.block_size == 0 || self.block_size > MAX_BLOCK_SIZE {
            return Err(Error::Invalid(format!(
                "block size {} is out of range: use 1 byte to {} MiB (default 4 MiB)",
                self.block_size,
                MAX_BLOCK_SIZE >> 20
            )));
        }
        if self.max_uploads == 0 {
            return Err(Error::Invalid(
                "max-uploads must be at least 1 (default 20)".into(),
            ));
        }
        if self.max_downloads == 0 {
            return Err(Error::Invalid(
                "max-downloads must be at least 1 (default 200)".into(),
            ));
        }
        if self.get_timeout.is_zero() || self.put_timeout.is_zero() {
            return Err(Error::Invalid(
                "get-timeout and put-timeout must be longer than 0 (default 60 s)".into(),
            ));
        }
        if self.upload_limit == Some(0) || self.download_limit == Some(0) {
            return Err(Error::Invalid(
                "an upload or download limit of 0 would stop all transfers: leave it out \
                 for no limit"
                    .into(),
            ));
        }
        if self.buffer_size < self.block_size as u64 {
            return Err(Error::Invalid(format!(
                "buffer size {} is smaller than one block ({}): raise buffer-size",
                self.buffer_size, self.block_size
            )));
        }
        Ok(())
    }

    /// The settings the store really runs with (see the module doc).
    pub(crate) fn normalized(mut self) -> Self {
        if let Err(e) = self.validate() {
            tracing::warn!("chunk store settings adjusted: {e}");
        }
        self.block_size = self.block_size.clamp(1, MAX_BLOCK_SIZE);
        self.max_uploads = self.max_uploads.max(1);
        self.max_downloads = self.max_downloads.max(1);
        self.buffer_size = self.buffer_size.max(self.block_size as u64);
        let second = Duration::from_secs(1);
        self.get_timeout = self.get_timeout.max(second);
        self.put_timeout = self.put_timeout.max(second);
        self.upload_limit = self.upload_limit.filter(|&l| l > 0);
        self.download_limit = self.download_limit.filter(|&l| l > 0);
        self
    }

    /// How gets are retried.
    pub(crate) fn get_policy(&self) -> Policy {
        Policy {
            retries: self.io_retries,
            timeout: self.get_timeout,
        }
    }

    /// How puts are retried.
    pub(crate) fn put_policy(&self) -> Policy {
        Policy {
            retries: self.io_retries,
            timeout: self.put_timeout,
        }
    }

    /// How other requests (deletes, listings) are retried.
    pub(crate) fn other_policy(&self) -> Policy {
        Policy {
            retries: self.io_retries,
            timeout: self.get_timeout.max(self.put_timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_juicefs_defaults() {
        let c = ChunkConfig::default();
        assert_eq!(c.block_size, 4 << 20);
        assert_eq!(c.max_uploads, 20);
        assert_eq!(c.max_downloads, 200);
        assert_eq!(c.buffer_size, 300 << 20);
        assert_eq!(c.mem_cache_size, 256 << 20);
        assert_eq!(c.io_retries, 10);
        assert!(c.validate().is_ok());
        assert_eq!(c.clone().normalized(), c);
    }

    #[test]
    fn nonsense_is_rejected_and_clamped() {
        let c = ChunkConfig {
            block_size: 0,
            max_uploads: 0,
            max_downloads: 0,
            buffer_size: 0,
            ..Default::default()
        };
        assert!(c.validate().is_err());
        let n = c.normalized();
        assert_eq!(n.block_size, 1);
        assert_eq!(n.max_uploads, 1);
        assert_eq!(n.max_downloads, 1);
        assert_eq!(n.buffer_size, 1);
        let big = ChunkConfig {
            block_size: 1 << 30,
            ..Default::default()
        };
        assert!(big.validate().is_err());
        assert_eq!(big.normalized().block_size, MAX_BLOCK_SIZE);
    }
}
