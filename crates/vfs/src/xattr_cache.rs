//! Answers to the xattr questions the kernel and common tools ask about every file,
//! kept for the attribute timeout.
//!
//! The kernel asks for `security.capability` before every write to a file (to drop file
//! capabilities when it changes), and `ls -l` asks for `security.selinux` of every entry
//! it lists while the file system supports labels (`--enable-selinux`; without it the
//! first EOPNOTSUPP tells `ls` to stop asking). Each would be a metadata round trip:
//! 10,000 of them for `ls -l` of 10,000 files, which then costs more than the listing
//! itself. (JuiceFS avoids them by turning xattrs off unless mounted with
//! `--enable-xattr`; here xattrs work by default.) So:
//!
//! - a listing with attributes (READDIRPLUS) remembers which inodes it listed together
//!   (a page), and the first question about one of them reads the answers for the whole
//!   page in one batch, so `ls -l` costs one read per page while a plain `ls` or
//!   `os.listdir` (which never asks) costs nothing more; a file created here is known
//!   to have none;
//! - an answer read from metadata for one of them is kept too;
//! - an answer is trusted as long as the kernel trusts attributes (the attribute
//!   timeout), the same staleness another client's `chmod` has; this client's own
//!   setxattr and removexattr forget it at once.
//!
//! The table is bounded (see [`TtlMap`]).

use crate::ttl_map::TtlMap;
use nectar_meta::Ino;
use std::sync::Arc;
use std::time::Duration;

/// The xattrs whose answers are kept, in the order a listing asks for them.
pub(crate) const CACHED_XATTRS: [&[u8]; 2] = [b"security.capability", b"security.selinux"];

/// Answers kept at most (about 100 bytes each).
const MAX_ANSWERS: usize = 200_000;

/// An xattr's value, or `None` when the inode has no such xattr.
pub(crate) type Answer = Option<Vec<u8>>;

/// Answers by (inode, index in [`CACHED_XATTRS`]), and the pages listed lately by the
/// inodes on them.
pub(crate) struct XattrCache {
    answers: TtlMap<(Ino, u8), Answer>,
    listed: TtlMap<Ino, Arc<[Ino]>>,
}

/// The index of `name` in [`CACHED_XATTRS`], if its answers are kept.
fn slot(name: &[u8]) -> Option<u8> {
    CACHED_XATTRS
        .iter()
        .position(|n| *n == name)
        .map(|i| i as u8)
}

impl XattrCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            answers: TtlMap::new(ttl, MAX_ANSWERS),
            listed: TtlMap::new(ttl, MAX_ANSWERS / CACHED_XATTRS.len()),
        }
    }

    /// Remembers that the inodes of `page` were listed together.
    pub(crate) fn note_listed(&self, page: Vec<Ino>) {
        if page.is_empty() || !self.listed.enabled() {
            return;
        }
        let page: Arc<[Ino]> = page.into();
        self.listed
            .insert_all(page.iter().map(|&ino| (ino, page.clone())), |_, _| false);
    }

    /// The page `ino` was listed on lately, if any; forgets it, so it is loaded once.
    pub(crate) fn take_listed_page(&self, ino: Ino) -> Option<Arc<[Ino]>> {
        let page = self.listed.get(&ino)?;
        for other in page.iter() {
            self.listed.remove(other);
        }
        Some(page)
    }

    /// Whether answers for `name` are kept at all.
    pub(crate) fn keeps(&self, name: &[u8]) -> bool {
        self.answers.enabled() && slot(name).is_some()
    }

    /// The answer for xattr `name` of `ino` if one is known and fresh.
    /// The answer for xattr `name` of `ino`, if one younger than `max_age` is kept.
    pub(crate) fn get(&self, ino: Ino, name: &[u8], max_age: Duration) -> Option<Answer> {
        self.answers.get_within(&(ino, slot(name)?), max_age)
    }

    /// Keeps the answer for xattr `name` of `ino`.
    pub(crate) fn put(&self, ino: Ino, name: &[u8], answer: Answer) {
        if let Some(slot) = slot(name) {
            self.answers.insert((ino, slot), answer);
        }
    }

    /// Keeps the answers a listing read for one inode, in [`CACHED_XATTRS`] order.
    pub(crate) fn put_listed(&self, ino: Ino, answers: Vec<Answer>) {
        let answers = answers.into_iter().take(CACHED_XATTRS.len()).enumerate();
        self.answers
            .insert_all(answers.map(|(i, a)| ((ino, i as u8), a)), |_, _| false);
    }

    /// Knows that `ino` (a file created just now) has none of the xattrs.
    pub(crate) fn put_none(&self, ino: Ino) {
        self.put_listed(ino, vec![None; CACHED_XATTRS.len()]);
    }

    /// Forgets every answer about `ino` (another client changed one of its xattrs),
    /// or about every inode.
    pub(crate) fn forget_inode(&self, ino: Option<Ino>) {
        self.answers
            .remove_where(|(i, _)| ino.is_none_or(|ino| *i == ino));
        if ino.is_none() {
            self.listed.remove_where(|_| true);
        }
    }

    /// Forgets the answer for xattr `name` of `ino` (set or removed here).
    pub(crate) fn forget(&self, ino: Ino, name: &[u8]) {
        if let Some(slot) = slot(name) {
            self.answers.remove(&(ino, slot));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::MAX;

    #[test]
    fn answers_are_kept_for_the_ttl_and_forgotten_on_change() {
        let c = XattrCache::new(Duration::from_millis(100));
        assert!(c.keeps(b"security.selinux"));
        assert!(!c.keeps(b"user.x"));
        assert_eq!(
            c.get(5, b"security.selinux", MAX),
            None,
            "nothing known yet"
        );
        c.put_listed(5, vec![None, Some(b"ctx".to_vec())]);
        assert_eq!(c.get(5, b"security.capability", MAX), Some(None));
        assert_eq!(
            c.get(5, b"security.selinux", MAX),
            Some(Some(b"ctx".to_vec()))
        );
        c.forget(5, b"security.selinux");
        assert_eq!(c.get(5, b"security.selinux", MAX), None);
        assert_eq!(c.get(5, b"security.capability", MAX), Some(None));
        c.put(6, b"user.x", Some(b"v".to_vec()));
        assert_eq!(c.get(6, b"user.x", MAX), None, "other names are never kept");
        assert_eq!(
            c.get(5, b"security.capability", Duration::ZERO),
            None,
            "older than asked"
        );
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(c.get(5, b"security.capability", MAX), None, "expired");
    }

    #[test]
    fn another_clients_change_forgets_an_inode_or_everything() {
        let c = XattrCache::new(Duration::from_secs(10));
        c.put_none(5);
        c.put_none(6);
        c.forget_inode(Some(5));
        assert_eq!(c.get(5, b"security.capability", MAX), None);
        assert_eq!(c.get(6, b"security.capability", MAX), Some(None));
        c.note_listed(vec![7]);
        c.forget_inode(None);
        assert_eq!(c.get(6, b"security.capability", MAX), None);
        assert_eq!(c.take_listed_page(7), None);
    }

    #[test]
    fn a_listed_page_is_handed_out_once() {
        let c = XattrCache::new(Duration::from_secs(10));
        c.note_listed(vec![7, 8, 9]);
        assert_eq!(c.take_listed_page(10), None, "not listed");
        assert_eq!(c.take_listed_page(8).as_deref(), Some(&[7, 8, 9][..]));
        assert_eq!(c.take_listed_page(9), None, "the page was taken whole");
        let off = XattrCache::new(Duration::ZERO);
        off.note_listed(vec![1]);
        assert_eq!(off.take_listed_page(1), None);
    }
}
