//! [`Meta`]: the file system's metadata, written once over the [`Kv`] trait.
//!
//! Every operation is one transaction, so once it returns every client sees it. This file
//! holds the volume lifecycle (format, load), id allocation, sessions and statfs; the
//! namespace, data and xattr operations are `impl Meta` blocks in their own files.
//!
//! Ids are handed out in batches (inodes 1024, slices 4096 per client) so that creating
//! a file costs one counter bump per thousand files, not one per file. Data objects are
//! never deleted here: when a transaction drops the last reference to a slice, the slice
//! is passed, after commit, to the deleter the data layer registered.
//!
//! The usage counters (`usedSpace`, `totalInodes`) would be written by nearly every
//! transaction, so on the optimistic engines all concurrent writers would conflict on
//! them. Once a client has a session, its transactions only record their usage change
//! in memory ([`KvTxn::incr_later`]); a background thread adds the sum to the counters
//! about once a second in a small transaction of its own, and [`Meta::close_session`]
//! writes the rest. `statfs`, `counter` and the capacity checks add this client's
//! unwritten changes. A client that dies loses at most its last second of changes.

use crate::error::{Error, Result};
use crate::keys;
use crate::kv::{open_engine, redact_url, KvEngine, KvTxn};
use crate::types::*;
use crate::unfinished::{SliceIds, SliceSweeper};
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// The KV runner of the file system: transaction bodies return this crate's errors.
pub type Kv = crate::kv::Kv<Error>;

const INODE_BATCH: u64 = 1024;
/// How long a directory counts as contended after a change of its entries conflicted
/// (see `Meta::dir_changed`).
const CONTENDED_FOR: Duration = Duration::from_secs(2);
/// How many contended directories are remembered before expired ones are dropped.
const MAX_CONTENDED_DIRS: usize = 1024;
/// JuiceFS's default `--skip-dir-mtime`.
pub const SKIP_DIR_MTIME: Duration = Duration::from_millis(100);
/// A session not refreshed for this long is dead (JuiceFS: 5 heartbeats of 12 s).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a client with a session writes its usage changes to the counters.
pub const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Receives the attributes of an inode this client committed ([`Meta::watch_attrs`]).
pub type AttrWatcher = Arc<dyn Fn(Ino, Option<Attr>) + Send + Sync>;

/// Receives slices whose last reference is gone, to delete their objects.
pub type SliceDeleter = Arc<dyn Fn(Vec<(u64, u32)>) + Send + Sync>;

/// How a client uses the metadata engine.
#[derive(Clone, Debug)]
pub struct MetaConfig {
    /// How long an operation keeps retrying while the database is unreachable (or
    /// restarting, failing over, busy) before it fails with EIO. Conflicts between
    /// transactions are retried a bounded number of times instead.
    pub retry_timeout: Duration,
    /// A session of this client that is not refreshed for this long counts as dead:
    /// other clients then release its locks and open-but-deleted files. A mount uses
    /// five heartbeats, as JuiceFS does.
    pub session_timeout: Duration,
    /// In a directory where changes of entries conflicted lately, its mtime is not
    /// written when the stored one is younger than this (JuiceFS's `--skip-dir-mtime`,
    /// 100 ms by default), so clients creating files in one directory stop colliding on
    /// its attribute. A change of the directory's link count is always written. See
    /// `Meta::dir_changed`.
    pub skip_dir_mtime: Duration,
}

impl Default for MetaConfig {
    fn default() -> Self {
        MetaConfig {
            retry_timeout: crate::kv::DEFAULT_RETRY_TIMEOUT,
            session_timeout: SESSION_TIMEOUT,
            skip_dir_mtime: SKIP_DIR_MTIME,
        }
    }
}

/// Space an inode is charged for: its length rounded up to 4 KiB, and at least 4 KiB.
pub(crate) fn space_of(length: u64) -> i64 {
    if length == 0 {
        4096
    } else {
        (length.div_ceil(4096) * 4096) as i64
    }
}

#[derive(Default)]
struct Range {
    next: u64,
    end: u64,
}

pub struct Meta {
    pub(crate) kv: Kv,
    url: String,
    format: RwLock<Option<Format>>,
    sid: AtomicU64,
    inodes: Mutex<Range>,
    pub(crate) slices: Arc<Mutex<SliceIds>>,
    /// How many times this client has each inode open.
    pub(crate) open_files: Mutex<HashMap<Ino, u32>>,
    /// See [`MetaConfig::skip_dir_mtime`].
    skip_dir_mtime: Duration,
    /// Directories where a change of entries conflicted lately, and when.
    contended_dirs: Mutex<HashMap<Ino, Instant>>,
    /// Files this client's session sustains (`SS` keys): unlinked while open here.
    pub(crate) sustained_here: Mutex<HashSet<Ino>>,
    /// The trash's directory for the current hour (hours since the epoch, inode), once
    /// made or found.
    pub(crate) trash_hour: Mutex<Option<(i64, Ino)>>,
    deleter: RwLock<Option<SliceDeleter>>,
    pub(crate) sweeper: RwLock<Option<SliceSweeper>>,
    /// The session's info, kept to register again if another client cleaned it.
    session_info: Mutex<Vec<u8>>,
    /// Usage changes are kept in memory and written by the flusher (set with a session).
    defer_usage: AtomicBool,
    /// One flush of the usage counters at a time.
    flush_lock: Mutex<()>,
    /// Seconds a session of this client lives without a refresh.
    session_timeout: i64,
    /// ACL rules seen so far, by id and by content.
    pub(crate) acls: RwLock<crate::acl::RuleCache>,
    /// This `Meta`, for the flusher thread.
    me: Weak<Meta>,
    /// Attributes and entries read while the change feed is live (see `cache.rs`).
    pub(crate) cache: crate::cache::MetaCache,
    /// Whether the engine announces changes to other clients and can follow theirs.
    pub(crate) feed_supported: bool,
    /// Tells the change feed's thread to stop.
    pub(crate) feed_stop: AtomicBool,
    /// Hears the attributes this client commits ([`Meta::watch_attrs`]).
    attr_watcher: std::sync::OnceLock<AttrWatcher>,
    /// The quotas this client knows and the credit it holds (see `quota.rs`).
    pub(crate) quotas: crate::quota::QuotaState,
    /// Other clients' readers (see `readers.rs`).
    pub(crate) readers: crate::readers::ReaderState,
}

fn now_secs() -> i64 {
    Time::now().sec
}

impl Meta {
    /// Connects to the engine named by `url` (nothing is read yet).
    pub fn connect(url: &str) -> Result<Arc<Meta>> {
        Self::connect_with(url, MetaConfig::default())
    }

    /// Connects to the engine named by `url` with the given settings.
    pub fn connect_with(url: &str, cfg: MetaConfig) -> Result<Arc<Meta>> {
        let engine = open_engine(url, &keys::LAYOUT)?;
        Ok(Self::with_engine(engine, url, cfg))
    }

    /// Runs on an engine the caller opened (for `url`, named in messages), e.g. one
    /// wrapped to count its calls ([`crate::kv::counting`]).
    pub fn with_engine(engine: Box<dyn KvEngine>, url: &str, cfg: MetaConfig) -> Arc<Meta> {
        let redacted = redact_url(url);
        let kv = Kv::new(engine)
            .with_url(&redacted)
            .with_retry_timeout(cfg.retry_timeout);
        // Every client announces its changes, whether or not it caches itself.
        let feed_supported = kv.announce_changes(keys::announced);
        let meta = Arc::new_cyclic(|me| Meta {
            kv,
            url: redacted,
            format: RwLock::new(None),
            sid: AtomicU64::new(0),
            inodes: Mutex::new(Range::default()),
            slices: Default::default(),
            open_files: Mutex::new(HashMap::new()),
            sustained_here: Mutex::default(),
            trash_hour: Mutex::default(),
            deleter: RwLock::new(None),
            sweeper: RwLock::new(None),
            session_info: Mutex::new(Vec::new()),
            defer_usage: AtomicBool::new(false),
            flush_lock: Mutex::new(()),
            session_timeout: cfg.session_timeout.as_secs().max(1) as i64,
            skip_dir_mtime: cfg.skip_dir_mtime,
            contended_dirs: Mutex::default(),
            acls: Default::default(),
            me: me.clone(),
            cache: Default::default(),
            feed_supported,
            feed_stop: AtomicBool::new(false),
            attr_watcher: Default::default(),
            quotas: Default::default(),
            readers: Default::default(),
        });
        let me = Arc::downgrade(&meta);
        // Without a feed nothing is ever cached here: only the attribute watcher needs
        // this client's commits, and entries need not be copied out of them.
        let watched: crate::kv::WatchedKeys = if feed_supported {
            |key| {
                matches!(
                    keys::changed_key(key),
                    Some(keys::ChangedKey::Attr(_) | keys::ChangedKey::Entry(..))
                )
            }
        } else {
            |key| keys::attr_inode(key).is_some()
        };
        meta.kv.watch_commits(
            watched,
            Box::new(move |writes| {
                if let Some(meta) = me.upgrade() {
                    meta.committed(writes);
                }
            }),
        );
        meta
    }

    /// What this client just committed to attributes and entries: the cache forgets
    /// it (a read in flight must not bring the old value back), and the attribute
    /// watcher hears the new attributes.
    fn committed(&self, writes: &[(Vec<u8>, Option<Vec<u8>>)]) {
        if self.feed_supported {
            let changes = crate::cache::changes_of(writes.iter().map(|(k, _)| k.as_slice()));
            self.cache.forget(&changes, false);
        }
        if let Some(watcher) = self.attr_watcher.get() {
            for (key, value) in writes {
                if let Some(ino) = keys::attr_inode(key) {
                    watcher(ino, value.as_deref().and_then(|v| Attr::decode(v).ok()));
                }
            }
        }
    }

    /// The META-URL with any password removed.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn kv(&self) -> &Kv {
        &self.kv
    }

    /// Usage changes (space, inodes) committed by this client and not yet written to the
    /// counters.
    pub fn pending_usage(&self) -> (i64, i64) {
        (
            self.kv.deferred(&keys::counter("usedSpace")),
            self.kv.deferred(&keys::counter("totalInodes")),
        )
    }

    /// Creates the volume, or with `force` updates an existing one's settings (keeping
    /// its UUID). Returns the stored format.
    pub fn format(&self, mut fmt: Format, force: bool) -> Result<Format> {
        let stored = self.kv.txn(|tx| {
            let old = match tx.get(keys::SETTING)? {
                Some(v) => Some(parse_format(&v)?),
                None => None,
            };
            if let Some(old) = &old {
                if !force {
                    return Err(Error::Invalid(format!(
                        "volume {:?} is already formatted in {} (UUID {}); use --force to update its settings, or another META-URL",
                        old.name, self.url, old.uuid
                    )));
                }
                if old.name != fmt.name {
                    return Err(Error::Invalid(format!(
                        "the database holds volume {:?}, not {:?}: a volume cannot be renamed",
                        old.name, fmt.name
                    )));
                }
                fmt.uuid = old.uuid.clone();
            }
            let json = serde_json::to_vec(&fmt.with_secrets_sealed())
                .map_err(|e| Error::Invalid(format!("cannot encode settings: {e}")))?;
            tx.set(keys::SETTING, &json)?;
            if tx.get(&keys::attr(ROOT_INODE))?.is_none() {
                let mut root = Attr::new(FileType::Directory, 0o777, 0, 0);
                root.nlink = 2;
                root.length = 4 << 10;
                root.parent = ROOT_INODE;
                tx.set(&keys::attr(ROOT_INODE), &root.encode())?;
                tx.set(&keys::counter("nextInode"), &2i64.to_le_bytes())?;
                tx.set(&keys::counter("nextChunk"), &1i64.to_le_bytes())?;
                tx.set(&keys::counter("nextSession"), &0i64.to_le_bytes())?;
                tx.set(&keys::counter("usedSpace"), &space_of(0).to_le_bytes())?;
                tx.set(&keys::counter("totalInodes"), &1i64.to_le_bytes())?;
            }
            if fmt.trash_days > 0 {
                Self::ensure_trash(tx)?;
            }
            Ok(fmt.clone())
        })?;
        *self.format.write() = Some(stored.clone());
        self.sync_volume_quota(&stored)?;
        Ok(stored)
    }

    /// Reads the volume's settings.
    pub fn load(&self) -> Result<Format> {
        let v = self
            .kv
            .read(|tx| Ok(tx.get(keys::SETTING)?))?
            .ok_or_else(|| {
                Error::NotFormatted(format!(
                    "no volume in {}: create one with `nectar format {} NAME`",
                    self.url, self.url
                ))
            })?;
        let fmt = parse_format(&v)?;
        *self.format.write() = Some(fmt.clone());
        self.reload_quotas()?;
        self.note_sessions()?;
        if let Err(e) = self.sync_volume_quota(&fmt) {
            // A read-only client cannot write it; the next writer will.
            tracing::debug!("the volume's quota record is not written yet: {e}");
        }
        Ok(fmt)
    }

    /// The settings loaded by [`Meta::load`] or [`Meta::format`].
    pub fn get_format(&self) -> Result<Format> {
        self.format
            .read()
            .clone()
            .ok_or_else(|| Error::NotFormatted("volume settings not loaded".into()))
    }

    /// Days removed entries are kept in the trash (0: the trash is off).
    pub fn trash_days(&self) -> u32 {
        self.format.read().as_ref().map_or(0, |f| f.trash_days)
    }

    /// Calls `watcher` with every inode attribute this client commits, after the
    /// commit (`None`: the inode was deleted), so a cache above can keep what this
    /// client itself wrote. One watcher per client; false if one was registered before.
    pub fn watch_attrs(&self, watcher: AttrWatcher) -> bool {
        self.attr_watcher.set(watcher).is_ok()
    }

    /// Registers who deletes the objects of unreferenced slices.
    pub fn set_slice_deleter(&self, d: SliceDeleter) {
        *self.deleter.write() = Some(d);
    }

    pub(crate) fn delete_slices(&self, slices: Vec<(u64, u32)>) {
        if slices.is_empty() {
            return;
        }
        match self.deleter.read().as_ref() {
            Some(d) => d(slices),
            None => tracing::warn!(
                "{} unreferenced slices left in storage (no deleter registered); `nectar gc` will find them",
                slices.len()
            ),
        }
    }

    fn alloc(&self, range: &Mutex<Range>, counter: &str, batch: u64) -> Result<u64> {
        let mut r = range.lock();
        if r.next >= r.end {
            let key = keys::counter(counter);
            let end = self.kv.txn(|tx| Ok(tx.incr_by(&key, batch as i64)?))? as u64;
            r.next = end - batch;
            r.end = end;
        }
        let id = r.next;
        r.next += 1;
        Ok(id)
    }

    pub(crate) fn next_inode(&self) -> Result<Ino> {
        loop {
            let ino = self.alloc(&self.inodes, "nextInode", INODE_BATCH)?;
            // Inode numbers of the trash and of internal files are never handed out.
            if ino > ROOT_INODE && ino < TRASH_INODE {
                return Ok(ino);
            }
        }
    }

    // ----- sessions -------------------------------------------------------------------

    /// Registers this client's session; returns its id.
    pub fn new_session(&self, info: &SessionInfo) -> Result<u64> {
        let json = serde_json::to_vec(info).map_err(|e| Error::Invalid(e.to_string()))?;
        let sid = self.kv.txn(|tx| self.register_session(tx, &json))?;
        *self.session_info.lock() = json;
        self.start_session(sid);
        self.defer_usage_changes();
        self.note_sessions()?;
        Ok(sid)
    }

    /// Writes a new session's lease and info; returns its id.
    fn register_session(&self, tx: &mut dyn KvTxn, info: &[u8]) -> Result<u64> {
        let sid = tx.incr_by(&keys::counter("nextSession"), 1)? as u64;
        tx.set(
            &keys::session_expire(sid),
            &(now_secs() + self.session_timeout).to_be_bytes(),
        )?;
        tx.set(&keys::session_info(sid), info)?;
        Ok(sid)
    }

    /// Makes `sid` this client's session. Slice ids come from a range recorded under it
    /// from now on (see [`crate::unfinished`]).
    fn start_session(&self, sid: u64) {
        let mut ids = self.slices.lock();
        self.sid.store(sid, Ordering::Relaxed);
        ids.new_session();
    }

    /// From now on, usage changes stay in memory and a background thread writes them
    /// to the counters every [`USAGE_FLUSH_INTERVAL`]. The thread ends with this `Meta`.
    fn defer_usage_changes(&self) {
        if self.defer_usage.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.me.clone();
        let spawned = std::thread::Builder::new()
            .name("nectar-usage".into())
            .spawn(move || loop {
                std::thread::sleep(USAGE_FLUSH_INTERVAL);
                let Some(m) = me.upgrade() else { return };
                if let Err(e) = m.flush_usage() {
                    tracing::debug!("usage counters not written yet: {e}");
                }
                // Quotas ride along (see `quota.rs`): credit given back, table read.
                if let Err(e) = m.flush_quotas() {
                    tracing::debug!("quota credit not given back yet: {e}");
                }
                if let Err(e) = m.reload_quotas() {
                    tracing::debug!("quotas not read again: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(
                "cannot start the usage flusher ({e}); counters are written in each transaction"
            );
            self.defer_usage.store(false, Ordering::SeqCst);
        }
    }

    /// Writes this client's usage changes to the counters, in one small transaction.
    /// The changes stay counted in memory until it commits, so `statfs` and the capacity
    /// checks never miss them (they may count them twice meanwhile).
    pub fn flush_usage(&self) -> Result<()> {
        let _one = self.flush_lock.lock();
        // First (see `take_volume_credit`): the volume's credit, given back in the same
        // transaction.
        let credit = self.take_volume_credit();
        let (space, inodes) = self.pending_usage();
        if (space, inodes) == (0, 0) && credit.is_none() {
            return Ok(());
        }
        let written = self.kv.txn(|tx| {
            if space != 0 {
                tx.incr_by(&keys::counter("usedSpace"), space)?;
            }
            if inodes != 0 {
                tx.incr_by(&keys::counter("totalInodes"), inodes)?;
            }
            if let Some(taken) = credit {
                self.give_back_volume_credit(tx, taken)?;
            }
            Ok(())
        });
        if let Err(e) = written {
            if let Some(taken) = credit {
                self.restore_credit(ROOT_INODE, taken);
            }
            return Err(e);
        }
        self.kv.settle(&keys::counter("usedSpace"), space);
        self.kv.settle(&keys::counter("totalInodes"), inodes);
        Ok(())
    }

    /// Seconds a session of this client lives without a refresh.
    pub fn session_timeout_secs(&self) -> i64 {
        self.session_timeout
    }

    pub fn session_id(&self) -> u64 {
        self.sid.load(Ordering::Relaxed)
    }

    /// The heartbeat: extends this session's lease and stores its slice mark (see
    /// [`crate::unfinished`]).
    pub fn refresh_session(&self) -> Result<()> {
        let sid = self.session_id();
        if sid == 0 {
            return Ok(());
        }
        let mark = self.slice_mark();
        let info = self.session_info.lock().clone();
        let renewed = self.kv.txn(|tx| {
            if tx.get(&keys::session_info(sid))?.is_none() {
                if self.session_id() != sid {
                    // Closed while this heartbeat was under way (it may have waited out a
                    // database outage): writing the lease now would leave a ghost session.
                    // The read above makes a close that commits first a conflict, so the
                    // retry lands here.
                    return Ok(None);
                }
                // Another client declared us dead and cleaned up after us: the slices
                // drawn under the old id can no longer be committed, so register anew.
                return self.register_session(tx, &info).map(Some);
            }
            tx.set(
                &keys::session_expire(sid),
                &(now_secs() + self.session_timeout).to_be_bytes(),
            )?;
            tx.set(&keys::session_mark(sid), &mark.to_be_bytes())?;
            Ok(None)
        })?;
        if let Some(new) = renewed {
            tracing::warn!(
                "session {sid} had expired and was cleaned by another client (its locks \
                 and unfinished writes are gone); continuing as session {new}"
            );
            self.start_session(new);
            return Ok(());
        }
        if let Err(e) = self.prune_slice_records(sid, mark) {
            tracing::debug!("session {sid}: slice records not pruned yet: {e}");
        }
        self.note_sessions()?;
        self.publish_open_files(sid)
    }

    /// Ends this client's session: frees what it kept alive, then writes the usage
    /// changes still in memory, so a clean unmount leaves the counters exact.
    pub fn close_session(&self) -> Result<()> {
        let sid = self.sid.swap(0, Ordering::Relaxed);
        let cleaned = if sid != 0 {
            self.clean_session(sid, false)
        } else {
            Ok(())
        };
        let flushed = self.flush_usage();
        let given_back = self.flush_quotas();
        cleaned.and(flushed).and(given_back)
    }

    /// Removes a session: its locks, the unlinked files it kept open and, when the
    /// client died (`dead`), the blocks it stored but never committed. The info goes
    /// first, so nothing drawn under the session can be committed meanwhile; the lease
    /// goes last, so a cleaner that fails midway leaves the session to clean again.
    pub(crate) fn clean_session(&self, sid: u64, dead: bool) -> Result<()> {
        self.kv.txn(|tx| Ok(tx.delete(&keys::session_info(sid))?))?;
        let prefix = keys::sustained_prefix(sid);
        let end = crate::kv::prefix_end(&prefix);
        loop {
            let batch = self.kv.read(|tx| Ok(tx.scan(&prefix, &end, 100)?))?;
            if batch.is_empty() {
                break;
            }
            for (k, _) in batch {
                if let Some(ino) = keys::read_ino(&k[prefix.len()..]) {
                    self.release_sustained(sid, ino)?;
                } else {
                    self.kv.txn(|tx| Ok(tx.delete(&k)?))?;
                }
            }
        }
        self.release_session_locks(sid)?;
        self.unpublish_open_files(sid)?;
        self.clean_session_slices(sid, dead)?;
        self.kv.txn(|tx| Ok(tx.delete(&keys::session_expire(sid))?))
    }

    /// Lists sessions, live or not yet cleaned.
    pub fn list_sessions(&self) -> Result<Vec<Session>> {
        let rows = self.kv.read(|tx| Ok(tx.scan(b"SE", b"SF", usize::MAX)?))?;
        let mut out = Vec::new();
        for (k, v) in rows {
            let Some(sid) = keys::read_u64_be(&k[2..]) else {
                continue;
            };
            let expire = keys::read_u64_be(&v).unwrap_or(0) as i64;
            let (info, sustained) = self.kv.read(|tx| {
                let info = tx.get(&keys::session_info(sid))?;
                let p = keys::sustained_prefix(sid);
                let s = tx.scan(&p, &crate::kv::prefix_end(&p), 10_000)?;
                Ok((info, s))
            })?;
            let info = info
                .and_then(|v| serde_json::from_slice(&v).ok())
                .unwrap_or_default();
            let sustained = sustained
                .iter()
                .filter_map(|(k, _)| keys::read_ino(&k[10..]))
                .collect();
            out.push(Session {
                sid,
                expire,
                info,
                sustained,
            });
        }
        Ok(out)
    }

    /// Cleans sessions whose lease ran out (their client died). Returns how many.
    pub fn clean_stale_sessions(&self) -> Result<usize> {
        let now = now_secs();
        let stale: Vec<u64> = self
            .list_sessions()?
            .into_iter()
            .filter(|s| s.expire < now && s.sid != self.session_id())
            .map(|s| s.sid)
            .collect();
        for sid in &stale {
            tracing::info!("cleaning stale session {sid}");
            self.clean_session(*sid, true)?;
        }
        Ok(stale.len())
    }

    // ----- statfs ---------------------------------------------------------------------

    pub fn statfs(&self) -> Result<StatFs> {
        let mut fmt = self.get_format()?;
        // The limits as the quota table has them: it is read every second, the
        // settings only every minute.
        if let Some((capacity, inodes)) = self.volume_limits() {
            (fmt.capacity, fmt.inodes) = (capacity, inodes);
        }
        let (space, inodes) = self.pending_usage();
        let (used, inodes) = self.kv.read(|tx| {
            let [u, i]: [Option<Vec<u8>>; 2] = tx
                .gets(&[keys::counter("usedSpace"), keys::counter("totalInodes")])?
                .try_into()
                .map_err(|_| Error::Corrupt("engine returned a short batch".into()))?;
            let p = |v: Option<Vec<u8>>| v.map(|v| crate::kv::parse_counter(&v)).transpose();
            Ok((
                (p(u)?.unwrap_or(0) + space).max(0) as u64,
                (p(i)?.unwrap_or(0) + inodes).max(0) as u64,
            ))
        })?;
        let total_space = if fmt.capacity > 0 {
            fmt.capacity
        } else {
            // No limit: report 1 PiB, growing with use so `df` never shows the volume full.
            (1u64 << 50).max(used.saturating_mul(2))
        };
        let avail_inodes = if fmt.inodes > 0 {
            fmt.inodes.saturating_sub(inodes)
        } else {
            (10u64 << 20).max(inodes)
        };
        Ok(StatFs {
            total_space,
            avail_space: total_space.saturating_sub(used),
            used_inodes: inodes,
            avail_inodes,
        })
    }

    /// Records in a directory's attributes that its entries changed at `now`, and says
    /// whether they must be written. A directory nobody else writes in gets exact times
    /// (POSIX, and pjdfstest with 1 ms naps). Once a change of its entries conflicted
    /// with another client's, the directory counts as contended for a while
    /// ([`CONTENDED_FOR`]): its new mtime and ctime are then not written when the stored
    /// mtime is younger than [`MetaConfig::skip_dir_mtime`] (times the conflicts of this
    /// transaction), so writers in a busy directory stop colliding on its attribute and
    /// its times lag by at most that much. A change of its link count (`nlink_changed`)
    /// is always written. (JuiceFS skips from the first change, contended or not.)
    pub(crate) fn dir_changed(
        &self,
        ino: Ino,
        dir: &mut Attr,
        now: Time,
        nlink_changed: bool,
        attempt: u32,
    ) -> bool {
        let conflicts = attempt.saturating_sub(1);
        let contended = {
            let mut busy = self.contended_dirs.lock();
            let at = Instant::now();
            if conflicts > 0 {
                if busy.len() >= MAX_CONTENDED_DIRS {
                    busy.retain(|_, since| at.duration_since(*since) < CONTENDED_FOR);
                }
                busy.insert(ino, at);
            }
            busy.get(&ino)
                .is_some_and(|since| at.duration_since(*since) < CONTENDED_FOR)
        };
        let window = self.skip_dir_mtime.as_nanos() as i128 * conflicts.max(1) as i128;
        let age = now.nanos() - dir.mtime.nanos();
        if contended && !nlink_changed && (0..window).contains(&age) {
            return false;
        }
        dir.mtime = now;
        dir.ctime = now;
        true
    }

    /// Records a usage change of the volume: kept in memory when a flusher runs (see
    /// the module doc), otherwise written to the counters in this transaction. A growth
    /// is charged to the volume's quota first, which refuses it with ENOSPC past
    /// `--capacity` or `--inodes` (see `quota.rs`).
    pub(crate) fn update_usage(&self, tx: &mut dyn KvTxn, space: i64, inodes: i64) -> Result<()> {
        if space == 0 && inodes == 0 {
            return Ok(());
        }
        self.charge(tx, self.volume_domain(), space, inodes)?;
        if self.defer_usage.load(Ordering::SeqCst) {
            tx.incr_later(&keys::counter("usedSpace"), space)?;
            tx.incr_later(&keys::counter("totalInodes"), inodes)?;
            return Ok(());
        }
        if space != 0 {
            tx.incr_by(&keys::counter("usedSpace"), space)?;
        }
        if inodes != 0 {
            tx.incr_by(&keys::counter("totalInodes"), inodes)?;
        }
        Ok(())
    }

    /// Whether usage changes are kept in memory and written by the flusher.
    pub(crate) fn deferring_usage(&self) -> bool {
        self.defer_usage.load(Ordering::SeqCst)
    }

    /// Counter value (for tests and `status`); `usedSpace` and `totalInodes` include
    /// this client's changes not written yet.
    pub fn counter(&self, name: &str) -> Result<i64> {
        let key = keys::counter(name);
        let stored = self
            .kv
            .read(|tx| Ok(tx.get(&key)?))?
            .map(|v| crate::kv::parse_counter(&v))
            .transpose()?
            .unwrap_or(0);
        let (space, inodes) = self.pending_usage();
        Ok(match name {
            "usedSpace" => stored + space,
            "totalInodes" => stored + inodes,
            _ => stored,
        })
    }
}

fn parse_format(v: &[u8]) -> Result<Format> {
    let fmt: Format =
        serde_json::from_slice(v).map_err(|e| Error::Corrupt(format!("volume settings: {e}")))?;
    fmt.with_secrets_opened()
        .map_err(|e| Error::Corrupt(format!("volume settings: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_at(sec: i64) -> Attr {
        let mut a = Attr::new(FileType::Directory, 0o755, 0, 0);
        a.mtime = Time { sec, nsec: 0 };
        a.ctime = a.mtime;
        a
    }

    #[test]
    fn a_directory_keeps_exact_times_until_its_changes_conflict() {
        let m = Meta::connect("memory://dir-changed").unwrap();
        let now = Time { sec: 100, nsec: 0 };
        let just_before = Time {
            sec: 99,
            nsec: 950_000_000,
        };
        // Uncontended: every change writes exact times, however recent the last one.
        let mut d = dir_at(0);
        d.mtime = just_before;
        assert!(m.dir_changed(7, &mut d, now, false, 1));
        assert_eq!(d.mtime, now);
        // A retried change marks the directory contended and skips a young mtime...
        let mut d = dir_at(0);
        d.mtime = just_before;
        assert!(!m.dir_changed(7, &mut d, now, false, 2));
        assert_eq!(d.mtime, just_before, "left as stored");
        // ...and so does a first try while it stays contended, but not an old mtime,
        // a link-count change, or another directory.
        let mut d = dir_at(0);
        d.mtime = just_before;
        assert!(!m.dir_changed(7, &mut d, now, false, 1));
        assert!(m.dir_changed(7, &mut dir_at(50), now, false, 1));
        let mut d = dir_at(0);
        d.mtime = just_before;
        assert!(m.dir_changed(7, &mut d, now, true, 1));
        let mut d = dir_at(0);
        d.mtime = just_before;
        assert!(m.dir_changed(8, &mut d, now, false, 1));
    }
}
