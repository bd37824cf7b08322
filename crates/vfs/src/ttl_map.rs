//! A bounded map whose entries are trusted for a fixed time: the shape of every small
//! metadata cache of the VFS (answers to xattr questions, attributes this client wrote).
//!
//! When the map is full, expired entries are dropped (at most once per
//! [`PURGE_INTERVAL`], so a full map of fresh entries does not sweep on every insert),
//! and if it is still full new entries are not kept: a cache that cannot keep an entry
//! only costs the round trip it would have saved.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A full map is swept for expired entries at most this often.
const PURGE_INTERVAL: Duration = Duration::from_millis(200);

pub(crate) struct TtlMap<K, V> {
    ttl: Duration,
    max: usize,
    inner: Mutex<Inner<K, V>>,
}

struct Inner<K, V> {
    entries: HashMap<K, (Instant, V)>,
    last_purge: Option<Instant>,
}

impl<K: Hash + Eq, V: Clone> TtlMap<K, V> {
    /// A map trusting entries for `ttl` (zero: it keeps nothing), of at most `max`.
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                last_purge: None,
            }),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// The value of `key` if it is there and fresh.
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.get_within(key, self.ttl)
    }

    /// The value of `key` if it is there and younger than both the map's time and
    /// `max_age`.
    pub(crate) fn get_within(&self, key: &K, max_age: Duration) -> Option<V> {
        let inner = self.inner.lock();
        let (at, value) = inner.entries.get(key)?;
        (at.elapsed() < self.ttl.min(max_age)).then(|| value.clone())
    }

    /// Drops every entry whose key `drop` selects.
    pub(crate) fn remove_where(&self, drop: impl Fn(&K) -> bool) {
        self.inner.lock().entries.retain(|k, _| !drop(k));
    }

    /// Keeps each value, unless `keep_old(old, new)` says a value already there (fresh
    /// or not) stays.
    pub(crate) fn insert_all(
        &self,
        values: impl IntoIterator<Item = (K, V)>,
        keep_old: impl Fn(&V, &V) -> bool,
    ) {
        if !self.enabled() {
            return;
        }
        let now = Instant::now();
        let mut inner = self.inner.lock();
        for (key, value) in values {
            match inner.entries.get_mut(&key) {
                Some((_, old)) if keep_old(old, &value) => continue,
                Some(slot) => *slot = (now, value),
                None => {
                    if inner.entries.len() >= self.max && !inner.purge(now, self.ttl, self.max) {
                        return;
                    }
                    inner.entries.insert(key, (now, value));
                }
            }
        }
    }

    pub(crate) fn insert(&self, key: K, value: V) {
        self.insert_all([(key, value)], |_, _| false);
    }

    pub(crate) fn remove(&self, key: &K) {
        self.inner.lock().entries.remove(key);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }
}

impl<K, V> Inner<K, V> {
    /// Drops expired entries unless that was done less than [`PURGE_INTERVAL`] ago;
    /// returns whether there is room now.
    fn purge(&mut self, now: Instant, ttl: Duration, max: usize) -> bool {
        if self
            .last_purge
            .is_some_and(|t| now.duration_since(t) < PURGE_INTERVAL)
        {
            return false;
        }
        self.last_purge = Some(now);
        self.entries
            .retain(|_, (at, _)| now.duration_since(*at) < ttl);
        self.entries.len() < max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_map_stays_bounded() {
        let m = TtlMap::new(Duration::from_millis(50), 100);
        m.insert(1, "a");
        assert_eq!(m.get(&1), Some("a"));
        m.insert_all([(1, "b")], |old, _| *old == "a");
        assert_eq!(m.get(&1), Some("a"), "keep_old kept it");
        m.remove(&1);
        assert_eq!(m.get(&1), None);
        m.insert_all((0..150).map(|i| (i, "x")), |_, _| false);
        assert_eq!(m.len(), 100, "fresh entries beyond the bound are not kept");
        std::thread::sleep(Duration::from_millis(
            PURGE_INTERVAL.as_millis() as u64 + 10,
        ));
        assert_eq!(m.get(&5), None, "expired");
        m.insert(1000, "y");
        assert_eq!(m.len(), 1, "expired entries made room");
        let off = TtlMap::new(Duration::ZERO, 100);
        off.insert(1, 1);
        assert!(!off.enabled());
        assert_eq!(off.len(), 0);
    }
}
