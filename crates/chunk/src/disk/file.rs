//! The format of one cached block on disk, and reading it back verified.
//!
//! A cache file holds the block's raw (decoded) bytes followed by one CRC32C per
//! 32 KiB segment (the last one shorter), each a little-endian `u32`: the layout JuiceFS
//! uses, so the cost of checking is proportional to what is read. The block's length is
//! in its key, so the file's length is known before it is opened: a file of another
//! length (a torn write, a truncation) is corrupt without reading a byte.
//!
//! How much is checked is the user's choice ([`VerifyChecksum`], JuiceFS's
//! `--verify-cache-checksum`): nothing; the whole block when the whole block is read;
//! the segments that lie wholly inside the range read; or the range widened to whole
//! segments and all of them checked (the default). A mismatch is [`Corrupt`]: the caller
//! drops the file and reads from object storage, so a damaged cache never returns data.

use bytes::Bytes;
use nectar_object::DirectWrites;
use std::fs::{self, File};
use std::io;
use std::ops::{ControlFlow, Range};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Bytes covered by one checksum.
pub(crate) const SEGMENT: usize = 32 << 10;
const CRC_LEN: usize = 4;

/// How cached blocks are verified when read (`--verify-cache-checksum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerifyChecksum {
    /// Never: a damaged cache file may be returned.
    None,
    /// Only reads of a whole block are checked (fits sequential readers).
    Full,
    /// The segments wholly inside the range read are checked.
    Shrink,
    /// The range is widened to whole segments, and all of them are checked.
    #[default]
    Extend,
}

impl FromStr for VerifyChecksum {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "full" => Ok(Self::Full),
            "shrink" => Ok(Self::Shrink),
            "extend" => Ok(Self::Extend),
            _ => Err(format!(
                "unknown checksum level '{s}': use none, full, shrink or extend"
            )),
        }
    }
}

/// Why a cached block was not served.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The file is not there (evicted, or never cached).
    Missing,
    /// The file is damaged: drop it.
    Corrupt(String),
    /// The disk failed.
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::NotFound {
            ReadError::Missing
        } else {
            ReadError::Io(e)
        }
    }
}

/// Length of the cache file of a block of `len` bytes.
/// Calls `visit` with every file under `root` (depth first): its path relative to
/// `root`, its full path and its metadata; `Break` ends the walk. A directory that
/// vanished meanwhile is skipped; the first other error reading a directory is
/// returned once everything readable was visited.
pub(crate) fn walk_files(
    root: &Path,
    mut visit: impl FnMut(&str, PathBuf, &fs::Metadata) -> ControlFlow<()>,
) -> io::Result<()> {
    let mut first_error = None;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                first_error.get_or_insert(e);
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let Some(rel) = path.strip_prefix(root).ok().and_then(Path::to_str) else {
                continue;
            };
            let rel = rel.to_string();
            if visit(&rel, path, &meta).is_break() {
                return Ok(());
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

pub(crate) fn file_len(len: usize) -> u64 {
    (len + len.div_ceil(SEGMENT) * CRC_LEN) as u64
}

/// The block followed by its checksums, as written to a cache file.
pub(crate) fn checksums(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len().div_ceil(SEGMENT) * CRC_LEN);
    for seg in data.chunks(SEGMENT) {
        out.extend_from_slice(&crc32c::crc32c(seg).to_le_bytes());
    }
    out
}

/// Writes the cache file of block `data` at `path` through the temporary name `tmp`
/// (created mode 0600, missing parent directories 0700) and a rename, so no reader
/// ever sees half a file under a block's name. A whole block goes to the disk directly
/// (`direct`; through the page cache, a second epoch's blocks written while the first
/// read them cost the client most of its CPU in page-cache copies).
pub(crate) fn write(
    path: &std::path::Path,
    tmp: &std::path::Path,
    data: &[u8],
    direct: &DirectWrites,
) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    let open = |odirect: bool| {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true).mode(0o600);
        if odirect {
            o.custom_flags(libc::O_DIRECT);
        }
        o.open(tmp)
    };
    let written = direct
        .write_new(tmp, open, data)
        .and_then(|mut f| f.write_all(&checksums(data)))
        .and_then(|()| std::fs::rename(tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    written
}

/// Bytes `range` of the block of length `len` stored in `file`, checked as `verify`
/// says.
pub(crate) fn read(
    file: &File,
    len: usize,
    range: Range<usize>,
    verify: VerifyChecksum,
) -> Result<Bytes, ReadError> {
    let actual = file.metadata()?.len();
    if actual != file_len(len) {
        return Err(ReadError::Corrupt(format!(
            "{actual} bytes on disk, {} expected",
            file_len(len)
        )));
    }
    if range.end > len || range.start > range.end {
        return Err(ReadError::Corrupt(format!(
            "range {range:?} outside a block of {len} bytes"
        )));
    }
    // The segments to check, and the bytes to read so they can be.
    let whole = range.start == 0 && range.end == len;
    let segments = match verify {
        VerifyChecksum::None => 0..0,
        VerifyChecksum::Full if whole => 0..len.div_ceil(SEGMENT),
        VerifyChecksum::Full => 0..0,
        VerifyChecksum::Shrink => {
            let first = range.start.div_ceil(SEGMENT);
            // A last segment shorter than SEGMENT is "whole" when the range reaches the end.
            let last = if range.end == len {
                len.div_ceil(SEGMENT)
            } else {
                range.end / SEGMENT
            };
            first..last.max(first)
        }
        VerifyChecksum::Extend => range.start / SEGMENT..range.end.div_ceil(SEGMENT),
    };
    let read_range = if segments.is_empty() {
        range.clone()
    } else {
        let from = (segments.start * SEGMENT).min(range.start);
        let to = (segments.end * SEGMENT).min(len).max(range.end);
        from..to
    };
    let buf = read_exact_uninit(file, read_range.clone())?;
    if !segments.is_empty() {
        let mut sums = vec![0u8; segments.len() * CRC_LEN];
        file.read_exact_at(&mut sums, (len + segments.start * CRC_LEN) as u64)?;
        for (i, seg) in segments.clone().enumerate() {
            let start = seg * SEGMENT - read_range.start;
            let end = ((seg + 1) * SEGMENT).min(len) - read_range.start;
            let want = u32::from_le_bytes(
                sums[i * CRC_LEN..(i + 1) * CRC_LEN]
                    .try_into()
                    .unwrap_or_default(),
            );
            let got = crc32c::crc32c(&buf[start..end]);
            if want != got {
                return Err(ReadError::Corrupt(format!(
                    "checksum mismatch in segment {seg} (stored {want:08x}, computed {got:08x})"
                )));
            }
        }
    }
    let buf = Bytes::from(buf);
    Ok(buf.slice(range.start - read_range.start..range.end - read_range.start))
}

/// Bytes `range` of `file`, read into a buffer that is not zeroed first (a memset of
/// every block read from the cache was 7% of an epoch's CPU); a file shorter than the
/// range is an `UnexpectedEof` error, as with `read_exact_at`.
fn read_exact_uninit(file: &File, range: Range<usize>) -> io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut reader = file;
    reader.seek(SeekFrom::Start(range.start as u64))?;
    let mut buf = Vec::with_capacity(range.len());
    reader.take(range.len() as u64).read_to_end(&mut buf)?;
    if buf.len() < range.len() {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn cached(data: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(data).unwrap();
        f.write_all(&checksums(data)).unwrap();
        f
    }

    fn block(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 1000) as u8).collect()
    }

    const ALL: [VerifyChecksum; 4] = [
        VerifyChecksum::None,
        VerifyChecksum::Full,
        VerifyChecksum::Shrink,
        VerifyChecksum::Extend,
    ];

    /// Blocks written as cache files (whole aligned blocks directly, a tail and the
    /// checksums after them) read back checked, private to the owner.
    #[test]
    fn written_blocks_read_back_checked_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let direct = DirectWrites::new("cached blocks");
        for (i, len) in [100, 4 << 20, (4 << 20) - 4096 + 17]
            .into_iter()
            .enumerate()
        {
            let data = block(len);
            let path = dir.path().join(format!("sub/b{i}"));
            let tmp = dir.path().join(format!("b{i}.tmp"));
            write(&path, &tmp, &data, &direct).unwrap();
            assert!(!tmp.exists());
            let f = File::open(&path).unwrap();
            assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600);
            let got = read(&f, len, 0..len, VerifyChecksum::Full).unwrap();
            assert_eq!(&got[..], &data[..], "block of {len} bytes");
        }
    }

    #[test]
    fn every_range_reads_back_under_every_level() {
        let len = 3 * SEGMENT + 1000;
        let data = block(len);
        let f = cached(&data);
        assert_eq!(f.as_file().metadata().unwrap().len(), file_len(len));
        let ranges = [
            0..len,
            0..1,
            5..SEGMENT + 7,
            SEGMENT..2 * SEGMENT,
            len - 10..len,
            17..17,
        ];
        for verify in ALL {
            for r in ranges.clone() {
                let got = read(f.as_file(), len, r.clone(), verify).unwrap();
                assert_eq!(&got[..], &data[r.clone()], "{verify:?} {r:?}");
            }
        }
    }

    /// One flipped byte in segment 1: which levels notice it, for which reads.
    #[test]
    fn a_damaged_segment_is_caught_as_each_level_promises() {
        let len = 3 * SEGMENT;
        let mut data = block(len);
        let f = cached(&data);
        let pos = SEGMENT + 100;
        data[pos] ^= 0xff;
        f.as_file()
            .write_all_at(&data[pos..pos + 1], pos as u64)
            .unwrap();
        let corrupt =
            |r: Range<usize>, v| matches!(read(f.as_file(), len, r, v), Err(ReadError::Corrupt(_)));
        // Whole-block reads: caught by every level but none.
        assert!(!corrupt(0..len, VerifyChecksum::None));
        assert!(corrupt(0..len, VerifyChecksum::Full));
        assert!(corrupt(0..len, VerifyChecksum::Shrink));
        assert!(corrupt(0..len, VerifyChecksum::Extend));
        // A small read inside the damaged segment: only extend widens it to check.
        let inside = SEGMENT + 50..SEGMENT + 200;
        assert!(!corrupt(inside.clone(), VerifyChecksum::Full));
        assert!(!corrupt(inside.clone(), VerifyChecksum::Shrink));
        assert!(corrupt(inside, VerifyChecksum::Extend));
        // A read of another segment is served under every level.
        for v in ALL {
            assert!(!corrupt(0..SEGMENT, v), "{v:?}");
        }
    }

    #[test]
    fn a_file_of_the_wrong_length_is_corrupt() {
        let len = SEGMENT + 10;
        let data = block(len);
        let f = cached(&data);
        f.as_file().set_len(file_len(len) - 1).unwrap();
        for v in ALL {
            assert!(matches!(
                read(f.as_file(), len, 0..1, v),
                Err(ReadError::Corrupt(_))
            ));
        }
        let empty = cached(&[]);
        assert_eq!(
            read(empty.as_file(), 0, 0..0, VerifyChecksum::Extend)
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn levels_parse_by_juicefs_names() {
        assert_eq!(
            "extend".parse::<VerifyChecksum>().unwrap(),
            VerifyChecksum::Extend
        );
        assert_eq!(
            "none".parse::<VerifyChecksum>().unwrap(),
            VerifyChecksum::None
        );
        assert!("crc"
            .parse::<VerifyChecksum>()
            .unwrap_err()
            .contains("none, full, shrink or extend"));
    }
}
