//! Settings of the block store.
//!
//! The defaults are JuiceFS's (4 MiB blocks, 20 uploads, 200 downloads, 300 MiB of
//! buffers, 10 retries) so that a volume behaves the same under either client.
//! [`ChunkConfig::validate`] tells a user what is wrong; [`crate::ChunkStore::new`]
//! cannot fail, so it also clamps nonsense (a zero block size or zero concurrency would
//! otherwise hang every writer) and logs a warning.

use crate::{Compression, DiskCacheConfig, Error, Result};

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
        self
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
