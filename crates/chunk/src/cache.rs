//! The memory cache of decoded blocks.
//!
//! An LRU map from block key to the block's raw bytes, bounded by the sum of block
//! lengths rather than by a count, because blocks range from a few bytes to 16 MiB.
//! Blocks are immutable and keys carry the slice id, so an entry can never be stale;
//! the only invalidation is dropping a removed slice's blocks to free memory early. The
//! values are `Bytes`, so a hit hands out a reference-counted view, not a copy.

use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;

pub(crate) struct MemCache {
    capacity: u64,
    inner: Mutex<Inner>,
}

struct Inner {
    lru: LruCache<String, Bytes>,
    used: u64,
}

impl MemCache {
    /// A cache of at most `capacity` bytes; 0 keeps nothing.
    pub(crate) fn new(capacity: u64) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                used: 0,
            }),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    pub(crate) fn get(&self, key: &str) -> Option<Bytes> {
        if !self.enabled() {
            return None;
        }
        self.inner.lock().lru.get(key).cloned()
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.enabled() && self.inner.lock().lru.contains(key)
    }

    /// Keeps `data` as the most recently used entry and evicts the least recently
    /// used ones until the total fits. A block larger than the whole cache is not kept
    /// (it would only flush everything else and be evicted itself).
    pub(crate) fn insert(&self, key: &str, data: Bytes) {
        let len = data.len() as u64;
        if len > self.capacity {
            return;
        }
        let mut inner = self.inner.lock();
        if let Some(old) = inner.lru.put(key.to_string(), data) {
            inner.used -= old.len() as u64;
        }
        inner.used += len;
        while inner.used > self.capacity {
            match inner.lru.pop_lru() {
                Some((_, old)) => inner.used -= old.len() as u64,
                None => break,
            }
        }
    }

    pub(crate) fn remove(&self, key: &str) {
        let mut inner = self.inner.lock();
        if let Some(old) = inner.lru.pop(key) {
            inner.used -= old.len() as u64;
        }
    }

    /// Bytes held now.
    pub(crate) fn used(&self) -> u64 {
        self.inner.lock().used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    #[test]
    fn evicts_least_recently_used_within_the_limit() {
        let c = MemCache::new(100);
        c.insert("a", block(40));
        c.insert("b", block(40));
        assert!(c.get("a").is_some()); // a is now more recent than b
        c.insert("c", block(40));
        assert!(c.used() <= 100);
        assert!(c.contains("a") && c.contains("c") && !c.contains("b"));
        c.insert("a", block(10)); // replacing adjusts the total
        assert_eq!(c.used(), 50);
        c.remove("a");
        c.remove("missing");
        assert_eq!(c.used(), 40);
    }

    #[test]
    fn oversized_blocks_and_a_disabled_cache_keep_nothing() {
        let c = MemCache::new(100);
        c.insert("a", block(50));
        c.insert("big", block(101));
        assert!(!c.contains("big") && c.contains("a"));
        let off = MemCache::new(0);
        off.insert("a", block(1));
        assert_eq!(off.used(), 0);
        assert!(off.get("a").is_none());
        off.insert("empty", Bytes::new());
        assert!(off.get("empty").is_none());
    }
}
