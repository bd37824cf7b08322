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

/// `K<id><size>`: slice reference count minus one.
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

pub fn acl_prefix() -> Vec<u8> {
    b"R".to_vec()
}
