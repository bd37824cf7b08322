//! Listing a store whose keys are paths in a tree of directories (a local file system,
//! HDFS) in key order, a page at a time.
//!
//! Such a store lists one directory at a time. Walking the tree depth-first and sorting
//! each directory's entries by path, with a directory's path ending in `/`, visits keys in
//! exactly the byte order of the full keys (`d/a.b` < `d/a/b` because `.` < `/`). Every
//! directory that cannot hold a key after `start_after` is skipped unread, so a paged
//! listing of a large volume costs in proportion to the page, not to the volume.

use crate::{ObjectInfo, Result};
use std::future::Future;

/// One entry of a directory: its path relative to the store's root (a directory's ends
/// in `/`), whether it is a directory, and its size.
pub(crate) type DirEntry = (String, bool, u64);

/// Lists up to `limit` keys that start with `prefix` and sort after `start_after`, in key
/// order, calling `list_dir` with the path of each directory it enters (`""` for the root,
/// otherwise ending in `/`). A directory that vanished should list as empty.
pub(crate) async fn list_by_walking<F, Fut>(
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
    mut list_dir: F,
) -> Result<Vec<ObjectInfo>>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<Vec<DirEntry>>>,
{
    enum Item {
        Dir(String),
        File(String, u64),
    }
    if limit == 0 {
        return Ok(Vec::new());
    }
    let start_dir = match prefix.rfind('/') {
        Some(i) => &prefix[..=i],
        None => "",
    };
    let mut out = Vec::new();
    // Pending items, the smallest on top.
    let mut stack = vec![Item::Dir(start_dir.to_string())];
    while let Some(item) = stack.pop() {
        match item {
            Item::File(key, size) => {
                out.push(ObjectInfo { key, size });
                if out.len() >= limit {
                    break;
                }
            }
            Item::Dir(dir) => {
                let mut children: Vec<_> = list_dir(dir)
                    .await?
                    .into_iter()
                    .filter(|(path, is_dir, _)| {
                        if *is_dir {
                            dir_may_match(path, prefix, start_after)
                        } else {
                            path.starts_with(prefix)
                                && start_after.is_none_or(|s| path.as_str() > s)
                        }
                    })
                    .collect();
                children.sort_by(|a, b| b.0.cmp(&a.0));
                stack.extend(children.into_iter().map(|(path, is_dir, size)| {
                    if is_dir {
                        Item::Dir(path)
                    } else {
                        Item::File(path, size)
                    }
                }));
            }
        }
    }
    Ok(out)
}

/// Whether the subtree under directory `dir` (ending in `/`) may hold a key that starts
/// with `prefix` and sorts after `start_after`.
fn dir_may_match(dir: &str, prefix: &str, start_after: Option<&str>) -> bool {
    if !(dir.starts_with(prefix) || prefix.starts_with(dir)) {
        return false;
    }
    // Every key in the subtree starts with `dir`. If `start_after` is past `dir` and
    // does not start with it, it differs from `dir` at some byte where it is larger,
    // so it is larger than every key of the subtree.
    match start_after {
        Some(s) => s <= dir || s.starts_with(dir),
        None => true,
    }
}
