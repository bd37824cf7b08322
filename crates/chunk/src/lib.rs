//! nectar-chunk: the block store of file data.
//!
//! A slice (one continuous write of a file, at most 64 MiB, named by a volume-unique id
//! the caller takes from metadata) is stored as immutable objects of `block_size` bytes
//! each, the last one shorter, under JuiceFS's key layout so volumes move between the two
//! systems. Writing goes through a [`SliceWriter`]: every block that fills up is encoded
//! (compressed now, encrypted later) and PUT at once by a background task, at most
//! `max_uploads` at a time across the store, while the bytes not yet durable are
//! counted against `buffer_size` so writers wait instead of growing memory without
//! limit. [`SliceWriter::finish`] returns only when every block is durable; only then
//! may the caller commit the slice to metadata. Reading goes block by block through an
//! LRU memory cache of decoded blocks, then the local disk cache if there is one; a miss
//! in both is one GET per block shared by every concurrent reader (singleflight), or a
//! ranged GET when a small part of an uncompressed block is wanted. Temporary object errors are retried with exponential
//! backoff; permanent ones are returned at once; a block that does not decode to the
//! length its key names is [`Error::Corrupt`].
//!
//! Module map: [`key`] (object keys and block geometry), [`codec`] (block encoding),
//! `cache` (memory cache), `disk` (disk cache), `buffer` (buffer-size accounting),
//! `retry`, `store` ([`ChunkStore`]: read, prefetch, remove), `warm` (warmup, evict
//! and check of the caches) and `writer` ([`SliceWriter`]).

mod buffer;
mod cache;
pub mod codec;
mod config;
mod disk;
mod error;
pub mod key;
mod limit;
mod retry;
mod store;
mod warm;
mod writer;

pub use codec::{Codec, Compression};
pub use config::{ChunkConfig, MAX_BLOCK_SIZE, MAX_SLICE_SIZE};
pub use disk::{DiskCacheConfig, Eviction, StagedUsage, VerifyChecksum};
pub use error::{Error, Result};
pub use key::{block_key, parse_block_key};
pub use limit::mbps_to_bytes;
pub use store::ChunkStore;
pub use warm::{CacheAction, CacheReport};
pub use writer::SliceWriter;
