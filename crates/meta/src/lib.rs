//! Nectar's metadata: the file-system tree, attributes, chunk slice lists, sessions.
//!
//! The design: one transactional, ordered key-value interface ([`kv::KvTxn`] run by a
//! [`kv::KvEngine`], in the `nectar-kv` crate beneath) that every engine implements
//! (memory, SQLite, Redis, PostgreSQL, MySQL, etcd, TiKV), and all file-system logic
//! written once above it in [`Meta`]. Keys and values use JuiceFS's transactional-KV schema byte for byte
//! ([`keys`], [`types`]), so volumes and dumps move between the two systems. Every
//! operation is a single transaction: when it returns, every client sees its effect.
//!
//! `Meta` is synchronous; callers run it on threads that may block (the FUSE adapter
//! uses a blocking pool), which keeps transaction bodies simple closures that an engine
//! can re-run on conflict.

pub mod acl;
pub mod cache;
pub mod data;
pub mod dump;
pub mod error;
pub mod fsck;
pub mod gc;
pub mod keys;
pub mod locks;
pub mod meta;
pub mod namespace;
pub mod quota;
pub mod readers;
pub mod remove;
pub mod slice;
pub mod spill;
pub mod summary;
pub mod trash;
pub mod types;
pub mod unfinished;
pub mod walk;
pub mod xattr;

pub use acl::{AclEntry, AclType, Rule};
pub use cache::{Change, ChangeListener, ChangeSeq};
pub use dump::{DumpOptions, DumpSummary, LoadOptions};
pub use error::{Error, Result};
pub use meta::{AttrWatcher, Meta, SliceDeleter};
pub use namespace::{RENAME_EXCHANGE, RENAME_NOREPLACE};
/// The transactional KV layer beneath, its own crate so it cannot reach up into files.
pub use nectar_kv as kv;
pub use nectar_kv::redact_url;
pub use quota::Quota;
pub use summary::Summary;
pub use trash::{parse_trash_name, RestoreReport, TrashCleanup};
pub use types::*;
pub use unfinished::{NewSlice, SliceSweeper};
