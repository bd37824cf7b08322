//! Sorting more fixed-size records than memory should hold, for the tools that read a
//! whole volume (load counts slice references, gc joins slices with the bucket).
//!
//! Records gather in a buffer; a full buffer is sorted and written to an anonymous
//! temporary file (in `$TMPDIR`, 0600, gone when closed) as a run; at the end the runs
//! and what is left in the buffer are merged into one sorted stream. Memory: the buffer
//! plus one read buffer per run.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, Write};

/// A record of a fixed size on disk.
pub trait Record: Ord + Copy {
    const SIZE: usize;
    fn put(&self, out: &mut Vec<u8>);
    fn get(b: &[u8]) -> Self;
}

/// A slice reference: (slice id, size).
impl Record for (u64, u32) {
    const SIZE: usize = 12;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_be_bytes());
        out.extend_from_slice(&self.1.to_be_bytes());
    }
    fn get(b: &[u8]) -> Self {
        (
            u64::from_be_bytes(b[..8].try_into().unwrap_or_default()),
            u32::from_be_bytes(b[8..12].try_into().unwrap_or_default()),
        )
    }
}

/// Sorts records of type `T` in bounded memory (see the module documentation).
pub struct Sorter<T: Record> {
    buf: Vec<T>,
    runs: Vec<BufReader<std::fs::File>>,
    limit: usize,
}

/// One sorted source of a merge.
type Run<T> = Box<dyn Iterator<Item = io::Result<T>>>;

impl<T: Record + 'static> Sorter<T> {
    /// Keeps up to `limit` records in memory before a run goes to disk.
    pub fn new(limit: usize) -> Sorter<T> {
        Sorter {
            buf: Vec::new(),
            runs: Vec::new(),
            limit: limit.max(1),
        }
    }

    pub fn push(&mut self, r: T) -> io::Result<()> {
        self.buf.push(r);
        if self.buf.len() >= self.limit {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> io::Result<()> {
        self.buf.sort_unstable();
        let mut w = BufWriter::new(anonymous_file()?);
        let mut bytes = Vec::with_capacity(T::SIZE);
        for r in self.buf.drain(..) {
            bytes.clear();
            r.put(&mut bytes);
            w.write_all(&bytes)?;
        }
        let mut file = w.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        self.runs.push(BufReader::new(file));
        Ok(())
    }

    /// Every record pushed, in order.
    pub fn sorted(mut self) -> impl Iterator<Item = io::Result<T>> {
        self.buf.sort_unstable();
        let mut sources: Vec<Run<T>> =
            vec![Box::new(std::mem::take(&mut self.buf).into_iter().map(Ok))];
        for mut run in self.runs.drain(..) {
            sources.push(Box::new(std::iter::from_fn(move || {
                let mut b = vec![0u8; T::SIZE];
                match run.fill_buf() {
                    Ok([]) => None,
                    Ok(_) => Some(run.read_exact(&mut b).map(|_| T::get(&b))),
                    Err(e) => Some(Err(e)),
                }
            })));
        }
        Merge {
            heads: BinaryHeap::new(),
            sources,
            started: false,
        }
    }
}

/// A k-way merge of sorted sources.
struct Merge<T: Record> {
    heads: BinaryHeap<Reverse<(T, usize)>>,
    sources: Vec<Run<T>>,
    started: bool,
}

impl<T: Record> Iterator for Merge<T> {
    type Item = io::Result<T>;

    fn next(&mut self) -> Option<io::Result<T>> {
        if !self.started {
            self.started = true;
            for i in 0..self.sources.len() {
                match self.sources[i].next() {
                    Some(Ok(v)) => self.heads.push(Reverse((v, i))),
                    Some(Err(e)) => return Some(Err(e)),
                    None => {}
                }
            }
        }
        let Reverse((v, i)) = self.heads.pop()?;
        match self.sources[i].next() {
            Some(Ok(next)) => self.heads.push(Reverse((next, i))),
            Some(Err(e)) => return Some(Err(e)),
            None => {}
        }
        Some(Ok(v))
    }
}

/// An unnamed file in `$TMPDIR`, readable by this process only, gone when closed.
pub fn anonymous_file() -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(&dir)
        .or_else(|_| {
            // A file system without O_TMPFILE: a private name, removed at once.
            for _ in 0..100 {
                let path = dir.join(format!(
                    "nectar-{}-{:016x}",
                    std::process::id(),
                    rand::random::<u64>()
                ));
                match std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                {
                    Ok(f) => {
                        std::fs::remove_file(&path)?;
                        return Ok(f);
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(io::Error::other(format!(
                "cannot create a temporary file in {}",
                dir.display()
            )))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_disk_merge_into_one_order() {
        let mut s = Sorter::<(u64, u32)>::new(7);
        let mut all = Vec::new();
        let mut x = 12345u64;
        for _ in 0..1000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = (x % 300, (x >> 40) as u32 % 3);
            all.push(r);
            s.push(r).unwrap();
        }
        assert!(s.runs.len() > 100, "most of it went to disk");
        all.sort();
        let merged: Vec<(u64, u32)> = s.sorted().map(Result::unwrap).collect();
        assert_eq!(merged, all);
    }
}
