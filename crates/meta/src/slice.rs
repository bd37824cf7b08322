//! Resolving a chunk's slice records into what a reader sees.
//!
//! A chunk value is the list of records in write order; a later record wins wherever it
//! overlaps an earlier one. [`resolve`] paints the records one after another onto a
//! sorted list of disjoint segments, cutting what they cover. Gaps between segments and
//! segments with id 0 read as zeros.

use crate::types::Slice;

/// Disjoint segments, sorted by `pos`, that make up the chunk's visible content.
pub fn resolve(records: &[Slice]) -> Vec<Slice> {
    let mut segs: Vec<Slice> = Vec::new();
    for r in records.iter().filter(|r| r.len > 0) {
        let (start, end) = (r.pos as u64, r.pos as u64 + r.len as u64);
        let mut out = Vec::with_capacity(segs.len() + 2);
        let mut inserted = false;
        for s in segs.drain(..) {
            let (s_start, s_end) = (s.pos as u64, s.pos as u64 + s.len as u64);
            if s_end <= start || s_start >= end {
                if s_start >= end && !inserted {
                    out.push(*r);
                    inserted = true;
                }
                out.push(s);
                continue;
            }
            if s_start < start {
                out.push(Slice {
                    len: (start - s_start) as u32,
                    ..s
                });
            }
            if !inserted {
                out.push(*r);
                inserted = true;
            }
            if s_end > end {
                let cut = (end - s_start) as u32;
                out.push(Slice {
                    pos: end as u32,
                    off: s.off + cut,
                    len: s.len - cut,
                    ..s
                });
            }
        }
        if !inserted {
            out.push(*r);
        }
        segs = out;
    }
    segs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(pos: u32, id: u64, len: u32) -> Slice {
        Slice {
            pos,
            id,
            size: len,
            off: 0,
            len,
        }
    }

    /// Byte-by-byte model: which (id, offset in slice) each position shows.
    fn model(records: &[Slice], n: usize) -> Vec<Option<(u64, u32)>> {
        let mut v = vec![None; n];
        for r in records {
            for i in 0..r.len {
                v[(r.pos + i) as usize] = Some((r.id, r.off + i));
            }
        }
        v
    }

    fn render(segs: &[Slice], n: usize) -> Vec<Option<(u64, u32)>> {
        let mut v = vec![None; n];
        let mut last_end = 0;
        for g in segs {
            assert!(
                g.pos >= last_end,
                "segments overlap or are unsorted: {segs:?}"
            );
            last_end = g.pos + g.len;
            for i in 0..g.len {
                v[(g.pos + i) as usize] = Some((g.id, g.off + i));
            }
        }
        v
    }

    #[test]
    fn later_records_win() {
        let recs = [s(0, 1, 100), s(10, 2, 20), s(90, 3, 30), s(0, 4, 5)];
        assert_eq!(render(&resolve(&recs), 130), model(&recs, 130));
    }

    #[test]
    fn random_records_match_model() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..300 {
            let n = rng.gen_range(1..20);
            let recs: Vec<Slice> = (0..n)
                .map(|i| {
                    let pos = rng.gen_range(0..200);
                    let len = rng.gen_range(0..60);
                    Slice {
                        pos,
                        id: i + 1,
                        size: 100,
                        off: rng.gen_range(0..40),
                        len,
                    }
                })
                .collect();
            assert_eq!(render(&resolve(&recs), 300), model(&recs, 300));
        }
    }
}
