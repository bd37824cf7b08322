//! The key schema, identical to JuiceFS's transactional-KV engines.
//!
//! Inode numbers inside keys are 8-byte little-endian (spreading hot ranges); every other
//! integer is big-endian. See DESIGN.md for the table of keys and values.

use crate::types::Ino;

fn with_ino(tag: u8, ino: Ino, extra: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + extra);
    k.push(tag);
    k.extend_from_slice(&ino.to_le_bytes());
    k
}

pub const SETTING: &[u8] = b"setting";

/// A session key: a two-byte tag and the session id, big-endian.
fn with_sid(tag: &[u8; 2], sid: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.extend_from_slice(tag);
    k.extend_from_slice(&sid.to_be_bytes());
    k
}

pub fn counter(name: &str) -> Vec<u8> {
    let mut k = b"C".to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// `A<ino>`: the prefix of every key of one inode.
pub fn inode_prefix(ino: Ino) -> Vec<u8> {
    with_ino(b'A', ino, 0)
}

pub fn attr(ino: Ino) -> Vec<u8> {
    let mut k = with_ino(b'A', ino, 1);
    k.push(b'I');
    k
}

/// The inode whose attribute key `key` is, if it is one (`A<ino>I`).
pub fn attr_inode(key: &[u8]) -> Option<Ino> {
    match key {
        [b'A', ino @ .., b'I'] if ino.len() == 8 => read_ino(ino),
        _ => None,
    }
}

/// What a changed key means to a client that caches metadata, if anything: the keys a
/// commit announces to other clients (see `cache.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangedKey<'k> {
    /// `A<ino>I`: the inode's attributes.
    Attr(Ino),
    /// `A<parent>D<name>`: a directory entry.
    Entry(Ino, &'k [u8]),
    /// `A<ino>C<index>`: the slices of one chunk of a file.
    Chunk(Ino, u32),
    /// `A<ino>X<name>`: an extended attribute.
    Xattr(Ino),
}

/// Reads a changed key; `None` for keys no cache holds (counters, sessions, slices'
/// reference counts, symlink targets, which never change, parent lists).
pub fn changed_key(key: &[u8]) -> Option<ChangedKey<'_>> {
    if key.len() < 10 || key[0] != b'A' {
        return None;
    }
    let ino = read_ino(&key[1..9])?;
    let rest = &key[10..];
    match key[9] {
        b'I' if rest.is_empty() => Some(ChangedKey::Attr(ino)),
        b'D' => Some(ChangedKey::Entry(ino, rest)),
        b'C' => Some(ChangedKey::Chunk(
            ino,
            u32::from_be_bytes(rest.try_into().ok()?),
        )),
        b'X' => Some(ChangedKey::Xattr(ino)),
        _ => None,
    }
}

/// Whether a commit announces its change of `key` to other clients.
pub fn announced(key: &[u8]) -> bool {
    changed_key(key).is_some()
}

/// The attribute key of the inode a directory entry's value names: the value is the
/// type byte and the inode big-endian, the key `A`, the inode little-endian, `I`.
pub const ATTR_OF_ENTRY: crate::kv::Follow = crate::kv::Follow {
    prefix: b"A",
    from: 1,
    to: 9,
    reverse: true,
    suffix: b"I",
};

pub fn dentry(parent: Ino, name: &[u8]) -> Vec<u8> {
    let mut k = with_ino(b'A', parent, 1 + name.len());
    k.push(b'D');
    k.extend_from_slice(name);
    k
}

/// Prefix of all entries of a directory.
pub fn dentry_prefix(parent: Ino) -> Vec<u8> {
    dentry(parent, b"")
}

pub fn parent(ino: Ino, parent: Ino) -> Vec<u8> {
    let mut k = with_ino(b'A', ino, 9);
    k.push(b'P');
    k.extend_from_slice(&parent.to_le_bytes());
    k
}

pub fn chunk(ino: Ino, index: u32) -> Vec<u8> {
    let mut k = with_ino(b'A', ino, 5);
    k.push(b'C');
    k.extend_from_slice(&index.to_be_bytes());
    k
}

pub fn chunk_prefix(ino: Ino) -> Vec<u8> {
    let mut k = with_ino(b'A', ino, 1);
    k.push(b'C');
    k
}

pub fn symlink(ino: Ino) -> Vec<u8> {
    let mut k = with_ino(b'A', ino, 1);
    k.push(b'S');
    k
}

pub fn xattr(ino: Ino, name: &[u8]) -> Vec<u8> {
    let mut k = with_ino(b'A', ino, 1 + name.len());
    k.push(b'X');
    k.extend_from_slice(name);
    k
}

pub fn xattr_prefix(ino: Ino) -> Vec<u8> {
    xattr(ino, b"")
}

/// `D<ino><length>`: a file whose data waits for deletion.
pub fn del_file(ino: Ino, length: u64) -> Vec<u8> {
    let mut k = with_ino(b'D', ino, 8);
    k.extend_from_slice(&length.to_be_bytes());
    k
}

/// `O<ino><sid>`: session `sid` has file `ino` open (published at its heartbeat, see
/// `readers.rs`).
pub fn open_by(ino: Ino, sid: u64) -> Vec<u8> {
    let mut k = with_ino(b'O', ino, 8);
    k.extend_from_slice(&sid.to_be_bytes());
    k
}

/// `K<id><size>`: slice reference count minus one.
/// `L<time><id>` (both big-endian): slices replaced at `time` (seconds), the first of
/// them `id`, kept for the trash time (see `trash.rs`).
pub fn delayed_slices(time: i64, id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(b'L');
    k.extend_from_slice(&(time as u64).to_be_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub fn slice_ref(id: u64, size: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(13);
    k.push(b'K');
    k.extend_from_slice(&id.to_be_bytes());
    k.extend_from_slice(&size.to_be_bytes());
    k
}

pub fn session_expire(sid: u64) -> Vec<u8> {
    with_sid(b"SE", sid)
}

pub fn session_info(sid: u64) -> Vec<u8> {
    with_sid(b"SI", sid)
}

/// `SS<sid><ino>`: an unlinked inode kept alive because the session still has it open.
pub fn sustained(sid: u64, ino: Ino) -> Vec<u8> {
    [sustained_prefix(sid), ino.to_le_bytes().to_vec()].concat()
}

pub fn sustained_prefix(sid: u64) -> Vec<u8> {
    with_sid(b"SS", sid)
}

/// `SR<sid><start>` → end: a range of slice ids handed to a session.
pub fn session_range(sid: u64, start: u64) -> Vec<u8> {
    [session_ranges_prefix(sid), start.to_be_bytes().to_vec()].concat()
}

pub fn session_ranges_prefix(sid: u64) -> Vec<u8> {
    with_sid(b"SR", sid)
}

/// `SC<sid><id>` → 1: a slice id the session committed, kept while at or above its mark.
pub fn session_commit(sid: u64, id: u64) -> Vec<u8> {
    [session_commits_prefix(sid), id.to_be_bytes().to_vec()].concat()
}

pub fn session_commits_prefix(sid: u64) -> Vec<u8> {
    with_sid(b"SC", sid)
}

/// `SW<sid>` → id: every slice id of the session below it is committed or given up.
pub fn session_mark(sid: u64) -> Vec<u8> {
    with_sid(b"SW", sid)
}

/// `F<ino>`: the BSD flock table of an inode.
pub fn flock(ino: Ino) -> Vec<u8> {
    with_ino(b'F', ino, 0)
}

/// `P<ino>`: the POSIX byte-range lock table of an inode.
pub fn plock(ino: Ino) -> Vec<u8> {
    with_ino(b'P', ino, 0)
}

/// Decodes a little-endian inode number from 8 bytes.
pub fn read_ino(b: &[u8]) -> Option<Ino> {
    Some(Ino::from_le_bytes(b.get(..8)?.try_into().ok()?))
}

pub fn read_u64_be(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

/// `R<id u32>`: an ACL rule.
pub fn acl(id: u32) -> Vec<u8> {
    let mut k = acl_prefix();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// `QD<ino>`: a directory's quota (max space, max inodes, used space, used inodes).
pub fn dir_quota(ino: Ino) -> Vec<u8> {
    let mut k = b"QD".to_vec();
    k.extend_from_slice(&ino.to_le_bytes());
    k
}

pub fn acl_prefix() -> Vec<u8> {
    b"R".to_vec()
}

/// How the schema's keys group for range scans, for engines that index each group on its
/// own (Redis keeps one sorted set per scan domain). The domain of a key is its first 1,
/// 2 or 10 bytes, decided by its first bytes only:
///
/// | key | domain | holds |
/// |---|---|---|
/// | `A<ino 8 bytes><t>…`, t ∉ {I, S} | first 10 bytes | dentries `D`, xattrs `X`, chunks `C`, parents `P` of one inode |
/// | `A<ino>I`, `A<ino>S` | none | attribute, symlink target: never scanned |
/// | `C…`, `s…` | none | counters, `setting`: never scanned |
/// | `SS<sid 8 bytes>…` | first 10 bytes | inodes kept open by one session |
/// | `S<x>…` (x ≠ S), `Q<x>…` | first 2 bytes | `SE`, `SI`, `SR`, `SC`, `SW`, `QD` |
/// | anything else | first byte | `D`, `K`, `L`, `U`, `F`, `P`, `R` |
///
/// Every scan this crate makes lies within one domain. Chunk 0 of a file is the implicit
/// member of its chunk domain: most files have no other chunk, so they need no index.
/// A directory's entries are packed (one Redis hash per directory, as JuiceFS keeps
/// them): an entry is read by name or listed with its whole directory.
pub struct Layout;

pub static LAYOUT: Layout = Layout;

impl crate::kv::KeyLayout for Layout {
    fn domain_len(&self, key: &[u8]) -> Option<usize> {
        match *key.first()? {
            b'A' => match key.get(9) {
                Some(b'I') | Some(b'S') => None,
                _ => Some(10),
            },
            b'C' | b's' => None,
            b'S' => match key.get(1) {
                Some(b'S') => Some(10),
                _ => Some(2),
            },
            b'Q' => Some(2),
            _ => Some(1),
        }
    }

    fn implicit_member(&self, domain: &[u8]) -> Option<&'static [u8]> {
        (domain.len() == 10 && domain[0] == b'A' && domain[9] == b'C').then_some(&[0u8; 4][..])
    }

    fn packed(&self, domain: &[u8]) -> bool {
        domain.len() == 10 && domain[0] == b'A' && domain[9] == b'D'
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{prefix_end, KeyLayout};

    fn domain_of(key: &[u8]) -> Option<&[u8]> {
        key.get(..LAYOUT.domain_len(key)?)
    }

    /// The domain holding all of `[begin, end)`, if one does.
    fn scan_domain<'a>(begin: &'a [u8], end: &[u8]) -> Option<&'a [u8]> {
        let d = domain_of(begin)?;
        (end <= prefix_end(d).as_slice()).then_some(d)
    }

    #[test]
    fn changed_keys_are_read_back() {
        let ino = 0x0102030405060708u64;
        assert_eq!(changed_key(&attr(ino)), Some(ChangedKey::Attr(ino)));
        assert_eq!(
            changed_key(&dentry(ino, b"n")),
            Some(ChangedKey::Entry(ino, b"n"))
        );
        assert_eq!(changed_key(&chunk(ino, 7)), Some(ChangedKey::Chunk(ino, 7)));
        assert_eq!(
            changed_key(&xattr(ino, b"user.a")),
            Some(ChangedKey::Xattr(ino))
        );
        for other in [
            symlink(ino),
            parent(ino, 1),
            counter("usedSpace"),
            slice_ref(1, 2),
        ] {
            assert_eq!(changed_key(&other), None, "{other:?}");
        }
        assert_eq!(changed_key(&inode_prefix(ino)), None);
    }

    #[test]
    fn an_entry_leads_to_its_inode_attribute() {
        let ino = 0x0102030405060708u64;
        let entry = [&[1u8][..], &ino.to_be_bytes()].concat();
        assert_eq!(ATTR_OF_ENTRY.key(&entry), Some(attr(ino)));
        assert_eq!(ATTR_OF_ENTRY.key(&entry[..5]), None);
    }

    #[test]
    fn every_scan_lies_in_one_domain() {
        let ino = 0x0102030405060708u64;
        let dp = dentry_prefix(ino);
        assert_eq!(scan_domain(&dp, &prefix_end(&dp)), Some(dp.as_slice()));
        let mut after = dentry(ino, b"name");
        after.push(0);
        assert_eq!(scan_domain(&after, &prefix_end(&dp)), Some(dp.as_slice()));
        let cp = chunk_prefix(ino);
        assert_eq!(
            scan_domain(&chunk(ino, 7), &prefix_end(&cp)),
            Some(cp.as_slice())
        );
        let xp = xattr_prefix(ino);
        assert_eq!(scan_domain(&xp, &prefix_end(&xp)), Some(xp.as_slice()));
        let sp = sustained_prefix(9);
        assert_eq!(scan_domain(&sp, &prefix_end(&sp)), Some(sp.as_slice()));
        assert_eq!(scan_domain(b"SE", b"SF"), Some(b"SE".as_slice()));
        assert_eq!(scan_domain(b"D", b"E"), Some(b"D".as_slice()));
        // Keys land in the domain their scans use.
        assert_eq!(domain_of(&dentry(ino, b"x")), Some(dp.as_slice()));
        assert_eq!(domain_of(&sustained(9, ino)), Some(sp.as_slice()));
        assert_eq!(domain_of(&del_file(ino, 5)), Some(b"D".as_slice()));
        assert_eq!(domain_of(&slice_ref(1, 2)), Some(b"K".as_slice()));
        assert_eq!(domain_of(&session_expire(3)), Some(b"SE".as_slice()));
        // Chunk 0 is the one implicit member, of chunk domains only.
        assert_eq!(LAYOUT.implicit_member(&cp), Some(&[0u8; 4][..]));
        assert_eq!(LAYOUT.implicit_member(&dp), None);
        assert_eq!([cp.as_slice(), &[0; 4]].concat(), chunk(ino, 0));
        // Entries are packed, nothing else.
        assert!(LAYOUT.packed(&dp));
        assert!(!LAYOUT.packed(&cp) && !LAYOUT.packed(&xp) && !LAYOUT.packed(&sp));
        // Never scanned, never indexed.
        assert_eq!(domain_of(&attr(ino)), None);
        assert_eq!(domain_of(&symlink(ino)), None);
        assert_eq!(domain_of(&counter("nextInode")), None);
        assert_eq!(domain_of(SETTING), None);
        // Ranges spanning domains, or holding unindexed keys, are no domain's.
        let ip = inode_prefix(ino);
        assert_eq!(scan_domain(&ip, &prefix_end(&ip)), None);
        assert_eq!(scan_domain(b"S", b"T"), None);
        assert_eq!(scan_domain(b"SS", b"ST"), None);
        assert_eq!(scan_domain(b"", b"\xff"), None);
        assert_eq!(scan_domain(b"D", b"F"), None);
        let a = attr(ino);
        assert_eq!(scan_domain(&a, &prefix_end(&a)), None);
        assert_eq!(scan_domain(b"C", b"D"), None);
    }
}
