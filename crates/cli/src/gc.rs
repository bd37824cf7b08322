//! `nectar gc`: explains what the volume's part of the bucket holds, to the byte.
//!
//! Every block object is put in one class by a sorted join of two streams, both sorted
//! on disk so memory stays bounded whatever the bucket holds ([`nectar_meta::spill`]):
//! the slices metadata refers to (`Meta::slice_references`: live files, the trash,
//! files whose data is not released yet) and the bucket's listing of `chunks/`. A block
//! of no referenced slice is *unfinished* when its id is one a session has not settled
//! (a write in flight, or a dead client's not cleaned yet; read before the walk, so a
//! slice written during the walk is never called leaked), and *leaked* otherwise.
//! Objects that are not blocks (the volume's UUID, metadata backups) are counted apart.
//!
//! Deleting leaks (`--delete`) is not offered yet: the walk is not a snapshot, and a
//! file renamed from a directory not walked yet into one already walked would have its
//! blocks called leaked.

use anyhow::{Context, Result};
use clap::Args;
use nectar_meta::gc::SliceUse;
use nectar_meta::spill::{Record, Sorter};
use nectar_meta::Meta;
use std::io::IsTerminal;

#[derive(Args)]
pub struct GcArgs {
    /// Metadata engine URL of the volume.
    meta_url: String,
    /// Threads reading metadata.
    #[arg(long, default_value_t = 10)]
    threads: usize,
}

/// A reference to a slice: (id, size, use).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Reference(u64, u32, u8);

impl Record for Reference {
    const SIZE: usize = 13;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_be_bytes());
        out.extend_from_slice(&self.1.to_be_bytes());
        out.push(self.2);
    }
    fn get(b: &[u8]) -> Self {
        Reference(
            u64::from_be_bytes(b[..8].try_into().unwrap_or_default()),
            u32::from_be_bytes(b[8..12].try_into().unwrap_or_default()),
            b[12],
        )
    }
}

/// A block object: (slice id, stored size).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Block(u64, u64);

impl Record for Block {
    const SIZE: usize = 16;
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_be_bytes());
        out.extend_from_slice(&self.1.to_be_bytes());
    }
    fn get(b: &[u8]) -> Self {
        Block(
            u64::from_be_bytes(b[..8].try_into().unwrap_or_default()),
            u64::from_be_bytes(b[8..16].try_into().unwrap_or_default()),
        )
    }
}

/// Objects and bytes of one class.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tally {
    pub objects: u64,
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: u64) {
        self.objects += 1;
        self.bytes += bytes;
    }
}

/// What the bucket holds, by class.
#[derive(Default, Debug)]
pub struct Classes {
    pub live: Tally,
    pub trash: Tally,
    pub pending: Tally,
    pub unfinished: Tally,
    pub leaked: Tally,
    pub other: Tally,
}

const SPILL_AT: usize = 4 << 20;

pub fn run(a: GcArgs) -> Result<()> {
    let meta = Meta::connect(&crate::meta_url(&a.meta_url))?;
    let fmt = meta.load()?;
    let rt = crate::runtime()?;
    let store = nectar_object::create_store(&crate::store_config(&fmt))?;
    let talk = std::io::stderr().is_terminal();

    // Before the walk: what is in flight now may be committed while it runs.
    let unsettled = meta.unsettled_slices()?;
    let mut refs = Sorter::<Reference>::new(SPILL_AT);
    let mut n = 0u64;
    meta.slice_references(a.threads, &mut |id, size, used| {
        n += 1;
        if talk && n.is_multiple_of(100_000) {
            eprint!("\rgc: {n} slice references read");
        }
        Ok(refs.push(Reference(id, size, used as u8))?)
    })?;
    let mut blocks = Sorter::<Block>::new(SPILL_AT);
    let mut classes = Classes::default();
    let mut after: Option<String> = None;
    let mut listed = 0u64;
    loop {
        let page = rt
            .block_on(store.list("", after.as_deref(), 1000))
            .context("listing the bucket")?;
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        for o in &page {
            listed += 1;
            match nectar_chunk::parse_block_key(&o.key) {
                Some((id, _, _)) => blocks.push(Block(id, o.size))?,
                None => classes.other.add(o.size),
            }
        }
        if talk {
            eprint!("\rgc: {n} slice references read, {listed} objects listed");
        }
    }
    if talk {
        eprintln!();
    }
    join(refs, blocks, &unsettled, &mut classes)?;
    print!("{}", report(&classes));
    Ok(())
}

/// Classifies each block by the references to its slice id (both streams sorted by id;
/// the first reference of an id is its strongest use, [`SliceUse`] being in order).
fn join(
    refs: Sorter<Reference>,
    blocks: Sorter<Block>,
    unsettled: &[(u64, u64)],
    classes: &mut Classes,
) -> Result<()> {
    let mut refs = refs.sorted();
    let mut next_ref = refs.next().transpose()?;
    for b in blocks.sorted() {
        let Block(id, bytes) = b?;
        while next_ref.is_some_and(|r| r.0 < id) {
            next_ref = refs.next().transpose()?;
        }
        let used = next_ref
            .filter(|r| r.0 == id)
            .map(|r| SliceUse::from_u8(r.2).unwrap_or(SliceUse::Live));
        let class = match used {
            Some(SliceUse::Live) => &mut classes.live,
            Some(SliceUse::Trash) => &mut classes.trash,
            Some(SliceUse::Pending) => &mut classes.pending,
            None if unsettled.iter().any(|&(s, e)| s <= id && id < e) => &mut classes.unfinished,
            None => &mut classes.leaked,
        };
        class.add(bytes);
    }
    Ok(())
}

/// The table `gc` prints.
pub fn report(c: &Classes) -> String {
    let rows = [
        ("live (files of the tree)", c.live),
        ("trash and delayed slices", c.trash),
        ("pending deletion", c.pending),
        ("unfinished writes", c.unfinished),
        ("leaked", c.leaked),
        ("other objects", c.other),
    ];
    let total = rows.iter().fold(Tally::default(), |t, (_, r)| Tally {
        objects: t.objects + r.objects,
        bytes: t.bytes + r.bytes,
    });
    let mut out = String::new();
    for (name, t) in rows.iter().chain(std::iter::once(&("total", total))) {
        out.push_str(&format!(
            "{name:<26} {:>12} objects {:>16} bytes\n",
            t.objects, t.bytes
        ));
    }
    out
}
