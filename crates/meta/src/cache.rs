//! The client's metadata cache, kept fresh by the engine's change feed.
//!
//! The design: a client may answer `stat` and lookups from memory only while it is sure
//! to hear of every change: while the engine's change feed (`nectar_kv::feed`) is live.
//! Every commit announces the keys it changed (attributes, entries, chunks, xattrs);
//! a follower thread ([`Meta::follow_changes`]) turns the other clients'
//! announcements into [`Change`]s, drops what they touch from this cache, and passes
//! them on to a listener (the VFS, which tells the kernel). When the feed breaks, the
//! cache empties and stops answering at once, and the listener hears
//! [`Change::FeedLost`] so the kernel's caches are dropped too; when it comes back,
//! everything is read afresh.
//!
//! A read racing a change must not put the old value in the cache after the change
//! was heard. So every change heard (this client's own commits included) gets a number
//! in a sequence and is remembered in a short log; a read notes the sequence before it
//! starts ([`MetaCache::seq`]) and its result is kept only if nothing logged since
//! touches it. The same test tells the kernel adapter whether an answer may be given
//! with a long kernel timeout ([`Meta::changed_since`]).
//!
//! What this client creates is kept as its commit wrote it ([`MetaCache::keep_own_entry`]),
//! so a `stat` of a file made here costs nothing. The commit's own logged changes must
//! not count against it, but any other change must, even one logged before it (another
//! thread's chmod of the new file may finish its commit first): each thread remembers
//! the numbers its last commit logged, and only those are passed over.
//!
//! Directory listings are kept whole (name, inode, type of each entry, for directories
//! of at most [`MAX_LISTING`] entries) and dropped by any change to an entry of the
//! directory; the attributes a `readdirplus` page needs come from the attribute map,
//! and only those missing are read, in one batch.
//!
//! A directory is *complete* when every entry it has is in the entry map: after its
//! whole listing was kept, or when this client made it (empty). A lookup of a name a
//! complete directory lacks is answered "no such entry" without a round trip: the
//! kernel looks up every name before creating it, so this is one round trip of each
//! create. Any change to an entry of the directory makes it incomplete, except this
//! client's own create or removal of that very entry, which the operation announces
//! beforehand ([`MetaCache::restoring`]): a removal leaves the name absent, as it now
//! is; a create puts the entry back with [`MetaCache::keep_own_entry`] or, when it may
//! not be kept, makes the directory incomplete.
//!
//! Bounded: the maps are emptied when they reach [`MAX_CACHED`] entries each (listed
//! entries counted together), and a read that started before the oldest logged change
//! counts as touched.

use crate::keys::{self, ChangedKey};
use crate::meta::Meta;
use crate::types::{Attr, FileType, Ino};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What another client changed, as a listener of [`Meta::follow_changes`] hears it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The attributes of an inode (its length, times, mode, link count...).
    Attr(Ino),
    /// A directory entry: `(parent, name)` was added, removed or points elsewhere.
    Entry(Ino, Vec<u8>),
    /// The data of a file (the slices of one chunk).
    Data(Ino, u32),
    /// An extended attribute of an inode.
    Xattr(Ino),
    /// Anything may have changed (a commit too big to list, or a feed message this
    /// version does not understand).
    Everything,
    /// The feed broke: changes are not heard until [`Change::FeedLive`].
    FeedLost,
    /// The feed is live: changes are heard from now on.
    FeedLive,
}

/// Hears what other clients changed.
pub type ChangeListener = Arc<dyn Fn(&[Change]) + Send + Sync>;

/// A point in the sequence of changes this client heard of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeSeq(u64);

/// Entries of each map before it is emptied.
pub const MAX_CACHED: usize = 500_000;
/// Directories with more entries than this are listed page by page, never kept whole.
pub const MAX_LISTING: usize = 20_000;
/// Changes remembered to check reads in flight against.
const LOG_LEN: usize = 4096;

/// What a logged change touches.
#[derive(Debug)]
enum Touched {
    Inode(Ino),
    Entry(Ino, Box<[u8]>),
    All,
}

thread_local! {
    /// The numbers of the changes this thread's last commit logged: (after, up to].
    static OWN_LOGGED: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
    /// The entries this thread's operation in progress creates, removes or moves, and
    /// then sets right in the cache itself (see [`MetaCache::restoring`]).
    static RESTORING: std::cell::RefCell<Vec<(Ino, Box<[u8]>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

#[derive(Default)]
struct State {
    /// Number of the last change heard.
    seq: u64,
    /// The latest changes: number, whether another client made it, what it touched.
    log: VecDeque<(u64, bool, Touched)>,
    /// Changes up to this number were dropped from the log.
    forgotten: u64,
    attrs: HashMap<Ino, Attr>,
    entries: HashMap<(Ino, Box<[u8]>), Ino>,
    listings: HashMap<Ino, Listing>,
    /// Entries of all `listings`.
    listed: usize,
    /// Directories every entry of which is in `entries`.
    complete: HashSet<Ino>,
}

/// A whole directory listing in name order.
pub(crate) type Listing = Arc<[Listed]>;

/// One entry of a kept listing.
#[derive(Debug)]
pub(crate) struct Listed {
    pub(crate) name: Box<[u8]>,
    pub(crate) ino: Ino,
    pub(crate) typ: FileType,
}

impl State {
    /// Logs a change and drops what it touches. `restored`: an entry change this
    /// thread's operation sets right itself, which leaves its directory complete.
    fn log(&mut self, foreign: bool, t: Touched, restored: bool) {
        self.seq += 1;
        match &t {
            Touched::Inode(ino) => {
                self.attrs.remove(ino);
            }
            Touched::Entry(parent, name) => {
                self.entries.remove(&(*parent, name.clone()));
                if let Some(gone) = self.listings.remove(parent) {
                    self.listed -= gone.len();
                }
                if !restored {
                    self.complete.remove(parent);
                }
            }
            Touched::All => {
                self.attrs.clear();
                self.entries.clear();
                self.complete.clear();
                self.listings.clear();
                self.listed = 0;
            }
        }
        if self.log.len() == LOG_LEN {
            if let Some((n, ..)) = self.log.pop_front() {
                self.forgotten = n;
            }
        }
        self.log.push_back((self.seq, foreign, t));
    }

    /// Keeps attributes, emptying the map first when it is full.
    fn put_attr(&mut self, ino: Ino, attr: &Attr) {
        if self.attrs.len() >= MAX_CACHED {
            self.attrs.clear();
        }
        self.attrs.insert(ino, attr.clone());
    }

    /// Keeps an entry and its inode's attributes, as [`State::put_attr`].
    fn put_entry(&mut self, parent: Ino, name: &[u8], ino: Ino, attr: &Attr) {
        self.make_room_for_entries(1);
        self.entries.insert((parent, Box::from(name)), ino);
        self.put_attr(ino, attr);
    }

    /// Empties the entry map (and so every directory's completeness) when `more`
    /// entries would overfill it.
    fn make_room_for_entries(&mut self, more: usize) {
        if self.entries.len() + more > MAX_CACHED {
            self.entries.clear();
            self.complete.clear();
        }
    }

    /// Whether a change heard after `since` (another client's only, with
    /// `foreign_only`) touches inode `ino` or entry `entry`.
    fn touched_since(
        &self,
        since: ChangeSeq,
        foreign_only: bool,
        ino: Option<Ino>,
        entry: Option<(Ino, &[u8])>,
    ) -> bool {
        self.touched_since_but(since, foreign_only, (0, 0), ino, entry)
    }

    /// [`State::touched_since`], passing over the changes numbered in `skip`.
    fn touched_since_but(
        &self,
        since: ChangeSeq,
        foreign_only: bool,
        skip: (u64, u64),
        ino: Option<Ino>,
        entry: Option<(Ino, &[u8])>,
    ) -> bool {
        self.any_since_but(since, foreign_only, skip, |t| match t {
            Touched::All => true,
            Touched::Inode(i) => Some(*i) == ino,
            Touched::Entry(p, n) => entry.is_some_and(|(ep, en)| ep == *p && en == &n[..]),
        })
    }

    /// Whether a change heard after `since` is one `touches` selects.
    fn any_since(
        &self,
        since: ChangeSeq,
        foreign_only: bool,
        touches: impl Fn(&Touched) -> bool,
    ) -> bool {
        self.any_since_but(since, foreign_only, (0, 0), touches)
    }

    /// [`State::any_since`], passing over the changes numbered in `skip` (after, up to].
    fn any_since_but(
        &self,
        since: ChangeSeq,
        foreign_only: bool,
        skip: (u64, u64),
        touches: impl Fn(&Touched) -> bool,
    ) -> bool {
        if since.0 < self.forgotten {
            return true;
        }
        self.log
            .iter()
            .rev()
            .take_while(|(n, ..)| *n > since.0)
            .filter(|(n, foreign, _)| (*foreign || !foreign_only) && !(skip.0 < *n && *n <= skip.1))
            .any(|(.., t)| touches(t))
    }
}

/// Ends what [`MetaCache::restoring`] announced.
pub(crate) struct Restoring;

impl Drop for Restoring {
    fn drop(&mut self) {
        RESTORING.with(|r| r.borrow_mut().clear());
    }
}

/// Attributes and entries read from metadata, valid while the change feed is live.
#[derive(Default)]
pub(crate) struct MetaCache {
    live: AtomicBool,
    state: Mutex<State>,
}

impl MetaCache {
    pub(crate) fn live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    pub(crate) fn seq(&self) -> ChangeSeq {
        ChangeSeq(self.state.lock().seq)
    }

    pub(crate) fn attr(&self, ino: Ino) -> Option<Attr> {
        if !self.live() {
            return None;
        }
        self.state.lock().attrs.get(&ino).cloned()
    }

    /// The inode and attributes of entry `name` of `parent`.
    pub(crate) fn entry(&self, parent: Ino, name: &[u8]) -> Option<(Ino, Attr)> {
        if !self.live() {
            return None;
        }
        let st = self.state.lock();
        let ino = *st.entries.get(&(parent, Box::from(name)))?;
        Some((ino, st.attrs.get(&ino)?.clone()))
    }

    /// Keeps attributes read by a read that started at `since`, unless a change heard
    /// meanwhile touches them.
    pub(crate) fn keep_attr(&self, since: ChangeSeq, ino: Ino, attr: &Attr) {
        if !self.live() {
            return;
        }
        let mut st = self.state.lock();
        if !st.touched_since(since, false, Some(ino), None) {
            st.put_attr(ino, attr);
        }
    }

    /// Keeps an entry and its inode's attributes, as [`MetaCache::keep_attr`].
    pub(crate) fn keep_entry(
        &self,
        since: ChangeSeq,
        parent: Ino,
        name: &[u8],
        ino: Ino,
        attr: &Attr,
    ) {
        if !self.live() {
            return;
        }
        let mut st = self.state.lock();
        if !st.touched_since(since, false, Some(ino), Some((parent, name))) {
            st.put_entry(parent, name, ino, attr);
        }
    }

    /// Whether `parent` surely has no entry `name`: it is complete and lacks it.
    pub(crate) fn known_absent(&self, parent: Ino, name: &[u8]) -> bool {
        if !self.live() {
            return false;
        }
        let st = self.state.lock();
        st.complete.contains(&parent) && !st.entries.contains_key(&(parent, Box::from(name)))
    }

    /// Announces that this thread's next commit creates, removes or moves `entries`
    /// (parent, name) and that the operation sets the cache right itself (a removal by
    /// nothing more, a create with [`MetaCache::keep_own_entry`], the new name of a move
    /// with [`MetaCache::keep_moved_entry`]), so that the change leaves their
    /// directories complete. Lasts until the guard is dropped.
    pub(crate) fn restoring(&self, entries: &[(Ino, &[u8])]) -> Restoring {
        RESTORING.with(|r| {
            *r.borrow_mut() = entries.iter().map(|(p, n)| (*p, Box::from(*n))).collect();
        });
        Restoring
    }

    /// The whole listing of directory `dir`, when kept.
    pub(crate) fn listing(&self, dir: Ino) -> Option<Listing> {
        if !self.live() {
            return None;
        }
        self.state.lock().listings.get(&dir).cloned()
    }

    /// Keeps the whole listing of `dir` read by a read that started at `since`, unless
    /// an entry of `dir` changed meanwhile.
    pub(crate) fn keep_listing(&self, since: ChangeSeq, dir: Ino, listing: &Listing) {
        if !self.live() {
            return;
        }
        let mut st = self.state.lock();
        let touched = |t: &Touched| match t {
            Touched::All => true,
            Touched::Entry(p, _) => *p == dir,
            Touched::Inode(_) => false,
        };
        if st.any_since(since, false, touched) {
            return;
        }
        if st.listed + listing.len() > MAX_CACHED {
            st.listings.clear();
            st.listed = 0;
        }
        st.listed += listing.len();
        if let Some(old) = st.listings.insert(dir, listing.clone()) {
            st.listed -= old.len();
        }
        // Every entry is known now: the directory is complete.
        st.make_room_for_entries(listing.len());
        for e in listing.iter() {
            st.entries.insert((dir, e.name.clone()), e.ino);
        }
        st.complete.insert(dir);
    }

    /// Keeps the attributes of several inodes, read by one read that started at
    /// `since`, as [`MetaCache::keep_attr`] does for one.
    pub(crate) fn keep_attrs<'a>(
        &self,
        since: ChangeSeq,
        attrs: impl Iterator<Item = (Ino, &'a Attr)>,
    ) {
        if !self.live() {
            return;
        }
        let mut st = self.state.lock();
        for (ino, attr) in attrs {
            if !st.touched_since(since, false, Some(ino), None) {
                st.put_attr(ino, attr);
            }
        }
    }

    /// The kept attributes of these inodes (`None` where not kept).
    pub(crate) fn attrs_of(&self, inos: impl Iterator<Item = Ino>) -> Vec<Option<Attr>> {
        let live = self.live();
        let st = self.state.lock();
        inos.map(|ino| st.attrs.get(&ino).filter(|_| live).cloned())
            .collect()
    }

    /// Keeps an entry and its inode's attributes as this thread's commit, which started
    /// at `since`, just wrote them: unless a change other than that commit's touched
    /// them since.
    ///
    /// Run after a create announced with [`MetaCache::restoring`]: when the entry may
    /// not be kept, `parent` is no longer complete. A new directory (`attr` says so) is
    /// complete: it is empty, unless a change to one of its entries came meanwhile.
    pub(crate) fn keep_own_entry(
        &self,
        since: ChangeSeq,
        parent: Ino,
        name: &[u8],
        ino: Ino,
        attr: &Attr,
    ) {
        self.keep_own(
            since,
            parent,
            name,
            ino,
            attr,
            attr.typ == FileType::Directory,
        );
    }

    /// [`MetaCache::keep_own_entry`] for the new name of an inode this thread's commit
    /// moved there (a directory moved keeps its entries, which are not all known).
    pub(crate) fn keep_moved_entry(
        &self,
        since: ChangeSeq,
        parent: Ino,
        name: &[u8],
        ino: Ino,
        attr: &Attr,
    ) {
        self.keep_own(since, parent, name, ino, attr, false);
    }

    fn keep_own(
        &self,
        since: ChangeSeq,
        parent: Ino,
        name: &[u8],
        ino: Ino,
        attr: &Attr,
        new_dir: bool,
    ) {
        if !self.live() {
            return;
        }
        let own = OWN_LOGGED.with(|o| o.get());
        let mut st = self.state.lock();
        if st.touched_since_but(since, false, own, Some(ino), Some((parent, name))) {
            st.complete.remove(&parent);
            return;
        }
        st.put_entry(parent, name, ino, attr);
        let touches_new_dir = |t: &Touched| match t {
            Touched::All => true,
            Touched::Entry(p, _) => *p == ino,
            Touched::Inode(_) => false,
        };
        if new_dir && !st.any_since_but(since, false, own, touches_new_dir) {
            st.complete.insert(ino);
        }
    }

    /// Drops what changes touch. `foreign`: another client made them; otherwise this
    /// thread's commit did, and the numbers they get are remembered for
    /// [`MetaCache::keep_own_entry`].
    pub(crate) fn forget(&self, changes: &[Change], foreign: bool) {
        let restoring = if foreign {
            Vec::new()
        } else {
            RESTORING.with(|r| r.borrow().clone())
        };
        let mut st = self.state.lock();
        let first = st.seq;
        if !foreign {
            // Set even for no changes, so that an older commit's numbers never stand.
            OWN_LOGGED.with(|o| o.set((first, first + changes.len() as u64)));
        }
        for c in changes {
            let t = match c {
                Change::Attr(ino) | Change::Data(ino, _) | Change::Xattr(ino) => {
                    Touched::Inode(*ino)
                }
                Change::Entry(p, n) => Touched::Entry(*p, n.clone().into_boxed_slice()),
                Change::Everything | Change::FeedLost | Change::FeedLive => Touched::All,
            };
            let restored = matches!(&t,
                Touched::Entry(p, n) if restoring.iter().any(|(rp, rn)| p == rp && n == rn));
            st.log(foreign, t, restored);
        }
    }

    /// Starts or stops answering; either way everything known so far is dropped.
    pub(crate) fn set_live(&self, live: bool) {
        let mut st = self.state.lock();
        st.log(true, Touched::All, false);
        self.live.store(live, Ordering::Release);
    }

    /// See [`Meta::changed_since`].
    pub(crate) fn changed_since(
        &self,
        since: ChangeSeq,
        ino: Ino,
        entry: Option<(Ino, &[u8])>,
    ) -> bool {
        !self.live()
            || self
                .state
                .lock()
                .touched_since(since, true, Some(ino), entry)
    }
}

/// The changes a set of changed keys means.
pub(crate) fn changes_of<'k>(keys: impl IntoIterator<Item = &'k [u8]>) -> Vec<Change> {
    keys.into_iter()
        .filter_map(|k| {
            Some(match keys::changed_key(k)? {
                ChangedKey::Attr(ino) => Change::Attr(ino),
                ChangedKey::Entry(p, name) => Change::Entry(p, name.to_vec()),
                ChangedKey::Chunk(ino, index) => Change::Data(ino, index),
                ChangedKey::Xattr(ino) => Change::Xattr(ino),
            })
        })
        .collect()
}

impl Meta {
    /// Whether the engine can tell this client what others change (all but TiKV), so
    /// that a cache may be trusted while its feed is live.
    pub fn feed_supported(&self) -> bool {
        self.feed_supported
    }

    /// Whether the change feed is live: the cache answers, and every change another
    /// client commits reaches [`Meta::follow_changes`]'s listener.
    pub fn feed_live(&self) -> bool {
        self.cache.live()
    }

    /// The current point in the sequence of changes heard, to pass to
    /// [`Meta::changed_since`] after a read.
    pub fn change_seq(&self) -> ChangeSeq {
        self.cache.seq()
    }

    /// Whether an answer about inode `ino` (and entry `entry`) read since `since` may be
    /// stale: the feed is not live, or another client's change heard meanwhile touches
    /// it. A kernel adapter gives such an answer only a short timeout.
    pub fn changed_since(&self, since: ChangeSeq, ino: Ino, entry: Option<(Ino, &[u8])>) -> bool {
        self.cache.changed_since(since, ino, entry)
    }

    /// Whether a listing of directory `dir` read since `since` may be stale: the feed
    /// is not live, or another client's change heard meanwhile added, removed or
    /// replaced one of its entries.
    pub fn listing_changed_since(&self, since: ChangeSeq, dir: Ino) -> bool {
        !self.cache.live()
            || self.cache.state.lock().any_since(since, true, |t| match t {
                Touched::All => true,
                Touched::Inode(_) => false,
                Touched::Entry(p, _) => *p == dir,
            })
    }

    /// Starts following other clients' changes in a thread of its own: the cache
    /// answers while the feed is live, and `listener` hears every change (after the
    /// cache dropped it) and every break and return of the feed. Returns false when the
    /// engine has no feed; then nothing is cached here. Stops with
    /// [`Meta::stop_following`].
    pub fn follow_changes(self: &Arc<Self>, listener: ChangeListener) -> bool {
        if !self.feed_supported {
            return false;
        }
        let meta = self.clone();
        let started = std::thread::Builder::new()
            .name("nectar-feed".into())
            .spawn(move || {
                let mut was_lost = false;
                let res = meta.kv.follow_changes(&mut |event| {
                    use crate::kv::FeedEvent;
                    match event {
                        FeedEvent::Live => {
                            meta.cache.set_live(true);
                            if was_lost {
                                tracing::info!("metadata change feed is back: caching again");
                            }
                            listener(&[Change::FeedLive]);
                        }
                        FeedEvent::Lost(why) => {
                            meta.cache.set_live(false);
                            if !was_lost {
                                tracing::warn!(
                                    "metadata change feed lost ({why}): another client's changes show within the attribute timeout until it is back"
                                );
                            }
                            was_lost = true;
                            listener(&[Change::FeedLost]);
                        }
                        FeedEvent::Changed(keys) => {
                            let changes = changes_of(keys.iter().map(Vec::as_slice));
                            if !changes.is_empty() {
                                meta.cache.forget(&changes, true);
                                listener(&changes);
                            }
                        }
                        FeedEvent::Everything => {
                            meta.cache.forget(&[Change::Everything], true);
                            listener(&[Change::Everything]);
                        }
                        FeedEvent::Idle => {}
                    }
                    !meta.feed_stop.load(Ordering::Relaxed)
                });
                meta.cache.set_live(false);
                if let Err(e) = res {
                    tracing::warn!("metadata change feed: {e}");
                }
            });
        started.is_ok()
    }

    /// Stops the thread of [`Meta::follow_changes`] within about a second.
    pub fn stop_following(&self) {
        self.feed_stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::FileType;

    fn attr(len: u64) -> Attr {
        let mut a = Attr::new(FileType::File, 0o644, 0, 0);
        a.length = len;
        a
    }

    #[test]
    fn nothing_is_kept_or_answered_while_the_feed_is_not_live() {
        let c = MetaCache::default();
        let s = c.seq();
        c.keep_attr(s, 5, &attr(1));
        assert_eq!(c.attr(5), None);
        c.set_live(true);
        let s = c.seq();
        c.keep_entry(s, 1, b"a", 5, &attr(1));
        assert_eq!(c.entry(1, b"a").map(|e| e.0), Some(5));
        assert_eq!(c.attr(5).map(|a| a.length), Some(1));
        c.set_live(false);
        assert_eq!(c.attr(5), None);
        c.set_live(true);
        assert_eq!(c.attr(5), None, "a feed that comes back starts empty");
    }

    #[test]
    fn listings_are_kept_until_an_entry_of_their_directory_changes() {
        let c = MetaCache::default();
        c.set_live(true);
        let listing = |names: &[&str]| -> Listing {
            names
                .iter()
                .enumerate()
                .map(|(i, n)| Listed {
                    name: n.as_bytes().into(),
                    ino: 10 + i as Ino,
                    typ: FileType::File,
                })
                .collect::<Vec<_>>()
                .into()
        };
        // A listing read while an entry of its directory changed is not kept; a change
        // elsewhere or to an attribute does not matter.
        let before = c.seq();
        c.forget(&[Change::Entry(1, b"x".to_vec())], true);
        c.keep_listing(before, 1, &listing(&["a"]));
        assert!(c.listing(1).is_none());
        let before = c.seq();
        c.forget(&[Change::Entry(2, b"x".to_vec()), Change::Attr(1)], true);
        c.keep_listing(before, 1, &listing(&["a", "b"]));
        assert_eq!(c.listing(1).map(|l| l.len()), Some(2));
        // Kept until an entry of the directory changes, by anyone.
        c.forget(&[Change::Attr(10), Change::Data(11, 0)], true);
        assert!(c.listing(1).is_some());
        c.forget(&[Change::Entry(1, b"c".to_vec())], false);
        assert!(c.listing(1).is_none());
        assert_eq!(c.state.lock().listed, 0);
        // Attributes kept in a batch follow the same rule as one by one.
        let before = c.seq();
        c.forget(&[Change::Attr(11)], true);
        let (one, two) = (attr(1), attr(2));
        c.keep_attrs(before, [(10, &one), (11, &two)].into_iter());
        assert_eq!(c.attrs_of([10, 11].into_iter()), [Some(one), None]);
        // Nothing is answered once the feed is lost.
        c.keep_listing(c.seq(), 3, &listing(&["a"]));
        c.set_live(false);
        assert!(c.listing(3).is_none());
        assert_eq!(c.attrs_of([10].into_iter()), [None]);
    }

    #[test]
    fn what_this_thread_created_is_kept_unless_another_change_came_between() {
        let c = Arc::new(MetaCache::default());
        c.set_live(true);
        // The commit of a create logs its own changes; they do not count against it.
        let since = c.seq();
        c.forget(&[Change::Attr(7), Change::Entry(1, b"new".to_vec())], false);
        c.keep_own_entry(since, 1, b"new", 7, &attr(3));
        assert_eq!(c.entry(1, b"new").map(|e| e.0), Some(7));
        // Another thread's commit touching the new inode, logged before this thread's
        // own (its commit finished first), does count.
        let since = c.seq();
        let other = c.clone();
        std::thread::spawn(move || other.forget(&[Change::Attr(8)], false))
            .join()
            .unwrap();
        c.forget(
            &[Change::Attr(8), Change::Entry(1, b"second".to_vec())],
            false,
        );
        c.keep_own_entry(since, 1, b"second", 8, &attr(4));
        assert_eq!(c.entry(1, b"second"), None);
        // So does another client's change, and a commit whose changes were not logged
        // does not lend its numbers to the next keep.
        let since = c.seq();
        c.forget(&[Change::Entry(1, b"third".to_vec())], true);
        c.forget(&[], false);
        c.keep_own_entry(since, 1, b"third", 9, &attr(5));
        assert_eq!(c.entry(1, b"third"), None);
    }

    #[test]
    fn complete_directories_know_which_names_they_lack() {
        let c = Arc::new(MetaCache::default());
        c.set_live(true);
        let dir_attr = || {
            let mut a = attr(0);
            a.typ = FileType::Directory;
            a
        };
        // A directory made here is complete; its parent, never listed, is not.
        let since = c.seq();
        {
            let _r = c.restoring(&[(1, b"d")]);
            c.forget(&[Change::Attr(5), Change::Entry(1, b"d".to_vec())], false);
        }
        c.keep_own_entry(since, 1, b"d", 5, &dir_attr());
        assert!(c.known_absent(5, b"x"));
        assert!(!c.known_absent(1, b"x"));
        // Its own create and removal keep it complete.
        let since = c.seq();
        {
            let _r = c.restoring(&[(5, b"f")]);
            c.forget(&[Change::Attr(6), Change::Entry(5, b"f".to_vec())], false);
        }
        c.keep_own_entry(since, 5, b"f", 6, &attr(0));
        assert!(!c.known_absent(5, b"f"));
        assert!(c.known_absent(5, b"g"));
        {
            let _r = c.restoring(&[(5, b"f")]);
            c.forget(&[Change::Entry(5, b"f".to_vec()), Change::Attr(6)], false);
        }
        assert!(c.known_absent(5, b"f"));
        // A create whose entry may not be kept (another thread changed the new inode
        // meanwhile) leaves it incomplete.
        let since = c.seq();
        let other = c.clone();
        std::thread::spawn(move || other.forget(&[Change::Attr(7)], false))
            .join()
            .unwrap();
        {
            let _r = c.restoring(&[(5, b"h")]);
            c.forget(&[Change::Attr(7), Change::Entry(5, b"h".to_vec())], false);
        }
        c.keep_own_entry(since, 5, b"h", 7, &attr(0));
        assert!(!c.known_absent(5, b"zzz"));
        // An announced move keeps both directories complete, with the new name known.
        c.keep_own_entry(c.seq(), 1, b"d9", 9, &dir_attr());
        let since = c.seq();
        {
            let _r = c.restoring(&[(5, b"f"), (9, b"m")]);
            c.forget(
                &[
                    Change::Entry(5, b"f".to_vec()),
                    Change::Entry(9, b"m".to_vec()),
                ],
                false,
            );
        }
        c.keep_moved_entry(since, 9, b"m", 12, &dir_attr());
        assert_eq!(c.entry(9, b"m").map(|e| e.0), Some(12));
        assert!(c.known_absent(9, b"n"));
        assert!(!c.known_absent(12, b"x"), "a moved directory is not new");
        // A whole listing completes a directory; an entry change not announced (a
        // rename here, anything from another client) makes it incomplete.
        let listing: Listing = vec![Listed {
            name: b"a".as_slice().into(),
            ino: 8,
            typ: FileType::File,
        }]
        .into();
        c.keep_listing(c.seq(), 5, &listing);
        assert!(!c.known_absent(5, b"a"));
        assert!(c.known_absent(5, b"b"));
        c.forget(&[Change::Entry(5, b"b".to_vec())], false);
        assert!(!c.known_absent(5, b"c"));
        c.keep_listing(c.seq(), 5, &listing);
        c.forget(&[Change::Entry(5, b"b".to_vec())], true);
        assert!(!c.known_absent(5, b"c"));
        // The announcement ends with its guard, and nothing is known without a feed.
        c.keep_listing(c.seq(), 5, &listing);
        drop(c.restoring(&[(5, b"b")]));
        c.forget(&[Change::Entry(5, b"b".to_vec())], false);
        assert!(!c.known_absent(5, b"c"));
        c.keep_listing(c.seq(), 5, &listing);
        c.set_live(false);
        assert!(!c.known_absent(5, b"c"));
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_kept() {
        let c = MetaCache::default();
        c.set_live(true);
        let before = c.seq();
        c.forget(&[Change::Attr(5), Change::Entry(1, b"a".to_vec())], true);
        c.keep_attr(before, 5, &attr(1));
        c.keep_entry(before, 1, b"a", 6, &attr(1));
        assert_eq!(c.attr(5), None);
        assert_eq!(c.entry(1, b"a"), None);
        // Other inodes and entries are not affected.
        c.keep_entry(before, 1, b"b", 7, &attr(2));
        assert_eq!(c.entry(1, b"b").map(|e| e.0), Some(7));
        assert!(c.changed_since(before, 5, None));
        assert!(c.changed_since(before, 9, Some((1, b"a"))));
        assert!(!c.changed_since(before, 7, Some((1, b"b"))));
        // This client's own changes guard the cache but do not shorten kernel timeouts.
        let before = c.seq();
        c.forget(&[Change::Attr(7)], false);
        assert_eq!(c.attr(7), None);
        assert!(!c.changed_since(before, 7, None));
        // A change heard after the read is fine; one heard so long ago that the log
        // forgot it counts as touching everything.
        let s = c.seq();
        for i in 0..LOG_LEN as u64 + 1 {
            c.forget(&[Change::Attr(1000 + i)], true);
        }
        assert!(c.changed_since(s, 7, None));
    }

    #[test]
    fn keys_become_changes() {
        let changes = changes_of([
            keys::attr(3).as_slice(),
            &keys::dentry(1, b"x"),
            &keys::chunk(3, 2),
            &keys::counter("usedSpace"),
        ]);
        assert_eq!(
            changes,
            vec![
                Change::Attr(3),
                Change::Entry(1, b"x".to_vec()),
                Change::Data(3, 2)
            ]
        );
    }
}
