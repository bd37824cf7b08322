//! The in-memory index of one cache directory, and the choice of what to evict.
//!
//! An entry is a block (slice id, block index, length: what its key names, 16 bytes)
//! and the second it was last used, so a cache of a million blocks costs tens of MiB,
//! not the hundreds a map of key strings would. Entries live in an insertion-ordered
//! map with O(1) access by position, which is what JuiceFS's default policy needs:
//! `2-random` samples two random entries and evicts the one used longer ago, a close
//! match to LRU at O(1) a victim. `lru` sorts by last use and evicts the oldest;
//! `none` never evicts, so a full cache stops taking new blocks.

use indexmap::IndexMap;
use rand::Rng;
use std::str::FromStr;

/// A cached block: `(slice id, block index, block length)`.
pub(crate) type BlockId = (u64, u32, u32);

/// What goes when the cache is full (`--cache-eviction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Eviction {
    /// Of two random blocks, the one used longer ago (JuiceFS's default).
    #[default]
    TwoRandom,
    /// The blocks used longest ago.
    Lru,
    /// Nothing: a full cache takes no new blocks.
    None,
}

impl FromStr for Eviction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "2-random" => Ok(Self::TwoRandom),
            "lru" => Ok(Self::Lru),
            "none" => Ok(Self::None),
            _ => Err(format!(
                "unknown cache eviction policy '{s}': use 2-random, lru or none"
            )),
        }
    }
}

/// Blocks in one cache directory and the bytes their files take.
#[derive(Default)]
pub(crate) struct Index {
    /// Block -> last use, in seconds (see [`now_secs`]).
    entries: IndexMap<BlockId, u32>,
    /// Sum of the cache files' lengths.
    used: u64,
}

/// Seconds since the Unix epoch, as stored in entries (good until 2106).
pub(crate) fn now_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

impl Index {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    pub(crate) fn contains(&self, id: &BlockId) -> bool {
        self.entries.contains_key(id)
    }

    /// Records a block whose file takes `file_len` bytes, last used at `atime`.
    /// Returns false if it was there already (nothing changes then).
    pub(crate) fn insert(&mut self, id: BlockId, file_len: u64, atime: u32) -> bool {
        if self.entries.contains_key(&id) {
            return false;
        }
        self.entries.insert(id, atime);
        self.used += file_len;
        true
    }

    /// Marks a block used now.
    pub(crate) fn touch(&mut self, id: &BlockId, now: u32) {
        if let Some(t) = self.entries.get_mut(id) {
            *t = now;
        }
    }

    /// Forgets a block; true if it was there.
    pub(crate) fn remove(&mut self, id: &BlockId, file_len: u64) -> bool {
        if self.entries.swap_remove(id).is_some() {
            self.used -= file_len;
            true
        } else {
            false
        }
    }

    /// Takes blocks out of the index until at most `target` bytes remain, chosen by
    /// `policy`, and returns them for their files to be deleted. `file_len` maps a
    /// block to its file's length.
    pub(crate) fn evict_to(
        &mut self,
        target: u64,
        policy: Eviction,
        file_len: impl Fn(&BlockId) -> u64,
    ) -> Vec<BlockId> {
        let mut victims = Vec::new();
        match policy {
            Eviction::None => {}
            Eviction::TwoRandom => {
                let mut rng = rand::thread_rng();
                while self.used > target && !self.entries.is_empty() {
                    let n = self.entries.len();
                    let (a, b) = (rng.gen_range(0..n), rng.gen_range(0..n));
                    let pick = match (self.entries.get_index(a), self.entries.get_index(b)) {
                        (Some((_, ta)), Some((_, tb))) if tb < ta => b,
                        _ => a,
                    };
                    if let Some((id, _)) = self.entries.swap_remove_index(pick) {
                        self.used -= file_len(&id);
                        victims.push(id);
                    }
                }
            }
            Eviction::Lru => {
                if self.used > target {
                    let mut by_age: Vec<(u32, BlockId)> =
                        self.entries.iter().map(|(id, t)| (*t, *id)).collect();
                    by_age.sort_unstable();
                    for (_, id) in by_age {
                        if self.used <= target {
                            break;
                        }
                        self.remove(&id, file_len(&id));
                        victims.push(id);
                    }
                }
            }
        }
        victims
    }

    /// Takes out the blocks last used before `cutoff` (`--cache-expire`).
    pub(crate) fn expire(
        &mut self,
        cutoff: u32,
        file_len: impl Fn(&BlockId) -> u64,
    ) -> Vec<BlockId> {
        let old: Vec<BlockId> = self
            .entries
            .iter()
            .filter(|(_, t)| **t < cutoff)
            .map(|(id, _)| *id)
            .collect();
        for id in &old {
            self.remove(id, file_len(id));
        }
        old
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len(id: &BlockId) -> u64 {
        id.2 as u64
    }

    fn filled(n: u64) -> Index {
        let mut ix = Index::default();
        for i in 0..n {
            // Block i was last used at second i: lower ids are older.
            assert!(ix.insert((i, 0, 100), 100, i as u32));
        }
        ix
    }

    #[test]
    fn counts_follow_inserts_and_removes() {
        let mut ix = filled(3);
        assert_eq!((ix.len(), ix.used()), (3, 300));
        assert!(
            !ix.insert((1, 0, 100), 100, 9),
            "a second insert changes nothing"
        );
        assert_eq!(ix.used(), 300);
        assert!(ix.remove(&(1, 0, 100), 100));
        assert!(!ix.remove(&(1, 0, 100), 100));
        assert_eq!((ix.len(), ix.used()), (2, 200));
    }

    #[test]
    fn lru_evicts_exactly_the_oldest() {
        let mut ix = filled(10);
        ix.touch(&(0, 0, 100), 50); // block 0 is now the newest
        let victims = ix.evict_to(700, Eviction::Lru, len);
        assert_eq!(victims, vec![(1, 0, 100), (2, 0, 100), (3, 0, 100)]);
        assert_eq!(ix.used(), 700);
        assert!(ix.contains(&(0, 0, 100)));
    }

    #[test]
    fn two_random_reaches_the_target_and_prefers_old_blocks() {
        // Over many rounds the older half must lose clearly more blocks than the newer.
        let (mut old, mut new) = (0, 0);
        for _ in 0..200 {
            let mut ix = filled(100);
            let victims = ix.evict_to(9_000, Eviction::TwoRandom, len);
            assert_eq!(ix.used(), 9_000);
            assert_eq!(victims.len(), 10);
            for v in victims {
                if v.0 < 50 {
                    old += 1
                } else {
                    new += 1
                }
            }
        }
        assert!(old > 2 * new, "old {old}, new {new}");
    }

    #[test]
    fn none_never_evicts_and_expiry_takes_only_old_blocks() {
        let mut ix = filled(5);
        assert!(ix.evict_to(0, Eviction::None, len).is_empty());
        assert_eq!(ix.used(), 500);
        let gone = ix.expire(3, len);
        assert_eq!(gone.len(), 3);
        assert_eq!((ix.len(), ix.used()), (2, 200));
    }

    #[test]
    fn policies_parse_by_juicefs_names() {
        assert_eq!("2-random".parse::<Eviction>().unwrap(), Eviction::TwoRandom);
        assert_eq!("lru".parse::<Eviction>().unwrap(), Eviction::Lru);
        assert_eq!("none".parse::<Eviction>().unwrap(), Eviction::None);
        assert!("fifo"
            .parse::<Eviction>()
            .unwrap_err()
            .contains("2-random, lru or none"));
    }
}
