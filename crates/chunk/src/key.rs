//! Object keys of blocks and the geometry of a slice.
//!
//! A slice of `size` bytes is cut into blocks of `block_size` bytes, the last one
//! shorter, and block `i` is stored under a key that names the slice id, the block index
//! and the uncompressed block length. The two key forms are exactly JuiceFS's, so a
//! volume written by one system can be read by the other: the plain form spreads ids
//! over directories by `id / 1e6` and `id / 1e3`; the hash-prefix form puts `id % 256`
//! first so that object stores that shard by key prefix spread the load. Because the
//! length is in the key, a reader knows the decoded size without a HEAD and can check it.

/// The object key of block `index` (of uncompressed length `len`) of slice `id`.
///
/// Plain: `chunks/{id/1_000_000}/{id/1_000}/{id}_{index}_{len}`;
/// hash prefix: `chunks/{id%256 as %02X}/{id/1_000_000}/{id}_{index}_{len}`.
pub fn block_key(id: u64, index: u32, len: u32, hash_prefix: bool) -> String {
    if hash_prefix {
        format!(
            "chunks/{:02X}/{}/{}_{}_{}",
            id % 256,
            id / 1_000_000,
            id,
            index,
            len
        )
    } else {
        format!(
            "chunks/{}/{}/{}_{}_{}",
            id / 1_000_000,
            id / 1_000,
            id,
            index,
            len
        )
    }
}

/// Splits a block key (either form) into `(id, index, len)`; `None` if it is not one.
/// Used by tools that list the bucket (gc, fsck).
pub fn parse_block_key(key: &str) -> Option<(u64, u32, u32)> {
    let name = key.strip_prefix("chunks/")?.rsplit('/').next()?;
    let mut parts = name.split('_');
    let id: u64 = parts.next()?.parse().ok()?;
    let index: u32 = parts.next()?.parse().ok()?;
    let len: u32 = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    // The directories must be the ones this id gets in one form or the other, so
    // stray objects whose names merely look alike are not taken for blocks.
    if key == block_key(id, index, len, false) || key == block_key(id, index, len, true) {
        Some((id, index, len))
    } else {
        None
    }
}

/// Listing prefixes that together hold every block of the slices with ids in
/// `[start, end)` (and others): one per thousand ids in the plain form; in the
/// hash-prefix form one per hash bucket present in the range and million ids.
pub fn listing_prefixes(start: u64, end: u64, hash_prefix: bool) -> Vec<String> {
    if start >= end {
        return Vec::new();
    }
    let last = end - 1;
    if hash_prefix {
        let buckets: Vec<u64> = if end - start >= 256 {
            (0..256).collect()
        } else {
            let mut b: Vec<u64> = (start..end).map(|id| id % 256).collect();
            b.sort_unstable();
            b
        };
        (start / 1_000_000..=last / 1_000_000)
            .flat_map(|m| buckets.iter().map(move |b| format!("chunks/{b:02X}/{m}/")))
            .collect()
    } else {
        (start / 1_000..=last / 1_000)
            .map(|k| format!("chunks/{}/{}/", k / 1_000, k))
            .collect()
    }
}

/// Number of blocks of a slice of `size` bytes.
pub fn block_count(size: u32, block_size: usize) -> u32 {
    (size as u64).div_ceil(block_size as u64) as u32
}

/// Length of block `index` of a slice of `size` bytes (0 past the end).
pub fn block_len(size: u32, block_size: usize, index: u32) -> u32 {
    let start = index as u64 * block_size as u64;
    (size as u64).saturating_sub(start).min(block_size as u64) as u32
}

/// `(index, len)` of every block of a slice of `size` bytes.
pub fn blocks(size: u32, block_size: usize) -> impl Iterator<Item = (u32, u32)> {
    (0..block_count(size, block_size)).map(move |i| (i, block_len(size, block_size, i)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_match_juicefs() {
        assert_eq!(block_key(0, 0, 0, false), "chunks/0/0/0_0_0");
        assert_eq!(block_key(1, 0, 4194304, false), "chunks/0/0/1_0_4194304");
        assert_eq!(block_key(1234, 3, 100, false), "chunks/0/1/1234_3_100");
        assert_eq!(
            block_key(1_234_567, 15, 1048576, false),
            "chunks/1/1234/1234567_15_1048576"
        );
        assert_eq!(
            block_key(98_765_432_100, 2, 7, false),
            "chunks/98765/98765432/98765432100_2_7"
        );
    }

    #[test]
    fn hash_prefixed_keys_match_juicefs() {
        assert_eq!(block_key(1, 0, 4194304, true), "chunks/01/0/1_0_4194304");
        assert_eq!(block_key(255, 1, 10, true), "chunks/FF/0/255_1_10");
        assert_eq!(block_key(256, 1, 10, true), "chunks/00/0/256_1_10");
        // 1234567 % 256 = 135 = 0x87
        assert_eq!(
            block_key(1_234_567, 15, 1048576, true),
            "chunks/87/1/1234567_15_1048576"
        );
        // 10 % 256 = 0x0A: upper-case hex, two digits.
        assert_eq!(block_key(10, 0, 1, true), "chunks/0A/0/10_0_1");
    }

    #[test]
    fn keys_parse_back() {
        for hp in [false, true] {
            for id in [0u64, 1, 999, 1000, 1_234_567, u64::MAX] {
                let k = block_key(id, 7, 4096, hp);
                assert_eq!(parse_block_key(&k), Some((id, 7, 4096)), "{k}");
            }
        }
        assert_eq!(parse_block_key("chunks/0/0/1_0"), None);
        assert_eq!(parse_block_key("chunks/0/5/1_0_1"), None);
        assert_eq!(parse_block_key("meta/dump.json"), None);
        assert_eq!(parse_block_key("chunks/0/0/1_0_1_2"), None);
    }

    #[test]
    fn listing_prefixes_cover_every_block_of_the_range() {
        for hp in [false, true] {
            for (start, end) in [(0u64, 1u64), (998, 1003), (999_990, 1_000_300), (5, 4101)] {
                let prefixes = listing_prefixes(start, end, hp);
                for id in start..end {
                    let k = block_key(id, 3, 4096, hp);
                    assert!(
                        prefixes.iter().any(|p| k.starts_with(p)),
                        "{k} {prefixes:?}"
                    );
                }
            }
        }
        assert_eq!(
            listing_prefixes(998, 1003, false),
            ["chunks/0/0/", "chunks/0/1/"]
        );
        assert_eq!(listing_prefixes(5, 4101, false).len(), 5);
        assert_eq!(
            listing_prefixes(10, 12, true),
            ["chunks/0A/0/", "chunks/0B/0/"]
        );
        assert!(listing_prefixes(7, 7, true).is_empty());
    }

    #[test]
    fn geometry() {
        let bs = 4 << 20;
        assert_eq!(block_count(0, bs), 0);
        assert_eq!(block_count(1, bs), 1);
        assert_eq!(block_count(bs as u32, bs), 1);
        assert_eq!(block_count(bs as u32 + 1, bs), 2);
        assert_eq!(block_count(64 << 20, bs), 16);
        let v: Vec<_> = blocks(2 * bs as u32 + 5, bs).collect();
        assert_eq!(v, vec![(0, bs as u32), (1, bs as u32), (2, 5)]);
        assert_eq!(block_len(10, bs, 1), 0);
    }
}
